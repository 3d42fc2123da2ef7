package main

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/klog/v2"
	"k8s.io/utils/exec"
)

// addresser makes an IP address local to the node, so that the node accepts
// the connections pods make to it (the bridge's gateway is the node).
type addresser interface {
	add(ip netip.Addr) error
	remove(ip netip.Addr) error
}

// loAddresser adds the addresses to lo with ip(8).
type loAddresser struct{ exec exec.Interface }

func (a loAddresser) add(ip netip.Addr) error {
	// "File exists": already there (added by a previous run).
	return a.ip("add", ip, "File exists")
}

func (a loAddresser) remove(ip netip.Addr) error {
	// "Cannot assign requested address": already gone.
	return a.ip("del", ip, "Cannot assign requested address")
}

func (a loAddresser) ip(verb string, ip netip.Addr, fine string) error {
	args := []string{"addr", verb, netip.PrefixFrom(ip, ip.BitLen()).String(), "dev", "lo"}
	out, err := a.exec.Command("ip", args...).CombinedOutput()
	if err != nil && !strings.Contains(string(out), fine) {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// proxier listens on every cluster IP and port of the table and splices each
// connection to an endpoint.
type proxier struct {
	addr        addresser
	dialTimeout time.Duration

	current atomic.Pointer[table]
	// The rest belongs to sync's caller (one goroutine).
	listeners map[netip.AddrPort]net.Listener
	ips       map[netip.Addr]bool // the addresses added

	rrMu sync.Mutex
	rr   map[netip.AddrPort]int // round-robin position
}

func newProxier(a addresser) *proxier {
	return &proxier{
		addr:        a,
		dialTimeout: 5 * time.Second,
		listeners:   map[netip.AddrPort]net.Listener{},
		ips:         map[netip.Addr]bool{},
		rr:          map[netip.AddrPort]int{},
	}
}

// sync makes the listeners and addresses those of t. What fails (an address,
// a listen) is logged and tried again at the next sync.
func (p *proxier) sync(t *table) {
	old := p.current.Swap(t)
	for ap, l := range p.listeners {
		if _, ok := t.ports[ap]; !ok {
			l.Close()
			delete(p.listeners, ap)
			klog.InfoS("Service port removed", "service", old.ports[ap].service, "port", old.ports[ap].portName, "address", ap)
		}
	}
	want := map[netip.Addr]bool{}
	for ap := range t.ports {
		want[ap.Addr()] = true
	}
	for ip := range p.ips {
		if !want[ip] {
			if err := p.addr.remove(ip); err != nil {
				klog.ErrorS(err, "Removing a cluster IP", "ip", ip)
				continue
			}
			delete(p.ips, ip)
		}
	}
	for _, ap := range slices.SortedFunc(maps.Keys(t.ports), netip.AddrPort.Compare) {
		pp := t.ports[ap]
		if _, ok := p.listeners[ap]; ok {
			if old != nil && !slices.Equal(old.ports[ap].endpoints, pp.endpoints) {
				klog.InfoS("Service endpoints changed", "service", pp.service, "port", pp.portName, "address", ap, "endpoints", pp.endpoints)
			}
			continue
		}
		if !p.ips[ap.Addr()] {
			if err := p.addr.add(ap.Addr()); err != nil {
				klog.ErrorS(err, "Adding a cluster IP", "service", pp.service, "ip", ap.Addr())
				continue
			}
			p.ips[ap.Addr()] = true
		}
		l, err := net.Listen("tcp", ap.String())
		if err != nil {
			klog.ErrorS(err, "Listening on a Service port", "service", pp.service, "port", pp.portName)
			continue
		}
		p.listeners[ap] = l
		go p.accept(ap, l)
		klog.InfoS("Service port programmed", "service", pp.service, "port", pp.portName, "address", ap, "endpoints", pp.endpoints)
	}
}

// close stops every listener and removes the addresses added.
func (p *proxier) close() {
	for ap, l := range p.listeners {
		l.Close()
		delete(p.listeners, ap)
	}
	for ip := range p.ips {
		if err := p.addr.remove(ip); err != nil {
			klog.ErrorS(err, "Removing a cluster IP", "ip", ip)
		}
		delete(p.ips, ip)
	}
}

func (p *proxier) accept(ap netip.AddrPort, l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			klog.ErrorS(err, "Accepting on a Service port", "address", ap)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		go p.forward(ap, c.(*net.TCPConn))
	}
}

// forward splices c to a ready endpoint of ap, the next in turn, trying the
// others if it refuses. With none, c is reset, as kube-proxy rejects.
func (p *proxier) forward(ap netip.AddrPort, c *net.TCPConn) {
	eps := p.current.Load().ports[ap].endpoints
	if len(eps) > 0 {
		p.rrMu.Lock()
		first := p.rr[ap] % len(eps)
		p.rr[ap] = first + 1
		p.rrMu.Unlock()
		for i := range eps {
			ep := eps[(first+i)%len(eps)]
			up, err := net.DialTimeout("tcp", ep, p.dialTimeout)
			if err != nil {
				klog.V(2).InfoS("Endpoint refused", "address", ap, "endpoint", ep, "err", err)
				continue
			}
			klog.V(4).InfoS("Connection forwarded", "from", c.RemoteAddr(), "address", ap, "endpoint", ep)
			splice(c, up.(*net.TCPConn))
			return
		}
	}
	klog.V(2).InfoS("No endpoint for a connection: reset", "from", c.RemoteAddr(), "address", ap, "endpoints", eps)
	c.SetLinger(0)
	c.Close()
}

// splice copies both ways until both sides finished sending. A side's EOF is
// passed on as a half-close, so that a client that shuts down its writes
// still gets the whole answer; an error (a reset) ends both.
func splice(a, b *net.TCPConn) {
	var wg sync.WaitGroup
	pipe := func(dst, src *net.TCPConn) {
		defer wg.Done()
		if _, err := io.Copy(dst, src); err != nil {
			dst.SetLinger(0)
			dst.Close()
			src.Close()
			return
		}
		dst.CloseWrite()
	}
	wg.Add(2)
	go pipe(a, b)
	go pipe(b, a)
	wg.Wait()
	a.Close()
	b.Close()
}
