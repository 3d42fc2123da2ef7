// Package etcdstore is the provisioner Store for high availability: records
// live in etcd, several provisioner replicas share them, and an etcd
// election (concurrency.Election) picks the one that acts.
//
// Every read-modify-write is a transaction guarded by the key's
// ModRevision (compare-and-swap), retried on conflict, so concurrent
// operations never lose updates even if two processes briefly both believe
// they lead. The client is go.etcd.io/etcd/client/v3 v3.5, which speaks to
// etcd 3.4 servers (Debian 12 ships 3.4.23) as well as 3.5.
//
// Key layout under Options.Prefix (default "/nvmirror/"):
//
//	volumes/<id>          Volume JSON
//	volume-names/<name>   volume id (the name index, updated in the same txn)
//	storage-nodes/<id>    StorageNode JSON
//	tombstones/<id>       Tombstone JSON of a deleted volume (written in its delete txn)
//	snapshots/<id>, snapshot-names/<name>             Snapshot JSON and its name index
//	snapshot-groups/<id>, snapshot-group-names/<name> SnapshotGroup JSON and its name index
//	events/<seq, 20 digits> Event JSON (ordered by key)
//	event-ids/<id>        seq of the event with that reporter ID (dedupe)
//	meta/event-seq        last event sequence number
//	leader/               election
package etcdstore

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
)

// Options configure Open.
type Options struct {
	Endpoints []string
	// Prefix of every key; default "/nvmirror/". Two clusters can share an
	// etcd with different prefixes.
	Prefix      string
	DialTimeout time.Duration // default 5 s
	TLS         *tls.Config
	Username    string
	Password    string
	// EventRetention: events kept; 0 means store.DefaultEventRetention.
	EventRetention int
	// SessionTTL is the leader lease: how long a crashed leader blocks the
	// others. Default 10 s.
	SessionTTL time.Duration
}

// maxCASAttempts bounds compare-and-swap retries; beyond it the caller gets
// ErrConflict rather than spinning forever under pathological contention.
const maxCASAttempts = 100

// Store is the etcd implementation of store.Store.
type Store struct {
	cli       *clientv3.Client
	prefix    string
	retention uint64
	ttl       time.Duration
	leader    atomic.Bool
	wg        sync.WaitGroup
	// closed ends every campaign when Close is called, so Close never
	// waits on a campaign retrying against a closed client.
	closed context.Context
	close  context.CancelFunc
}

var _ store.Store = (*Store)(nil)

// Open connects to etcd and checks that it answers.
func Open(ctx context.Context, o Options) (*Store, error) {
	if len(o.Endpoints) == 0 {
		return nil, errors.New("etcd store: no endpoints")
	}
	if o.Prefix == "" {
		o.Prefix = "/nvmirror/"
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 5 * time.Second
	}
	if o.EventRetention <= 0 {
		o.EventRetention = store.DefaultEventRetention
	}
	if o.SessionTTL <= 0 {
		o.SessionTTL = 10 * time.Second
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   o.Endpoints,
		DialTimeout: o.DialTimeout,
		TLS:         o.TLS,
		Username:    o.Username,
		Password:    o.Password,
		Context:     ctx,
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client: %w", err)
	}
	// clientv3.New does not wait for a connection; fail now, with the
	// endpoint in the message, rather than on the first request.
	sctx, cancel := context.WithTimeout(ctx, o.DialTimeout)
	defer cancel()
	if _, err := cli.Status(sctx, o.Endpoints[0]); err != nil {
		cli.Close()
		return nil, fmt.Errorf("etcd %v: %w", o.Endpoints, err)
	}
	klog.V(2).InfoS("Connected to etcd", "endpoints", o.Endpoints, "prefix", o.Prefix)
	closed, closeFn := context.WithCancel(context.Background())
	return &Store{cli: cli, prefix: o.Prefix, retention: uint64(o.EventRetention), ttl: o.SessionTTL,
		closed: closed, close: closeFn}, nil
}

// Close stops leadership campaigns and closes the client.
func (s *Store) Close() error {
	s.close()
	s.wg.Wait()
	return s.cli.Close()
}

func (s *Store) volKey(id string) string     { return s.prefix + "volumes/" + id }
func (s *Store) nameKey(name string) string  { return s.prefix + "volume-names/" + name }
func (s *Store) nodeKey(id string) string    { return s.prefix + "storage-nodes/" + id }
func (s *Store) tombKey(id string) string    { return s.prefix + "tombstones/" + id }
func (s *Store) eventKey(seq uint64) string  { return fmt.Sprintf("%sevents/%020d", s.prefix, seq) }
func (s *Store) seqKey() string              { return s.prefix + "meta/event-seq" }
func (s *Store) eventIDKey(id string) string { return s.prefix + "event-ids/" + id }
func (s *Store) hostCredentialsKey(hostNQN string) string {
	return s.prefix + "host-credentials/" + hostNQN
}

func (s *Store) CreateVolume(ctx context.Context, v *store.Volume) error {
	if v.ID == "" || v.Name == "" {
		return fmt.Errorf("volume needs an ID and a name")
	}
	c := v.Clone()
	now := time.Now().UTC()
	if c.CreatedAt.IsZero() {
		c.CreatedAt = now
	}
	c.UpdatedAt = now
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	vk, nk := s.volKey(c.ID), s.nameKey(c.Name)
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(vk), "=", 0),
			clientv3.Compare(clientv3.CreateRevision(nk), "=", 0)).
		Then(clientv3.OpPut(vk, string(b)), clientv3.OpPut(nk, c.ID)).
		Else(clientv3.OpGet(vk, clientv3.WithCountOnly())).
		Commit()
	if err != nil {
		return fmt.Errorf("create volume %s: %w", c.ID, err)
	}
	if !resp.Succeeded {
		if resp.Responses[0].GetResponseRange().Count > 0 {
			return fmt.Errorf("volume id %s: %w", c.ID, store.ErrAlreadyExists)
		}
		return fmt.Errorf("volume name %s: %w", c.Name, store.ErrAlreadyExists)
	}
	return nil
}

// getVolume returns the volume and its key's ModRevision.
func (s *Store) getVolume(ctx context.Context, id string) (*store.Volume, int64, error) {
	resp, err := s.cli.Get(ctx, s.volKey(id))
	if err != nil {
		return nil, 0, fmt.Errorf("get volume %s: %w", id, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, fmt.Errorf("volume %s: %w", id, store.ErrNotFound)
	}
	var v store.Volume
	if err := json.Unmarshal(resp.Kvs[0].Value, &v); err != nil {
		return nil, 0, fmt.Errorf("decode volume %s: %w", id, err)
	}
	return &v, resp.Kvs[0].ModRevision, nil
}

func (s *Store) GetVolume(ctx context.Context, id string) (*store.Volume, error) {
	v, _, err := s.getVolume(ctx, id)
	return v, err
}

func (s *Store) GetVolumeByName(ctx context.Context, name string) (*store.Volume, error) {
	// Two reads are fine: the name entry and the volume are written and
	// deleted together, and a volume's name never changes, so the id read
	// first either still names that volume or is gone (NotFound).
	resp, err := s.cli.Get(ctx, s.nameKey(name))
	if err != nil {
		return nil, fmt.Errorf("get volume name %s: %w", name, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("volume name %s: %w", name, store.ErrNotFound)
	}
	return s.GetVolume(ctx, string(resp.Kvs[0].Value))
}

func (s *Store) ListVolumes(ctx context.Context) ([]*store.Volume, error) {
	var out []*store.Volume
	err := s.scan(ctx, s.prefix+"volumes/", s.prefix+"volumes/", func(k, b []byte) error {
		var v store.Volume
		if err := json.Unmarshal(b, &v); err != nil {
			return fmt.Errorf("decode %s: %w", k, err)
		}
		out = append(out, &v)
		return nil
	})
	return out, err
}

func (s *Store) ListVolumesAfter(ctx context.Context, after string, limit int) ([]*store.Volume, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("list volumes after %q: limit %d must be positive", after, limit)
	}
	prefix := s.prefix + "volumes/"
	from := prefix
	if after != "" {
		from = s.volKey(after) + "\x00" // the first key after it
	}
	resp, err := s.cli.Get(ctx, from, clientv3.WithRange(clientv3.GetPrefixRangeEnd(prefix)), clientv3.WithLimit(int64(limit)))
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", prefix, err)
	}
	out := make([]*store.Volume, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var v store.Volume
		if err := json.Unmarshal(kv.Value, &v); err != nil {
			return nil, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		out = append(out, &v)
	}
	return out, nil
}

// scanPage bounds each range read so a large registry or event log is read
// in pieces rather than one huge response.
const scanPage = 500

// scan calls fn for every key in [from, end of prefix), in key order, one
// page at a time (each page its own consistent read).
func (s *Store) scan(ctx context.Context, prefix, from string, fn func(k, v []byte) error) error {
	end := clientv3.GetPrefixRangeEnd(prefix)
	for {
		resp, err := s.cli.Get(ctx, from, clientv3.WithRange(end), clientv3.WithLimit(scanPage))
		if err != nil {
			return fmt.Errorf("list %s: %w", prefix, err)
		}
		for _, kv := range resp.Kvs {
			if err := fn(kv.Key, kv.Value); err != nil {
				if errors.Is(err, errStopScan) {
					return nil
				}
				return err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

var errStopScan = errors.New("stop scan")

func (s *Store) UpdateVolume(ctx context.Context, id string, fn func(*store.Volume) error) (*store.Volume, error) {
	for attempt := 0; attempt < maxCASAttempts; attempt++ {
		v, rev, err := s.getVolume(ctx, id)
		if err != nil {
			return nil, err
		}
		name := v.Name
		if err := fn(v); err != nil {
			return nil, err
		}
		if v.ID != id || v.Name != name {
			return nil, fmt.Errorf("volume %s: ID and name are immutable", id)
		}
		v.UpdatedAt = time.Now().UTC()
		b, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		vk := s.volKey(id)
		resp, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(vk), "=", rev)).
			Then(clientv3.OpPut(vk, string(b))).
			Commit()
		if err != nil {
			return nil, fmt.Errorf("update volume %s: %w", id, err)
		}
		if resp.Succeeded {
			return v, nil
		}
		klog.V(4).InfoS("Volume changed concurrently, retrying update", "volume", id, "attempt", attempt+1)
	}
	return nil, fmt.Errorf("update volume %s: %w", id, store.ErrConflict)
}

// getHostCredentials returns the record and its mod revision (0 when absent,
// with an empty record).
func (s *Store) getHostCredentials(ctx context.Context, hostNQN string) (*store.HostCredentials, int64, error) {
	resp, err := s.cli.Get(ctx, s.hostCredentialsKey(hostNQN))
	if err != nil {
		return nil, 0, fmt.Errorf("get credentials of host %s: %w", hostNQN, err)
	}
	if len(resp.Kvs) == 0 {
		return &store.HostCredentials{HostNQN: hostNQN}, 0, nil
	}
	var c store.HostCredentials
	if err := json.Unmarshal(resp.Kvs[0].Value, &c); err != nil {
		return nil, 0, fmt.Errorf("decode credentials of host %s: %w", hostNQN, err)
	}
	return &c, resp.Kvs[0].ModRevision, nil
}

func (s *Store) GetHostCredentials(ctx context.Context, hostNQN string) (*store.HostCredentials, error) {
	c, rev, err := s.getHostCredentials(ctx, hostNQN)
	if err != nil {
		return nil, err
	}
	if rev == 0 {
		return nil, fmt.Errorf("credentials of host %s: %w", hostNQN, store.ErrNotFound)
	}
	return c, nil
}

// UpdateHostCredentials is a compare-and-swap on the key's revision (0:
// the key must still be absent), retried like UpdateVolume.
func (s *Store) UpdateHostCredentials(ctx context.Context, hostNQN string, fn func(*store.HostCredentials) error) (*store.HostCredentials, error) {
	key := s.hostCredentialsKey(hostNQN)
	for attempt := 0; attempt < maxCASAttempts; attempt++ {
		c, rev, err := s.getHostCredentials(ctx, hostNQN)
		if err != nil {
			return nil, err
		}
		if err := fn(c); err != nil {
			return nil, err
		}
		if c.HostNQN != hostNQN {
			return nil, fmt.Errorf("credentials of host %s: the host NQN is immutable", hostNQN)
		}
		c.UpdatedAt = time.Now().UTC()
		b, err := json.Marshal(c)
		if err != nil {
			return nil, err
		}
		resp, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
			Then(clientv3.OpPut(key, string(b))).
			Commit()
		if err != nil {
			return nil, fmt.Errorf("update credentials of host %s: %w", hostNQN, err)
		}
		if resp.Succeeded {
			return c, nil
		}
	}
	return nil, fmt.Errorf("update credentials of host %s: %w", hostNQN, store.ErrConflict)
}

func (s *Store) DeleteVolume(ctx context.Context, id string) error {
	for attempt := 0; attempt < maxCASAttempts; attempt++ {
		v, rev, err := s.getVolume(ctx, id)
		if err != nil {
			return err
		}
		vk := s.volKey(id)
		tomb, err := json.Marshal(store.TombstoneOf(v, time.Now()))
		if err != nil {
			return err
		}
		resp, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(vk), "=", rev)).
			Then(clientv3.OpDelete(vk), clientv3.OpDelete(s.nameKey(v.Name)), clientv3.OpPut(s.tombKey(id), string(tomb))).
			Commit()
		if err != nil {
			return fmt.Errorf("delete volume %s: %w", id, err)
		}
		if resp.Succeeded {
			return nil
		}
	}
	return fmt.Errorf("delete volume %s: %w", id, store.ErrConflict)
}

func (s *Store) ListTombstones(ctx context.Context) ([]*store.Tombstone, error) {
	var out []*store.Tombstone
	p := s.prefix + "tombstones/"
	err := s.scan(ctx, p, p, func(k, b []byte) error {
		var t store.Tombstone
		if err := json.Unmarshal(b, &t); err != nil {
			return fmt.Errorf("decode %s: %w", k, err)
		}
		out = append(out, &t)
		return nil
	})
	return out, err
}

func (s *Store) DeleteTombstone(ctx context.Context, volumeID string) error {
	resp, err := s.cli.Delete(ctx, s.tombKey(volumeID))
	if err != nil {
		return fmt.Errorf("delete tombstone of volume %s: %w", volumeID, err)
	}
	if resp.Deleted == 0 {
		return fmt.Errorf("tombstone of volume %s: %w", volumeID, store.ErrNotFound)
	}
	return nil
}

func (s *Store) PutStorageNode(ctx context.Context, n *store.StorageNode) error {
	if n.ID == "" {
		return fmt.Errorf("storage node needs an ID")
	}
	b, err := json.Marshal(n)
	if err != nil {
		return err
	}
	if _, err := s.cli.Put(ctx, s.nodeKey(n.ID), string(b)); err != nil {
		return fmt.Errorf("put storage node %s: %w", n.ID, err)
	}
	return nil
}

func (s *Store) GetStorageNode(ctx context.Context, id string) (*store.StorageNode, error) {
	resp, err := s.cli.Get(ctx, s.nodeKey(id))
	if err != nil {
		return nil, fmt.Errorf("get storage node %s: %w", id, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("storage node %s: %w", id, store.ErrNotFound)
	}
	var n store.StorageNode
	if err := json.Unmarshal(resp.Kvs[0].Value, &n); err != nil {
		return nil, fmt.Errorf("decode storage node %s: %w", id, err)
	}
	return &n, nil
}

func (s *Store) ListStorageNodes(ctx context.Context) ([]*store.StorageNode, error) {
	var out []*store.StorageNode
	p := s.prefix + "storage-nodes/"
	err := s.scan(ctx, p, p, func(k, b []byte) error {
		var n store.StorageNode
		if err := json.Unmarshal(b, &n); err != nil {
			return fmt.Errorf("decode %s: %w", k, err)
		}
		out = append(out, &n)
		return nil
	})
	return out, err
}

func (s *Store) DeleteStorageNode(ctx context.Context, id string) error {
	resp, err := s.cli.Delete(ctx, s.nodeKey(id))
	if err != nil {
		return fmt.Errorf("delete storage node %s: %w", id, err)
	}
	if resp.Deleted == 0 {
		return fmt.Errorf("storage node %s: %w", id, store.ErrNotFound)
	}
	return nil
}

// AppendEvent increments the sequence counter, writes the event (and its
// ID index entry) and drops the events beyond the retention in one
// transaction guarded by the counter's revision and the ID's absence. An
// ID already indexed returns the stored event.
func (s *Store) AppendEvent(ctx context.Context, e events.Event) (events.Event, bool, error) {
	if err := e.Validate(); err != nil {
		return events.Event{}, false, err
	}
	sk := s.seqKey()
	for attempt := 0; attempt < maxCASAttempts; attempt++ {
		if e.ID != "" {
			prev, ok, err := s.eventByID(ctx, e.ID)
			if err != nil {
				return events.Event{}, false, err
			}
			if ok {
				return prev, false, nil
			}
		}
		resp, err := s.cli.Get(ctx, sk)
		if err != nil {
			return events.Event{}, false, fmt.Errorf("append event: %w", err)
		}
		var seq uint64
		var rev int64
		if len(resp.Kvs) > 0 {
			rev = resp.Kvs[0].ModRevision
			if seq, err = strconv.ParseUint(string(resp.Kvs[0].Value), 10, 64); err != nil {
				return events.Event{}, false, fmt.Errorf("decode %s: %w", sk, err)
			}
		}
		seq++
		e.Seq = seq
		b, err := json.Marshal(e)
		if err != nil {
			return events.Event{}, false, err
		}
		ops := []clientv3.Op{clientv3.OpPut(sk, strconv.FormatUint(seq, 10)), clientv3.OpPut(s.eventKey(seq), string(b))}
		conds := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(sk), "=", rev)}
		if e.ID != "" {
			ops = append(ops, clientv3.OpPut(s.eventIDKey(e.ID), strconv.FormatUint(seq, 10)))
			conds = append(conds, clientv3.Compare(clientv3.CreateRevision(s.eventIDKey(e.ID)), "=", 0))
		}
		if seq > s.retention {
			// Delete [0, seq-retention]: normally exactly one key, whose
			// ID index entry goes with it.
			from, to := s.eventKey(0), s.eventKey(seq-s.retention+1)
			old, err := s.cli.Get(ctx, from, clientv3.WithRange(to))
			if err != nil {
				return events.Event{}, false, fmt.Errorf("append event: %w", err)
			}
			for _, kv := range old.Kvs {
				var oe events.Event
				if json.Unmarshal(kv.Value, &oe) == nil && oe.ID != "" && oe.ID != e.ID {
					ops = append(ops, clientv3.OpDelete(s.eventIDKey(oe.ID)))
				}
			}
			ops = append(ops, clientv3.OpDelete(from, clientv3.WithRange(to)))
		}
		tr, err := s.cli.Txn(ctx).If(conds...).Then(ops...).Commit()
		if err != nil {
			return events.Event{}, false, fmt.Errorf("append event: %w", err)
		}
		if tr.Succeeded {
			return e, true, nil
		}
	}
	return events.Event{}, false, fmt.Errorf("append event: %w", store.ErrConflict)
}

// eventByID returns the retained event recorded under a reporter ID.
func (s *Store) eventByID(ctx context.Context, id string) (events.Event, bool, error) {
	resp, err := s.cli.Get(ctx, s.eventIDKey(id))
	if err != nil {
		return events.Event{}, false, fmt.Errorf("look up event %s: %w", id, err)
	}
	if len(resp.Kvs) == 0 {
		return events.Event{}, false, nil
	}
	seq, err := strconv.ParseUint(string(resp.Kvs[0].Value), 10, 64)
	if err != nil {
		return events.Event{}, false, fmt.Errorf("decode %s: %w", s.eventIDKey(id), err)
	}
	er, err := s.cli.Get(ctx, s.eventKey(seq))
	if err != nil {
		return events.Event{}, false, fmt.Errorf("look up event %s: %w", id, err)
	}
	if len(er.Kvs) == 0 {
		return events.Event{}, false, nil // trimmed between the two reads
	}
	var e events.Event
	if err := json.Unmarshal(er.Kvs[0].Value, &e); err != nil {
		return events.Event{}, false, fmt.Errorf("decode event %d: %w", seq, err)
	}
	return e, true, nil
}

func (s *Store) ListEvents(ctx context.Context, f events.Filter) ([]events.Event, error) {
	var out []events.Event
	p := s.prefix + "events/"
	err := s.scan(ctx, p, s.eventKey(f.AfterSeq+1), func(k, b []byte) error {
		var e events.Event
		if err := json.Unmarshal(b, &e); err != nil {
			return fmt.Errorf("decode %s: %w", k, err)
		}
		if f.Match(e) {
			out = append(out, e)
			if f.Limit > 0 && len(out) >= f.Limit {
				return errStopScan
			}
		}
		return nil
	})
	return out, err
}

// Leader campaigns in the background and reports transitions on the
// returned channel. After losing the lease (etcd unreachable for longer
// than the TTL, or the session expired) it reports false and campaigns
// again with a new session. When ctx ends it resigns, so a successor does
// not have to wait for the lease to expire, and closes the channel.
func (s *Store) Leader(ctx context.Context, candidate string) (<-chan bool, error) {
	if candidate == "" {
		return nil, errors.New("leader election: empty candidate name")
	}
	ch := make(chan bool, 1)
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.closed, cancel)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer cancel()
		defer stop()
		defer close(ch)
		defer s.leader.Store(false)
		send := func(v bool) bool {
			select {
			case ch <- v:
				return true
			case <-ctx.Done():
				return false
			}
		}
		backoff := 100 * time.Millisecond
		wait := func() bool {
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return false
			}
			backoff = min(backoff*2, 5*time.Second)
			return true
		}
		for ctx.Err() == nil {
			sess, err := concurrency.NewSession(s.cli, concurrency.WithTTL(max(1, int(s.ttl.Seconds()))), concurrency.WithContext(ctx))
			if err != nil {
				klog.ErrorS(err, "Leader election: cannot create session, retrying", "candidate", candidate, "backoff", backoff)
				if !wait() {
					return
				}
				continue
			}
			el := concurrency.NewElection(sess, s.prefix+"leader/")
			if err := el.Campaign(ctx, candidate); err != nil {
				sess.Close()
				if ctx.Err() != nil {
					return
				}
				klog.ErrorS(err, "Leader election: campaign failed, retrying", "candidate", candidate, "backoff", backoff)
				if !wait() {
					return
				}
				continue
			}
			backoff = 100 * time.Millisecond
			s.leader.Store(true)
			klog.InfoS("Became leader", "candidate", candidate)
			if !send(true) {
				s.resign(el, sess)
				return
			}
			select {
			case <-sess.Done():
				s.leader.Store(false)
				klog.InfoS("Lost leadership: session expired", "candidate", candidate)
				if !send(false) {
					return
				}
			case <-ctx.Done():
				s.leader.Store(false)
				s.resign(el, sess)
				return
			}
		}
	}()
	return ch, nil
}

func (s *Store) resign(el *concurrency.Election, sess *concurrency.Session) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := el.Resign(ctx); err != nil {
		klog.V(2).InfoS("Resign failed; the lease will expire", "err", err)
	}
	sess.Close()
}

// IsLeader reports whether this process currently holds leadership.
func (s *Store) IsLeader() bool { return s.leader.Load() }
