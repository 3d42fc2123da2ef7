// Command helm-render renders nvmirror's Helm chart (deploy/helm/nvmirror)
// with the Helm library (helm.sh/helm/v4), as `helm install` or `helm
// template` would: the values coalesced with the chart's defaults and
// validated against its values.schema.json, the chart's kubeVersion
// checked, the templates rendered in strict mode, the manifests sorted in
// Helm's install order, NOTES.txt apart. No Helm binary and no cluster are
// needed.
//
// It lives in its own module so that Helm's dependencies stay out of
// nvmirror's go.mod: through k8s.io/apiextensions-apiserver they would raise
// the etcd client and bbolt the provisioner is built with. The tests of
// test/deploy and test/k8s build it once (test/deploy/helmchart). By hand,
// from the repository root:
//
//	go -C hack/helm-render run . -chart ../../deploy/helm/nvmirror -namespace nvmirror -f my-values.yaml
//
// prints the manifests as `helm template` does. With -json it prints
// {"yaml": the same, "notes": NOTES.txt rendered} instead. Values the
// schema refuses, template errors and bad usage exit 1 (2 for usage) with
// the reason on stderr.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"

	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
)

// valueFiles is the repeatable -f flag.
type valueFiles []string

func (v *valueFiles) String() string     { return fmt.Sprint(*v) }
func (v *valueFiles) Set(s string) error { *v = append(*v, s); return nil }

func main() {
	chartDir := flag.String("chart", "", "the chart's directory (required)")
	name := flag.String("name", "nvmirror", "the release name")
	namespace := flag.String("namespace", "nvmirror", "the release namespace (helm --namespace)")
	asJSON := flag.Bool("json", false, "print the manifests and the notes as JSON")
	var files valueFiles
	flag.Var(&files, "f", "a values file (YAML or JSON), repeatable; later files win, as with helm -f")
	flag.Parse()
	if *chartDir == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: helm-render -chart DIR [-name NAME] [-namespace NS] [-f values.yaml]... [-json]")
		os.Exit(2)
	}
	if err := run(*chartDir, Release{Name: *name, Namespace: *namespace}, files, *asJSON); err != nil {
		fmt.Fprintln(os.Stderr, "helm-render:", err)
		os.Exit(1)
	}
}

func run(chartDir string, rel Release, files []string, asJSON bool) error {
	values := map[string]any{}
	for _, f := range files {
		v, err := common.ReadValuesFile(f)
		if err != nil {
			return fmt.Errorf("-f %s: %w", f, err)
		}
		values = loader.MergeMaps(values, v)
	}
	ch, err := Load(chartDir)
	if err != nil {
		return err
	}
	r, err := Render(ch, rel, values)
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", " ")
		return enc.Encode(struct {
			YAML  string `json:"yaml"`
			Notes string `json:"notes"`
		}{r.YAML(), r.Notes})
	}
	_, err = os.Stdout.WriteString(r.YAML())
	return err
}
