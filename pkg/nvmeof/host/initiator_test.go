package host

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/pkg/nvmeof"
)

const (
	testHostNQN = "nqn.2014-08.org.nvmexpress:uuid:6a1f3c52-0d1e-4c57-9a3b-8f0e2d4c6b10"
	testHostID  = "6a1f3c52-0d1e-4c57-9a3b-8f0e2d4c6b10"
	testNQN     = "nqn.2024-01.io.nvmirror:pvc-1.r0"
	testUUID    = "c5c46b1a-24ef-59e2-a67b-1b196c457a68"
	otherUUID   = "b318d812-f02d-5920-9493-db6385803b38"
)

func intp(v int) *int { return &v }

func baseOpts() ConnectOptions {
	return ConnectOptions{
		TrAddr: "127.0.0.1", TrSvcID: "4421", SubsysNQN: testNQN,
		HostNQN: testHostNQN, HostID: testHostID,
	}
}

// fastInitiator polls every 10ms so tests stay quick.
func fastInitiator(root string, f Fabrics) *Initiator {
	in := NewInitiatorWithFabrics(root, f)
	in.poll = 10 * time.Millisecond
	return in
}

func parseOpts(s string) map[string]string {
	m := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

// kernelLikeFabrics creates a controller in tree for every write, like the
// kernel: instance numbers count up from first.
func kernelLikeFabrics(tree *sysTree, first int) *fakeFabrics {
	var mu sync.Mutex
	next := first
	f := &fakeFabrics{options: kernelOptions61}
	f.onWrite = func(opts string) (string, error) {
		m := parseOpts(opts)
		mu.Lock()
		n := next
		next++
		mu.Unlock()
		tree.addController(ctrlSpec{name: fmt.Sprintf("nvme%d", n), nqn: m["nqn"], traddr: m["traddr"],
			trsvcid: m["trsvcid"], hostnqn: m["hostnqn"], secret: m["dhchap_secret"], ctrlSecret: m["dhchap_ctrl_secret"]})
		if m["dhchap_ctrl_secret"] != "" && !tree.rogueTarget {
			tree.logKmsg(fmt.Sprintf("nvme nvme%d: qid 0: controller authenticated", n))
		}
		return fmt.Sprintf("instance=%d,cntlid=1\n", n), nil
	}
	return f
}

func TestConnect(t *testing.T) {
	tree := newSysTree(t)
	f := kernelLikeFabrics(tree, 3)
	in := fastInitiator(tree.root, f)
	o := baseOpts()
	o.CtrlLossTmo, o.ReconnectDelay, o.FastIOFailTmo = intp(10), intp(1), intp(1)

	c, err := in.Connect(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "nvme3" || c.Instance != 3 || c.SubsysNQN != testNQN || c.TrAddr != "127.0.0.1" ||
		c.TrSvcID != "4421" || c.HostNQN != testHostNQN || !c.State.IsLive() {
		t.Errorf("Connect = %+v", c)
	}
	if w := f.Writes(); len(w) != 1 || w[0] != o.FabricsString() {
		t.Fatalf("writes = %q, want exactly %q", w, o.FabricsString())
	}

	// Idempotent: same options again, no second write.
	c2, err := in.Connect(context.Background(), o)
	if err != nil || c2.Name != "nvme3" {
		t.Fatalf("second Connect = %+v, %v", c2, err)
	}
	if n := len(f.Writes()); n != 1 {
		t.Fatalf("second Connect wrote to nvme-fabrics (%d writes)", n)
	}

	// A reconnecting controller is still the same connection.
	tree.setState("nvme3", "connecting")
	if c3, err := in.Connect(context.Background(), o); err != nil || c3.Name != "nvme3" || c3.State != StateConnecting {
		t.Fatalf("Connect with reconnecting controller = %+v, %v", c3, err)
	}

	// Being deleted: a new controller is created.
	tree.setState("nvme3", "deleting")
	c4, err := in.Connect(context.Background(), o)
	if err != nil || c4.Name != "nvme4" {
		t.Fatalf("Connect with deleting controller = %+v, %v", c4, err)
	}

	// Another host NQN, port or address are other connections.
	for i, mod := range []func(*ConnectOptions){
		func(o *ConnectOptions) {
			o.HostNQN, o.HostID = "nqn.2024-01.io.nvmirror:host-b", "11111111-2222-3333-4444-555555555555"
		},
		func(o *ConnectOptions) { o.TrSvcID = "4422" },
		func(o *ConnectOptions) { o.TrAddr = "127.0.0.2" },
	} {
		o2 := baseOpts()
		mod(&o2)
		c, err := in.Connect(context.Background(), o2)
		if want := fmt.Sprintf("nvme%d", 5+i); err != nil || c.Name != want {
			t.Errorf("Connect variant %d = %+v, %v; want %s", i, c, err, want)
		}
	}
}

func TestConnectIgnoresPinnedControllers(t *testing.T) {
	tree := newSysTree(t)
	// Somebody else's controller pinned to a local address: the kernel does
	// not consider it a duplicate of ours, so neither do we.
	tree.addController(ctrlSpec{name: "nvme0", nqn: testNQN, traddr: "127.0.0.1", trsvcid: "4421",
		hostnqn: testHostNQN, extraAddr: ",host_traddr=127.0.0.9"})
	f := kernelLikeFabrics(tree, 1)
	c, err := fastInitiator(tree.root, f).Connect(context.Background(), baseOpts())
	if err != nil || c.Name != "nvme1" {
		t.Fatalf("Connect = %+v, %v", c, err)
	}
}

func TestConnectErrors(t *testing.T) {
	pathErr := func(e syscall.Errno) error {
		return fmt.Errorf("writing to nvme-fabrics: %w", &os.PathError{Op: "write", Path: "/dev/nvme-fabrics", Err: e})
	}
	tests := []struct {
		name     string
		err      error
		sentinel error
	}{
		{"host not allowed (EIO on 6.1)", pathErr(syscall.EIO), nvmeof.ErrConnectRefused},
		{"port closed", pathErr(syscall.ECONNREFUSED), nvmeof.ErrConnectRefused},
		{"EPERM", pathErr(syscall.EPERM), nvmeof.ErrConnectRefused},
		{"EACCES", pathErr(syscall.EACCES), nvmeof.ErrConnectRefused},
		{"ECONNRESET", pathErr(syscall.ECONNRESET), nvmeof.ErrConnectRefused},
		{"unreachable", pathErr(syscall.EHOSTUNREACH), nvmeof.ErrConnectRefused},
		{"timeout", pathErr(syscall.ETIMEDOUT), nvmeof.ErrConnectRefused},
		{"invalid options", pathErr(syscall.EINVAL), nvmeof.ErrInvalidArgument},
		{"duplicate not visible", pathErr(syscall.EALREADY), nvmeof.ErrBusy},
		{"module missing", fmt.Errorf("%w: /dev/nvme-fabrics is missing", nvmeof.ErrNotFound), nvmeof.ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tree := newSysTree(t)
			f := &fakeFabrics{options: kernelOptions61, onWrite: func(string) (string, error) { return "", tc.err }}
			_, err := fastInitiator(tree.root, f).Connect(context.Background(), baseOpts())
			if !errors.Is(err, tc.sentinel) {
				t.Fatalf("Connect = %v, want %v", err, tc.sentinel)
			}
			var errno syscall.Errno
			if errors.As(tc.err, &errno) && !errors.Is(err, errno) {
				t.Errorf("error %v lost the errno %v", err, errno)
			}
			if tc.sentinel != nvmeof.ErrNotFound {
				for _, want := range []string{testNQN, "127.0.0.1:4421"} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not name %s", err, want)
					}
				}
			}
		})
	}
	t.Run("other errno has no sentinel", func(t *testing.T) {
		tree := newSysTree(t)
		f := &fakeFabrics{options: kernelOptions61, onWrite: func(string) (string, error) { return "", pathErr(syscall.ENOMEM) }}
		_, err := fastInitiator(tree.root, f).Connect(context.Background(), baseOpts())
		if err == nil || errors.Is(err, nvmeof.ErrConnectRefused) || errors.Is(err, nvmeof.ErrInvalidArgument) || !errors.Is(err, syscall.ENOMEM) {
			t.Fatalf("Connect = %v", err)
		}
	})
	t.Run("garbage answer", func(t *testing.T) {
		tree := newSysTree(t)
		f := &fakeFabrics{options: kernelOptions61, onWrite: func(string) (string, error) { return "hello\n", nil }}
		if _, err := fastInitiator(tree.root, f).Connect(context.Background(), baseOpts()); err == nil {
			t.Fatal("Connect accepted a garbage answer")
		}
	})
}

func TestConnectRaceEALREADY(t *testing.T) {
	tree := newSysTree(t)
	// Another process connects between our check and our write: the kernel
	// answers EALREADY and Connect returns the other controller.
	f := &fakeFabrics{options: kernelOptions61, onWrite: func(opts string) (string, error) {
		m := parseOpts(opts)
		tree.addController(ctrlSpec{name: "nvme7", nqn: m["nqn"], traddr: m["traddr"], trsvcid: m["trsvcid"], hostnqn: m["hostnqn"]})
		return "", syscall.EALREADY
	}}
	c, err := fastInitiator(tree.root, f).Connect(context.Background(), baseOpts())
	if err != nil || c.Name != "nvme7" {
		t.Fatalf("Connect = %+v, %v", c, err)
	}
}

func TestConnectOptionSupport(t *testing.T) {
	noFastIO := strings.Replace(kernelOptions61, "fast_io_fail_tmo=%d,", "", 1)
	tests := []struct {
		name    string
		options string
		optErr  error
		fastIO  bool
		wantErr error
		writes  int
	}{
		{"supported", kernelOptions61, nil, true, nil, 1},
		{"fast_io_fail_tmo unsupported", noFastIO, nil, true, nvmeof.ErrInvalidArgument, 0},
		{"unsupported but unused", noFastIO, nil, false, nil, 1},
		{"list unreadable: write decides", "", syscall.EACCES, true, nil, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tree := newSysTree(t)
			f := kernelLikeFabrics(tree, 0)
			f.options, f.optErr = tc.options, tc.optErr
			o := baseOpts()
			if tc.fastIO {
				o.FastIOFailTmo = intp(1)
			}
			_, err := fastInitiator(tree.root, f).Connect(context.Background(), o)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("Connect = %v, want %v", err, tc.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), "fast_io_fail_tmo") {
				t.Errorf("error %q does not name the option", err)
			}
			if n := len(f.Writes()); n != tc.writes {
				t.Errorf("%d writes, want %d", n, tc.writes)
			}
		})
	}
}

func TestConnectRejectsInjectionWithoutWriting(t *testing.T) {
	for _, mod := range []func(*ConnectOptions){
		func(o *ConnectOptions) { o.SubsysNQN += ",hostnqn=nqn.evil:x" },
		func(o *ConnectOptions) { o.HostNQN += "\nduplicate_connect" },
		func(o *ConnectOptions) { o.TrAddr = "127.0.0.1,duplicate_connect" },
		func(o *ConnectOptions) { o.TrSvcID = "4421=" },
	} {
		tree := newSysTree(t)
		f := kernelLikeFabrics(tree, 0)
		o := baseOpts()
		mod(&o)
		if _, err := fastInitiator(tree.root, f).Connect(context.Background(), o); !errors.Is(err, nvmeof.ErrInvalidArgument) {
			t.Errorf("Connect(%+v) = %v, want nvmeof.ErrInvalidArgument", o, err)
		}
		if n := len(f.Writes()); n != 0 {
			t.Errorf("invalid options reached nvme-fabrics: %q", f.Writes())
		}
	}
}

func TestConnectContext(t *testing.T) {
	tree := newSysTree(t)
	f := kernelLikeFabrics(tree, 2)
	f.block = make(chan struct{})
	f.entered = make(chan struct{}, 1)
	finished := make(chan struct{}, 4)
	kernel := f.onWrite
	f.onWrite = func(opts string) (string, error) {
		defer func() { finished <- struct{}{} }()
		return kernel(opts)
	}
	in := fastInitiator(tree.root, f)

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := in.Connect(ctx, baseOpts())
		errc <- err
	}()
	<-f.entered // the write is in progress, blocked like a slow TCP connect
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), testNQN) {
			t.Fatalf("Connect = %v, want context.Canceled naming the NQN", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Connect did not return when its context ended")
	}
	// The kernel finishes later; the next Connect finds that controller.
	close(f.block)
	f.mu.Lock()
	f.block, f.entered = nil, nil
	f.mu.Unlock()
	select {
	case <-finished:
	case <-time.After(5 * time.Second):
		t.Fatal("late connect never completed")
	}
	c, err := in.Connect(context.Background(), baseOpts())
	if err != nil || c.Name != "nvme2" || len(f.Writes()) != 1 {
		t.Fatalf("Connect after late completion = %+v, %v, writes %d", c, err, len(f.Writes()))
	}

	// Already cancelled: nothing is written.
	done, cancel2 := context.WithCancel(context.Background())
	cancel2()
	o := baseOpts()
	o.TrSvcID = "4499"
	if _, err := in.Connect(done, o); !errors.Is(err, context.Canceled) {
		t.Fatalf("Connect with cancelled context = %v", err)
	}
	if n := len(f.Writes()); n != 1 {
		t.Fatalf("cancelled Connect wrote (%d writes)", n)
	}
}

func TestConnectWaitsForSysfs(t *testing.T) {
	tree := newSysTree(t)
	f := &fakeFabrics{options: kernelOptions61, onWrite: func(opts string) (string, error) {
		m := parseOpts(opts)
		go func() {
			time.Sleep(50 * time.Millisecond)
			tree.addController(ctrlSpec{name: "nvme5", nqn: m["nqn"], traddr: m["traddr"], trsvcid: m["trsvcid"], hostnqn: m["hostnqn"]})
		}()
		return "instance=5,cntlid=2\n", nil
	}}
	c, err := fastInitiator(tree.root, f).Connect(context.Background(), baseOpts())
	if err != nil || c.Name != "nvme5" {
		t.Fatalf("Connect = %+v, %v", c, err)
	}
	// Never appearing: bounded by the context.
	f.onWrite = func(string) (string, error) { return "instance=9,cntlid=1\n", nil }
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	o := baseOpts()
	o.TrSvcID = "4430"
	if _, err := fastInitiator(tree.root, f).Connect(ctx, o); !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, nvmeof.ErrNotFound) {
		t.Fatalf("Connect = %v, want deadline exceeded with nvmeof.ErrNotFound", err)
	}
}

func TestControllersFor(t *testing.T) {
	tree := newSysTree(t)
	tree.addController(ctrlSpec{name: "nvme1", nqn: testNQN, traddr: "127.0.0.1", trsvcid: "4421", hostnqn: testHostNQN})
	tree.addController(ctrlSpec{name: "nvme2", nqn: "nqn.2024-01.io.nvmirror:other", traddr: "127.0.0.1", trsvcid: "4421", hostnqn: testHostNQN})
	tree.addController(ctrlSpec{name: "nvme11", nqn: testNQN, traddr: "127.0.0.2", trsvcid: "4421", hostnqn: testHostNQN, state: "connecting"})
	in := fastInitiator(tree.root, &fakeFabrics{})
	cs, err := in.ControllersFor(testNQN)
	if err != nil || len(cs) != 2 || cs[0].Name != "nvme1" || cs[1].Name != "nvme11" {
		t.Fatalf("ControllersFor = %+v, %v", cs, err)
	}
	if _, err := in.ControllersFor("bad"); !errors.Is(err, nvmeof.ErrInvalidArgument) {
		t.Errorf("ControllersFor(bad) = %v", err)
	}
	all, err := in.Controllers()
	if err != nil || len(all) != 3 {
		t.Fatalf("Controllers = %+v, %v", all, err)
	}
	if c, err := in.Controller("nvme11"); err != nil || c.State != StateConnecting {
		t.Fatalf("Controller(nvme11) = %+v, %v", c, err)
	}
	if _, err := in.Controller("nvme12"); !errors.Is(err, nvmeof.ErrNotFound) {
		t.Errorf("Controller(nvme12) = %v", err)
	}
}

// kernelDeleter emulates the kernel removing a controller's directory once
// "1" is written to its delete_controller attribute.
func kernelDeleter(t *testing.T, tree *sysTree, names ...string) (stop func()) {
	t.Helper()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			for _, n := range names {
				b, err := os.ReadFile(tree.path("sys/class/nvme/" + n + "/delete_controller"))
				if err == nil && strings.TrimSpace(string(b)) == "1" {
					time.Sleep(20 * time.Millisecond)
					_ = os.RemoveAll(tree.path("sys/class/nvme/" + n))
				}
			}
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

func TestDisconnect(t *testing.T) {
	tree := newSysTree(t)
	tree.addController(ctrlSpec{name: "nvme3", nqn: testNQN, traddr: "127.0.0.1", trsvcid: "4421", hostnqn: testHostNQN})
	tree.addController(ctrlSpec{name: "nvme4", nqn: testNQN, traddr: "127.0.0.2", trsvcid: "4421", hostnqn: testHostNQN})
	tree.addController(ctrlSpec{name: "nvme5", nqn: "nqn.2024-01.io.nvmirror:keep", traddr: "127.0.0.1", trsvcid: "4421", hostnqn: testHostNQN})
	tree.addController(ctrlSpec{name: "nvme6", nqn: "nqn.2024-01.io.nvmirror:stuck", traddr: "127.0.0.1", trsvcid: "4421", hostnqn: testHostNQN})
	stop := kernelDeleter(t, tree, "nvme3", "nvme4", "nvme5")
	defer stop()
	in := fastInitiator(tree.root, &fakeFabrics{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	if err := in.Disconnect(ctx, "nvme3"); err != nil {
		t.Fatalf("Disconnect(nvme3) = %v", err)
	}
	if _, err := os.Stat(tree.path("sys/class/nvme/nvme3")); !os.IsNotExist(err) {
		t.Fatalf("nvme3 still there after Disconnect")
	}
	// Gone already: fine.
	if err := in.Disconnect(ctx, "nvme3"); err != nil {
		t.Fatalf("second Disconnect(nvme3) = %v", err)
	}
	if err := in.Disconnect(ctx, "../nvme5"); !errors.Is(err, nvmeof.ErrInvalidArgument) {
		t.Fatalf("Disconnect(../nvme5) = %v", err)
	}
	// The kernel never removes nvme6: the wait ends with the deadline.
	short, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	err := in.Disconnect(short, "nvme6")
	if !errors.Is(err, nvmeof.ErrBusy) || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "nvme6") {
		t.Fatalf("Disconnect(stuck) = %v", err)
	}

	if err := in.DisconnectNQN(ctx, testNQN); err != nil {
		t.Fatalf("DisconnectNQN = %v", err)
	}
	if _, err := os.Stat(tree.path("sys/class/nvme/nvme4")); !os.IsNotExist(err) {
		t.Errorf("nvme4 survived DisconnectNQN")
	}
	if _, err := os.Stat(tree.path("sys/class/nvme/nvme5")); err != nil {
		t.Errorf("DisconnectNQN removed another subsystem's controller")
	}
}

func TestNewInitiatorRoot(t *testing.T) {
	in := NewInitiator("")
	if in.sys.root != "/" {
		t.Errorf("root = %q", in.sys.root)
	}
	if f, ok := in.fabrics.(devFabrics); !ok || f.path != "/dev/nvme-fabrics" {
		t.Errorf("fabrics = %#v", in.fabrics)
	}
	in = NewInitiator("/tmp/x")
	if f := in.fabrics.(devFabrics); f.path != "/tmp/x/dev/nvme-fabrics" || in.poll != pollInterval {
		t.Errorf("fabrics = %#v poll %v", f, in.poll)
	}
}
