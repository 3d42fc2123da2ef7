package events

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/pkg/rpcauth/rpcauthtest"
)

// collector is a minimal syslog server: octet-counted frames over TCP (or
// TLS), datagrams over UDP. It records every message body's MSG part.
type collector struct {
	mu   sync.Mutex
	msgs []string
	ln   net.Listener
	pc   net.PacketConn
	wg   sync.WaitGroup
	cons []net.Conn
}

func (c *collector) add(m []byte) {
	c.mu.Lock()
	c.msgs = append(c.msgs, string(m))
	c.mu.Unlock()
}

func (c *collector) got() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.msgs...)
}

func startTCP(t *testing.T, addr string, tlsCfg *tls.Config) *collector {
	t.Helper()
	var ln net.Listener
	var err error
	deadline := time.Now().Add(10 * time.Second)
	for {
		ln, err = net.Listen("tcp", addr)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond) // port still held by the previous listener
	}
	if err != nil {
		t.Fatal(err)
	}
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	c := &collector{ln: ln}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			c.mu.Lock()
			c.cons = append(c.cons, conn)
			c.mu.Unlock()
			c.wg.Add(1)
			go func() {
				defer c.wg.Done()
				r := bufio.NewReader(conn)
				for {
					m, err := readOctetCounted(r)
					if err != nil {
						return
					}
					c.add(m)
				}
			}()
		}
	}()
	return c
}

func startUDP(t *testing.T, addr string) *collector {
	t.Helper()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{pc: pc}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		buf := make([]byte, 65536)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			c.add(buf[:n])
		}
	}()
	return c
}

// stop closes the listener and every connection, like a server going down.
func (c *collector) stop() {
	if c.ln != nil {
		c.ln.Close()
	}
	if c.pc != nil {
		c.pc.Close()
	}
	c.mu.Lock()
	for _, conn := range c.cons {
		conn.Close()
	}
	c.mu.Unlock()
	c.wg.Wait()
}

func (c *collector) addr() string {
	if c.ln != nil {
		return c.ln.Addr().String()
	}
	return c.pc.LocalAddr().String()
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func testEvent(i int) Event {
	return Event{Time: time.Now(), Type: VolumeDegraded, Volume: fmt.Sprintf("vol-%03d", i), Node: "node-a"}
}

// hasAll reports whether every vol-000..vol-(n-1) appears among msgs.
func hasAll(msgs []string, n int) (bool, []int) {
	var missing []int
	for i := 0; i < n; i++ {
		want := fmt.Sprintf(`volume="vol-%03d"`, i)
		found := false
		for _, m := range msgs {
			if strings.Contains(m, want) {
				found = true
				break
			}
		}
		if !found {
			missing = append(missing, i)
		}
	}
	return len(missing) == 0, missing
}

func startForwarder(t *testing.T, o ForwarderOptions) (*Forwarder, func()) {
	t.Helper()
	if o.QueuePath == "" {
		o.QueuePath = filepath.Join(t.TempDir(), "queue.db")
	}
	o.MinBackoff, o.MaxBackoff = 20*time.Millisecond, 200*time.Millisecond
	f, err := NewForwarder(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	return f, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		f.Close()
	}
}

func TestForwarderSurvivesServerOutage(t *testing.T) {
	for _, network := range []string{"tcp", "tls", "udp"} {
		t.Run(network, func(t *testing.T) {
			var serverTLS, clientTLS *tls.Config
			if network == "tls" {
				cert := rpcauthtest.NewCert(t)
				serverTLS, clientTLS = cert.ServerTLS(), cert.ClientTLS()
			}
			start := func(addr string) *collector {
				if network == "udp" {
					return startUDP(t, addr)
				}
				return startTCP(t, addr, serverTLS)
			}
			srv := start("127.0.0.1:0")
			addr := srv.addr()
			f, stop := startForwarder(t, ForwarderOptions{Network: network, Address: addr, TLS: clientTLS})
			defer stop()

			for i := 0; i < 10; i++ {
				if err := f.Enqueue(testEvent(i)); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, "first 10 delivered", 10*time.Second, func() bool { ok, _ := hasAll(srv.got(), 10); return ok })
			waitFor(t, "queue drained", 10*time.Second, func() bool { return f.Stats().Queued == 0 })

			srv.stop()
			before := srv.got()
			for i := 10; i < 30; i++ {
				if err := f.Enqueue(testEvent(i)); err != nil {
					t.Fatal(err)
				}
			}
			// While the server is down the messages stay queued.
			waitFor(t, "forwarder notices the outage", 10*time.Second, func() bool { return !f.Stats().Connected || f.Stats().LastError != "" })
			if q := f.Stats().Queued; q == 0 {
				t.Fatalf("queue empty while the server is down: %+v", f.Stats())
			}

			srv = start(addr)
			defer srv.stop()
			all := func() []string { return append(append([]string(nil), before...), srv.got()...) }
			waitFor(t, "all 30 delivered after restart", 20*time.Second, func() bool { ok, _ := hasAll(all(), 30); return ok })
			waitFor(t, "queue drained", 10*time.Second, func() bool { return f.Stats().Queued == 0 })
			if ok, missing := hasAll(all(), 30); !ok {
				t.Errorf("missing after restart: %v", missing)
			}
			st := f.Stats()
			if st.Reconnects < 2 || st.Dropped != 0 {
				t.Errorf("stats = %+v, want ≥2 connections and nothing dropped", st)
			}
		})
	}
}

func TestForwarderDeliversQueueFromPreviousRun(t *testing.T) {
	path := filepath.Join(t.TempDir(), "queue.db")
	// First process: no server; events are queued only.
	f, err := NewForwarder(ForwarderOptions{Network: "tcp", Address: "127.0.0.1:1", QueuePath: path})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if err := f.Enqueue(testEvent(i)); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()

	srv := startTCP(t, "127.0.0.1:0", nil)
	defer srv.stop()
	_, stop := startForwarder(t, ForwarderOptions{Network: "tcp", Address: srv.addr(), QueuePath: path})
	defer stop()
	waitFor(t, "events of the previous run delivered", 10*time.Second, func() bool { ok, _ := hasAll(srv.got(), 5); return ok })
}

func TestForwarderOptions(t *testing.T) {
	for _, o := range []ForwarderOptions{
		{Network: "http", Address: "x:1", QueuePath: "q"},
		{Network: "tcp", QueuePath: "q"},
		{Network: "tcp", Address: "x:1"},
	} {
		if _, err := NewForwarder(o); err == nil {
			t.Errorf("NewForwarder(%+v) accepted", o)
		}
	}
	f, err := NewForwarder(ForwarderOptions{Network: "udp", Address: "127.0.0.1:1", QueuePath: filepath.Join(t.TempDir(), "q")})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Enqueue(Event{Type: "Bogus", Time: time.Now()}); err == nil {
		t.Error("invalid event enqueued")
	}
}

// One message larger than a datagram (queued by an earlier version, which
// had no field limits) used to be retried forever over UDP, and nothing
// after it was delivered: it is truncated to MaxMessageSize and counted,
// and the queue moves on.
func TestForwarderOversizedMessageDoesNotBlock(t *testing.T) {
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "queue.db")
			q, err := OpenQueue(path, 0)
			if err != nil {
				t.Fatal(err)
			}
			huge := append([]byte("<134>1 - - nvmirror - Audit [nvmirror@32473] "), bytes.Repeat([]byte("x"), 70000)...)
			if _, err := q.Push(huge); err != nil {
				t.Fatal(err)
			}
			q.Close()
			var srv *collector
			if network == "udp" {
				srv = startUDP(t, "127.0.0.1:0")
			} else {
				srv = startTCP(t, "127.0.0.1:0", nil)
			}
			defer srv.stop()
			f, stop := startForwarder(t, ForwarderOptions{Network: network, Address: srv.addr(), QueuePath: path})
			defer stop()
			for i := 0; i < 3; i++ {
				if err := f.Enqueue(testEvent(i)); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, "the events after the oversized message", 10*time.Second, func() bool { ok, _ := hasAll(srv.got(), 3); return ok })
			waitFor(t, "queue drained", 10*time.Second, func() bool { return f.Stats().Queued == 0 })
			for _, m := range srv.got() {
				if len(m) > MaxMessageSize {
					t.Errorf("a message of %d bytes was sent (at most %d)", len(m), MaxMessageSize)
				}
			}
			if st := f.Stats(); st.Truncated != 1 {
				t.Errorf("stats = %+v, want 1 truncated", st)
			}
		})
	}
}
