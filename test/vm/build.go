package vm

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// builds keeps the guest binaries one test process has built, so that its
// boots link each only once: test/kernel boots four VMs in a row (the
// real-kernel tests, the auth kernel's, the datapath benchmark's smoke, a
// service VM) from the same sources, and each link of the guest test
// binary and the commands took about half a minute of `make test`'s
// critical path. A binary is never changed after it is built: boots copy
// it into their initramfs.
var builds struct {
	mu   sync.Mutex
	dir  string            // made on first use; RemoveBuilds deletes it
	done map[string]string // build key (see buildKey) -> host path
}

// RemoveBuilds deletes the binaries the process built for its guests. A
// package whose tests boot VMs calls it from TestMain after m.Run (see
// RunTests); without it they stay in the system's temporary directory.
func RemoveBuilds() {
	builds.mu.Lock()
	defer builds.mu.Unlock()
	if builds.dir != "" {
		_ = os.RemoveAll(builds.dir)
	}
	builds.dir, builds.done = "", nil
}

// RunTests is a TestMain body for a package whose tests boot VMs: it runs
// the tests, then removes the binaries built for the guests.
func RunTests(m *testing.M) int {
	code := m.Run()
	RemoveBuilds()
	return code
}

// buildKey names one build: what `go` is asked to make, with which tags.
func buildKey(kind, tags, pkg string) string { return kind + " " + tags + " " + pkg }

// buildGuest returns the guest test binary of testPkg (built with the
// vmguest tag; none when testPkg is "") and the commands as guest path
// (/nvmirror/bin/<name>) -> host path, building what this process has not
// built yet: the test binary beside the commands, and the commands in one
// `go build`, which links them in parallel.
func buildGuest(t testing.TB, repo, goBin, testPkg string, commands []string) (string, map[string]string) {
	t.Helper()
	builds.mu.Lock()
	defer builds.mu.Unlock()
	if builds.dir == "" {
		dir, err := os.MkdirTemp("", "nvmirror-guest-builds-")
		if err != nil {
			t.Fatal(err)
		}
		builds.dir, builds.done = dir, map[string]string{}
	}
	names := map[string]string{}
	var missing []string
	for _, c := range commands {
		name := filepath.Base(c)
		if other, ok := names[name]; ok && other != c {
			t.Fatalf("commands %s and %s would both be /nvmirror/bin/%s", other, c, name)
		}
		if _, ok := names[name]; ok {
			continue
		}
		names[name] = c
		if _, ok := builds.done[buildKey("build", "", c)]; !ok {
			missing = append(missing, c)
		}
	}
	testKey := buildKey("test", "vmguest", testPkg)
	_, haveTest := builds.done[testKey]
	needTest := testPkg != "" && !haveTest

	var wg sync.WaitGroup
	var testErr, cmdErr error
	testBin := filepath.Join(builds.dir, fmt.Sprintf("guest-%d.test", len(builds.done)))
	if needTest {
		wg.Add(1)
		go func() {
			defer wg.Done()
			testErr = runGo(repo, goBin, "test", "-c", "-tags", "vmguest", "-o", testBin, testPkg)
		}()
	}
	// Each `go build` gets a directory of its own: -o with several
	// packages writes each under its base name there.
	cmdDir := filepath.Join(builds.dir, fmt.Sprintf("bin-%d", len(builds.done)))
	if len(missing) > 0 {
		if err := os.MkdirAll(cmdDir, 0o755); err != nil {
			t.Fatal(err)
		}
		cmdErr = runGo(repo, goBin, append([]string{"build", "-o", cmdDir + "/"}, missing...)...)
	}
	wg.Wait()
	if testErr != nil {
		t.Fatal(testErr)
	}
	if cmdErr != nil {
		t.Fatal(cmdErr)
	}
	if needTest {
		builds.done[testKey] = testBin
	}
	for _, c := range missing {
		builds.done[buildKey("build", "", c)] = filepath.Join(cmdDir, filepath.Base(c))
	}
	files := map[string]string{}
	for name, c := range names {
		files["/nvmirror/bin/"+name] = builds.done[buildKey("build", "", c)]
	}
	return builds.done[testKey], files
}

// runGo runs the go command in the repo for the guest: static linux/amd64.
func runGo(repo, goBin string, args ...string) error {
	cmd := exec.Command(goBin, args...)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}
