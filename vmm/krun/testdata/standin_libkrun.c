// STAND-IN for libkrun.so.1, for the contract test of the libkrun engine
// only (krun_test.go). libkrun needs working hardware virtualization, which
// the test machines lack, so this library takes its place: it records every
// call and its arguments, one line each, to the file named by
// KRUN_STANDIN_LOG, and returns what KRUN_STANDIN_FAIL says
// ("<function>=<negative errno>") for one function, 0 otherwise.
// krun_start_enter plays a guest: it connects to every vsock port's unix
// socket, writes "hello <port>\n", records what comes back, writes a line to
// the serial console and exits like libkrun does when a guest powers off.
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static FILE *logf_;
static int serial_out = -1;
static struct { uint32_t port; char path[256]; } ports[16];
static int nports;

static void rec(const char *fmt, ...) {
	if (!logf_) logf_ = fopen(getenv("KRUN_STANDIN_LOG"), "a");
	va_list ap;
	va_start(ap, fmt);
	vfprintf(logf_, fmt, ap);
	va_end(ap);
	fputc('\n', logf_);
	fflush(logf_);
}

static int32_t ret(const char *fn) {
	const char *f = getenv("KRUN_STANDIN_FAIL");
	size_t n = strlen(fn);
	if (f && strncmp(f, fn, n) == 0 && f[n] == '=') return (int32_t)atoi(f + n + 1);
	return 0;
}

int32_t krun_set_log_level(uint32_t level) { rec("krun_set_log_level %u", level); return ret("krun_set_log_level"); }
int32_t krun_create_ctx(void) { rec("krun_create_ctx"); int32_t r = ret("krun_create_ctx"); return r ? r : 7; }
int32_t krun_set_vm_config(uint32_t ctx, uint8_t cpus, uint32_t mib) { rec("krun_set_vm_config %u %u %u", ctx, cpus, mib); return ret("krun_set_vm_config"); }
int32_t krun_set_kernel(uint32_t ctx, const char *k, uint32_t fmt, const char *i, const char *c) {
	rec("krun_set_kernel %u %s %u %s %s", ctx, k, fmt, i, c);
	return ret("krun_set_kernel");
}
int32_t krun_disable_implicit_console(uint32_t ctx) { rec("krun_disable_implicit_console %u", ctx); return ret("krun_disable_implicit_console"); }
int32_t krun_add_serial_console_default(uint32_t ctx, int in, int out) {
	rec("krun_add_serial_console_default %u %d %d", ctx, in, out);
	serial_out = out;
	return ret("krun_add_serial_console_default");
}
#ifndef STANDIN_BEFORE_1_17 // built with it, the stand-in looks like a libkrun older than 1.17
int32_t krun_disable_implicit_vsock(uint32_t ctx) { rec("krun_disable_implicit_vsock %u", ctx); return ret("krun_disable_implicit_vsock"); }
int32_t krun_add_vsock(uint32_t ctx, uint32_t tsi) { rec("krun_add_vsock %u %u", ctx, tsi); return ret("krun_add_vsock"); }
#endif
int32_t krun_add_vsock_port2(uint32_t ctx, uint32_t port, const char *path, bool listen) {
	// The directory is per run: record the socket's base name only.
	const char *base = strrchr(path, '/');
	rec("krun_add_vsock_port2 %u %u %s %d", ctx, port, base ? base + 1 : path, listen);
	if (nports < 16) { ports[nports].port = port; snprintf(ports[nports].path, 256, "%s", path); nports++; }
	return ret("krun_add_vsock_port2");
}
int32_t krun_add_net_unixstream(uint32_t ctx, const char *path, int fd, uint8_t *const mac, uint32_t features, uint32_t flags) {
	struct stat st;
	bool sock = fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
	rec("krun_add_net_unixstream %u %s %s %02x:%02x:%02x:%02x:%02x:%02x %u %u", ctx, path ? path : "NULL",
	    sock ? "socket-fd" : "not-a-socket", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], features, flags);
	return ret("krun_add_net_unixstream");
}
int32_t krun_add_disk2(uint32_t ctx, const char *id, const char *path, uint32_t fmt, bool ro) {
	rec("krun_add_disk2 %u %s %s %u %d", ctx, id, path, fmt, ro);
	return ret("krun_add_disk2");
}

int32_t krun_start_enter(uint32_t ctx) {
	rec("krun_start_enter %u", ctx);
	int32_t r = ret("krun_start_enter");
	if (r) return r;
	for (int i = 0; i < nports; i++) {
		int s = socket(AF_UNIX, SOCK_STREAM, 0);
		struct sockaddr_un a = {.sun_family = AF_UNIX};
		snprintf(a.sun_path, sizeof a.sun_path, "%s", ports[i].path);
		if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) { rec("guest %u connect failed", ports[i].port); continue; }
		char msg[32], buf[65] = {0};
		int n = snprintf(msg, sizeof msg, "hello %u\n", ports[i].port);
		write(s, msg, n);
		ssize_t got = read(s, buf, 8); // "ack ..." from a channel, "NBDMAGIC" from the disk relay
		rec("guest %u read %.*s", ports[i].port, got > 0 ? (int)got : 0, buf);
		close(s);
	}
	// KRUN_STANDIN_CONSOLE plays a kernel's console (the boot probe's marker).
	const char *con = getenv("KRUN_STANDIN_CONSOLE");
	if (serial_out >= 0) dprintf(serial_out, "%s\n", con ? con : "guest console: powering off");
	exit(0);
}
