package image_test

import (
	"archive/tar"
	"bufio"
	"crypto/sha256"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// The images `make images` builds (hack/images.sh, docs/images.md), read
// from their docker-archive tars in pure Go: what a node's containerd would
// import and run.

// imagesDir returns hack/images.sh's output directory: NVMIRROR_IMAGES_DIR,
// else the one `hack/images.sh --print-dir` names for this tree. It must
// hold a complete build; the tests skip without one, and fail instead with
// NVMIRROR_REQUIRE_IMAGES=1 (as `make unit` sets, after `make images`).
func imagesDir(t *testing.T) string {
	t.Helper()
	printDir.once.Do(func() {
		printDir.dir, printDir.how = os.Getenv("NVMIRROR_IMAGES_DIR"), "NVMIRROR_IMAGES_DIR"
		if printDir.dir == "" {
			printDir.how = "hack/images.sh --print-dir"
			out, err := exec.Command("bash", filepath.Join(repoRoot, "hack", "images.sh"), "--print-dir").Output()
			printDir.dir, printDir.err = strings.TrimSpace(string(out)), err
		}
	})
	if printDir.err != nil {
		missingImages(t, "hack/images.sh --print-dir: %v", printDir.err)
	}
	if _, err := os.Stat(filepath.Join(printDir.dir, "complete")); err != nil {
		missingImages(t, "no complete image build in %s (from %s): run `make images`", printDir.dir, printDir.how)
	}
	return printDir.dir
}

var printDir struct {
	once     sync.Once
	dir, how string
	err      error
}

func missingImages(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("NVMIRROR_REQUIRE_IMAGES") == "1" {
		t.Fatalf("NVMIRROR_REQUIRE_IMAGES=1: "+format, args...)
	}
	t.Skipf(format, args...)
}

// listedImage is a line of hack/images/images.txt: NAME:TAG SOURCE [OPTION...].
type listedImage struct {
	name, source string
	opts         []string
}

func (l listedImage) opt(k string) (string, bool) {
	for _, o := range l.opts {
		if v, ok := strings.CutPrefix(o, k+"="); ok {
			return v, true
		}
	}
	return "", false
}

func imageList(t *testing.T) []listedImage {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot, "hack", "images", "images.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var list []listedImage
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		if len(fields) < 2 {
			t.Fatalf("hack/images/images.txt: %q: want NAME:TAG SOURCE [OPTION...]", sc.Text())
		}
		list = append(list, listedImage{name: fields[0], source: fields[1], opts: fields[2:]})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return list
}

// builtImage is a line of the output's images.txt: NAME FILE BYTES.
type builtImage struct {
	name, file string
	size       int64
}

// builtImages reads the output directory's index, and the images
// hack/images.sh skipped (their inputs not there yet), by name.
func builtImages(t *testing.T, dir string) (built map[string]builtImage, skipped map[string]bool) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "images.txt"))
	if err != nil {
		t.Fatal(err)
	}
	built = map[string]builtImage{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		size, err := strconv.ParseInt(f[len(f)-1], 10, 64)
		if len(f) != 3 || err != nil {
			t.Fatalf("%s/images.txt: %q: want NAME FILE BYTES", dir, line)
		}
		built[f[0]] = builtImage{name: f[0], file: filepath.Join(dir, f[1]), size: size}
	}
	skipped = map[string]bool{}
	if b, err := os.ReadFile(filepath.Join(dir, "skipped")); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) > 0 {
				skipped[f[0]] = true
			}
		}
	}
	return built, skipped
}

var archives = struct {
	sync.Mutex
	open map[string]*dockerArchive
}{open: map[string]*dockerArchive{}}

// openImage opens the archive of the image called name, which must say it
// is that image (the name containerd gives it on import).
func openImage(t *testing.T, img builtImage) *dockerArchive {
	t.Helper()
	archives.Lock()
	defer archives.Unlock()
	if a, ok := archives.open[img.file]; ok {
		return a
	}
	a, err := openDockerArchive(img.file)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a.RepoTags, []string{img.name}) {
		t.Errorf("%s: the archive names %v, want [%s] (ctr images import names the image after it)", img.file, a.RepoTags, img.name)
	}
	if a.Config.OS != "linux" || a.Config.Architecture != runtime.GOARCH {
		t.Errorf("%s: platform %s/%s, want linux/%s", img.name, a.Config.OS, a.Config.Architecture, runtime.GOARCH)
	}
	archives.open[img.file] = a
	return a
}

// sourceImages returns the output directory, the listed images match
// accepts that were built (logging those hack/images.sh skipped, failing
// for any neither built nor skipped), and the index of what was built.
func sourceImages(t *testing.T, match func(listedImage) bool) (dir string, found []listedImage, built map[string]builtImage) {
	t.Helper()
	dir = imagesDir(t)
	built, skipped := builtImages(t, dir)
	for _, l := range imageList(t) {
		if !match(l) {
			continue
		}
		if _, ok := built[l.name]; ok {
			found = append(found, l)
		} else if skipped[l.name] {
			t.Logf("%s: skipped by hack/images.sh (its input does not exist yet)", l.name)
		} else {
			t.Errorf("%s: listed, neither built nor skipped in %s", l.name, dir)
		}
	}
	return dir, found, built
}

// TestImagesBuilt: every image of hack/images/images.txt is in the output
// (or recorded as skipped), at the size its index says, each archive
// naming its image, for this machine's platform.
func TestImagesBuilt(t *testing.T) {
	dir, found, built := sourceImages(t, func(listedImage) bool { return true })
	if len(built) != len(found) {
		t.Errorf("%s holds %d images, hack/images/images.txt lists %d of them", dir, len(built), len(found))
	}
	for _, l := range found {
		img := built[l.name]
		fi, err := os.Stat(img.file)
		if err != nil {
			t.Error(err)
			continue
		}
		if fi.Size() != img.size {
			t.Errorf("%s: %d bytes, the index says %d", img.file, fi.Size(), img.size)
		}
		a := openImage(t, img)
		t.Logf("%-62s %4d MiB, %d layers, %d files", img.name, img.size>>20, len(a.Config.RootFS.DiffIDs), len(a.Files))
	}
}

// TestNvmirrorImage: the image our Dockerfile builds holds every command
// but the workstation's (imageCommands) as a static binary in /usr/local/bin, every program the code runs in its
// PATH, runs nvmirrorctl -h by default as root (the node plugin and the
// storage node agent must be root: the Dockerfile's comments), and carries
// the version it was built with in its label and in its binaries.
func TestNvmirrorImage(t *testing.T) {
	dir, found, built := sourceImages(t, func(l listedImage) bool { return l.source == "dockerfile" })
	if len(found) != 1 {
		t.Fatalf("%d dockerfile images built, want 1", len(found))
	}
	a := openImage(t, built[found[0].name])

	cmds := imageCommands(t)
	for _, want := range []string{"nvmirror-csi", "nvmirror-provisioner", "nvmirror-target", "nvmirrorctl"} {
		if !slices.Contains(cmds, want) {
			t.Errorf("cmd/%s is gone: the image's commands (deploy/ runs them by name) changed", want)
		}
	}
	for _, name := range cmds {
		p := "/usr/local/bin/" + name
		f, ok := a.Files[p]
		if !ok || f.Typeflag != tar.TypeReg || f.Mode&0o111 == 0 {
			t.Errorf("%s: not an executable file in the image", p)
			continue
		}
		checkStaticELF(t, p, f.data, a.Config.Architecture)
	}
	for _, name := range workstationCommands {
		if _, ok := a.Files["/usr/local/bin/"+name]; ok {
			t.Errorf("/usr/local/bin/%s is in the image: it runs on a workstation (IMAGE_CMDS)", name)
		}
	}

	// The programs of programs_test.go's table, and whatever the source
	// runs (TestEveryExecCallIsKnown keeps the two the same).
	progs := map[string]string{}
	for _, p := range programs {
		progs[p.name] = p.why
	}
	for _, s := range execCalls(t) {
		if _, ok := progs[s.program]; !ok && s.program != "" {
			progs[s.program] = s.pos.String()
		}
	}
	names := make([]string, 0, len(progs))
	for n := range progs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		real, _, err := a.lookPath(n)
		if err != nil {
			t.Errorf("%s (%s): %v", n, progs[n], err)
			continue
		}
		t.Logf("%-11s %s", n, real)
	}

	c := a.Config.Config
	if want := []string{"nvmirrorctl", "-h"}; !slices.Equal(c.Cmd, want) || len(c.Entrypoint) != 0 {
		t.Errorf("entrypoint %q, cmd %q; want no entrypoint and cmd %q", c.Entrypoint, c.Cmd, want)
	}
	if u := c.User; u != "" && u != "root" && u != "0" && u != "0:0" {
		t.Errorf("runs as user %q, want root: the node plugin and the storage node agent need it", u)
	}

	// hack/images.sh writes the VERSION it built with into complete.
	b, err := os.ReadFile(filepath.Join(dir, "complete"))
	if err != nil {
		t.Fatal(err)
	}
	version := strings.TrimSpace(string(b))
	if got := c.Labels["org.opencontainers.image.version"]; got == "" || got != version {
		t.Errorf("label org.opencontainers.image.version = %q, want %q (the build's VERSION)", got, version)
	}
	if c.Labels["org.opencontainers.image.title"] != "nvmirror" {
		t.Errorf("labels %v: no org.opencontainers.image.title=nvmirror", c.Labels)
	}
	if runtime.GOOS != "linux" || a.Config.Architecture != runtime.GOARCH {
		return
	}
	for _, name := range []string{"nvmirror-csi", "nvmirror-provisioner", "nvmirror-target"} {
		f, ok := a.Files["/usr/local/bin/"+name]
		if !ok {
			continue
		}
		exe := filepath.Join(t.TempDir(), name)
		out, err := os.OpenFile(exe, os.O_CREATE|os.O_WRONLY, 0o755)
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.Copy(out, io.NewSectionReader(f.data, 0, f.data.Size()))
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
		got, err := exec.Command(exe, "--version").Output()
		if err != nil || strings.TrimSpace(string(got)) != version {
			t.Errorf("the image's %s --version = %q, %v; want %s", name, got, err, version)
		}
	}
}

// TestSingleBinaryImages: each k8s-tool: and go: image runs its one binary
// as upstream's images do (ENTRYPOINT ["/BINARY"], the manifests giving
// only args), a static ELF file there, with the CMD its list line asks for;
// a k8s tool's is the very binary hack/k8s-tools.sh built.
func TestSingleBinaryImages(t *testing.T) {
	_, found, built := sourceImages(t, func(l listedImage) bool {
		return strings.HasPrefix(l.source, "k8s-tool:") || strings.HasPrefix(l.source, "go:")
	})
	k8sBin := ""
	if out, err := exec.Command("bash", filepath.Join(repoRoot, "hack", "k8s-tools.sh"), "--print-bin-dir").Output(); err == nil {
		k8sBin = strings.TrimSpace(string(out))
	}
	for _, l := range found {
		a := openImage(t, built[l.name])
		bin := "/" + path.Base(l.source[strings.Index(l.source, ":")+1:])
		c := a.Config.Config
		if !slices.Equal(c.Entrypoint, []string{bin}) {
			t.Errorf("%s: entrypoint %q, want [%s]", l.name, c.Entrypoint, bin)
		}
		var wantCmd []string
		if cmd, ok := l.opt("cmd"); ok {
			wantCmd = []string{cmd}
		}
		if !slices.Equal(c.Cmd, wantCmd) {
			t.Errorf("%s: cmd %q, want %q", l.name, c.Cmd, wantCmd)
		}
		f, ok := a.Files[bin]
		if !ok || f.Typeflag != tar.TypeReg || f.Mode&0o111 == 0 {
			t.Errorf("%s: %s is not an executable file in the image", l.name, bin)
			continue
		}
		checkStaticELF(t, l.name+":"+bin, f.data, a.Config.Architecture)
		if base, _ := l.opt("base"); base == "debian" {
			if _, _, err := a.resolve("/bin/sh"); err != nil {
				t.Errorf("%s: base=debian, but no shell: %v", l.name, err)
			}
		} else if n := len(a.Files); n > 3 {
			t.Errorf("%s: FROM scratch with one binary, but %d files", l.name, n)
		}
		if tool, ok := strings.CutPrefix(l.source, "k8s-tool:"); ok && k8sBin != "" {
			if want, err := fileSHA256(filepath.Join(k8sBin, tool)); err == nil {
				h := sha256.New()
				if _, err := io.Copy(h, io.NewSectionReader(f.data, 0, f.data.Size())); err != nil {
					t.Fatal(err)
				}
				if string(h.Sum(nil)) != string(want) {
					t.Errorf("%s: %s differs from %s/%s (the image is stale: run make images)", l.name, bin, k8sBin, tool)
				}
			}
		}
	}
}

func fileSHA256(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

// TestBusyboxImage: the e2e busybox image runs what test pods run through
// `sh -c`: each applet a symlink to a static /bin/busybox in PATH.
func TestBusyboxImage(t *testing.T) {
	_, found, built := sourceImages(t, func(l listedImage) bool { return l.source == "busybox" })
	for _, l := range found {
		a := openImage(t, built[l.name])
		f, ok := a.Files["/bin/busybox"]
		if !ok || f.Typeflag != tar.TypeReg || f.Mode&0o111 == 0 {
			t.Fatalf("%s: no executable /bin/busybox", l.name)
		}
		checkStaticELF(t, l.name+":/bin/busybox", f.data, a.Config.Architecture)
		for _, applet := range []string{"sh", "dd", "md5sum", "mount", "umount", "stat", "ls", "cat", "sleep", "sync", "mkdir", "rm", "test"} {
			real, _, err := a.lookPath(applet)
			if err != nil || real != "/bin/busybox" {
				t.Errorf("%s: %s: %q, %v; want /bin/busybox", l.name, applet, real, err)
			}
		}
		if c := a.Config.Config; !slices.Equal(c.Cmd, []string{"sh"}) || len(c.Entrypoint) != 0 {
			t.Errorf("%s: entrypoint %q, cmd %q; want cmd [sh]", l.name, c.Entrypoint, c.Cmd)
		}
	}
}
