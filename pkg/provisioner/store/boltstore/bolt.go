// Package boltstore is the default provisioner Store: one bbolt database
// file. bbolt takes an exclusive flock on the file, so exactly one
// provisioner process can have it open; that process is always the leader.
// Every commit is fsynced before it returns, so a record the provisioner has
// acknowledged survives a crash.
package boltstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
)

var (
	bucketVolumes = []byte("volumes")      // id → Volume JSON
	bucketNames   = []byte("volume-names") // name → id
	bucketNodes   = []byte("storage-nodes")
	bucketEvents  = []byte("events") // seq (8 bytes big endian) → Event JSON
	// bucketEventIDs indexes retained events by reporter ID, for dedupe.
	bucketEventIDs = []byte("event-ids") // event ID → seq key
	bucketMeta     = []byte("meta")
	// bucketHostCredentials: host NQN → HostCredentials JSON (secrets: the
	// database file must be readable by the provisioner only).
	bucketHostCredentials = []byte("host-credentials")
	// bucketTombstones: volume id → Tombstone JSON of a deleted volume.
	bucketTombstones = []byte("tombstones")
	keyEventSeq      = []byte("event-seq")
)

// Options configure Open.
type Options struct {
	// EventRetention is how many events to keep; 0 means
	// store.DefaultEventRetention.
	EventRetention int
	// LockTimeout bounds the wait for another process's lock on the file;
	// 0 means 10 s. A second provisioner pointed at the same file fails
	// instead of hanging.
	LockTimeout time.Duration
}

// Store is the bbolt implementation of store.Store.
type Store struct {
	db        *bolt.DB
	retention uint64
}

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) the database at path.
func Open(path string, o Options) (*Store, error) {
	if o.EventRetention <= 0 {
		o.EventRetention = store.DefaultEventRetention
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = 10 * time.Second
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create directory for %s: %w", path, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: o.LockTimeout})
	if err != nil {
		return nil, fmt.Errorf("open registry %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketVolumes, bucketNames, bucketNodes, bucketEvents, bucketEventIDs, bucketMeta, bucketHostCredentials, bucketTombstones, bucketSnapshots, bucketSnapshotNames, bucketGroups, bucketGroupNames} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("initialise registry %s: %w", path, err)
	}
	klog.V(2).InfoS("Opened registry", "path", path, "eventRetention", o.EventRetention)
	return &Store{db: db, retention: uint64(o.EventRetention)}, nil
}

// Close closes the database file and releases its lock.
func (s *Store) Close() error { return s.db.Close() }

func getVolume(tx *bolt.Tx, id string) (*store.Volume, error) {
	b := tx.Bucket(bucketVolumes).Get([]byte(id))
	if b == nil {
		return nil, fmt.Errorf("volume %s: %w", id, store.ErrNotFound)
	}
	var v store.Volume
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("decode volume %s: %w", id, err)
	}
	return &v, nil
}

func putVolume(tx *bolt.Tx, v *store.Volume) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketVolumes).Put([]byte(v.ID), b)
}

func (s *Store) CreateVolume(ctx context.Context, v *store.Volume) error {
	if v.ID == "" || v.Name == "" {
		return fmt.Errorf("volume needs an ID and a name")
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketVolumes).Get([]byte(v.ID)) != nil {
			return fmt.Errorf("volume id %s: %w", v.ID, store.ErrAlreadyExists)
		}
		names := tx.Bucket(bucketNames)
		if names.Get([]byte(v.Name)) != nil {
			return fmt.Errorf("volume name %s: %w", v.Name, store.ErrAlreadyExists)
		}
		c := v.Clone()
		now := time.Now().UTC()
		if c.CreatedAt.IsZero() {
			c.CreatedAt = now
		}
		c.UpdatedAt = now
		if err := names.Put([]byte(c.Name), []byte(c.ID)); err != nil {
			return err
		}
		return putVolume(tx, c)
	})
}

func (s *Store) GetVolume(ctx context.Context, id string) (*store.Volume, error) {
	var v *store.Volume
	err := s.db.View(func(tx *bolt.Tx) (err error) {
		v, err = getVolume(tx, id)
		return err
	})
	return v, err
}

func (s *Store) GetVolumeByName(ctx context.Context, name string) (*store.Volume, error) {
	var v *store.Volume
	err := s.db.View(func(tx *bolt.Tx) (err error) {
		id := tx.Bucket(bucketNames).Get([]byte(name))
		if id == nil {
			return fmt.Errorf("volume name %s: %w", name, store.ErrNotFound)
		}
		v, err = getVolume(tx, string(id))
		return err
	})
	return v, err
}

func (s *Store) ListVolumes(ctx context.Context) ([]*store.Volume, error) {
	var out []*store.Volume
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketVolumes).ForEach(func(k, b []byte) error {
			var v store.Volume
			if err := json.Unmarshal(b, &v); err != nil {
				return fmt.Errorf("decode volume %s: %w", k, err)
			}
			out = append(out, &v)
			return nil
		})
	})
	return out, err
}

func (s *Store) ListVolumesAfter(ctx context.Context, after string, limit int) ([]*store.Volume, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("list volumes after %q: limit %d must be positive", after, limit)
	}
	var out []*store.Volume
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketVolumes).Cursor()
		k, b := c.Seek([]byte(after))
		if k != nil && string(k) == after {
			k, b = c.Next()
		}
		for ; k != nil && len(out) < limit; k, b = c.Next() {
			var v store.Volume
			if err := json.Unmarshal(b, &v); err != nil {
				return fmt.Errorf("decode volume %s: %w", k, err)
			}
			out = append(out, &v)
		}
		return nil
	})
	return out, err
}

// UpdateVolume runs fn inside one write transaction: bbolt serialises
// writers, so fn always sees the latest record and runs exactly once.
func (s *Store) UpdateVolume(ctx context.Context, id string, fn func(*store.Volume) error) (*store.Volume, error) {
	var out *store.Volume
	err := s.db.Update(func(tx *bolt.Tx) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		v, err := getVolume(tx, id)
		if err != nil {
			return err
		}
		name := v.Name
		if err := fn(v); err != nil {
			return err
		}
		if v.ID != id || v.Name != name {
			return fmt.Errorf("volume %s: ID and name are immutable", id)
		}
		v.UpdatedAt = time.Now().UTC()
		if err := putVolume(tx, v); err != nil {
			return err
		}
		out = v.Clone()
		return nil
	})
	return out, err
}

func getHostCredentials(tx *bolt.Tx, hostNQN string) (*store.HostCredentials, error) {
	b := tx.Bucket(bucketHostCredentials).Get([]byte(hostNQN))
	if b == nil {
		return nil, fmt.Errorf("credentials of host %s: %w", hostNQN, store.ErrNotFound)
	}
	var c store.HostCredentials
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("decode credentials of host %s: %w", hostNQN, err)
	}
	return &c, nil
}

func (s *Store) GetHostCredentials(ctx context.Context, hostNQN string) (*store.HostCredentials, error) {
	var out *store.HostCredentials
	err := s.db.View(func(tx *bolt.Tx) error {
		c, err := getHostCredentials(tx, hostNQN)
		out = c
		return err
	})
	return out, err
}

// UpdateHostCredentials runs fn in one write transaction, like UpdateVolume.
func (s *Store) UpdateHostCredentials(ctx context.Context, hostNQN string, fn func(*store.HostCredentials) error) (*store.HostCredentials, error) {
	var out *store.HostCredentials
	err := s.db.Update(func(tx *bolt.Tx) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		c, err := getHostCredentials(tx, hostNQN)
		if errors.Is(err, store.ErrNotFound) {
			c, err = &store.HostCredentials{HostNQN: hostNQN}, nil
		}
		if err != nil {
			return err
		}
		if err := fn(c); err != nil {
			return err
		}
		if c.HostNQN != hostNQN {
			return fmt.Errorf("credentials of host %s: the host NQN is immutable", hostNQN)
		}
		c.UpdatedAt = time.Now().UTC()
		b, err := json.Marshal(c)
		if err != nil {
			return err
		}
		if err := tx.Bucket(bucketHostCredentials).Put([]byte(hostNQN), b); err != nil {
			return err
		}
		out = c.Clone()
		return nil
	})
	return out, err
}

func (s *Store) DeleteVolume(ctx context.Context, id string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		v, err := getVolume(tx, id)
		if err != nil {
			return err
		}
		if err := tx.Bucket(bucketNames).Delete([]byte(v.Name)); err != nil {
			return err
		}
		b, err := json.Marshal(store.TombstoneOf(v, time.Now()))
		if err != nil {
			return err
		}
		if err := tx.Bucket(bucketTombstones).Put([]byte(id), b); err != nil {
			return err
		}
		return tx.Bucket(bucketVolumes).Delete([]byte(id))
	})
}

func (s *Store) ListTombstones(ctx context.Context) ([]*store.Tombstone, error) {
	var out []*store.Tombstone
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketTombstones).ForEach(func(k, b []byte) error {
			var t store.Tombstone
			if err := json.Unmarshal(b, &t); err != nil {
				return fmt.Errorf("decode tombstone %s: %w", k, err)
			}
			out = append(out, &t)
			return nil
		})
	})
	return out, err
}

func (s *Store) DeleteTombstone(ctx context.Context, volumeID string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTombstones)
		if b.Get([]byte(volumeID)) == nil {
			return fmt.Errorf("tombstone of volume %s: %w", volumeID, store.ErrNotFound)
		}
		return b.Delete([]byte(volumeID))
	})
}

func (s *Store) PutStorageNode(ctx context.Context, n *store.StorageNode) error {
	if n.ID == "" {
		return fmt.Errorf("storage node needs an ID")
	}
	b, err := json.Marshal(n)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketNodes).Put([]byte(n.ID), b)
	})
}

func (s *Store) GetStorageNode(ctx context.Context, id string) (*store.StorageNode, error) {
	var n store.StorageNode
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketNodes).Get([]byte(id))
		if b == nil {
			return fmt.Errorf("storage node %s: %w", id, store.ErrNotFound)
		}
		return json.Unmarshal(b, &n)
	})
	if err != nil {
		return nil, err
	}
	return &n, nil
}

func (s *Store) ListStorageNodes(ctx context.Context) ([]*store.StorageNode, error) {
	var out []*store.StorageNode
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketNodes).ForEach(func(k, b []byte) error {
			var n store.StorageNode
			if err := json.Unmarshal(b, &n); err != nil {
				return fmt.Errorf("decode storage node %s: %w", k, err)
			}
			out = append(out, &n)
			return nil
		})
	})
	return out, err
}

func (s *Store) DeleteStorageNode(ctx context.Context, id string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketNodes)
		if b.Get([]byte(id)) == nil {
			return fmt.Errorf("storage node %s: %w", id, store.ErrNotFound)
		}
		return b.Delete([]byte(id))
	})
}

func seqKey(seq uint64) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, seq)
	return k
}

// AppendEvent assigns the next sequence number and trims the oldest events
// beyond the retention in the same transaction. An event ID already in the
// ID index returns the stored event instead.
func (s *Store) AppendEvent(ctx context.Context, e events.Event) (events.Event, bool, error) {
	if err := e.Validate(); err != nil {
		return events.Event{}, false, err
	}
	var existing *events.Event
	err := s.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		evs := tx.Bucket(bucketEvents)
		ids := tx.Bucket(bucketEventIDs)
		if e.ID != "" {
			if k := ids.Get([]byte(e.ID)); k != nil {
				var prev events.Event
				if b := evs.Get(k); b != nil && json.Unmarshal(b, &prev) == nil {
					existing = &prev
					return nil
				}
				// The index outlived its event (cannot happen: trimming
				// removes both); record the event afresh.
			}
		}
		var seq uint64
		if b := meta.Get(keyEventSeq); b != nil {
			seq = binary.BigEndian.Uint64(b)
		}
		seq++
		e.Seq = seq
		b, err := json.Marshal(e)
		if err != nil {
			return err
		}
		if err := evs.Put(seqKey(seq), b); err != nil {
			return err
		}
		if e.ID != "" {
			if err := ids.Put([]byte(e.ID), seqKey(seq)); err != nil {
				return err
			}
		}
		if err := meta.Put(keyEventSeq, seqKey(seq)); err != nil {
			return err
		}
		if seq > s.retention {
			cutoff := seqKey(seq - s.retention) // delete keys <= cutoff
			c := evs.Cursor()
			for k, v := c.First(); k != nil && bytes.Compare(k, cutoff) <= 0; k, v = c.First() {
				var old events.Event
				if json.Unmarshal(v, &old) == nil && old.ID != "" {
					if err := ids.Delete([]byte(old.ID)); err != nil {
						return err
					}
				}
				if err := c.Delete(); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return events.Event{}, false, err
	}
	if existing != nil {
		return *existing, false, nil
	}
	return e, true, nil
}

func (s *Store) ListEvents(ctx context.Context, f events.Filter) ([]events.Event, error) {
	var out []events.Event
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEvents).Cursor()
		for k, b := c.Seek(seqKey(f.AfterSeq + 1)); k != nil; k, b = c.Next() {
			var e events.Event
			if err := json.Unmarshal(b, &e); err != nil {
				return fmt.Errorf("decode event %d: %w", binary.BigEndian.Uint64(k), err)
			}
			if f.Match(e) {
				out = append(out, e)
				if f.Limit > 0 && len(out) >= f.Limit {
					return nil
				}
			}
		}
		return nil
	})
	return out, err
}

// Leader: the flock on the database file already guarantees a single
// process, so this one leads from the start until ctx ends.
func (s *Store) Leader(ctx context.Context, candidate string) (<-chan bool, error) {
	ch := make(chan bool, 1)
	ch <- true
	go func() {
		<-ctx.Done()
		close(ch)
	}()
	return ch, nil
}

// IsLeader is always true for the single-process store.
func (s *Store) IsLeader() bool { return true }
