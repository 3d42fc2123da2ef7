package driver

import (
	"testing"

	"github.com/nvmirror/nvmirror/pkg/inflight"
)

func TestTryLockVolume(t *testing.T) {
	d := &Driver{inflight: &inflight.Set{}}
	unlock, ok := d.TryLockVolume("vol-1")
	if !ok {
		t.Fatal("free volume not locked")
	}
	if _, ok := d.TryLockVolume("vol-1"); ok {
		t.Fatal("locked twice")
	}
	if err := func() error { _, err := d.lock("vol-1"); return err }(); err == nil {
		t.Fatal("CSI lock taken while the healer holds the volume")
	}
	unlock()
	if _, ok := d.TryLockVolume("vol-1"); !ok {
		t.Fatal("not released")
	}
}
