package rpcauth

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

func TestDial(t *testing.T) {
	addr, ca := startServer(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cfg  ClientConfig
		want codes.Code
	}{
		{"token file", ClientConfig{CAFile: ca, ServerName: "localhost", TokenFile: tokenFile}, codes.OK},
		{"token", ClientConfig{CAFile: ca, ServerName: "localhost", Token: testToken}, codes.OK},
		{"wrong token", ClientConfig{CAFile: ca, ServerName: "localhost", Token: "other"}, codes.Unauthenticated},
		// The server's certificate names localhost: another name fails TLS.
		{"wrong server name", ClientConfig{CAFile: ca, ServerName: "elsewhere", Token: testToken}, codes.Unavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := Dial(addr, tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
			if got := status.Code(err); got != tc.want {
				t.Fatalf("code %v (%v), want %v", got, err, tc.want)
			}
		})
	}
}

func TestDialErrors(t *testing.T) {
	for _, tc := range []struct {
		name, addr string
		cfg        ClientConfig
		errPart    string
	}{
		{"no address", "", ClientConfig{Token: "x"}, "no server address"},
		{"no token", "127.0.0.1:1", ClientConfig{}, "token"},
		{"missing CA", "127.0.0.1:1", ClientConfig{Token: "x", CAFile: "/nonexistent/ca.pem"}, "CA file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Dial(tc.addr, tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.errPart) {
				t.Fatalf("err = %v, want one mentioning %q", err, tc.errPart)
			}
		})
	}
}
