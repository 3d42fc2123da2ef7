package k8s

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// writeArchive writes a docker-archive of one image: files (name to
// content) and a manifest naming them.
func writeArchive(t *testing.T, path string, m dockerManifest, files map[string]string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	add := func(name string, b []byte) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o444, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		add(n, []byte(files[n]))
	}
	add("repositories", []byte(`{}`))
	b, err := json.Marshal([]dockerManifest{m})
	if err != nil {
		t.Fatal(err)
	}
	add("manifest.json", b)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
}

// archiveFiles returns every file of a tar, name to content.
func archiveFiles(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	files := map[string]string{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, dup := files[h.Name]; dup {
			t.Errorf("%s holds %s twice", path, h.Name)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = string(b)
	}
}

func TestPlanImportsMergesImagesSharingABase(t *testing.T) {
	dir, stage := t.TempDir(), t.TempDir()
	base := "base.tar"
	writeArchive(t, filepath.Join(dir, "ours.tar"),
		dockerManifest{Config: "c1.json", RepoTags: []string{"example/ours:dev"}, Layers: []string{base, "ours-bin.tar"}},
		map[string]string{"c1.json": "{1}", base: "BASELAYER", "ours-bin.tar": "OURS"})
	writeArchive(t, filepath.Join(dir, "sidecar.tar"),
		dockerManifest{Config: "c2.json", RepoTags: []string{"example/sidecar:v1"}, Layers: []string{"sidecar-bin.tar"}},
		map[string]string{"c2.json": "{2}", "sidecar-bin.tar": "SIDECAR"})
	writeArchive(t, filepath.Join(dir, "shell.tar"),
		dockerManifest{Config: "c3.json", RepoTags: []string{"example/shell:2"}, Layers: []string{base, "empty.tar"}},
		map[string]string{"c3.json": "{3}", base: "BASELAYER", "empty.tar": ""})
	images := []nodeImage{{Name: "example/ours:dev", File: "ours.tar"}, {Name: "example/sidecar:v1", File: "sidecar.tar"}, {Name: "example/shell:2", File: "shell.tar"}}

	archives, err := planImports(dir, images, stage)
	if err != nil {
		t.Fatal(err)
	}
	if len(archives) != 2 {
		t.Fatalf("archives %+v, want the two sharing a base merged and the sidecar alone", archives)
	}
	merged, alone := archives[0], archives[1]
	if !slices.Equal(merged.Names, []string{"example/ours:dev", "example/shell:2"}) || !slices.Equal(alone.Names, []string{"example/sidecar:v1"}) || alone.File != "sidecar.tar" {
		t.Fatalf("archives %+v", archives)
	}
	files := archiveFiles(t, filepath.Join(stage, merged.File))
	for name, want := range map[string]string{"c1.json": "{1}", "c3.json": "{3}", base: "BASELAYER", "ours-bin.tar": "OURS", "empty.tar": ""} {
		if got, ok := files[name]; !ok || got != want {
			t.Errorf("merged archive's %s = %q (present %v), want %q", name, got, ok, want)
		}
	}
	if _, ok := files["repositories"]; ok {
		t.Errorf("merged archive keeps a repositories file naming only some of its images")
	}
	m, err := readDockerManifest(filepath.Join(stage, merged.File))
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 2 || m[0].Config != "c1.json" || m[1].Config != "c3.json" || !slices.Equal(m[1].Layers, []string{base, "empty.tar"}) || m[1].RepoTags[0] != "example/shell:2" {
		t.Errorf("merged manifest %+v", m)
	}
	fi, err := os.Stat(filepath.Join(stage, merged.File))
	if err != nil || merged.Size != fi.Size() {
		t.Errorf("merged size %d, file %v (%v)", merged.Size, fi, err)
	}
	if got := archiveFiles(t, filepath.Join(stage, alone.File)); got["sidecar-bin.tar"] != "SIDECAR" {
		t.Errorf("the sidecar's archive staged as %v", got)
	}
}

func TestPlanImportsRefusesWhatIsNotADockerArchive(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "x.tar"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := planImports(dir, []nodeImage{{Name: "x", File: "x.tar"}}, t.TempDir()); err == nil {
		t.Fatal("an empty file was planned as an image archive")
	}
}

func TestImportQueuesBalanceBytes(t *testing.T) {
	archives := []importArchive{{File: "a", Size: 70}, {File: "big", Size: 300}, {File: "b", Size: 70}, {File: "c", Size: 70}, {File: "d", Size: 70}, {File: "e", Size: 10}, {File: "f", Size: 5}}
	q := importQueues(archives, 2)
	if len(q) != 2 {
		t.Fatalf("%d queues", len(q))
	}
	sum := func(as []importArchive) (n int64) {
		for _, a := range as {
			n += a.Size
		}
		return n
	}
	if q[0][0].File != "big" {
		t.Errorf("the largest archive does not start a queue: %+v", q)
	}
	// 300 in one queue, 4×70+10+5 = 295 in the other: pairs in file order
	// would be 370 against 225.
	if a, b := sum(q[0]), sum(q[1]); a != 300 || b != 295 {
		t.Errorf("queue bytes %d and %d, want 300 and 295: %+v", a, b, q)
	}
	if n := len(q[0]) + len(q[1]); n != len(archives) {
		t.Errorf("%d archives queued of %d", n, len(archives))
	}
}
