package fake

import "sync"

// Namespace is one exported replica as the fabric holds it.
type Namespace struct {
	NQN       string
	UUID      string
	SizeBytes int64
	// AllowedHost is the one host NQN admitted ("" = none).
	AllowedHost string
	// Down makes connects fail as if the storage node were away.
	Down bool
	// Secret, when set, is the DH-HMAC-CHAP secret the host must present
	// (the kernel target refuses a connect without it).
	Secret string
}

// Fabric is the set of replicas the storage nodes export.
type Fabric struct {
	mu  sync.Mutex
	nss map[string]*Namespace
}

func NewFabric() *Fabric { return &Fabric{nss: map[string]*Namespace{}} }

func (f *Fabric) Export(nqn, uuid string, size int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nss[nqn] = &Namespace{NQN: nqn, UUID: uuid, SizeBytes: size}
}

func (f *Fabric) Unexport(nqn string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.nss, nqn)
}

func (f *Fabric) Allow(nqn, host string) { f.update(nqn, func(n *Namespace) { n.AllowedHost = host }) }

func (f *Fabric) Resize(nqn string, size int64) {
	f.update(nqn, func(n *Namespace) { n.SizeBytes = size })
}

// SetDown takes a replica's storage node away or brings it back.
func (f *Fabric) SetDown(nqn string, down bool) { f.update(nqn, func(n *Namespace) { n.Down = down }) }

// RequireSecret makes the namespace's target demand a DH-HMAC-CHAP secret.
func (f *Fabric) RequireSecret(nqn, secret string) {
	f.update(nqn, func(n *Namespace) { n.Secret = secret })
}

// SetUUID changes the namespace's identity (tests of identity checks).
func (f *Fabric) SetUUID(nqn, uuid string) { f.update(nqn, func(n *Namespace) { n.UUID = uuid }) }

func (f *Fabric) update(nqn string, fn func(*Namespace)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n, ok := f.nss[nqn]; ok {
		fn(n)
	}
}

// Get returns a copy of the namespace.
func (f *Fabric) Get(nqn string) (Namespace, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.nss[nqn]
	if !ok {
		return Namespace{}, false
	}
	return *n, true
}
