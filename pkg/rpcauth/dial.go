package rpcauth

import (
	"errors"
	"fmt"

	"google.golang.org/grpc"
)

// ClientConfig is how a client reaches one of nvmirror's APIs: TLS trust,
// its client certificate (its identity; the servers refuse calls without
// one), and the optional bearer token.
type ClientConfig struct {
	// CAFile is the CA that signed the server's certificate (PEM); empty
	// uses the system roots.
	CAFile string
	// ServerName is expected in the server's certificate; empty uses the
	// dialed host name.
	ServerName string
	// CertFile and KeyFile are the client certificate, re-read when they
	// change.
	CertFile, KeyFile string
	// CA, Cert and Key are the same PEM held in memory (a kubectl plugin
	// reads them from Secrets), used instead of the files: a config sets
	// one kind or the other.
	CA, Cert, Key []byte
	// TokenFile holds the bearer token (Token, if set, wins; tests use
	// it); neither set: no token is sent.
	TokenFile string
	Token     string
}

// Dial returns a connection to addr that speaks TLS with the client
// certificate and sends the bearer token, if any, on every call. Connecting is lazy (gRPC connects on the first call),
// so an unreachable server shows as Unavailable on that call.
func Dial(addr string, c ClientConfig, extra ...grpc.DialOption) (*grpc.ClientConn, error) {
	if addr == "" {
		return nil, errors.New("no server address")
	}
	token := c.Token
	if token == "" && c.TokenFile != "" {
		t, err := LoadToken(c.TokenFile)
		if err != nil {
			return nil, err
		}
		token = t
	}
	creds, err := c.credentials()
	if err != nil {
		return nil, err
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(TokenCredentials{Token: token}))
	}
	opts = append(opts, extra...)
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return conn, nil
}

// credentials are the TLS material from the files or from memory.
func (c ClientConfig) credentials() (*ClientCredentials, error) {
	files := c.CAFile != "" || c.CertFile != "" || c.KeyFile != ""
	memory := len(c.CA) > 0 || len(c.Cert) > 0 || len(c.Key) > 0
	switch {
	case files && memory:
		return nil, errors.New("TLS material given both as files (CAFile, CertFile, KeyFile) and in memory (CA, Cert, Key): give one")
	case memory:
		return NewMemoryClientCredentials(c.CA, c.ServerName, c.Cert, c.Key)
	}
	return NewClientCredentials(c.CAFile, c.ServerName, c.CertFile, c.KeyFile)
}
