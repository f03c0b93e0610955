// Package napi is the Go half of the Node-API bridge that makes the c-shared
// library a Node addon. JS sees one function, request(method, payload,
// handler?), returning a Promise; Go code registers a Handler per method.
//
// Threading model (measured in shared/reference/napi-go-spike):
//   - A request enters Go once, synchronously and briefly, on the JS thread
//     (goRequest); the Handler then runs on its own goroutine.
//   - Go reaches JS only through one threadsafe function per napi_env: to call
//     the request's JS handler (Request.Call) and to settle the promise.
//   - What a JS handler returns is queued in C and handed to Go by a goroutine
//     woken through a pipe, so no Go code runs on the JS thread for it
//     (entering Go there costs ~60 µs of scheduler slack per result).
//   - An env (the main thread or a worker) can be torn down at any time; calls
//     in flight for it fail with ErrEnvClosed and OnEnvTeardown hooks run.
package napi

/*
#cgo CFLAGS: -I${SRCDIR}/../../node_modules/node-api-headers/include -DNAPI_VERSION=8 -O2 -Wall
#cgo darwin LDFLAGS: -Wl,-undefined,dynamic_lookup
#include "bridge.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/torkbot/sandbox/native/protocol"
)

// ErrEnvClosed reports that the JavaScript environment that made a request is
// being torn down, so its handler can no longer be called.
var ErrEnvClosed = errors.New("napi: JavaScript environment is shutting down")

// EnvID names one napi_env: the main thread's, or a worker thread's.
type EnvID uint64

// Handler serves one request method. The returned bytes resolve the JS
// promise; an error rejects it (with Error.Code when the error wraps an *Error).
// ctx is cancelled when the request's env is torn down.
type Handler func(ctx context.Context, req *Request) ([]byte, error)

// Error is an error with a stable code that JS sees as `err.code`.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Message }

// Request is one JS call of request(method, payload, handler?).
type Request struct {
	Env     EnvID
	Method  string
	Payload []byte

	env *env
	op  *C.bridge_op

	mu       sync.Mutex
	finished bool // the promise is settled (or being settled)
	kept     bool // the handler outlives the promise: see KeepHandler
}

// Callback is a request's JS handler kept callable after the request
// settled (Request.KeepHandler). Whoever keeps it must Release it. It is
// the protocol.Caller the event codecs take.
type Callback struct {
	req      *Request
	released atomic.Bool
}

var _ protocol.Caller = (*Callback)(nil)

type env struct {
	id     EnvID
	ctx    context.Context
	cancel context.CancelFunc

	// mu is held for reading around every post to the threadsafe function
	// and for writing by teardown, after which c is freed by C.
	mu   sync.RWMutex
	dead bool
	c    *C.bridge_env
}

type result struct {
	val []byte
	err error
}

var (
	handlers   = map[string]Handler{}
	versionFn  = func() string { return "{}" }
	teardownMu sync.Mutex
	teardowns  []func(EnvID)

	envsMu  sync.Mutex
	envs    = map[EnvID]*env{}
	nextEnv EnvID

	nextCall  atomic.Uint64
	pendingMu sync.Mutex
	pending   = map[uint64]pendingCall{}
)

type pendingCall struct {
	env *env
	ch  chan result
}

// Handle registers h for method. Call it from init functions only: requests
// read the table without locking.
func Handle(method string, h Handler) {
	if _, dup := handlers[method]; dup {
		panic("napi: duplicate handler for " + method)
	}
	handlers[method] = h
}

// SetVersion sets what JS's version() returns. Call it from an init function.
func SetVersion(f func() string) { versionFn = f }

// OnEnvTeardown registers f to run when an env is torn down. f runs on the JS
// thread while Node shuts that env down: it must not block.
func OnEnvTeardown(f func(EnvID)) {
	teardownMu.Lock()
	defer teardownMu.Unlock()
	teardowns = append(teardowns, f)
}

func init() {
	fd := C.bridge_result_fd()
	if fd < 0 {
		panic("napi: cannot create the result pipe")
	}
	// A non-blocking fd wrapped by os.NewFile is served by Go's netpoller.
	go pumpResults(os.NewFile(uintptr(fd), "napi-results"))
}

func pumpResults(f *os.File) {
	// One byte per wakeup; several may have piled up while the queue was
	// being drained, and one read takes them all.
	var b [64]byte
	for {
		if _, err := f.Read(b[:]); err != nil {
			panic(fmt.Sprintf("napi: reading the result pipe: %v", err))
		}
		for r := C.bridge_take_results(); r != nil; {
			next := r.next
			res := result{}
			data := C.GoBytes(unsafe.Pointer(r.data), C.int(r.len))
			switch r.ok {
			case C.BRIDGE_FULFILLED:
				res.val = data
			case C.BRIDGE_ENV_CLOSED:
				res.err = ErrEnvClosed
			default:
				jsErr := &protocol.JSError{Message: string(data)}
				if r.code != nil {
					jsErr.Code = C.GoString(r.code)
				}
				res.err = jsErr
			}
			settle(uint64(r.call_id), res)
			C.bridge_free_result(r)
			r = next
		}
	}
}

func settle(id uint64, r result) {
	pendingMu.Lock()
	p, ok := pending[id]
	delete(pending, id)
	pendingMu.Unlock()
	if ok {
		p.ch <- r
	}
}

//export goEnvInit
func goEnvInit(c *C.bridge_env) C.uint64_t {
	envsMu.Lock()
	defer envsMu.Unlock()
	nextEnv++
	ctx, cancel := context.WithCancel(context.Background())
	envs[nextEnv] = &env{id: nextEnv, ctx: ctx, cancel: cancel, c: c}
	return C.uint64_t(nextEnv)
}

//export goEnvTeardown
func goEnvTeardown(id C.uint64_t) {
	envsMu.Lock()
	e := envs[EnvID(id)]
	delete(envs, EnvID(id))
	envsMu.Unlock()
	if e == nil {
		return
	}
	e.mu.Lock() // waits for posts in flight: C frees e.c when we return
	e.dead = true
	e.mu.Unlock()
	e.cancel()

	pendingMu.Lock()
	for k, p := range pending {
		if p.env == e {
			p.ch <- result{err: ErrEnvClosed}
			delete(pending, k)
		}
	}
	pendingMu.Unlock()

	teardownMu.Lock()
	hooks := append([]func(EnvID){}, teardowns...)
	teardownMu.Unlock()
	for _, f := range hooks {
		f(e.id)
	}
}

//export goVersion
func goVersion() *C.char { return C.CString(versionFn()) }

//export goRequest
func goRequest(envID C.uint64_t, op *C.bridge_op, method *C.char, methodLen C.int, payload unsafe.Pointer, payloadLen C.int) {
	envsMu.Lock()
	e := envs[EnvID(envID)]
	envsMu.Unlock()
	req := &Request{
		Env:     EnvID(envID),
		Method:  C.GoStringN(method, methodLen),
		Payload: C.GoBytes(payload, payloadLen),
		env:     e,
		op:      op,
	}
	if e == nil {
		return // cannot happen: the env that calls us is registered until teardown
	}
	h := handlers[req.Method]
	go func() {
		if h == nil {
			req.finish(nil, &Error{Code: protocol.CodeUnknownMethod, Message: fmt.Sprintf("addon has no method %q", req.Method)})
			return
		}
		req.finish(h(e.ctx, req))
	}()
}

// KeepHandler keeps the request's JS handler callable after the Handler
// returns and the promise settles: for a sandbox whose guest calls into JS
// for its whole life, not just while boot is pending. A kept handler does
// not keep Node's event loop alive.
func (r *Request) KeepHandler() *Callback {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.kept = true
	return &Callback{req: r}
}

// Call calls the kept handler; see Request.Call.
func (c *Callback) Call(ctx context.Context, event string, payload []byte) ([]byte, error) {
	if c.released.Load() {
		return nil, ErrEnvClosed
	}
	return c.req.Call(ctx, event, payload)
}

// Release lets the JS handler go. Calls after it fail. Idempotent.
func (c *Callback) Release() {
	if c.released.Swap(true) {
		return
	}
	r := c.req
	// Held while posting, so that the release cannot overtake the promise's
	// settlement in the queue: the settlement would then use a freed op.
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.finished {
		// Not settled yet: finish releases the handler with the promise.
		r.kept = false
		return
	}
	r.env.mu.RLock()
	defer r.env.mu.RUnlock()
	if !r.env.dead {
		C.bridge_post_release(r.env.c, r.op)
	}
}

// finish settles the request's promise, and lets its handler go unless it
// is kept.
func (r *Request) finish(val []byte, err error) {
	ok, code, body := C.int(1), (*C.char)(nil), val
	if err != nil {
		ok, body = 0, []byte(err.Error())
		var coded *Error
		if errors.As(err, &coded) {
			code = C.CString(coded.Code)
		} else {
			code = C.CString(protocol.CodeInternal)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock() // see Callback.Release
	r.finished = true
	keep := C.int(0)
	if r.kept {
		keep = 1
	}
	r.env.mu.RLock()
	defer r.env.mu.RUnlock()
	if r.env.dead {
		C.free(unsafe.Pointer(code))
		return
	}
	C.bridge_post_done(r.env.c, r.op, ok, keep, code, (*C.char)(C.CBytes(body)), C.size_t(len(body)))
}

// Call invokes the JS handler passed with the request as handler(event,
// payload) and waits until its return value (awaited if it is a promise)
// comes back. It fails with a *protocol.JSError if the handler throws or
// rejects, with ErrEnvClosed if the env is going away, and with ctx's error
// when ctx ends first (the JS handler may still run; its result is then
// dropped).
func (r *Request) Call(ctx context.Context, event string, payload []byte) ([]byte, error) {
	id := nextCall.Add(1)
	ch := make(chan result, 1)
	pendingMu.Lock()
	pending[id] = pendingCall{r.env, ch}
	pendingMu.Unlock()

	status := C.napi_status(C.napi_closing)
	r.env.mu.RLock()
	if !r.env.dead {
		status = C.bridge_post_event(r.env.c, r.op, C.uint64_t(id), C.CString(event), (*C.char)(C.CBytes(payload)), C.size_t(len(payload)))
	}
	r.env.mu.RUnlock()
	if status != C.napi_ok {
		pendingMu.Lock()
		delete(pending, id)
		pendingMu.Unlock()
		return nil, ErrEnvClosed
	}
	select {
	case res := <-ch:
		return res.val, res.err
	case <-ctx.Done():
		pendingMu.Lock()
		delete(pending, id)
		pendingMu.Unlock()
		return nil, ctx.Err()
	}
}
