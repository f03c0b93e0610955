package vmm

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// ProbeCache keeps the verdicts of hypervisor probes, which cost a guest
// boot each: for the life of the process, and across processes in files
// under Dir when Dir is set. A verdict is keyed by the files it depends on
// (engine binaries, guest kernel and initrd: path, size and modification
// time) and by the host kernel, whose update can fix or break KVM.
type ProbeCache struct {
	// Dir holds one file per verdict; "" keeps them in memory only.
	Dir string
	// Kind names the probe in file names ("accel", "krun-boot").
	Kind string
}

var probeMemo sync.Map // Kind-key → verdict, for this process

// Key names the verdict for these files on this host.
func (c ProbeCache) Key(paths ...string) string {
	h := sha256.New()
	for _, p := range paths {
		if st, err := os.Stat(p); err == nil {
			fmt.Fprintf(h, "%s %d %d\n", p, st.Size(), st.ModTime().UnixNano())
		} else {
			fmt.Fprintf(h, "%s missing\n", p)
		}
	}
	for _, f := range []string{"/proc/sys/kernel/osrelease", "/proc/sys/kernel/version"} {
		if b, err := os.ReadFile(f); err == nil {
			h.Write(b)
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

func (c ProbeCache) file(key string) string {
	return filepath.Join(c.Dir, c.Kind+"-"+key)
}

// Load returns the verdict kept for key, if any.
func (c ProbeCache) Load(key string) (string, bool) {
	if v, ok := probeMemo.Load(c.Kind + "-" + key); ok {
		return v.(string), true
	}
	if c.Dir == "" {
		return "", false
	}
	b, err := os.ReadFile(c.file(key))
	if err != nil || len(b) == 0 {
		return "", false
	}
	v := strings.TrimSuffix(string(b), "\n")
	probeMemo.Store(c.Kind+"-"+key, v)
	return v, true
}

// Store keeps verdict for key. A failure to write the file only costs the
// next process a probe.
func (c ProbeCache) Store(key, verdict string) {
	probeMemo.Store(c.Kind+"-"+key, verdict)
	if c.Dir == "" {
		return
	}
	path := c.file(key)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+c.Kind+"-*")
	if err != nil {
		return
	}
	_, werr := tmp.WriteString(verdict + "\n")
	cerr := tmp.Close()
	if werr != nil || cerr != nil || os.Rename(tmp.Name(), path) != nil {
		os.Remove(tmp.Name())
	}
}

// Forget drops the in-process verdict for key (tests).
func (c ProbeCache) Forget(key string) { probeMemo.Delete(c.Kind + "-" + key) }
