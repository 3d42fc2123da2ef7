package host

import (
	"errors"
	"strings"
	"testing"

	"github.com/nvmirror/nvmirror/pkg/nvmeof"
)

func TestConnectOptionsValidate(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*ConnectOptions)
		ok   bool
	}{
		{"base", func(*ConnectOptions) {}, true},
		{"explicit tcp", func(o *ConnectOptions) { o.Transport = "tcp" }, true},
		{"ipv6", func(o *ConnectOptions) { o.TrAddr = "fd00::1" }, true},
		{"all timeouts", func(o *ConnectOptions) {
			o.CtrlLossTmo, o.ReconnectDelay, o.FastIOFailTmo, o.KeepAliveTmo, o.NrIOQueues = intp(-1), intp(1), intp(0), intp(5), 2
		}, true},
		{"uppercase host id", func(o *ConnectOptions) { o.HostID = strings.ToUpper(testHostID) }, true},
		{"rdma", func(o *ConnectOptions) { o.Transport = "rdma" }, false},
		{"transport injection", func(o *ConnectOptions) { o.Transport = "tcp,duplicate_connect" }, false},
		{"hostname", func(o *ConnectOptions) { o.TrAddr = "storage1" }, false},
		{"addr injection", func(o *ConnectOptions) { o.TrAddr = "127.0.0.1,nqn=nqn.x:y" }, false},
		{"addr zone", func(o *ConnectOptions) { o.TrAddr = "fe80::1%eth0,x=y" }, false},
		{"empty addr", func(o *ConnectOptions) { o.TrAddr = "" }, false},
		{"port 0", func(o *ConnectOptions) { o.TrSvcID = "0" }, false},
		{"port 65536", func(o *ConnectOptions) { o.TrSvcID = "65536" }, false},
		{"port injection", func(o *ConnectOptions) { o.TrSvcID = "4420,hostnqn=evil" }, false},
		{"port newline", func(o *ConnectOptions) { o.TrSvcID = "4420\nhostnqn=evil" }, false},
		{"nqn comma", func(o *ConnectOptions) { o.SubsysNQN = testNQN + ",duplicate_connect" }, false},
		{"nqn equals", func(o *ConnectOptions) { o.SubsysNQN = testNQN + "=x" }, false},
		{"nqn newline", func(o *ConnectOptions) { o.SubsysNQN = testNQN + "\nhostnqn=evil" }, false},
		{"nqn empty", func(o *ConnectOptions) { o.SubsysNQN = "" }, false},
		{"discovery nqn", func(o *ConnectOptions) { o.SubsysNQN = nvmeof.DiscoveryNQN }, false},
		{"hostnqn comma", func(o *ConnectOptions) { o.HostNQN = testHostNQN[:20] + ",x" }, false},
		{"hostnqn newline", func(o *ConnectOptions) { o.HostNQN = "nqn.2024-01.io.x:h\n" }, false},
		{"hostnqn missing", func(o *ConnectOptions) { o.HostNQN = "" }, false},
		{"hostid missing", func(o *ConnectOptions) { o.HostID = "" }, false},
		{"hostid not uuid", func(o *ConnectOptions) { o.HostID = "host-1" }, false},
		{"hostid injection", func(o *ConnectOptions) { o.HostID = testHostID + ",x=y" }, false},
		{"ctrl_loss_tmo -2", func(o *ConnectOptions) { o.CtrlLossTmo = intp(-2) }, false},
		{"reconnect_delay 0", func(o *ConnectOptions) { o.ReconnectDelay = intp(0) }, false},
		{"fast_io_fail_tmo -2", func(o *ConnectOptions) { o.FastIOFailTmo = intp(-2) }, false},
		{"keep_alive_tmo 0", func(o *ConnectOptions) { o.KeepAliveTmo = intp(0) }, false},
		{"nr_io_queues -1", func(o *ConnectOptions) { o.NrIOQueues = -1 }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := baseOpts()
			tc.mod(&o)
			err := o.Validate()
			if tc.ok && err != nil {
				t.Fatalf("Validate() = %v", err)
			}
			if !tc.ok && !errors.Is(err, nvmeof.ErrInvalidArgument) {
				t.Fatalf("Validate() = %v, want nvmeof.ErrInvalidArgument", err)
			}
			if tc.ok && strings.Count(o.FabricsString(), "=") != strings.Count(o.FabricsString(), ",")+1 {
				t.Errorf("FabricsString %q is not a clean key=value list", o.FabricsString())
			}
		})
	}
}

func TestFabricsString(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*ConnectOptions)
		want string
	}{
		{"minimal", func(*ConnectOptions) {},
			"transport=tcp,traddr=127.0.0.1,trsvcid=4421,nqn=" + testNQN + ",hostnqn=" + testHostNQN + ",hostid=" + testHostID},
		{"all", func(o *ConnectOptions) {
			o.KeepAliveTmo, o.FastIOFailTmo, o.ReconnectDelay, o.CtrlLossTmo, o.NrIOQueues = intp(5), intp(1), intp(2), intp(-1), 4
		}, "transport=tcp,traddr=127.0.0.1,trsvcid=4421,nqn=" + testNQN + ",hostnqn=" + testHostNQN + ",hostid=" + testHostID +
			",ctrl_loss_tmo=-1,reconnect_delay=2,fast_io_fail_tmo=1,keep_alive_tmo=5,nr_io_queues=4"},
		{"ipv6 canonical, hostid lower", func(o *ConnectOptions) {
			o.TrAddr, o.HostID, o.FastIOFailTmo = "FD00:0:0::1", strings.ToUpper(testHostID), intp(0)
		}, "transport=tcp,traddr=fd00::1,trsvcid=4421,nqn=" + testNQN + ",hostnqn=" + testHostNQN + ",hostid=" + testHostID +
			",fast_io_fail_tmo=0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := baseOpts()
			tc.mod(&o)
			if err := o.Validate(); err != nil {
				t.Fatal(err)
			}
			if got := o.FabricsString(); got != tc.want {
				t.Errorf("FabricsString() =\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

// FuzzConnectOptions: whatever the NQNs, address and port, options that
// pass Validate render to exactly the expected keys, each once, so no input
// can inject an option into the fabrics string.
func FuzzConnectOptions(f *testing.F) {
	f.Add(testNQN, testHostNQN, "127.0.0.1", "4420")
	f.Add(testNQN+",duplicate_connect", testHostNQN, "127.0.0.1", "4420")
	f.Add(testNQN, testHostNQN+"\nhostnqn=x", "::1", "4420")
	f.Add("nqn.a=b", "nqn.c", "1.2.3.4,x=y", "1")
	f.Add("nqn.x", "nqn.y", "fe80::1%a,b", "65535")
	f.Fuzz(func(t *testing.T, nqn, hostnqn, addr, port string) {
		o := ConnectOptions{TrAddr: addr, TrSvcID: port, SubsysNQN: nqn, HostNQN: hostnqn, HostID: testHostID,
			FastIOFailTmo: intp(1)}
		if err := o.Validate(); err != nil {
			if !errors.Is(err, nvmeof.ErrInvalidArgument) {
				t.Fatalf("Validate error without nvmeof.ErrInvalidArgument: %v", err)
			}
			return
		}
		s := o.FabricsString()
		if strings.ContainsAny(s, "\n\r\x00 ") {
			t.Fatalf("FabricsString %q contains a separator", s)
		}
		var keys []string
		for _, kv := range strings.Split(s, ",") {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || strings.Contains(v, "=") || v == "" {
				t.Fatalf("FabricsString %q has a malformed pair %q", s, kv)
			}
			keys = append(keys, k)
		}
		want := []string{"transport", "traddr", "trsvcid", "nqn", "hostnqn", "hostid", "fast_io_fail_tmo"}
		if strings.Join(keys, ",") != strings.Join(want, ",") {
			t.Fatalf("FabricsString %q has keys %v", s, keys)
		}
		m := parseOpts(s)
		if m["nqn"] != nqn || m["hostnqn"] != hostnqn || m["trsvcid"] != port {
			t.Fatalf("FabricsString %q altered a value", s)
		}
	})
}
func TestCheckOptionValue(t *testing.T) {
	tests := []struct {
		v  string
		ok bool
	}{
		{"127.0.0.1", true},
		{"nqn.2024-01.io.nvmirror:x", true},
		{"", false},
		{"a,b", false},
		{"a=b", false},
		{"a\nb", false},
		{"a\rb", false},
		{"a b", false},
		{"a\tb", false},
		{"a\x00b", false},
	}
	for _, tc := range tests {
		err := checkOptionValue("traddr", tc.v)
		if (err == nil) != tc.ok {
			t.Errorf("checkOptionValue(%q) = %v, want ok=%v", tc.v, err, tc.ok)
		}
		if err != nil && !errors.Is(err, nvmeof.ErrInvalidArgument) {
			t.Errorf("checkOptionValue(%q) = %v, want nvmeof.ErrInvalidArgument", tc.v, err)
		}
	}
}
