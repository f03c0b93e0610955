package krun

// HelperConfig is what the engine tells the helper (sandbox-krun), as JSON
// on the helper's standard input. File descriptors are the helper's: the
// engine passes every fd in ExtraFiles, so fd 3+i is ExtraFiles[i].
//
// It is a contract between two binaries built from this tree, shipped
// together in one platform package; Version guards against a stale helper
// found on PATH.
type HelperConfig struct {
	Version int `json:"version"`
	// Library is the libkrun shared library to dlopen: a path, or a soname
	// the dynamic linker resolves. Empty means the platform default
	// (DefaultLibrary).
	Library string `json:"library,omitempty"`

	Kernel    string `json:"kernel"`
	Initrd    string `json:"initrd"`
	Cmdline   string `json:"cmdline"`
	CPUs      int    `json:"cpus"`
	MemoryMiB int    `json:"memoryMiB"`

	// NICFD is the NIC's framed stream socket (-1: no NIC), MAC its address.
	NICFD int    `json:"nicFD"`
	MAC   string `json:"mac,omitempty"`

	// Channels are bridged from vsock ports to the host fds.
	Channels []HelperChannel `json:"channels,omitempty"`

	// Disk, when set, is the root disk the guest attaches over NBD on a
	// vsock port; the helper relays it to DiskFD (vmm/krun/nbdrelay).
	Disk *HelperDisk `json:"disk,omitempty"`
	// DiskPath, when set, is an image file libkrun serves as virtio-blk
	// (/dev/vda) itself.
	DiskPath     string `json:"diskPath,omitempty"`
	DiskFormat   string `json:"diskFormat,omitempty"`
	DiskReadOnly bool   `json:"diskReadOnly,omitempty"`

	// SocketDir is a private directory for the channels' unix sockets,
	// which the engine removes once the helper has exited.
	SocketDir string `json:"socketDir"`

	// StatusFD is a pipe on which the helper writes one line before it
	// enters the VM: "ok", or "error: <reason>". -1: none.
	StatusFD int `json:"statusFD"`
	// ParentFD is the read end of a pipe whose write end only the engine's
	// process holds: EOF on it means the parent died (macOS has no
	// PDEATHSIG). -1: none.
	ParentFD int `json:"parentFD"`
}

// HelperChannel is one named channel: the guest connects to vsock Port on
// the host CID, libkrun connects to a unix socket the helper listens on, and
// the helper copies bytes between that connection and FD.
type HelperChannel struct {
	Name string `json:"name"`
	Port uint32 `json:"port"`
	FD   int    `json:"fd"`
}

// HelperDisk is the root disk served over NBD.
type HelperDisk struct {
	Port     uint32 `json:"port"`
	FD       int    `json:"fd"`
	ReadOnly bool   `json:"readOnly"`
}

// HelperConfigVersion is the version of HelperConfig this tree speaks.
const HelperConfigVersion = 1

// Vsock ports. The guest finds each channel by the port the command line
// maps its name to (sandbox.channels=), so the numbers themselves are not a
// contract; they start above the range Linux hands out to unbound local
// sockets' peers to stay clear of anything a guest tool might use.
const (
	firstChannelPort = 1024
	// DiskChannel is the name of the channel the root disk's NBD session
	// runs on (DESIGN.md: engines without a host-side NBD client).
	DiskChannel = "disk"
)

// krunMTU is the MTU the guest's NIC gets under libkrun. libkrun's virtio-net
// offers neither VIRTIO_NET_F_MTU nor mergeable receive buffers, and without
// the GUEST_TSO features the guest posts 1518-byte receive buffers: a larger
// frame from the host would not fit. So the guest runs with 1500 whatever
// Spec.NICMTU asks; TCP adapts through the MSS it advertises.
const krunMTU = 1500

// baseCmdline starts every libkrun guest's command line. libkrun replaces
// its own defaults with the command line given to krun_set_kernel, so
// everything the guest needs is here: the legacy serial port the helper adds
// is the console (ttyS0, built into the kernel, so early messages show), and
// panic → power off ends the helper instead of hanging it.
const baseCmdline = "console=ttyS0 quiet panic=-1 reboot=k cryptomgr.notests init_on_alloc=0 8250.nr_uarts=1 pci=off audit=0 lsm=capability nowatchdog"
