package deploy_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var layoutRow = regexp.MustCompile("^\\| `([a-z][a-z0-9/_.-]*)`")

// TestReadmeLayoutNamesEveryPackage: the README's layout table is how a
// newcomer finds their way, so it names every Go package under pkg/, cmd/
// and test/ (a row of its own, or, for a helper package such as a fake, its
// name in its parent's row), and every path it names exists. A package
// added, moved or renamed without its row fails here.
func TestReadmeLayoutNamesEveryPackage(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	section := string(readme)
	if i := strings.Index(section, "\n## Layout"); i >= 0 {
		section = section[i:]
		if j := strings.Index(section[1:], "\n## "); j >= 0 {
			section = section[:j+1]
		}
	} else {
		t.Fatal("README.md has no ## Layout section")
	}
	rows := map[string]string{}
	for _, line := range strings.Split(section, "\n") {
		if m := layoutRow.FindStringSubmatch(line); m != nil {
			path := strings.TrimSuffix(m[1], "/")
			rows[path] = line
			if _, err := os.Stat(filepath.Join(repoRoot, path)); err != nil {
				t.Errorf("README layout names %s, which does not exist", path)
			}
		}
	}
	for _, top := range []string{"pkg", "cmd", "test"} {
		err := filepath.WalkDir(filepath.Join(repoRoot, top), func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return err
			}
			if d.Name() == "testdata" {
				return filepath.SkipDir
			}
			gofiles, _ := filepath.Glob(filepath.Join(p, "*.go"))
			if len(gofiles) == 0 {
				return nil
			}
			rel, _ := filepath.Rel(repoRoot, p)
			rel = filepath.ToSlash(rel)
			if _, ok := rows[rel]; ok {
				return nil
			}
			parent, name := filepath.ToSlash(filepath.Dir(rel)), filepath.Base(rel)
			if row, ok := rows[parent]; ok && strings.Contains(row, "`"+name+"`") {
				return nil
			}
			t.Errorf("README layout has no row for package %s (nor `%s` in the row of %s)", rel, name, parent)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
