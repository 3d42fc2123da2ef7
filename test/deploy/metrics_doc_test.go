package deploy_test

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
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

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (d *describer) names() []string {
	ch := make(chan *prometheus.Desc, 100)
	go func() {
		for _, c := range d.cs {
			c.Describe(ch)
		}
		close(ch)
	}()
	var out []string
	for desc := range ch {
		if m := fqName.FindStringSubmatch(desc.String()); m != nil {
			out = append(out, m[1])
		}
	}
	sort.Strings(out)
	return out
}

// TestMetricsDocMatchesCode: docs/metrics.md names every metric the node
// plugin and the provisioner export, and names no other nvmirror_ metric.
func TestMetricsDocMatchesCode(t *testing.T) {
	d := &describer{}
	healer.NewMetrics(d)
	provisioner.NewMetrics(d)
	kubeevents.NewMetrics(d)
	d.MustRegister(provisioner.NewRegistryCollector(nil, nil, 0), provisioner.NewForwarderCollector(func() events.ForwarderStats { return events.ForwarderStats{} }))
	exported := map[string]bool{}
	for _, n := range d.names() {
		exported[n] = true
	}
	if len(exported) < 20 {
		t.Fatalf("only %d metrics described: %v", len(exported), d.names())
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
