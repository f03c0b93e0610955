// Command virtiofs is the anchor of the mounts benchmark: QEMU's own
// virtiofsd serving a host tmpfs directory to the same microvm guest (same
// kernel, initrd and image as the library's), so `npm run bench` can show
// our FUSE-over-channel mounts next to the VMM vendor's shared filesystem.
//
// It reads the workloads as JSON ([["name", "shell script using $DIR"], ...])
// on stdin, runs each three times, in order, on the virtiofs mount inside
// the guest, and prints {"name": median ms} as JSON.
//
// The QEMU command line differs from vmm/qemu's on purpose: vhost-user-fs
// needs guest memory in a shared memfd and the modern virtio-mmio
// transport, which the library does not otherwise use. So this command has
// its own small engine (virtiofsQEMU), which vmmtest.Boot drives as it
// drives vmm/qemu for bench/floor and bench/disk.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/torkbot/sandbox/control"
	"github.com/torkbot/sandbox/vmm"
	"github.com/torkbot/sandbox/vmm/qemu"
	"github.com/torkbot/sandbox/vmm/vmmtest"
)

func main() {
	kernel, initrd, image := vmmtest.GuestFlags()
	virtiofsd := flag.String("virtiofsd", "/usr/lib/qemu/virtiofsd", "QEMU's virtiofsd")
	flag.Parse()
	var workloads [][2]string
	if err := json.NewDecoder(os.Stdin).Decode(&workloads); err != nil {
		fail(fmt.Errorf("read workloads: %w", err))
	}
	results, err := run(*kernel, *initrd, *image, *virtiofsd, workloads)
	if err != nil {
		fail(err)
	}
	json.NewEncoder(os.Stdout).Encode(results)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "virtiofs:", err)
	os.Exit(1)
}

func run(kernel, initrd, image, virtiofsd string, workloads [][2]string) (map[string]float64, error) {
	dir, err := os.MkdirTemp("/dev/shm", "virtiofs-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	shared := filepath.Join(dir, "shared")
	if err := os.Mkdir(shared, 0o755); err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "vfs.sock")
	fsd := exec.Command(virtiofsd, "--socket-path="+sock, "-o", "source="+shared, "-o", "cache=auto")
	fsd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := fsd.Start(); err != nil {
		return nil, fmt.Errorf("start virtiofsd: %w", err)
	}
	defer func() { fsd.Process.Kill(); fsd.Wait() }()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("virtiofsd did not create %s", sock)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	g, err := vmmtest.Boot(ctx, virtiofsQEMU{sock: sock}, vmm.Spec{
		Kernel: kernel, Initrd: initrd, CPUs: 1, MemoryMiB: 512,
		RootDisk: vmm.Disk{Path: image, Format: "qcow2", ReadOnly: true},
	})
	if err != nil {
		return nil, err
	}
	defer g.Close()
	client := g.Client
	sh := func(script string) (string, error) {
		var out strings.Builder
		code, err := client.Run(ctx, control.Command{Name: "bash", Args: []string{"-c", script}}, func(_ control.FD, b []byte) { out.Write(b) })
		if err == nil && code != 0 {
			err = fmt.Errorf("%q: exit %d: %s", script, code, out.String())
		}
		return out.String(), err
	}
	if _, err := sh("mount -t virtiofs host /mnt"); err != nil {
		return nil, err
	}
	results := map[string]float64{}
	for _, w := range workloads {
		name, script := w[0], w[1]
		var times []float64
		for range 3 {
			out, err := sh(fmt.Sprintf(`DIR=/mnt; s=$(date +%%s%%N); %s; e=$(date +%%s%%N); echo $(( (e - s) / 1000000 ))`, script))
			if err != nil {
				return nil, err
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			ms, err := strconv.ParseFloat(lines[len(lines)-1], 64)
			if err != nil {
				return nil, fmt.Errorf("%s: timing %q: %w", name, out, err)
			}
			times = append(times, ms)
		}
		slices.Sort(times)
		results[name] = times[1]
	}
	return results, nil
}

// virtiofsQEMU is the engine of this benchmark: QEMU as vmm/qemu starts it
// under TCG, plus a vhost-user-fs device on the virtiofsd socket sock,
// with guest memory in a shared memfd and the modern virtio-mmio transport
// (which vhost-user needs).
type virtiofsQEMU struct{ sock string }

func (virtiofsQEMU) Name() string { return "qemu-virtiofs" }

func (e virtiofsQEMU) Start(ctx context.Context, spec vmm.Spec) (vmm.Machine, error) {
	if err := spec.Validate(); err != nil {
		spec.Close()
		return nil, err
	}
	boot, err := spec.Boot.Encode()
	if err != nil {
		spec.Close()
		return nil, err
	}
	// The library's TCG command line (vmm/qemu), TSC rate included.
	cmdline := qemu.Cmdline(qemu.AccelTCG) + " " + boot
	var files vmm.ExtraFiles
	defer files.Close()
	args := []string{
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-accel", "tcg",
		"-object", fmt.Sprintf("memory-backend-memfd,id=mem,size=%dM,share=on", spec.MemoryMiB),
		"-M", qemu.Machine + ",memory-backend=mem", "-m", fmt.Sprint(spec.MemoryMiB), "-smp", fmt.Sprint(spec.CPUs),
		"-global", "virtio-mmio.force-legacy=false",
		"-kernel", spec.Kernel, "-initrd", spec.Initrd, "-append", cmdline,
		"-serial", "null",
		"-drive", fmt.Sprintf("file=%s,format=%s,if=none,id=root,readonly=on", spec.RootDisk.Path, spec.RootDisk.Format),
		"-device", "virtio-blk-device,drive=root",
		"-chardev", "socket,id=vfs,path=" + e.sock, "-device", "vhost-user-fs-device,chardev=vfs,tag=host",
		"-device", "virtio-serial-device",
	}
	for i, ch := range spec.Channels {
		args = append(args,
			"-chardev", fmt.Sprintf("socket,id=ch%d,fd=%d", i, files.Add(ch.Conn)),
			"-device", fmt.Sprintf("virtserialport,chardev=ch%d,name=%s", i, ch.Name))
	}
	cmd := vmm.Command(os.Environ(), "qemu-system-x86_64", args...)
	cmd.ExtraFiles = files.Files()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		stdout.Close()
		return nil, err
	}
	if err := vmm.StartChild(cmd); err != nil {
		stdout.Close()
		stderr.Close()
		return nil, fmt.Errorf("start qemu: %w", err)
	}
	return vmm.WatchChild(cmd, stdout, stderr, os.Stderr, "qemu", nil), nil
}
