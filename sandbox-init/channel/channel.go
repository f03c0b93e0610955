// Package channel opens the guest end of a named byte channel between the
// guest and the host, whatever carries it: today a virtio-serial port
// (QEMU), later a vsock port (libkrun) behind the same Open.
package channel
