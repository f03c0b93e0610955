//go:build cgo && (linux || darwin)

package main

/*
#cgo linux LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

// Trampolines: libkrun is loaded with dlopen, so every call goes through a
// function pointer of the type libkrun.h declares for it.
static int32_t call_void(void *f) { return ((int32_t (*)(void))f)(); }
static int32_t call_u32(void *f, uint32_t a) { return ((int32_t (*)(uint32_t))f)(a); }
static int32_t call_u32_u32(void *f, uint32_t a, uint32_t b) { return ((int32_t (*)(uint32_t, uint32_t))f)(a, b); }
static int32_t call_vm_config(void *f, uint32_t ctx, uint8_t cpus, uint32_t mib) {
	return ((int32_t (*)(uint32_t, uint8_t, uint32_t))f)(ctx, cpus, mib);
}
static int32_t call_set_kernel(void *f, uint32_t ctx, const char *kernel, uint32_t format, const char *initrd, const char *cmdline) {
	return ((int32_t (*)(uint32_t, const char *, uint32_t, const char *, const char *))f)(ctx, kernel, format, initrd, cmdline);
}
static int32_t call_net_unixstream(void *f, uint32_t ctx, const char *path, int fd, uint8_t *mac, uint32_t features, uint32_t flags) {
	return ((int32_t (*)(uint32_t, const char *, int, uint8_t *const, uint32_t, uint32_t))f)(ctx, path, fd, mac, features, flags);
}
static int32_t call_vsock_port2(void *f, uint32_t ctx, uint32_t port, const char *path, bool listen) {
	return ((int32_t (*)(uint32_t, uint32_t, const char *, bool))f)(ctx, port, path, listen);
}
static int32_t call_serial_console(void *f, uint32_t ctx, int in, int out) {
	return ((int32_t (*)(uint32_t, int, int))f)(ctx, in, out);
}
static int32_t call_add_disk2(void *f, uint32_t ctx, const char *id, const char *path, uint32_t format, bool ro) {
	return ((int32_t (*)(uint32_t, const char *, const char *, uint32_t, bool))f)(ctx, id, path, format, ro);
}
*/
import "C"

import (
	"fmt"
	"runtime"
	"syscall"
	"unsafe"
)

// libkrun is a loaded libkrun with the symbols this helper calls, by the
// signatures of libkrun's public header (include/libkrun.h, libkrun ≥ 1.17:
// krun_add_vsock and krun_disable_implicit_vsock are the newest).
type libkrun struct {
	path string
	sym  map[string]unsafe.Pointer
}

// requiredSymbols are resolved at load: a library without one of them is
// too old (or not libkrun) and fails the probe, so selection falls back to
// QEMU instead of failing at boot.
var requiredSymbols = []string{
	"krun_set_log_level",
	"krun_create_ctx",
	"krun_set_vm_config",
	"krun_set_kernel",
	"krun_disable_implicit_console",
	"krun_add_serial_console_default",
	"krun_disable_implicit_vsock",
	"krun_add_vsock",
	"krun_add_vsock_port2",
	"krun_add_net_unixstream",
	"krun_start_enter",
}

// optionalSymbols are resolved when present; a call to a missing one fails
// with an error naming it.
var optionalSymbols = []string{"krun_add_disk2"}

// minVersion names the oldest libkrun with every required symbol.
const minVersion = "1.17.0"

func loadLibkrun(path string) (*libkrun, error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	h := C.dlopen(cpath, C.RTLD_NOW|C.RTLD_LOCAL)
	if h == nil {
		return nil, &notLoadedError{path: path, reason: C.GoString(C.dlerror())}
	}
	l := &libkrun{path: path, sym: map[string]unsafe.Pointer{}}
	for _, name := range append(append([]string{}, requiredSymbols...), optionalSymbols...) {
		cname := C.CString(name)
		p := C.dlsym(h, cname)
		C.free(unsafe.Pointer(cname))
		if p != nil {
			l.sym[name] = p
		}
	}
	for _, name := range requiredSymbols {
		if l.sym[name] == nil {
			return nil, fmt.Errorf("%s has no symbol %s: libkrun %s or newer is needed (%s)", path, name, minVersion, installHint())
		}
	}
	return l, nil
}

// notLoadedError: dlopen failed (not installed, or not a loadable library).
type notLoadedError struct{ path, reason string }

func (e *notLoadedError) Error() string {
	return fmt.Sprintf("cannot load %s (%s): %s", e.path, e.reason, installHint())
}

func installHint() string {
	if runtime.GOOS == "darwin" {
		return "install libkrun with Homebrew (brew tap slp/krun && brew install libkrun), or set SANDBOX_LIBKRUN to its path, or use SANDBOX_ENGINE=qemu"
	}
	return "install libkrun " + minVersion + " or newer (Fedora: dnf install libkrun; others: build github.com/containers/libkrun and run make install), or set SANDBOX_LIBKRUN to its path, or use SANDBOX_ENGINE=qemu"
}

// KrunError is a negative errno a libkrun call returned.
type KrunError struct {
	Call  string
	Errno syscall.Errno
}

func (e *KrunError) Error() string {
	return fmt.Sprintf("libkrun %s failed: %v (errno %d)%s", e.Call, e.Errno, int(e.Errno), krunHint(e.Call, e.Errno))
}

// krunHint says what a failure most likely means, where libkrun's errno
// alone would leave the user guessing.
func krunHint(call string, errno syscall.Errno) string {
	switch {
	case call == "krun_start_enter" && errno == syscall.ENOENT:
		return ": the configuration was lost (a second start of one context?)"
	case call == "krun_start_enter" && errno == syscall.EINVAL:
		return ": libkrun could not build the VM; its log lines above say why (on Linux most often /dev/kvm: check that your user can open it, e.g. membership of the kvm group; on macOS an unsigned helper: run setup-macos)"
	case call == "krun_set_kernel" && errno == syscall.EINVAL:
		return ": the kernel or initrd could not be read, or this libkrun cannot boot an ELF kernel"
	case call == "krun_set_kernel" && errno == syscall.EOPNOTSUPP:
		return ": this libkrun is a confidential-computing build (libkrun-sev/-tdx) that cannot boot an external kernel; install the plain libkrun"
	case call == "krun_add_net_unixstream" && (errno == syscall.EINVAL || errno == syscall.ENOTSUP):
		return ": this libkrun was built without networking (feature net)"
	case call == "krun_add_disk2" && errno == syscall.ENOTSUP:
		return ": this libkrun was built without block devices (feature blk)"
	case call == "krun_create_ctx":
		return ": libkrun could not create a configuration context"
	}
	return ""
}

func (l *libkrun) check(call string, rc C.int32_t) (int32, error) {
	if rc < 0 {
		return int32(rc), &KrunError{Call: call, Errno: syscall.Errno(-rc)}
	}
	return int32(rc), nil
}

func (l *libkrun) fn(name string) (unsafe.Pointer, error) {
	p := l.sym[name]
	if p == nil {
		return nil, fmt.Errorf("%s has no symbol %s: a newer libkrun is needed (%s)", l.path, name, installHint())
	}
	return p, nil
}

func (l *libkrun) setLogLevel(level uint32) error {
	_, err := l.check("krun_set_log_level", C.call_u32(l.sym["krun_set_log_level"], C.uint32_t(level)))
	return err
}

func (l *libkrun) createCtx() (uint32, error) {
	id, err := l.check("krun_create_ctx", C.call_void(l.sym["krun_create_ctx"]))
	return uint32(id), err
}

func (l *libkrun) setVMConfig(ctx uint32, cpus uint8, mib uint32) error {
	_, err := l.check("krun_set_vm_config", C.call_vm_config(l.sym["krun_set_vm_config"], C.uint32_t(ctx), C.uint8_t(cpus), C.uint32_t(mib)))
	return err
}

func (l *libkrun) setKernel(ctx uint32, kernel string, format uint32, initrd, cmdline string) error {
	ck, ci, cc := C.CString(kernel), C.CString(initrd), C.CString(cmdline)
	defer C.free(unsafe.Pointer(ck))
	defer C.free(unsafe.Pointer(ci))
	defer C.free(unsafe.Pointer(cc))
	_, err := l.check("krun_set_kernel", C.call_set_kernel(l.sym["krun_set_kernel"], C.uint32_t(ctx), ck, C.uint32_t(format), ci, cc))
	return err
}

func (l *libkrun) ctxCall(name string, ctx uint32) error {
	_, err := l.check(name, C.call_u32(l.sym[name], C.uint32_t(ctx)))
	return err
}

func (l *libkrun) addSerialConsole(ctx uint32, in, out int) error {
	_, err := l.check("krun_add_serial_console_default", C.call_serial_console(l.sym["krun_add_serial_console_default"], C.uint32_t(ctx), C.int(in), C.int(out)))
	return err
}

func (l *libkrun) addVsock(ctx, tsiFeatures uint32) error {
	_, err := l.check("krun_add_vsock", C.call_u32_u32(l.sym["krun_add_vsock"], C.uint32_t(ctx), C.uint32_t(tsiFeatures)))
	return err
}

func (l *libkrun) addVsockPort(ctx, port uint32, path string, listen bool) error {
	cp := C.CString(path)
	defer C.free(unsafe.Pointer(cp))
	_, err := l.check("krun_add_vsock_port2", C.call_vsock_port2(l.sym["krun_add_vsock_port2"], C.uint32_t(ctx), C.uint32_t(port), cp, C.bool(listen)))
	return err
}

func (l *libkrun) addNetUnixstream(ctx uint32, fd int, mac [6]byte, features, flags uint32) error {
	cmac := (*C.uint8_t)(C.malloc(6))
	defer C.free(unsafe.Pointer(cmac))
	copy(unsafe.Slice((*byte)(unsafe.Pointer(cmac)), 6), mac[:])
	_, err := l.check("krun_add_net_unixstream", C.call_net_unixstream(l.sym["krun_add_net_unixstream"], C.uint32_t(ctx), nil, C.int(fd), cmac, C.uint32_t(features), C.uint32_t(flags)))
	return err
}

func (l *libkrun) addDisk2(ctx uint32, id, path string, format uint32, readOnly bool) error {
	f, err := l.fn("krun_add_disk2")
	if err != nil {
		return err
	}
	ci, cp := C.CString(id), C.CString(path)
	defer C.free(unsafe.Pointer(ci))
	defer C.free(unsafe.Pointer(cp))
	_, err = l.check("krun_add_disk2", C.call_add_disk2(f, C.uint32_t(ctx), ci, cp, C.uint32_t(format), C.bool(readOnly)))
	return err
}

// startEnter runs the VM. It returns only if libkrun refused to start;
// otherwise libkrun calls exit() when the guest powers off.
func (l *libkrun) startEnter(ctx uint32) error {
	_, err := l.check("krun_start_enter", C.call_u32(l.sym["krun_start_enter"], C.uint32_t(ctx)))
	if err == nil {
		err = fmt.Errorf("libkrun krun_start_enter returned without running the VM")
	}
	return err
}
