// Command native is the addon: built with -buildmode=c-shared into the one
// sandbox.node that Node loads. It owns the table of booted sandboxes and
// wires the request methods JS calls (see bridge/napi) to the services:
//
//	boot  {kernel, initrd, rootDisk, cpus, memoryMiB, mounts, network, settings} → {id}
//	      handler kept until close: "fs"/"fs-abort" (jsfs.go), "policy"
//	      (jspolicy.go), "block-list/read/write/flush" (jsstore.go)
//	exec  {id, command, args, cwd, env} → {exitCode, stdout, stderr}
//	spawn {id, command, args, cwd, env}, handler("started" once running, then
//	      "stdout"|"stderr", chunk) → {exitCode}
//	close {id} → {}
//	stats {} → {goroutines, sandboxes}: the counters a leak check needs that
//	      /proc cannot show (scripts/soak.mjs, tests/e2e/faults.test.mjs)
//
// Errors reach JS with a stable `code` (see codes.go).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"

	"github.com/torkbot/sandbox/bridge/napi"
)

// packageVersion is set at build time to package.json's version.
var packageVersion = "dev"

// protocolVersion is the JS↔addon contract's version; src/native.ts checks it.
const protocolVersion = 1

func main() {}

func init() {
	napi.SetVersion(func() string {
		b, _ := json.Marshal(map[string]any{"version": packageVersion, "protocol": protocolVersion, "go": runtime.Version()})
		return string(b)
	})
	napi.Handle("boot", jsonMethod(boot))
	napi.Handle("exec", jsonMethod(execute))
	napi.Handle("spawn", jsonMethod(spawn))
	napi.Handle("close", jsonMethod(closeSandbox))
	napi.Handle("stats", jsonMethod(stats))
	napi.OnEnvTeardown(killEnvSandboxes)
}

// jsonMethod adapts a handler of typed JSON requests and responses.
func jsonMethod[Req, Resp any](f func(context.Context, *napi.Request, Req) (Resp, error)) napi.Handler {
	return func(ctx context.Context, r *napi.Request) ([]byte, error) {
		var req Req
		if err := json.Unmarshal(r.Payload, &req); err != nil {
			return nil, &napi.Error{Code: codeInvalidRequest, Message: fmt.Sprintf("invalid %s request: %v", r.Method, err)}
		}
		resp, err := f(ctx, r, req)
		if err != nil {
			return nil, jsError(err)
		}
		return json.Marshal(resp)
	}
}

type statsResponse struct {
	Goroutines int `json:"goroutines"`
	Sandboxes  int `json:"sandboxes"`
}

// stats reports what the addon holds: goroutines (each sandbox's services,
// flows and calls in flight run on some) and booted sandboxes not closed.
func stats(context.Context, *napi.Request, struct{}) (statsResponse, error) {
	sandboxesMu.Lock()
	n := len(sandboxes)
	sandboxesMu.Unlock()
	return statsResponse{Goroutines: runtime.NumGoroutine(), Sandboxes: n}, nil
}
