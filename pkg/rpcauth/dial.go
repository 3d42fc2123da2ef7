package rpcauth

import (
	"crypto/x509"
	"errors"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// ClientConfig is how a client reaches one of nvmirror's APIs: TLS trust,
// an optional client certificate, and the bearer token.
type ClientConfig struct {
	// CAFile is the CA that signed the server's certificate (PEM); empty
	// uses the system roots. CA is the same in memory (read from a
	// Kubernetes Secret); CAFile wins when both are set.
	CAFile string
	CA     []byte
	// ServerName is expected in the server's certificate; empty uses the
	// dialed host name.
	ServerName string
	// CertFile and KeyFile are the client certificate for mutual TLS.
	CertFile, KeyFile string
	// TokenFile holds the bearer token (Token, if set, wins; tests use it).
	TokenFile string
	Token     string
}

// Dial returns a connection to addr that speaks TLS and sends the bearer
// token on every call. Connecting is lazy (gRPC connects on the first call),
// so an unreachable server shows as Unavailable on that call.
func Dial(addr string, c ClientConfig, extra ...grpc.DialOption) (*grpc.ClientConn, error) {
	if addr == "" {
		return nil, errors.New("no server address")
	}
	token := c.Token
	if token == "" {
		t, err := LoadToken(c.TokenFile)
		if err != nil {
			return nil, err
		}
		token = t
	}
	tlsCfg, err := ClientTLSConfig(c.CAFile, c.ServerName, c.CertFile, c.KeyFile)
	if err != nil {
		return nil, err
	}
	if c.CAFile == "" && len(c.CA) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(c.CA) {
			return nil, errors.New("the CA holds no PEM certificate")
		}
		tlsCfg.RootCAs = pool
	}
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)),
		grpc.WithPerRPCCredentials(TokenCredentials{Token: token}),
	}, extra...)
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return conn, nil
}
