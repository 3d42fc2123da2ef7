package healer

import (
	"context"
	"slices"
	"sync"
	"time"

	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
)

// KernelLog tells which NVMe controllers the kernel logged about
// (*host.ControllerLog on /dev/kmsg). The kernel changes a controller's
// state with no notification, but logs every step (error recovery,
// reconnecting, removal) under the controller's name.
type KernelLog interface {
	// Wait blocks until records naming controllers were logged and
	// returns their names, or lost when records were overwritten unread.
	Wait(ctx context.Context) (controllers []string, lost bool, err error)
}

// kernelLogRecheck is when the controllers a kernel log record named are
// read a second time: the kernel logs some steps just before it changes
// the state ("Removing controller..." before the controller is deleting).
const kernelLogRecheck = 500 * time.Millisecond

// nvmePoller is an NVMeReader that can tell by itself whether anything
// changed since it was last asked or read (CachedNVMe).
type nvmePoller interface {
	// Poll looks at every controller.
	Poll() (changed bool, err error)
	// PollControllers looks at the named ones only.
	PollControllers(names []string) (changed bool, err error)
}

// statesTruster is an NVMeReader whose Controllers can answer from the
// states the poll read (CachedNVMe.TrustPolledStates).
type statesTruster interface {
	TrustPolledStates(maxAge time.Duration)
}

// pollNVMe re-reads the controllers and triggers a cycle when their set or
// states changed: md does not notice a lost leg of an idle array, and sysfs
// gives no notification for controller states. With a kernel log the named
// controllers are read as soon as the kernel logs about them (and once
// more kernelLogRecheck later), and every controller only every
// NVMeBackstopInterval, for a change the log did not name; without one (or
// once it fails) every controller every NVMePollInterval. With CachedNVMe
// a poll is one listing and one read per controller.
func (h *Healer) pollNVMe(ctx context.Context, wg *sync.WaitGroup) {
	p := nvmePoll{h: h, first: true}
	interval := h.cfg.NVMePollInterval
	var logged chan []string
	logFailed := make(chan struct{})
	trust, _ := h.deps.Observer.NVMe.(statesTruster)
	if h.deps.KernelLog != nil && h.cfg.NVMeBackstopInterval > 0 {
		interval = h.cfg.NVMeBackstopInterval
		logged = make(chan []string)
		wg.Add(1)
		go func() { defer wg.Done(); h.followKernelLog(ctx, logged, logFailed) }()
		if trust != nil {
			// Twice the backstop: a late backstop read makes the cycle
			// read afresh, not trust an older state.
			trust.TrustPolledStates(2 * h.cfg.NVMeBackstopInterval)
			defer trust.TrustPolledStates(0)
		}
	}
	p.all()
	t := h.deps.Clock.NewTicker(interval)
	defer func() { t.Stop() }()
	var recheck clock.Timer
	var recheckC <-chan time.Time
	var pending []string
	for {
		select {
		case <-ctx.Done():
			if recheck != nil {
				recheck.Stop()
			}
			return
		case <-t.C():
			p.all()
		case names := <-logged:
			if names == nil {
				p.all() // records were lost: any controller may have changed
				continue
			}
			p.named(names)
			for _, n := range names {
				if !slices.Contains(pending, n) {
					pending = append(pending, n)
				}
			}
			if recheck == nil {
				recheck = h.deps.Clock.NewTimer(kernelLogRecheck)
				recheckC = recheck.C()
			}
		case <-recheckC:
			p.named(pending)
			pending, recheck, recheckC = nil, nil, nil
		case <-logFailed:
			logFailed = nil
			if trust != nil {
				trust.TrustPolledStates(0)
			}
			t.Stop()
			t = h.deps.Clock.NewTicker(h.cfg.NVMePollInterval)
			p.all()
		}
	}
}

// followKernelLog hands the controllers the kernel logs about to the poll;
// nil stands for "records were lost". When the log cannot be read any more
// it closes failed: the poll goes back to its short interval.
func (h *Healer) followKernelLog(ctx context.Context, logged chan<- []string, failed chan<- struct{}) {
	for {
		names, lost, err := h.deps.KernelLog.Wait(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			klog.ErrorS(err, "Kernel log unreadable; reading every NVMe controller's state every --nvme-poll-interval", "interval", h.cfg.NVMePollInterval)
			close(failed)
			return
		}
		if lost {
			klog.V(2).InfoS("Kernel log records lost; reading every NVMe controller's state")
			names = nil
		}
		klog.V(4).InfoS("Kernel logged about NVMe controllers", "controllers", names)
		select {
		case logged <- names:
		case <-ctx.Done():
			return
		}
	}
}

// nvmePoll is one NVMe poll loop's state: the fingerprint of the last
// listing (for a reader that is not an nvmePoller) and whether a first
// look was taken (the first cycle reads everything anyway).
type nvmePoll struct {
	h     *Healer
	last  uint64
	first bool
}

// all looks at every controller.
func (p *nvmePoll) all() {
	if np, ok := p.h.deps.Observer.NVMe.(nvmePoller); ok {
		p.result(np.Poll())
		return
	}
	cs, err := p.h.deps.Observer.NVMe.Controllers()
	if err != nil {
		return
	}
	fp := fingerprint(cs)
	changed := fp != p.last
	p.last = fp
	p.result(changed, nil)
}

// named looks at the named controllers (all of them for a reader that
// cannot read only some).
func (p *nvmePoll) named(names []string) {
	np, ok := p.h.deps.Observer.NVMe.(nvmePoller)
	if !ok {
		p.all()
		return
	}
	p.result(np.PollControllers(names))
}

func (p *nvmePoll) result(changed bool, err error) {
	if err == nil && changed && !p.first {
		p.h.Trigger()
	}
	p.first = p.first && err != nil
}

// fingerprint sums a 64-bit hash of each controller's name, NQN and state:
// independent of the listing's order without sorting thousands of strings
// every second, and a collision of two different sets is a 2^-64 chance
// (the periodic cycle runs anyway).
func fingerprint(cs []NVMeController) uint64 {
	var sum uint64
	for _, c := range cs {
		h := uint64(fnvOffset)
		for _, s := range [...]string{c.Name, c.SubsysNQN, string(c.State)} {
			for i := 0; i < len(s); i++ {
				h = (h ^ uint64(s[i])) * fnvPrime
			}
			h *= fnvPrime // a separator: ("a","bc") differs from ("ab","c")
		}
		sum += h
	}
	return sum
}

// FNV-1a, 64 bits.
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)
