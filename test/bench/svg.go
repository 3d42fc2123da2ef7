package bench

import (
	"fmt"
	"html"
	"math"
	"strconv"
	"strings"
)

// chartColors are the bars' colours, one per setup after the floor.
var chartColors = []string{"#1f77b4", "#6baed6", "#d62728", "#2ca02c", "#9467bd"}

// SVG draws the report's ratios as grouped horizontal bars: a group per
// figure that has a ratio, a bar per setup other than the floor, and a
// dashed line at 1 (the floor for throughput and latency; for the resync
// rows, the bytes written during the outage and the floor's time to write
// them), on a logarithmic axis. Hand-written SVG: no dependency, diffable in git.
func (r Report) SVG() []byte {
	var setups []Setup
	for _, s := range r.Setups {
		if s.Key != Floor {
			setups = append(setups, s)
		}
	}
	type group struct {
		label  string
		better string
		ratios []float64 // per setup; NaN when absent
	}
	var groups []group
	maxRatio := 1.0
	for _, rw := range rows {
		if rw.kind == absolute {
			continue
		}
		g := group{label: rw.label, better: "higher is better"}
		if rw.kind != higherBetter {
			g.better = "lower is better"
		}
		have := false
		for _, s := range setups {
			q, ok := r.ratio(rw, s)
			if !ok {
				q = math.NaN()
			} else {
				have = true
				maxRatio = math.Max(maxRatio, q)
			}
			g.ratios = append(g.ratios, q)
		}
		if have {
			groups = append(groups, g)
		}
	}
	// A logarithmic axis, bars drawn from 1× outwards: the ratios span
	// from hundredths to hundreds, and 0.5× and 2× are the same distance
	// from the floor.
	minRatio := 1.0
	for _, g := range groups {
		for _, q := range g.ratios {
			if q > 0 {
				minRatio = math.Min(minRatio, q)
			}
		}
	}
	lo := math.Min(-1, math.Floor(math.Log10(minRatio)))
	hi := math.Max(1, math.Ceil(math.Log10(maxRatio)))
	const (
		left, right, top = 300.0, 40.0, 70.0
		plotW            = 520.0
		barH, barGap     = 14.0, 2.0
		groupGap         = 16.0
	)
	groupH := float64(len(setups))*(barH+barGap) + groupGap
	height := top + float64(len(groups))*groupH + 50
	width := left + plotW + right
	x := func(v float64) float64 { return left + plotW*(math.Log10(v)-lo)/(hi-lo) }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="10" y="20" font-size="14" font-weight="bold">nvmirror data path vs DRBD: ratio to one NVMe/TCP namespace (same run)</text>`+"\n")
	fmt.Fprintf(&b, `<text x="10" y="38" fill="#555">kernel %s, qemu TCG 2 vCPU, loopback; %s run; logarithmic scale</text>`+"\n", html.EscapeString(r.Kernel), html.EscapeString(r.Mode))
	// Legend.
	lx := 10.0
	for i, s := range setups {
		fmt.Fprintf(&b, `<rect x="%.0f" y="48" width="12" height="12" fill="%s"/><text x="%.0f" y="58">%s</text>`+"\n", lx, chartColors[i%len(chartColors)], lx+16, html.EscapeString(s.Label))
		lx += 24 + 7*float64(len(s.Label))
	}
	// Grid lines at 1, 3 and 10 of every decade.
	bottom := top + float64(len(groups))*groupH
	for e := lo; e <= hi+1e-9; e++ {
		for _, m := range []float64{1, 3} {
			v := m * math.Pow(10, e)
			if math.Log10(v) > hi+1e-9 {
				continue
			}
			stroke, dash := "#ddd", ""
			if math.Abs(v-1) < 1e-9 {
				stroke, dash = "#333", ` stroke-dasharray="4 3"`
			}
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="%s"%s/>`+"\n", x(v), top-4, x(v), bottom, stroke, dash)
			fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle" fill="#555">%s×</text>`+"\n", x(v), bottom+16, strconv.FormatFloat(v, 'g', 3, 64))
		}
	}
	for gi, g := range groups {
		y0 := top + float64(gi)*groupH
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end">%s</text>`+"\n", left-8, y0+barH, html.EscapeString(g.label))
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end" fill="#777" font-size="10">%s</text>`+"\n", left-8, y0+barH+13, g.better)
		for i, q := range g.ratios {
			y := y0 + float64(i)*(barH+barGap)
			if math.IsNaN(q) {
				continue
			}
			x0, x1 := x(1), x(q)
			anchor, tx := "start", x1+3
			if q < 1 {
				x0, x1 = x1, x0
				anchor, tx = "end", x0-3
			}
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.0f" fill="%s"/>`+"\n", x0, y, math.Max(x1-x0, 1), barH, chartColors[i%len(chartColors)])
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="10" text-anchor="%s">%.2f</text>`+"\n", tx, y+barH-3, anchor, q)
		}
	}
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" fill="#555" font-size="10">dashed line: 1× (the floor; for resync: the bytes written during the outage, the floor's time to write them)</text>`+"\n", left-290, bottom+36)
	b.WriteString("</svg>\n")
	return []byte(b.String())
}
