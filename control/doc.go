// Package control is the host↔guest control protocol of a sandbox VM: the
// host (Client) asks the guest's init (Server) to run commands and to shut
// down, over one byte channel named "control".
//
// The channel carries a yamux session (host = client, guest = server) and
// every operation is one yamux stream, so operations run concurrently and
// each has its own flow control: a command that prints faster than the host
// reads is slowed down without stalling the others. On each stream the peers
// exchange the messages of package wire. PROTOCOL.md beside this file is the
// specification.
//
// # Host lifecycle
//
// NewClient wraps the channel and starts nothing. Handshake starts the
// session, performs the version handshake and returns what the guest
// reported; it must succeed before Run or Shutdown, and a failed Handshake
// closes the Client. Run and Shutdown may then be called concurrently. When
// the session ends (the guest powered off, the VMM died, the channel broke)
// Done is closed, Err says why, and pending and later calls fail with
// ErrSessionLost. Close ends the session and closes the channel; calls then
// fail with ErrClosed.
//
// # Guest lifecycle
//
// Server.Serve runs the guest side until the session ends or a shutdown
// request has been answered. The guest implements Handler: starting
// processes is the guest's business, the stream semantics (output chunks,
// exit, cancellation) are this package's.
//
// # Trust
//
// The guest is hostile: everything the Client reads is bounded and validated
// and a misbehaving stream fails only its own operation. Before yamux sees
// the guest's bytes, a filter drops its PINGs (which yamux v0.1.2 answers
// with a goroutine each) and ends the session at a stream the guest opens.
// A filter rather than a patched yamux or another mux: it changes neither
// the guest nor the wire, and carries no fork of a session layer for a bug
// only the host's receiving side has (guard.go has the details). The host
// is trusted, but the Server validates what it reads all the same.
package control
