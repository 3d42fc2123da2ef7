package fakeagent

import (
	"bytes"
	"context"
	"fmt"
	"sort"

	"github.com/nvmirror/nvmirror/pkg/provisioner"
)

// blockSize is the fake's unit of data: files are maps of 4 KiB blocks.
const blockSize = 4096

// File is a fake sparse file: block index → 4 KiB of data (absent blocks
// read as zeros and are holes).
type File struct {
	Size   int64
	Blocks map[int64][]byte
}

func newFile(size int64) *File { return &File{Size: size, Blocks: map[int64][]byte{}} }

func (f *File) clone() *File {
	out := newFile(f.Size)
	for k, b := range f.Blocks {
		out.Blocks[k] = append([]byte(nil), b...)
	}
	return out
}

// write stores data at off (block-aligned tests keep this simple; partial
// blocks are merged).
func (f *File) write(off int64, data []byte) {
	for len(data) > 0 {
		blk, in := off/blockSize, off%blockSize
		b := f.Blocks[blk]
		if b == nil {
			b = make([]byte, blockSize)
		}
		n := copy(b[in:], data)
		f.Blocks[blk] = b
		off += int64(n)
		data = data[n:]
	}
}

// read returns [off, off+n) with holes as zeros.
func (f *File) read(off, n int64) []byte {
	out := make([]byte, n)
	for i := int64(0); i < n; {
		blk, in := (off+i)/blockSize, (off+i)%blockSize
		m := min(blockSize-in, n-i)
		if b := f.Blocks[blk]; b != nil {
			copy(out[i:i+m], b[in:in+m])
		}
		i += m
	}
	return out
}

func (f *File) allocated() int64 { return int64(len(f.Blocks)) * blockSize }

func (f *File) sortedBlocks() []int64 {
	ks := make([]int64, 0, len(f.Blocks))
	for k := range f.Blocks {
		ks = append(ks, k)
	}
	sort.Slice(ks, func(i, j int) bool { return ks[i] < ks[j] })
	return ks
}

// Snapshot is a snapshot copy held by a fake node.
type Snapshot struct {
	provisioner.HeldSnapshot
	Data *File
	// Complete is false while a WriteData stream is receiving it.
	Complete bool
}

// WriteReplica writes data into a replica's file (what a host's writes
// would do), for tests.
func (c *Cluster) WriteReplica(node, replicaID string, off int64, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nodes[node].file(replicaID).write(off, data)
}

// ReadReplica returns [off, off+n) of a replica's file.
func (c *Cluster) ReadReplica(node, replicaID string, off, n int64) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[node].file(replicaID).read(off, n)
}

// SetSuperblock sets what the md superblock of a replica's file reads as
// (the fake has no md: tests say what each leg carries).
func (c *Cluster) SetSuperblock(node, replicaID string, sb provisioner.Superblock) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[node]
	if n.Superblocks == nil {
		n.Superblocks = map[string]provisioner.Superblock{}
	}
	n.Superblocks[replicaID] = sb
}

// SnapshotIDs returns the sorted IDs of the complete snapshot copies a node
// holds.
func (c *Cluster) SnapshotIDs(node string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for id, s := range c.nodes[node].Snapshots {
		if s.Complete {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// ReadSnapshot returns [off, off+n) of a node's snapshot copy.
func (c *Cluster) ReadSnapshot(node, snapshotID string, off, n int64) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[node].Snapshots[snapshotID].Data.read(off, n)
}

// SetSnapshotHook installs a hook run before CreateSnapshot and WriteData
// (outside the lock), like CreateHook.
func (c *Cluster) SetSnapshotHook(id string, hook func(snapshotID string) error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nodes[id].SnapshotHook = hook
}

// file returns a replica's data, created empty at the replica's size.
func (n *Node) file(replicaID string) *File {
	if n.Files == nil {
		n.Files = map[string]*File{}
	}
	f := n.Files[replicaID]
	if f == nil {
		var size int64
		if r := n.Replicas[replicaID]; r != nil {
			size = r.SizeBytes
		}
		f = newFile(size)
		n.Files[replicaID] = f
	}
	if r := n.Replicas[replicaID]; r != nil && r.SizeBytes > f.Size {
		f.Size = r.SizeBytes
	}
	return f
}

func (a *client) snapshotHook(id string) error {
	a.c.mu.Lock()
	hook := a.c.nodes[a.id].SnapshotHook
	a.c.mu.Unlock()
	if hook != nil {
		return hook(id)
	}
	return nil
}

func (n *Node) snapshots() map[string]*Snapshot {
	if n.Snapshots == nil {
		n.Snapshots = map[string]*Snapshot{}
	}
	return n.Snapshots
}

func (a *client) CreateSnapshot(ctx context.Context, snapshotID, replicaID string) (provisioner.HeldSnapshot, provisioner.Superblock, error) {
	if err := a.snapshotHook(snapshotID); err != nil {
		return provisioner.HeldSnapshot{}, provisioner.Superblock{}, err
	}
	n, unlock, err := a.node()
	if err != nil {
		return provisioner.HeldSnapshot{}, provisioner.Superblock{}, err
	}
	defer unlock()
	if s, ok := n.snapshots()[snapshotID]; ok && s.Complete {
		if s.SourceReplicaID != replicaID {
			return provisioner.HeldSnapshot{}, provisioner.Superblock{}, fmt.Errorf("snapshot %s exists from replica %q: %w", snapshotID, s.SourceReplicaID, provisioner.ErrAlreadyExists)
		}
		return s.HeldSnapshot, n.Superblocks[replicaID], nil
	}
	r, ok := n.Replicas[replicaID]
	if !ok {
		return provisioner.HeldSnapshot{}, provisioner.Superblock{}, fmt.Errorf("replica %s: %w", replicaID, provisioner.ErrNotFound)
	}
	data := n.file(replicaID).clone()
	s := &Snapshot{HeldSnapshot: provisioner.HeldSnapshot{ID: snapshotID, SizeBytes: r.SizeBytes, AllocatedBytes: data.allocated(),
		SourceReplicaID: replicaID, VolumeID: r.VolumeID, Reflinked: n.Reflink}, Data: data, Complete: true}
	n.snapshots()[snapshotID] = s
	if !n.Reflink {
		n.AvailableBytes -= s.AllocatedBytes
	}
	return s.HeldSnapshot, n.Superblocks[replicaID], nil
}

func (a *client) DeleteSnapshot(ctx context.Context, snapshotID string) error {
	n, unlock, err := a.node()
	if err != nil {
		return err
	}
	defer unlock()
	if s, ok := n.snapshots()[snapshotID]; ok {
		if !s.Reflinked {
			n.AvailableBytes += s.Data.allocated()
		}
		delete(n.Snapshots, snapshotID)
	}
	return nil
}

func (a *client) GetSnapshot(ctx context.Context, snapshotID string) (provisioner.HeldSnapshot, error) {
	n, unlock, err := a.node()
	if err != nil {
		return provisioner.HeldSnapshot{}, err
	}
	defer unlock()
	s, ok := n.snapshots()[snapshotID]
	if !ok || !s.Complete {
		return provisioner.HeldSnapshot{}, fmt.Errorf("snapshot %s: %w", snapshotID, provisioner.ErrNotFound)
	}
	return s.HeldSnapshot, nil
}

func (a *client) ListSnapshots(ctx context.Context) ([]provisioner.HeldSnapshot, error) {
	n, unlock, err := a.node()
	if err != nil {
		return nil, err
	}
	defer unlock()
	var out []provisioner.HeldSnapshot
	for _, s := range n.snapshots() {
		if s.Complete {
			out = append(out, s.HeldSnapshot)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func (a *client) ReadSuperblock(ctx context.Context, replicaID string) (provisioner.Superblock, error) {
	n, unlock, err := a.node()
	if err != nil {
		return provisioner.Superblock{}, err
	}
	defer unlock()
	if _, ok := n.Replicas[replicaID]; !ok {
		return provisioner.Superblock{}, fmt.Errorf("replica %s: %w", replicaID, provisioner.ErrNotFound)
	}
	return n.Superblocks[replicaID], nil
}

// source returns the file a DataRef names.
func (n *Node) source(ref provisioner.DataRef) (*File, error) {
	if ref.SnapshotID != "" {
		s, ok := n.snapshots()[ref.SnapshotID]
		if !ok || !s.Complete {
			return nil, fmt.Errorf("snapshot %s: %w", ref.SnapshotID, provisioner.ErrNotFound)
		}
		return s.Data, nil
	}
	if _, ok := n.Replicas[ref.ReplicaID]; !ok {
		return nil, fmt.Errorf("replica %s: %w", ref.ReplicaID, provisioner.ErrNotFound)
	}
	return n.file(ref.ReplicaID), nil
}

func (a *client) ReadData(ctx context.Context, src provisioner.DataRef, offset, length int64, fn func(int64, []byte) error) error {
	n, unlock, err := a.node()
	if err != nil {
		return err
	}
	f, err := n.source(src)
	if err != nil {
		unlock()
		return err
	}
	f = f.clone() // deliver outside the lock
	unlock()
	end, err := window(offset, length, f.Size)
	if err != nil {
		return err
	}
	for _, blk := range f.sortedBlocks() {
		off := blk * blockSize
		if off+blockSize <= offset || off >= end {
			continue
		}
		lo, hi := max(off, offset), min(off+blockSize, end)
		if err := fn(lo, f.Blocks[blk][lo-off:hi-off]); err != nil {
			return err
		}
	}
	return nil
}

func (a *client) WriteData(ctx context.Context, dst provisioner.DataRef, produce func(send func(int64, []byte) error) error) (provisioner.HeldSnapshot, error) {
	if dst.SnapshotID != "" {
		if err := a.snapshotHook(dst.SnapshotID); err != nil {
			return provisioner.HeldSnapshot{}, err
		}
	}
	n, unlock, err := a.node()
	if err != nil {
		return provisioner.HeldSnapshot{}, err
	}
	var f *File
	switch {
	case dst.SnapshotID != "":
		if s, ok := n.snapshots()[dst.SnapshotID]; ok && s.Complete {
			unlock()
			if s.SizeBytes != dst.SizeBytes {
				return provisioner.HeldSnapshot{}, fmt.Errorf("snapshot %s exists with %d bytes, not %d: %w", dst.SnapshotID, s.SizeBytes, dst.SizeBytes, provisioner.ErrAlreadyExists)
			}
			return s.HeldSnapshot, nil
		}
		f = newFile(dst.SizeBytes)
	default:
		r, ok := n.Replicas[dst.ReplicaID]
		if !ok {
			unlock()
			return provisioner.HeldSnapshot{}, fmt.Errorf("replica %s: %w", dst.ReplicaID, provisioner.ErrNotFound)
		}
		if len(r.Hosts) > 0 {
			unlock()
			return provisioner.HeldSnapshot{}, fmt.Errorf("replica %s has allowed hosts: %w", dst.ReplicaID, provisioner.ErrFailedPrecondition)
		}
		f = n.file(dst.ReplicaID).clone()
	}
	unlock()
	var written int64
	err = produce(func(off int64, data []byte) error {
		if off < 0 || off+int64(len(data)) > f.Size {
			return fmt.Errorf("chunk at %d+%d beyond %d: %w", off, len(data), f.Size, provisioner.ErrInvalidArgument)
		}
		f.write(off, data)
		written += int64(len(data))
		return nil
	})
	if err != nil {
		return provisioner.HeldSnapshot{}, err // nothing committed
	}
	n, unlock, err = a.node()
	if err != nil {
		return provisioner.HeldSnapshot{}, err
	}
	defer unlock()
	if dst.SnapshotID == "" {
		n.Files[dst.ReplicaID] = f
		return provisioner.HeldSnapshot{}, nil
	}
	s := &Snapshot{HeldSnapshot: provisioner.HeldSnapshot{ID: dst.SnapshotID, SizeBytes: dst.SizeBytes, AllocatedBytes: f.allocated(), VolumeID: dst.VolumeID}, Data: f, Complete: true}
	n.snapshots()[dst.SnapshotID] = s
	n.AvailableBytes -= s.AllocatedBytes
	return s.HeldSnapshot, nil
}

func (a *client) SnapshotRanges(ctx context.Context, snapshotID, base string, offset, length int64, max int) ([]provisioner.ByteRange, int64, error) {
	n, unlock, err := a.node()
	if err != nil {
		return nil, 0, err
	}
	defer unlock()
	f, err := n.source(provisioner.DataRef{SnapshotID: snapshotID})
	if err != nil {
		return nil, 0, err
	}
	var b *File
	if base != "" {
		if b, err = n.source(provisioner.DataRef{SnapshotID: base}); err != nil {
			return nil, 0, err
		}
	}
	if b != nil && b.Size > f.Size {
		return nil, 0, fmt.Errorf("base_snapshot_id: snapshot %s (%d bytes) is larger than %s (%d bytes): %w", base, b.Size, snapshotID, f.Size, provisioner.ErrInvalidArgument)
	}
	if max < 0 {
		return nil, 0, fmt.Errorf("max_ranges %d: %w", max, provisioner.ErrInvalidArgument)
	}
	if max == 0 {
		max = 1000
	}
	end, err := window(offset, length, f.Size)
	if err != nil {
		return nil, 0, err
	}
	// Candidate blocks: allocated in either file.
	cand := map[int64]bool{}
	for k := range f.Blocks {
		cand[k] = true
	}
	if b != nil {
		for k := range b.Blocks {
			cand[k] = true
		}
	}
	var blocks []int64
	for k := range cand {
		off := k * blockSize
		if off+blockSize <= offset || off >= end {
			continue
		}
		if b == nil {
			if f.Blocks[k] != nil {
				blocks = append(blocks, k)
			}
			continue
		}
		// Like the agent: beyond the end of a smaller base, whatever the
		// snapshot allocates is changed.
		if off >= b.Size && f.Blocks[k] != nil || off < b.Size && !bytes.Equal(f.read(off, blockSize), b.read(off, blockSize)) {
			blocks = append(blocks, k)
		}
	}
	sort.Slice(blocks, func(i, j int) bool { return blocks[i] < blocks[j] })
	var out []provisioner.ByteRange
	for i, k := range blocks {
		off := max64(k*blockSize, offset)
		hi := min((k+1)*blockSize, end)
		if len(out) > 0 && out[len(out)-1].Offset+out[len(out)-1].Length == off {
			out[len(out)-1].Length += hi - off
			continue
		}
		if len(out) == max {
			return out, blocks[i] * blockSize, nil
		}
		out = append(out, provisioner.ByteRange{Offset: off, Length: hi - off})
	}
	return out, 0, nil
}

// window is the agent's check of [offset, offset+length) (length 0: to
// the end) against a file of size bytes: out of range is InvalidArgument.
func window(offset, length, size int64) (int64, error) {
	switch {
	case offset < 0 || offset > size:
		return 0, fmt.Errorf("offset %d outside the %d bytes: %w", offset, size, provisioner.ErrInvalidArgument)
	case length < 0 || length > size-offset:
		return 0, fmt.Errorf("length %d from offset %d beyond the %d bytes: %w", length, offset, size, provisioner.ErrInvalidArgument)
	case length == 0:
		return size, nil
	}
	return offset + length, nil
}

func max64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}
