// Command dockerfile-lint checks Dockerfiles with BuildKit's own Dockerfile
// frontend: the parser, and the lint rules `docker build --check` applies
// (StageNameCasing, FromAsCasing, UndefinedVar, UndefinedArgInFrom,
// JSONArgsRecommended, WorkdirRelativePath, ...), without a Docker engine
// or a network: base images are not fetched; each resolves to an empty
// image of the requested platform.
//
// It lives in its own module so that BuildKit's dependencies stay out of
// nvmirror's go.mod. Run from the repository root:
//
//	go -C hack/dockerfile-lint run . ../../Dockerfile
//
// Every warning is printed as FILE:LINE: RULE: message; the exit status is
// 1 when there is any warning or error, 2 for bad usage.
//
// With -list-context DIR it prints instead the files of the build context
// DIR as BuildKit sends it (DIR/.dockerignore applied by moby's own pattern
// matcher), one path relative to DIR per line, so a test can build from
// exactly those files.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/moby/buildkit/client/llb/sourceresolver"
	"github.com/moby/buildkit/frontend/dockerfile/dockerfile2llb"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
	digest "github.com/opencontainers/go-digest"
)

// offlineResolver answers every base image with an empty image of the
// requested platform, so linting never touches a registry. Rules that look
// at a base image's environment then see only PATH, which is what a
// Dockerfile may rely on without declaring it.
type offlineResolver struct{}

func (offlineResolver) ResolveImageConfig(_ context.Context, ref string, opt sourceresolver.Opt) (string, digest.Digest, []byte, error) {
	os, arch := "linux", runtime.GOARCH
	if opt.ImageOpt != nil && opt.ImageOpt.Platform != nil {
		os, arch = opt.ImageOpt.Platform.OS, opt.ImageOpt.Platform.Architecture
	}
	cfg, err := json.Marshal(map[string]any{
		"os": os, "architecture": arch,
		"config": map[string]any{"Env": []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{}},
	})
	return ref, digest.FromString(ref), cfg, err
}

// lint returns one line per warning of the Dockerfile at path.
func lint(path string) ([]string, error) {
	dt, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []string
	opt := dockerfile2llb.ConvertOpt{MetaResolver: offlineResolver{}, AllStages: true}
	opt.Warn = func(rule, _, url, msg string, loc []parser.Range) {
		line := 0
		if len(loc) > 0 {
			line = loc[0].Start.Line
		}
		out = append(out, fmt.Sprintf("%s:%d: %s: %s (%s)", path, line, rule, msg, url))
	}
	if _, err := dockerfile2llb.Dockerfile2LLB(context.Background(), dt, opt); err != nil {
		return out, fmt.Errorf("%s: %w", path, err)
	}
	return out, nil
}

// listContext returns the files of the build context dir, relative to it
// and slash-separated, in walk order.
func listContext(dir string) ([]string, error) {
	var patterns []string
	if f, err := os.Open(filepath.Join(dir, ".dockerignore")); err == nil {
		patterns, err = ignorefile.ReadAll(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf(".dockerignore: %w", err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		return nil, fmt.Errorf(".dockerignore: %w", err)
	}
	var out []string
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		skip, err := pm.MatchesOrParentMatches(rel)
		if err != nil {
			return err
		}
		if d.IsDir() {
			// Like the Docker client: an excluded directory is only entered
			// when an exception pattern could re-include something in it.
			if skip && !reincluded(pm, rel) {
				return filepath.SkipDir
			}
			return nil
		}
		if !skip {
			out = append(out, rel)
		}
		return nil
	})
	return out, err
}

func reincluded(pm *patternmatcher.PatternMatcher, dir string) bool {
	if !pm.Exclusions() {
		return false
	}
	for _, p := range pm.Patterns() {
		if p.Exclusion() && (strings.HasPrefix(p.String()+"/", dir+"/") || strings.HasPrefix(p.String(), "**") || strings.HasPrefix(dir+"/", p.String()+"/")) {
			return true
		}
	}
	return false
}

func main() {
	if len(os.Args) == 3 && os.Args[1] == "-list-context" {
		files, err := listContext(os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, "dockerfile-lint:", err)
			os.Exit(1)
		}
		for _, f := range files {
			fmt.Println(f)
		}
		return
	}
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: dockerfile-lint DOCKERFILE... | dockerfile-lint -list-context DIR")
		os.Exit(2)
	}
	failed := false
	for _, path := range os.Args[1:] {
		warnings, err := lint(path)
		for _, w := range warnings {
			fmt.Println(w)
		}
		if err != nil {
			fmt.Println(err)
		}
		if err != nil || len(warnings) > 0 {
			failed = true
			continue
		}
		fmt.Printf("%s: no warnings\n", path)
	}
	if failed {
		os.Exit(1)
	}
}
