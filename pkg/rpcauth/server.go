package rpcauth

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"
)

// ErrPermissionDenied is what an Authorizer wraps to refuse a caller; the
// interceptors turn it into codes.PermissionDenied with its message.
var ErrPermissionDenied = errors.New("permission denied")

// Authorizer decides whether a verified caller may make a call. An API has
// one, holding its table of who may call what. req is the request message
// of a unary call (nil for a stream, checked before its first message), so
// that the check can look at what the call is about. A refusal wraps
// ErrPermissionDenied and names the caller and what it asked for; a status
// error (e.g. NotFound from a lookup) is returned to the caller as it is.
type Authorizer interface {
	Authorize(ctx context.Context, id Identity, fullMethod string, req any) error
}

// ServerConfig is how a server of one of nvmirror's APIs authenticates and
// authorizes its callers.
type ServerConfig struct {
	// CertFile and KeyFile are the server's certificate (re-read when they
	// change).
	CertFile, KeyFile string
	// ClientCAFile is the CA bundle client certificates must chain to
	// (re-read when it changes). Required.
	ClientCAFile string
	// TokenFile, when set, holds a bearer token every call must also carry
	// (a second factor; read once).
	TokenFile string
	// Authorizer is the API's table. Required.
	Authorizer Authorizer
	// Now is the clock certificates are checked against (tests; default
	// time.Now).
	Now func() time.Time
}

// Server authenticates every call by its client certificate (and the token
// when configured) and authorizes it: build it with NewServer, pass
// Credentials to grpc.Creds and chain the interceptors.
type Server struct {
	cfg       ServerConfig
	creds     credentials.TransportCredentials
	clientCAs *reloading[*x509.CertPool]
	token     *TokenAuth
}

// NewServer loads the files (failing on any that does not load, naming it).
func NewServer(c ServerConfig) (*Server, error) {
	if c.ClientCAFile == "" {
		return nil, errors.New("client CA file is required: every caller is identified by its client certificate")
	}
	if c.Authorizer == nil {
		return nil, errors.New("rpcauth: no authorizer")
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	tlsCfg, err := ServerTLSConfig(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, err
	}
	cas, err := caBundleFile(c.ClientCAFile)
	if err != nil {
		return nil, fmt.Errorf("client CA: %w", err)
	}
	s := &Server{cfg: c, creds: credentials.NewTLS(tlsCfg), clientCAs: cas}
	if c.TokenFile != "" {
		tok, err := LoadToken(c.TokenFile)
		if err != nil {
			return nil, err
		}
		if s.token, err = NewTokenAuth(tok); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Credentials are the server's TLS transport credentials.
func (s *Server) Credentials() credentials.TransportCredentials { return s.creds }

// Identify verifies the caller's client certificate against the client CA
// (chain, validity at this time, client authentication usage) and returns
// the identity it names; any failure is an Unauthenticated status saying
// what was wrong with the certificate (never what a token was).
func (s *Server) Identify(ctx context.Context) (Identity, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Identity{}, status.Error(codes.Unauthenticated, "no peer information")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return Identity{}, status.Error(codes.Unauthenticated, "not a TLS connection")
	}
	certs := info.State.PeerCertificates
	if len(certs) == 0 {
		return Identity{}, status.Error(codes.Unauthenticated, "no client certificate: every caller needs a certificate of its own signed by the client CA")
	}
	pool, err := s.clientCAs.get()
	if err != nil {
		return Identity{}, status.Errorf(codes.Unavailable, "client CA: %v", err)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	leaf := certs[0]
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: pool, Intermediates: inter, CurrentTime: s.cfg.Now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return Identity{}, status.Errorf(codes.Unauthenticated, "client certificate %q (serial %s) refused: %v", leaf.Subject.CommonName, leaf.SerialNumber, err)
	}
	id, err := IdentityFromCertificate(leaf)
	if err != nil {
		return Identity{}, status.Errorf(codes.Unauthenticated, "client certificate %q (serial %s): %v", leaf.Subject.CommonName, leaf.SerialNumber, err)
	}
	return id, nil
}

// check authenticates and authorizes one call, returning the context the
// handler runs with (carrying the identity).
func (s *Server) check(ctx context.Context, method string, req any) (context.Context, error) {
	id, err := s.Identify(ctx)
	if err != nil {
		return nil, err
	}
	if s.token != nil {
		if err := s.token.Check(ctx); err != nil {
			return nil, err
		}
	}
	if err := s.cfg.Authorizer.Authorize(ctx, id, method, req); err != nil {
		klog.InfoS("Call refused", "caller", id.String(), "method", method, "err", err)
		return nil, authzStatus(err)
	}
	return WithIdentity(ctx, id), nil
}

func authzStatus(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	if errors.Is(err, ErrPermissionDenied) {
		return status.Error(codes.PermissionDenied, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// UnaryServerInterceptor authenticates and authorizes unary calls.
func (s *Server) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := s.check(ctx, info.FullMethod, req)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor authenticates and authorizes streams before
// their first message.
func (s *Server) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := s.check(ss.Context(), info.FullMethod, nil)
		if err != nil {
			return err
		}
		return handler(srv, &identifiedStream{ServerStream: ss, ctx: ctx})
	}
}

type identifiedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *identifiedStream) Context() context.Context { return s.ctx }

// ServerOptions are the transport credentials and both interceptors, for a
// server with no other interceptor before them.
func (s *Server) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.Creds(s.creds),
		grpc.ChainUnaryInterceptor(s.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(s.StreamServerInterceptor()),
	}
}

// Policy is an API's authorization table, one Rule per full method name
// ("/package.Service/Method"). A method missing from it is refused to
// everyone, so a new RPC is closed until someone decides who may call it.
type Policy map[string]Rule

// Rule says who may call one method: Roles outright, and Scoped roles when
// their check passes for this request (e.g. a node plugin only for volumes
// published to its node).
type Rule struct {
	Roles  []Role
	Scoped map[Role]ScopeCheck
}

// ScopeCheck allows or refuses one scoped call; a refusal wraps
// ErrPermissionDenied (Denied) and says what was out of scope.
type ScopeCheck func(ctx context.Context, id Identity, method string, req any) error

// Authorize implements Authorizer.
func (p Policy) Authorize(ctx context.Context, id Identity, method string, req any) error {
	rule, ok := p[method]
	if !ok {
		return Denied(id, method, "the method is in no role's table")
	}
	for _, r := range rule.Roles {
		if id.Has(r) {
			return nil
		}
	}
	var scopeErr error
	for _, r := range id.Roles {
		if check, ok := rule.Scoped[r]; ok {
			if scopeErr = check(ctx, id, method, req); scopeErr == nil {
				return nil
			}
		}
	}
	if scopeErr != nil {
		return scopeErr
	}
	return Denied(id, method, "allowed to "+rule.allowed())
}

func (r Rule) allowed() string {
	var names []string
	for _, role := range Roles {
		if slices.Contains(r.Roles, role) {
			names = append(names, string(role))
		} else if _, ok := r.Scoped[role]; ok {
			names = append(names, string(role)+" (in its scope)")
		}
	}
	if len(names) == 0 {
		return "no role"
	}
	return strings.Join(names, ", ")
}

// Denied returns the refusal of id calling method, saying why.
func Denied(id Identity, method, why string) error {
	return fmt.Errorf("%w: %s may not call %s: %s", ErrPermissionDenied, id, method, why)
}
