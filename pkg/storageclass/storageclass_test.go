package storageclass

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	withDefaults := func(f func(*Parameters)) Parameters {
		p := Defaults()
		f(&p)
		return p
	}
	tests := []struct {
		name    string
		in      map[string]string
		want    Parameters
		wantErr []string // substrings the error must contain; nil = success
	}{
		{name: "empty gives defaults", in: nil, want: Defaults()},
		{name: "defaults are documented values", in: map[string]string{}, want: Parameters{
			NumReplicas: 2, MaxReplicaDownTimeMinutes: 60, ProvisioningType: Thin, FSType: "ext4", Authentication: AuthNone}},
		{name: "all set", in: map[string]string{
			"numReplicas": "3", "maxReplicaDownTime": "10080", "sameRackAllowed": "true",
			"provisioningType": "thick", "csi.storage.k8s.io/fstype": "xfs",
			"zones": "z2, z1,z2", "racks": "r1", "storageNodes": "sn-1,sn-0", "authentication": "bidirectional",
		}, want: Parameters{
			NumReplicas: 3, MaxReplicaDownTimeMinutes: 10080, SameRackAllowed: true,
			ProvisioningType: Thick, FSType: "xfs",
			Zones: []string{"z1", "z2"}, Racks: []string{"r1"}, StorageNodes: []string{"sn-0", "sn-1"},
			Authentication: AuthBidirectional,
		}},
		{name: "host authentication", in: map[string]string{"authentication": " Host"},
			want: withDefaults(func(p *Parameters) { p.Authentication = AuthHost })},
		{name: "one replica", in: map[string]string{"numReplicas": "1"}, want: withDefaults(func(p *Parameters) { p.NumReplicas = 1 })},
		{name: "zero down time disables replacement", in: map[string]string{"maxReplicaDownTime": "0"},
			want: withDefaults(func(p *Parameters) { p.MaxReplicaDownTimeMinutes = 0 })},
		{name: "30 days is the upper bound", in: map[string]string{"maxReplicaDownTime": "43200"},
			want: withDefaults(func(p *Parameters) { p.MaxReplicaDownTimeMinutes = 43200 })},
		{name: "case-insensitive values", in: map[string]string{"sameRackAllowed": "TRUE", "provisioningType": "Thick", "csi.storage.k8s.io/fstype": "EXT4"},
			want: withDefaults(func(p *Parameters) { p.SameRackAllowed = true; p.ProvisioningType = Thick })},
		{name: "empty fstype keeps default", in: map[string]string{"csi.storage.k8s.io/fstype": ""}, want: Defaults()},
		{name: "csi metadata kept", in: map[string]string{
			"csi.storage.k8s.io/pv/name": "pvc-123", "csi.storage.k8s.io/pvc/name": "data", "csi.storage.k8s.io/pvc/namespace": "db"},
			want: withDefaults(func(p *Parameters) { p.Metadata = Metadata{PVName: "pvc-123", PVCName: "data", PVCNamespace: "db"} })},

		{name: "replicas zero", in: map[string]string{"numReplicas": "0"}, wantErr: []string{"numReplicas", `"0"`, "1 to 3"}},
		{name: "replicas four", in: map[string]string{"numReplicas": "4"}, wantErr: []string{"numReplicas", `"4"`}},
		{name: "replicas not a number", in: map[string]string{"numReplicas": "two"}, wantErr: []string{"numReplicas", `"two"`, "integer"}},
		{name: "negative down time", in: map[string]string{"maxReplicaDownTime": "-1"}, wantErr: []string{"maxReplicaDownTime", `"-1"`}},
		{name: "down time above bound", in: map[string]string{"maxReplicaDownTime": "43201"}, wantErr: []string{"maxReplicaDownTime", "43200"}},
		{name: "down time with unit", in: map[string]string{"maxReplicaDownTime": "10m"}, wantErr: []string{"maxReplicaDownTime", `"10m"`}},
		{name: "bool spelled 1", in: map[string]string{"sameRackAllowed": "1"}, wantErr: []string{"sameRackAllowed", "true or false"}},
		{name: "bad provisioning type", in: map[string]string{"provisioningType": "lazy"}, wantErr: []string{"provisioningType", `"lazy"`, "thin or thick"}},
		{name: "bad fstype", in: map[string]string{"csi.storage.k8s.io/fstype": "btrfs"}, wantErr: []string{"fstype", `"btrfs"`}},
		{name: "empty selector", in: map[string]string{"zones": " "}, wantErr: []string{"zones", "non-empty"}},
		{name: "empty selector item", in: map[string]string{"racks": "r1,,r2"}, wantErr: []string{"racks", `item ""`}},
		{name: "bad selector item", in: map[string]string{"storageNodes": "sn 1"}, wantErr: []string{"storageNodes", `"sn 1"`}},
		{name: "bad authentication", in: map[string]string{"authentication": "chap"}, wantErr: []string{"authentication", `"chap"`, "none, host or bidirectional"}},
		{name: "unknown key named", in: map[string]string{"numReplica": "3"}, wantErr: []string{`unknown parameter "numReplica"`}},
		{name: "reference-only key rejected", in: map[string]string{"maxIOPSPerGB": "10"}, wantErr: []string{"maxIOPSPerGB"}},
		{name: "first bad key in sorted order", in: map[string]string{"zzz": "1", "aaa": "1"}, wantErr: []string{`"aaa"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.in)
			if tc.wantErr != nil {
				if err == nil {
					t.Fatalf("Parse(%v) = %+v, want error", tc.in, got)
				}
				if !errors.Is(err, ErrInvalidArgument) {
					t.Errorf("error %v does not wrap ErrInvalidArgument", err)
				}
				for _, s := range tc.wantErr {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not contain %q", err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%v): %v", tc.in, err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Parse(%v)\n got %+v\nwant %+v", tc.in, got, tc.want)
			}
		})
	}
}

func TestMapRoundTrip(t *testing.T) {
	for _, in := range []map[string]string{
		nil,
		{"numReplicas": "3", "sameRackAllowed": "true", "zones": "b,a", "racks": "r", "storageNodes": "n1", "provisioningType": "thick", "csi.storage.k8s.io/fstype": "xfs", "maxReplicaDownTime": "0"},
	} {
		p, err := Parse(in)
		if err != nil {
			t.Fatal(err)
		}
		q, err := Parse(p.Map())
		if err != nil {
			t.Fatalf("re-parse of %v: %v", p.Map(), err)
		}
		if !reflect.DeepEqual(p, q) {
			t.Errorf("round trip: %+v != %+v", p, q)
		}
	}
}

func TestSameConfiguration(t *testing.T) {
	base, _ := Parse(map[string]string{"racks": "r1,r2", "csi.storage.k8s.io/pvc/name": "a"})
	tests := []struct {
		name string
		in   map[string]string
		want bool
	}{
		{"metadata ignored, list order ignored", map[string]string{"racks": "r2,r1", "csi.storage.k8s.io/pvc/name": "b"}, true},
		{"explicit defaults equal implicit", map[string]string{"racks": "r1,r2", "numReplicas": "2", "provisioningType": "thin"}, true},
		{"other replicas", map[string]string{"racks": "r1,r2", "numReplicas": "3"}, false},
		{"other racks", map[string]string{"racks": "r1"}, false},
		{"other type", map[string]string{"racks": "r1,r2", "provisioningType": "thick"}, false},
		{"other fs", map[string]string{"racks": "r1,r2", "csi.storage.k8s.io/fstype": "xfs"}, false},
		{"other down time", map[string]string{"racks": "r1,r2", "maxReplicaDownTime": "5"}, false},
		{"other same-rack", map[string]string{"racks": "r1,r2", "sameRackAllowed": "true"}, false},
		{"explicit none equals implicit", map[string]string{"racks": "r1,r2", "authentication": "none"}, true},
		{"other authentication", map[string]string{"racks": "r1,r2", "authentication": "host"}, false},
	}
	// A record written before the parameter existed reads as none.
	legacy := base
	legacy.Authentication = ""
	if !base.SameConfiguration(legacy) || legacy.Auth() != AuthNone {
		t.Errorf("a record without authentication must read as none")
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, err := Parse(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if got := base.SameConfiguration(o); got != tc.want {
				t.Errorf("SameConfiguration = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestMutableParametersAreStorageClassParameters: a mutable parameter must
// also be settable in the StorageClass, or a VolumeAttributesClass could set
// something a StorageClass cannot; and WithMutable refuses the others by
// name, changing nothing.
func TestMutableParametersAreStorageClassParameters(t *testing.T) {
	for _, k := range MutableKeys() {
		if _, err := Parse(map[string]string{k: "1"}); err != nil {
			t.Errorf("mutable parameter %q is not a StorageClass parameter: %v", k, err)
		}
	}
	if !IsMutable(KeyMaxReplicaDownTime) || !IsMutable(KeyNumReplicas) {
		t.Error("maxReplicaDownTime and numReplicas must be mutable (tuned through VolumeAttributesClasses)")
	}
	if got, err := Defaults().WithMutable(map[string]string{KeyNumReplicas: "3"}); err != nil || got.NumReplicas != 3 {
		t.Errorf("WithMutable(numReplicas 3) = %+v, %v", got, err)
	}
	p := Defaults()
	got, err := p.WithMutable(map[string]string{KeyMaxReplicaDownTime: "15"})
	if err != nil || got.MaxReplicaDownTimeMinutes != 15 || got.Policy().MaxReplicaDownTimeMinutes != 15 {
		t.Errorf("WithMutable(15) = %+v, %v", got, err)
	}
	for _, bad := range []map[string]string{{KeyFSType: "xfs"}, {KeyNumReplicas: "5"}, {KeyMaxReplicaDownTime: "-1"}} {
		got, err := p.WithMutable(bad)
		if !errors.Is(err, ErrInvalidArgument) || got.SameConfiguration(p) == false {
			t.Errorf("WithMutable(%v) = %+v, %v: want InvalidArgument and no change", bad, got, err)
		}
		for k := range bad {
			if !strings.Contains(err.Error(), k) {
				t.Errorf("error %q does not name %s", err, k)
			}
		}
	}
}

// rebuildBandwidthLimit: MiB/s from 0 (no limit) to MaxRebuildBandwidth,
// named in every refusal, mutable, carried in the node side's policy.
func TestRebuildBandwidthLimit(t *testing.T) {
	p, err := Parse(map[string]string{KeyRebuildBandwidth: " 40 "})
	if err != nil || p.RebuildBandwidthMiBps != 40 || p.Policy().RebuildBandwidthMiBps != 40 || p.Map()[KeyRebuildBandwidth] != "40" {
		t.Fatalf("Parse(40) = %+v, %v", p, err)
	}
	if d := Defaults(); d.RebuildBandwidthMiBps != DefaultRebuildBandwidth || d.SameConfiguration(p) {
		t.Errorf("defaults %+v: a limit must be another configuration", d)
	}
	for _, bad := range []string{"-1", "100001", "fast", "1.5"} {
		_, err := Parse(map[string]string{KeyRebuildBandwidth: bad})
		if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), KeyRebuildBandwidth) {
			t.Errorf("Parse(%q): %v, want InvalidArgument naming the parameter", bad, err)
		}
	}
	if !IsMutable(KeyRebuildBandwidth) {
		t.Fatal("rebuildBandwidthLimit must be mutable")
	}
	lifted, err := p.WithMutable(map[string]string{KeyRebuildBandwidth: "0"})
	if err != nil || lifted.RebuildBandwidthMiBps != 0 || lifted.MaxReplicaDownTimeMinutes != p.MaxReplicaDownTimeMinutes {
		t.Errorf("WithMutable(0) = %+v, %v", lifted, err)
	}
}

func TestValidateVolumeName(t *testing.T) {
	for _, ok := range []string{"v", "pvc-6f1c2a10-7d3e-4b8a-9c1d-1a2b3c4d5e6f", "Sanity_Test.1", strings.Repeat("n", MaxVolumeNameLength)} {
		if err := ValidateVolumeName(ok); err != nil {
			t.Errorf("ValidateVolumeName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", strings.Repeat("n", MaxVolumeNameLength+1), "a/b", "..", "-a", ".a", "a b", "a\nb", "a\x00", "é"} {
		err := ValidateVolumeName(bad)
		if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "name") {
			t.Errorf("ValidateVolumeName(%q) = %v, want ErrInvalidArgument naming the name", bad, err)
		}
	}
}

// FuzzValidateVolumeName: an accepted name is short, a single path
// element and printable ASCII; a refused one says why without echoing it
// whole.
func FuzzValidateVolumeName(f *testing.F) {
	for _, s := range []string{"pvc-1", "", "a/b", strings.Repeat("x", 300), "a\x1b[2J"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := ValidateVolumeName(name)
		if err == nil {
			if len(name) == 0 || len(name) > MaxVolumeNameLength || strings.ContainsAny(name, "/ \\\x00") || name == "." || name == ".." {
				t.Fatalf("accepted %q", name)
			}
			for _, c := range []byte(name) {
				if c < 0x21 || c > 0x7e {
					t.Fatalf("accepted %q", name)
				}
			}
			return
		}
		if !errors.Is(err, ErrInvalidArgument) || len(err.Error()) > 200 {
			t.Fatalf("error %v", err)
		}
	})
}
