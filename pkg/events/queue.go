package events

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	"k8s.io/klog/v2"
)

// DefaultQueueLimit bounds the forwarder's queue: at a few hundred bytes a
// message, 100000 messages is ~30-50 MB on disk, days of a busy cluster's
// events during a syslog outage.
const DefaultQueueLimit = 100000

var (
	queueItems = []byte("items") // seq (8 bytes big endian) → message
	queueMeta  = []byte("meta")
	keyNext    = []byte("next")    // next seq to assign
	keyDropped = []byte("dropped") // messages dropped by the limit, ever
)

// QueueItem is one queued message.
type QueueItem struct {
	Seq  uint64
	Data []byte
}

// Queue is a persistent FIFO of messages in a bbolt file. Push returns only
// after the messages are fsynced, so a message the forwarder accepted
// survives a crash; messages leave the queue only when Ack says they were
// delivered.
//
// When full, Push drops the oldest messages (and counts them): the newest
// events describe the cluster's current state, which is what an operator
// returning from a long syslog outage needs, and event intake must never
// block on a syslog server that is down. Sequence numbers stay contiguous
// from the head, so the length is next − head.
type Queue struct {
	db    *bolt.DB
	limit int
	mu    sync.Mutex // serialises Push's read-then-trim with Ack
}

// OpenQueue opens (creating) the queue file at path. limit ≤ 0 means
// DefaultQueueLimit.
func OpenQueue(path string, limit int) (*Queue, error) {
	if limit <= 0 {
		limit = DefaultQueueLimit
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 10 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open event queue %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(queueItems); err != nil {
			return err
		}
		_, err := tx.CreateBucketIfNotExists(queueMeta)
		return err
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	return &Queue{db: db, limit: limit}, nil
}

// Close closes the file.
func (q *Queue) Close() error { return q.db.Close() }

func be(n uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, n)
	return b
}

func getUint(b *bolt.Bucket, k []byte) uint64 {
	if v := b.Get(k); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

// head returns the first queued seq (or next when empty).
func head(items *bolt.Bucket, next uint64) uint64 {
	k, _ := items.Cursor().First()
	if k == nil {
		return next
	}
	return binary.BigEndian.Uint64(k)
}

// Push appends msgs in one fsynced transaction and returns how many old
// messages were dropped to stay within the limit.
func (q *Queue) Push(msgs ...[]byte) (dropped int, err error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	err = q.db.Update(func(tx *bolt.Tx) error {
		items, meta := tx.Bucket(queueItems), tx.Bucket(queueMeta)
		next := getUint(meta, keyNext)
		if next == 0 {
			next = 1
		}
		for _, m := range msgs {
			if err := items.Put(be(next), m); err != nil {
				return err
			}
			next++
		}
		if err := meta.Put(keyNext, be(next)); err != nil {
			return err
		}
		h := head(items, next)
		for n := next - h; n > uint64(q.limit); n-- {
			if err := items.Delete(be(h)); err != nil {
				return err
			}
			h++
			dropped++
		}
		if dropped > 0 {
			return meta.Put(keyDropped, be(getUint(meta, keyDropped)+uint64(dropped)))
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("event queue push: %w", err)
	}
	if dropped > 0 {
		klog.Warningf("Event queue full (limit %d): dropped the %d oldest messages", q.limit, dropped)
	}
	return dropped, nil
}

// Read returns up to n messages with seq > after, oldest first.
func (q *Queue) Read(after uint64, n int) ([]QueueItem, error) {
	var out []QueueItem
	err := q.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(queueItems).Cursor()
		for k, v := c.Seek(be(after + 1)); k != nil && len(out) < n; k, v = c.Next() {
			out = append(out, QueueItem{Seq: binary.BigEndian.Uint64(k), Data: append([]byte(nil), v...)})
		}
		return nil
	})
	return out, err
}

// Ack removes every message with seq ≤ upTo (delivered).
func (q *Queue) Ack(upTo uint64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.db.Update(func(tx *bolt.Tx) error {
		c := tx.Bucket(queueItems).Cursor()
		for k, _ := c.First(); k != nil && binary.BigEndian.Uint64(k) <= upTo; k, _ = c.First() {
			if err := c.Delete(); err != nil {
				return err
			}
		}
		return nil
	})
}

// QueueStats describes the queue.
type QueueStats struct {
	Len     int
	Dropped uint64
}

// Stats returns the current length and the drop counter (persistent).
func (q *Queue) Stats() (QueueStats, error) {
	var s QueueStats
	err := q.db.View(func(tx *bolt.Tx) error {
		items, meta := tx.Bucket(queueItems), tx.Bucket(queueMeta)
		next := getUint(meta, keyNext)
		if next == 0 {
			return nil
		}
		s.Len = int(next - head(items, next))
		s.Dropped = getUint(meta, keyDropped)
		return nil
	})
	return s, err
}
