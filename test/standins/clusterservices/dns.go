package main

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"k8s.io/klog/v2"
)

// dnsTTL is the TTL of every answer, CoreDNS's default for Services: short,
// since a Service's cluster IP or a headless Service's endpoints change.
const dnsTTL = 5

// udpLimit is the largest UDP answer (RFC 1035): a larger one is sent
// truncated, and the resolver asks again over TCP.
const udpLimit = 512

// dnsResult is the answer to one question.
type dnsResult struct {
	rcode dnsmessage.RCode
	// authoritative: a name of the cluster domain. It also keeps an empty
	// NOERROR answer from reading as a lame referral to Go's resolver.
	authoritative bool
	a             []netip.Addr
}

// lookup answers q from t for the cluster domain: t is nil until the first
// table is built.
func lookup(t *table, domain string, q dnsmessage.Question) dnsResult {
	if t == nil {
		// Not ready: a failure resolvers retry, not a negative answer
		// they would cache.
		return dnsResult{rcode: dnsmessage.RCodeServerFailure}
	}
	name := strings.ToLower(q.Name.String())
	zone := strings.ToLower(strings.TrimSuffix(domain, ".") + ".")
	if q.Class != dnsmessage.ClassINET || (name != zone && !strings.HasSuffix(name, "."+zone)) {
		// No upstream to forward to: the node has no other network.
		return dnsResult{rcode: dnsmessage.RCodeRefused}
	}
	addrs, ok := t.names[name]
	if !ok {
		return dnsResult{rcode: dnsmessage.RCodeNameError, authoritative: true}
	}
	r := dnsResult{rcode: dnsmessage.RCodeSuccess, authoritative: true}
	if q.Type == dnsmessage.TypeA || q.Type == dnsmessage.TypeALL {
		r.a = addrs
	}
	return r
}

// answer is the response to the DNS message query, at most limit bytes
// (truncated, with TC set, when the addresses do not fit). The error is for
// a message that is not a DNS query: it gets no response.
func answer(t *table, domain string, query []byte, limit int) ([]byte, error) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil, err
	}
	if h.Response {
		return nil, errors.New("not a query")
	}
	qs, err := p.AllQuestions()
	if err != nil {
		return nil, err
	}
	rh := dnsmessage.Header{ID: h.ID, Response: true, OpCode: h.OpCode, RecursionDesired: h.RecursionDesired}
	var r dnsResult
	switch {
	case h.OpCode != 0:
		r.rcode = dnsmessage.RCodeNotImplemented
		qs = nil
	case len(qs) != 1:
		r.rcode = dnsmessage.RCodeFormatError
		qs = nil
	default:
		r = lookup(t, domain, qs[0])
	}
	rh.RCode, rh.Authoritative = r.rcode, r.authoritative
	msg, err := build(rh, qs, r.a)
	if err == nil && len(msg) > limit {
		rh.Truncated = true
		msg, err = build(rh, qs, nil)
	}
	return msg, err
}

func build(h dnsmessage.Header, qs []dnsmessage.Question, a []netip.Addr) ([]byte, error) {
	b := dnsmessage.NewBuilder(make([]byte, 0, 512), h)
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	for _, q := range qs {
		if err := b.Question(q); err != nil {
			return nil, err
		}
	}
	if err := b.StartAnswers(); err != nil {
		return nil, err
	}
	for _, ip := range a {
		rh := dnsmessage.ResourceHeader{Name: qs[0].Name, Class: dnsmessage.ClassINET, TTL: dnsTTL}
		if err := b.AResource(rh, dnsmessage.AResource{A: ip.As4()}); err != nil {
			return nil, err
		}
	}
	return b.Finish()
}

// dnsServer answers DNS over UDP and TCP from the current table.
type dnsServer struct {
	domain string
	table  func() *table
}

// listenDNS opens the UDP and TCP sockets of addr; with port 0, TCP takes the
// port UDP got, so that one address serves both (a resolver retries a
// truncated answer over TCP at the same address), trying other ports while
// that one is taken for TCP.
func listenDNS(addr string) (net.PacketConn, net.Listener, error) {
	for try := 0; ; try++ {
		udp, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, err
		}
		tcp, err := net.Listen("tcp", udp.LocalAddr().String())
		if err == nil {
			return udp, tcp, nil
		}
		udp.Close()
		if _, port, _ := net.SplitHostPort(addr); port != "0" || try == 10 {
			return nil, nil, err
		}
	}
}

// serveUDP answers queries on pc until it is closed.
func (s *dnsServer) serveUDP(pc net.PacketConn) {
	buf := make([]byte, 65535)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				klog.ErrorS(err, "DNS over UDP stopped")
			}
			return
		}
		resp, err := answer(s.table(), s.domain, buf[:n], udpLimit)
		if err != nil {
			klog.V(4).InfoS("Bad DNS query", "from", from, "err", err)
			continue
		}
		if _, err := pc.WriteTo(resp, from); err != nil {
			klog.V(4).InfoS("DNS answer not sent", "to", from, "err", err)
		}
	}
}

// serveTCP answers queries on l's connections until l is closed.
func (s *dnsServer) serveTCP(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			klog.ErrorS(err, "DNS over TCP: accept")
			time.Sleep(100 * time.Millisecond)
			continue
		}
		go s.serveConn(c)
	}
}

// serveConn answers the length-prefixed queries of one TCP connection
// (RFC 1035 4.2.2) until the client closes it or is idle for 10 seconds.
func (s *dnsServer) serveConn(c net.Conn) {
	defer c.Close()
	for {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		var n uint16
		if err := binary.Read(c, binary.BigEndian, &n); err != nil {
			return
		}
		query := make([]byte, n)
		if _, err := io.ReadFull(c, query); err != nil {
			return
		}
		resp, err := answer(s.table(), s.domain, query, 65535)
		if err != nil {
			klog.V(4).InfoS("Bad DNS query", "from", c.RemoteAddr(), "err", err)
			return
		}
		if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(resp))), resp...)); err != nil {
			return
		}
	}
}
