package main

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

func service(ns, name, clusterIP string, ports ...corev1.ServicePort) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: clusterIP, Ports: ports},
	}
	if clusterIP != "" {
		s.Spec.ClusterIPs = []string{clusterIP}
	}
	return s
}

func tcpPort(name string, port int32, target string) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Protocol: corev1.ProtocolTCP, Port: port, TargetPort: intstr.FromString(target)}
}

type ep struct {
	addr  string
	ready *bool // nil: unset
}

func slice(ns, svc, name string, ports map[string]int32, eps ...ep) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for n, p := range ports {
		s.Ports = append(s.Ports, discoveryv1.EndpointPort{Name: ptr.To(n), Port: ptr.To(p), Protocol: ptr.To(corev1.ProtocolTCP)})
	}
	for _, e := range eps {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{e.addr}, Conditions: discoveryv1.EndpointConditions{Ready: e.ready}})
	}
	return s
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func TestBuildTable(t *testing.T) {
	services := []*corev1.Service{
		service("nvmirror", "nvmirror-provisioner", "10.0.0.20",
			tcpPort("grpc", 9500, "grpc"), tcpPort("http", 9501, "http"),
			corev1.ServicePort{Name: "syslog", Protocol: corev1.ProtocolUDP, Port: 514}),
		service("default", "kubernetes", "10.0.0.1", tcpPort("https", 443, "6443")),
		// One unnamed port, whose protocol the API server would default.
		{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "web"}, Spec: corev1.ServiceSpec{ClusterIP: "10.0.0.30", Ports: []corev1.ServicePort{{Port: 80}}}},
		service("app", "headless", corev1.ClusterIPNone),
		service("app", "ipv6only", "fd00::30", tcpPort("http", 80, "http")),
		{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "ext"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "example.com"}},
	}
	endpointSlices := []*discoveryv1.EndpointSlice{
		// The provisioner's pods across two slices, one of them rolling to
		// another target port (the same pod on both while it rolls);
		// not-ready endpoints left out, unset readiness counting as ready.
		slice("nvmirror", "nvmirror-provisioner", "p1", map[string]int32{"grpc": 9500, "http": 9501},
			ep{"10.244.0.5", ptr.To(true)}, ep{"10.244.0.6", ptr.To(false)}, ep{"10.244.0.7", nil}),
		slice("nvmirror", "nvmirror-provisioner", "p2", map[string]int32{"grpc": 19500},
			ep{"10.244.0.8", ptr.To(true)}, ep{"10.244.0.5", ptr.To(true)}),
		slice("app", "web", "w1", map[string]int32{"": 8080}, ep{"10.244.0.9", nil}),
		slice("app", "headless", "h1", nil, ep{"10.244.0.11", ptr.To(true)}, ep{"10.244.0.10", nil}, ep{"10.244.0.12", ptr.To(false)}),
		slice("app", "headless", "h2", nil, ep{"10.244.0.11", ptr.To(true)}), // a duplicate, kept once
		// Of another namespace, without a service, and of FQDN addresses:
		// none of the above's.
		slice("other", "nvmirror-provisioner", "o1", map[string]int32{"grpc": 1}, ep{"10.244.1.1", nil}),
		{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "orphan"}, Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.244.1.2"}}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "f1", Labels: map[string]string{discoveryv1.LabelServiceName: "headless"}},
			AddressType: discoveryv1.AddressTypeFQDN, Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"db.example.com"}}}},
	}
	tab := buildTable(services, endpointSlices, "192.168.122.1:6443", "cluster.local")

	wantPorts := map[netip.AddrPort]proxyPort{
		ap("10.0.0.20:9500"): {serviceKey{"nvmirror", "nvmirror-provisioner"}, "grpc", []string{"10.244.0.5:19500", "10.244.0.5:9500", "10.244.0.7:9500", "10.244.0.8:19500"}},
		ap("10.0.0.20:9501"): {serviceKey{"nvmirror", "nvmirror-provisioner"}, "http", []string{"10.244.0.5:9501", "10.244.0.7:9501"}},
		ap("10.0.0.1:443"):   {serviceKey{"default", "kubernetes"}, "https", []string{"192.168.122.1:6443"}},
		ap("10.0.0.30:80"):   {serviceKey{"app", "web"}, "", []string{"10.244.0.9:8080"}},
	}
	if len(tab.ports) != len(wantPorts) {
		t.Errorf("ports = %v, want %v", tab.ports, wantPorts)
	}
	for a, want := range wantPorts {
		got, ok := tab.ports[a]
		if !ok || got.service != want.service || got.portName != want.portName || !slices.Equal(got.endpoints, want.endpoints) {
			t.Errorf("ports[%v] = %+v, %v; want %+v", a, got, ok, want)
		}
	}

	wantNames := map[string][]string{
		"nvmirror-provisioner.nvmirror.svc.cluster.local.": {"10.0.0.20"},
		"kubernetes.default.svc.cluster.local.":            {"10.0.0.1"},
		"web.app.svc.cluster.local.":                       {"10.0.0.30"},
		"headless.app.svc.cluster.local.":                  {"10.244.0.10", "10.244.0.11"},
	}
	if len(tab.names) != len(wantNames) {
		t.Errorf("names = %v, want %v", tab.names, wantNames)
	}
	for n, want := range wantNames {
		var got []string
		for _, a := range tab.names[n] {
			got = append(got, a.String())
		}
		if !slices.Equal(got, want) {
			t.Errorf("names[%s] = %v, want %v", n, got, want)
		}
	}

	skipped := strings.Join(tab.skipped, "\n")
	for _, want := range []string{"app/ext: ExternalName", "app/ipv6only: no IPv4 cluster IP", "nvmirror/nvmirror-provisioner port 514/UDP: only TCP"} {
		if !strings.Contains(skipped, want) {
			t.Errorf("skipped = %q, want %q", skipped, want)
		}
	}
}

// Without --apiserver-endpoint, default/kubernetes is a Service like any
// other; a Service with no slices has a port with no endpoint (connections
// reset) and still a name.
func TestBuildTableNoApiserverEndpoint(t *testing.T) {
	tab := buildTable(
		[]*corev1.Service{service("default", "kubernetes", "10.0.0.1", tcpPort("https", 443, "6443"))},
		[]*discoveryv1.EndpointSlice{slice("default", "kubernetes", "k", map[string]int32{"https": 6443}, ep{"10.1.2.3", nil})},
		"", "Example.Test.")
	if got := tab.ports[ap("10.0.0.1:443")].endpoints; !slices.Equal(got, []string{"10.1.2.3:6443"}) {
		t.Errorf("endpoints = %v, want the slice's", got)
	}
	if _, ok := tab.names["kubernetes.default.svc.example.test."]; !ok {
		t.Errorf("names = %v, want the domain lower case with one final dot", tab.names)
	}

	tab = buildTable([]*corev1.Service{service("a", "b", "10.0.0.2", tcpPort("x", 1, "x"))}, nil, "", "cluster.local")
	if pp, ok := tab.ports[ap("10.0.0.2:1")]; !ok || len(pp.endpoints) != 0 {
		t.Errorf("port of a Service without slices = %+v, %v", pp, ok)
	}
}

// A Service on the DNS server's address (a kube-dns Service) is left to the
// DNS server: its ports are neither listened on nor is the address removed.
func TestReserve(t *testing.T) {
	tab := buildTable([]*corev1.Service{
		service("kube-system", "kube-dns", "10.0.0.10", tcpPort("dns-tcp", 53, "53"), tcpPort("metrics", 9153, "9153")),
		service("a", "b", "10.0.0.2", tcpPort("x", 53, "x")),
	}, nil, "", "cluster.local")
	tab.reserve(netip.MustParseAddr("10.0.0.10"))
	if len(tab.ports) != 1 || tab.ports[ap("10.0.0.2:53")].service != (serviceKey{"a", "b"}) {
		t.Errorf("ports = %v, want only a/b's", tab.ports)
	}
	if len(tab.names["kube-dns.kube-system.svc.cluster.local."]) != 1 {
		t.Errorf("names = %v, want kube-dns's name kept", tab.names)
	}
	if s := strings.Join(tab.skipped, "\n"); !strings.Contains(s, "kube-system/kube-dns port 53: on the DNS server's address") || !strings.Contains(s, "port 9153") {
		t.Errorf("skipped = %q", s)
	}
}
