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

// startServer runs a TLS gRPC server with the health service behind the
// token interceptors on a loopback port.
func startServer(t *testing.T) (addr, caFile string) {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile := rpcauthtest.NewCert(t).WriteFiles(t, dir)
	tlsCfg, err := ServerTLSConfig(certFile, keyFile, "")
	if err != nil {
		t.Fatal(err)
	}
	auth, err := NewTokenAuth(testToken)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(append(auth.ServerOptions(), grpc.Creds(credentials.NewTLS(tlsCfg)))...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String(), certFile
}

func dial(t *testing.T, addr, caFile string, opts ...grpc.DialOption) healthpb.HealthClient {
	t.Helper()
	tlsCfg, err := ClientTLSConfig(caFile, "localhost", "", "")
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

func TestTokenOverTLS(t *testing.T) {
	addr, ca := startServer(t)
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
			c := dial(t, addr, ca, tc.opts...)
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
	addr, _ := startServer(t)
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

func TestServerTLSConfigErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := ServerTLSConfig(filepath.Join(dir, "no.crt"), filepath.Join(dir, "no.key"), ""); err == nil {
		t.Fatal("missing cert: no error")
	}
	cert, key := rpcauthtest.NewCert(t).WriteFiles(t, dir)
	bad := filepath.Join(dir, "bad-ca.pem")
	if err := os.WriteFile(bad, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ServerTLSConfig(cert, key, bad); err == nil {
		t.Fatal("CA file without PEM: no error")
	}
	cfg, err := ServerTLSConfig(cert, key, cert)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ClientCAs == nil {
		t.Fatal("client CA set but ClientCAs nil")
	}
}

func insecureCreds() credentials.TransportCredentials { return insecure.NewCredentials() }
