package main

import (
	"errors"

	"github.com/torkbot/sandbox/bridge/napi"
	"github.com/torkbot/sandbox/native/lane"
)

// Error codes JS sees as err.code. They are part of the JS↔addon contract.
const (
	codeInvalidRequest = "ERR_SANDBOX_INVALID_REQUEST"
	codeClosed         = "ERR_SANDBOX_CLOSED"
	codeVMMExited      = "ERR_SANDBOX_VMM_EXITED"
	codeBootTimeout    = "ERR_SANDBOX_BOOT_TIMEOUT"
	codeBoot           = "ERR_SANDBOX_BOOT"
	codeEngine         = "ERR_SANDBOX_ENGINE"
	codeUnsupported    = "ERR_SANDBOX_UNSUPPORTED"
	codeBlockStore     = "ERR_SANDBOX_BLOCK_STORE"
	codeInternal       = "ERR_SANDBOX"

	// exec() output past maxExecOutput: the command was killed.
	codeExecOutputLimit = "ERR_SANDBOX_EXEC_OUTPUT_LIMIT"
)

func jsError(err error) error {
	var coded *napi.Error
	if errors.As(err, &coded) {
		return err
	}
	code := codeInternal
	switch {
	case errors.As(err, new(*lane.StoreError)):
		code = codeBlockStore
	case errors.Is(err, lane.ErrClosed):
		code = codeClosed
	case errors.As(err, new(*lane.ExitedError)):
		code = codeVMMExited
	case errors.As(err, new(*lane.BootTimeoutError)):
		code = codeBootTimeout
	case errors.As(err, new(*lane.BootError)):
		code = codeBoot
	}
	return &napi.Error{Code: code, Message: err.Error()}
}
