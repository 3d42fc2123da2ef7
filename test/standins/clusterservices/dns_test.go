package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// dnsTable: the provisioner's Service and a headless one with 100 ready
// endpoints (more than a UDP answer holds).
func dnsTable() *table {
	var many []ep
	for i := range 100 {
		many = append(many, ep{addr: fmt.Sprintf("10.244.1.%d", i+1)})
	}
	return buildTable(
		[]*corev1.Service{
			service("nvmirror", "nvmirror-provisioner", "10.0.0.20", tcpPort("grpc", 9500, "grpc")),
			service("app", "many", corev1.ClusterIPNone),
			service("app", "empty", corev1.ClusterIPNone),
		},
		[]*discoveryv1.EndpointSlice{slice("app", "many", "m", nil, many...)},
		"", "cluster.local")
}

func query(t *testing.T, name string, typ dnsmessage.Type) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 4242, RecursionDesired: true})
	b.StartQuestions()
	if err := b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET}); err != nil {
		t.Fatal(err)
	}
	msg, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func TestAnswer(t *testing.T) {
	const provisioner = "nvmirror-provisioner.nvmirror.svc.cluster.local."
	for _, tc := range []struct {
		name      string
		qname     string
		qtype     dnsmessage.Type
		limit     int
		nilTable  bool
		rcode     dnsmessage.RCode
		authority bool
		truncated bool
		answers   []string
	}{
		{name: "service", qname: provisioner, qtype: dnsmessage.TypeA, rcode: dnsmessage.RCodeSuccess, authority: true, answers: []string{"10.0.0.20"}},
		{name: "case", qname: "NVMirror-Provisioner.NVMirror.svc.Cluster.Local.", qtype: dnsmessage.TypeA, rcode: dnsmessage.RCodeSuccess, authority: true, answers: []string{"10.0.0.20"}},
		{name: "AAAA of a known name", qname: provisioner, qtype: dnsmessage.TypeAAAA, rcode: dnsmessage.RCodeSuccess, authority: true},
		{name: "SRV of a known name", qname: provisioner, qtype: dnsmessage.TypeSRV, rcode: dnsmessage.RCodeSuccess, authority: true},
		// What a pod's resolver tries first for the name (ndots:5, search
		// <ns>.svc.cluster.local svc.cluster.local cluster.local).
		{name: "search expansion", qname: provisioner + "nvmirror.svc.cluster.local.", qtype: dnsmessage.TypeA, rcode: dnsmessage.RCodeNameError, authority: true},
		{name: "short name expanded in another namespace", qname: "nvmirror-provisioner.default.svc.cluster.local.", qtype: dnsmessage.TypeA, rcode: dnsmessage.RCodeNameError, authority: true},
		{name: "the domain", qname: "cluster.local.", qtype: dnsmessage.TypeA, rcode: dnsmessage.RCodeNameError, authority: true},
		{name: "outside", qname: "example.com.", qtype: dnsmessage.TypeA, rcode: dnsmessage.RCodeRefused},
		{name: "suffix but not a subdomain", qname: "notcluster.local.", qtype: dnsmessage.TypeA, rcode: dnsmessage.RCodeRefused},
		{name: "headless without endpoints", qname: "empty.app.svc.cluster.local.", qtype: dnsmessage.TypeA, rcode: dnsmessage.RCodeSuccess, authority: true},
		{name: "headless over UDP", qname: "many.app.svc.cluster.local.", qtype: dnsmessage.TypeA, limit: udpLimit, rcode: dnsmessage.RCodeSuccess, authority: true, truncated: true},
		{name: "not ready yet", qname: provisioner, qtype: dnsmessage.TypeA, nilTable: true, rcode: dnsmessage.RCodeServerFailure},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab := dnsTable()
			if tc.nilTable {
				tab = nil
			}
			limit := cmp.Or(tc.limit, 65535)
			msg, err := answer(tab, "cluster.local", query(t, tc.qname, tc.qtype), limit)
			if err != nil {
				t.Fatal(err)
			}
			if len(msg) > limit {
				t.Errorf("answer of %d bytes, limit %d", len(msg), limit)
			}
			var m dnsmessage.Message
			if err := m.Unpack(msg); err != nil {
				t.Fatal(err)
			}
			if m.ID != 4242 || !m.Response || !m.RecursionDesired || m.RCode != tc.rcode || m.Authoritative != tc.authority || m.Truncated != tc.truncated {
				t.Errorf("header = %+v, want rcode %v authoritative %v truncated %v", m.Header, tc.rcode, tc.authority, tc.truncated)
			}
			if len(m.Questions) != 1 || m.Questions[0].Name.String() != tc.qname {
				t.Errorf("questions = %v, want the query's", m.Questions)
			}
			var got []string
			for _, r := range m.Answers {
				a, ok := r.Body.(*dnsmessage.AResource)
				if !ok || r.Header.TTL != dnsTTL || r.Header.Name.String() != tc.qname {
					t.Errorf("answer %v", r)
					continue
				}
				got = append(got, netip.AddrFrom4(a.A).String())
			}
			if !slices.Equal(got, tc.answers) {
				t.Errorf("answers = %v, want %v", got, tc.answers)
			}
		})
	}

	// Over TCP all 100 fit.
	msg, err := answer(dnsTable(), "cluster.local", query(t, "many.app.svc.cluster.local.", dnsmessage.TypeA), 65535)
	var m dnsmessage.Message
	if err != nil || m.Unpack(msg) != nil || len(m.Answers) != 100 || m.Truncated {
		t.Errorf("headless over TCP: %d answers, truncated %v, %v", len(m.Answers), m.Truncated, err)
	}
	// Not a query: no answer.
	if _, err := answer(dnsTable(), "cluster.local", msg, 65535); err == nil {
		t.Error("a response was answered")
	}
	if _, err := answer(dnsTable(), "cluster.local", []byte{1, 2, 3}, 65535); err == nil {
		t.Error("garbage was answered")
	}
}

// startDNS serves tab's names on a loopback address and returns it.
func startDNS(t *testing.T, tab *table) string {
	t.Helper()
	udp, tcp, err := listenDNS("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { udp.Close(); tcp.Close() })
	s := &dnsServer{domain: "cluster.local", table: func() *table { return tab }}
	go s.serveUDP(udp)
	go s.serveTCP(tcp)
	return udp.LocalAddr().String()
}

// resolver is Go's own resolver, asking only addr, over network ("udp" or
// "tcp") whatever it would choose, or as it chooses ("").
func resolver(addr, network string) *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, chosen, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, cmp.Or(network, chosen), addr)
	}}
}

// A real resolver (A and AAAA asked together, as for a pod's getaddrinfo)
// gets the Service's cluster IP over UDP and TCP, NXDOMAIN as not found for
// unknown names, and an error that is not "not found" outside the domain;
// a headless Service's 100 addresses come whole through the TCP retry of
// the truncated UDP answer.
func TestResolver(t *testing.T) {
	addr := startDNS(t, dnsTable())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, network := range []string{"udp", "tcp"} {
		r := resolver(addr, network)
		got, err := r.LookupHost(ctx, "nvmirror-provisioner.nvmirror.svc.cluster.local.")
		if err != nil || !slices.Equal(got, []string{"10.0.0.20"}) {
			t.Errorf("%s: LookupHost = %v, %v; want [10.0.0.20]", network, got, err)
		}
		_, err = r.LookupHost(ctx, "nvmirror-provisioner.nvmirror.svc.cluster.local.nvmirror.svc.cluster.local.")
		var dnsErr *net.DNSError
		if !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
			t.Errorf("%s: LookupHost of an unknown name = %v, want not found", network, err)
		}
		_, err = r.LookupHost(ctx, "example.com.")
		if !errors.As(err, &dnsErr) || dnsErr.IsNotFound {
			t.Errorf("%s: LookupHost outside the domain = %v, want a failure other than not found", network, err)
		}
	}
	// Over UDP the answer is truncated; Go's resolver retries over TCP at the
	// same address.
	got, err := resolver(addr, "").LookupHost(ctx, "many.app.svc.cluster.local.")
	if err != nil || len(got) != 100 {
		t.Errorf("headless: %d addresses, %v; want 100", len(got), err)
	}
}
