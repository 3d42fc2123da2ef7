package rpcauth

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/pkg/rpcauth/rpcauthtest"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

const testToken = "s3cret-token"

// healthCheck and healthWatch are the methods the test servers serve.
const (
	healthCheck = "/grpc.health.v1.Health/Check"
	healthWatch = "/grpc.health.v1.Health/Watch"
)

// testPKI is a CA, a server certificate for localhost and the files of
// both, for a test server's and its clients' configuration.
type testPKI struct {
	ca                 *rpcauthtest.CA
	dir                string
	caFile             string
	srvCert, srvKey    string
	adminCrt, adminKey string
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	p := &testPKI{ca: rpcauthtest.NewCA(t), dir: t.TempDir()}
	p.caFile = p.ca.WriteCA(t, p.dir)
	p.srvCert, p.srvKey = p.ca.Server(t, "test-server").WriteNamed(t, p.dir, "server")
	p.adminCrt, p.adminKey = p.ca.Client(t, "ops", "admin").WriteNamed(t, p.dir, "admin")
	return p
}

// client writes c's files and returns a ClientConfig using them.
func (p *testPKI) client(t *testing.T, name string, c rpcauthtest.Cert) ClientConfig {
	t.Helper()
	crt, key := c.WriteNamed(t, p.dir, name)
	return ClientConfig{CAFile: p.caFile, ServerName: "localhost", CertFile: crt, KeyFile: key}
}

// testPolicy lets admins check health and watch it, and nodes only check.
var testPolicy = Policy{
	healthCheck: {Roles: []Role{RoleAdmin, RoleNode}},
	healthWatch: {Roles: []Role{RoleAdmin}},
}

// startServer runs a TLS gRPC server with the health service behind
// Server's interceptors on a loopback port; token "" runs it without one.
func startServer(t *testing.T, p *testPKI, token string, now func() time.Time) string {
	t.Helper()
	cfg := ServerConfig{CertFile: p.srvCert, KeyFile: p.srvKey, ClientCAFile: p.caFile, Authorizer: testPolicy, Now: now}
	if token != "" {
		cfg.TokenFile = filepath.Join(p.dir, "token")
		if err := os.WriteFile(cfg.TokenFile, []byte(token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(s.ServerOptions()...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// dial connects as the admin with opts added (a token, usually).
func dial(t *testing.T, addr string, p *testPKI, opts ...grpc.DialOption) healthpb.HealthClient {
	t.Helper()
	tlsCfg, err := ClientTLSConfig(p.caFile, "localhost", p.adminCrt, p.adminKey)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, append(opts, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return healthpb.NewHealthClient(conn)
}

// TestTokenOverTLS: with a token configured, a caller with a good
// certificate still needs the token.
func TestTokenOverTLS(t *testing.T) {
	p := newTestPKI(t)
	addr := startServer(t, p, testToken, nil)
	for _, tc := range []struct {
		name string
		opts []grpc.DialOption
		want codes.Code
	}{
		{name: "valid token", opts: []grpc.DialOption{grpc.WithPerRPCCredentials(TokenCredentials{Token: testToken})}, want: codes.OK},
		{name: "missing token", want: codes.Unauthenticated},
		{name: "wrong token", opts: []grpc.DialOption{grpc.WithPerRPCCredentials(TokenCredentials{Token: "s3cret-tokeN"})}, want: codes.Unauthenticated},
		{name: "token prefix", opts: []grpc.DialOption{grpc.WithPerRPCCredentials(TokenCredentials{Token: "s3cret"})}, want: codes.Unauthenticated},
		{name: "empty token", opts: []grpc.DialOption{grpc.WithPerRPCCredentials(TokenCredentials{Token: ""})}, want: codes.Unauthenticated},
		{name: "no bearer scheme", opts: []grpc.DialOption{grpc.WithPerRPCCredentials(rawCreds{MetadataKey: testToken})}, want: codes.Unauthenticated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, addr, p, tc.opts...)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := c.Check(ctx, &healthpb.HealthCheckRequest{})
			if got := status.Code(err); got != tc.want {
				t.Fatalf("unary Check: code %v (%v), want %v", got, err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error echoes the token: %v", err)
			}
			// Stream: the interceptor refuses before the first message.
			st, err := c.Watch(ctx, &healthpb.HealthCheckRequest{})
			if err == nil {
				_, err = st.Recv()
			}
			if got := status.Code(err); got != tc.want {
				t.Fatalf("stream Watch: code %v (%v), want %v", got, err, tc.want)
			}
		})
	}
}

// rawCreds sends arbitrary metadata (to test a token without "Bearer ").
type rawCreds map[string]string

func (r rawCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return r, nil
}
func (rawCreds) RequireTransportSecurity() bool { return true }

func TestPlaintextClientRefused(t *testing.T) {
	addr := startServer(t, newTestPKI(t), "", nil)
	// A client that does not speak TLS gets no answer (Unavailable), so the
	// token could not have been sent in clear text anyway.
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecureCreds()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if status.Code(err) == codes.OK {
		t.Fatal("plaintext call succeeded against a TLS server")
	}
}

func TestTokenCredentialsRequireTLS(t *testing.T) {
	if !(TokenCredentials{}).RequireTransportSecurity() {
		t.Fatal("TokenCredentials must require transport security")
	}
}

func TestNewTokenAuthRejectsEmpty(t *testing.T) {
	if _, err := NewTokenAuth(""); !errors.Is(err, ErrEmptyToken) {
		t.Fatalf("err = %v, want ErrEmptyToken", err)
	}
}

func TestLoadToken(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "token")
	if err := os.WriteFile(p, []byte("  abc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if tok, err := LoadToken(p); err != nil || tok != "abc" {
		t.Fatalf("LoadToken = %q, %v; want abc", tok, err)
	}
	if err := os.WriteFile(p, []byte("\n \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadToken(p); !errors.Is(err, ErrEmptyToken) {
		t.Fatalf("whitespace-only token: err = %v, want ErrEmptyToken", err)
	}
	if _, err := LoadToken(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("missing token file: no error")
	}
}

func TestNewServerErrors(t *testing.T) {
	p := newTestPKI(t)
	bad := filepath.Join(p.dir, "bad-ca.pem")
	if err := os.WriteFile(bad, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		cfg     ServerConfig
		errPart string
	}{
		{"no client CA", ServerConfig{CertFile: p.srvCert, KeyFile: p.srvKey, Authorizer: testPolicy}, "client CA file is required"},
		{"client CA not PEM", ServerConfig{CertFile: p.srvCert, KeyFile: p.srvKey, ClientCAFile: bad, Authorizer: testPolicy}, "no PEM certificate"},
		{"missing cert", ServerConfig{CertFile: filepath.Join(p.dir, "no.crt"), KeyFile: p.srvKey, ClientCAFile: p.caFile, Authorizer: testPolicy}, "no.crt"},
		{"no authorizer", ServerConfig{CertFile: p.srvCert, KeyFile: p.srvKey, ClientCAFile: p.caFile}, "authorizer"},
		{"empty token", ServerConfig{CertFile: p.srvCert, KeyFile: p.srvKey, ClientCAFile: p.caFile, Authorizer: testPolicy, TokenFile: bad + ".none"}, "token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewServer(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.errPart) {
				t.Fatalf("err = %v, want one mentioning %q", err, tc.errPart)
			}
		})
	}
}

func insecureCreds() credentials.TransportCredentials { return insecure.NewCredentials() }
