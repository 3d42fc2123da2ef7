package image_test

import (
	"debug/elf"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// buildContext returns the files BuildKit would send for `docker build .`,
// read with moby's own .dockerignore matcher.
func buildContext(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command(dockerfileLint(t), "-list-context", repoRoot).Output()
	if err != nil {
		t.Fatalf("listing the build context: %v", err)
	}
	files := strings.Fields(string(out))
	if len(files) == 0 {
		t.Fatal("empty build context")
	}
	return files
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, fi.Mode().Perm())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// checkStaticELF reports (t.Errorf) what keeps the file r, called name in
// the messages, from being a static ELF executable for GOARCH goarch: not
// ELF, an interpreter (PT_INTERP), shared libraries (DT_NEEDED), another
// machine.
func checkStaticELF(t *testing.T, name string, r io.ReaderAt, goarch string) {
	t.Helper()
	f, err := elf.NewFile(r)
	if err != nil {
		t.Errorf("%s: not an ELF file: %v", name, err)
		return
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s: has a PT_INTERP program header (dynamically linked)", name)
		}
	}
	if libs, err := f.DynString(elf.DT_NEEDED); err == nil && len(libs) > 0 {
		t.Errorf("%s: needs shared libraries %v", name, libs)
	}
	machine := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[goarch]
	if machine != 0 && f.Machine != machine {
		t.Errorf("%s: machine %v, want %v", name, f.Machine, machine)
	}
}

// TestBuildContext: the context is small and holds no history, caches or
// build outputs (.cache/ alone holds gigabytes of VM kernels).
func TestBuildContext(t *testing.T) {
	var size int64
	for _, f := range buildContext(t) {
		for _, banned := range []string{".git/", ".cache/", "_output/", "bin/"} {
			if strings.HasPrefix(f, banned) {
				t.Errorf("%s is in the build context", f)
			}
		}
		if fi, err := os.Stat(filepath.Join(repoRoot, f)); err == nil {
			size += fi.Size()
		}
	}
	if size > 20<<20 {
		t.Errorf("build context is %d MiB; check .dockerignore", size>>20)
	}
	t.Logf("build context: %d KiB", size>>10)
}

// TestBinariesBuildFromContextAsStaticELF copies exactly the build context
// to a temporary directory and runs the Dockerfile's own make image-binaries command
// there (its VAR=value prefix with the target platform, its arguments, BIN
// pointing at a temporary directory): what `docker build` would compile,
// from what it would send. Then every command of the image (imageCommands)
// must be there and no other, a static ELF for
// the target architecture (no interpreter, no shared libraries: the runtime
// image's libc plays no part), with the version stamped in.
func TestBinariesBuildFromContextAsStaticELF(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make not installed")
	}
	_, stages := parseDockerfile(t, filepath.Join(repoRoot, "Dockerfile"))
	mk := makeBuild(t, stages[0])

	ctxDir := t.TempDir()
	for _, f := range buildContext(t) {
		copyFile(t, filepath.Join(repoRoot, f), filepath.Join(ctxDir, f))
	}
	outDir := filepath.Join(t.TempDir(), "out")
	const version = "v0.0.0-image-test"
	vars := map[string]string{"TARGETOS": "linux", "TARGETARCH": runtime.GOARCH, "VERSION": version}
	expand := func(s string) string {
		return os.Expand(s, func(k string) string { return vars[k] })
	}
	args := []string{"--no-print-directory"}
	for _, a := range mk.args {
		args = append(args, expand(a))
	}
	args = append(args, "BIN="+outDir)
	cmd := exec.Command("make", args...)
	cmd.Dir = ctxDir
	// The builder image sets no GOFLAGS; this machine's (e.g.
	// -buildvcs=false) must not make the build differ.
	cmd.Env = append(os.Environ(), "GOFLAGS=", "GOWORK=off")
	for k, v := range mk.env {
		cmd.Env = append(cmd.Env, k+"="+expand(v))
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make %s (Dockerfile line %d) in the build context: %v\n%s", strings.Join(args, " "), mk.line, err, out)
	}

	want := imageCommands(t)
	built, err := os.ReadDir(outDir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range built {
		got = append(got, e.Name())
	}
	if !slices.Equal(got, want) {
		t.Errorf("make %s produced %v, want every cmd/* but %v: %v", mk.args[0], got, workstationCommands, want)
	}
	for _, name := range got {
		path := filepath.Join(outDir, name)
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		checkStaticELF(t, name, f, runtime.GOARCH)
		f.Close()
		if name == "nvmirrorctl" {
			continue // clients without --version (and without pkg/version)
		}
		out, err := exec.Command(path, "--version").Output()
		if err != nil || strings.TrimSpace(string(out)) != version {
			t.Errorf("%s --version = %q, %v; want %s", name, out, err, version)
		}
	}
}

// workstationCommands are the commands the image leaves out (the
// Makefile's IMAGE_CMDS names the others): kubectl-nvmirror is a kubectl
// plugin, run on an administrator's workstation, never in a container.
var workstationCommands = []string{"kubectl-nvmirror"}

// imageCommands are the names of the commands the image holds: every
// cmd/* but workstationCommands, so that a new command is in the image
// unless it is named here.
func imageCommands(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(repoRoot, "cmd"))
	if err != nil {
		t.Fatal(err)
	}
	var cmds []string
	for _, e := range entries {
		if e.IsDir() && !slices.Contains(workstationCommands, e.Name()) {
			cmds = append(cmds, e.Name())
		}
	}
	return cmds
}
