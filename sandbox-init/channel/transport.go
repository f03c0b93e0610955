package channel

// vsockPorts is what Configure set: nil for virtio-serial, else each
// channel's vsock port on the host. Read by Open.
var vsockPorts map[string]uint32

// Configure sets how Open reaches channels: over vsock on the given ports
// (bootparams.Params.VsockPorts), or, with nil, over virtio-serial ports
// found by name. Call it once, before the first Open.
func Configure(ports map[string]uint32) { vsockPorts = ports }
