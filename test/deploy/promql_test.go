package deploy_test

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// A small PromQL reader, enough to find what an expression reads: each
// metric selector with the label names it matches on, and the Grafana
// variables ($name) it uses. It knows PromQL's lexical rules (strings,
// comments, label matchers, ranges, durations, keywords, aggregations and
// their by/without lists, functions) but not its grammar: a misplaced
// operator is Prometheus's to find; a metric name that does not exist is
// ours, because Prometheus would silently return nothing for it.

// promSelector is one metric read by an expression.
type promSelector struct {
	metric string   // "" for a bare {…} selector
	labels []string // label names of its matchers
}

// promExpr is what an expression reads.
type promExpr struct {
	selectors []promSelector
	grouping  []string // label names of by/without/on/ignoring/group_* lists
	variables []string // Grafana variables, without the $
}

// grafanaVariable is $name or ${name} (or ${name:format}).
var grafanaVariable = regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)`)

// promAggregations are PromQL's aggregation operators, which take by/without
// between their name and their parentheses.
var promAggregations = map[string]bool{"sum": true, "min": true, "max": true, "avg": true, "group": true,
	"stddev": true, "stdvar": true, "count": true, "count_values": true, "bottomk": true, "topk": true,
	"quantile": true, "limitk": true, "limit_ratio": true}

// promKeywords are words that are neither metrics nor functions.
var promKeywords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "atan2": true,
	"inf": true, "nan": true, "offset": true, "start": true, "end": true}

// promGroupings are followed by a parenthesised list of label names.
var promGroupings = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true,
	"group_left": true, "group_right": true}

func isIdentStart(c byte) bool {
	return c == '_' || c == ':' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

func isIdentChar(c byte) bool { return isIdentStart(c) || (c >= '0' && c <= '9') }

// parsePromQL reads expr.
func parsePromQL(expr string) (promExpr, error) {
	var out promExpr
	s := expr
	i := 0
	skipSpace := func() {
		for i < len(s) {
			switch {
			case s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r':
				i++
			case s[i] == '#':
				for i < len(s) && s[i] != '\n' {
					i++
				}
			default:
				return
			}
		}
	}
	ident := func() string {
		start := i
		for i < len(s) && isIdentChar(s[i]) {
			i++
		}
		return s[start:i]
	}
	str := func() error { // at a quote; Grafana replaces variables in strings too
		q, start := s[i], i
		for i++; i < len(s); i++ {
			if s[i] == '\\' && q != '`' {
				i++
				continue
			}
			if s[i] == q {
				i++
				for _, m := range grafanaVariable.FindAllStringSubmatch(s[start:i], -1) {
					out.variables = append(out.variables, m[1])
				}
				return nil
			}
		}
		return fmt.Errorf("unterminated string in %q", expr)
	}
	variable := func() error { // at $
		i++
		if i < len(s) && s[i] == '{' {
			end := strings.IndexByte(s[i:], '}')
			if end < 0 {
				return fmt.Errorf("unterminated ${ in %q", expr)
			}
			name, _, _ := strings.Cut(s[i+1:i+end], ":")
			out.variables = append(out.variables, name)
			i += end + 1
			return nil
		}
		name := ident()
		if name == "" {
			return fmt.Errorf("$ without a variable name in %q", expr)
		}
		out.variables = append(out.variables, name)
		return nil
	}
	// matchers reads {name op "value", ...} and returns the names.
	matchers := func() ([]string, error) {
		i++ // {
		var names []string
		for {
			skipSpace()
			if i >= len(s) {
				return nil, fmt.Errorf("unterminated { in %q", expr)
			}
			switch {
			case s[i] == '}':
				i++
				return names, nil
			case s[i] == ',':
				i++
			case s[i] == '"' || s[i] == '\'' || s[i] == '`':
				if err := str(); err != nil {
					return nil, err
				}
			case s[i] == '$':
				if err := variable(); err != nil {
					return nil, err
				}
			case isIdentStart(s[i]):
				names = append(names, ident())
				skipSpace()
				op := ""
				for _, o := range []string{"=~", "!~", "!=", "="} {
					if strings.HasPrefix(s[i:], o) {
						op = o
						break
					}
				}
				if op == "" {
					return nil, fmt.Errorf("label %s without a matcher (=, !=, =~, !~) in %q", names[len(names)-1], expr)
				}
				i += len(op)
			default:
				return nil, fmt.Errorf("unexpected %q in a label matcher of %q", s[i], expr)
			}
		}
	}
	depth := 0
	for {
		skipSpace()
		if i >= len(s) {
			break
		}
		c := s[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			if err := str(); err != nil {
				return out, err
			}
		case c == '$':
			if err := variable(); err != nil {
				return out, err
			}
		case c == '{':
			labels, err := matchers()
			if err != nil {
				return out, err
			}
			out.selectors = append(out.selectors, promSelector{labels: labels})
		case c == '[':
			// A range or subquery: durations, maybe a variable.
			end := strings.IndexByte(s[i:], ']')
			if end < 0 {
				return out, fmt.Errorf("unterminated [ in %q", expr)
			}
			for _, m := range grafanaVariable.FindAllStringSubmatch(s[i:i+end], -1) {
				out.variables = append(out.variables, m[1])
			}
			i += end + 1
		case c >= '0' && c <= '9' || (c == '.' && i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9'):
			// A number or a duration (5m, 1h30m, 1e3, 0x1f).
			for i < len(s) && (isIdentChar(s[i]) || s[i] == '.') {
				i++
			}
		case isIdentStart(c):
			name := ident()
			skipSpace()
			next := byte(0)
			if i < len(s) {
				next = s[i]
			}
			switch {
			case (name == "group_left" || name == "group_right") && next != '(':
				// without a list: no labels copied
			case promGroupings[name]:
				if next != '(' {
					return out, fmt.Errorf("%s without its label list in %q", name, expr)
				}
				end := strings.IndexByte(s[i:], ')')
				if end < 0 {
					return out, fmt.Errorf("unterminated %s ( in %q", name, expr)
				}
				for _, l := range strings.Split(s[i+1:i+end], ",") {
					if l = strings.TrimSpace(l); l != "" {
						out.grouping = append(out.grouping, l)
					}
				}
				i += end + 1
			case promAggregations[name], promKeywords[name], next == '(':
				// an operator or a function
			default:
				sel := promSelector{metric: name}
				if next == '{' {
					labels, err := matchers()
					if err != nil {
						return out, err
					}
					sel.labels = labels
				}
				out.selectors = append(out.selectors, sel)
			}
		case c == '(':
			depth++
			i++
		case c == ')':
			depth--
			if depth < 0 {
				return out, fmt.Errorf("unbalanced ) in %q", expr)
			}
			i++
		case c == '}' || c == ']':
			return out, fmt.Errorf("unbalanced %c in %q", c, expr)
		default:
			i++ // an operator
		}
	}
	if depth != 0 {
		return out, fmt.Errorf("unbalanced ( in %q", expr)
	}
	if len(out.selectors) == 0 {
		return out, fmt.Errorf("%q reads no metric", expr)
	}
	return out, nil
}

// targetLabels are the labels Prometheus adds to every series it scrapes,
// or that the scrape configuration of docs/metrics.md adds.
var targetLabels = map[string]bool{"job": true, "instance": true, "namespace": true, "pod": true, "node": true, "container": true}

// checkPromQL checks an expression reads only metrics nvmirror exports
// (exported: name → labels), matches only labels they have, and uses only
// the given Grafana variables. It returns the metrics read.
func checkPromQL(t *testing.T, where, expr string, exported map[string][]string, variables map[string]bool) []string {
	t.Helper()
	e, err := parsePromQL(expr)
	if err != nil {
		t.Errorf("%s: %v", where, err)
		return nil
	}
	var read []string
	known := map[string]bool{}
	for k := range targetLabels {
		known[k] = true
	}
	for _, sel := range e.selectors {
		if sel.metric == "" {
			t.Errorf("%s: a selector without a metric name in %q", where, expr)
			continue
		}
		base, labels, ok := sel.metric, exported[sel.metric], false
		if _, ok = exported[base]; !ok {
			for _, suffix := range []string{"_bucket", "_count", "_sum"} {
				if b, cut := strings.CutSuffix(sel.metric, suffix); cut {
					if l, found := exported[b]; found {
						base, labels, ok = b, l, true
						if suffix == "_bucket" {
							labels = append(labels[:len(labels):len(labels)], "le")
						}
					}
				}
			}
		}
		if !ok {
			t.Errorf("%s: %s is not a metric nvmirror exports (%q)", where, sel.metric, expr)
			continue
		}
		read = append(read, base)
		for _, l := range labels {
			known[l] = true
		}
		for _, l := range sel.labels {
			if !targetLabels[l] && !slices.Contains(labels, l) {
				t.Errorf("%s: %s has no label %s (its labels: %v) in %q", where, sel.metric, l, labels, expr)
			}
		}
	}
	for _, l := range e.grouping {
		if !known[l] {
			t.Errorf("%s: groups by %s, a label of none of the metrics it reads, in %q", where, l, expr)
		}
	}
	for _, v := range e.variables {
		if !variables[v] {
			t.Errorf("%s: variable $%s is not defined, in %q", where, v, expr)
		}
	}
	return read
}

// TestPromQLReader: the reader finds the metrics, labels and variables of
// expressions of every shape the dashboard and the rules use, and refuses
// what it cannot read.
func TestPromQLReader(t *testing.T) {
	for _, tc := range []struct {
		expr     string
		want     string // metric{labels} ... | grouping | variables
		wantFail bool
	}{
		{expr: `nvmirror_node_events_queued > 100`, want: `nvmirror_node_events_queued{}; ; `},
		{expr: `max by (volume) (nvmirror_node_volume_degraded_seconds) > 600`, want: `nvmirror_node_volume_degraded_seconds{}; volume; `},
		{expr: `sum without(instance)(rate(nvmirror_node_repairs_total{kind="replace", outcome!~"ok|skipped"}[$__rate_interval]))`,
			want: `nvmirror_node_repairs_total{kind,outcome}; instance; __rate_interval`},
		{expr: "histogram_quantile(0.99, sum by (le) (rate(nvmirror_node_heal_cycle_duration_seconds_bucket{instance=~\"$node\"}[5m] offset 1h)))",
			want: `nvmirror_node_heal_cycle_duration_seconds_bucket{instance}; le; node`},
		{expr: `a / on(storage_node) group_left b{kind='total'} # a comment naming not_a_metric`, want: `a{} b{kind}; storage_node; `},
		{expr: `1 - sum(x) / 1e3 and bool y[1h:5m]`, want: `x{} y{}; ; `},
		{expr: `{__name__="x"}`, want: `{__name__}; ; `},
		{expr: `sum(rate(x[5m])`, wantFail: true},
		{expr: `x{kind}`, wantFail: true},
		{expr: `x{kind="a}`, wantFail: true},
		{expr: `sum by x`, wantFail: true},
		{expr: `42`, wantFail: true},
	} {
		e, err := parsePromQL(tc.expr)
		if tc.wantFail {
			if err == nil {
				t.Errorf("%q read without an error: %+v", tc.expr, e)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.expr, err)
			continue
		}
		var sels []string
		for _, s := range e.selectors {
			sels = append(sels, s.metric+"{"+strings.Join(s.labels, ",")+"}")
		}
		got := strings.Join(sels, " ") + "; " + strings.Join(e.grouping, ",") + "; " + strings.Join(e.variables, ",")
		if got != tc.want {
			t.Errorf("%q read as\n  %s, want\n  %s", tc.expr, got, tc.want)
		}
	}
}
