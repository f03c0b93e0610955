package vfs

import (
	"io"
	"time"
)

// Options tune Serve. The zero value is ready to use.
type Options struct {
	// CallTimeout bounds every backend call: one that has not returned by
	// then fails the operation with EIO and has its ctx cancelled.
	// Default 30 s.
	CallTimeout time.Duration
	// CacheTimeout is how long the guest kernel may cache attributes,
	// names and absent names before asking again. Default 1 s; negative
	// disables caching (every stat goes to the backend).
	CacheTimeout time.Duration
	// MaxWrite is the largest WRITE (and READ) the guest sends, in bytes.
	// Default 128 KiB, at most 1 MiB.
	MaxWrite int
	// MaxInFlight bounds the requests served at once; the connection is
	// not read further while that many are outstanding. It also bounds
	// the backend calls running at once, answered or not: one whose
	// request was interrupted or timed out counts until it returns.
	// Default 64.
	MaxInFlight int
	// Log receives one line per backend error that carries no errno, per
	// backend timeout and per protocol oddity. Nil discards them.
	Log io.Writer
}

// Defaults and limits of Options.
const (
	DefaultCallTimeout  = 30 * time.Second
	DefaultCacheTimeout = time.Second
	DefaultMaxWrite     = 128 << 10
	DefaultMaxInFlight  = 64
	// MaxMaxWrite is the kernel's own ceiling (FUSE_MAX_MAX_PAGES pages).
	MaxMaxWrite = 1 << 20
)

func (o Options) withDefaults() Options {
	if o.CallTimeout <= 0 {
		o.CallTimeout = DefaultCallTimeout
	}
	switch {
	case o.CacheTimeout == 0:
		o.CacheTimeout = DefaultCacheTimeout
	case o.CacheTimeout < 0:
		o.CacheTimeout = 0
	}
	if o.MaxWrite <= 0 {
		o.MaxWrite = DefaultMaxWrite
	}
	o.MaxWrite = min(max(o.MaxWrite, 4096), MaxMaxWrite)
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = DefaultMaxInFlight
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	return o
}
