package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"time"

	"k8s.io/klog/v2"
)

// SessionEventKind is what happened to a host's NVMe-oF session.
type SessionEventKind string

const (
	// SessionEstablished: the kernel created a controller for a host.
	SessionEstablished SessionEventKind = "established"
	// SessionRefused: a host tried to connect and is not allowed.
	SessionRefused SessionEventKind = "refused"
)

// SessionEvent is one host session event read from the kernel log. There
// is no "closed" kind: Linux 6.1's nvmet logs nothing when a session ends
// (see the package documentation).
type SessionEvent struct {
	Kind         SessionEventKind
	SubsysNQN    string
	HostNQN      string
	ControllerID int // SessionEstablished only
}

// ParseKmsgRecord recognizes nvmet's session messages in one /dev/kmsg
// record ("prio,seq,usec,flags;message\n continuation lines"):
//
//	nvmet: creating nvm controller 1 for subsystem S for NQN H.
//	nvmet: creating nvm controller 1 for subsystem S for NQN H with DH-HMAC-CHAP.
//	nvmet: connect by host H for subsystem S not allowed
//
// (drivers/nvme/target/core.c and fabrics-cmd.c in Linux 6.1). Discovery
// controllers are ignored.
func ParseKmsgRecord(rec string) (SessionEvent, bool) {
	if i := strings.IndexByte(rec, ';'); i >= 0 && !strings.Contains(rec[:i], " ") {
		rec = rec[i+1:]
	}
	rec, _, _ = strings.Cut(rec, "\n")
	msg, ok := strings.CutPrefix(strings.TrimSpace(rec), "nvmet: ")
	if !ok {
		return SessionEvent{}, false
	}
	if rest, ok := strings.CutPrefix(msg, "creating nvm controller "); ok {
		var ev SessionEvent
		f := strings.Fields(rest)
		// <id> for subsystem <S> for NQN <H>[.| T10-PI...| with ...]
		if len(f) < 7 || f[1] != "for" || f[2] != "subsystem" || f[4] != "for" || f[5] != "NQN" {
			return SessionEvent{}, false
		}
		if _, err := fmt.Sscanf(f[0], "%d", &ev.ControllerID); err != nil {
			return SessionEvent{}, false
		}
		ev.Kind, ev.SubsysNQN, ev.HostNQN = SessionEstablished, f[3], strings.TrimSuffix(f[6], ".")
		return ev, true
	}
	if rest, ok := strings.CutPrefix(msg, "connect by host "); ok {
		f := strings.Fields(rest)
		// <H> for subsystem <S> not allowed
		if len(f) != 6 || f[1] != "for" || f[2] != "subsystem" || f[4] != "not" || f[5] != "allowed" {
			return SessionEvent{}, false
		}
		return SessionEvent{Kind: SessionRefused, HostNQN: f[0], SubsysNQN: f[3]}, true
	}
	return SessionEvent{}, false
}

// SessionWatcher follows the kernel log and reports the session events of
// subsystems under Prefix to Sink. It starts at the end of the log (events
// from before the agent started are not replayed).
type SessionWatcher struct {
	// Path is the kernel log device, normally /dev/kmsg.
	Path   string
	Prefix string
	Sink   func(SessionEvent)

	f *os.File
}

// LogSessionEvent is the default sink: a structured audit log line. The
// provisioner's event intake does not exist yet; when it does, a sink that
// forwards there replaces (or complements) this one.
func LogSessionEvent(ev SessionEvent) {
	switch ev.Kind {
	case SessionEstablished:
		klog.InfoS("Audit: NVMe-oF session established", "nqn", ev.SubsysNQN, "host", ev.HostNQN, "controller", ev.ControllerID)
	case SessionRefused:
		klog.InfoS("Audit: NVMe-oF connection refused (host not allowed)", "nqn", ev.SubsysNQN, "host", ev.HostNQN)
	}
}

// Run is Open followed by Follow.
func (w *SessionWatcher) Run(ctx context.Context) error {
	if err := w.Open(); err != nil {
		return err
	}
	w.Follow(ctx)
	return nil
}

// Open opens the kernel log at its end. Events after Open returns are
// reported by Follow. An error means session events are unavailable (e.g.
// no access to /dev/kmsg); for the agent that is not fatal.
func (w *SessionWatcher) Open() error {
	// O_NONBLOCK registers the device with Go's poller, so Close (in
	// Follow) interrupts a pending Read.
	f, err := os.OpenFile(w.Path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("open kernel log %s: %w", w.Path, err)
	}
	if _, err := f.Seek(0, io.SeekEnd); err != nil {
		f.Close()
		return fmt.Errorf("seek to the end of %s: %w", w.Path, err)
	}
	w.f = f
	return nil
}

// Follow reports events until ctx ends, then closes the log.
func (w *SessionWatcher) Follow(ctx context.Context) {
	f := w.f
	stop := context.AfterFunc(ctx, func() { f.Close() })
	defer stop()
	buf := make([]byte, 8192) // a kmsg record is at most 1 KiB of text plus dictionary
	for {
		n, err := f.Read(buf)
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, syscall.EPIPE):
			continue // records were overwritten before we read them
		case errors.Is(err, io.EOF) || (err == nil && n == 0):
			// Only a regular file (tests) ends; /dev/kmsg blocks instead.
			select {
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
			continue
		case err != nil:
			klog.ErrorS(err, "Kernel log read failed; session events paused", "path", w.Path)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		// /dev/kmsg returns one record per read; a file may return several.
		// Continuation lines (dictionary) start with a space.
		for _, line := range strings.Split(string(buf[:n]), "\n") {
			if line == "" || line[0] == ' ' {
				continue
			}
			ev, ok := ParseKmsgRecord(line)
			if ok && strings.HasPrefix(ev.SubsysNQN, w.Prefix) {
				w.Sink(ev)
			}
		}
	}
}
