package main

// Rendering a chart as helm install does, without a cluster.

import (
	"fmt"
	"path"
	"strings"

	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	chartutil "helm.sh/helm/v4/pkg/chart/v2/util"
	"helm.sh/helm/v4/pkg/engine"
	releaseutil "helm.sh/helm/v4/pkg/release/v1/util"
)

// Release names the release and its namespace, as helm's NAME and
// --namespace.
type Release struct {
	Name, Namespace string
}

// Rendered is a chart rendered for a release.
type Rendered struct {
	// Manifests are the objects' YAML documents in Helm's install order,
	// each with the template it came from.
	Manifests []Manifest
	// Notes is the rendered NOTES.txt.
	Notes string
}

// Manifest is one rendered template's document.
type Manifest struct {
	Template string // e.g. nvmirror/templates/node.yaml
	YAML     string
}

// YAML is every manifest as one stream, as `helm template` prints it.
func (r Rendered) YAML() string {
	var b strings.Builder
	for _, m := range r.Manifests {
		fmt.Fprintf(&b, "---\n# Source: %s\n%s\n", m.Template, strings.TrimSpace(m.YAML))
	}
	return b.String()
}

// Load reads the chart directory.
func Load(dir string) (*chart.Chart, error) {
	ch, err := loader.Load(dir)
	if err != nil {
		return nil, fmt.Errorf("loading chart %s: %w", dir, err)
	}
	return ch, nil
}

// Render renders ch for rel with values (nil: the chart's defaults),
// failing as helm install would: on values the schema refuses, a
// Kubernetes version outside the chart's kubeVersion, a template error.
func Render(ch *chart.Chart, rel Release, values map[string]any) (Rendered, error) {
	caps := common.DefaultCapabilities
	if kv := ch.Metadata.KubeVersion; kv != "" && !chartutil.IsCompatibleRange(kv, caps.KubeVersion.String()) {
		return Rendered{}, fmt.Errorf("chart requires kubeVersion %s, Kubernetes %s is not", kv, caps.KubeVersion.Version)
	}
	if values == nil {
		values = map[string]any{}
	}
	vals, err := util.ToRenderValuesWithSchemaValidation(ch, values,
		common.ReleaseOptions{Name: rel.Name, Namespace: rel.Namespace, Revision: 1, IsInstall: true}, caps, false)
	if err != nil {
		return Rendered{}, fmt.Errorf("values: %w", err)
	}
	var e engine.Engine
	e.Strict = true // a misspelt .Values reference is an error, not ""
	files, err := e.Render(ch, vals)
	if err != nil {
		return Rendered{}, fmt.Errorf("rendering: %w", err)
	}
	var out Rendered
	notes := path.Join(ch.Name(), "templates", "NOTES.txt")
	out.Notes = files[notes]
	delete(files, notes)
	hooks, manifests, err := releaseutil.SortManifests(files, nil, releaseutil.InstallOrder)
	if err != nil {
		return Rendered{}, fmt.Errorf("sorting the manifests: %w", err)
	}
	if len(hooks) > 0 {
		return Rendered{}, fmt.Errorf("the chart has %d hooks; nvmirror's has none, and this renderer does not run them", len(hooks))
	}
	for _, m := range manifests {
		out.Manifests = append(out.Manifests, Manifest{Template: m.Name, YAML: m.Content})
	}
	return out, nil
}
