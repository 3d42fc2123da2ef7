// Package rpcauth secures nvmirror's internal gRPC APIs: mutual TLS in which
// every caller has a certificate of its own naming it (Identity: Subject CN
// the name, Subject O the roles), verified against a client CA on every call
// by Server's interceptors, which then ask the API's Authorizer whether this
// caller may make this call; TLS material re-read when its files change;
// and an optional shared bearer token as a second factor, checked by the
// same interceptors and sent by client per-RPC credentials.
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
	"net"
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

// ServerTLSConfig serves the certificate in certFile/keyFile, re-read when
// the files change (the next handshake uses the new one). It asks clients
// for a certificate without verifying it in the handshake: Server's
// interceptors verify it against the client CA on every call, so that a
// missing, expired or foreign certificate is refused with Unauthenticated
// and a message saying why, instead of a handshake failure the client sees
// as Unavailable. The handshake still proves the client holds the key of
// the certificate it presents.
func ServerTLSConfig(certFile, keyFile string) (*tls.Config, error) {
	kp, err := keyPairFiles(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return kp.get() },
		ClientAuth:     tls.RequestClientCert,
	}, nil
}

// ClientTLSConfig trusts the CA bundle in caFile (the system roots when
// empty) and expects serverName in the server's certificate (the dialed
// host when empty). certFile/keyFile, when set, are the client certificate
// (mutual TLS), re-read when they change. The CA bundle is read now: for
// gRPC use ClientCredentials, which re-reads it too.
func ClientTLSConfig(caFile, serverName, certFile, keyFile string) (*tls.Config, error) {
	m, err := fileMaterial(caFile, certFile, keyFile)
	if err != nil {
		return nil, err
	}
	return m.config(serverName)
}

// clientMaterial is where a client's TLS trust and certificate come from
// at each handshake: files re-read when they change, or PEM held in
// memory. A nil getter is none (the system roots; no client certificate).
type clientMaterial struct {
	roots func() (*x509.CertPool, error)
	cert  func() (*tls.Certificate, error)
}

// fileMaterial loads the files once (failing on any that does not load)
// and re-reads them when they change.
func fileMaterial(caFile, certFile, keyFile string) (clientMaterial, error) {
	var m clientMaterial
	if caFile != "" {
		cas, err := caBundleFile(caFile)
		if err != nil {
			return m, err
		}
		m.roots = cas.get
	}
	if certFile != "" || keyFile != "" {
		kp, err := keyPairFiles(certFile, keyFile)
		if err != nil {
			return m, fmt.Errorf("client certificate: %w", err)
		}
		m.cert = kp.get
	}
	return m, nil
}

// memoryMaterial parses PEM held in memory (read from a Kubernetes
// Secret, say): ca the trust bundle (nil: the system roots), certPEM and
// keyPEM the client certificate (both nil: none).
func memoryMaterial(ca, certPEM, keyPEM []byte) (clientMaterial, error) {
	var m clientMaterial
	if len(ca) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(ca) {
			return m, errors.New("the CA holds no PEM certificate")
		}
		m.roots = func() (*x509.CertPool, error) { return pool, nil }
	}
	if len(certPEM) > 0 || len(keyPEM) > 0 {
		kp, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return m, fmt.Errorf("client certificate: %w", err)
		}
		m.cert = func() (*tls.Certificate, error) { return &kp, nil }
	}
	return m, nil
}

// config builds the client's TLS configuration from the material as it
// is now: the one place a client's TLS configuration is made.
func (m clientMaterial) config(serverName string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if m.roots != nil {
		pool, err := m.roots()
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if m.cert != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return m.cert() }
	}
	return cfg, nil
}

// ClientCredentials are gRPC transport credentials whose TLS configuration
// is built at each handshake, so that a new connection trusts the CA
// bundle as its file holds it now (a CA rotation needs no restart) and
// presents the client certificate as its files hold it now.
type ClientCredentials struct {
	build      func() (*tls.Config, error)
	serverName string
}

var _ credentials.TransportCredentials = (*ClientCredentials)(nil)

// NewClientCredentials loads the files as ClientTLSConfig does.
func NewClientCredentials(caFile, serverName, certFile, keyFile string) (*ClientCredentials, error) {
	m, err := fileMaterial(caFile, certFile, keyFile)
	if err != nil {
		return nil, err
	}
	return m.credentials(serverName), nil
}

// NewMemoryClientCredentials are credentials from PEM held in memory (a
// kubectl plugin reads them from Secrets): ca trusted (nil: the system
// roots), certPEM/keyPEM the client certificate.
func NewMemoryClientCredentials(ca []byte, serverName string, certPEM, keyPEM []byte) (*ClientCredentials, error) {
	m, err := memoryMaterial(ca, certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	return m.credentials(serverName), nil
}

func (m clientMaterial) credentials(serverName string) *ClientCredentials {
	return &ClientCredentials{build: func() (*tls.Config, error) { return m.config(serverName) }, serverName: serverName}
}

// StaticClientCredentials uses cfg as it is (tests).
func StaticClientCredentials(cfg *tls.Config) *ClientCredentials {
	return &ClientCredentials{build: func() (*tls.Config, error) { return cfg.Clone(), nil }, serverName: cfg.ServerName}
}

// ServerName is the name expected in servers' certificates ("": the
// dialed host).
func (c *ClientCredentials) ServerName() string { return c.serverName }

// WithServerName returns credentials expecting name in the server's
// certificate.
func (c *ClientCredentials) WithServerName(name string) *ClientCredentials {
	return &ClientCredentials{build: c.build, serverName: name}
}

// ClientHandshake implements credentials.TransportCredentials.
func (c *ClientCredentials) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	cfg, err := c.build()
	if err != nil {
		return nil, nil, err
	}
	cfg.ServerName = c.serverName
	return credentials.NewTLS(cfg).ClientHandshake(ctx, authority, conn)
}

// ServerHandshake implements credentials.TransportCredentials; these are a
// client's.
func (c *ClientCredentials) ServerHandshake(net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("rpcauth: client credentials used by a server")
}

// Info implements credentials.TransportCredentials.
func (c *ClientCredentials) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls", SecurityVersion: "1.2", ServerName: c.serverName}
}

// Clone implements credentials.TransportCredentials.
func (c *ClientCredentials) Clone() credentials.TransportCredentials {
	return &ClientCredentials{build: c.build, serverName: c.serverName}
}

// OverrideServerName implements credentials.TransportCredentials.
//
// Deprecated: gRPC's own; use WithServerName.
func (c *ClientCredentials) OverrideServerName(name string) error {
	c.serverName = name
	return nil
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
