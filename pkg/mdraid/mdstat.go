package mdraid

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"strconv"
	"strings"
)

// Mdstat is /proc/mdstat.
type Mdstat struct {
	// Personalities are the md levels the kernel has loaded, e.g. "raid1".
	Personalities []string
	Arrays        []MdstatArray
	// UnusedDevices are devices the kernel holds for md but in no array.
	UnusedDevices []string
}

// MdstatArray is one array's entry in /proc/mdstat.
type MdstatArray struct {
	// Name is the kernel name, e.g. "md127".
	Name string
	// State is "active", "inactive", or "broken" (newer kernels, once the
	// array lost the members it cannot do without).
	State string
	// ReadOnly is "(read-only)"; AutoReadOnly is "(auto-read-only)", an
	// array that turns read-write on its first write.
	ReadOnly, AutoReadOnly bool
	// Level is the personality, e.g. "raid1"; empty for an inactive array.
	Level   string
	Members []MdstatMember
	// Blocks is the array size in KiB (for an inactive array, the sum of
	// its members').
	Blocks uint64
	// Super is the metadata version after "super", e.g. "1.2"; empty for
	// 0.90 metadata, which the kernel does not name.
	Super string
	// RaidDisks and ActiveDisks are "[RaidDisks/ActiveDisks]", and Status the
	// per-slot "[UU_]"; all zero for levels that print neither (raid0,
	// linear) and for inactive arrays.
	RaidDisks, ActiveDisks int
	Status                 string
	// Sync is the resync, recovery, check or reshape line, if any.
	Sync *MdstatSync
	// Bitmap is the write-intent bitmap line, if any.
	Bitmap *MdstatBitmap
	// Err is set (wrapping ErrMalformed, naming the line) when a line of
	// this array's entry could not be read; the other fields are then
	// partial. One such array does not fail the file: its readers report
	// and skip it, and go on with the others.
	Err error
}

// MdstatMember is one "name[N](flags)" of an array's line.
type MdstatMember struct {
	// Device is the kernel block device name, e.g. "nvme1n1".
	Device string
	// Descriptor is the N in name[N]: md's descriptor number, which is not
	// the mirror slot (read Member.Slot from sysfs for that).
	Descriptor int
	// Flags: (W) write-mostly, (F) faulty, (S) spare, (R) replacement,
	// (J) journal.
	WriteMostly, Faulty, Spare, Replacement, Journal bool
}

// MdstatSync is an array's sync line.
type MdstatSync struct {
	// Action is the word the kernel prints: "recovery", "resync", "check" or
	// "reshape" ("repair" shows as "resync"; read md/sync_action to tell).
	Action string
	// Percent, Done and Total (KiB) describe a running sync.
	Percent     float64
	Done, Total uint64
	// Delayed is "ACTION=DELAYED": waiting for another array that shares a
	// device. Pending is "ACTION=PENDING": an auto-read-only array that
	// will resync on its first write.
	Delayed, Pending bool
	// Remote is "ACTION=REMOTE": a clustered array another node syncs.
	Remote        bool
	FinishMinutes float64
	SpeedKBps     uint64
}

// MdstatBitmap is an array's "bitmap:" line.
type MdstatBitmap struct {
	PagesUsed, PagesTotal int
	// ChunkKB is the bitmap chunk, in KiB.
	ChunkKB uint64
	// File is the bitmap file of an external bitmap; empty for internal.
	File string
}

var (
	mdstatMemberPattern   = regexp.MustCompile(`^(.+)\[(-?[0-9]+)\]((?:\([WJFSR]\))*)$`)
	mdstatBlocksPattern   = regexp.MustCompile(`^([0-9]+) blocks\b(.*)$`)
	mdstatDisksPattern    = regexp.MustCompile(`\[([0-9]+)/([0-9]+)\] \[([U_]*)\]`)
	mdstatProgressPattern = regexp.MustCompile(`^(?:\[=*>\.*\] +)?([a-z]+) *= *([0-9]+\.[0-9])% \(([0-9]+)/([0-9]+)\)(?: finish=([0-9]+\.[0-9]+)min)?(?: speed=([0-9]+)K/sec)?$`)
	mdstatWaitingPattern  = regexp.MustCompile(`^([a-z]+)=(DELAYED|PENDING|REMOTE)$`)
	mdstatBitmapPattern   = regexp.MustCompile(`^bitmap: ([0-9]+)/([0-9]+) pages \[([0-9]+)KB\], ([0-9]+)(KB|B) chunk(?:, file: (.+))?$`)
)

// ParseMdstat parses /proc/mdstat as md.c's md_seq_show prints it. It never
// guesses: a line it recognises but cannot read is an error naming the
// line. When the line belongs to an array (its "NAME : ..." line or one of
// its indented lines), the error is that array's (MdstatArray.Err) and the
// rest of the file is still parsed, so one odd array never hides the
// others; an unknown line at the top level fails the file.
func ParseMdstat(b []byte) (Mdstat, error) {
	var st Mdstat
	var cur *MdstatArray
	for i, raw := range strings.Split(string(b), "\n") {
		lineNo := i + 1
		line := strings.TrimRight(raw, " \t\r")
		text := strings.TrimSpace(line)
		switch {
		case text == "":
			continue
		case strings.HasPrefix(line, "Personalities :"):
			cur = nil
			for _, f := range strings.Fields(strings.TrimPrefix(line, "Personalities :")) {
				if len(f) < 3 || f[0] != '[' || f[len(f)-1] != ']' {
					return Mdstat{}, mdstatError(lineNo, line, "personality %q is not [name]", f)
				}
				st.Personalities = append(st.Personalities, f[1:len(f)-1])
			}
		case strings.HasPrefix(line, "unused devices:"):
			cur = nil
			for _, f := range strings.Fields(strings.TrimPrefix(line, "unused devices:")) {
				if f != "<none>" {
					st.UnusedDevices = append(st.UnusedDevices, f)
				}
			}
		case line[0] != ' ' && line[0] != '\t':
			name, rest, ok := strings.Cut(line, " : ")
			if !ok || name == "" || strings.ContainsAny(name, " \t") {
				return Mdstat{}, mdstatError(lineNo, line, "not an array line (NAME : STATE ...)")
			}
			a, err := parseMdstatHeader(name, rest)
			if err != nil {
				a = MdstatArray{Name: name, Err: mdstatError(lineNo, line, "%v", err)}
			}
			st.Arrays = append(st.Arrays, a)
			cur = &st.Arrays[len(st.Arrays)-1]
		case cur == nil:
			return Mdstat{}, mdstatError(lineNo, line, "indented line outside an array")
		case cur.Err != nil:
			// The rest of an array already unreadable.
		default:
			if err := parseMdstatDetail(cur, text); err != nil {
				cur.Err = mdstatError(lineNo, line, "%s: %v", cur.Name, err)
			}
		}
	}
	return st, nil
}

func mdstatError(lineNo int, line, format string, args ...any) error {
	return fmt.Errorf("%w: /proc/mdstat line %d %q: %s", ErrMalformed, lineNo, line, fmt.Sprintf(format, args...))
}

// parseMdstatHeader reads the part after "NAME : " of an array's line:
// "active (auto-read-only) raid1 a[0] b[1](F)". An array without members
// has no blocks line, so the kernel prints its metadata version on this
// line instead: "inactive super 1.2" (the real kernel's line after a failed
// assemble), "super external:imsm", "super non-persistent".
func parseMdstatHeader(name, rest string) (MdstatArray, error) {
	fields := strings.Fields(rest)
	if len(fields) == 0 {
		return MdstatArray{}, fmt.Errorf("no array state")
	}
	a := MdstatArray{Name: name, State: fields[0]}
	fields = fields[1:]
	switch a.State {
	case "inactive":
	case "active", "broken":
		for len(fields) > 0 && strings.HasPrefix(fields[0], "(") {
			switch fields[0] {
			case "(read-only)":
				a.ReadOnly = true
			case "(auto-read-only)":
				a.AutoReadOnly = true
			default:
				return MdstatArray{}, fmt.Errorf("unknown array mode %q", fields[0])
			}
			fields = fields[1:]
		}
		if len(fields) == 0 {
			return MdstatArray{}, fmt.Errorf("no personality after %q", a.State)
		}
		a.Level = fields[0]
		fields = fields[1:]
	default:
		return MdstatArray{}, fmt.Errorf("unknown array state %q", a.State)
	}
	for i, f := range fields {
		if f == "super" {
			// Only after the members, and only when there are none.
			if len(a.Members) > 0 || i != len(fields)-2 {
				return MdstatArray{}, fmt.Errorf("\"super\" is not followed by exactly one metadata version, or the array has members")
			}
			a.Super = fields[i+1]
			break
		}
		m := mdstatMemberPattern.FindStringSubmatch(f)
		if m == nil {
			return MdstatArray{}, fmt.Errorf("member %q is not name[N](flags)", f)
		}
		desc, err := strconv.Atoi(m[2])
		if err != nil {
			return MdstatArray{}, fmt.Errorf("member %q: descriptor: %v", f, err)
		}
		mem := MdstatMember{Device: m[1], Descriptor: desc}
		for _, flag := range m[3] {
			switch flag {
			case 'W':
				mem.WriteMostly = true
			case 'J':
				mem.Journal = true
			case 'F':
				mem.Faulty = true
			case 'S':
				mem.Spare = true
			case 'R':
				mem.Replacement = true
			}
		}
		a.Members = append(a.Members, mem)
	}
	return a, nil
}

// parseMdstatDetail reads one indented line of an array's entry. Indented
// lines it does not recognise are skipped, except ones that look like a
// progress line, so that a kernel adding a line does not break the parser
// but a garbled progress line is never taken for "no sync".
func parseMdstatDetail(a *MdstatArray, text string) error {
	switch {
	case mdstatBlocksPattern.MatchString(text):
		m := mdstatBlocksPattern.FindStringSubmatch(text)
		blocks, err := strconv.ParseUint(m[1], 10, 64)
		if err != nil {
			return fmt.Errorf("blocks: %v", err)
		}
		a.Blocks = blocks
		rest := strings.Fields(m[2])
		for i := 0; i+1 < len(rest); i++ {
			if rest[i] == "super" {
				a.Super = rest[i+1]
				break
			}
		}
		if d := mdstatDisksPattern.FindStringSubmatch(m[2]); d != nil {
			raid, err1 := strconv.ParseUint(d[1], 10, 31)
			active, err2 := strconv.ParseUint(d[2], 10, 31)
			if err1 != nil || err2 != nil {
				return fmt.Errorf("disk counts [%s/%s] out of range", d[1], d[2])
			}
			if active > raid {
				return fmt.Errorf("%d active disks of %d", active, raid)
			}
			if uint64(len(d[3])) != raid {
				return fmt.Errorf("status [%s] has %d slots, want %d", d[3], len(d[3]), raid)
			}
			a.RaidDisks, a.ActiveDisks, a.Status = int(raid), int(active), d[3]
		}
	case strings.HasPrefix(text, "bitmap:"):
		m := mdstatBitmapPattern.FindStringSubmatch(text)
		if m == nil {
			return fmt.Errorf("unreadable bitmap line")
		}
		used, err1 := strconv.ParseUint(m[1], 10, 31)
		total, err2 := strconv.ParseUint(m[2], 10, 31)
		chunk, err3 := strconv.ParseUint(m[4], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			return fmt.Errorf("bitmap numbers out of range")
		}
		if used > total {
			return fmt.Errorf("bitmap uses %d of %d pages", used, total)
		}
		if m[5] == "B" {
			chunk /= 1024
		}
		a.Bitmap = &MdstatBitmap{PagesUsed: int(used), PagesTotal: int(total), ChunkKB: chunk, File: m[6]}
	case mdstatWaitingPattern.MatchString(text):
		m := mdstatWaitingPattern.FindStringSubmatch(text)
		a.Sync = &MdstatSync{Action: m[1], Delayed: m[2] == "DELAYED", Pending: m[2] == "PENDING", Remote: m[2] == "REMOTE"}
	case strings.HasPrefix(text, "[") || strings.Contains(text, "%"):
		s, err := parseMdstatProgress(text)
		if err != nil {
			return err
		}
		a.Sync = s
	}
	return nil
}

// parseMdstatProgress reads
// "[=>...................]  recovery =  8.9% (94208/1046528) finish=0.1min speed=94208K/sec".
func parseMdstatProgress(text string) (*MdstatSync, error) {
	m := mdstatProgressPattern.FindStringSubmatch(text)
	if m == nil {
		return nil, fmt.Errorf("unreadable sync progress line")
	}
	percent, err := strconv.ParseFloat(m[2], 64)
	if err != nil || percent > 100 {
		return nil, fmt.Errorf("sync percent %q out of range", m[2])
	}
	done, err1 := strconv.ParseUint(m[3], 10, 64)
	total, err2 := strconv.ParseUint(m[4], 10, 64)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("sync position (%s/%s) out of range", m[3], m[4])
	}
	if done > total {
		return nil, fmt.Errorf("sync done %d exceeds total %d", done, total)
	}
	s := &MdstatSync{Action: m[1], Percent: percent, Done: done, Total: total}
	if m[5] != "" {
		if s.FinishMinutes, err = strconv.ParseFloat(m[5], 64); err != nil {
			return nil, fmt.Errorf("finish %q: %v", m[5], err)
		}
	}
	if m[6] != "" {
		if s.SpeedKBps, err = strconv.ParseUint(m[6], 10, 64); err != nil {
			return nil, fmt.Errorf("speed %q: %v", m[6], err)
		}
	}
	return s, nil
}

// ReadMdstat reads and parses root/proc/mdstat.
func (m *Manager) ReadMdstat() (Mdstat, error) {
	b, err := m.ReadMdstatBytes()
	if err != nil {
		return Mdstat{}, err
	}
	return ParseMdstat(b)
}

// ReadMdstatBytes reads root/proc/mdstat without parsing it, for a caller
// that parses only what differs from its last reading (the healer, every
// cycle); ErrNotFound when md is not loaded.
func (m *Manager) ReadMdstatBytes() ([]byte, error) {
	path := m.procPath("mdstat")
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s (md not loaded)", ErrNotFound, path)
	}
	return b, err
}
