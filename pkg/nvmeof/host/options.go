package host

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/nvmirror/nvmirror/pkg/nvmeof"
)

// ConnectOptions are the options of one NVMe-oF connection.
type ConnectOptions struct {
	Transport string // "tcp" (default when empty); only tcp is accepted for now
	TrAddr    string // target IP address
	TrSvcID   string // target TCP port
	SubsysNQN string
	// HostNQN and HostID are both required: the kernel refuses a host ID
	// already used with another host NQN (and vice versa), and relying on
	// the kernel's random default host would make our identity unstable.
	HostNQN string
	HostID  string
	// Timeouts in seconds; nil leaves the kernel default (reconnect_delay
	// 10, ctrl_loss_tmo 600, fast_io_fail_tmo off, keep_alive_tmo 5).
	// CtrlLossTmo -1 reconnects forever: combine it with a small
	// FastIOFailTmo, or a lost replica freezes the whole md array.
	CtrlLossTmo    *int
	ReconnectDelay *int
	FastIOFailTmo  *int
	KeepAliveTmo   *int
	NrIOQueues     int // 0 = kernel default (one per CPU)
	// DHCHAPSecret is the host's DH-HMAC-CHAP secret in the DHHC-1
	// representation (see pkg/dhchap): the host proves it holds it when the
	// target asks. "" connects without a secret. A secret on a kernel that
	// cannot authenticate is nvmeof.ErrAuthUnsupported, never a connection
	// without authentication.
	DHCHAPSecret string
	// DHCHAPCtrlSecret makes authentication bidirectional: the host also
	// makes the controller prove it holds this secret, and refuses the
	// connection otherwise. Needs DHCHAPSecret, and must differ from it.
	DHCHAPCtrlSecret string
}

// String renders o as FabricsString does but with the secrets redacted, so
// that printing or logging options never shows a key.
func (o ConnectOptions) String() string { return redactOptions(o.FabricsString()) }

// GoString keeps %#v redacted.
func (o ConnectOptions) GoString() string { return "host.ConnectOptions{" + o.String() + "}" }

// MarshalLog is what structured loggers (logr, klog) print for o.
func (o ConnectOptions) MarshalLog() any { return o.String() }

// wantsAuth reports whether o asks for DH-HMAC-CHAP.
func (o ConnectOptions) wantsAuth() bool { return o.DHCHAPSecret != "" || o.DHCHAPCtrlSecret != "" }

func (o ConnectOptions) transport() string {
	if o.Transport == "" {
		return "tcp"
	}
	return o.Transport
}

// canonicalAddr returns TrAddr in the canonical text form. The kernel
// compares traddr strings verbatim, so writing one canonical form keeps our
// duplicate detection consistent with the kernel's.
func (o ConnectOptions) canonicalAddr() string {
	if a, err := nvmeof.ParseIP("traddr", o.TrAddr); err == nil {
		return a.String()
	}
	return o.TrAddr
}

// Validate checks every option; each value must be safe to embed in the
// comma-separated option string.
func (o ConnectOptions) Validate() error {
	if t := o.transport(); t != "tcp" {
		return fmt.Errorf("%w: transport %q is not supported (only tcp)", nvmeof.ErrInvalidArgument, t)
	}
	if _, err := nvmeof.ParseIP("traddr", o.TrAddr); err != nil {
		return err
	}
	if _, err := nvmeof.ParsePort("trsvcid", o.TrSvcID); err != nil {
		return err
	}
	if err := nvmeof.ValidateNQN(o.SubsysNQN); err != nil {
		return fmt.Errorf("subsystem NQN: %w", err)
	}
	if o.SubsysNQN == nvmeof.DiscoveryNQN {
		return fmt.Errorf("%w: %s is the discovery NQN, not a storage subsystem", nvmeof.ErrInvalidArgument, o.SubsysNQN)
	}
	if o.HostNQN == "" || o.HostID == "" {
		return fmt.Errorf("%w: host NQN and host ID must both be set (host NQN %q, host ID %q)",
			nvmeof.ErrInvalidArgument, o.HostNQN, o.HostID)
	}
	if err := nvmeof.ValidateNQN(o.HostNQN); err != nil {
		return fmt.Errorf("host NQN: %w", err)
	}
	if !nvmeof.IsUUID(o.HostID) {
		return fmt.Errorf("%w: host ID %q is not a UUID", nvmeof.ErrInvalidArgument, o.HostID)
	}
	for _, t := range []struct {
		name string
		v    *int
		min  int
	}{
		{"ctrl_loss_tmo", o.CtrlLossTmo, -1},
		{"reconnect_delay", o.ReconnectDelay, 1},
		{"fast_io_fail_tmo", o.FastIOFailTmo, -1},
		// 0 would disable keep-alive (the kernel allows it "for debug"):
		// a dead target would then go unnoticed.
		{"keep_alive_tmo", o.KeepAliveTmo, 1},
	} {
		if t.v != nil && *t.v < t.min {
			return fmt.Errorf("%w: %s %d is below %d", nvmeof.ErrInvalidArgument, t.name, *t.v, t.min)
		}
	}
	if o.NrIOQueues < 0 {
		return fmt.Errorf("%w: nr_io_queues %d is negative", nvmeof.ErrInvalidArgument, o.NrIOQueues)
	}
	if o.DHCHAPCtrlSecret != "" && o.DHCHAPSecret == "" {
		return fmt.Errorf("%w: DHCHAPCtrlSecret without DHCHAPSecret: bidirectional authentication needs the host secret too", nvmeof.ErrInvalidArgument)
	}
	var secret, ctrlSecret string
	if o.DHCHAPSecret != "" {
		var err error
		if secret, err = nvmeof.CanonicalSecret("DHCHAPSecret", o.DHCHAPSecret); err != nil {
			return err
		}
	}
	if o.DHCHAPCtrlSecret != "" {
		var err error
		if ctrlSecret, err = nvmeof.CanonicalSecret("DHCHAPCtrlSecret", o.DHCHAPCtrlSecret); err != nil {
			return err
		}
		if ctrlSecret == secret {
			return fmt.Errorf("%w: DHCHAPCtrlSecret equals DHCHAPSecret; bidirectional authentication needs two different secrets", nvmeof.ErrInvalidArgument)
		}
	}
	// Defence in depth: the checks above already exclude separators, but
	// the option string must never depend on that reasoning alone.
	for _, kv := range o.pairs() {
		if secretOptions[kv[0]] {
			// Base64 padding makes '=' legal in a secret (the kernel's
			// parser takes everything after the first '='); the value is
			// never shown.
			if strings.ContainsAny(kv[1], ",\n\r\t \x00") {
				return fmt.Errorf("%w: option %s contains a separator", nvmeof.ErrInvalidArgument, kv[0])
			}
			continue
		}
		if err := checkOptionValue(kv[0], kv[1]); err != nil {
			return err
		}
	}
	return nil
}

// pairs returns the options in the stable order of FabricsString.
func (o ConnectOptions) pairs() [][2]string {
	p := [][2]string{
		{"transport", o.transport()},
		{"traddr", o.canonicalAddr()},
		{"trsvcid", o.TrSvcID},
		{"nqn", o.SubsysNQN},
		{"hostnqn", o.HostNQN},
		{"hostid", strings.ToLower(o.HostID)},
	}
	for _, t := range []struct {
		name string
		v    *int
	}{
		{"ctrl_loss_tmo", o.CtrlLossTmo},
		{"reconnect_delay", o.ReconnectDelay},
		{"fast_io_fail_tmo", o.FastIOFailTmo},
		{"keep_alive_tmo", o.KeepAliveTmo},
	} {
		if t.v != nil {
			p = append(p, [2]string{t.name, strconv.Itoa(*t.v)})
		}
	}
	if o.NrIOQueues > 0 {
		p = append(p, [2]string{"nr_io_queues", strconv.Itoa(o.NrIOQueues)})
	}
	// The kernel gets the canonical spelling, so that what sysfs shows
	// back compares equal to what another caller asks for.
	if o.DHCHAPSecret != "" {
		p = append(p, [2]string{"dhchap_secret", canonicalOrRaw(o.DHCHAPSecret)})
	}
	if o.DHCHAPCtrlSecret != "" {
		p = append(p, [2]string{"dhchap_ctrl_secret", canonicalOrRaw(o.DHCHAPCtrlSecret)})
	}
	return p
}

// FabricsString renders the options as written to /dev/nvme-fabrics, in a
// stable order: transport, traddr, trsvcid, nqn, hostnqn, hostid, then the
// timeouts that are set (ctrl_loss_tmo, reconnect_delay, fast_io_fail_tmo,
// keep_alive_tmo), nr_io_queues, dhchap_secret and dhchap_ctrl_secret.
// Call Validate first: this function does not check anything.
//
// The result contains the secrets: it is for the kernel only. Log String,
// which redacts them.
func (o ConnectOptions) FabricsString() string {
	var b strings.Builder
	for i, kv := range o.pairs() {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(kv[0])
		b.WriteByte('=')
		b.WriteString(kv[1])
	}
	return b.String()
}

// authMode describes o's authentication for logs.
func (o ConnectOptions) authMode() string {
	switch {
	case o.DHCHAPCtrlSecret != "":
		return "bidirectional"
	case o.DHCHAPSecret != "":
		return "host"
	}
	return "none"
}

// checkOptionValue refuses values that would change the meaning of the
// comma-separated fabrics option string (or of a sysfs/configfs write).
func checkOptionValue(name, v string) error {
	if v == "" {
		return fmt.Errorf("%w: option %s is empty", nvmeof.ErrInvalidArgument, name)
	}
	if i := strings.IndexAny(v, ",=\n\r\t \x00"); i >= 0 {
		return fmt.Errorf("%w: option %s value %q contains forbidden character %q (it would inject fabrics options)",
			nvmeof.ErrInvalidArgument, name, v, v[i])
	}
	return nil
}
