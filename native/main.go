// Command native is the addon: built with -buildmode=c-shared into the one
// sandbox.node that Node loads. It owns the table of booted sandboxes and
// wires the request methods JS calls (see bridge/napi) to the services.
//
// docs/addon-protocol.md specifies the methods, their JSON and the events
// each sends to its handler; native/protocol holds the names and the
// version, shared with src/addon-protocol.ts. In short:
//
//	boot  {kernel, initrd, rootDisk, cpus, memoryMiB, mounts, network,
//	      settings} → {id}; its handler is kept until close for the guest's
//	      calls into JS: fs, fs-abort (vfs/eventfs); policy, http,
//	      http-release (netpolicy/eventpolicy); block-list/read/write/flush
//	      (blockstore/eventstore)
//	exec  {id, command, args, cwd, env} → {exitCode, stdout, stderr}
//	spawn {id, command, args, cwd, env} → {exitCode}; handler gets started
//	      once the process runs, then stdout/stderr chunks
//	close {id} → {}
//	stats {} → {goroutines, sandboxes}: the counters a leak check needs that
//	      /proc cannot show (scripts/soak.mjs, tests/e2e/faults.test.mjs)
//
// Errors reach JS with a stable `code` (protocol.Code*, see codes.go).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"

	"github.com/torkbot/sandbox/bridge/napi"
	"github.com/torkbot/sandbox/native/protocol"
)

// packageVersion is set at build time to package.json's version.
var packageVersion = "dev"

func main() {}

func init() {
	napi.SetVersion(func() string {
		b, _ := json.Marshal(map[string]any{"version": packageVersion, "protocol": protocol.Version, "go": runtime.Version()})
		return string(b)
	})
	napi.Handle(protocol.MethodBoot, jsonMethod(boot))
	napi.Handle(protocol.MethodExec, jsonMethod(execute))
	napi.Handle(protocol.MethodSpawn, jsonMethod(spawn))
	napi.Handle(protocol.MethodClose, jsonMethod(closeSandbox))
	napi.Handle(protocol.MethodStats, jsonMethod(stats))
	napi.OnEnvTeardown(killEnvSandboxes)
}

// jsonMethod adapts a handler of typed JSON requests and responses.
func jsonMethod[Req, Resp any](f func(context.Context, *napi.Request, Req) (Resp, error)) napi.Handler {
	return func(ctx context.Context, r *napi.Request) ([]byte, error) {
		var req Req
		if err := json.Unmarshal(r.Payload, &req); err != nil {
			return nil, &napi.Error{Code: protocol.CodeInvalidRequest, Message: fmt.Sprintf("invalid %s request: %v", r.Method, err)}
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
