package vmm

import (
	"os/exec"
	"syscall"
)

// StartChild starts cmd in its own process group.
//
// macOS has no PR_SET_PDEATHSIG: a VMM child there must notice its parent's
// death itself. The libkrun helper does, through EOF on a pipe whose write
// end only this process holds (vmm/krun); see docs/engine-krun.md.
func StartChild(cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	// Its own process group: a Ctrl-C meant for the Node program is not
	// delivered to the VMM.
	cmd.SysProcAttr.Setpgid = true
	return cmd.Start()
}
