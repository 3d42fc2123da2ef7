// Package deployargs reads the container args deploy/base gives an image,
// for the stand-ins' tests: each checks that its flags accept them.
package deployargs

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// Of returns the args of every container of deploy/base whose image
// contains image. It reads deploy/base relative to a test of a package
// under test/standins (go test runs in the package's directory).
func Of(t testing.TB, image string) [][]string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "..", "..", "deploy", "base", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("deploy/base: %v %v", files, err)
	}
	var out [][]string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for {
			var w struct {
				Spec struct {
					Template struct {
						Spec struct {
							Containers []struct {
								Image string
								Args  []string
							}
						}
					}
				}
			}
			if err := dec.Decode(&w); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			for _, c := range w.Spec.Template.Spec.Containers {
				if strings.Contains(c.Image, image) {
					out = append(out, c.Args)
				}
			}
		}
	}
	return out
}
