package main

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/utils/exec"
	testingexec "k8s.io/utils/exec/testing"
)

// ipCmd is a fake ip(8) run printing out and failing with status when
// status != 0.
func ipCmd(calls *[]string, out string, status int) testingexec.FakeCommandAction {
	return func(cmd string, args ...string) exec.Cmd {
		*calls = append(*calls, cmd+" "+strings.Join(args, " "))
		fc := &testingexec.FakeCmd{CombinedOutputScript: []testingexec.FakeAction{func() ([]byte, []byte, error) {
			if status != 0 {
				return []byte(out), nil, testingexec.FakeExitError{Status: status}
			}
			return []byte(out), nil, nil
		}}}
		return testingexec.InitFakeCmd(fc, cmd, args...)
	}
}

// Adding an address already there, or removing one already gone, is not an
// error: ip(8)'s other failures are, with its message.
func TestLoAddresser(t *testing.T) {
	var calls []string
	fe := &testingexec.FakeExec{CommandScript: []testingexec.FakeCommandAction{
		ipCmd(&calls, "", 0),
		ipCmd(&calls, "RTNETLINK answers: File exists\n", 2),
		ipCmd(&calls, "RTNETLINK answers: Operation not permitted\n", 2),
		ipCmd(&calls, "", 0),
		ipCmd(&calls, "RTNETLINK answers: Cannot assign requested address\n", 2),
		ipCmd(&calls, "Cannot find device \"lo\"\n", 1),
	}}
	a := loAddresser{exec: fe}
	ip := netip.MustParseAddr("10.0.0.20")
	if err := a.add(ip); err != nil {
		t.Errorf("add = %v", err)
	}
	if err := a.add(ip); err != nil {
		t.Errorf("add of an address already there = %v", err)
	}
	if err := a.add(ip); err == nil || !strings.Contains(err.Error(), "Operation not permitted") {
		t.Errorf("add failing = %v, want ip's message", err)
	}
	if err := a.remove(ip); err != nil {
		t.Errorf("remove = %v", err)
	}
	if err := a.remove(ip); err != nil {
		t.Errorf("remove of an address gone = %v", err)
	}
	if err := a.remove(ip); err == nil || !strings.Contains(err.Error(), "Cannot find device") {
		t.Errorf("remove failing = %v, want ip's message", err)
	}
	want := []string{
		"ip addr add 10.0.0.20/32 dev lo", "ip addr add 10.0.0.20/32 dev lo", "ip addr add 10.0.0.20/32 dev lo",
		"ip addr del 10.0.0.20/32 dev lo", "ip addr del 10.0.0.20/32 dev lo", "ip addr del 10.0.0.20/32 dev lo",
	}
	if !slices.Equal(calls, want) {
		t.Errorf("ran %q, want %q", calls, want)
	}
}

// fakeAddresser records the addresses the proxy makes local; the tests'
// cluster IPs are loopback addresses, local already.
type fakeAddresser struct {
	mu          sync.Mutex
	added       map[netip.Addr]bool
	adds, dels  []string
	failAddress netip.Addr // add fails for it
}

func (f *fakeAddresser) add(ip netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ip == f.failAddress {
		return errors.New("injected failure")
	}
	if f.added == nil {
		f.added = map[netip.Addr]bool{}
	}
	f.added[ip] = true
	f.adds = append(f.adds, ip.String())
	return nil
}

func (f *fakeAddresser) remove(ip netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.added, ip)
	f.dels = append(f.dels, ip.String())
	return nil
}

func (f *fakeAddresser) local() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for ip := range f.added {
		out = append(out, ip.String())
	}
	slices.Sort(out)
	return out
}

// backend serves on a loopback port: it reads a connection to its end, then
// answers name and what it read, and closes. A proxy that does not pass on
// the client's half-close leaves it waiting.
func backend(t *testing.T, name string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				b, err := io.ReadAll(c)
				if err != nil {
					return
				}
				c.Write([]byte(name + ":" + string(b)))
			}()
		}
	}()
	return l.Addr().String()
}

// request sends msg to addr, half-closes, and returns the whole answer.
func request(addr, msg string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	return string(b), err
}

// freePort is a port free on ip at the time of asking.
func freePort(t *testing.T, ip string) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

// The proxy listens on each port of the table, splices to the endpoints in
// turn, skips one that refuses, resets with none, and follows the table:
// a port gone is closed and its address removed; an address that could not
// be added is tried again at the next sync.
func TestProxierSync(t *testing.T) {
	b1, b2 := backend(t, "b1"), backend(t, "b2")
	refused := "127.0.0.1:" + strconv.Itoa(int(freePort(t, "127.0.0.1")))
	svc := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.53"), freePort(t, "127.0.0.53"))
	empty := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.54"), freePort(t, "127.0.0.54"))
	failing := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.55"), freePort(t, "127.0.0.55"))
	fa := &fakeAddresser{failAddress: failing.Addr()}
	p := newProxier(fa)
	defer p.close()
	p.sync(&table{ports: map[netip.AddrPort]proxyPort{
		svc:     {service: serviceKey{"ns", "svc"}, endpoints: []string{b1, b2, refused}},
		empty:   {service: serviceKey{"ns", "empty"}},
		failing: {service: serviceKey{"ns", "failing"}, endpoints: []string{b1}},
	}})
	if got := fa.local(); !slices.Equal(got, []string{"127.0.0.53", "127.0.0.54"}) {
		t.Errorf("addresses = %v", got)
	}

	counts := map[string]int{}
	for i := range 6 {
		got, err := request(svc.String(), "hello")
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		counts[got]++
	}
	// b1, b2, refused (so b1), b1, b2, refused (so b1).
	if counts["b1:hello"] != 4 || counts["b2:hello"] != 2 || len(counts) != 2 {
		t.Errorf("answers = %v, want b1 4 times and b2 twice", counts)
	}
	if got, err := request(empty.String(), "hello"); err == nil || got != "" {
		t.Errorf("port without endpoints answered %q, %v; want a reset", got, err)
	}
	if _, err := request(failing.String(), "hello"); err == nil {
		t.Error("a port whose address failed is served")
	}

	fa.mu.Lock()
	fa.failAddress = netip.Addr{}
	fa.mu.Unlock()
	p.sync(&table{ports: map[netip.AddrPort]proxyPort{failing: {service: serviceKey{"ns", "failing"}, endpoints: []string{b2}}}})
	if got, err := request(failing.String(), "again"); err != nil || got != "b2:again" {
		t.Errorf("retried port answered %q, %v", got, err)
	}
	if _, err := request(svc.String(), "hello"); err == nil {
		t.Error("a port gone from the table is still served")
	}
	if got := fa.local(); !slices.Equal(got, []string{"127.0.0.55"}) {
		t.Errorf("addresses after the change = %v, want only the remaining port's", got)
	}

	p.close()
	if got := fa.local(); len(got) != 0 {
		t.Errorf("addresses after close = %v", got)
	}
	if _, err := request(failing.String(), "hello"); err == nil {
		t.Error("served after close")
	}
}

// A large transfer both ways at once: neither direction is cut short by the
// other ending first.
func TestSpliceBothWays(t *testing.T) {
	const size = 4 << 20
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// The backend sends size bytes and closes its side early, while still
	// reading everything the client sends.
	received := make(chan int, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		wrote := make(chan struct{})
		go func() {
			defer close(wrote)
			c.Write(make([]byte, size))
			c.(*net.TCPConn).CloseWrite()
		}()
		n, _ := io.Copy(io.Discard, c)
		received <- int(n)
		<-wrote // closing first would cut the write short
	}()
	svc := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.56"), freePort(t, "127.0.0.56"))
	p := newProxier(&fakeAddresser{})
	defer p.close()
	p.sync(&table{ports: map[netip.AddrPort]proxyPort{svc: {endpoints: []string{l.Addr().String()}}}})

	c, err := net.Dial("tcp", svc.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	got := make(chan int64, 1)
	go func() {
		n, _ := io.Copy(io.Discard, c)
		got <- n
	}()
	if _, err := c.Write(make([]byte, size)); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	if n := <-got; n != size {
		t.Errorf("client received %d bytes, want %d", n, size)
	}
	if n := <-received; n != size {
		t.Errorf("backend received %d bytes, want %d", n, size)
	}
}
