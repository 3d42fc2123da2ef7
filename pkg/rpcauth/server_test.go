package rpcauth

import (
	"context"
	"crypto/tls"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/pkg/rpcauth/rpcauthtest"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// check calls Health.Check on a new connection made with c.
func check(t *testing.T, addr string, c ClientConfig) error {
	t.Helper()
	return onNewConn(t, addr, c, func(ctx context.Context, h healthpb.HealthClient) error {
		_, err := h.Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	})
}

// watch opens Health.Watch on a new connection made with c and returns
// the error of its first message (a stream is refused there).
func watch(t *testing.T, addr string, c ClientConfig) error {
	t.Helper()
	return onNewConn(t, addr, c, func(ctx context.Context, h healthpb.HealthClient) error {
		st, err := h.Watch(ctx, &healthpb.HealthCheckRequest{})
		if err == nil {
			_, err = st.Recv()
		}
		return err
	})
}

func onNewConn(t *testing.T, addr string, c ClientConfig, call func(context.Context, healthpb.HealthClient) error) error {
	t.Helper()
	conn, err := Dial(addr, c)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return call(ctx, healthpb.NewHealthClient(conn))
}

// TestServerRefusesCertificates: every way a client certificate can be
// wrong is Unauthenticated with a message saying what, before any handler
// runs; a good certificate whose role the table does not allow is
// PermissionDenied naming the caller.
func TestServerRefusesCertificates(t *testing.T) {
	p := newTestPKI(t)
	addr := startServer(t, p, "", nil)
	foreign := rpcauthtest.NewCA(t)
	for _, tc := range []struct {
		name    string
		cert    *rpcauthtest.Cert // nil: none
		want    codes.Code
		errPart string
	}{
		{"admin", ptr(p.ca.Client(t, "ops", "admin")), codes.OK, ""},
		{"node may check", ptr(p.ca.Client(t, "worker-1", "node")), codes.OK, ""},
		{"no certificate", nil, codes.Unauthenticated, "no client certificate"},
		{"foreign CA", ptr(foreign.Client(t, "ops", "admin")), codes.Unauthenticated, "unknown authority"},
		{"expired", ptr(p.ca.Issue(t, rpcauthtest.Leaf{Name: "ops", Roles: []string{"admin"}, Client: true,
			NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})), codes.Unauthenticated, "expired"},
		{"not yet valid", ptr(p.ca.Issue(t, rpcauthtest.Leaf{Name: "ops", Roles: []string{"admin"}, Client: true,
			NotBefore: time.Now().Add(time.Hour), NotAfter: time.Now().Add(48 * time.Hour)})), codes.Unauthenticated, "expired or is not yet valid"},
		// A storage node's server certificate is not a client's.
		{"server certificate", ptr(p.ca.Issue(t, rpcauthtest.Leaf{Name: "sn1", Roles: []string{"storage-node"}, Hosts: []string{"sn1"}, Server: true})),
			codes.Unauthenticated, "incompatible key usage"},
		{"no role", ptr(p.ca.Client(t, "ops")), codes.Unauthenticated, "names no role"},
		{"unknown role", ptr(p.ca.Client(t, "ops", "root")), codes.Unauthenticated, `"root" is not a role`},
		{"provisioner not in table", ptr(p.ca.Client(t, "prov", "provisioner")), codes.PermissionDenied, "prov (provisioner) may not call /grpc.health.v1.Health/Check: allowed to node, admin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ClientConfig{CAFile: p.caFile, ServerName: "localhost"}
			if tc.cert != nil {
				c = p.client(t, strings.ReplaceAll(tc.name, " ", "-"), *tc.cert)
			}
			err := check(t, addr, c)
			if got := status.Code(err); got != tc.want {
				t.Fatalf("code %v (%v), want %v", got, err, tc.want)
			}
			if tc.errPart != "" && !strings.Contains(err.Error(), tc.errPart) {
				t.Fatalf("err = %v, want it to say %q", err, tc.errPart)
			}
		})
	}
}

// TestServerChecksStreams: a stream is authorized by the same table before
// its first message.
func TestServerChecksStreams(t *testing.T) {
	p := newTestPKI(t)
	addr := startServer(t, p, "", nil)
	for _, tc := range []struct {
		name string
		cert rpcauthtest.Cert
		want codes.Code
	}{
		{"admin", p.ca.Client(t, "ops", "admin"), codes.OK},
		{"node", p.ca.Client(t, "worker-1", "node"), codes.PermissionDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := watch(t, addr, p.client(t, tc.name, tc.cert)); status.Code(err) != tc.want {
				t.Fatalf("code %v (%v), want %v", status.Code(err), err, tc.want)
			}
		})
	}
}

// TestServerClock: certificates are checked against the server's clock at
// each call, so one that expires while its connection is open is refused
// from then on.
func TestServerClock(t *testing.T) {
	p := newTestPKI(t)
	now := time.Now()
	clock := func() time.Time { return now }
	addr := startServer(t, p, "", func() time.Time { return clock() })
	conn, err := Dial(addr, ClientConfig{CAFile: p.caFile, ServerName: "localhost", CertFile: p.adminCrt, KeyFile: p.adminKey})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := healthpb.NewHealthClient(conn)
	ctx := context.Background()
	if _, err := c.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	clock = func() time.Time { return now.Add(48 * time.Hour) }
	if _, err := c.Check(ctx, &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("after expiry: %v, want Unauthenticated", err)
	}
}

// replace writes c over certFile/keyFile the way a Kubernetes Secret update
// or cert-manager does: new files renamed into place.
func replace(t *testing.T, c rpcauthtest.Cert, certFile, keyFile string) {
	t.Helper()
	for _, f := range []struct {
		path string
		data []byte
	}{{keyFile, c.KeyPEM}, {certFile, c.CertPEM}} {
		tmp := f.path + ".new"
		if err := os.WriteFile(tmp, f.data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, f.path); err != nil {
			t.Fatal(err)
		}
	}
}

// serverSerial makes a new connection and returns the serial number of the
// certificate the server presented.
func serverSerial(t *testing.T, addr string, cfg *tls.Config) string {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, cfg.Clone())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// TestRotationWithoutRestart: the server's certificate, a client's
// certificate and both trust bundles are re-read when their files change;
// the next connection (for the client CA: the next call) uses the new ones.
func TestRotationWithoutRestart(t *testing.T) {
	p := newTestPKI(t)
	addr := startServer(t, p, "", nil)

	t.Run("server certificate", func(t *testing.T) {
		cfg, err := ClientTLSConfig(p.caFile, "localhost", p.adminCrt, p.adminKey)
		if err != nil {
			t.Fatal(err)
		}
		before := serverSerial(t, addr, cfg)
		next := p.ca.Server(t, "test-server")
		replace(t, next, p.srvCert, p.srvKey)
		if got, want := serverSerial(t, addr, cfg), next.TLS.Leaf.SerialNumber.String(); got != want || got == before {
			t.Fatalf("after rotation the server presents serial %s, want the new %s (old %s)", got, want, before)
		}
	})

	t.Run("client certificate", func(t *testing.T) {
		// Rotated from a certificate of another name, so the server's
		// answer tells which one it saw: the node's is not allowed Watch.
		c := p.client(t, "rotating", p.ca.Client(t, "ops", "admin"))
		if err := watch(t, addr, c); err != nil {
			t.Fatal(err)
		}
		replace(t, p.ca.Client(t, "worker-1", "node"), c.CertFile, c.KeyFile)
		if err := watch(t, addr, c); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "worker-1 (node)") {
			t.Fatalf("after rotation: %v, want PermissionDenied for worker-1 (node)", err)
		}
	})

	t.Run("CA bundles", func(t *testing.T) {
		// A CA rotation: a new CA issues the server's and the admin's
		// certificates, both bundles hold only the new CA. The server
		// refuses the old admin certificate on the next call; the
		// client trusts the new server certificate on the next connection.
		old := ClientConfig{CAFile: p.caFile, ServerName: "localhost", CertFile: p.adminCrt, KeyFile: p.adminKey}
		if err := check(t, addr, old); err != nil {
			t.Fatal(err)
		}
		next := rpcauthtest.NewCA(t)
		replace(t, next.Server(t, "test-server"), p.srvCert, p.srvKey)
		if err := os.WriteFile(p.caFile+".new", next.CertPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(p.caFile+".new", p.caFile); err != nil {
			t.Fatal(err)
		}
		if err := check(t, addr, old); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("old admin certificate after the CA rotation: %v, want Unauthenticated", err)
		}
		if err := check(t, addr, p.client(t, "new-admin", next.Client(t, "ops", "admin"))); err != nil {
			t.Fatalf("new admin certificate after the CA rotation: %v", err)
		}
	})
}

// TestReloadKeepsLastGood: a change that does not load (the certificate
// replaced, its key not yet) keeps the loaded pair.
func TestReloadKeepsLastGood(t *testing.T) {
	p := newTestPKI(t)
	kp, err := keyPairFiles(p.srvCert, p.srvKey)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := kp.get()
	if err := os.WriteFile(p.srvCert, p.ca.Server(t, "other").CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := kp.get()
	if err != nil || got != first {
		t.Fatalf("half-rotated pair: got %p, %v; want the first pair %p", got, err, first)
	}
}

func ptr[T any](v T) *T { return &v }
