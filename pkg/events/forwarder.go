package events

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// ForwarderOptions configure a Forwarder.
type ForwarderOptions struct {
	// Network is "udp", "tcp" or "tls"; Address is host:port.
	Network string
	Address string
	// TLS is the client configuration for "tls" (server name, CA pool).
	TLS *tls.Config
	// QueuePath is the persistent queue file; QueueLimit its bound
	// (DefaultQueueLimit when 0).
	QueuePath  string
	QueueLimit int
	Formatter  *Formatter
	// Reconnect backoff, doubling from MinBackoff (200 ms) to MaxBackoff
	// (30 s); reset once a delivery is confirmed.
	MinBackoff, MaxBackoff time.Duration
	DialTimeout            time.Duration // 5 s
	WriteTimeout           time.Duration // 10 s
	// AckTimeout: written messages the server's TCP has not acknowledged
	// after this long mean a dead connection; they are re-sent on a new
	// one. Default 15 s.
	AckTimeout time.Duration
	// BatchSize messages are written per write call (256).
	BatchSize int
}

func (o *ForwarderOptions) defaults() error {
	switch o.Network {
	case "udp", "tcp", "tls":
	default:
		return fmt.Errorf("syslog network %q: want udp, tcp or tls", o.Network)
	}
	if o.Address == "" {
		return errors.New("syslog address is empty")
	}
	if o.QueuePath == "" {
		return errors.New("event queue path is empty")
	}
	if o.Formatter == nil {
		f, err := NewFormatter(DefaultFacility, 0)
		if err != nil {
			return err
		}
		o.Formatter = f
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.MinBackoff, 200*time.Millisecond)
	def(&o.MaxBackoff, 30*time.Second)
	def(&o.DialTimeout, 5*time.Second)
	def(&o.WriteTimeout, 10*time.Second)
	def(&o.AckTimeout, 15*time.Second)
	if o.BatchSize <= 0 {
		o.BatchSize = 256
	}
	return nil
}

// Forwarder delivers events to a syslog server at least once.
//
// Enqueue formats the events and appends them to a persistent queue
// (fsynced) before returning; Run delivers from the queue and removes a
// message only when its delivery is confirmed:
//
//   - TCP/TLS: when the server's TCP stack has acknowledged the bytes
//     (the socket's unacknowledged send queue, SIOCOUTQ, has drained past
//     them). A connection that closes, resets or leaves bytes
//     unacknowledged for AckTimeout is dropped and every unconfirmed
//     message is re-sent on the next one, so a server that is down or
//     restarting loses nothing; the receiver may see duplicates.
//   - UDP: datagrams have no acknowledgement. A message is confirmed when
//     no ICMP "port unreachable" came back within udpConfirmDelay, which
//     catches a stopped local server but not a lost datagram. UDP is best
//     effort; use TCP or TLS when loss matters.
//
// What plain syslog cannot cover: bytes the server's kernel acknowledged
// but the server process never read (killed between the two). RELP would
// close that gap; it is not implemented.
type Forwarder struct {
	o    ForwarderOptions
	q    *Queue
	wake chan struct{}

	sent       atomic.Uint64
	truncated  atomic.Uint64
	discarded  atomic.Uint64
	reconnects atomic.Uint64
	connected  atomic.Bool
	mu         sync.Mutex
	lastErr    error
}

// udpConfirmDelay is how long a datagram must go without an ICMP error
// before it counts as delivered; loopback and LAN errors arrive far sooner.
const udpConfirmDelay = 50 * time.Millisecond

// pollInterval is how often unconfirmed TCP bytes are re-checked while
// waiting for the server's acknowledgement.
const pollInterval = 20 * time.Millisecond

// maxInflight bounds written-but-unconfirmed batches, so a reconnect
// re-sends a bounded amount.
const maxInflight = 64

// NewForwarder opens the queue. Call Run to deliver and Close when done.
func NewForwarder(o ForwarderOptions) (*Forwarder, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	q, err := OpenQueue(o.QueuePath, o.QueueLimit)
	if err != nil {
		return nil, err
	}
	return &Forwarder{o: o, q: q, wake: make(chan struct{}, 1)}, nil
}

// Close closes the queue; call it after Run has returned.
func (f *Forwarder) Close() error { return f.q.Close() }

// Enqueue records events for delivery. When it returns nil the events are
// on disk and will be delivered even if the process restarts.
func (f *Forwarder) Enqueue(es ...Event) error {
	msgs := make([][]byte, 0, len(es))
	for _, e := range es {
		if err := e.Validate(); err != nil {
			return err
		}
		msgs = append(msgs, f.o.Formatter.Format(e))
	}
	if _, err := f.q.Push(msgs...); err != nil {
		return err
	}
	select {
	case f.wake <- struct{}{}:
	default:
	}
	return nil
}

// ForwarderStats describe delivery.
type ForwarderStats struct {
	Queued  int    // waiting for confirmed delivery
	Dropped uint64 // dropped by the queue limit, ever (persistent)
	Sent    uint64 // confirmed since start
	// Truncated: messages longer than MaxMessageSize found in the queue
	// (queued by a version without event limits), sent cut to it, since
	// start.
	Truncated uint64
	// Discarded: messages the transport refused as too large even so
	// (EMSGSIZE), set aside unsent so the queue moves on, since start.
	Discarded  uint64
	Reconnects uint64
	Connected  bool
	LastError  string
}

// Stats returns delivery counters.
func (f *Forwarder) Stats() ForwarderStats {
	qs, _ := f.q.Stats()
	s := ForwarderStats{Queued: qs.Len, Dropped: qs.Dropped, Sent: f.sent.Load(), Truncated: f.truncated.Load(),
		Discarded: f.discarded.Load(), Reconnects: f.reconnects.Load(), Connected: f.connected.Load()}
	f.mu.Lock()
	if f.lastErr != nil {
		s.LastError = f.lastErr.Error()
	}
	f.mu.Unlock()
	return s
}

func (f *Forwarder) setErr(err error) {
	f.mu.Lock()
	f.lastErr = err
	f.mu.Unlock()
}

// inflight is a written, unconfirmed batch.
type inflight struct {
	lastSeq uint64
	count   int
	end     uint64 // socket bytes written through the batch (stream)
	at      time.Time
}

// Run delivers queued messages until ctx ends.
func (f *Forwarder) Run(ctx context.Context) error {
	backoff := f.o.MinBackoff
	var s *sink
	var pending []inflight
	var sentUpTo uint64
	defer func() {
		if s != nil {
			s.close()
		}
		f.connected.Store(false)
	}()
	sleep := func() bool {
		t := time.NewTimer(backoff)
		defer t.Stop()
		backoff = min(backoff*2, f.o.MaxBackoff)
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	// drop closes a failed connection and waits the backoff, which keeps
	// growing until a delivery is confirmed: a server that accepts and
	// then resets (or a UDP port answering "unreachable") is retried
	// at a bounded rate. It reports false when ctx ended.
	drop := func(why error) bool {
		klog.InfoS("Syslog connection lost; unconfirmed messages will be re-sent", "address", f.o.Address, "err", why, "unconfirmed", len(pending))
		f.setErr(why)
		s.close()
		s = nil
		f.connected.Store(false)
		return sleep()
	}
	for {
		if ctx.Err() != nil {
			return nil
		}
		if s == nil {
			var err error
			s, err = dial(ctx, &f.o)
			if err != nil {
				f.setErr(err)
				klog.V(2).InfoS("Cannot reach syslog server; will retry", "network", f.o.Network, "address", f.o.Address, "err", err, "backoff", backoff)
				if !sleep() {
					return nil
				}
				continue
			}
			f.reconnects.Add(1)
			f.connected.Store(true)
			// A new connection re-sends everything not confirmed on the old.
			pending, sentUpTo = nil, 0
			klog.V(2).InfoS("Connected to syslog server", "network", f.o.Network, "address", f.o.Address)
		}
		if err := s.err(); err != nil {
			if !drop(err) {
				return nil
			}
			continue
		}

		// Confirm what the server has acknowledged.
		now := time.Now()
		acked, err := s.acked()
		if err != nil {
			if !drop(err) {
				return nil
			}
			continue
		}
		n, count := 0, 0
		for n < len(pending) && s.confirmed(pending[n], acked, now) {
			count += pending[n].count
			n++
		}
		if n > 0 {
			if err := f.q.Ack(pending[n-1].lastSeq); err != nil {
				return fmt.Errorf("event queue: %w", err)
			}
			f.sent.Add(uint64(count))
			pending = pending[n:]
			backoff = f.o.MinBackoff
		}
		if len(pending) > 0 && now.Sub(pending[0].at) > f.o.AckTimeout {
			if !drop(fmt.Errorf("no acknowledgement from %s for %v", f.o.Address, f.o.AckTimeout)) {
				return nil
			}
			continue
		}

		// Send the next batch.
		if len(pending) < maxInflight {
			items, err := f.q.Read(sentUpTo, f.o.BatchSize)
			if err != nil {
				return fmt.Errorf("event queue: %w", err)
			}
			if len(items) > 0 {
				res, err := s.write(items, f.o.WriteTimeout)
				if err != nil {
					if !drop(err) {
						return nil
					}
					continue
				}
				f.truncated.Add(uint64(res.truncated))
				f.discarded.Add(uint64(res.discarded))
				last := items[len(items)-1].Seq
				pending = append(pending, inflight{lastSeq: last, count: len(items) - res.discarded, end: res.end, at: time.Now()})
				sentUpTo = last
				continue
			}
		}

		// Nothing to send: wait for new events, the connection's end, or
		// the next confirmation check.
		var tick <-chan time.Time
		var t *time.Timer
		if len(pending) > 0 {
			t = time.NewTimer(pollInterval)
			tick = t.C
		}
		select {
		case <-ctx.Done():
		case <-f.wake:
		case <-s.done:
		case <-tick:
		}
		if t != nil {
			t.Stop()
		}
	}
}

// sink is one connection to the syslog server.
type sink struct {
	stream  bool
	conn    net.Conn // what messages are written to (tls.Conn for TLS)
	raw     syscall.RawConn
	written atomic.Uint64 // bytes handed to the socket
	done    chan struct{} // closed when the reader sees the connection end
	rerr    atomic.Value  // error that ended it
	once    sync.Once
}

// countingConn counts the bytes written to the socket, below TLS, so they
// can be compared with the socket's unacknowledged queue.
type countingConn struct {
	net.Conn
	s *sink
}

func (c countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.s.written.Add(uint64(n))
	return n, err
}

func dial(ctx context.Context, o *ForwarderOptions) (*sink, error) {
	d := net.Dialer{Timeout: o.DialTimeout}
	network := "tcp"
	if o.Network == "udp" {
		network = "udp"
	}
	c, err := d.DialContext(ctx, network, o.Address)
	if err != nil {
		return nil, err
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("%T is not a socket", c)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		c.Close()
		return nil, err
	}
	s := &sink{stream: network == "tcp", raw: raw, done: make(chan struct{})}
	s.conn = c
	if o.Network != "udp" {
		s.conn = countingConn{Conn: c, s: s}
	}
	if o.Network == "tls" {
		cfg := o.TLS
		if cfg == nil {
			cfg = &tls.Config{}
		}
		if cfg.ServerName == "" {
			cfg = cfg.Clone()
			host, _, _ := net.SplitHostPort(o.Address)
			cfg.ServerName = host
		}
		tc := tls.Client(s.conn, cfg)
		hctx, cancel := context.WithTimeout(ctx, o.DialTimeout)
		defer cancel()
		if err := tc.HandshakeContext(hctx); err != nil {
			c.Close()
			return nil, fmt.Errorf("TLS handshake with %s: %w", o.Address, err)
		}
		s.conn = tc
	}
	// A syslog server never sends application data, so a read that
	// returns means the connection ended (EOF, reset, TLS alert, or for
	// UDP an ICMP port-unreachable reported as ECONNREFUSED). Reading also
	// consumes TLS 1.3 session tickets.
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, err := s.conn.Read(buf); err != nil {
				s.fail(err)
				return
			}
		}
	}()
	return s, nil
}

func (s *sink) fail(err error) {
	s.once.Do(func() {
		s.rerr.Store(err)
		close(s.done)
	})
}

func (s *sink) err() error {
	select {
	case <-s.done:
		return s.rerr.Load().(error)
	default:
		return nil
	}
}

func (s *sink) close() {
	s.fail(net.ErrClosed)
	s.conn.Close()
}

// writeResult is what a batch's write did beside sending.
type writeResult struct {
	end       uint64 // socket byte offset at the batch's end (stream)
	truncated int    // messages cut to MaxMessageSize
	discarded int    // datagrams refused as too large (EMSGSIZE), not sent
}

// sendable returns msg cut to MaxMessageSize on a UTF-8 boundary, and
// whether it was cut. Messages are formatted within it (Format); longer
// ones were queued by a version without event limits.
func sendable(msg []byte) ([]byte, bool) {
	if len(msg) <= MaxMessageSize {
		return msg, false
	}
	n := MaxMessageSize
	for n > 0 && !utf8.RuneStart(msg[n]) {
		n--
	}
	return msg[:n], true
}

// write sends the batch. No message can hold the queue up: one longer than
// MaxMessageSize is sent truncated, and a datagram the kernel still refuses
// as too large (EMSGSIZE) is set aside unsent; both are counted and logged,
// and confirmed with the batch like the others.
func (s *sink) write(items []QueueItem, timeout time.Duration) (writeResult, error) {
	var res writeResult
	if err := s.conn.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return res, err
	}
	if !s.stream {
		for _, it := range items {
			msg, cut := sendable(it.Data)
			if cut {
				res.truncated++
				klog.InfoS("Syslog message longer than the maximum; sending it truncated", "seq", it.Seq, "bytes", len(it.Data), "maxBytes", MaxMessageSize)
			}
			if _, err := s.conn.Write(msg); err != nil {
				if errors.Is(err, syscall.EMSGSIZE) {
					res.discarded++
					klog.ErrorS(err, "Syslog datagram refused as too large; setting the message aside", "seq", it.Seq, "bytes", len(msg))
					continue
				}
				return res, err
			}
		}
		return res, nil
	}
	var buf bytes.Buffer
	for _, it := range items {
		msg, cut := sendable(it.Data)
		if cut {
			res.truncated++
			klog.InfoS("Syslog message longer than the maximum; sending it truncated", "seq", it.Seq, "bytes", len(it.Data), "maxBytes", MaxMessageSize)
		}
		buf.Write(OctetCounted(msg))
	}
	if _, err := s.conn.Write(buf.Bytes()); err != nil {
		return res, err
	}
	res.end = s.written.Load()
	return res, nil
}

// acked returns how many socket bytes the peer has acknowledged.
func (s *sink) acked() (uint64, error) {
	if !s.stream {
		return 0, nil
	}
	var outq int
	var ierr error
	if err := s.raw.Control(func(fd uintptr) {
		outq, ierr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ)
	}); err != nil {
		return 0, err
	}
	if ierr != nil {
		return 0, ierr
	}
	w := s.written.Load()
	if uint64(outq) > w {
		return 0, nil
	}
	return w - uint64(outq), nil
}

func (s *sink) confirmed(b inflight, acked uint64, now time.Time) bool {
	if s.stream {
		return b.end <= acked
	}
	return now.Sub(b.at) >= udpConfirmDelay
}
