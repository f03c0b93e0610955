package main

import (
	"errors"

	"github.com/torkbot/sandbox/bridge/napi"
	"github.com/torkbot/sandbox/native/lane"
	"github.com/torkbot/sandbox/native/protocol"
)

// jsError gives err the code JS sees as err.code (native/protocol lists
// them): the lane's typed errors name what failed, anything else is
// protocol.CodeInternal.
func jsError(err error) error {
	var coded *napi.Error
	if errors.As(err, &coded) {
		return err
	}
	code := protocol.CodeInternal
	switch {
	case errors.As(err, new(*lane.StoreError)):
		code = protocol.CodeBlockStore
	case errors.Is(err, lane.ErrClosed):
		code = protocol.CodeClosed
	case errors.As(err, new(*lane.ExitedError)):
		code = protocol.CodeVMMExited
	case errors.As(err, new(*lane.BootTimeoutError)):
		code = protocol.CodeBootTimeout
	case errors.As(err, new(*lane.BootError)):
		code = protocol.CodeBoot
	}
	return &napi.Error{Code: code, Message: err.Error()}
}
