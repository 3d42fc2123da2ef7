package deploy_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
)

var monitoringDir = filepath.Join(deployDir, "monitoring")

// grafanaBuiltins are the variables Grafana defines itself.
var grafanaBuiltins = map[string]bool{"__rate_interval": true, "__interval": true, "__range": true, "__interval_ms": true}

// TestGrafanaDashboard checks deploy/monitoring/nvmirror-dashboard.json:
// it is a dashboard Grafana imports (title, uid, panels with ids, types,
// places that do not overlap, a Prometheus data source chosen by a
// variable), every query reads metrics nvmirror exports with labels they
// have and only variables the dashboard defines, and every metric the code
// exports is on some panel: a metric added without a panel fails here.
func TestGrafanaDashboard(t *testing.T) {
	exported := exportedMetrics(t)
	b, err := os.ReadFile(filepath.Join(monitoringDir, "nvmirror-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash map[string]any
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("nvmirror-dashboard.json: %v", err)
	}
	if str(dash, "title") == "" || str(dash, "uid") == "" || get(dash, "schemaVersion") == nil {
		t.Errorf("dashboard without title, uid or schemaVersion")
	}

	variables := map[string]bool{}
	for k := range grafanaBuiltins {
		variables[k] = true
	}
	for _, v := range list(dash, "templating", "list") {
		name := str(v, "name")
		variables[name] = true
		switch str(v, "type") {
		case "datasource":
			if str(v, "query") != "prometheus" {
				t.Errorf("variable %s chooses %q data sources, want prometheus", name, str(v, "query"))
			}
		case "query":
			q := str(v, "query", "query")
			inner, ok := strings.CutPrefix(q, "label_values(")
			if !ok {
				t.Errorf("variable %s: query %q is not label_values(METRIC, LABEL)", name, q)
				continue
			}
			metric, label, _ := strings.Cut(strings.TrimSuffix(inner, ")"), ",")
			labels, found := exported[strings.TrimSpace(metric)]
			if label = strings.TrimSpace(label); !found || (!targetLabels[label] && !slices.Contains(labels, label)) {
				t.Errorf("variable %s: %q reads label %s of %s, which nvmirror does not export", name, q, label, metric)
			}
		}
	}
	if !variables["datasource"] {
		t.Error("no datasource variable: importing the dashboard would tie it to one data source uid")
	}

	used := map[string]bool{}
	ids := map[float64]bool{}
	type rect struct {
		title      string
		x, y, w, h float64
	}
	var rects []rect
	var walk func(panels []any)
	walk = func(panels []any) {
		for _, p := range panels {
			title, kind := str(p, "title"), str(p, "type")
			id, _ := get(p, "id").(float64)
			if id == 0 || ids[id] {
				t.Errorf("panel %q: id %v missing or used twice", title, get(p, "id"))
			}
			ids[id] = true
			g := func(k string) float64 { f, _ := get(p, "gridPos", k).(float64); return f }
			if g("w") <= 0 || g("h") <= 0 || g("x")+g("w") > 24 {
				t.Errorf("panel %q: gridPos %v is not within the 24 columns", title, get(p, "gridPos"))
			}
			rects = append(rects, rect{title, g("x"), g("y"), g("w"), g("h")})
			if kind == "row" {
				walk(list(p, "panels"))
				continue
			}
			if title == "" || str(p, "description") == "" {
				t.Errorf("panel %d: a title and a description say what it shows", int(id))
			}
			if str(p, "datasource", "uid") != "${datasource}" {
				t.Errorf("panel %q: data source %v, want the ${datasource} variable", title, get(p, "datasource"))
			}
			targets := list(p, "targets")
			if len(targets) == 0 {
				t.Errorf("panel %q has no query", title)
			}
			refs := map[string]bool{}
			for _, tg := range targets {
				if ref := str(tg, "refId"); ref == "" || refs[ref] {
					t.Errorf("panel %q: refId %q missing or used twice", title, ref)
				} else {
					refs[ref] = true
				}
				for _, m := range checkPromQL(t, "panel "+title, str(tg, "expr"), exported, variables) {
					used[m] = true
				}
			}
		}
	}
	walk(list(dash, "panels"))
	for i, a := range rects {
		for _, b := range rects[i+1:] {
			if a.x < b.x+b.w && b.x < a.x+a.w && a.y < b.y+b.h && b.y < a.y+a.h {
				t.Errorf("panels %q and %q overlap", a.title, b.title)
			}
		}
	}
	var missing []string
	for m := range exported {
		if !used[m] {
			missing = append(missing, m)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("nvmirror exports metrics no dashboard panel shows: %v", missing)
	}
}

var (
	promDuration   = regexp.MustCompile(`^([0-9]+(ms|s|m|h|d|w|y))+$`)
	alertName      = regexp.MustCompile(`^Nvmirror[A-Z][A-Za-z]+$`)
	templatedLabel = regexp.MustCompile(`\$labels\.([A-Za-z_][A-Za-z0-9_]*)`)
)

// TestAlertRules checks deploy/monitoring/nvmirror-alerts.yaml: a
// Prometheus rules file (groups of rules with alert, expr, for, labels,
// annotations), every expression reading metrics nvmirror exports with
// labels they have, every $labels.X of an annotation a label the
// expression keeps, and the alerts the issue asks for are there: a volume
// degraded too long, one without an in-sync replica, event delivery
// failing, a storage node down.
func TestAlertRules(t *testing.T) {
	exported := exportedMetrics(t)
	docs := readDocs(t, filepath.Join("deploy", "monitoring", "nvmirror-alerts.yaml"))
	if len(docs) != 1 {
		t.Fatalf("%d YAML documents, want 1", len(docs))
	}
	groups := list(docs[0].value, "groups")
	if len(groups) == 0 {
		t.Fatal("no groups")
	}
	names := map[string]bool{}
	reads := map[string][]string{} // metric → alerts reading it
	for _, g := range groups {
		if str(g, "name") == "" {
			t.Errorf("a group without a name")
		}
		for _, r := range list(g, "rules") {
			name := str(r, "alert")
			if !alertName.MatchString(name) || names[name] {
				t.Errorf("alert %q: want a unique Nvmirror... name", name)
			}
			names[name] = true
			for key := range r.(map[string]any) {
				if !slices.Contains([]string{"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}, key) {
					t.Errorf("%s: unknown field %s", name, key)
				}
			}
			if f := get(r, "for"); f != nil && !promDuration.MatchString(str(r, "for")) {
				t.Errorf("%s: for %v is not a Prometheus duration", name, f)
			}
			if s := str(r, "labels", "severity"); s != "warning" && s != "critical" {
				t.Errorf("%s: severity %q, want warning or critical", name, s)
			}
			if str(r, "annotations", "summary") == "" || str(r, "annotations", "description") == "" {
				t.Errorf("%s: a summary and a description say what happened and where to look", name)
			}
			expr := str(r, "expr")
			for _, m := range checkPromQL(t, "alert "+name, expr, exported, nil) {
				reads[m] = append(reads[m], name)
			}
			// An alert's labels are those its expression keeps: an
			// aggregation's by list, or all of the metric's.
			e, err := parsePromQL(expr)
			if err != nil {
				continue
			}
			kept := map[string]bool{}
			for _, l := range e.grouping {
				kept[l] = true
			}
			if len(e.grouping) == 0 {
				for _, sel := range e.selectors {
					for _, l := range exported[sel.metric] {
						kept[l] = true
					}
					for l := range targetLabels {
						kept[l] = true
					}
				}
			}
			for _, field := range []string{"summary", "description"} {
				for _, m := range templatedLabel.FindAllStringSubmatch(str(r, "annotations", field), -1) {
					if !kept[m[1]] {
						t.Errorf("%s: %s uses $labels.%s, which %q does not keep", name, field, m[1], expr)
					}
				}
			}
		}
	}
	for metric, what := range map[string]string{
		"nvmirror_node_volume_degraded_seconds":     "a volume degraded too long",
		"nvmirror_node_volumes":                     "a volume without an in-sync replica",
		"nvmirror_node_events_queued":               "events stuck on a node",
		"nvmirror_provisioner_syslog_dropped_total": "syslog delivery failing",
		"nvmirror_provisioner_storage_node_up":      "a storage node down",
		"nvmirror_node_repairs_total":               "repairs failing",
		"nvmirror_node_heal_cycle_duration_seconds": "the healer's cycles slow",
		"nvmirror_provisioner_registry_up":          "the registry unreachable",
		"nvmirror_provisioner_grpc_requests_total":  "calls with a wrong token",
		"nvmirror_provisioner_storage_node_bytes":   "a pool filling",
		"nvmirror_provisioner_leader":               "no leader",
		"nvmirror_provisioner_syslog_connected":     "the syslog server away",
		"nvmirror_provisioner_syslog_queue_length":  "a syslog backlog",
		"nvmirror_node_md_members":                  "a member faulty for long",
	} {
		if len(reads[metric]) == 0 {
			t.Errorf("no alert reads %s: want one for %s", metric, what)
		}
	}
}
