package host

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/pkg/nvmeof"
)

func TestFindDevice(t *testing.T) {
	const otherNQN = "nqn.2024-01.io.nvmirror:pvc-2.r0"
	nguid := "776e5169-6aca-1f52-9ff6-332e5648d3e2"
	tests := []struct {
		name    string
		setup   func(*sysTree)
		nqn     string
		uuid    string
		want    string // device name
		wantErr []error
		errHas  []string
	}{
		{
			// The case seen on a real kernel: after a reconnect controller
			// nvme3 serves block device nvme1n2. A decoy nvme3n1 of another
			// subsystem must not be picked by name guessing.
			name: "reconnect nvme3 -> nvme1n2",
			setup: func(s *sysTree) {
				s.addController(ctrlSpec{name: "nvme3", nqn: testNQN, traddr: "127.0.0.1", trsvcid: "4421", hostnqn: testHostNQN})
				s.addSubsystem("nvme-subsys1", testNQN, "nvme3")
				s.addHead("nvme-subsys1", nsSpec{dev: "nvme1n2", nsid: 1, uuid: testUUID, sectors: 2048})
				s.addCtrlDisk("nvme3", nsSpec{dev: "nvme1c3n2", nsid: 1, uuid: testUUID, sectors: 2048, noDevNode: true})
				s.addController(ctrlSpec{name: "nvme1", nqn: otherNQN, traddr: "127.0.0.1", trsvcid: "4422", hostnqn: testHostNQN})
				s.addSubsystem("nvme-subsys3", otherNQN, "nvme1")
				s.addHead("nvme-subsys3", nsSpec{dev: "nvme3n1", nsid: 1, uuid: otherUUID, sectors: 4096})
			},
			nqn: testNQN, uuid: testUUID, want: "nvme1n2",
		},
		{
			name: "uuid match is case-insensitive",
			setup: func(s *sysTree) {
				s.addSubsystem("nvme-subsys1", testNQN)
				s.addHead("nvme-subsys1", nsSpec{dev: "nvme1n1", nsid: 1, uuid: testUUID, sectors: 8})
			},
			nqn: testNQN, uuid: strings.ToUpper(testUUID), want: "nvme1n1",
		},
		{
			name: "uuid mismatch is refused",
			setup: func(s *sysTree) {
				s.addSubsystem("nvme-subsys1", testNQN)
				s.addHead("nvme-subsys1", nsSpec{dev: "nvme1n1", nsid: 1, uuid: otherUUID, sectors: 8})
			},
			nqn: testNQN, uuid: testUUID,
			wantErr: []error{nvmeof.ErrDeviceNotFound, nvmeof.ErrIdentityMismatch},
			errHas:  []string{otherUUID, "nvme1n1", testNQN, testUUID},
		},
		{
			name: "match by nguid when there is no uuid",
			setup: func(s *sysTree) {
				s.addSubsystem("nvme-subsys2", testNQN)
				s.addHead("nvme-subsys2", nsSpec{dev: "nvme2n1", nsid: 1, nguid: nguid, sectors: 8})
			},
			nqn: testNQN, uuid: strings.ReplaceAll(nguid, "-", ""), want: "nvme2n1",
		},
		{
			name: "several namespaces: uuid chooses",
			setup: func(s *sysTree) {
				s.addSubsystem("nvme-subsys1", testNQN)
				s.addHead("nvme-subsys1", nsSpec{dev: "nvme1n1", nsid: 1, uuid: otherUUID, sectors: 8})
				s.addHead("nvme-subsys1", nsSpec{dev: "nvme1n2", nsid: 2, uuid: testUUID, sectors: 8})
			},
			nqn: testNQN, uuid: testUUID, want: "nvme1n2",
		},
		{
			name: "several namespaces without uuid is ambiguous",
			setup: func(s *sysTree) {
				s.addSubsystem("nvme-subsys1", testNQN)
				s.addHead("nvme-subsys1", nsSpec{dev: "nvme1n1", nsid: 1, uuid: otherUUID, sectors: 8})
				s.addHead("nvme-subsys1", nsSpec{dev: "nvme1n2", nsid: 2, uuid: testUUID, sectors: 8})
			},
			nqn: testNQN, wantErr: []error{nvmeof.ErrInvalidArgument}, errHas: []string{"nvme1n1", "nvme1n2"},
		},
		{
			name: "single namespace without uuid",
			setup: func(s *sysTree) {
				s.addSubsystem("nvme-subsys1", testNQN)
				s.addHead("nvme-subsys1", nsSpec{dev: "nvme1n1", nsid: 1, uuid: otherUUID, sectors: 8})
			},
			nqn: testNQN, want: "nvme1n1",
		},
		{
			name: "non-multipath kernel: disk under the controller",
			setup: func(s *sysTree) {
				s.addController(ctrlSpec{name: "nvme3", nqn: testNQN, traddr: "127.0.0.1", trsvcid: "4421", hostnqn: testHostNQN})
				s.addSubsystem("nvme-subsys0", testNQN, "nvme3")
				s.addCtrlDisk("nvme3", nsSpec{dev: "nvme3n1", nsid: 1, uuid: testUUID, sectors: 8})
			},
			nqn: testNQN, uuid: testUUID, want: "nvme3n1",
		},
		{
			name: "non-multipath kernel without subsystem link",
			setup: func(s *sysTree) {
				s.addController(ctrlSpec{name: "nvme4", nqn: testNQN, traddr: "127.0.0.1", trsvcid: "4421", hostnqn: testHostNQN})
				s.addCtrlDisk("nvme4", nsSpec{dev: "nvme4n1", nsid: 1, uuid: testUUID, sectors: 8})
			},
			nqn: testNQN, uuid: testUUID, want: "nvme4n1",
		},
		{
			name: "hidden per-path device only is never returned",
			setup: func(s *sysTree) {
				s.addController(ctrlSpec{name: "nvme3", nqn: testNQN, traddr: "127.0.0.1", trsvcid: "4421", hostnqn: testHostNQN})
				s.addSubsystem("nvme-subsys1", testNQN, "nvme3")
				s.addCtrlDisk("nvme3", nsSpec{dev: "nvme1c3n1", nsid: 1, uuid: testUUID, sectors: 8})
			},
			nqn: testNQN, uuid: testUUID,
			wantErr: []error{nvmeof.ErrDeviceNotFound}, errHas: []string{"nvme-subsys1", "no namespace"},
		},
		{
			name:    "not connected",
			setup:   func(s *sysTree) {},
			nqn:     testNQN,
			uuid:    testUUID,
			wantErr: []error{nvmeof.ErrDeviceNotFound}, errHas: []string{testNQN, "not connected"},
		},
		{
			name:    "invalid nqn",
			setup:   func(s *sysTree) {},
			nqn:     "nqn.x,y",
			wantErr: []error{nvmeof.ErrInvalidArgument},
		},
		{
			name:    "invalid uuid",
			setup:   func(s *sysTree) {},
			nqn:     testNQN,
			uuid:    "replica-1",
			wantErr: []error{nvmeof.ErrInvalidArgument},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tree := newSysTree(t)
			tc.setup(tree)
			d, err := fastInitiator(tree.root, &fakeFabrics{}).FindDevice(tc.nqn, tc.uuid)
			if len(tc.wantErr) > 0 {
				for _, w := range tc.wantErr {
					if !errors.Is(err, w) {
						t.Fatalf("FindDevice = %+v, %v; want %v", d, err, w)
					}
				}
				for _, s := range tc.errHas {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not mention %q", err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("FindDevice = %v", err)
			}
			if d.Name != tc.want || d.Path != filepath.Join(tree.root, "dev", tc.want) || d.SubsysNQN != tc.nqn {
				t.Errorf("FindDevice = %+v, want %s", d, tc.want)
			}
		})
	}
}

func TestFindDeviceFields(t *testing.T) {
	tree := newSysTree(t)
	tree.addController(ctrlSpec{name: "nvme3", nqn: testNQN, traddr: "127.0.0.1", trsvcid: "4421", hostnqn: testHostNQN})
	tree.addSubsystem("nvme-subsys1", testNQN, "nvme3")
	tree.addHead("nvme-subsys1", nsSpec{dev: "nvme1n2", nsid: 7, uuid: testUUID, nguid: "776e5169-6aca-1f52-9ff6-332e5648d3e2", sectors: 2097152})
	d, err := fastInitiator(tree.root, &fakeFabrics{}).FindDevice(testNQN, testUUID)
	if err != nil {
		t.Fatal(err)
	}
	want := Device{Name: "nvme1n2", Path: tree.path("dev/nvme1n2"), NSID: 7, UUID: testUUID,
		NGUID: "776e5169-6aca-1f52-9ff6-332e5648d3e2", WWID: "uuid." + testUUID, SizeBytes: 1 << 30,
		Subsystem: "nvme-subsys1", SubsysNQN: testNQN}
	if d != want {
		t.Errorf("FindDevice =\n%+v\nwant\n%+v", d, want)
	}
	// Matching the NGUID works too.
	if d2, err := fastInitiator(tree.root, &fakeFabrics{}).FindDevice(testNQN, "776E51696ACA1F529FF6332E5648D3E2"); err != nil || d2.Name != "nvme1n2" {
		t.Errorf("FindDevice by NGUID = %+v, %v", d2, err)
	}
	tree.write("sys/block/nvme1n2/size", "lots\n")
	if _, err := fastInitiator(tree.root, &fakeFabrics{}).FindDevice(testNQN, testUUID); err == nil || !strings.Contains(err.Error(), "size") {
		t.Errorf("bad size accepted: %v", err)
	}
}

func TestWaitForDevice(t *testing.T) {
	t.Run("appears later", func(t *testing.T) {
		tree := newSysTree(t)
		tree.addSubsystem("nvme-subsys1", testNQN)
		go func() {
			time.Sleep(80 * time.Millisecond)
			tree.addHead("nvme-subsys1", nsSpec{dev: "nvme1n1", nsid: 1, uuid: testUUID, sectors: 8})
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		d, err := fastInitiator(tree.root, &fakeFabrics{}).WaitForDevice(ctx, testNQN, testUUID)
		if err != nil || d.Name != "nvme1n1" {
			t.Fatalf("WaitForDevice = %+v, %v", d, err)
		}
	})
	t.Run("wrong identity until deadline", func(t *testing.T) {
		tree := newSysTree(t)
		tree.addSubsystem("nvme-subsys1", testNQN)
		tree.addHead("nvme-subsys1", nsSpec{dev: "nvme1n1", nsid: 1, uuid: otherUUID, sectors: 8})
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_, err := fastInitiator(tree.root, &fakeFabrics{}).WaitForDevice(ctx, testNQN, testUUID)
		for _, w := range []error{context.DeadlineExceeded, nvmeof.ErrDeviceNotFound, nvmeof.ErrIdentityMismatch} {
			if !errors.Is(err, w) {
				t.Errorf("WaitForDevice = %v, want %v", err, w)
			}
		}
		for _, s := range []string{testNQN, otherUUID, "last seen"} {
			if err != nil && !strings.Contains(err.Error(), s) {
				t.Errorf("error %q does not mention %q", err, s)
			}
		}
	})
	t.Run("dev node missing", func(t *testing.T) {
		tree := newSysTree(t)
		tree.addSubsystem("nvme-subsys1", testNQN)
		tree.addHead("nvme-subsys1", nsSpec{dev: "nvme1n1", nsid: 1, uuid: testUUID, sectors: 8, noDevNode: true})
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_, err := fastInitiator(tree.root, &fakeFabrics{}).WaitForDevice(ctx, testNQN, testUUID)
		if !errors.Is(err, nvmeof.ErrDeviceNotFound) || !strings.Contains(err.Error(), tree.path("dev/nvme1n1")) {
			t.Fatalf("WaitForDevice = %v", err)
		}
	})
	t.Run("invalid argument fails at once", func(t *testing.T) {
		tree := newSysTree(t)
		start := time.Now()
		_, err := fastInitiator(tree.root, &fakeFabrics{}).WaitForDevice(context.Background(), "bad", "")
		if !errors.Is(err, nvmeof.ErrInvalidArgument) || time.Since(start) > time.Second {
			t.Fatalf("WaitForDevice = %v after %v", err, time.Since(start))
		}
	})
	t.Run("default deadline applies", func(t *testing.T) {
		ctx, cancel := withDefaultTimeout(context.Background())
		defer cancel()
		if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > DefaultWaitTimeout {
			t.Fatalf("no default deadline: %v %v", dl, ok)
		}
		parent, cancelP := context.WithTimeout(context.Background(), time.Second)
		defer cancelP()
		ctx2, cancel2 := withDefaultTimeout(parent)
		defer cancel2()
		if dl, _ := ctx2.Deadline(); time.Until(dl) > time.Second {
			t.Fatalf("caller deadline not kept")
		}
	})
}
