// Package link implements a stack.LinkEndpoint that carries Ethernet frames
// over a byte stream.
//
// # Framing
//
// Each frame, in both directions, is a 4-byte big-endian length followed by
// that many bytes of Ethernet frame (destination MAC, source MAC, EtherType,
// payload; no FCS, no preamble):
//
//	+--------+--------+--------+--------+----------------------------+
//	|       length (uint32, BE)         | Ethernet frame (length B)  |
//	+--------+--------+--------+--------+----------------------------+
//
// This is what QEMU's `-netdev stream` and libkrun's unixstream speak. The
// peer is the guest and is hostile: a frame longer than MaxFrameSize(MTU)
// ends the link (the stream cannot be trusted past it), a frame shorter than
// an Ethernet header is dropped.
package link

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"syscall"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// LengthSize is the size of the length prefix in front of every frame.
const LengthSize = 4

// queueLen is the number of outbound frames buffered between the stack and
// the stream writer. Frames beyond it are dropped, as a NIC's ring would.
const queueLen = 1024

// maxMTU is the largest IP MTU: an IP packet cannot exceed 65535 bytes.
const maxMTU = 65535

var (
	// ErrFrameTooLarge is returned when the peer announces a frame longer
	// than the link's maximum frame size.
	ErrFrameTooLarge = errors.New("link: frame too large")

	// ErrServing is returned by Serve while another Serve is running.
	ErrServing = errors.New("link: already serving")
)

// MaxFrameSize is the largest Ethernet frame (header included, length
// prefix excluded) that a link with the given IP MTU carries.
func MaxFrameSize(mtu uint32) int {
	return int(mtu) + header.EthernetMinimumSize
}

// ReadFrame reads one length-prefixed frame from r into buf and returns its
// length. A frame longer than len(buf) yields ErrFrameTooLarge without
// consuming it. io.EOF is returned only if r ends before a new frame starts;
// a frame cut short yields io.ErrUnexpectedEOF.
func ReadFrame(r io.Reader, buf []byte) (int, error) {
	var hdr [LengthSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if uint64(n) > uint64(len(buf)) {
		return 0, fmt.Errorf("%w: %d bytes, max %d", ErrFrameTooLarge, n, len(buf))
	}
	if _, err := io.ReadFull(r, buf[:n]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, err
	}
	return int(n), nil
}

// WriteFrame writes frame to w with its length prefix, in one Write call.
func WriteFrame(w io.Writer, frame []byte) error {
	b := make([]byte, LengthSize+len(frame))
	binary.BigEndian.PutUint32(b, uint32(len(frame)))
	copy(b[LengthSize:], frame)
	_, err := w.Write(b)
	return err
}

// Options configures an Endpoint.
type Options struct {
	// MTU is the IP MTU of the link; frames carry up to MTU +
	// header.EthernetMinimumSize bytes. Must be at least header.IPv6MinimumMTU.
	MTU uint32

	// LinkAddress is the endpoint's own MAC address.
	LinkAddress tcpip.LinkAddress
}

var _ stack.LinkEndpoint = (*Endpoint)(nil)

// Endpoint is an Ethernet link endpoint whose wire is a framed stream handed
// to Serve. It starts no goroutine until Serve is called. Outbound packets
// written while no Serve is running are dropped.
type Endpoint struct {
	// dropped counts outbound frames dropped because the queue was full or
	// the link was not being served.
	dropped atomic.Uint64

	// mu guards the fields below.
	mu         sync.RWMutex
	dispatcher stack.NetworkDispatcher
	linkAddr   tcpip.LinkAddress
	mtu        uint32
	// out feeds the writer of the running Serve; nil when not serving.
	out chan []byte
}

// New returns an Endpoint. It does not start any goroutine.
func New(opts Options) (*Endpoint, error) {
	if opts.MTU < header.IPv6MinimumMTU || opts.MTU > maxMTU {
		return nil, fmt.Errorf("link: MTU %d out of range [%d, %d]", opts.MTU, header.IPv6MinimumMTU, maxMTU)
	}
	if len(opts.LinkAddress) != header.EthernetAddressSize {
		return nil, fmt.Errorf("link: link address must be %d bytes, got %d", header.EthernetAddressSize, len(opts.LinkAddress))
	}
	return &Endpoint{linkAddr: opts.LinkAddress, mtu: opts.MTU}, nil
}

// Dropped returns the number of outbound frames dropped so far.
func (e *Endpoint) Dropped() uint64 { return e.dropped.Load() }

// Serve moves frames between conn and the attached stack until ctx ends,
// conn reaches EOF or fails, or the peer breaks the framing. It closes conn
// before returning and returns only after every goroutine it started has
// exited. It returns nil on EOF, ctx.Err() when ctx ended, and the cause
// otherwise (ErrFrameTooLarge for an oversized frame). A write failing
// because the peer closed counts as EOF. Only one Serve may
// run at a time.
func (e *Endpoint) Serve(ctx context.Context, conn io.ReadWriteCloser) error {
	out := make(chan []byte, queueLen)
	e.mu.Lock()
	if e.out != nil {
		e.mu.Unlock()
		return ErrServing
	}
	e.out = out
	maxFrame := MaxFrameSize(e.mtu)
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.out = nil
		e.mu.Unlock()
	}()

	ctx, cancel := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		<-ctx.Done()
		conn.Close()
	}()
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case f := <-out:
				if _, err := conn.Write(f); err != nil {
					if peerClosed(err) {
						err = io.EOF
					} else {
						err = fmt.Errorf("link: write frame: %w", err)
					}
					cancel(err)
					return
				}
			}
		}
	}()

	err := e.readLoop(bufio.NewReaderSize(conn, LengthSize+maxFrame), maxFrame)
	if ctx.Err() != nil {
		// conn was closed under the reader: report why.
		err = context.Cause(ctx)
	}
	if errors.Is(err, io.EOF) {
		err = nil
	}
	cancel(err)
	wg.Wait()
	return err
}

// peerClosed reports whether a write failed because the peer closed the
// stream, which ends the link like EOF does.
func peerClosed(err error) bool {
	return errors.Is(err, io.ErrClosedPipe) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)
}

// readLoop delivers inbound frames until r fails.
func (e *Endpoint) readLoop(r io.Reader, maxFrame int) error {
	buf := make([]byte, maxFrame)
	for {
		n, err := ReadFrame(r, buf)
		if err != nil {
			if errors.Is(err, ErrFrameTooLarge) || errors.Is(err, io.EOF) {
				return err
			}
			return fmt.Errorf("link: read frame: %w", err)
		}
		e.deliver(buf[:n])
	}
}

// deliver hands one inbound Ethernet frame to the stack. frame is copied.
func (e *Endpoint) deliver(frame []byte) {
	if len(frame) < header.EthernetMinimumSize {
		return
	}
	e.mu.RLock()
	d := e.dispatcher
	self := e.linkAddr
	e.mu.RUnlock()
	if d == nil {
		return
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(frame)})
	defer pkt.DecRef()
	if !e.ParseHeader(pkt) {
		return
	}
	eth := header.Ethernet(pkt.LinkHeader().Slice())
	switch dst := eth.DestinationAddress(); {
	case dst == header.EthernetBroadcastAddress:
		pkt.PktType = tcpip.PacketBroadcast
	case header.IsMulticastEthernetAddress(dst):
		pkt.PktType = tcpip.PacketMulticast
	case dst == self:
		pkt.PktType = tcpip.PacketHost
	default:
		pkt.PktType = tcpip.PacketOtherHost
	}
	d.DeliverNetworkPacket(eth.Type(), pkt)
}

// WritePackets implements stack.LinkWriter. Packets are serialized and
// queued for the running Serve; they are dropped when the queue is full or
// the link is not served, as on a real wire.
func (e *Endpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	n := 0
	for _, pkt := range pkts.AsSlice() {
		n++
		if e.out == nil {
			e.dropped.Add(1)
			continue
		}
		f := make([]byte, LengthSize, LengthSize+pkt.Size())
		binary.BigEndian.PutUint32(f, uint32(pkt.Size()))
		for _, s := range pkt.AsSlices() {
			f = append(f, s...)
		}
		select {
		case e.out <- f:
		default:
			e.dropped.Add(1)
		}
	}
	return n, nil
}

// MTU implements stack.LinkEndpoint.
func (e *Endpoint) MTU() uint32 {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.mtu
}

// SetMTU implements stack.LinkEndpoint. It takes effect at the next Serve
// for the inbound size limit.
func (e *Endpoint) SetMTU(mtu uint32) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.mtu = mtu
}

// MaxHeaderLength implements stack.LinkEndpoint.
func (*Endpoint) MaxHeaderLength() uint16 { return header.EthernetMinimumSize }

// LinkAddress implements stack.LinkEndpoint.
func (e *Endpoint) LinkAddress() tcpip.LinkAddress {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.linkAddr
}

// SetLinkAddress implements stack.LinkEndpoint.
func (e *Endpoint) SetLinkAddress(addr tcpip.LinkAddress) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.linkAddr = addr
}

// Capabilities implements stack.LinkEndpoint.
func (*Endpoint) Capabilities() stack.LinkEndpointCapabilities {
	return stack.CapabilityResolutionRequired
}

// Attach implements stack.LinkEndpoint.
func (e *Endpoint) Attach(d stack.NetworkDispatcher) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.dispatcher = d
}

// IsAttached implements stack.LinkEndpoint.
func (e *Endpoint) IsAttached() bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.dispatcher != nil
}

// Wait implements stack.LinkEndpoint. Serve owns the only goroutines and
// waits for them itself.
func (*Endpoint) Wait() {}

// ARPHardwareType implements stack.LinkEndpoint.
func (*Endpoint) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareEther }

// AddHeader implements stack.LinkEndpoint.
func (*Endpoint) AddHeader(pkt *stack.PacketBuffer) {
	eth := header.Ethernet(pkt.LinkHeader().Push(header.EthernetMinimumSize))
	eth.Encode(&header.EthernetFields{
		SrcAddr: pkt.EgressRoute.LocalLinkAddress,
		DstAddr: pkt.EgressRoute.RemoteLinkAddress,
		Type:    pkt.NetworkProtocolNumber,
	})
}

// ParseHeader implements stack.LinkEndpoint.
func (*Endpoint) ParseHeader(pkt *stack.PacketBuffer) bool {
	_, ok := pkt.LinkHeader().Consume(header.EthernetMinimumSize)
	return ok
}

// Close implements stack.LinkEndpoint.
func (*Endpoint) Close() {}

// SetOnCloseAction implements stack.LinkEndpoint.
func (*Endpoint) SetOnCloseAction(func()) {}
