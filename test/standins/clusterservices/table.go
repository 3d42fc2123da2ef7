package main

import (
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// serviceKey names a Service.
type serviceKey struct{ namespace, name string }

func (k serviceKey) String() string { return k.namespace + "/" + k.name }

// apiserverService is the Service in front of kube-apiserver; its endpoints
// come from --apiserver-endpoint.
var apiserverService = serviceKey{"default", "kubernetes"}

// proxyPort is one TCP port of a ClusterIP Service: where the proxy listens
// and where it sends each connection.
type proxyPort struct {
	service  serviceKey
	portName string
	// endpoints are the ready endpoints (host:port, the port that of the
	// EndpointSlice port of the same name), sorted.
	endpoints []string
}

// table is everything the proxy and the DNS server serve, built from the
// Services and EndpointSlices alone.
type table struct {
	// ports maps a cluster IP and Service port to where it leads.
	ports map[netip.AddrPort]proxyPort
	// names are the Services' DNS names (lower case, fully qualified with
	// the final dot) and their addresses. A name without addresses still
	// exists: a headless Service with no ready endpoint.
	names map[string][]netip.Addr
	// skipped says what was left out and why, for the log.
	skipped []string
}

// serviceName is a Service's DNS name in domain.
func serviceName(k serviceKey, domain string) string {
	return strings.ToLower(k.name + "." + k.namespace + ".svc." + strings.TrimSuffix(domain, ".") + ".")
}

// buildTable computes the table for services and their EndpointSlices;
// apiserver (host:port, may be empty) is the endpoint of default/kubernetes.
func buildTable(services []*corev1.Service, endpointSlices []*discoveryv1.EndpointSlice, apiserver, domain string) *table {
	t := &table{ports: map[netip.AddrPort]proxyPort{}, names: map[string][]netip.Addr{}}
	bySvc := map[serviceKey][]*discoveryv1.EndpointSlice{}
	for _, s := range endpointSlices {
		if name := s.Labels[discoveryv1.LabelServiceName]; name != "" && s.AddressType == discoveryv1.AddressTypeIPv4 {
			k := serviceKey{s.Namespace, name}
			bySvc[k] = append(bySvc[k], s)
		}
	}
	services = slices.SortedFunc(slices.Values(services), func(a, b *corev1.Service) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	for _, svc := range services {
		k := serviceKey{svc.Namespace, svc.Name}
		if svc.Spec.Type == corev1.ServiceTypeExternalName {
			t.skip("%s: ExternalName Services are not served", k)
			continue
		}
		name := serviceName(k, domain)
		if svc.Spec.ClusterIP == corev1.ClusterIPNone {
			t.names[name] = readyAddresses(bySvc[k])
			continue
		}
		ips := clusterIPv4s(svc)
		if len(ips) == 0 {
			t.skip("%s: no IPv4 cluster IP (%q)", k, svc.Spec.ClusterIPs)
			continue
		}
		t.names[name] = ips
		for _, sp := range svc.Spec.Ports {
			if sp.Protocol != corev1.ProtocolTCP && sp.Protocol != "" {
				t.skip("%s port %d/%s: only TCP is proxied", k, sp.Port, sp.Protocol)
				continue
			}
			pp := proxyPort{service: k, portName: sp.Name}
			if k == apiserverService && apiserver != "" {
				// The control plane runs without an endpoint reconciler,
				// so this Service has no endpoints of its own.
				pp.endpoints = []string{apiserver}
			} else {
				pp.endpoints = readyEndpoints(bySvc[k], sp.Name)
			}
			for _, ip := range ips {
				t.ports[netip.AddrPortFrom(ip, uint16(sp.Port))] = pp
			}
		}
	}
	return t
}

// reserve leaves out the ports on ip: the DNS server's own address, which
// the node adds and this program must neither listen on again nor remove
// (a kube-dns Service given that cluster IP).
func (t *table) reserve(ip netip.Addr) {
	for ap, pp := range t.ports {
		if ap.Addr() == ip {
			delete(t.ports, ap)
			t.skip("%s port %d: on the DNS server's address", pp.service, ap.Port())
		}
	}
}

func (t *table) skip(format string, args ...any) {
	t.skipped = append(t.skipped, fmt.Sprintf(format, args...))
}

func clusterIPv4s(svc *corev1.Service) []netip.Addr {
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	var out []netip.Addr
	for _, s := range ips {
		if ip, err := netip.ParseAddr(s); err == nil && ip.Is4() {
			out = append(out, ip)
		}
	}
	return out
}

// ready: the API says an unset condition means ready.
func ready(e discoveryv1.Endpoint) bool {
	return (e.Conditions.Ready == nil || *e.Conditions.Ready) && len(e.Addresses) > 0
}

// readyAddresses are the ready endpoints' addresses (the first of each, as
// the API asks), sorted, without duplicates.
func readyAddresses(ss []*discoveryv1.EndpointSlice) []netip.Addr {
	out := []netip.Addr{}
	for _, s := range ss {
		for _, e := range s.Endpoints {
			if !ready(e) {
				continue
			}
			if ip, err := netip.ParseAddr(e.Addresses[0]); err == nil {
				out = append(out, ip)
			}
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// readyEndpoints are host:port of the ready endpoints for the Service port
// named portName (the EndpointSlice port of that name gives the port),
// sorted, without duplicates. One Service's slices may differ in ports while
// its pods roll.
func readyEndpoints(ss []*discoveryv1.EndpointSlice, portName string) []string {
	out := []string{}
	for _, s := range ss {
		port := -1
		for _, p := range s.Ports {
			if p.Port != nil && ptrOr(p.Name, "") == portName && ptrOr(p.Protocol, corev1.ProtocolTCP) == corev1.ProtocolTCP {
				port = int(*p.Port)
			}
		}
		if port < 0 {
			continue
		}
		for _, e := range s.Endpoints {
			if ready(e) {
				out = append(out, net.JoinHostPort(e.Addresses[0], strconv.Itoa(port)))
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func ptrOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}
