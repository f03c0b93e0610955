package vmmtest

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/torkbot/sandbox/control"
	"github.com/torkbot/sandbox/internal/sockpair"
	"github.com/torkbot/sandbox/vmm"
)

// Guest is a machine booted by Boot, with its control client ready.
type Guest struct {
	Machine vmm.Machine
	Client  *control.Client
	// Info is what init said in its hello, its boot timeline included.
	Info control.GuestInfo
}

// Boot starts spec with engine, adding the "control" channel, and completes
// the control handshake within a minute: the smallest boot of a real guest,
// without the lane's network, mounts or NBD root, for benchmarks that
// measure the engine and guest alone (bench/floor, bench/disk,
// bench/virtiofs) and tests that need just a guest.
func Boot(ctx context.Context, engine vmm.Engine, spec vmm.Spec) (*Guest, error) {
	host, guest, err := sockpair.New("control-host", "control-guest")
	if err != nil {
		return nil, err
	}
	spec.Channels = append(append([]vmm.Channel(nil), spec.Channels...), vmm.Channel{Name: "control", Conn: guest})
	m, err := engine.Start(ctx, spec)
	if err != nil {
		host.Close()
		return nil, err
	}
	client, err := control.NewClient(host)
	if err != nil {
		host.Close()
		m.Kill()
		<-m.Done()
		return nil, err
	}
	g := &Guest{Machine: m, Client: client}
	hctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if g.Info, err = client.Handshake(hctx, control.Setup{}); err != nil {
		g.Close()
		return nil, fmt.Errorf("control handshake: %w (VMM %s)", err, exitStatus(m))
	}
	return g, nil
}

// Close asks the guest to power off, kills the VMM if it has not within
// five seconds, and waits for it.
func (g *Guest) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	g.Client.Shutdown(ctx)
	select {
	case <-g.Machine.Done():
	case <-ctx.Done():
		g.Machine.Kill()
		<-g.Machine.Done()
	}
	g.Client.Close()
}

func exitStatus(m vmm.Machine) string {
	select {
	case <-m.Done():
		return m.ExitStatus()
	default:
		return "running"
	}
}

// GuestFlags registers the flags every benchmark command that boots a
// guest takes (bench/run.mjs passes them): -kernel, -initrd and -image.
func GuestFlags() (kernel, initrd, image *string) {
	return flag.String("kernel", "", "guest kernel (vmlinux)"),
		flag.String("initrd", "", "initrd.cpio"),
		flag.String("image", "", "root disk (qcow2)")
}
