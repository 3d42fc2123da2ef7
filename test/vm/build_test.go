package vm

import (
	"os"
	"os/exec"
	"testing"
)

// TestBuildGuestOncePerProcess: a command asked for by a second boot is
// the first boot's binary, not a new link; only what is new is built; and
// RemoveBuilds deletes them all.
func TestBuildGuestOncePerProcess(t *testing.T) {
	repo, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go not in PATH")
	}
	RemoveBuilds()
	t.Cleanup(RemoveBuilds)
	const pause, registrar = "./test/standins/pause", "./test/standins/registrar"
	_, first := buildGuest(t, repo, goBin, "", []string{pause})
	p := first["/nvmirror/bin/pause"]
	st, err := os.Stat(p)
	if err != nil {
		t.Fatalf("first build: %v", err)
	}
	_, second := buildGuest(t, repo, goBin, "", []string{registrar, pause})
	if second["/nvmirror/bin/pause"] != p {
		t.Errorf("pause built again: %s, then %s", p, second["/nvmirror/bin/pause"])
	}
	if again, err := os.Stat(p); err != nil || !again.ModTime().Equal(st.ModTime()) {
		t.Errorf("pause's binary changed after the second build: %v", err)
	}
	if _, err := os.Stat(second["/nvmirror/bin/registrar"]); err != nil {
		t.Errorf("registrar not built: %v", err)
	}
	if len(second) != 2 {
		t.Errorf("files = %v, want pause and registrar", second)
	}
	RemoveBuilds()
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Errorf("after RemoveBuilds, %s: %v", p, err)
	}
}
