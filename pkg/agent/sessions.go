package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
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
		// <id> for subsystem <S> for NQN <H>[ T10-PI is enabled][ with DH-HMAC-CHAP].
		// The host NQN is the host's to choose and may hold spaces (the
		// NQN grammar allows any UTF-8); the subsystem is one of ours,
		// without any, so the host is everything after " for NQN ".
		id, rest, ok := strings.Cut(rest, " for subsystem ")
		if !ok {
			return SessionEvent{}, false
		}
		sub, host, ok := strings.Cut(rest, " for NQN ")
		if !ok || sub == "" || strings.Contains(sub, " ") || !strings.HasSuffix(host, ".") {
			return SessionEvent{}, false
		}
		host = strings.TrimSuffix(host, ".")
		host = strings.TrimSuffix(host, " with DH-HMAC-CHAP")
		host = strings.TrimSuffix(host, " T10-PI is enabled")
		cntlid, err := strconv.Atoi(id)
		if err != nil || cntlid < 0 || host == "" {
			return SessionEvent{}, false
		}
		return SessionEvent{Kind: SessionEstablished, SubsysNQN: sub, HostNQN: host, ControllerID: cntlid}, true
	}
	if rest, ok := strings.CutPrefix(msg, "connect by host "); ok {
		// <H> for subsystem <S> not allowed. The host NQN may hold spaces,
		// " for subsystem " included: the subsystem, one of ours, follows
		// the last " for subsystem ".
		rest, ok := strings.CutSuffix(rest, " not allowed")
		i := strings.LastIndex(rest, " for subsystem ")
		if !ok || i <= 0 {
			return SessionEvent{}, false
		}
		host, sub := rest[:i], rest[i+len(" for subsystem "):]
		if sub == "" || strings.Contains(sub, " ") {
			return SessionEvent{}, false
		}
		return SessionEvent{Kind: SessionRefused, HostNQN: host, SubsysNQN: sub}, true
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
