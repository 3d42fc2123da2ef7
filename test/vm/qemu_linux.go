package vm

import (
	"os/exec"
	"syscall"
)

// killWithParent has the kernel kill qemu when the thread that started it
// dies, so a test binary that exits without its cleanups (a go test timeout
// panics and exits) takes its VMs with it.
func killWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
