package rpcauth

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
)

// Role is what a caller of nvmirror's APIs is, as its client certificate
// says: one or more of the certificate's Subject O values.
type Role string

// The roles. A certificate's Subject Organization (O) values name its roles
// and its Common Name (CN) names the caller.
const (
	// RoleController is the CSI controller (nvmirror-csi --mode=controller).
	RoleController Role = "controller"
	// RoleNode is a CSI node plugin with its healer; CN is the Kubernetes
	// node name (what --node-name is, the first part of the CSI node ID).
	RoleNode Role = "node"
	// RoleProvisioner is the provisioner as the client of the agents.
	RoleProvisioner Role = "provisioner"
	// RoleAdmin is an administrator's nvmirrorctl.
	RoleAdmin Role = "admin"
	// RoleStorageNode marks a storage node agent's server certificate (CN
	// the storage node's name); it authorizes no call.
	RoleStorageNode Role = "storage-node"
)

// Roles are every role, in the order documentation lists them.
var Roles = []Role{RoleController, RoleNode, RoleProvisioner, RoleAdmin, RoleStorageNode}

// maxNameLength is the longest caller name: a Kubernetes node name is a DNS
// subdomain, at most 253 characters.
const maxNameLength = 253

// Identity is a verified caller: its name and roles, from its certificate.
type Identity struct {
	// Name is the certificate's Subject CN: a node plugin's Kubernetes
	// node name, a storage node's name, or a free name for the single
	// callers (controller, provisioner, an administrator).
	Name string
	// Roles are the certificate's Subject O values, sorted, at least one.
	Roles []Role
}

// Has reports whether the identity holds role r.
func (id Identity) Has(r Role) bool { return slices.Contains(id.Roles, r) }

// String is "name (role,role)", how errors and logs name a caller.
func (id Identity) String() string {
	rs := make([]string, len(id.Roles))
	for i, r := range id.Roles {
		rs[i] = string(r)
	}
	return fmt.Sprintf("%s (%s)", id.Name, strings.Join(rs, ","))
}

// ErrNoIdentity is returned for a certificate that names no nvmirror caller.
var ErrNoIdentity = errors.New("certificate names no nvmirror caller")

// IdentityFromCertificate reads the identity of a verified certificate:
// Subject CN is the name, which must be a DNS subdomain (lowercase letters,
// digits, '-' and '.'; at most 253 characters), and every Subject O value a
// known role, at least one. Anything else is ErrNoIdentity: a certificate
// of the CA issued for another purpose is not a caller.
func IdentityFromCertificate(c *x509.Certificate) (Identity, error) {
	if c == nil {
		return Identity{}, fmt.Errorf("%w: no certificate", ErrNoIdentity)
	}
	name := c.Subject.CommonName
	if err := ValidateName(name); err != nil {
		return Identity{}, fmt.Errorf("%w: subject CN: %v", ErrNoIdentity, err)
	}
	if len(c.Subject.Organization) == 0 {
		return Identity{}, fmt.Errorf("%w: subject O names no role (want one or more of %s)", ErrNoIdentity, roleList())
	}
	var roles []Role
	for _, o := range c.Subject.Organization {
		r := Role(o)
		if !slices.Contains(Roles, r) {
			return Identity{}, fmt.Errorf("%w: subject O %q is not a role (want %s)", ErrNoIdentity, o, roleList())
		}
		if !slices.Contains(roles, r) {
			roles = append(roles, r)
		}
	}
	slices.Sort(roles)
	return Identity{Name: name, Roles: roles}, nil
}

// ValidateName checks a caller name: a DNS subdomain as Kubernetes node
// names are (RFC 1123 labels separated by '.').
func ValidateName(name string) error {
	if name == "" {
		return errors.New("empty name")
	}
	if len(name) > maxNameLength {
		return fmt.Errorf("name is %d characters, at most %d", len(name), maxNameLength)
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("name %q: each dot-separated label must have 1 to 63 characters", name)
		}
		for i, c := range label {
			alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
			if !alnum && !(c == '-' && i > 0 && i < len(label)-1) {
				return fmt.Errorf("name %q: only lowercase letters, digits, and '-' inside a label", name)
			}
		}
	}
	return nil
}

func roleList() string {
	rs := make([]string, len(Roles))
	for i, r := range Roles {
		rs[i] = string(r)
	}
	return strings.Join(rs, ", ")
}

type identityKey struct{}

// WithIdentity returns ctx carrying id (what the server interceptors do for
// the handlers after them).
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// IdentityFromContext returns the caller's verified identity, set by the
// server interceptors of Server.
func IdentityFromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok
}

// LoadIdentity reads the identity a certificate file names (its first
// certificate), so that a process can check at start that it was given the
// certificate of what it is.
func LoadIdentity(certFile string) (Identity, error) {
	b, err := os.ReadFile(certFile)
	if err != nil {
		return Identity{}, err
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return Identity{}, fmt.Errorf("%s holds no PEM certificate", certFile)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return Identity{}, fmt.Errorf("%s: %w", certFile, err)
	}
	id, err := IdentityFromCertificate(c)
	if err != nil {
		return Identity{}, fmt.Errorf("%s: %w", certFile, err)
	}
	return id, nil
}

// Caller names the verified caller of ctx's call for logs ("" when the
// call was not authenticated by Server).
func Caller(ctx context.Context) string {
	if id, ok := IdentityFromContext(ctx); ok {
		return id.String()
	}
	return ""
}
