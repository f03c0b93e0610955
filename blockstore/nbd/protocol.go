package nbd

import "github.com/torkbot/sandbox/blockstore/nbd/wire"

// MaxPayload is the largest READ or WRITE the server accepts.
const MaxPayload = wire.MaxPayload

// check returns the NBD errno for a request against an export of size bytes,
// or 0 if it may run. It never lets offset+length pass the end.
func check(r wire.Request, size uint64, readOnly bool) uint32 {
	switch r.Type {
	case wire.CmdRead, wire.CmdWrite, wire.CmdTrim, wire.CmdWriteZeroes:
	case wire.CmdFlush:
		if r.Offset != 0 || r.Length != 0 {
			return wire.ErrInval
		}
		return 0
	default:
		return wire.ErrInval
	}
	if (r.Type == wire.CmdWrite || r.Type == wire.CmdTrim || r.Type == wire.CmdWriteZeroes) && readOnly {
		return wire.ErrPerm
	}
	if (r.Type == wire.CmdRead || r.Type == wire.CmdWrite) && r.Length > MaxPayload {
		return wire.ErrOverflow
	}
	if r.Offset > size || uint64(r.Length) > size-r.Offset {
		if r.Type == wire.CmdWrite || r.Type == wire.CmdWriteZeroes {
			return wire.ErrNoSpc
		}
		return wire.ErrInval
	}
	return 0
}
