//go:build linux

package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/torkbot/sandbox/control"
	"github.com/torkbot/sandbox/sandbox-init/truststore"
)

// The system trust store, Debian-style (also Ubuntu's and Alpine's).
const trustStoreDir = "/etc/ssl/certs"

// trustOverlayDir holds the writable layer put over trustStoreDir; on the
// /run tmpfs, so nothing of it reaches the root disk.
const trustOverlayDir = "/run/sandbox/trust"

// trustSetup installs the host's trust anchors once.
type trustSetup struct {
	mu   sync.Mutex
	done bool
}

// prepare is control.Server.Prepare: it runs before the hello is answered,
// so before any command can start.
func (t *trustSetup) prepare(_ context.Context, s control.Setup) error {
	if len(s.TrustAnchors) == 0 {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done {
		return errors.New("trust anchors were already installed")
	}
	var certs []*x509.Certificate
	for i, a := range s.TrustAnchors {
		c, err := truststore.ParsePEM(a)
		if err != nil {
			return fmt.Errorf("trust anchor %d: %w", i, err)
		}
		certs = append(certs, c...)
	}
	if err := installTrustAnchors(certs); err != nil {
		return fmt.Errorf("install the sandbox's HTTPS interception CA: %w", err)
	}
	t.done = true
	return nil
}

// installTrustAnchors adds certs to the system trust store through an
// overlay whose upper layer is on tmpfs: the root may be read-only (a
// built-in image), and on a copy-on-write root the per-boot CA must not
// persist into the user's store. The cost is that, while the overlay is
// mounted, changes to /etc/ssl/certs (update-ca-certificates run by a
// package install) last only until shutdown; the certificates themselves,
// under /usr/share/ca-certificates, persist, and the next
// update-ca-certificates picks them up.
func installTrustAnchors(certs []*x509.Certificate) error {
	if _, err := os.Stat(filepath.Join(trustStoreDir, truststore.Bundle)); err != nil {
		return fmt.Errorf("the image has no CA bundle at %s (%v): network policies need the ca-certificates package in the image so that its programs trust the sandbox's HTTPS interception", filepath.Join(trustStoreDir, truststore.Bundle), err)
	}
	upper, work := filepath.Join(trustOverlayDir, "upper"), filepath.Join(trustOverlayDir, "work")
	for _, d := range []string{upper, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", trustStoreDir, upper, work)
	if err := unix.Mount("overlay", trustStoreDir, "overlay", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		return fmt.Errorf("mount a writable view of %s: %w", trustStoreDir, err)
	}
	return truststore.Add(trustStoreDir, "torkbot-sandbox-ca", certs)
}
