package mdraid

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// Superblock is what `mdadm --examine --export` reports about the md
// superblock on one member device.
type Superblock struct {
	// UUID identifies the array, in NormalizeUUID's form.
	UUID string
	// Name is the array name without the homehost prefix. It comes from the
	// device, so it is untrusted input: compare it, never build paths or
	// commands from it.
	Name string
	// HomeHost is the part of the stored name before ':' ("any" for arrays
	// Create made); empty when the stored name has no ':'.
	HomeHost string
	// Level is the personality, e.g. "raid1".
	Level string
	// RaidDevices is the number of slots in the array (MD_DEVICES).
	RaidDevices int
	// DeviceUUID identifies this member within the array, in
	// NormalizeUUID's form.
	DeviceUUID string
	// Events is the superblock's event count: a member whose count trails the
	// array's can only come back through the bitmap if the gap is covered.
	Events uint64
}

// Detail is what `mdadm --detail --export` reports about a running array.
type Detail struct {
	Level       string
	RaidDevices int
	// Metadata is the superblock version, e.g. "1.2".
	Metadata string
	// UUID is in NormalizeUUID's form; mdadm omits it when its map file has
	// no entry for the array, and Manager.Detail then fills it from sysfs.
	UUID     string
	Name     string
	HomeHost string
	// DevName is the name under /dev/md/, present only when udev (or
	// mdadm) made that link.
	DevName string
	Members []DetailMember
}

// DetailMember is one member as mdadm --detail --export lists it. mdadm
// reports a faulty member with role "spare" (Role -1), so decisions about
// member health must read sysfs (Array.Members) instead.
type DetailMember struct {
	// Key is the member's sysfs name with every non-alphanumeric byte
	// replaced by '_', as mdadm prints it (e.g. "dev_nvme1n1").
	Key string
	// Role is the slot, or -1 for a spare (or a faulty member).
	Role int
	// Device is the device node mdadm found for the member, e.g.
	// "/dev/nvme1n1"; empty if it found none.
	Device string
}

// exportLines splits mdadm's --export output into KEY=VALUE pairs, keeping
// their order. A line without '=' means the output is not what this parser
// was written for, so it is an error rather than something to skip.
func exportLines(b []byte) ([][2]string, error) {
	var pairs [][2]string
	for i, line := range bytes.Split(b, []byte("\n")) {
		text := strings.TrimRight(string(line), "\r")
		if strings.TrimSpace(text) == "" {
			continue
		}
		key, value, ok := strings.Cut(text, "=")
		if !ok || key == "" || strings.ContainsAny(key, " \t") {
			return nil, fmt.Errorf("%w: mdadm --export line %d is not KEY=VALUE: %q", ErrMalformed, i+1, text)
		}
		pairs = append(pairs, [2]string{key, value})
	}
	return pairs, nil
}

// splitMDName separates the homehost prefix mdadm stores in a version-1
// superblock name ("any:vol-1") from the name itself.
func splitMDName(stored string) (homeHost, name string) {
	if h, n, ok := strings.Cut(stored, ":"); ok {
		return h, n
	}
	return "", stored
}

// ParseExamineExport parses the output of `mdadm --examine --export DEVICE`
// (version-1 metadata). Output without MD_UUID means mdadm found no usable
// superblock, reported as ErrNoSuperblock.
func ParseExamineExport(b []byte) (Superblock, error) {
	pairs, err := exportLines(b)
	if err != nil {
		return Superblock{}, err
	}
	var sb Superblock
	for _, kv := range pairs {
		key, value := kv[0], kv[1]
		switch key {
		case "MD_UUID":
			if sb.UUID, err = NormalizeUUID(value); err != nil {
				return Superblock{}, fmt.Errorf("%w: MD_UUID: %w", ErrMalformed, err)
			}
		case "MD_DEV_UUID":
			if sb.DeviceUUID, err = NormalizeUUID(value); err != nil {
				return Superblock{}, fmt.Errorf("%w: MD_DEV_UUID: %w", ErrMalformed, err)
			}
		case "MD_NAME":
			sb.HomeHost, sb.Name = splitMDName(value)
		case "MD_LEVEL":
			sb.Level = value
		case "MD_DEVICES":
			if sb.RaidDevices, err = parseCount("MD_DEVICES", value); err != nil {
				return Superblock{}, err
			}
		case "MD_EVENTS":
			if sb.Events, err = strconv.ParseUint(value, 10, 64); err != nil {
				return Superblock{}, fmt.Errorf("%w: MD_EVENTS %q: %w", ErrMalformed, value, err)
			}
		}
	}
	if sb.UUID == "" {
		return Superblock{}, fmt.Errorf("%w: mdadm --examine --export printed no MD_UUID", ErrNoSuperblock)
	}
	return sb, nil
}

// ParseDetailExport parses the output of `mdadm --detail --export ARRAY`.
func ParseDetailExport(b []byte) (Detail, error) {
	pairs, err := exportLines(b)
	if err != nil {
		return Detail{}, err
	}
	var d Detail
	memberIndex := map[string]int{}
	member := func(key string) *DetailMember {
		i, ok := memberIndex[key]
		if !ok {
			i = len(d.Members)
			memberIndex[key] = i
			d.Members = append(d.Members, DetailMember{Key: key, Role: -1})
		}
		return &d.Members[i]
	}
	for _, kv := range pairs {
		key, value := kv[0], kv[1]
		switch {
		case key == "MD_UUID":
			if d.UUID, err = NormalizeUUID(value); err != nil {
				return Detail{}, fmt.Errorf("%w: MD_UUID: %w", ErrMalformed, err)
			}
		case key == "MD_NAME":
			d.HomeHost, d.Name = splitMDName(value)
		case key == "MD_LEVEL":
			d.Level = value
		case key == "MD_DEVICES":
			if d.RaidDevices, err = parseCount("MD_DEVICES", value); err != nil {
				return Detail{}, err
			}
		case key == "MD_METADATA":
			d.Metadata = value
		case key == "MD_DEVNAME":
			d.DevName = value
		case strings.HasPrefix(key, "MD_DEVICE_") && strings.HasSuffix(key, "_ROLE") && len(key) > len("MD_DEVICE__ROLE"):
			m := member(key[len("MD_DEVICE_") : len(key)-len("_ROLE")])
			if value == "spare" {
				m.Role = -1
				continue
			}
			role, err := parseCount(key, value)
			if err != nil {
				return Detail{}, err
			}
			m.Role = role
		case strings.HasPrefix(key, "MD_DEVICE_") && strings.HasSuffix(key, "_DEV") && len(key) > len("MD_DEVICE__DEV"):
			member(key[len("MD_DEVICE_") : len(key)-len("_DEV")]).Device = value
		}
	}
	return d, nil
}

// parseCount parses a non-negative decimal that fits an int.
func parseCount(what, s string) (int, error) {
	n, err := strconv.ParseUint(s, 10, 31)
	if err != nil {
		return 0, fmt.Errorf("%w: %s %q is not a count: %w", ErrMalformed, what, s, err)
	}
	return int(n), nil
}
