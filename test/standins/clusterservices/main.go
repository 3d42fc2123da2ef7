// Command clusterservices is a test stand-in for kube-proxy and the cluster
// DNS (CoreDNS) on the one-node cluster of the kubelet VM test, whose pods
// sit on the CNI bridge plugin with no iptables or NAT. kube-proxy works by
// packet filter rules (iptables, nftables or IPVS), which that node does not
// have, and CoreDNS is a large program of its own; the test needs only what
// pods see of them. It runs on the node (not in a pod), with a kubeconfig:
//
//   - It watches Services and EndpointSlices.
//   - Every TCP port of a Service with a cluster IP (IPv4): the cluster IP
//     is made an address of the node (`ip addr add IP/32 dev lo`, removed
//     when the Service goes), and a listener on IP:port splices each
//     connection, both ways and half-close aware, to a ready endpoint of
//     the Service's EndpointSlices, round-robin, at the target port of the
//     slice's port of the same name; with no ready endpoint the connection
//     is reset. default/kubernetes leads to --apiserver-endpoint: the
//     control plane runs without an endpoint reconciler.
//   - DNS on --dns-address, UDP and TCP (the node adds that address
//     itself): A records of <service>.<namespace>.svc.<--cluster-domain>,
//     the cluster IP, or a headless Service's ready endpoints; other types
//     of a known name get an empty NOERROR answer, unknown names of the
//     cluster domain NXDOMAIN, and every other name REFUSED (there is no
//     upstream to forward to: the node has no other network). Until the
//     first table is built every query gets SERVFAIL, which resolvers
//     retry, rather than an NXDOMAIN they would cache. A Service on the DNS
//     address itself (a kube-dns Service) is left to it: not proxied, the
//     address never removed.
//
// Not implemented: UDP and SCTP ports, IPv6, node ports, load balancers,
// session affinity, external and internal traffic policies (one node),
// ExternalName Services, pod and SRV and PTR records, hostname records of
// headless Services' endpoints, DNS forwarding and caching.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	"k8s.io/utils/exec"
)

type options struct {
	kubeconfig        string
	apiserverEndpoint string
	dnsAddress        string
	clusterDomain     string
}

func (o *options) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig of the cluster (empty: the in-cluster configuration)")
	fs.StringVar(&o.apiserverEndpoint, "apiserver-endpoint", "", "HOST:PORT where connections to the default/kubernetes Service go (empty: its EndpointSlices, which a control plane without endpoint reconciler does not have)")
	fs.StringVar(&o.dnsAddress, "dns-address", "", "IP:PORT of the DNS server, UDP and TCP: the address kubelet's clusterDNS names, on the node already (required)")
	fs.StringVar(&o.clusterDomain, "cluster-domain", "cluster.local", "the cluster's DNS domain, as kubelet's clusterDomain")
}

func (o *options) validate() error {
	if o.dnsAddress == "" {
		return errors.New("--dns-address is required")
	}
	if _, _, err := net.SplitHostPort(o.dnsAddress); err != nil {
		return fmt.Errorf("--dns-address: %w", err)
	}
	if o.apiserverEndpoint != "" {
		if _, _, err := net.SplitHostPort(o.apiserverEndpoint); err != nil {
			return fmt.Errorf("--apiserver-endpoint: %w", err)
		}
	}
	if o.clusterDomain == "" {
		return errors.New("--cluster-domain must not be empty")
	}
	return nil
}

func main() {
	klog.InitFlags(nil)
	var o options
	o.addFlags(flag.CommandLine)
	flag.Parse()
	if err := o.validate(); err != nil {
		fmt.Fprintf(os.Stderr, "clusterservices: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := start(ctx, o); err != nil {
		klog.ErrorS(err, "clusterservices failed")
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}

func start(ctx context.Context, o options) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	udp, tcp, err := listenDNS(o.dnsAddress)
	if err != nil {
		return err
	}
	return run(ctx, o, client, loAddresser{exec: exec.New()}, udp, tcp)
}

// resync is how often the table is rebuilt without a change, to retry what
// failed (an address, a listen).
const resync = 10 * time.Second

// run serves DNS on udp and tcp and proxies the Services of client until ctx
// ends, then removes the addresses it added.
func run(ctx context.Context, o options, client kubernetes.Interface, a addresser, udp net.PacketConn, tcp net.Listener) error {
	p := newProxier(a)
	defer p.close()
	dns := &dnsServer{domain: o.clusterDomain, table: p.current.Load}
	go dns.serveUDP(udp)
	go dns.serveTCP(tcp)
	defer udp.Close()
	defer tcp.Close()
	klog.InfoS("Serving DNS", "address", udp.LocalAddr(), "domain", o.clusterDomain)
	dnsIP := netip.MustParseAddrPort(udp.LocalAddr().String()).Addr()

	factory := informers.NewSharedInformerFactory(client, 0)
	services := factory.Core().V1().Services()
	endpointSlices := factory.Discovery().V1().EndpointSlices()
	changed := make(chan struct{}, 1)
	notify := func(any) {
		select {
		case changed <- struct{}{}:
		default: // a rebuild is pending already
		}
	}
	handler := cache.ResourceEventHandlerFuncs{AddFunc: notify, UpdateFunc: func(_, obj any) { notify(obj) }, DeleteFunc: notify}
	if _, err := services.Informer().AddEventHandler(handler); err != nil {
		return err
	}
	if _, err := endpointSlices.Informer().AddEventHandler(handler); err != nil {
		return err
	}
	informerCtx, cancel := context.WithCancel(ctx)
	// Shutdown waits for the informers, which stop when cancelled: also
	// when run returns an error.
	defer factory.Shutdown()
	defer cancel()
	factory.Start(informerCtx.Done())
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("informer of %v did not sync", typ)
		}
	}

	logged := map[string]bool{}
	tick := time.NewTicker(resync)
	defer tick.Stop()
	for {
		svcs, err := services.Lister().List(labels.Everything())
		if err != nil {
			return err
		}
		eps, err := endpointSlices.Lister().List(labels.Everything())
		if err != nil {
			return err
		}
		t := buildTable(svcs, eps, o.apiserverEndpoint, o.clusterDomain)
		t.reserve(dnsIP)
		for _, s := range t.skipped {
			if !logged[s] {
				klog.InfoS("Not served", "what", s)
				logged[s] = true
			}
		}
		p.sync(t)
		select {
		case <-ctx.Done():
			klog.InfoS("Stopping: removing the cluster IPs")
			return nil
		case <-changed:
		case <-tick.C:
		}
	}
}
