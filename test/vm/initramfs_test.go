package vm

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBuildDataPathImage builds the image the real-kernel tests boot and
// checks it holds what the guest needs: init, busybox, every tool with its
// libraries, the modules in load order, and the extra files.
func TestBuildDataPathImage(t *testing.T) {
	k := Prerequisites(t)
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("cpio not installed: run `make vm-deps`")
	}
	extra := filepath.Join(t.TempDir(), "payload")
	if err := os.WriteFile(extra, []byte("hello"), 0o755); err != nil {
		t.Fatal(err)
	}
	img := Image{
		Kernel: k, Modules: DataPathModules, OptionalModules: DataPathOptionalModules,
		Tools: DataPathTools, Files: map[string]string{"/nvmirror/bin/payload": extra},
		Script: "echo hi",
	}
	out := filepath.Join(t.TempDir(), "initrd.gz")
	if err := img.Build(out); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(gz)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("cpio", "-it", "--quiet")
	cmd.Stdin = bytes.NewReader(raw)
	listing, err := cmd.Output()
	if err != nil {
		t.Fatalf("cpio -t: %v", err)
	}
	have := map[string]bool{}
	for _, name := range strings.Split(strings.TrimSpace(string(listing)), "\n") {
		have["/"+name] = true
	}
	want := []string{"/init", "/bin/busybox", "/nvmirror/run.sh", "/nvmirror/bin/payload"}
	want = append(want, DataPathTools...)
	for _, tool := range DataPathTools {
		libs, err := sharedLibs(tool)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, libs...)
	}
	for _, w := range want {
		if !have[w] {
			t.Errorf("image lacks %s", w)
		}
	}
	// Every required module is loaded, after its dependencies.
	initScript := string(raw)
	md := strings.Index(initScript, "loadmod /lib/modules/kernel/drivers/md/md-mod.ko")
	raid1 := strings.Index(initScript, "loadmod /lib/modules/kernel/drivers/md/raid1.ko")
	if md < 0 || raid1 < 0 || md > raid1 {
		t.Errorf("init does not load md-mod (%d) before raid1 (%d)", md, raid1)
	}
}
