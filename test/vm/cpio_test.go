package vm

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

func TestWriteCpioIsReadableByCpio(t *testing.T) {
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("cpio not installed: run `make deps` to install it")
	}
	var buf bytes.Buffer
	err := writeCpio(&buf, []cpioEntry{
		{name: "bin/sh", mode: modeSymlink | 0o777, data: []byte("busybox")},
		{name: "bin", mode: modeDir | 0o755},
		{name: "bin/busybox", mode: modeFile | 0o755, data: []byte("abc")},
		{name: "init", mode: modeFile | 0o755, data: []byte("#!/bin/sh\n")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if buf.Len()%4 != 0 {
		t.Errorf("archive length %d is not 4-byte aligned", buf.Len())
	}
	cmd := exec.Command("cpio", "-itv", "--quiet")
	cmd.Stdin = &buf
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -t: %v\n%s", err, out)
	}
	listing := string(out)
	for _, want := range []string{"bin/sh -> busybox", "bin/busybox", "init"} {
		if !strings.Contains(listing, want) {
			t.Errorf("listing lacks %q:\n%s", want, listing)
		}
	}
	lines := strings.Split(strings.TrimSpace(listing), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "d") || !strings.HasSuffix(lines[0], " bin") {
		t.Errorf("want the directory first and 4 entries, got:\n%s", listing)
	}
}

func TestWriteCpioRejectsDuplicates(t *testing.T) {
	var buf bytes.Buffer
	err := writeCpio(&buf, []cpioEntry{
		{name: "init", mode: modeFile | 0o755},
		{name: "/init", mode: modeFile | 0o755},
	})
	if err == nil || !strings.Contains(err.Error(), `duplicate entry "init"`) {
		t.Fatalf("want a duplicate-entry error, got %v", err)
	}
}
