package control

import (
	"io"
	"time"

	"github.com/hashicorp/yamux"
)

// yamuxConfig is the session configuration of both peers.
func yamuxConfig(log io.Writer) *yamux.Config {
	cfg := yamux.DefaultConfig()
	// Liveness is the VMM process's, which the host watches; pings across a
	// TCG-emulated guest under load would only add false session deaths.
	cfg.EnableKeepAlive = false
	// The host opens its first stream before the guest has booted: how long
	// that may take is the caller's context's business, not yamux's.
	cfg.StreamOpenTimeout = 0
	// A stream write that cannot reach the channel for this long means the
	// peer has stopped reading the channel at all (not just one stream).
	cfg.ConnectionWriteTimeout = 30 * time.Second
	// A stream whose peer never completes a close is reset after this.
	cfg.StreamCloseTimeout = 30 * time.Second
	if log == nil {
		log = io.Discard
	}
	cfg.LogOutput = log
	return cfg
}
