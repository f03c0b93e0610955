package vfs

import (
	"context"
	"errors"
	"fmt"
	"log"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/torkbot/sandbox/guesttext"
)

// fileServer answers decoded FUSE operations (go-fuse's RawFileSystem) with
// calls to a path-based backend. Operations it does not implement fall
// through to go-fuse's default, ENOSYS.
type fileServer struct {
	fuse.RawFileSystem

	fsys     FileSystem
	writable WritableFileSystem // nil when fsys is read-only
	posix    PosixFileSystem    // nil unless fsys has the POSIX methods

	// base is cancelled when Serve returns, failing the calls in flight.
	base context.Context
	opts Options
	log  *log.Logger

	nodes *inodeTable
	dirs  *dirHandles

	// calls holds one token per backend call running, Options.MaxInFlight
	// at most. A request's slot in the session is freed when it is
	// answered, which an interrupt or a timeout does before the backend
	// returns; the backend's own slot is freed only when it returns, so a
	// guest that interrupts everything it sends still gets no more than
	// MaxInFlight backend calls at once.
	calls chan struct{}
}

var _ fuse.RawFileSystem = (*fileServer)(nil)

func newFileServer(base context.Context, fsys FileSystem, opts Options, logger *log.Logger) *fileServer {
	s := &fileServer{
		RawFileSystem: fuse.NewDefaultRawFileSystem(),
		fsys:          fsys,
		base:          base,
		opts:          opts,
		log:           logger,
		nodes:         newInodeTable(),
		dirs:          newDirHandles(),
		calls:         make(chan struct{}, opts.MaxInFlight),
	}
	s.writable, _ = fsys.(WritableFileSystem)
	s.posix, _ = fsys.(PosixFileSystem)
	return s
}

func (s *fileServer) String() string { return "vfs" }

// Errors that say why a backend call's ctx ended.
var (
	errInterrupted = errors.New("interrupted by the guest")
	errCallTimeout = errors.New("backend call timed out")
)

// call runs one backend call, f, and turns its error into a FUSE status.
// f gets a ctx that ends when the guest interrupts the request (cancel is
// closed), after Options.CallTimeout, or when Serve returns. call does not
// wait for a backend that ignores its ctx: it answers the guest, and f's
// late results are dropped, so f must only set variables that the caller
// reads on success. f starts once fewer than Options.MaxInFlight backend
// calls (answered or not) are running; the wait counts in CallTimeout and
// can be interrupted.
func (s *fileServer) call(cancel <-chan struct{}, op, path string, f func(ctx context.Context) error) fuse.Status {
	ctx, stopTimer := context.WithTimeoutCause(s.base, s.opts.CallTimeout, errCallTimeout)
	defer stopTimer()
	ctx, interrupt := context.WithCancelCause(ctx)
	defer interrupt(nil)

	select {
	case s.calls <- struct{}{}:
	case <-cancel:
		return fuse.EINTR
	case <-ctx.Done():
		return s.ended(ctx, op, path)
	}
	done := make(chan error, 1)
	go func() {
		defer func() { <-s.calls }() // last: after f, and after a panic
		// A panicking backend fails its operation, not the process.
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Errorf("panic: %v", r)
			}
		}()
		done <- f(ctx)
	}()
	select {
	case err := <-done:
		return s.status(op, path, err)
	case <-cancel:
		interrupt(errInterrupted)
		return fuse.EINTR
	case <-ctx.Done():
		return s.ended(ctx, op, path)
	}
}

// ended is the status of a call whose ctx ended before the backend
// answered: the call timed out, or Serve is returning.
func (s *fileServer) ended(ctx context.Context, op, path string) fuse.Status {
	if errors.Is(context.Cause(ctx), errCallTimeout) {
		s.log.Printf("%s %q: backend did not answer within %v", op, path, s.opts.CallTimeout)
	}
	return fuse.EIO
}

// status maps a backend error to a FUSE status: its errno if it carries
// one, else EIO, logged.
func (s *fileServer) status(op, path string, err error) fuse.Status {
	if err == nil {
		return fuse.OK
	}
	if errno, ok := errnoOf(err); ok {
		return fuse.Status(errno)
	}
	s.log.Printf("%s %q: %s", op, path, guesttext.Printable(err.Error()))
	return fuse.EIO
}

// errnoOf finds the errno an error carries: a syscall.Errno, or any error
// with an Errno() syscall.Errno method, anywhere in its chain. A zero errno
// carries nothing, nor does one the kernel would refuse in a reply (it
// takes 1 to 511 and aborts the whole connection on anything else).
func errnoOf(err error) (syscall.Errno, bool) {
	var errno syscall.Errno
	if errors.As(err, &errno) && errno != 0 {
		return errno, errno < maxErrno
	}
	var carrier interface{ Errno() syscall.Errno }
	if errors.As(err, &carrier) && carrier.Errno() != 0 {
		return carrier.Errno(), carrier.Errno() < maxErrno
	}
	return 0, false
}

// maxErrno bounds the errnos a FUSE reply can carry: the kernel rejects
// a reply whose error is -512 (ERESTARTSYS) or below.
const maxErrno = 512

// stat asks the backend about path and checks what it says.
func (s *fileServer) stat(cancel <-chan struct{}, path string) (Stat, fuse.Status) {
	var st Stat
	code := s.call(cancel, "stat", path, func(ctx context.Context) (err error) {
		st, err = s.fsys.Stat(ctx, path)
		return err
	})
	if !code.Ok() {
		// Not st: a call that timed out or was interrupted may still
		// be setting it.
		return Stat{}, code
	}
	return st, s.checkStat(path, st)
}

func (s *fileServer) checkStat(path string, st Stat) fuse.Status {
	if st.Type != File && st.Type != Directory && st.Type != Symlink {
		s.log.Printf("stat %q: backend returned %v", path, st.Type)
		return fuse.EIO
	}
	return fuse.OK
}

// path returns the path of the request's node as a status.
func (s *fileServer) path(id uint64) (string, fuse.Status) {
	p, errno := s.nodes.path(id)
	return p, fuse.Status(errno)
}

// filePath returns the path of a node the request reads or writes as a
// file. The kernel sends such requests only for regular files (it resolves
// symlinks itself), so a symlink node is ELOOP, as open(O_NOFOLLOW) says,
// and a directory EISDIR: a backend must never get to read or write
// through a symlink that the guest made.
func (s *fileServer) filePath(id uint64) (string, fuse.Status) {
	p, typ, errno := s.nodes.typedPath(id)
	switch {
	case errno != 0:
		return "", fuse.Status(errno)
	case typ == Symlink:
		return "", fuse.Status(syscall.ELOOP)
	case typ == Directory:
		return "", fuse.Status(syscall.EISDIR)
	}
	return p, fuse.OK
}

// typedPath returns the path of a node that must be of type want, or
// wrong.
func (s *fileServer) typedPath(id uint64, want FileType, wrong syscall.Errno) (string, fuse.Status) {
	p, typ, errno := s.nodes.typedPath(id)
	switch {
	case errno != 0:
		return "", fuse.Status(errno)
	case typ != want:
		return "", fuse.Status(wrong)
	}
	return p, fuse.OK
}

func (s *fileServer) childPath(parent uint64, name string) (string, fuse.Status) {
	p, errno := s.nodes.childPath(parent, name)
	return p, fuse.Status(errno)
}

// cacheTimeout is how long the kernel may trust what it is told.
func (s *fileServer) cacheTimeout() time.Duration { return s.opts.CacheTimeout }
