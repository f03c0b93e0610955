// Package vfs serves a host-implemented, path-based filesystem (FileSystem
// and its Writable and Posix extensions) to a guest over FUSE. The guest's
// init relays raw /dev/fuse traffic to a byte channel (see
// sandbox-init/fuserelay); Serve reads requests from that channel and
// writes replies to it.
//
// Decoding and INIT negotiation are go-fuse's ProtocolServer, which takes
// requests as byte slices rather than from /dev/fuse, so it serves any
// stream; this package frames the stream (bounds-checked lengths, see
// frame.go), keeps the node table and calls the backend.
//
// Nodes: the kernel names files by node id; the server maps ids to paths
// with a tree of names, so renaming a directory moves everything below it.
// Each name is its own node: the backend has no inode identity, so hard
// links show nlink 1 and distinct inode numbers.
//
// Why not go-fuse's own node layer (fs.NewNodeFS, whose RawFileSystem
// NewProtocolServer would take as it takes this package's): a path-based
// backend could sit on it (Inode.Path gives the path, the bridge moves a
// subtree on RENAME, a Lookup that returns the child already in the tree
// keeps one node per name, and StableAttr.Ino 0 gets a fresh number), so
// the missing inode identity alone does not rule it out. What does is that
// it treats its peer as the trusted kernel, and ours is the guest: in
// go-fuse v2.12.1 every request resolves its node id and file handle
// through rawBridge.entry (fs/bridge.go), which calls log.Panicf("unknown
// node %d") for an id it does not hold; ProtocolServer recovers and
// answers EIO, but the message goes to the process's stderr (the standard
// logger log.Panicf uses) and the panic with its goroutine's stack to the
// server's log (tried: one GETATTR of node 12345). Root in the guest can
// write such requests to its end of the channel in a loop, filling the
// host process's stderr and the user's Options.Log, and every answer runs
// through a recovered panic. Checking ids before the bridge sees them
// needs a table of what the bridge holds, kept in step through LOOKUP,
// FORGET, RENAME and RELEASE: this package's table again, beside go-fuse's.
// Here an unknown id is ESTALE (inodes.go), and FuzzServe feeds arbitrary
// requests to the server to keep it that way.
//
// Caching: attributes, names and absent names are cached by the kernel for
// Options.CacheTimeout (1 s); changes the host makes behind the guest's
// back show after that. Files whose backend size is 0 (maybe unknown) are
// opened for direct I/O so that reads go to the backend until EOF.
//
// Concurrency and interrupts: requests are served concurrently (at most
// Options.MaxInFlight) and answered out of order. A FUSE_INTERRUPT
// cancels the backend call's ctx and answers EINTR at once; a call that
// outlives Options.CallTimeout answers EIO. Neither waits for a backend
// that ignores its ctx, but such a call keeps its place among the
// MaxInFlight backend calls until it returns: a guest that interrupts
// everything it sends still gets no more than MaxInFlight backend calls
// at once, and further requests wait (interruptibly, within CallTimeout).
//
// Errors: a backend error carrying an errno (syscall.Errno, or an Errno()
// method) below 512 is passed to the guest; any other is logged and becomes
// EIO (the kernel aborts the connection on a reply with a larger errno).
//
// Trust: the guest is hostile. Every length and name is checked before
// use; names cannot contain "/" or be "." or "..", so no path leaves the
// filesystem. Nodes keep the type they had when handed out, and requests
// the kernel never sends are refused before the backend sees them: a name
// under a non-directory (ENOTDIR), reading, writing, opening or truncating
// a symlink (ELOOP) or a directory (EISDIR), READLINK of a non-symlink
// (EINVAL), so a backend is never asked for "/link/x" or to read "/link".
// Symlinks are the guest's to resolve: a backend must not follow them
// either (see FileSystem). The name ".go-fuse-epoll-hack" in the root is reserved by
// go-fuse.
package vfs
