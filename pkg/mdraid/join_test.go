package mdraid

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

// fakeJoiner answers Examine from a table and records adds.
type fakeJoiner struct {
	sb       *Superblock
	refuse   bool // ReAdd refused
	calls    []string
	askedFor int // arrayEvents calls
}

func (f *fakeJoiner) Examine(ctx context.Context, member string) (Superblock, error) {
	if f.sb == nil {
		return Superblock{}, ErrNoSuperblock
	}
	return *f.sb, nil
}

func (f *fakeJoiner) Add(ctx context.Context, device, member string) error {
	f.calls = append(f.calls, "add")
	return nil
}

func (f *fakeJoiner) SetRaidDevices(ctx context.Context, device string, n int) error {
	f.calls = append(f.calls, fmt.Sprintf("slots=%d", n))
	return nil
}

func (f *fakeJoiner) ReAdd(ctx context.Context, device, member string) error {
	f.calls = append(f.calls, "re-add")
	if f.refuse {
		return fmt.Errorf("%w: slot taken", ErrReAddRefused)
	}
	return nil
}

func TestJoin(t *testing.T) {
	const uuid = "11111111:22222222:33333333:44444444"
	arr := Array{Device: "/dev/md5", UUID: uuid, RaidDisks: 2}
	for _, tc := range []struct {
		name      string
		slots     int
		sb        *Superblock
		refuse    bool
		events    uint64
		known     bool
		wantCalls string
		reAdded   bool
		wantErr   error
		askEvents int
	}{
		{name: "blank: full add", wantCalls: "[add]"},
		{name: "former member: bitmap re-add", sb: &Superblock{UUID: uuid, Events: 40}, events: 50, known: true, wantCalls: "[re-add]", reAdded: true, askEvents: 1},
		{name: "re-add refused: full add", sb: &Superblock{UUID: uuid, Events: 40}, refuse: true, events: 50, known: true, wantCalls: "[re-add add]", askEvents: 1},
		{name: "another array's member", sb: &Superblock{UUID: "99999999:22222222:33333333:44444444"}, wantCalls: "[]", wantErr: ErrForeignMember},
		{name: "newer than the array", sb: &Superblock{UUID: uuid, Events: 60}, events: 50, known: true, wantCalls: "[]", wantErr: ErrNewerMember, askEvents: 1},
		{name: "array's events unknown: re-add", sb: &Superblock{UUID: uuid, Events: 60}, wantCalls: "[re-add]", reAdded: true, askEvents: 1},
		{name: "blank into a full array: added (a spare), then a slot made for it", slots: 3, wantCalls: "[add slots=3]"},
		{name: "former member, one slot more configured: re-added, then grown", slots: 3, sb: &Superblock{UUID: uuid, Events: 40}, events: 50, known: true, wantCalls: "[re-add slots=3]", reAdded: true, askEvents: 1},
		{name: "re-add refused into a full array: added, then grown", slots: 3, sb: &Superblock{UUID: uuid, Events: 40}, refuse: true, events: 50, known: true, wantCalls: "[re-add add slots=3]", askEvents: 1},
		{name: "fewer slots configured than the array has: never shrunk here", slots: 1, wantCalls: "[add]"},
		{name: "newer than the array: not grown either", slots: 3, sb: &Superblock{UUID: uuid, Events: 60}, events: 50, known: true, wantCalls: "[]", wantErr: ErrNewerMember, askEvents: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeJoiner{sb: tc.sb, refuse: tc.refuse}
			reAdded, err := Join(context.Background(), f, arr, "/dev/nvme2n1", tc.slots, func() (uint64, bool) { f.askedFor++; return tc.events, tc.known })
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if got := fmt.Sprint(f.calls); got != tc.wantCalls || reAdded != tc.reAdded {
				t.Errorf("calls %s re-added %v, want %s %v", got, reAdded, tc.wantCalls, tc.reAdded)
			}
			if f.askedFor != tc.askEvents {
				t.Errorf("array events asked %d times, want %d (only for the array's own superblock)", f.askedFor, tc.askEvents)
			}
		})
	}
}
