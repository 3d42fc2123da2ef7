package deploy_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/healer"
	"github.com/nvmirror/nvmirror/pkg/kubeevents"
	"github.com/nvmirror/nvmirror/pkg/provisioner"
)

// describer collects the collectors registered on it, to read their
// descriptions (a registry's Gather omits vectors with no child yet).
type describer struct{ cs []prometheus.Collector }

func (d *describer) Register(c prometheus.Collector) error   { d.cs = append(d.cs, c); return nil }
func (d *describer) MustRegister(cs ...prometheus.Collector) { d.cs = append(d.cs, cs...) }
func (d *describer) Unregister(prometheus.Collector) bool    { return false }

var descFields = regexp.MustCompile(`fqName: "([^"]+)".*variableLabels: \{([^}]*)\}`)

// labels returns every described metric with its variable labels.
func (d *describer) labels() map[string][]string {
	ch := make(chan *prometheus.Desc, 100)
	go func() {
		for _, c := range d.cs {
			c.Describe(ch)
		}
		close(ch)
	}()
	out := map[string][]string{}
	for desc := range ch {
		if m := descFields.FindStringSubmatch(desc.String()); m != nil {
			var labels []string
			if m[2] != "" {
				labels = strings.Split(m[2], ",")
			}
			out[m[1]] = labels
		}
	}
	return out
}

// exportedMetrics are the metrics the node plugin and the provisioner
// export, read from the code's own collectors, each with its labels.
func exportedMetrics(t *testing.T) map[string][]string {
	t.Helper()
	d := &describer{}
	healer.NewMetrics(d)
	provisioner.NewMetrics(d)
	kubeevents.NewMetrics(d)
	d.MustRegister(provisioner.NewRegistryCollector(nil, nil, 0), provisioner.NewForwarderCollector(func() events.ForwarderStats { return events.ForwarderStats{} }),
		provisioner.NewOrphanCollector(func() provisioner.OrphanStats { return provisioner.OrphanStats{} }))
	out := d.labels()
	if len(out) < 20 {
		t.Fatalf("only %d metrics described: %v", len(out), out)
	}
	return out
}

// TestMetricsDocMatchesCode: docs/metrics.md names every metric the node
// plugin and the provisioner export, and names no other nvmirror_ metric.
func TestMetricsDocMatchesCode(t *testing.T) {
	exported := map[string]bool{}
	for n := range exportedMetrics(t) {
		exported[n] = true
	}
	b, err := os.ReadFile(filepath.Join(repoRoot, "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for n := range exported {
		if !strings.Contains(doc, "`"+n+"`") {
			t.Errorf("docs/metrics.md does not document %s", n)
		}
	}
	for _, m := range regexp.MustCompile(`nvmirror_[a-z_]+`).FindAllString(doc, -1) {
		base := m
		for _, suffix := range []string{"_bucket", "_count", "_sum"} {
			if s, ok := strings.CutSuffix(m, suffix); ok && exported[s] {
				base = s
			}
		}
		if !exported[base] && !strings.HasSuffix(m, "_") {
			t.Errorf("docs/metrics.md names %s, which nothing exports", m)
		}
	}
}
