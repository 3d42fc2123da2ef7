package stagestate

import (
	"bytes"
	"os"
	"reflect"
	"testing"
)

// Lister answers as ListVolumes does, through saves, deletions and new
// volumes, and reads a file again only when it changed: a file whose
// inode, size and time are unchanged is answered from what was parsed.
func TestListerReadsOnlyChangedFiles(t *testing.T) {
	dir := t.TempDir()
	s := New(dir)
	save := func(st *State) {
		t.Helper()
		if err := s.Save(st); err != nil {
			t.Fatal(err)
		}
	}
	save(&State{VolumeID: "vol-1", Phase: Staging})
	save(&State{VolumeID: "vol-2", Phase: Staged, MDUUID: "a:b:c:d", Replicas: []Replica{{ID: "r0", NQN: "nqn.x:r0"}}})
	l := NewLister(dir)
	same := func(when string) []Volume {
		t.Helper()
		got, err := l.Volumes()
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		want, err := ListVolumes(dir)
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: Lister %+v, ListVolumes %+v", when, got, want)
		}
		return got
	}
	same("first")
	save(&State{VolumeID: "vol-1", Phase: Staged, MDUUID: "e:f:g:h"})
	if v := same("after a save"); !v[0].Staged || v[0].MDUUID != "e:f:g:h" {
		t.Fatalf("vol-1 after its save: %+v", v[0])
	}
	save(&State{VolumeID: "vol-3", Phase: Staged})
	if err := s.Delete("vol-2", ""); err != nil {
		t.Fatal(err)
	}
	if v := same("after a new volume and a deletion"); len(v) != 2 || v[1].VolumeID != "vol-3" {
		t.Fatalf("volumes %+v", v)
	}

	// vol-3's file overwritten in place with as many bytes and its time
	// put back: nothing says it changed, so it is not read (its garbage
	// would fail the parse).
	p := s.fileFor("vol-3")
	info, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(bytes.Repeat([]byte("x"), int(info.Size()))); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.Chtimes(p, info.ModTime(), info.ModTime()); err != nil {
		t.Fatal(err)
	}
	if v, err := l.Volumes(); err != nil || len(v) != 2 || v[1].VolumeID != "vol-3" {
		t.Fatalf("unchanged file read again: %+v, %v", v, err)
	}
	// Its time moves: read again, and the garbage is reported.
	if err := os.Chtimes(p, info.ModTime(), info.ModTime().Add(1)); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Volumes(); err == nil {
		t.Fatal("a changed unreadable file was not read again")
	}
}
