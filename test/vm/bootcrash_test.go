package vm

import "testing"

func TestCrashedWhileBooting(t *testing.T) {
	oops := "[    1.292068] integrity: Machine keyring initialized\n[    1.303500] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI\n[    1.304181] RIP: 0010:enqueue_timer+0xa5/0x100\n"
	if got := crashedWhileBooting(0, oops); got != "[    1.303500] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI" {
		t.Errorf("an Oops before any output: %q", got)
	}
	if got := crashedWhileBooting(0, "[ 2.1] Kernel panic - not syncing: Attempted to kill init!\n"); got == "" {
		t.Error("a panic before any output not seen")
	}
	if got := crashedWhileBooting(3, oops); got != "" {
		t.Errorf("the guest printed output: %q, want no retry (its own failure)", got)
	}
	if got := crashedWhileBooting(0, "[ 0.1] Linux version 6.1.0\n[ 3.2] reboot: Power down\n"); got != "" {
		t.Errorf("a clean console: %q", got)
	}
}
