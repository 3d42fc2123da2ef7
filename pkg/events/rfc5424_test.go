package events

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// header matches an RFC 5424 header and captures PRI, timestamp, host, app,
// procid, msgid and the rest (SD and MSG).
var header = regexp.MustCompile(`^<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) (.*)$`)

// parseSD parses one SD-ELEMENT at the start of s (RFC 5424 6.3), undoing
// the escaping, and returns its id, params in order and the rest.
func parseSD(t *testing.T, s string) (id string, params [][2]string, rest string) {
	t.Helper()
	if !strings.HasPrefix(s, "[") {
		t.Fatalf("no SD element in %q", s)
	}
	i := 1
	for i < len(s) && s[i] != ' ' && s[i] != ']' {
		i++
	}
	id = s[1:i]
	for i < len(s) && s[i] == ' ' {
		i++
		j := strings.IndexByte(s[i:], '=')
		name := s[i : i+j]
		i += j + 1
		if s[i] != '"' {
			t.Fatalf("param %s: value not quoted in %q", name, s)
		}
		i++
		var v strings.Builder
		for ; s[i] != '"'; i++ {
			if s[i] == '\\' && (s[i+1] == '"' || s[i+1] == '\\' || s[i+1] == ']') {
				i++
			} else if s[i] == ']' {
				t.Fatalf("unescaped ] in value of %s: %q", name, s)
			}
			v.WriteByte(s[i])
		}
		i++
		params = append(params, [2]string{name, v.String()})
	}
	if s[i] != ']' {
		t.Fatalf("SD element not closed in %q", s)
	}
	return id, params, strings.TrimPrefix(s[i+1:], " ")
}

func TestFormat(t *testing.T) {
	f := &Formatter{Facility: 16, Hostname: "prov-0", AppName: "nvmirror", ProcID: "42", PEN: ExamplePEN}
	ts := time.Date(2026, 11, 21, 9, 30, 1, 123456789, time.FixedZone("x", 3600))
	tests := []struct {
		name       string
		e          Event
		pri        int
		msgid      string
		params     [][2]string
		msg        string
		wantInText string
	}{
		{
			name: "fatal → crit, all four params present",
			e:    Event{Time: ts, Type: HostDisconnected, Node: "node-a", StorageNode: "sn-1", Message: "keep-alive timeout"},
			pri:  16*8 + 2, msgid: "HostDisconnected",
			params: [][2]string{{"volume", ""}, {"replica", ""}, {"node", "node-a"}, {"storageNode", "sn-1"}},
			msg:    "Host Disconnected: keep-alive timeout",
		},
		{
			name: "warning → warning",
			e:    Event{Time: ts, Type: SynchStarted, Volume: "v1", Replica: "v1-r2", Node: "node-a", StorageNode: "sn-2"},
			pri:  16*8 + 4, msgid: "SynchStarted",
			params: [][2]string{{"volume", "v1"}, {"replica", "v1-r2"}, {"node", "node-a"}, {"storageNode", "sn-2"}},
			msg:    "Replicated Volume Synch Started",
		},
		{
			name: "degraded names every missing replica",
			e:    Event{Time: ts, Type: VolumeDegraded, Volume: "v1", Node: "node-a", Replicas: []string{"v1-r0", "v1-r2"}},
			pri:  16*8 + 2, msgid: "VolumeDegraded",
			params: [][2]string{{"volume", "v1"}, {"replica", ""}, {"node", "node-a"}, {"storageNode", ""}, {"replicas", "v1-r0,v1-r2"}},
			msg:    "Replicated Volume Degraded",
		},
		{
			name: "audit → info with method and outcome",
			e:    Event{Time: ts, Type: Audit, Volume: "v9", Node: "ctrl", Method: "ControllerPublishVolume", Outcome: "FailedPrecondition", Message: "published to another host"},
			pri:  16*8 + 6, msgid: "Audit",
			params: [][2]string{{"volume", "v9"}, {"replica", ""}, {"node", "ctrl"}, {"storageNode", ""}, {"method", "ControllerPublishVolume"}, {"outcome", "FailedPrecondition"}},
			msg:    "CSI Command ControllerPublishVolume FailedPrecondition: published to another host",
		},
		{
			name: "escaping of quote, backslash and bracket",
			e:    Event{Time: ts, Type: VolumeHealed, Volume: `we"ird\vol]x`, Node: `]]`},
			pri:  16*8 + 6, msgid: "VolumeHealed",
			params:     [][2]string{{"volume", `we"ird\vol]x`}, {"replica", ""}, {"node", "]]"}, {"storageNode", ""}},
			msg:        "Replicated Volume Healed",
			wantInText: `volume="we\"ird\\vol\]x" replica="" node="\]\]"`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := string(f.Format(tc.e))
			if tc.wantInText != "" && !strings.Contains(out, tc.wantInText) {
				t.Errorf("%q does not contain %q", out, tc.wantInText)
			}
			m := header.FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("not RFC 5424: %q", out)
			}
			if pri, _ := strconv.Atoi(m[1]); pri != tc.pri {
				t.Errorf("PRI = %d, want %d", pri, tc.pri)
			}
			if m[2] != "2026-11-21T08:30:01.123456Z" {
				t.Errorf("timestamp = %s, want UTC with 6 fractional digits", m[2])
			}
			if m[3] != "prov-0" || m[4] != "nvmirror" || m[5] != "42" {
				t.Errorf("host/app/procid = %s %s %s", m[3], m[4], m[5])
			}
			if m[6] != tc.msgid {
				t.Errorf("MSGID = %s, want %s", m[6], tc.msgid)
			}
			id, params, msg := parseSD(t, m[7])
			if id != "nvmirror@32473" {
				t.Errorf("SD-ID = %s", id)
			}
			if fmt.Sprint(params) != fmt.Sprint(tc.params) {
				t.Errorf("params = %v, want %v", params, tc.params)
			}
			if msg != tc.msg {
				t.Errorf("MSG = %q, want %q", msg, tc.msg)
			}
		})
	}
}

func TestHeaderFieldsSanitised(t *testing.T) {
	f := &Formatter{Facility: 23, Hostname: "", AppName: "my app", ProcID: strings.Repeat("p", 200), PEN: 1}
	out := string(f.Format(Event{Type: VolumeHealed}))
	m := header.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("not RFC 5424: %q", out)
	}
	if m[1] != strconv.Itoa(23*8+6) || m[2] != "-" || m[3] != "-" || m[4] != "my_app" || len(m[5]) != 128 {
		t.Errorf("header fields: %q", m[1:6])
	}
	if !strings.Contains(out, "[nvmirror@1 ") {
		t.Errorf("PEN not used: %q", out)
	}
}

func TestParseFacility(t *testing.T) {
	for in, want := range map[string]int{"": 16, "local0": 16, "LOCAL7": 23, "daemon": 3, "kern": 0, "19": 19} {
		got, err := ParseFacility(in)
		if err != nil || got != want {
			t.Errorf("ParseFacility(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"local8", "24", "-1", "nope"} {
		if _, err := ParseFacility(in); err == nil {
			t.Errorf("ParseFacility(%q) accepted", in)
		}
	}
}

// readOctetCounted reads RFC 6587 octet-counted frames.
func readOctetCounted(r *bufio.Reader) ([]byte, error) {
	lenStr, err := r.ReadString(' ')
	if err != nil {
		return nil, err
	}
	n, err := strconv.Atoi(strings.TrimSuffix(lenStr, " "))
	if err != nil {
		return nil, fmt.Errorf("bad frame length %q", lenStr)
	}
	buf := make([]byte, n)
	_, err = io.ReadFull(r, buf)
	return buf, err
}

func TestOctetCounted(t *testing.T) {
	msgs := [][]byte{[]byte("<134>1 - - - - - - hello"), []byte("multi\nline ü"), {}}
	var stream bytes.Buffer
	for _, m := range msgs {
		stream.Write(OctetCounted(m))
	}
	if !strings.HasPrefix(stream.String(), "24 <134>1") {
		t.Errorf("frame = %q", stream.String())
	}
	r := bufio.NewReader(&stream)
	for _, want := range msgs {
		got, err := readOctetCounted(r)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("frame = %q, %v; want %q", got, err, want)
		}
	}
}

// Control characters in any field must not reach the receiver raw: a
// newline splits a line-based log, an escape sequence drives the terminal
// of whoever reads it. They are escaped as \xNN (\u00NN for C1).
func TestFormatEscapesControlCharacters(t *testing.T) {
	f := &Formatter{Facility: 16, Hostname: "h\nost", AppName: "nvmirror", ProcID: "1", PEN: ExamplePEN}
	e := Event{Time: time.Now(), Type: Audit, Volume: "vol\n-1", Replica: "r\x1b[31m", Node: "node\r", StorageNode: "sn\t1",
		Replicas: []string{"a\x00", "b\u0085"}, Method: "Create\x7fVolume", Outcome: "OK\n", Message: "line one\nline two\x1b]0;owned\x07"}
	out := f.Format(e)
	for i, c := range string(out) {
		if c < 0x20 || c == 0x7f || (c >= 0x80 && c <= 0x9f) {
			t.Fatalf("control character %U at %d in %q", c, i, out)
		}
	}
	// In SD parameters the escape's backslash is itself escaped (RFC 5424
	// 6.3.3), so a parser of the SD reads \x0a; MSG has no such escaping.
	for _, want := range []string{`volume="vol\\x0a-1"`, `replica="r\\x1b[31m"`, `node="node\\x0d"`, `storageNode="sn\\x091"`,
		`replicas="a\\x00,b\\u0085"`, `method="Create\\x7fVolume"`, `outcome="OK\\x0a"`, `line one\x0aline two\x1b]0;owned\x07`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("%q does not contain %q", out, want)
		}
	}
}

// FuzzFormat: whatever an event that passes Validate holds, its message is
// one RFC 5424 line without control characters and within MaxMessageSize.
func FuzzFormat(f *testing.F) {
	f.Add("vol-1", "rep-1", "node-a", "sn-1,sn-2", "r1,r2", "CreateVolume", "OK", "healed\n\x1b[2J")
	f.Add(strings.Repeat("\x01", MaxFieldLength), "", "", "", "", "", "", strings.Repeat("\n", MaxMessageLength))
	f.Fuzz(func(t *testing.T, vol, rep, node, sn, reps, method, outcome, msg string) {
		e := Event{Time: time.Unix(1, 0), Type: Audit, Volume: vol, Replica: rep, Node: node, StorageNode: sn, Method: method, Outcome: outcome, Message: msg}
		if reps != "" {
			e.Replicas = strings.Split(reps, ",")
		}
		if e.Validate() != nil {
			return
		}
		fm := &Formatter{Facility: 16, Hostname: "h", AppName: "nvmirror", ProcID: "1", PEN: ExamplePEN}
		out := fm.Format(e)
		if len(out) > MaxMessageSize {
			t.Fatalf("message of %d bytes", len(out))
		}
		for _, c := range string(out) {
			if c < 0x20 || c == 0x7f || (c >= 0x80 && c <= 0x9f) {
				t.Fatalf("control character %U in %q", c, out)
			}
		}
		if header.FindSubmatch(out) == nil {
			t.Fatalf("not RFC 5424: %q", out)
		}
	})
}
