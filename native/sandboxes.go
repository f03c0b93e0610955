package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/torkbot/sandbox/blockstore"
	"github.com/torkbot/sandbox/bridge/napi"
	"github.com/torkbot/sandbox/control"
	"github.com/torkbot/sandbox/native/lane"
	"github.com/torkbot/sandbox/native/protocol"
	"github.com/torkbot/sandbox/native/settings"
	"github.com/torkbot/sandbox/netpolicy"
	"github.com/torkbot/sandbox/netpolicy/eventpolicy"
	"github.com/torkbot/sandbox/vfs/eventfs"
	"github.com/torkbot/sandbox/vmm"
	"github.com/torkbot/sandbox/vmm/engines"
)

type sandbox struct {
	env  napi.EnvID
	lane *lane.Lane
	// events is the boot request's JS handler, kept while the guest may call
	// into JavaScript (network policy); nil when it never does.
	events *napi.Callback
}

var (
	sandboxesMu sync.Mutex
	sandboxes   = map[uint64]*sandbox{}
	nextID      uint64
)

func lookup(id uint64) (*sandbox, error) {
	sandboxesMu.Lock()
	defer sandboxesMu.Unlock()
	s := sandboxes[id]
	if s == nil {
		return nil, lane.ErrClosed
	}
	return s, nil
}

type bootRequest struct {
	Kernel   string `json:"kernel"`
	Initrd   string `json:"initrd"`
	RootDisk struct {
		Path     string `json:"path"`
		Format   string `json:"format"`
		ReadOnly bool   `json:"readOnly"`
		// BlockSize is the COW store's block size (readOnly false only);
		// the store itself is reached through "block-*" events.
		BlockSize int `json:"blockSize"`
	} `json:"rootDisk"`
	CPUs      int `json:"cpus"`
	MemoryMiB int `json:"memoryMiB"`
	Mounts    []struct {
		Path   string `json:"path"`
		Access string `json:"access"` // "read-only" or "posix"
	} `json:"mounts"`
	Network bool `json:"network"`
	// Settings are process.env's at the boot() call: the Go runtime's own
	// copy of the environment may predate them (native/settings).
	Settings settings.Request `json:"settings"`
}

type bootResponse struct {
	ID uint64 `json:"id"`
}

func boot(ctx context.Context, r *napi.Request, req bootRequest) (bootResponse, error) {
	started := time.Now()
	cow := !req.RootDisk.ReadOnly
	if cow && req.RootDisk.BlockSize <= 0 {
		return bootResponse{}, &napi.Error{Code: protocol.CodeInvalidRequest, Message: fmt.Sprintf("rootDisk.blockSize %d: a copy-on-write root needs its store's block size", req.RootDisk.BlockSize)}
	}
	set, err := req.Settings.Resolve()
	if err != nil {
		return bootResponse{}, &napi.Error{Code: protocol.CodeInvalidRequest, Message: err.Error()}
	}
	engine, err := engineSelector.Select(ctx, set.Engines, req.Kernel, req.Initrd)
	if err != nil {
		return bootResponse{}, &napi.Error{Code: protocol.CodeEngine, Message: err.Error()}
	}
	var events *napi.Callback
	if req.Network || len(req.Mounts) > 0 || cow {
		events = r.KeepHandler()
	}
	var store blockstore.Store
	if cow {
		store = jsStore(events, req.RootDisk.BlockSize)
	}
	var (
		policy        netpolicy.Policy
		upstreamRoots []byte
	)
	if req.Network {
		policy = eventpolicy.New(events)
		if upstreamRoots, err = readExtraCACerts(set.ExtraCACerts); err != nil {
			events.Release()
			return bootResponse{}, &napi.Error{Code: protocol.CodeInvalidRequest, Message: err.Error()}
		}
	}
	mounts := make([]lane.Mount, len(req.Mounts))
	for i, m := range req.Mounts {
		mounts[i].Target = m.Path
		switch m.Access {
		case "posix":
			mounts[i].FS = eventfs.NewPosix(events, i)
		case "read-only":
			mounts[i].FS = eventfs.New(events, i)
		default:
			events.Release()
			return bootResponse{}, &napi.Error{Code: protocol.CodeInvalidRequest, Message: fmt.Sprintf("mount %s: unknown access %q", m.Path, m.Access)}
		}
	}
	l, err := lane.Boot(ctx, lane.Config{
		Engine:           engine,
		Kernel:           req.Kernel,
		Initrd:           req.Initrd,
		RootDisk:         vmm.Disk{Path: req.RootDisk.Path, Format: req.RootDisk.Format, ReadOnly: req.RootDisk.ReadOnly},
		RootStore:        store,
		UpstreamRootsPEM: upstreamRoots,
		CPUs:             req.CPUs,
		MemoryMiB:        req.MemoryMiB,
		ConsoleOutput:    set.ConsoleOutput,
		BootTimeout:      set.BootTimeout,
		Env:              set.Env,
		TempDir:          set.TempDir,
		Network:          policy,
		Mounts:           mounts,
		Log:              os.Stderr,
		// As in 0.6.0, a built-in root under a network policy is writable,
		// its changes thrown away at close.
		EphemeralRoot: req.Network && req.RootDisk.ReadOnly,
	})
	if err != nil {
		if events != nil {
			events.Release()
		}
		return bootResponse{}, err
	}
	sandboxesMu.Lock()
	nextID++
	id := nextID
	sandboxes[id] = &sandbox{env: r.Env, lane: l, events: events}
	sandboxesMu.Unlock()
	if set.Debug {
		fmt.Fprintf(os.Stderr, "sandbox: boot %d on %s (%s), kernel %s: ready after %d ms; guest clock: %s\n",
			id, engine.Name(), engine.Accel, l.Guest.KernelRelease, time.Since(started).Milliseconds(), l.Timeline())
	}
	return bootResponse{ID: id}, nil
}

// engines keeps the engine chosen per kernel and initrd for the process.
var engineSelector engines.Selector

type commandRequest struct {
	ID      uint64            `json:"id"`
	Command string            `json:"command"`
	Args    []string          `json:"args"`
	Cwd     string            `json:"cwd"`
	Env     map[string]string `json:"env"`
}

func (c commandRequest) command() control.Command {
	return control.Command{Name: c.Command, Args: c.Args, Dir: c.Cwd, Env: c.Env}
}

type execResponse struct {
	ExitCode int    `json:"exitCode"`
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
}

// maxExecOutput bounds what one exec() holds: its result is the whole
// output, so a command printing without end would take the host's memory.
// 64 MiB of stdout and stderr together is far beyond what a command whose
// output is read as one string prints; past it the command is killed and
// exec() rejects with protocol.CodeExecOutputLimit, pointing to spawn().
const maxExecOutput = 64 << 20

func execute(ctx context.Context, _ *napi.Request, req commandRequest) (execResponse, error) {
	s, err := lookup(req.ID)
	if err != nil {
		return execResponse{}, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var stdout, stderr bytes.Buffer
	overLimit := false
	cmd := req.command()
	cmd.SignalNote = true // as 0.6.0's exec
	code, err := s.lane.Run(ctx, cmd, func(fd control.FD, chunk []byte) {
		if overLimit {
			return
		}
		if stdout.Len()+stderr.Len()+len(chunk) > maxExecOutput {
			overLimit = true
			cancel() // the guest kills the command's process group
			return
		}
		if fd == control.Stdout {
			stdout.Write(chunk)
		} else {
			stderr.Write(chunk)
		}
	})
	if overLimit {
		return execResponse{}, &napi.Error{Code: protocol.CodeExecOutputLimit, Message: fmt.Sprintf(
			"sandbox exec output exceeded %d MiB (stdout and stderr together): the command was killed; use spawn() to stream large output", maxExecOutput>>20)}
	}
	if err != nil {
		return execResponse{}, err
	}
	// encoding/json writes invalid UTF-8 as U+FFFD, as TextDecoder would.
	return execResponse{ExitCode: code, Stdout: stdout.String(), Stderr: stderr.String()}, nil
}

type spawnResponse struct {
	ExitCode int `json:"exitCode"`
}

func spawn(ctx context.Context, r *napi.Request, req commandRequest) (spawnResponse, error) {
	s, err := lookup(req.ID)
	if err != nil {
		return spawnResponse{}, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var deliverErr error
	cmd := req.command()
	// spawn() resolves once the process runs, as in 0.6.0.
	cmd.Started = func() {
		if _, err := r.Call(ctx, protocol.EventStarted, nil); err != nil {
			deliverErr = err
			cancel()
		}
	}
	code, err := s.lane.Run(ctx, cmd, func(fd control.FD, chunk []byte) {
		if deliverErr != nil {
			return
		}
		// Waiting for the JS handler is the backpressure: a reader that
		// falls behind slows the guest process down.
		event := protocol.EventStdout
		if fd == control.Stderr {
			event = protocol.EventStderr
		}
		if _, err := r.Call(ctx, event, chunk); err != nil {
			deliverErr = err
			cancel() // nobody can receive the output: stop the process
		}
	})
	if deliverErr != nil {
		return spawnResponse{}, fmt.Errorf("delivering spawn output: %w", deliverErr)
	}
	if err != nil {
		return spawnResponse{}, err
	}
	return spawnResponse{ExitCode: code}, nil
}

type closeRequest struct {
	ID uint64 `json:"id"`
}

func closeSandbox(ctx context.Context, _ *napi.Request, req closeRequest) (struct{}, error) {
	sandboxesMu.Lock()
	s := sandboxes[req.ID]
	sandboxesMu.Unlock()
	if s == nil {
		return struct{}{}, nil // closing twice is fine
	}
	err := s.lane.Close(context.WithoutCancel(ctx))
	if s.events != nil {
		s.events.Release()
	}
	sandboxesMu.Lock()
	delete(sandboxes, req.ID)
	sandboxesMu.Unlock()
	return struct{}{}, err
}

// killEnvSandboxes stops the sandboxes a torn-down JS environment booted:
// nobody is left to close them.
func killEnvSandboxes(env napi.EnvID) {
	sandboxesMu.Lock()
	var doomed []*lane.Lane
	for id, s := range sandboxes {
		if s.env == env {
			doomed = append(doomed, s.lane)
			delete(sandboxes, id)
		}
	}
	sandboxesMu.Unlock()
	// The env's kept handlers die with it: nothing to release.
	for _, l := range doomed {
		go l.Kill() // must not block the JS thread; Kill waits for the VMM to exit
	}
}

// readExtraCACerts reads the certificates Node trusts besides its own roots
// (NODE_EXTRA_CA_CERTS), so that intercepted HTTPS trusts the same origins
// the user's Node code does. Node only warns about an unreadable file; a
// boot with a network policy fails instead, because every HTTPS request to
// such an origin would fail later with a less helpful 502.
func readExtraCACerts(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("NODE_EXTRA_CA_CERTS: %w (the network policy trusts these certificates for intercepted HTTPS; fix or unset the variable)", err)
	}
	return pem, nil
}
