package main

import (
	"context"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"
)

// eventually polls check until it returns "" (or fails the test with its
// last complaint after 10 seconds).
func eventually(t *testing.T, what string, check func() string) {
	t.Helper()
	var last string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if last = check(); last == "" {
			return
		}
	}
	t.Fatalf("%s: %s", what, last)
}

// The whole program against a fake API server: Services and EndpointSlices
// in, connections spliced to the endpoints (default/kubernetes to
// --apiserver-endpoint) and names answered; changes followed; the addresses
// removed at the end.
func TestRun(t *testing.T) {
	b1, b2, b3 := backend(t, "provisioner"), backend(t, "apiserver"), backend(t, "web")
	b1Port, _ := strconv.Atoi(b1[strings.LastIndex(b1, ":")+1:])
	provIP, kubeIP, webIP := "127.0.0.53", "127.0.0.54", "127.0.0.57"
	provPort, kubePort, webPort := freePort(t, provIP), freePort(t, kubeIP), freePort(t, webIP)

	prov := service("nvmirror", "nvmirror-provisioner", provIP, tcpPort("grpc", int32(provPort), "grpc"),
		corev1.ServicePort{Name: "syslog", Protocol: corev1.ProtocolUDP, Port: 514})
	provSlice := slice("nvmirror", "nvmirror-provisioner", "prov-1", map[string]int32{"grpc": int32(b1Port)}, ep{addr: "127.0.0.1"})
	client := fake.NewClientset(prov, provSlice,
		service("default", "kubernetes", kubeIP, tcpPort("https", int32(kubePort), "6443")))
	// Objects changed before an informer's watch is in place would be
	// missed by the fake: know when both are.
	watching := make(chan string, 2)
	client.PrependWatchReactor("*", func(action k8stesting.Action) (bool, watch.Interface, error) {
		w, err := client.Tracker().Watch(action.GetResource(), action.GetNamespace())
		if err != nil {
			return false, nil, err
		}
		watching <- action.GetResource().Resource
		return true, w, nil
	})

	udp, tcp, err := listenDNS("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dnsAddr := udp.LocalAddr().String()
	fa := &fakeAddresser{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var runErr error
	go func() {
		runErr = run(ctx, options{apiserverEndpoint: b2, clusterDomain: "cluster.local"}, client, fa, udp, tcp)
		close(done)
	}()
	defer func() {
		cancel()
		<-done
	}()

	provAddr := netip.AddrPortFrom(netip.MustParseAddr(provIP), provPort).String()
	kubeAddr := netip.AddrPortFrom(netip.MustParseAddr(kubeIP), kubePort).String()
	webAddr := netip.AddrPortFrom(netip.MustParseAddr(webIP), webPort).String()
	eventually(t, "the provisioner's Service", func() string {
		if got, err := request(provAddr, "hello"); got != "provisioner:hello" {
			return "answered " + got + ", " + errString(err)
		}
		return ""
	})
	if got, err := request(kubeAddr, "GET /version"); got != "apiserver:GET /version" {
		t.Errorf("default/kubernetes answered %q, %v; want --apiserver-endpoint's backend", got, err)
	}
	if got := fa.local(); !slices.Equal(got, []string{provIP, kubeIP}) {
		t.Errorf("addresses = %v, want the two cluster IPs", got)
	}
	r := resolver(dnsAddr, "")
	lookup := func(name string) ([]string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return r.LookupHost(ctx, name)
	}
	if got, err := lookup("nvmirror-provisioner.nvmirror.svc.cluster.local."); err != nil || !slices.Equal(got, []string{provIP}) {
		t.Errorf("provisioner's name = %v, %v", got, err)
	}
	if got, err := lookup("kubernetes.default.svc.cluster.local."); err != nil || !slices.Equal(got, []string{kubeIP}) {
		t.Errorf("kubernetes's name = %v, %v", got, err)
	}

	for range 2 {
		select {
		case <-watching:
		case <-time.After(10 * time.Second):
			t.Fatal("the informers never watched")
		}
	}
	// The provisioner's pod is no longer ready: connections are reset.
	provSlice.Endpoints[0].Conditions.Ready = ptr.To(false)
	if _, err := client.DiscoveryV1().EndpointSlices("nvmirror").Update(ctx, provSlice, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the provisioner without ready endpoint", func() string {
		if got, err := request(provAddr, "hello"); err == nil || got != "" {
			return "answered " + got + ", " + errString(err)
		}
		return ""
	})

	// A new Service is proxied and named.
	if _, err := client.CoreV1().Services("app").Create(ctx, service("app", "web", webIP, tcpPort("http", int32(webPort), "http")), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	b3Port, _ := strconv.Atoi(b3[strings.LastIndex(b3, ":")+1:])
	if _, err := client.DiscoveryV1().EndpointSlices("app").Create(ctx, slice("app", "web", "web-1", map[string]int32{"http": int32(b3Port)}, ep{addr: "127.0.0.1"}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the new Service", func() string {
		if got, err := request(webAddr, "hi"); got != "web:hi" {
			return "answered " + got + ", " + errString(err)
		}
		if got, err := lookup("web.app.svc.cluster.local."); err != nil || !slices.Equal(got, []string{webIP}) {
			return "resolved to " + strings.Join(got, ",") + ", " + errString(err)
		}
		return ""
	})

	// The provisioner's Service deleted: no listener, no address, no name.
	if err := client.CoreV1().Services("nvmirror").Delete(ctx, "nvmirror-provisioner", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the deleted Service", func() string {
		if got := fa.local(); slices.Contains(got, provIP) {
			return "addresses " + strings.Join(got, ",")
		}
		if _, err := lookup("nvmirror-provisioner.nvmirror.svc.cluster.local."); err == nil {
			return "still resolves"
		}
		return ""
	})
	if _, err := request(provAddr, "hello"); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("deleted Service's port: %v, want connection refused", err)
	}

	cancel()
	select {
	case <-done:
		if runErr != nil {
			t.Errorf("run = %v", runErr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return")
	}
	if got := fa.local(); len(got) != 0 {
		t.Errorf("addresses after stop = %v, want none", got)
	}
}

func errString(err error) string {
	if err == nil {
		return "no error"
	}
	return err.Error()
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		o    options
		want string // in the error; "" valid
	}{
		{options{dnsAddress: "10.0.0.10:53", clusterDomain: "cluster.local", apiserverEndpoint: "192.168.122.1:6443"}, ""},
		{options{dnsAddress: "10.0.0.10:53", clusterDomain: "cluster.local"}, ""},
		{options{clusterDomain: "cluster.local"}, "--dns-address"},
		{options{dnsAddress: "10.0.0.10", clusterDomain: "cluster.local"}, "--dns-address"},
		{options{dnsAddress: "10.0.0.10:53", clusterDomain: "cluster.local", apiserverEndpoint: "192.168.122.1"}, "--apiserver-endpoint"},
		{options{dnsAddress: "10.0.0.10:53"}, "--cluster-domain"},
	} {
		err := tc.o.validate()
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("validate(%+v) = %v, want %q", tc.o, err, tc.want)
		}
	}
}
