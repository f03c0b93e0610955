package main

import (
	"context"
	"errors"

	"github.com/torkbot/sandbox/blockstore"
	"github.com/torkbot/sandbox/blockstore/eventstore"
	"github.com/torkbot/sandbox/native/protocol"
)

// jsStore is a COW root's SandboxBlockStore, living in JavaScript, seen by
// blockstore as a Store: every list/read/write/flush is one "block-*" event
// on the boot request's kept handler. blockstore/eventstore defines the
// binary framing and checks every answer; src/block-store-events.ts is the
// JavaScript side, which calls the user's store with the context { base }.
func jsStore(c protocol.Caller, blockSize int) blockstore.Store {
	return eventstore.New(storeCaller{c}, blockSize)
}

// storeCaller passes the store's own error message on as it is: eventstore
// already says which call failed ("block store write() failed: ..."), so
// "JavaScript handler failed" would only be noise.
type storeCaller struct{ c protocol.Caller }

func (c storeCaller) Call(ctx context.Context, event string, payload []byte) ([]byte, error) {
	out, err := c.c.Call(ctx, event, payload)
	var js *protocol.JSError
	if errors.As(err, &js) {
		return nil, errors.New(js.Message)
	}
	return out, err
}
