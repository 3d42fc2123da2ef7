//go:build !linux

package vm

import "os/exec"

// killWithParent has no portable equivalent of Linux's parent-death signal;
// elsewhere qemu is stopped by the context and the cleanups only.
func killWithParent(cmd *exec.Cmd) {}
