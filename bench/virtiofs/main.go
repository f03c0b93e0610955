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
// transport, which the library does not otherwise use.
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
	"github.com/torkbot/sandbox/vmm/qemu"
)

func main() {
	kernel := flag.String("kernel", "", "vmlinux")
	initrd := flag.String("initrd", "", "initrd.cpio")
	image := flag.String("image", "", "root disk (qcow2)")
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

	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	host, guest := os.NewFile(uintptr(fds[0]), "control-host"), os.NewFile(uintptr(fds[1]), "control-guest")
	vm := exec.Command("qemu-system-x86_64",
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-accel", "tcg",
		"-object", "memory-backend-memfd,id=mem,size=512M,share=on",
		"-M", qemu.Machine+",memory-backend=mem", "-m", "512", "-smp", "1",
		"-global", "virtio-mmio.force-legacy=false",
		"-kernel", kernel, "-initrd", initrd, "-append", qemu.Cmdline(qemu.AccelTCG),
		"-serial", "null",
		"-drive", fmt.Sprintf("file=%s,format=qcow2,if=none,id=root,readonly=on", image),
		"-device", "virtio-blk-device,drive=root",
		"-chardev", "socket,id=vfs,path="+sock, "-device", "vhost-user-fs-device,chardev=vfs,tag=host",
		"-device", "virtio-serial-device",
		"-chardev", "socket,id=ch0,fd=3", "-device", "virtserialport,chardev=ch0,name=control",
	)
	vm.ExtraFiles = []*os.File{guest}
	vm.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := vm.Start(); err != nil {
		return nil, fmt.Errorf("start qemu: %w", err)
	}
	guest.Close()
	defer func() { vm.Process.Kill(); vm.Wait() }()

	client, err := control.NewClient(host)
	if err != nil {
		return nil, err
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := client.Handshake(ctx, control.Setup{}); err != nil {
		return nil, fmt.Errorf("handshake: %w", err)
	}
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
	sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
	defer scancel()
	client.Shutdown(sctx)
	return results, nil
}
