package etcdstore

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
)

// named stores records with a unique ID and a unique name (snapshots and
// their groups) under records/<id> with a names/<name> index written in the
// same transactions, the way volumes are.
type named[T any] struct {
	store.NamedRecords[T]
	s              *Store
	records, names string // key prefixes below the store's prefix
}

func (s *Store) snapshots() named[*store.Snapshot] {
	return named[*store.Snapshot]{NamedRecords: store.SnapshotRecords, s: s, records: "snapshots/", names: "snapshot-names/"}
}

func (s *Store) snapshotGroups() named[*store.SnapshotGroup] {
	return named[*store.SnapshotGroup]{NamedRecords: store.SnapshotGroupRecords, s: s, records: "snapshot-groups/", names: "snapshot-group-names/"}
}

func (n named[T]) recordKey(id string) string { return n.s.prefix + n.records + id }
func (n named[T]) nameKey(name string) string { return n.s.prefix + n.names + name }

func (n named[T]) create(ctx context.Context, v T) error {
	id, name := n.Key(v)
	if id == "" || name == "" {
		return fmt.Errorf("%s needs an ID and a name", n.Kind)
	}
	c := n.Clone(v)
	n.Stamp(c, time.Now().UTC())
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	rk, nk := n.recordKey(id), n.nameKey(name)
	resp, err := n.s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(rk), "=", 0),
			clientv3.Compare(clientv3.CreateRevision(nk), "=", 0)).
		Then(clientv3.OpPut(rk, string(b)), clientv3.OpPut(nk, id)).
		Else(clientv3.OpGet(rk, clientv3.WithCountOnly())).
		Commit()
	if err != nil {
		return fmt.Errorf("create %s %s: %w", n.Kind, id, err)
	}
	if !resp.Succeeded {
		if resp.Responses[0].GetResponseRange().Count > 0 {
			return fmt.Errorf("%s id %s: %w", n.Kind, id, store.ErrAlreadyExists)
		}
		return fmt.Errorf("%s name %s: %w", n.Kind, name, store.ErrAlreadyExists)
	}
	return nil
}

// get returns the record and its key's ModRevision.
func (n named[T]) get(ctx context.Context, id string) (T, int64, error) {
	var zero T
	resp, err := n.s.cli.Get(ctx, n.recordKey(id))
	if err != nil {
		return zero, 0, fmt.Errorf("get %s %s: %w", n.Kind, id, err)
	}
	if len(resp.Kvs) == 0 {
		return zero, 0, fmt.Errorf("%s %s: %w", n.Kind, id, store.ErrNotFound)
	}
	v := new(T)
	if err := json.Unmarshal(resp.Kvs[0].Value, v); err != nil {
		return zero, 0, fmt.Errorf("decode %s %s: %w", n.Kind, id, err)
	}
	return *v, resp.Kvs[0].ModRevision, nil
}

func (n named[T]) read(ctx context.Context, id string) (T, error) {
	v, _, err := n.get(ctx, id)
	return v, err
}

// readByName: two reads are fine for the reason GetVolumeByName gives.
func (n named[T]) readByName(ctx context.Context, name string) (T, error) {
	var zero T
	resp, err := n.s.cli.Get(ctx, n.nameKey(name))
	if err != nil {
		return zero, fmt.Errorf("get %s name %s: %w", n.Kind, name, err)
	}
	if len(resp.Kvs) == 0 {
		return zero, fmt.Errorf("%s name %s: %w", n.Kind, name, store.ErrNotFound)
	}
	return n.read(ctx, string(resp.Kvs[0].Value))
}

func (n named[T]) list(ctx context.Context) ([]T, error) {
	var out []T
	p := n.s.prefix + n.records
	err := n.s.scan(ctx, p, p, func(k, b []byte) error {
		v := new(T)
		if err := json.Unmarshal(b, v); err != nil {
			return fmt.Errorf("decode %s: %w", k, err)
		}
		out = append(out, *v)
		return nil
	})
	return out, err
}

func (n named[T]) update(ctx context.Context, id string, fn func(T) error) (T, error) {
	var zero T
	for attempt := 0; attempt < maxCASAttempts; attempt++ {
		v, rev, err := n.get(ctx, id)
		if err != nil {
			return zero, err
		}
		_, name := n.Key(v)
		if err := fn(v); err != nil {
			return zero, err
		}
		if gotID, gotName := n.Key(v); gotID != id || gotName != name {
			return zero, fmt.Errorf("%s %s: ID and name are immutable", n.Kind, id)
		}
		n.Stamp(v, time.Now().UTC())
		b, err := json.Marshal(v)
		if err != nil {
			return zero, err
		}
		rk := n.recordKey(id)
		resp, err := n.s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(rk), "=", rev)).
			Then(clientv3.OpPut(rk, string(b))).
			Commit()
		if err != nil {
			return zero, fmt.Errorf("update %s %s: %w", n.Kind, id, err)
		}
		if resp.Succeeded {
			return v, nil
		}
		klog.V(4).InfoS("Record changed concurrently, retrying update", "kind", n.Kind, "id", id, "attempt", attempt+1)
	}
	return zero, fmt.Errorf("update %s %s: %w", n.Kind, id, store.ErrConflict)
}

func (n named[T]) delete(ctx context.Context, id string) error {
	for attempt := 0; attempt < maxCASAttempts; attempt++ {
		v, rev, err := n.get(ctx, id)
		if err != nil {
			return err
		}
		_, name := n.Key(v)
		rk := n.recordKey(id)
		resp, err := n.s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(rk), "=", rev)).
			Then(clientv3.OpDelete(rk), clientv3.OpDelete(n.nameKey(name))).
			Commit()
		if err != nil {
			return fmt.Errorf("delete %s %s: %w", n.Kind, id, err)
		}
		if resp.Succeeded {
			return nil
		}
	}
	return fmt.Errorf("delete %s %s: %w", n.Kind, id, store.ErrConflict)
}

func (s *Store) CreateSnapshot(ctx context.Context, v *store.Snapshot) error {
	return s.snapshots().create(ctx, v)
}

func (s *Store) GetSnapshot(ctx context.Context, id string) (*store.Snapshot, error) {
	return s.snapshots().read(ctx, id)
}

func (s *Store) GetSnapshotByName(ctx context.Context, name string) (*store.Snapshot, error) {
	return s.snapshots().readByName(ctx, name)
}

func (s *Store) ListSnapshots(ctx context.Context) ([]*store.Snapshot, error) {
	return s.snapshots().list(ctx)
}

func (s *Store) UpdateSnapshot(ctx context.Context, id string, fn func(*store.Snapshot) error) (*store.Snapshot, error) {
	return s.snapshots().update(ctx, id, fn)
}

func (s *Store) DeleteSnapshot(ctx context.Context, id string) error {
	return s.snapshots().delete(ctx, id)
}

func (s *Store) CreateSnapshotGroup(ctx context.Context, g *store.SnapshotGroup) error {
	return s.snapshotGroups().create(ctx, g)
}

func (s *Store) GetSnapshotGroup(ctx context.Context, id string) (*store.SnapshotGroup, error) {
	return s.snapshotGroups().read(ctx, id)
}

func (s *Store) GetSnapshotGroupByName(ctx context.Context, name string) (*store.SnapshotGroup, error) {
	return s.snapshotGroups().readByName(ctx, name)
}

func (s *Store) ListSnapshotGroups(ctx context.Context) ([]*store.SnapshotGroup, error) {
	return s.snapshotGroups().list(ctx)
}

func (s *Store) UpdateSnapshotGroup(ctx context.Context, id string, fn func(*store.SnapshotGroup) error) (*store.SnapshotGroup, error) {
	return s.snapshotGroups().update(ctx, id, fn)
}

func (s *Store) DeleteSnapshotGroup(ctx context.Context, id string) error {
	return s.snapshotGroups().delete(ctx, id)
}
