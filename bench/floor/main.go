// Command floor measures the baseline that `npm run bench` compares the
// library against: the same VM (same QEMU engine, kernel, initrd and image)
// started by a minimal Go harness, with the same command run over the
// control channel, without Node, N-API or the TypeScript API in the way, and
// with QEMU reading the image itself (the library serves it over NBD, so
// that cost is part of what the ratio shows).
//
// It prints one JSON object: {"coldMs": [...], "execUs": [...], "boot":
// [{"init": ms, "root": ms, "ready": ms, "hello": ms}, ...]}, boot being
// each boot's timeline: sandbox-init's milestones on the guest's clock,
// which starts with the kernel, and "hello" the wall time from starting
// the VMM to the guest's hello.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/torkbot/sandbox/control"
	"github.com/torkbot/sandbox/vmm"
	"github.com/torkbot/sandbox/vmm/qemu"
	"github.com/torkbot/sandbox/vmm/vmmtest"
)

func main() {
	kernel, initrd, image := vmmtest.GuestFlags()
	boots := flag.Int("boots", 5, "cold boots to time")
	execs := flag.Int("execs", 50, "warm exec round trips to time")
	flag.Parse()
	if err := run(*kernel, *initrd, *image, *boots, *execs); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}

func run(kernel, initrd, image string, boots, execs int) error {
	ctx := context.Background()
	engine, err := qemu.New(ctx, qemu.Options{Accel: os.Getenv("SANDBOX_ACCEL"), Path: os.Getenv("PATH"), Env: os.Environ()}, kernel, initrd)
	if err != nil {
		return err
	}
	var out struct {
		ColdMs []float64            `json:"coldMs"`
		ExecUs []float64            `json:"execUs"`
		Boot   []map[string]float64 `json:"boot"`
	}
	for i := range boots {
		started := time.Now()
		g, err := vmmtest.Boot(ctx, engine, vmm.Spec{
			Kernel: kernel, Initrd: initrd, CPUs: 1, MemoryMiB: 512,
			RootDisk: vmm.Disk{Path: image, Format: "qcow2", ReadOnly: true},
		})
		if err != nil {
			return err
		}
		client := g.Client
		timeline := map[string]float64{"hello": float64(time.Since(started).Microseconds()) / 1e3}
		for _, e := range g.Info.Boot {
			timeline[e.Name] = float64(e.At.Microseconds()) / 1e3
		}
		out.Boot = append(out.Boot, timeline)
		var got []byte
		code, err := client.Run(ctx, control.Command{Name: "printf", Args: []string{"ready"}}, func(_ control.FD, b []byte) { got = append(got, b...) })
		if err != nil || code != 0 || string(got) != "ready" {
			return fmt.Errorf("first exec: code %d, output %q: %v", code, got, err)
		}
		out.ColdMs = append(out.ColdMs, float64(time.Since(started).Microseconds())/1e3)
		if i == boots-1 {
			for range execs {
				t := time.Now()
				if _, err := client.Run(ctx, control.Command{Name: "/bin/true"}, func(control.FD, []byte) {}); err != nil {
					return err
				}
				out.ExecUs = append(out.ExecUs, float64(time.Since(t).Nanoseconds())/1e3)
			}
		}
		g.Close()
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}
