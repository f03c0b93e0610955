// Package channel opens the guest end of a named byte channel between the
// guest and the host, whatever carries it: a virtio-serial port found by
// its name (QEMU), or a vsock stream to the host on the port the kernel
// command line maps the name to (libkrun; sandbox.channels=, see
// ../../bootparams/CMDLINE.md). Callers only ever say Open(name).
package channel
