package rpcauthtest

import (
	"crypto/tls"
	"testing"
)

// A client trusting the certificate completes a handshake with a server
// serving it, for each name the certificate was made for.
func TestCertHandshake(t *testing.T) {
	c := NewCert(t, "127.0.0.2", "storage-1")
	if _, err := tls.X509KeyPair(c.CertPEM, c.KeyPEM); err != nil {
		t.Fatalf("PEM pair: %v", err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", c.ServerTLS())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			_ = conn.(*tls.Conn).Handshake()
			conn.Close()
		}
	}()
	for _, name := range []string{"localhost", "127.0.0.1", "127.0.0.2", "storage-1"} {
		cfg := c.ClientTLS()
		cfg.ServerName = name
		conn, err := tls.Dial("tcp", ln.Addr().String(), cfg)
		if err != nil {
			t.Errorf("handshake as %s: %v", name, err)
			continue
		}
		conn.Close()
	}
	cfg := c.ClientTLS()
	cfg.ServerName = "elsewhere"
	if conn, err := tls.Dial("tcp", ln.Addr().String(), cfg); err == nil {
		conn.Close()
		t.Error("handshake accepted a name the certificate does not carry")
	}
}
