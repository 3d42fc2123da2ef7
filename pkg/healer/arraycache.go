package healer

import (
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nvmirror/nvmirror/pkg/mdraid"
)

// arrayCache keeps each md array's last sysfs reading between cycles, so
// that a cycle reads /proc/mdstat and the arrays that changed instead of
// every attribute of every array (about twenty files per array).
//
// An array is read again when:
//   - md signalled a change of one of its watched attributes (array_state,
//     degraded, sync_action, sync_completed, a member's state): the healer
//     passes what its md watcher reported;
//   - its /proc/mdstat entry differs from the one seen when it was read
//     (state, members and their flags, [n/m] [UU_], the sync line with its
//     progress and speed, the size): so a running resync is read every
//     cycle, and a change whose notification was missed still shows;
//   - the healer acted on its volume (it wrote sync_speed_max, or ran
//     mdadm), since not every attribute it writes is signalled;
//   - ArrayReread passed since the last full reading: the backstop for a
//     change neither signalled nor visible in /proc/mdstat (another
//     process writing sync_speed_max);
//   - md notifications are not watched, or the watch failed: then every
//     cycle reads everything, as without a cache.
type arrayCache struct {
	mu sync.Mutex
	// notified: md change notifications are being watched, so an array
	// not signalled and with the same /proc/mdstat entry is unchanged.
	notified bool
	dirty    map[string]bool
	all      bool

	// Only the cycle (which runs one at a time) touches these.
	entries  map[string]cachedArray
	lastFull time.Time
}

type cachedArray struct {
	mdstat string
	array  *mdraid.Array // nil: not found
}

// setNotified says whether md change notifications are watched now. Going
// from watched to not, or back, invalidates everything: a change may have
// gone unsignalled meanwhile.
func (c *arrayCache) setNotified(ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.notified != ok {
		c.all = true
	}
	c.notified = ok
}

// changed marks arrays md signalled (or the healer acted on) for a fresh
// reading at the next cycle.
func (c *arrayCache) changed(arrays ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dirty == nil {
		c.dirty = map[string]bool{}
	}
	for _, a := range arrays {
		if a == mdraid.MdstatChange {
			continue // every cycle compares each array's /proc/mdstat entry anyway
		}
		c.dirty[a] = true
	}
}

// cycleView is what one cycle may reuse.
type cycleView struct {
	c      *arrayCache
	use    bool
	dirty  map[string]bool
	mdstat map[string]string
}

// begin takes the marks for this cycle (marks made from now on are for the
// next one) and decides whether anything may be reused.
// mdstat is each running array's mdstatKey.
func (c *arrayCache) begin(mdstat map[string]string, now time.Time, reread time.Duration) cycleView {
	c.mu.Lock()
	dirty, all, notified := c.dirty, c.all, c.notified
	c.dirty, c.all = nil, false
	c.mu.Unlock()
	v := cycleView{c: c, dirty: dirty, mdstat: mdstat}
	if c.entries == nil {
		c.entries = map[string]cachedArray{}
	}
	for name := range c.entries {
		if _, ok := v.mdstat[name]; !ok {
			delete(c.entries, name)
		}
	}
	full := !notified || all || reread <= 0 || now.Sub(c.lastFull) >= reread
	if full {
		clear(c.entries)
		c.lastFull = now
	}
	v.use = !full
	return v
}

// get returns the cached reading of an array, if it may be reused.
func (v cycleView) get(name string) (*mdraid.Array, bool) {
	if !v.use || v.dirty[name] {
		return nil, false
	}
	e, ok := v.c.entries[name]
	if !ok || e.mdstat != v.mdstat[name] {
		return nil, false
	}
	return e.array, true
}

func (v cycleView) put(name string, a *mdraid.Array) {
	v.c.entries[name] = cachedArray{mdstat: v.mdstat[name], array: a}
}

// mdstatKey is an array's /proc/mdstat entry as far as the healer cares:
// everything but the bitmap line (whose page counts move with every write).
func mdstatKey(a mdraid.MdstatArray) string {
	var b strings.Builder
	b.Grow(64 + 16*len(a.Members))
	b.WriteString(a.State)
	if a.ReadOnly {
		b.WriteString(" ro")
	}
	if a.AutoReadOnly {
		b.WriteString(" auto-ro")
	}
	b.WriteByte(' ')
	b.WriteString(a.Level)
	for _, m := range a.Members {
		b.WriteByte(' ')
		b.WriteString(m.Device)
		b.WriteByte('[')
		b.WriteString(strconv.Itoa(m.Descriptor))
		b.WriteByte(']')
		for _, f := range []struct {
			on bool
			c  byte
		}{{m.WriteMostly, 'W'}, {m.Faulty, 'F'}, {m.Spare, 'S'}, {m.Replacement, 'R'}, {m.Journal, 'J'}} {
			if f.on {
				b.WriteByte(f.c)
			}
		}
	}
	b.WriteString(" blocks=")
	b.WriteString(strconv.FormatUint(a.Blocks, 10))
	b.WriteString(" super=")
	b.WriteString(a.Super)
	b.WriteString(" [")
	b.WriteString(strconv.Itoa(a.RaidDisks))
	b.WriteByte('/')
	b.WriteString(strconv.Itoa(a.ActiveDisks))
	b.WriteString("] [")
	b.WriteString(a.Status)
	b.WriteByte(']')
	if s := a.Sync; s != nil {
		b.WriteString(" sync=")
		b.WriteString(s.Action)
		b.WriteByte(' ')
		b.WriteString(strconv.FormatUint(s.Done, 10))
		b.WriteByte('/')
		b.WriteString(strconv.FormatUint(s.Total, 10))
		b.WriteString(" speed=")
		b.WriteString(strconv.FormatUint(s.SpeedKBps, 10))
		for _, f := range []struct {
			on bool
			s  string
		}{{s.Delayed, " delayed"}, {s.Pending, " pending"}, {s.Remote, " remote"}} {
			if f.on {
				b.WriteString(f.s)
			}
		}
	}
	return b.String()
}

// DefaultArrayReread is the node plugin's Observer.ArrayReread: every ten
// minutes each array is read in full whatever md signalled.
const DefaultArrayReread = 10 * time.Minute
