package events

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ExamplePEN is the private enterprise number RFC 5612 reserves for
// documentation and examples. nvmirror uses it in its SD-ID until a PEN of
// its own is registered; operators with their own PEN configure it.
const ExamplePEN = 32473

// Facilities by name (RFC 5424 table 1).
var facilities = map[string]int{
	"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
	"uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "security": 13, "console": 14, "clock": 15,
	"local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}

// DefaultFacility is local0: the facilities local0-7 are the ones left for
// site applications, so a site's rsyslog can route nvmirror's messages by
// facility without touching system ones.
const DefaultFacility = "local0"

// ParseFacility maps a facility name ("local0") or number ("16") to its code.
func ParseFacility(s string) (int, error) {
	if s == "" {
		s = DefaultFacility
	}
	if n, ok := facilities[strings.ToLower(s)]; ok {
		return n, nil
	}
	if n, err := strconv.Atoi(s); err == nil && n >= 0 && n <= 23 {
		return n, nil
	}
	return 0, fmt.Errorf("unknown syslog facility %q (kern..local7 or 0-23)", s)
}

// Formatter renders events as RFC 5424 messages:
//
//	<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [nvmirror@PEN volume="" replica="" node="" storageNode=""] MSG
//
// The four SD-PARAMs are always present (empty when not applicable) so a
// receiver can extract them with one fixed rule; audit records add method
// and outcome, multi-replica events a comma-separated replicas list.
type Formatter struct {
	Facility int
	Hostname string
	AppName  string
	ProcID   string
	// PEN is the private enterprise number in the SD-ID.
	PEN int
}

// NewFormatter returns a formatter with the given facility name and the
// defaults: this host's name, app "nvmirror", this process's pid, the
// example PEN when pen is 0.
func NewFormatter(facility string, pen int) (*Formatter, error) {
	fac, err := ParseFacility(facility)
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	if pen <= 0 {
		pen = ExamplePEN
	}
	return &Formatter{Facility: fac, Hostname: host, AppName: "nvmirror", ProcID: strconv.Itoa(os.Getpid()), PEN: pen}, nil
}

// SDID is the structured-data element id, "nvmirror@<PEN>".
func (f *Formatter) SDID() string { return "nvmirror@" + strconv.Itoa(f.PEN) }

// MaxMessageSize bounds a formatted message, and so a syslog datagram:
// 8 KiB is rsyslog's default maxMessageSize (a default receiver keeps the
// whole message) and far below a UDP datagram's 64 KiB. Events within
// Validate's limits fit it whole; Format cuts the MSG text of one whose
// escaped control characters would not, and the forwarder truncates
// anything longer found in its queue (counted, ForwarderStats.Truncated).
const MaxMessageSize = 8192

// maxListParam bounds the value of a list parameter (storageNode,
// replicas): MaxListLength names of MaxFieldLength bytes, comma-separated.
const maxListParam = MaxListLength*(MaxFieldLength+1) - 1

// Format renders e as one RFC 5424 message, without transport framing, of
// at most MaxMessageSize bytes. Control characters in every field are
// escaped (EscapeControl): header fields have them replaced by '_', SD
// parameters and MSG carry them as \xNN.
func (f *Formatter) Format(e Event) []byte {
	var b strings.Builder
	pri := f.Facility*8 + e.Type.Level().Severity()
	fmt.Fprintf(&b, "<%d>1 ", pri)
	if e.Time.IsZero() {
		b.WriteString("-")
	} else {
		// RFC 5424 allows at most 6 fractional digits.
		b.WriteString(e.Time.UTC().Format("2006-01-02T15:04:05.000000Z07:00"))
	}
	b.WriteByte(' ')
	b.WriteString(headerField(f.Hostname, 255))
	b.WriteByte(' ')
	b.WriteString(headerField(f.AppName, 48))
	b.WriteByte(' ')
	b.WriteString(headerField(f.ProcID, 128))
	b.WriteByte(' ')
	b.WriteString(headerField(string(e.Type), 32))
	b.WriteString(" [")
	b.WriteString(f.SDID())
	param(&b, "volume", e.Volume, MaxFieldLength)
	param(&b, "replica", e.Replica, MaxFieldLength)
	param(&b, "node", e.Node, MaxFieldLength)
	param(&b, "storageNode", e.StorageNode, maxListParam)
	if len(e.Replicas) > 0 {
		param(&b, "replicas", strings.Join(e.Replicas, ","), maxListParam)
	}
	if e.Type == Audit {
		param(&b, "method", e.Method, MaxFieldLength)
		param(&b, "outcome", e.Outcome, MaxFieldLength)
	}
	b.WriteString("] ")
	b.WriteString(Truncate(messageText(e), MaxMessageSize-b.Len()))
	return []byte(b.String())
}

func messageText(e Event) string {
	msg := e.Type.Title()
	if e.Type == Audit {
		msg += " " + e.Method
		if e.Outcome != "" {
			msg += " " + e.Outcome
		}
	}
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return EscapeControl(msg)
}

// headerField makes s a valid header field: printable US-ASCII without
// spaces, at most max octets, "-" (NILVALUE) when empty.
func headerField(s string, max int) string {
	if s == "" {
		return "-"
	}
	out := []byte(s)
	for i, c := range out {
		if c < 33 || c > 126 {
			out[i] = '_'
		}
	}
	if len(out) > max {
		out = out[:max]
	}
	return string(out)
}

// param writes ` name="value"` with the value's control characters escaped
// (EscapeControl; the escaped value cut to max bytes, which only a value
// full of them can exceed) and then '"', '\' and ']' preceded by a
// backslash, as RFC 5424 6.3.3 requires.
func param(b *strings.Builder, name, value string, max int) {
	b.WriteByte(' ')
	b.WriteString(name)
	b.WriteString(`="`)
	for _, r := range Truncate(EscapeControl(value), max) {
		if r == '"' || r == '\\' || r == ']' {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	b.WriteByte('"')
}

// OctetCounted frames msg for stream transports (TCP per RFC 6587 3.4.1,
// TLS per RFC 5425): "<length> <msg>". Unlike newline framing it survives
// messages that contain newlines.
func OctetCounted(msg []byte) []byte {
	out := make([]byte, 0, len(msg)+8)
	out = strconv.AppendInt(out, int64(len(msg)), 10)
	out = append(out, ' ')
	return append(out, msg...)
}
