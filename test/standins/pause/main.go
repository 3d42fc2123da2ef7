// Command pause is a test stand-in for registry.k8s.io/pause, the process of
// a pod's sandbox container that holds its namespaces. The real one is a C
// program (not a Go module) shipped only as an image, and the VM test of a
// real kubelet node has no registry to pull it from, so this is the same
// few lines in Go:
//
//   - it waits forever, normally as PID 1 of the pod's PID namespace;
//   - on SIGCHLD it reaps every exited child (wait4 until none is left), so
//     that orphans reparented to it do not stay zombies;
//   - on SIGINT or SIGTERM it exits 0 (as PID 1 the kernel gives it no
//     default action for these, so it must handle them to stop at all).
//
// Not implemented: the real one's -v (print version) and its warning when
// not PID 1; it takes no arguments.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	os.Exit(wait(notify(), reap))
}

func notify() <-chan os.Signal {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	return sigs
}

// wait handles signals until one asks to stop, and returns the exit status.
func wait(sigs <-chan os.Signal, reap func()) int {
	// A child that exited before Notify took effect sent its SIGCHLD to
	// nobody.
	reap()
	for sig := range sigs {
		switch sig {
		case syscall.SIGCHLD:
			reap()
		case syscall.SIGINT, syscall.SIGTERM:
			return 0
		}
	}
	return 0
}

// reap collects every exited child without blocking. Signals coalesce, so
// one SIGCHLD may stand for several children.
func reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
	}
}
