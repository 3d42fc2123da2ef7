// Package rpcauth secures nvmirror's internal gRPC APIs (provisioner ↔
// target agents): TLS configuration from PEM files, and a shared bearer token
// checked by server interceptors and sent by client per-RPC credentials.
//
// The token travels in the "authorization" metadata as "Bearer <token>". The
// server compares it in constant time (on SHA-256 digests, so neither the
// content nor the length leaks through timing) and refuses a missing or wrong
// token with codes.Unauthenticated before the handler runs. The token is never
// logged or echoed in an error.
package rpcauth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// MetadataKey is the gRPC metadata key carrying the token.
const MetadataKey = "authorization"

const bearerPrefix = "Bearer "

// ErrEmptyToken is returned for a token that is empty after trimming
// whitespace: an empty token would make every call pass.
var ErrEmptyToken = errors.New("empty bearer token")

// LoadToken reads a token file (e.g. a mounted Kubernetes Secret key),
// trimming surrounding whitespace and the trailing newline editors add.
func LoadToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("token file %s: %w", path, ErrEmptyToken)
	}
	return tok, nil
}

// TokenAuth checks the bearer token on incoming calls.
type TokenAuth struct {
	digest [sha256.Size]byte
}

// NewTokenAuth returns a checker for token, which must not be empty.
func NewTokenAuth(token string) (*TokenAuth, error) {
	if token == "" {
		return nil, ErrEmptyToken
	}
	return &TokenAuth{digest: sha256.Sum256([]byte(token))}, nil
}

// errUnauthenticated is deliberately the same for a missing and a wrong
// token, and never contains what the client sent.
var errUnauthenticated = status.Error(codes.Unauthenticated, "missing or invalid bearer token")

// Check returns nil when ctx carries the expected token, an Unauthenticated
// status error otherwise.
func (a *TokenAuth) Check(ctx context.Context) error {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return errUnauthenticated
	}
	vals := md.Get(MetadataKey)
	if len(vals) != 1 {
		return errUnauthenticated
	}
	tok, ok := strings.CutPrefix(vals[0], bearerPrefix)
	if !ok {
		return errUnauthenticated
	}
	got := sha256.Sum256([]byte(tok))
	if subtle.ConstantTimeCompare(got[:], a.digest[:]) != 1 {
		return errUnauthenticated
	}
	return nil
}

// UnaryServerInterceptor refuses unary calls without the token.
func (a *TokenAuth) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := a.Check(ctx); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor refuses streams without the token.
func (a *TokenAuth) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := a.Check(ss.Context()); err != nil {
			return err
		}
		return handler(srv, ss)
	}
}

// ServerOptions returns the grpc.ServerOptions enforcing the token.
func (a *TokenAuth) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(a.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(a.StreamServerInterceptor()),
	}
}

// TokenCredentials sends the bearer token on every call (client side). It
// requires transport security, so the token is never sent in clear text.
type TokenCredentials struct {
	Token string
}

var _ credentials.PerRPCCredentials = TokenCredentials{}

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (c TokenCredentials) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{MetadataKey: bearerPrefix + c.Token}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (TokenCredentials) RequireTransportSecurity() bool { return true }

// ServerTLSConfig loads the server's certificate and key. With clientCAFile
// set, clients must also present a certificate signed by that CA (mutual
// TLS); without it, clients are authenticated by the token alone.
//
// The files are read once: rotating the certificate means restarting the
// process (a Kubernetes Secret update rolls the DaemonSet).
func ServerTLSConfig(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load TLS certificate %s / key %s: %w", certFile, keyFile, err)
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
	}
	if clientCAFile != "" {
		pool, err := loadCertPool(clientCAFile)
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// ClientTLSConfig trusts the CA in caFile (the system roots when empty) and
// expects serverName in the server's certificate (the dialed host when
// empty). certFile/keyFile, when set, are the client certificate for mutual
// TLS.
func ClientTLSConfig(caFile, serverName, certFile, keyFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if caFile != "" {
		pool, err := loadCertPool(caFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if certFile != "" || keyFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("load client certificate %s / key %s: %w", certFile, keyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

func loadCertPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", file)
	}
	return pool, nil
}
