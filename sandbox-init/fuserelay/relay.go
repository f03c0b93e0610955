// Package fuserelay carries raw FUSE traffic between the guest kernel's
// /dev/fuse and a byte channel to the host, where package vfs serves it.
// Requests go out unchanged, one /dev/fuse read each; replies come back as
// a stream delimited by their fuse_out_header length, and each goes to
// /dev/fuse in one write. The relay parses nothing else. A reply length
// out of bounds breaks the channel: the relay closes both ends, and the
// kernel then fails every operation on the mount with ENOTCONN rather than
// letting it hang.
package fuserelay

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"
)

const (
	// BufferSize is the room for one request or reply: the kernel's
	// largest (FUSE_MAX_MAX_PAGES = 256 pages) plus a page for headers, as
	// libfuse sizes its buffer. A smaller read buffer makes /dev/fuse fail
	// reads with EINVAL.
	BufferSize = 256*4096 + 4096
	// outHeaderSize is sizeof(struct fuse_out_header): len, error, unique.
	outHeaderSize = 16
)

// ErrBadReply reports a reply whose length is out of bounds.
var ErrBadReply = errors.New("fuserelay: bad reply length")

// Relay copies requests from dev to ch and replies from ch to dev until
// the mount goes away (nil) or either side fails. Relay owns both: it
// closes them when it returns, which aborts the FUSE connection. dev must
// give one whole request per Read and take one whole reply per Write, as
// /dev/fuse does; both must unblock pending reads when closed (files in
// non-blocking mode, as os.File uses the poller).
func Relay(dev, ch io.ReadWriteCloser) error {
	var once sync.Once
	var first error
	stop := func(err error) {
		once.Do(func() {
			first = err
			dev.Close()
			ch.Close()
		})
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); stop(relayRequests(dev, ch)) }()
	go func() { defer wg.Done(); stop(relayReplies(ch, dev)) }()
	wg.Wait()
	return first
}

func relayRequests(dev io.Reader, ch io.Writer) error {
	buf := make([]byte, BufferSize)
	for {
		n, err := dev.Read(buf)
		switch {
		case errors.Is(err, syscall.ENODEV):
			return nil // unmounted
		case errors.Is(err, syscall.EINTR), errors.Is(err, syscall.EAGAIN),
			// ENOENT: the request was interrupted before it was read.
			errors.Is(err, syscall.ENOENT):
			continue
		case err != nil:
			return fmt.Errorf("read /dev/fuse: %w", err)
		}
		if _, err := ch.Write(buf[:n]); err != nil {
			return fmt.Errorf("send request: %w", err)
		}
	}
}

func relayReplies(ch io.Reader, dev io.Writer) error {
	r := bufio.NewReaderSize(ch, 64<<10)
	buf := make([]byte, BufferSize)
	for {
		n, err := ReadReply(r, buf)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return errors.New("host closed the channel")
			}
			return err
		}
		_, err = dev.Write(buf[:n])
		switch {
		case errors.Is(err, syscall.ENOENT):
			// The request was interrupted and is gone: nobody waits.
		case errors.Is(err, syscall.ENODEV):
			return nil // unmounted
		case err != nil:
			return fmt.Errorf("write reply to /dev/fuse: %w", err)
		}
	}
}

// ReadReply reads one reply from r into buf and returns its length. The
// length field is checked against the header size and len(buf) before
// anything more is read.
func ReadReply(r io.Reader, buf []byte) (int, error) {
	if len(buf) < outHeaderSize {
		return 0, fmt.Errorf("fuserelay: buffer of %d bytes", len(buf))
	}
	if _, err := io.ReadFull(r, buf[:outHeaderSize]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, fmt.Errorf("%w: channel ends inside a reply header", ErrBadReply)
		}
		return 0, err
	}
	length := binary.NativeEndian.Uint32(buf[0:4])
	if length < outHeaderSize || uint64(length) > uint64(len(buf)) {
		return 0, fmt.Errorf("%w: %d outside [%d, %d]", ErrBadReply, length, outHeaderSize, len(buf))
	}
	if _, err := io.ReadFull(r, buf[outHeaderSize:length]); err != nil {
		return 0, fmt.Errorf("%w: channel ends inside a reply of %d bytes: %w", ErrBadReply, length, err)
	}
	return int(length), nil
}
