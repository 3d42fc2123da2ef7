package events

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// rsyslog runs a real rsyslogd (Debian package rsyslog) on loopback with
// UDP and TCP inputs writing one JSON object per message to a file.
type rsyslog struct {
	t        *testing.T
	bin      string
	dir      string
	conf     string
	out      string
	udp, tcp int
	cmd      *exec.Cmd
	exited   chan struct{}
	logs     *bytes.Buffer
}

func freeTCPPort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func freeUDPPort(t *testing.T) int {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

func newRsyslog(t *testing.T) *rsyslog {
	bin, err := exec.LookPath("rsyslogd")
	if err != nil {
		for _, p := range []string{"/usr/sbin/rsyslogd", "/sbin/rsyslogd"} {
			if _, e := os.Stat(p); e == nil {
				bin, err = p, nil
			}
		}
	}
	if err != nil {
		if os.Getenv("NVMIRROR_REQUIRE_RSYSLOG") == "1" {
			t.Fatal("NVMIRROR_REQUIRE_RSYSLOG=1 but rsyslogd is not installed (apt-get install rsyslog)")
		}
		t.Skip("rsyslogd not installed (apt-get install rsyslog); skipping the real-rsyslog test")
	}
	dir := t.TempDir()
	r := &rsyslog{t: t, bin: bin, dir: dir, conf: filepath.Join(dir, "rsyslog.conf"), out: filepath.Join(dir, "out.jsonl"),
		udp: freeUDPPort(t), tcp: freeTCPPort(t)}
	// The template keeps what the assertions need, JSON-escaped by
	// rsyslog itself: severity and facility as rsyslog parsed them from
	// PRI, MSGID, the raw structured data and the message.
	conf := fmt.Sprintf(`global(workDirectory=%[1]q)
module(load="imudp")
module(load="imtcp")
template(name="nvmirrorjson" type="list") {
  constant(value="{\"severity\":\"") property(name="syslogseverity")
  constant(value="\",\"facility\":\"") property(name="syslogfacility")
  constant(value="\",\"msgid\":\"") property(name="msgid" format="json")
  constant(value="\",\"app\":\"") property(name="app-name" format="json")
  constant(value="\",\"sd\":\"") property(name="structured-data" format="json")
  constant(value="\",\"msg\":\"") property(name="msg" format="json")
  constant(value="\"}\n")
}
ruleset(name="nvmirror") {
  action(type="omfile" file=%[2]q template="nvmirrorjson")
}
input(type="imudp" address="127.0.0.1" port="%[3]d" ruleset="nvmirror")
input(type="imtcp" address="127.0.0.1" port="%[4]d" ruleset="nvmirror")
`, dir, r.out, r.udp, r.tcp)
	if err := os.WriteFile(r.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "-N1", "-f", r.conf).CombinedOutput()
	if err != nil {
		t.Fatalf("rsyslogd -N1 rejects the test config: %v\n%s", err, out)
	}
	return r
}

func (r *rsyslog) start() {
	r.t.Helper()
	r.logs = &bytes.Buffer{}
	r.cmd = exec.Command(r.bin, "-n", "-f", r.conf, "-i", filepath.Join(r.dir, "rsyslogd.pid"))
	r.cmd.Stdout, r.cmd.Stderr = r.logs, r.logs
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.exited = make(chan struct{})
	go func(cmd *exec.Cmd, ch chan struct{}) { cmd.Wait(); close(ch) }(r.cmd, r.exited)
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", r.tcp), time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-r.exited:
			r.t.Fatalf("rsyslogd exited: %s", r.logs)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			r.stop()
			r.t.Fatalf("rsyslogd not listening after 15 s: %s", r.logs)
		}
	}
}

func (r *rsyslog) stop() {
	if r.cmd == nil {
		return
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.exited:
	case <-time.After(15 * time.Second):
		r.cmd.Process.Kill()
		<-r.exited
	}
	r.cmd = nil
}

type logged struct {
	Severity string `json:"severity"`
	Facility string `json:"facility"`
	MsgID    string `json:"msgid"`
	App      string `json:"app"`
	SD       string `json:"sd"`
	Msg      string `json:"msg"`
}

func (r *rsyslog) read() []logged {
	r.t.Helper()
	b, err := os.ReadFile(r.out)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		r.t.Fatal(err)
	}
	var out []logged
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var l logged
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			// The last line may be half written; it is read again later.
			continue
		}
		out = append(out, l)
	}
	return out
}

// byVolume indexes logged messages by their volume SD-PARAM.
func byVolume(t *testing.T, ls []logged) map[string]logged {
	m := map[string]logged{}
	for _, l := range ls {
		_, params, _ := parseSD(t, l.SD)
		for _, p := range params {
			if p[0] == "volume" {
				m[p[1]] = l
			}
		}
	}
	return m
}

func TestRsyslog(t *testing.T) {
	r := newRsyslog(t)
	r.start()
	defer r.stop()

	fmtr := &Formatter{Facility: 16, Hostname: "prov-0", AppName: "nvmirror", ProcID: "1", PEN: ExamplePEN}
	tcpF, stopTCP := startForwarder(t, ForwarderOptions{Network: "tcp", Address: fmt.Sprintf("127.0.0.1:%d", r.tcp), Formatter: fmtr})
	defer stopTCP()
	udpF, stopUDP := startForwarder(t, ForwarderOptions{Network: "udp", Address: fmt.Sprintf("127.0.0.1:%d", r.udp), Formatter: fmtr})
	defer stopUDP()

	// Phase 1: one event of every type, over both transports.
	now := time.Now()
	var sent []Event
	for i, typ := range Types() {
		for _, tr := range []string{"tcp", "udp"} {
			e := Event{Time: now, Type: typ, Volume: fmt.Sprintf("%s-%d-%s", tr, i, typ), Replica: "r-" + tr,
				Node: "node-a", StorageNode: `sn"1]\x`, Message: "phase one"}
			if typ == Audit {
				e.Method, e.Outcome = "CreateVolume", "OK"
			}
			f := tcpF
			if tr == "udp" {
				f = udpF
			}
			if err := f.Enqueue(e); err != nil {
				t.Fatal(err)
			}
			sent = append(sent, e)
		}
	}
	waitFor(t, "phase one in rsyslog's file", 20*time.Second, func() bool { return len(byVolume(t, r.read())) >= len(sent) })
	got := byVolume(t, r.read())
	for _, e := range sent {
		l, ok := got[e.Volume]
		if !ok {
			t.Errorf("%s not logged", e.Volume)
			continue
		}
		if want := fmt.Sprint(e.Type.Level().Severity()); l.Severity != want {
			t.Errorf("%s: severity %s, want %s", e.Volume, l.Severity, want)
		}
		if l.Facility != "16" || l.App != "nvmirror" {
			t.Errorf("%s: facility %s app %s", e.Volume, l.Facility, l.App)
		}
		if l.MsgID != string(e.Type) {
			t.Errorf("%s: MSGID %q, want %q", e.Volume, l.MsgID, e.Type)
		}
		id, params, _ := parseSD(t, l.SD)
		pm := map[string]string{}
		for _, p := range params {
			pm[p[0]] = p[1]
		}
		if id != "nvmirror@32473" || pm["replica"] != e.Replica || pm["node"] != "node-a" || pm["storageNode"] != e.StorageNode {
			t.Errorf("%s: structured data %q parsed as %s %v", e.Volume, l.SD, id, pm)
		}
		if e.Type == Audit && (pm["method"] != "CreateVolume" || pm["outcome"] != "OK") {
			t.Errorf("audit SD %v", pm)
		}
		if !strings.Contains(l.Msg, e.Type.Title()+": phase one") && !strings.Contains(l.Msg, "phase one") {
			t.Errorf("%s: msg %q", e.Volume, l.Msg)
		}
	}
	waitFor(t, "queues drained", 10*time.Second, func() bool { return tcpF.Stats().Queued == 0 && udpF.Stats().Queued == 0 })

	// Phase 2: rsyslog down; events are queued, not lost.
	r.stop()
	var outage []string
	for i := 0; i < 25; i++ {
		for _, tr := range []string{"tcp", "udp"} {
			f := tcpF
			if tr == "udp" {
				f = udpF
			}
			vol := fmt.Sprintf("outage-%s-%02d", tr, i)
			if err := f.Enqueue(Event{Time: time.Now(), Type: VolumeDegraded, Volume: vol, Replicas: []string{"a", "b"}}); err != nil {
				t.Fatal(err)
			}
			outage = append(outage, vol)
		}
	}
	waitFor(t, "forwarders notice the outage", 10*time.Second, func() bool {
		return tcpF.Stats().LastError != "" && udpF.Stats().LastError != ""
	})
	if q := tcpF.Stats().Queued; q != 25 {
		t.Errorf("TCP queue holds %d during the outage, want 25", q)
	}

	// Phase 3: rsyslog back; everything arrives.
	r.start()
	waitFor(t, "outage events in rsyslog's file after restart", 30*time.Second, func() bool {
		got := byVolume(t, r.read())
		for _, v := range outage {
			if _, ok := got[v]; !ok {
				return false
			}
		}
		return true
	})
	waitFor(t, "queues drained after restart", 10*time.Second, func() bool { return tcpF.Stats().Queued == 0 && udpF.Stats().Queued == 0 })
	got = byVolume(t, r.read())
	if l := got["outage-tcp-00"]; l.Severity != "2" || l.MsgID != "VolumeDegraded" || !strings.Contains(l.SD, `replicas="a,b"`) {
		t.Errorf("outage event logged as %+v", l)
	}
	t.Logf("rsyslog lines: %d; tcp %+v; udp %+v", len(r.read()), tcpF.Stats(), udpF.Stats())
}
