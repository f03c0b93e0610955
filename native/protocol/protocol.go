// Package protocol is the vocabulary of the JS↔addon contract: its version,
// the request methods JS calls, the events the addon sends to a request's
// handler, the error codes JS sees as err.code, and the error a handler's
// failure arrives as. docs/addon-protocol.md is the specification, with the
// version history. src/addon-protocol.ts is the TypeScript copy of these
// names; protocol_test.go fails when the two differ, and when a code is
// spelled out anywhere else, so neither side can drift alone.
//
// The package is pure Go (no cgo), so the codecs that speak the events
// (vfs/eventfs, netpolicy/eventpolicy, blockstore/eventstore) and their
// tests can use it without the bridge.
package protocol

import "context"

// Version is the contract's version. version() reports it and
// src/native.ts refuses an addon of another one. Bump it for any change an
// older peer would misread (docs/addon-protocol.md, "Versions").
const Version = 1

// Methods: request(method, payload, handler?) from JS.
const (
	MethodBoot  = "boot"
	MethodExec  = "exec"
	MethodSpawn = "spawn"
	MethodClose = "close"
	// MethodStats answers the counters a leak check needs that /proc cannot
	// show; for tests and scripts/soak.mjs, not the public API.
	MethodStats = "stats"
)

// Events: handler(event, payload) calls from the addon into JS.
const (
	// A mount's filesystem operation (vfs/eventfs) and the abort of a read
	// the guest gave up on.
	EventFS      = "fs"
	EventFSAbort = "fs-abort"
	// A network flow's policy decision, an intercepted HTTP request's
	// middleware, and the end of a flow's middleware (netpolicy/eventpolicy).
	EventPolicy      = "policy"
	EventHTTP        = "http"
	EventHTTPRelease = "http-release"
	// A copy-on-write root's block store (blockstore/eventstore).
	EventBlockList  = "block-list"
	EventBlockRead  = "block-read"
	EventBlockWrite = "block-write"
	EventBlockFlush = "block-flush"
	// A spawned process runs, and its output.
	EventStarted = "started"
	EventStdout  = "stdout"
	EventStderr  = "stderr"
)

// Codes of the errors the addon rejects with (err.code in JS).
const (
	// The request's JSON does not fit its method.
	CodeInvalidRequest = "ERR_SANDBOX_INVALID_REQUEST"
	// The addon has no such method: JS and addon disagree on the protocol.
	CodeUnknownMethod = "ERR_SANDBOX_UNKNOWN_METHOD"
	// The sandbox was closed, or was never booted.
	CodeClosed = "ERR_SANDBOX_CLOSED"
	// The VMM process died; the sandbox is unusable from then on.
	CodeVMMExited = "ERR_SANDBOX_VMM_EXITED"
	// The guest did not answer the handshake in time.
	CodeBootTimeout = "ERR_SANDBOX_BOOT_TIMEOUT"
	// The boot failed for another reason (the guest's own report).
	CodeBoot = "ERR_SANDBOX_BOOT"
	// No engine can run the guest on this machine.
	CodeEngine = "ERR_SANDBOX_ENGINE"
	// A copy-on-write root's store failed or answered what its contract
	// does not allow. JS raises it too, around a failing user store.
	CodeBlockStore = "ERR_SANDBOX_BLOCK_STORE"
	// exec() output passed its bound: the command was killed.
	CodeExecOutputLimit = "ERR_SANDBOX_EXEC_OUTPUT_LIMIT"
	// Anything else.
	CodeInternal = "ERR_SANDBOX"
)

// Caller sends one event to the JavaScript handler of a request and
// returns its answer: the bytes of a typed array, the UTF-8 of anything
// else, nothing for undefined. When the handler throws or rejects, the
// error is a *JSError. *napi.Callback is one; the codec packages take any,
// so their tests play the JavaScript side in Go.
type Caller interface {
	Call(ctx context.Context, event string, payload []byte) ([]byte, error)
}

// JSError is what a JavaScript handler threw or rejected with.
type JSError struct {
	Code    string // the error's string `code` property, if it had one
	Message string
}

func (e *JSError) Error() string { return "JavaScript handler failed: " + e.Message }
