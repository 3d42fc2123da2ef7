package image_test

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"
)

// tarEntry is a file of a synthetic tar: a directory (name ends in /), a
// regular file (body), a symbolic link (symlink) or a hard link (hardlink).
type tarEntry struct {
	name, body, symlink, hardlink string
	mode                          int64
}

func makeTar(t *testing.T, entries []tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: e.mode, Typeflag: tar.TypeReg, Size: int64(len(e.body))}
		switch {
		case e.symlink != "":
			h.Typeflag, h.Linkname, h.Size = tar.TypeSymlink, e.symlink, 0
		case e.hardlink != "":
			h.Typeflag, h.Linkname, h.Size = tar.TypeLink, e.hardlink, 0
		case e.name[len(e.name)-1] == '/':
			h.Typeflag, h.Size = tar.TypeDir, 0
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			if _, err := io.WriteString(tw, e.body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestDockerArchiveReader: the reader the image checks rely on, on a
// synthetic docker-archive: layers applied in manifest order (not archive
// order), whiteouts and opaque directories, hard links, symbolic links in
// any component, PATH lookup.
func TestDockerArchiveReader(t *testing.T) {
	lower := makeTar(t, []tarEntry{
		{name: "usr/"}, {name: "usr/bin/"},
		{name: "usr/bin/tool", body: "TOOL", mode: 0o755},
		{name: "usr/bin/gone", body: "x", mode: 0o755},
		{name: "usr/bin/hard", hardlink: "usr/bin/tool", mode: 0o755},
		{name: "bin", symlink: "usr/bin"},
		{name: "etc/"}, {name: "etc/old/"}, {name: "etc/old/a", body: "a"}, {name: "etc/keep", body: "k"},
		{name: "usr/bin/data", body: "not executable"},
	})
	upper := makeTar(t, []tarEntry{
		{name: "usr/bin/.wh.gone"},
		{name: "etc/old/"}, {name: "etc/old/.wh..wh..opq"}, {name: "etc/old/b", body: "b"},
		{name: "usr/local/"}, {name: "usr/local/bin/"},
		{name: "usr/local/bin/rel", symlink: "../../bin/tool"},
		{name: "usr/bin/tool", body: "TOOL2", mode: 0o755},
	})
	config, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Env": []string{"PATH=/usr/local/bin:/bin"}, "Cmd": []string{"tool"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{"sha256:1", "sha256:2"}},
	})
	manifest, _ := json.Marshal([]map[string]any{{
		"Config": "config.json", "RepoTags": []string{"example.com/x:1"}, "Layers": []string{"lower.tar", "upper.tar"},
	}})
	// The upper layer first in the archive: the manifest's order counts.
	archive := makeTar(t, []tarEntry{
		{name: "upper.tar", body: string(upper)}, {name: "manifest.json", body: string(manifest)},
		{name: "lower.tar", body: string(lower)}, {name: "config.json", body: string(config)},
	})
	file := filepath.Join(t.TempDir(), "image.tar")
	if err := os.WriteFile(file, archive, 0o644); err != nil {
		t.Fatal(err)
	}
	a, err := openDockerArchive(file)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()

	if !slices.Equal(a.RepoTags, []string{"example.com/x:1"}) || !slices.Equal(a.Config.Config.Cmd, []string{"tool"}) {
		t.Errorf("RepoTags %v, Cmd %v", a.RepoTags, a.Config.Config.Cmd)
	}
	var names []string
	for p := range a.Files {
		names = append(names, p)
	}
	sort.Strings(names)
	want := []string{"/bin", "/etc", "/etc/keep", "/etc/old", "/etc/old/b", "/usr", "/usr/bin", "/usr/bin/data",
		"/usr/bin/hard", "/usr/bin/tool", "/usr/local", "/usr/local/bin", "/usr/local/bin/rel"}
	if !slices.Equal(names, want) {
		t.Errorf("files %v\nwant  %v", names, want)
	}
	read := func(f *imageFile) string {
		b, err := io.ReadAll(io.NewSectionReader(f.data, 0, f.data.Size()))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got := read(a.Files["/usr/bin/tool"]); got != "TOOL2" {
		t.Errorf("/usr/bin/tool = %q, want the upper layer's", got)
	}
	if got := read(a.Files["/usr/bin/hard"]); got != "TOOL" {
		t.Errorf("hard link = %q, want its lower layer target's content", got)
	}
	for p, wantReal := range map[string]string{"/bin/tool": "/usr/bin/tool", "/usr/local/bin/rel": "/usr/bin/tool", "/bin/../etc/keep": "/etc/keep"} {
		if _, real, err := a.resolve(p); err != nil || real != wantReal {
			t.Errorf("resolve(%s) = %s, %v; want %s", p, real, err, wantReal)
		}
	}
	if _, _, err := a.resolve("/bin/gone"); !errors.Is(err, errNotFound) {
		t.Errorf("resolve of a whited-out file: %v", err)
	}
	if real, _, err := a.lookPath("rel"); err != nil || real != "/usr/bin/tool" {
		t.Errorf("lookPath(rel) = %s, %v", real, err)
	}
	for _, p := range []string{"data", "gone", "keep"} {
		if _, _, err := a.lookPath(p); err == nil {
			t.Errorf("lookPath(%s) found a file that is not an executable in PATH", p)
		}
	}
}
