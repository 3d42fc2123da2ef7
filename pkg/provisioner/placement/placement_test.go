package placement

import (
	"errors"
	"fmt"
	"math/rand"
	"reflect"
	"strings"
	"testing"

	"github.com/nvmirror/nvmirror/pkg/storageclass"
)

const gib = int64(1) << 30

// node builds a healthy node with 100 GiB total, free GiB free and prov GiB
// provisioned.
func node(id, zone, rack string, free, prov int64) Node {
	return Node{ID: id, Zone: zone, Rack: rack, TotalBytes: 100 * gib, AvailableBytes: free * gib, ProvisionedBytes: prov * gib, Healthy: true}
}

func thick(f func(*storageclass.Parameters)) storageclass.Parameters {
	p := storageclass.Defaults()
	p.ProvisioningType = storageclass.Thick
	if f != nil {
		f(&p)
	}
	return p
}

func ids(ns []Node) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = n.ID
	}
	return out
}

func TestChoose(t *testing.T) {
	unhealthy := node("n9", "z1", "r9", 100, 0)
	unhealthy.Healthy = false
	tests := []struct {
		name    string
		nodes   []Node
		req     Request
		want    []string
		wantErr []string
	}{
		{
			name:  "least used first",
			nodes: []Node{node("a", "", "r1", 90, 10), node("b", "", "r2", 90, 5), node("c", "", "r3", 90, 50)},
			req:   Request{SizeBytes: gib, Count: 2, Params: thick(nil)},
			want:  []string{"b", "a"},
		},
		{
			name:  "ties broken by replica count then id",
			nodes: []Node{{ID: "c", Rack: "r3", TotalBytes: 100, AvailableBytes: 100, Replicas: 1, Healthy: true}, {ID: "b", Rack: "r2", TotalBytes: 100, AvailableBytes: 100, Replicas: 1, Healthy: true}, {ID: "a", Rack: "r1", TotalBytes: 100, AvailableBytes: 100, Replicas: 2, Healthy: true}},
			req:   Request{SizeBytes: 10, Count: 3, Params: thick(nil)},
			want:  []string{"b", "c", "a"},
		},
		{
			name: "distinct zones before distinct racks before usage",
			nodes: []Node{
				node("z1r1a", "z1", "r1", 100, 0), node("z1r1b", "z1", "r1", 100, 0), node("z1r2", "z1", "r2", 100, 1),
				node("z2r3", "z2", "r3", 100, 40), node("z3r4", "z3", "r4", 100, 60),
			},
			req:  Request{SizeBytes: gib, Count: 3, Params: thick(nil)},
			want: []string{"z1r1a", "z2r3", "z3r4"},
		},
		{
			name: "racks spread when zones run out",
			nodes: []Node{
				node("a", "z1", "r1", 100, 0), node("b", "z1", "r1", 100, 1), node("c", "z1", "r2", 100, 30), node("d", "z2", "r3", 100, 50),
			},
			req:  Request{SizeBytes: gib, Count: 3, Params: thick(nil)},
			want: []string{"a", "d", "c"},
		},
		{
			name:  "same rack name in two zones is two racks",
			nodes: []Node{node("a", "z1", "r1", 100, 0), node("b", "z2", "r1", 100, 0)},
			req:   Request{SizeBytes: gib, Count: 2, Params: thick(nil)},
			want:  []string{"a", "b"},
		},
		{
			name:  "unlabelled nodes are their own racks",
			nodes: []Node{node("a", "", "", 100, 0), node("b", "", "", 100, 0), node("c", "", "", 100, 0)},
			req:   Request{SizeBytes: gib, Count: 3, Params: thick(nil)},
			want:  []string{"a", "b", "c"},
		},
		{
			name:    "same rack refused by default",
			nodes:   []Node{node("a", "z1", "r1", 100, 0), node("b", "z1", "r1", 100, 0), node("c", "z1", "r2", 100, 0)},
			req:     Request{SizeBytes: 10 * gib, Count: 3, Params: thick(nil)},
			wantErr: []string{"need 3 storage nodes in distinct racks with 10 GiB free", "found 2", "3 eligible node(s) in 2 usable rack(s) (z1/r1, z1/r2)", "sameRackAllowed=true"},
		},
		{
			name:  "same rack allowed when racks run short, new racks first",
			nodes: []Node{node("a", "z1", "r1", 100, 0), node("b", "z1", "r1", 100, 1), node("c", "z1", "r2", 100, 50)},
			req:   Request{SizeBytes: gib, Count: 3, Params: thick(func(p *storageclass.Parameters) { p.SameRackAllowed = true })},
			want:  []string{"a", "c", "b"},
		},
		{
			name:    "same rack allowed still never two on one node",
			nodes:   []Node{node("a", "z1", "r1", 100, 0), node("a", "z1", "r1", 100, 0)},
			req:     Request{SizeBytes: gib, Count: 2, Params: thick(func(p *storageclass.Parameters) { p.SameRackAllowed = true })},
			wantErr: []string{"need 2 storage nodes with 1 GiB free", "found 1", "1 eligible node(s)"},
		},
		{
			name:    "capacity shortfall is named",
			nodes:   []Node{node("n1", "", "r1", 50, 0), node("n2", "", "r2", 50, 0), node("n3", "", "r3", 4, 0)},
			req:     Request{SizeBytes: 10 * gib, Count: 3, Params: thick(nil)},
			wantErr: []string{"need 3 storage nodes in distinct racks with 10 GiB free", "2 usable rack(s) (r1, r2)", "node n3 has only 4 GiB free"},
		},
		{
			name:    "unhealthy node named",
			nodes:   []Node{node("n1", "z1", "r1", 50, 0), unhealthy},
			req:     Request{SizeBytes: gib, Count: 2, Params: thick(nil)},
			wantErr: []string{"node n9 is not healthy"},
		},
		{
			name:    "no nodes at all",
			nodes:   nil,
			req:     Request{SizeBytes: gib, Count: 1, Params: thick(nil)},
			wantErr: []string{"need 1 storage node with 1 GiB free", "no eligible node"},
		},
		{
			name:  "selectors restrict",
			nodes: []Node{node("a", "z1", "r1", 100, 0), node("b", "z2", "r2", 100, 0), node("c", "z2", "r3", 100, 9), node("d", "z2", "r4", 100, 0)},
			req: Request{SizeBytes: gib, Count: 2, Params: thick(func(p *storageclass.Parameters) {
				p.Zones = []string{"z2"}
				p.Racks = []string{"r2", "r3", "r4"}
				p.StorageNodes = []string{"a", "b", "c"}
			})},
			want: []string{"b", "c"},
		},
		{
			name:    "selector rejections named",
			nodes:   []Node{node("a", "z1", "r1", 100, 0), node("b", "z2", "r2", 100, 0), node("c", "z2", "r3", 100, 0)},
			req:     Request{SizeBytes: gib, Count: 1, Params: thick(func(p *storageclass.Parameters) { p.Zones = []string{"z3"}; p.StorageNodes = []string{"a", "b"} })},
			wantErr: []string{`node a zone "z1" is not in zones`, "node c is not in storageNodes"},
		},
		{
			name:  "thin counts provisioned against total",
			nodes: []Node{node("full", "", "r1", 100, 95), node("ok", "", "r2", 100, 80)},
			req:   Request{SizeBytes: 10 * gib, Count: 1, Params: storageclass.Defaults()},
			want:  []string{"ok"},
		},
		{
			name:    "thin refused when overcommitted",
			nodes:   []Node{node("full", "", "r1", 100, 95)},
			req:     Request{SizeBytes: 10 * gib, Count: 1, Params: storageclass.Defaults()},
			wantErr: []string{"node full has 95 GiB provisioned of 100 GiB (overcommit 1)"},
		},
		{
			name:  "thin overcommit ratio",
			nodes: []Node{node("full", "", "r1", 100, 95)},
			req:   Request{SizeBytes: 10 * gib, Count: 1, Params: storageclass.Defaults(), ThinOvercommit: 1.5},
			want:  []string{"full"},
		},
		{
			name:  "thick ignores provisioned, needs available",
			nodes: []Node{node("a", "", "r1", 10, 95), node("b", "", "r2", 9, 0)},
			req:   Request{SizeBytes: 10 * gib, Count: 1, Params: thick(nil)},
			want:  []string{"a"},
		},
		{
			name: "replacement excludes holders and spreads away from kept replicas",
			nodes: []Node{
				node("keep1", "z1", "r1", 100, 0), node("keep2", "z2", "r2", 100, 0), node("gone", "z3", "r3", 100, 0),
				node("z1-other", "z1", "r4", 100, 0), node("z3-other", "z3", "r5", 100, 20), node("z2r2", "z2", "r2", 100, 0),
			},
			req: Request{SizeBytes: gib, Count: 1, Params: thick(nil),
				Existing: []Location{{"keep1", "z1", "r1"}, {"keep2", "z2", "r2"}}, Exclude: []string{"gone"}},
			want: []string{"z3-other"},
		},
		{
			name:  "replacement never reuses a kept replica's rack without sameRackAllowed",
			nodes: []Node{node("keep", "z1", "r1", 100, 0), node("same-rack", "z1", "r1", 100, 0)},
			req: Request{SizeBytes: gib, Count: 1, Params: thick(nil),
				Existing: []Location{{"keep", "z1", "r1"}}},
			wantErr: []string{"need 1 storage node in distinct racks (apart from the 1 holding the volume)", "node keep already holds a replica", "some already used by the volume"},
		},
		{
			name:    "replacement with every node holding the volume",
			nodes:   []Node{node("a", "", "r1", 100, 0), node("b", "", "r2", 100, 0)},
			req:     Request{SizeBytes: gib, Count: 1, Params: thick(nil), Existing: []Location{{NodeID: "a", Rack: "r1"}}, Exclude: []string{"b"}},
			wantErr: []string{"no eligible node", "node a already holds a replica", "node b excluded"},
		},
		{
			name:    "zero count is a caller error",
			nodes:   []Node{node("a", "", "", 100, 0)},
			req:     Request{SizeBytes: gib, Count: 0},
			wantErr: []string{"count 0"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Choose(tc.nodes, tc.req)
			if tc.wantErr != nil {
				if err == nil {
					t.Fatalf("Choose = %v, want error", ids(got))
				}
				if tc.req.Count > 0 && !errors.Is(err, ErrResourceExhausted) {
					t.Errorf("error %v does not wrap ErrResourceExhausted", err)
				}
				for _, s := range tc.wantErr {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q\n does not contain %q", err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Choose: %v", err)
			}
			if !reflect.DeepEqual(ids(got), tc.want) {
				t.Errorf("Choose = %v, want %v", ids(got), tc.want)
			}
			// Deterministic regardless of input order.
			shuffled := append([]Node(nil), tc.nodes...)
			rand.New(rand.NewSource(1)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
			again, err := Choose(shuffled, tc.req)
			if err != nil || !reflect.DeepEqual(ids(again), tc.want) {
				t.Errorf("shuffled input: Choose = %v, %v; want %v", ids(again), err, tc.want)
			}
		})
	}
}

// TestChooseMaximisesDomains checks the greedy choice against brute force on
// random small clusters: no other set of distinct nodes that satisfies the
// hard rules covers more zones, or as many zones and more racks.
func TestChooseMaximisesDomains(t *testing.T) {
	r := rand.New(rand.NewSource(42))
	for iter := 0; iter < 300; iter++ {
		var nodes []Node
		for i := 0; i < 2+r.Intn(6); i++ {
			z := fmt.Sprintf("z%d", r.Intn(3))
			nodes = append(nodes, node(fmt.Sprintf("n%d", i), z, fmt.Sprintf("%s-r%d", z, r.Intn(2)), int64(r.Intn(20)), int64(r.Intn(50))))
		}
		count := 1 + r.Intn(3)
		sameRack := r.Intn(2) == 0
		req := Request{SizeBytes: 5 * gib, Count: count, Params: thick(func(p *storageclass.Parameters) { p.SameRackAllowed = sameRack })}
		got, err := Choose(nodes, req)
		bestZ, bestR, feasible := bruteForce(nodes, req)
		if !feasible {
			if err == nil {
				t.Fatalf("iter %d: Choose = %v, brute force finds no feasible set", iter, ids(got))
			}
			continue
		}
		if err != nil {
			t.Fatalf("iter %d: Choose: %v, but a feasible set exists", iter, err)
		}
		z, rk := domains(got)
		if z != bestZ || rk != bestR {
			t.Fatalf("iter %d: Choose %v covers %d zones %d racks, best is %d/%d", iter, ids(got), z, rk, bestZ, bestR)
		}
	}
}

func domains(ns []Node) (zones, racks int) {
	zs, rs := map[string]bool{}, map[string]bool{}
	for _, n := range ns {
		zs[n.Zone] = true
		rs[rackKey(n.Zone, n.Rack, n.ID)] = true
	}
	return len(zs), len(rs)
}

func bruteForce(nodes []Node, req Request) (bestZ, bestR int, feasible bool) {
	var ok []Node
	for _, n := range nodes {
		if fits, _ := Fits(n, req.SizeBytes, req.Params.ProvisioningType, 0); fits && n.Healthy {
			ok = append(ok, n)
		}
	}
	var rec func(start int, set []Node)
	rec = func(start int, set []Node) {
		if len(set) == req.Count {
			z, r := domains(set)
			if !req.Params.SameRackAllowed && r < len(set) {
				return
			}
			if !feasible || z > bestZ || (z == bestZ && r > bestR) {
				bestZ, bestR, feasible = z, r, true
			}
			return
		}
		for i := start; i < len(ok); i++ {
			rec(i+1, append(set, ok[i]))
		}
	}
	rec(0, nil)
	return
}

func TestErrorListIsBounded(t *testing.T) {
	var nodes []Node
	for i := 0; i < 20; i++ {
		nodes = append(nodes, node(fmt.Sprintf("n%02d", i), "", fmt.Sprintf("r%d", i), 1, 0))
	}
	_, err := Choose(nodes, Request{SizeBytes: 10 * gib, Count: 1, Params: thick(nil)})
	if err == nil || !strings.Contains(err.Error(), "and 12 more") || strings.Contains(err.Error(), "n19") {
		t.Fatalf("error = %v, want 8 reasons and 'and 12 more'", err)
	}
}

func TestFormatBytes(t *testing.T) {
	for in, want := range map[int64]string{0: "0 B", 512: "512 B", 1024: "1 KiB", 10 * gib: "10 GiB", 3 * gib / 2: "1.5 GiB", 1 << 40: "1 TiB"} {
		if got := FormatBytes(in); got != want {
			t.Errorf("FormatBytes(%d) = %q, want %q", in, got, want)
		}
	}
}

func BenchmarkChoose1000Nodes(b *testing.B) {
	r := rand.New(rand.NewSource(7))
	nodes := make([]Node, 1000)
	for i := range nodes {
		z := fmt.Sprintf("z%d", r.Intn(3))
		nodes[i] = node(fmt.Sprintf("n%04d", i), z, fmt.Sprintf("%s-r%d", z, r.Intn(40)), int64(r.Intn(100)), int64(r.Intn(100)))
	}
	req := Request{SizeBytes: 10 * gib, Count: 3, Params: thick(nil)}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Choose(nodes, req); err != nil {
			b.Fatal(err)
		}
	}
}
