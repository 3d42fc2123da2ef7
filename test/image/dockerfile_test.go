package image_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

var repoRoot = func() string {
	abs, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		panic(err)
	}
	return abs
}()

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	line int    // first line, 1-based
	cmd  string // upper-cased keyword
	args string // the rest, as written
}

// stage is a FROM and the instructions up to the next one.
type stage struct {
	from         instruction
	name         string // AS name, lower-cased
	instructions []instruction
}

// parseDockerfile splits a Dockerfile into stages. It is deliberately
// small: the grammar's corner cases are BuildKit's business
// (TestDockerfileLint); this reads the structure the other checks need.
func parseDockerfile(t *testing.T, path string) (args []instruction, stages []stage) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var cur *instruction
	n := 0
	flush := func() {
		if cur == nil {
			return
		}
		in := *cur
		cur = nil
		switch {
		case in.cmd == "FROM":
			st := stage{from: in}
			if fields := strings.Fields(in.args); len(fields) >= 2 && strings.EqualFold(fields[len(fields)-2], "AS") {
				st.name = strings.ToLower(fields[len(fields)-1])
			}
			stages = append(stages, st)
		case len(stages) == 0:
			args = append(args, in)
		default:
			stages[len(stages)-1].instructions = append(stages[len(stages)-1].instructions, in)
		}
	}
	for sc.Scan() {
		n++
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		cont := strings.HasSuffix(trimmed, "\\")
		body := strings.TrimSuffix(trimmed, "\\")
		if cur == nil {
			kw, rest, _ := strings.Cut(body, " ")
			cur = &instruction{line: n, cmd: strings.ToUpper(kw), args: strings.TrimSpace(rest)}
		} else {
			cur.args += " " + strings.TrimSpace(body)
		}
		if !cont {
			flush()
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	flush()
	if len(stages) < 2 {
		t.Fatalf("%s: %d stages, want a builder and a runtime stage", path, len(stages))
	}
	return args, stages
}

var lintTool = struct {
	once sync.Once
	path string
	err  error
}{}

// dockerfileLint builds hack/dockerfile-lint once (BuildKit's frontend; the
// first build takes about a minute) and returns its path.
func dockerfileLint(t *testing.T) string {
	t.Helper()
	lintTool.once.Do(func() {
		dir, err := os.MkdirTemp("", "nvmirror-dockerfile-lint-")
		if err != nil {
			lintTool.err = err
			return
		}
		lintTool.path = filepath.Join(dir, "dockerfile-lint")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", lintTool.path, ".")
		cmd.Dir = filepath.Join(repoRoot, "hack", "dockerfile-lint")
		// Its own module, never a workspace including nvmirror's.
		cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly")
		if out, err := cmd.CombinedOutput(); err != nil {
			lintTool.err = fmt.Errorf("building hack/dockerfile-lint: %v\n%s", err, out)
		}
	})
	if lintTool.err != nil {
		t.Fatal(lintTool.err)
	}
	return lintTool.path
}

// TestDockerfileLint runs BuildKit's parser and lint rules (what `docker
// build --check` reports) over the Dockerfile: no warning is allowed.
func TestDockerfileLint(t *testing.T) {
	out, err := exec.Command(dockerfileLint(t), filepath.Join(repoRoot, "Dockerfile")).CombinedOutput()
	if err != nil {
		t.Fatalf("BuildKit lint of Dockerfile: %v\n%s", err, out)
	}
	t.Logf("%s", out)

	// The linter itself must still catch what it is here for.
	bad := filepath.Join(t.TempDir(), "Dockerfile")
	if err := os.WriteFile(bad, []byte("from debian:bookworm-slim as Runtime\nENV A 1\nCMD echo $A\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command(dockerfileLint(t), bad).CombinedOutput()
	for _, rule := range []string{"StageNameCasing", "LegacyKeyValueFormat", "JSONArgsRecommended"} {
		if err == nil || !strings.Contains(string(out), rule) {
			t.Errorf("the linter missed %s in a bad Dockerfile: %v\n%s", rule, err, out)
		}
	}
}

// TestDockerfileStructure checks what BuildKit's rules do not: a builder
// running `make image-binaries` on the build platform, a Debian slim runtime that
// cleans its package lists, the binaries copied from where make put them.
func TestDockerfileStructure(t *testing.T) {
	_, stages := parseDockerfile(t, filepath.Join(repoRoot, "Dockerfile"))
	builder, runtime := stages[0], stages[len(stages)-1]
	if builder.name != "builder" || !strings.Contains(builder.from.args, "--platform=$BUILDPLATFORM") || !strings.Contains(builder.from.args, "golang:") {
		t.Errorf("line %d: the first stage should be `FROM --platform=$BUILDPLATFORM golang:... AS builder` (cross-compiling, no emulation): %q", builder.from.line, builder.from.args)
	}
	if !regexp.MustCompile(`^debian:(\$\{DEBIAN_RELEASE\}|[a-z]+)-slim$`).MatchString(strings.TrimSpace(runtime.from.args)) {
		t.Errorf("line %d: the runtime stage should be a Debian slim image: %q", runtime.from.line, runtime.from.args)
	}
	mk := makeBuild(t, builder)
	var copied bool
	for _, in := range runtime.instructions {
		if in.cmd == "COPY" && strings.Contains(in.args, "--from=builder") {
			f := strings.Fields(in.args)
			if len(f) == 3 && strings.TrimSuffix(f[1], "/") == mk.bin && f[2] == "/usr/local/bin/" {
				copied = true
			}
		}
		if in.cmd == "RUN" && strings.Contains(in.args, "apt-get install") {
			for _, want := range []string{"--no-install-recommends", "rm -rf /var/lib/apt/lists/*", "apt-get update", "DEBIAN_FRONTEND=noninteractive"} {
				if !strings.Contains(in.args, want) {
					t.Errorf("line %d: the package install lacks %q", in.line, want)
				}
			}
		}
		if in.cmd == "USER" {
			t.Errorf("line %d: USER in the runtime stage: the node plugin and the agent must run as root (the manifests set the user of the others)", in.line)
		}
	}
	if !copied {
		t.Errorf("the runtime stage does not `COPY --from=builder %s/ /usr/local/bin/`", mk.bin)
	}
}

// imageBuildTarget is the make target the Dockerfile builds the image's
// programs with: `make build`'s, for the image's commands only.
const imageBuildTarget = "image-binaries"

// makeInvocation is the Dockerfile's `make image-binaries` command.
type makeInvocation struct {
	line int
	env  map[string]string // VAR=value before make
	args []string          // after make, BIN= removed
	bin  string            // BIN=
}

var mountOpt = regexp.MustCompile(`^--mount=\S+$`)

// makeBuild finds the builder's RUN ... make image-binaries ... and splits it.
func makeBuild(t *testing.T, builder stage) makeInvocation {
	t.Helper()
	for _, in := range builder.instructions {
		if in.cmd != "RUN" || !strings.Contains(in.args, "make "+imageBuildTarget) {
			continue
		}
		mk := makeInvocation{line: in.line, env: map[string]string{}}
		fields := strings.Fields(in.args)
		i := 0
		for i < len(fields) && mountOpt.MatchString(fields[i]) {
			i++
		}
		for ; i < len(fields) && fields[i] != "make"; i++ {
			k, v, ok := strings.Cut(fields[i], "=")
			if !ok {
				t.Fatalf("line %d: %q before make: only VAR=value assignments may precede it", in.line, fields[i])
			}
			mk.env[k] = v
		}
		for _, a := range fields[min(i+1, len(fields)):] {
			if v, ok := strings.CutPrefix(a, "BIN="); ok {
				mk.bin = strings.TrimSuffix(v, "/")
				continue
			}
			if strings.ContainsAny(a, ";&|") {
				t.Fatalf("line %d: make %s must be the whole RUN command", in.line, imageBuildTarget)
			}
			mk.args = append(mk.args, a)
		}
		if len(mk.args) == 0 || mk.args[0] != imageBuildTarget || mk.bin == "" {
			t.Fatalf("line %d: want `make %s ... BIN=DIR`, have %q", in.line, imageBuildTarget, in.args)
		}
		return mk
	}
	t.Fatal("the builder stage has no RUN ... make " + imageBuildTarget)
	return makeInvocation{}
}
