package boltstore

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
)

var (
	bucketSnapshots      = []byte("snapshots")       // id → Snapshot JSON
	bucketSnapshotNames  = []byte("snapshot-names")  // name → id
	bucketGroups         = []byte("snapshot-groups") // id → SnapshotGroup JSON
	bucketGroupNames     = []byte("snapshot-group-names")
	snapshotRecordBucket = named[*store.Snapshot]{NamedRecords: store.SnapshotRecords, records: bucketSnapshots, names: bucketSnapshotNames}
	groupRecordBucket    = named[*store.SnapshotGroup]{NamedRecords: store.SnapshotGroupRecords, records: bucketGroups, names: bucketGroupNames}
)

// named stores records with a unique ID and a unique name (snapshots and
// their groups) in a records bucket and a name index, the way volumes are.
type named[T any] struct {
	store.NamedRecords[T]
	records, names []byte
}

func (n named[T]) get(tx *bolt.Tx, id string) (T, error) {
	var zero T
	b := tx.Bucket(n.records).Get([]byte(id))
	if b == nil {
		return zero, fmt.Errorf("%s %s: %w", n.Kind, id, store.ErrNotFound)
	}
	v := new(T)
	if err := json.Unmarshal(b, v); err != nil {
		return zero, fmt.Errorf("decode %s %s: %w", n.Kind, id, err)
	}
	return *v, nil
}

func (n named[T]) put(tx *bolt.Tx, v T) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	id, _ := n.Key(v)
	return tx.Bucket(n.records).Put([]byte(id), b)
}

func (n named[T]) create(db *bolt.DB, v T) error {
	id, name := n.Key(v)
	if id == "" || name == "" {
		return fmt.Errorf("%s needs an ID and a name", n.Kind)
	}
	return db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(n.records).Get([]byte(id)) != nil {
			return fmt.Errorf("%s id %s: %w", n.Kind, id, store.ErrAlreadyExists)
		}
		names := tx.Bucket(n.names)
		if names.Get([]byte(name)) != nil {
			return fmt.Errorf("%s name %s: %w", n.Kind, name, store.ErrAlreadyExists)
		}
		c := n.Clone(v)
		n.Stamp(c, time.Now().UTC())
		if err := names.Put([]byte(name), []byte(id)); err != nil {
			return err
		}
		return n.put(tx, c)
	})
}

func (n named[T]) read(db *bolt.DB, id string) (T, error) {
	var v T
	err := db.View(func(tx *bolt.Tx) (err error) {
		v, err = n.get(tx, id)
		return err
	})
	return v, err
}

func (n named[T]) readByName(db *bolt.DB, name string) (T, error) {
	var v T
	err := db.View(func(tx *bolt.Tx) (err error) {
		id := tx.Bucket(n.names).Get([]byte(name))
		if id == nil {
			return fmt.Errorf("%s name %s: %w", n.Kind, name, store.ErrNotFound)
		}
		v, err = n.get(tx, string(id))
		return err
	})
	return v, err
}

func (n named[T]) list(db *bolt.DB) ([]T, error) {
	var out []T
	err := db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(n.records).ForEach(func(k, b []byte) error {
			v := new(T)
			if err := json.Unmarshal(b, v); err != nil {
				return fmt.Errorf("decode %s %s: %w", n.Kind, k, err)
			}
			out = append(out, *v)
			return nil
		})
	})
	return out, err
}

func (n named[T]) update(ctx context.Context, db *bolt.DB, id string, fn func(T) error) (T, error) {
	var out T
	err := db.Update(func(tx *bolt.Tx) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		v, err := n.get(tx, id)
		if err != nil {
			return err
		}
		_, name := n.Key(v)
		if err := fn(v); err != nil {
			return err
		}
		if gotID, gotName := n.Key(v); gotID != id || gotName != name {
			return fmt.Errorf("%s %s: ID and name are immutable", n.Kind, id)
		}
		n.Stamp(v, time.Now().UTC())
		if err := n.put(tx, v); err != nil {
			return err
		}
		out = n.Clone(v)
		return nil
	})
	return out, err
}

func (n named[T]) delete(db *bolt.DB, id string) error {
	return db.Update(func(tx *bolt.Tx) error {
		v, err := n.get(tx, id)
		if err != nil {
			return err
		}
		_, name := n.Key(v)
		if err := tx.Bucket(n.names).Delete([]byte(name)); err != nil {
			return err
		}
		return tx.Bucket(n.records).Delete([]byte(id))
	})
}

func (s *Store) CreateSnapshot(ctx context.Context, v *store.Snapshot) error {
	return snapshotRecordBucket.create(s.db, v)
}

func (s *Store) GetSnapshot(ctx context.Context, id string) (*store.Snapshot, error) {
	return snapshotRecordBucket.read(s.db, id)
}

func (s *Store) GetSnapshotByName(ctx context.Context, name string) (*store.Snapshot, error) {
	return snapshotRecordBucket.readByName(s.db, name)
}

func (s *Store) ListSnapshots(ctx context.Context) ([]*store.Snapshot, error) {
	return snapshotRecordBucket.list(s.db)
}

func (s *Store) UpdateSnapshot(ctx context.Context, id string, fn func(*store.Snapshot) error) (*store.Snapshot, error) {
	return snapshotRecordBucket.update(ctx, s.db, id, fn)
}

func (s *Store) DeleteSnapshot(ctx context.Context, id string) error {
	return snapshotRecordBucket.delete(s.db, id)
}

func (s *Store) CreateSnapshotGroup(ctx context.Context, g *store.SnapshotGroup) error {
	return groupRecordBucket.create(s.db, g)
}

func (s *Store) GetSnapshotGroup(ctx context.Context, id string) (*store.SnapshotGroup, error) {
	return groupRecordBucket.read(s.db, id)
}

func (s *Store) GetSnapshotGroupByName(ctx context.Context, name string) (*store.SnapshotGroup, error) {
	return groupRecordBucket.readByName(s.db, name)
}

func (s *Store) ListSnapshotGroups(ctx context.Context) ([]*store.SnapshotGroup, error) {
	return groupRecordBucket.list(s.db)
}

func (s *Store) UpdateSnapshotGroup(ctx context.Context, id string, fn func(*store.SnapshotGroup) error) (*store.SnapshotGroup, error) {
	return groupRecordBucket.update(ctx, s.db, id, fn)
}

func (s *Store) DeleteSnapshotGroup(ctx context.Context, id string) error {
	return groupRecordBucket.delete(s.db, id)
}
