package rpcauth

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

func cert(cn string, orgs ...string) *x509.Certificate {
	return &x509.Certificate{Subject: pkix.Name{CommonName: cn, Organization: orgs}}
}

func TestIdentityFromCertificate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cert    *x509.Certificate
		want    Identity
		errPart string
	}{
		{"node", cert("worker-1", "node"), Identity{Name: "worker-1", Roles: []Role{RoleNode}}, ""},
		{"dotted node name", cert("ip-10-0-0-1.ec2.internal", "node"), Identity{Name: "ip-10-0-0-1.ec2.internal", Roles: []Role{RoleNode}}, ""},
		{"controller and node, sorted, once", cert("all-in-one", "node", "controller", "node"), Identity{Name: "all-in-one", Roles: []Role{RoleController, RoleNode}}, ""},
		{"admin", cert("alice", "admin"), Identity{Name: "alice", Roles: []Role{RoleAdmin}}, ""},
		{"no certificate", nil, Identity{}, "no certificate"},
		{"no CN", cert("", "node"), Identity{}, "empty name"},
		{"upper case", cert("Worker-1", "node"), Identity{}, "lowercase"},
		{"slash (would split a node ID)", cert("a/b", "node"), Identity{}, "lowercase"},
		{"space", cert("worker 1", "node"), Identity{}, "lowercase"},
		{"leading dash", cert("-w", "node"), Identity{}, "inside a label"},
		{"empty label", cert("a..b", "node"), Identity{}, "1 to 63"},
		{"long label", cert(strings.Repeat("a", 64), "node"), Identity{}, "1 to 63"},
		{"too long", cert(strings.Repeat("a.", 127)+"a", "node"), Identity{}, "at most 253"},
		{"no role", cert("worker-1"), Identity{}, "names no role"},
		{"unknown role", cert("worker-1", "node", "system:masters"), Identity{}, `"system:masters" is not a role`},
		{"role case matters", cert("worker-1", "Node"), Identity{}, `"Node" is not a role`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := IdentityFromCertificate(tc.cert)
			if tc.errPart != "" {
				if !errors.Is(err, ErrNoIdentity) || !strings.Contains(err.Error(), tc.errPart) {
					t.Fatalf("err = %v, want ErrNoIdentity saying %q", err, tc.errPart)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Name != tc.want.Name || !slices.Equal(got.Roles, tc.want.Roles) {
				t.Fatalf("identity %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestPolicy(t *testing.T) {
	ctx := t.Context()
	inScope := func(_ context.Context, id Identity, method string, req any) error {
		if req == id.Name {
			return nil
		}
		return Denied(id, method, fmt.Sprintf("%v is not its own", req))
	}
	p := Policy{
		"/open":   {Roles: []Role{RoleAdmin, RoleController}},
		"/scoped": {Roles: []Role{RoleAdmin}, Scoped: map[Role]ScopeCheck{RoleNode: inScope}},
	}
	node := Identity{Name: "w1", Roles: []Role{RoleNode}}
	both := Identity{Name: "w1", Roles: []Role{RoleController, RoleNode}}
	admin := Identity{Name: "ops", Roles: []Role{RoleAdmin}}
	for _, tc := range []struct {
		name    string
		id      Identity
		method  string
		req     any
		errPart string // "": allowed
	}{
		{"admin open", admin, "/open", nil, ""},
		{"node open", node, "/open", nil, "w1 (node) may not call /open: allowed to controller, admin"},
		{"controller+node open", both, "/open", nil, ""},
		{"node in scope", node, "/scoped", "w1", ""},
		{"node out of scope", node, "/scoped", "w2", "w1 (node) may not call /scoped: w2 is not its own"},
		{"admin any scope", admin, "/scoped", "w2", ""},
		{"unknown method", admin, "/other", nil, "in no role's table"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := p.Authorize(ctx, tc.id, tc.method, tc.req)
			if tc.errPart == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrPermissionDenied) || !strings.Contains(err.Error(), tc.errPart) {
				t.Fatalf("err = %v, want permission denied saying %q", err, tc.errPart)
			}
		})
	}
}

// FuzzIdentityFromCertificate: any subject either gives an identity whose
// name passes ValidateName and whose roles are known, sorted and distinct,
// or ErrNoIdentity; never a panic.
func FuzzIdentityFromCertificate(f *testing.F) {
	f.Add("worker-1", "node", "")
	f.Add("a.b", "controller", "node")
	f.Add("", "admin", "")
	f.Add("x/y", "node", "node")
	f.Add("w", "storage-node", "root")
	f.Fuzz(func(t *testing.T, cn, o1, o2 string) {
		var orgs []string
		for _, o := range []string{o1, o2} {
			if o != "" {
				orgs = append(orgs, o)
			}
		}
		id, err := IdentityFromCertificate(cert(cn, orgs...))
		if err != nil {
			if !errors.Is(err, ErrNoIdentity) {
				t.Fatalf("error %v is not ErrNoIdentity", err)
			}
			return
		}
		if id.Name != cn || ValidateName(cn) != nil || strings.ContainsAny(cn, "/ \x00") {
			t.Fatalf("identity %+v from CN %q", id, cn)
		}
		if len(id.Roles) == 0 || !slices.IsSorted(id.Roles) || len(slices.Compact(slices.Clone(id.Roles))) != len(id.Roles) {
			t.Fatalf("roles %v", id.Roles)
		}
		for _, r := range id.Roles {
			if !slices.Contains(Roles, r) {
				t.Fatalf("unknown role %q accepted", r)
			}
		}
	})
}
