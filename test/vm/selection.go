package vm

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// The guest package's tests are shared by several boots (the default kernel
// and the NVMe-auth kernel), each owning some of them through its Pattern and
// Skip, while $NVMIRROR_VM_RUN picks tests across all boots. Go's -test.run
// cannot express "matches A and B", so the host lists the package's top-level
// tests itself, works out which of them a boot runs, and tells the guest
// exactly that. Knowing the selection before booting also lets a boot with
// nothing to run skip instead of spending a VM on nothing.

// selection is what one boot runs.
type selection struct {
	// Tests are the top-level tests the boot runs, in source order.
	Tests []string
	// OwnTests are the top-level tests of this boot before $NVMIRROR_VM_RUN
	// narrowed them: Pattern minus Skip.
	OwnTests []string
	// Run and Skip are the guest's -test.run and -test.skip.
	Run, Skip string
}

// selectTests works out a boot's selection among the package's top-level
// tests. envRun, when set, replaces pattern as the guest's -test.run (so its
// subtest parts apply), and the boot's own tests that it does not name, and
// the tests it names that belong to other boots, are added to -test.skip.
func selectTests(all []string, pattern, skip, envRun string) (selection, error) {
	for _, p := range []struct{ flag, value string }{{"Pattern", pattern}, {"Skip", skip}, {EnvRun, envRun}} {
		if _, err := compileFilter(p.value); err != nil {
			return selection{}, fmt.Errorf("%s %q: %w", p.flag, p.value, err)
		}
	}
	own, _ := compileFilter(pattern)
	skipped, _ := compileFilter(skip)
	env, _ := compileFilter(envRun)
	sel := selection{Run: pattern, Skip: skip}
	var runsButNotSelected []string
	for _, name := range all {
		mine := own.runs(name) && !skipped.skipsWhole(name)
		if mine {
			sel.OwnTests = append(sel.OwnTests, name)
		}
		switch {
		case envRun == "":
			if mine {
				sel.Tests = append(sel.Tests, name)
			}
		case env.runs(name) && mine:
			sel.Tests = append(sel.Tests, name)
		case env.runs(name) && !skipped.skipsWhole(name):
			// Named by $NVMIRROR_VM_RUN but another boot's test.
			runsButNotSelected = append(runsButNotSelected, name)
		}
	}
	if envRun != "" {
		sel.Run = envRun
		if len(runsButNotSelected) > 0 {
			quoted := make([]string, len(runsButNotSelected))
			for i, n := range runsButNotSelected {
				quoted[i] = regexp.QuoteMeta(n)
			}
			extra := "^(" + strings.Join(quoted, "|") + ")$"
			if sel.Skip == "" {
				sel.Skip = extra
			} else {
				// -test.skip splits on top-level '|', so this is "either".
				sel.Skip += "|" + extra
			}
		}
	}
	return sel, nil
}

// filter mirrors the testing package's -test.run / -test.skip matching
// (testing/match.go), reduced to top-level test names: the pattern is split
// into alternatives on unbracketed '|', each into per-level elements on
// unbracketed '/'.
type filter [][]*regexp.Regexp

func compileFilter(pattern string) (filter, error) {
	if pattern == "" {
		return nil, nil
	}
	var f filter
	for _, alt := range splitPattern(pattern) {
		var elems []*regexp.Regexp
		for _, e := range alt {
			re, err := regexp.Compile(e)
			if err != nil {
				return nil, err
			}
			elems = append(elems, re)
		}
		f = append(f, elems)
	}
	return f, nil
}

// runs reports whether -test.run=f runs the top-level test name (or some of
// its subtests); an empty filter runs everything.
func (f filter) runs(name string) bool {
	if f == nil {
		return true
	}
	for _, alt := range f {
		if alt[0].MatchString(name) {
			return true
		}
	}
	return false
}

// skipsWhole reports whether -test.skip=f skips the top-level test name
// entirely. Like the testing package, the first alternative that matches
// decides: if it has subtest elements, only some subtests are skipped.
func (f filter) skipsWhole(name string) bool {
	for _, alt := range f {
		if alt[0].MatchString(name) {
			return len(alt) == 1
		}
	}
	return false
}

// splitPattern is testing.splitRegexp: alternatives of per-level elements.
func splitPattern(s string) [][]string {
	var alts [][]string
	var elems []string
	brackets, parens := 0, 0
	for i := 0; i < len(s); {
		switch s[i] {
		case '[':
			brackets++
		case ']':
			if brackets--; brackets < 0 { // an unmatched ']' is legal
				brackets = 0
			}
		case '(':
			if brackets == 0 {
				parens++
			}
		case ')':
			if brackets == 0 {
				parens--
			}
		case '\\':
			i++
		case '/', '|':
			if brackets == 0 && parens == 0 {
				elems = append(elems, s[:i])
				if s[i] == '|' {
					alts = append(alts, elems)
					elems = nil
				}
				s = s[i+1:]
				i = 0
				continue
			}
		}
		i++
	}
	return append(alts, append(elems, s))
}

// listTests returns the top-level Test functions of the guest package as the
// vmguest build sees them, in file and source order, by parsing rather than
// running the guest binary on the host.
func listTests(repo, goBin, pkg string) ([]string, error) {
	cmd := exec.Command(goBin, "list", "-tags", "vmguest", "-f",
		"{{.Dir}}{{range .TestGoFiles}}\n{{.}}{{end}}{{range .XTestGoFiles}}\n{{.}}{{end}}", pkg)
	cmd.Dir = repo
	out, err := cmd.Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return nil, fmt.Errorf("go list %s: %v: %s", pkg, err, ee.Stderr)
		}
		return nil, fmt.Errorf("go list %s: %w", pkg, err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	dir, files := lines[0], lines[1:]
	var tests []string
	fset := token.NewFileSet()
	for _, name := range files {
		f, err := parser.ParseFile(fset, filepath.Join(dir, name), nil, parser.SkipObjectResolution)
		if err != nil {
			return nil, err
		}
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if ok && fn.Recv == nil && isTestName(fn.Name.Name) && fn.Type.Params.NumFields() == 1 {
				tests = append(tests, fn.Name.Name)
			}
		}
	}
	return tests, nil
}

// isTestName is go test's rule: "Test" alone, or followed by a character
// that is not a lower-case letter (TestFoo, Test_foo, but not Testify).
func isTestName(name string) bool {
	if !strings.HasPrefix(name, "Test") {
		return false
	}
	if len(name) == len("Test") {
		return true
	}
	r, _ := utf8.DecodeRuneInString(name[len("Test"):])
	return !unicode.IsLower(r)
}
