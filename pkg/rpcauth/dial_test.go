package rpcauth

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestDial(t *testing.T) {
	p := newTestPKI(t)
	addr := startServer(t, p, testToken, nil)
	tokenFile := filepath.Join(p.dir, "token")
	admin := ClientConfig{CAFile: p.caFile, ServerName: "localhost", CertFile: p.adminCrt, KeyFile: p.adminKey}
	with := func(f func(*ClientConfig)) ClientConfig { c := admin; f(&c); return c }
	read := func(path string) []byte {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	inMemory := ClientConfig{CA: read(p.caFile), ServerName: "localhost", Cert: read(p.adminCrt), Key: read(p.adminKey)}
	for _, tc := range []struct {
		name string
		cfg  ClientConfig
		want codes.Code
	}{
		{"token file", with(func(c *ClientConfig) { c.TokenFile = tokenFile }), codes.OK},
		{"token", with(func(c *ClientConfig) { c.Token = testToken }), codes.OK},
		{"wrong token", with(func(c *ClientConfig) { c.Token = "other" }), codes.Unauthenticated},
		{"no token", admin, codes.Unauthenticated},
		{"in memory with token", func() ClientConfig { c := inMemory; c.Token = testToken; return c }(), codes.OK},
		{"in memory without client certificate", func() ClientConfig { c := inMemory; c.Cert, c.Key, c.Token = nil, nil, testToken; return c }(), codes.Unauthenticated},
		{"no client certificate", with(func(c *ClientConfig) { c.CertFile, c.KeyFile, c.Token = "", "", testToken }), codes.Unauthenticated},
		// The server's certificate names localhost: another name fails TLS.
		{"wrong server name", with(func(c *ClientConfig) { c.ServerName, c.Token = "elsewhere", testToken }), codes.Unavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := check(t, addr, tc.cfg); status.Code(err) != tc.want {
				t.Fatalf("code %v (%v), want %v", status.Code(err), err, tc.want)
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
		{"missing token file", "127.0.0.1:1", ClientConfig{TokenFile: "/nonexistent/token"}, "token"},
		{"client certificate without key", "127.0.0.1:1", ClientConfig{CertFile: "/nonexistent/c.crt"}, "client certificate"},
		{"missing CA", "127.0.0.1:1", ClientConfig{Token: "x", CAFile: "/nonexistent/ca.pem"}, "CA file"},
		{"files and memory", "127.0.0.1:1", ClientConfig{CAFile: "/ca.pem", CA: []byte("x")}, "both as files"},
		{"CA in memory not PEM", "127.0.0.1:1", ClientConfig{CA: []byte("not pem")}, "no PEM certificate"},
		{"client certificate in memory without key", "127.0.0.1:1", ClientConfig{Cert: []byte("x")}, "client certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Dial(tc.addr, tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.errPart) {
				t.Fatalf("err = %v, want one mentioning %q", err, tc.errPart)
			}
		})
	}
}
