// Package sanity runs csi-sanity in process against the real driver wired to
// the stateful fakes of pkg/driver/fake: the handlers, validation, state
// files, rollback and error mapping are the production code; only the
// provisioner, the kernel (NVMe-oF, md) and mount/mkfs are simulated.
package sanity

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	"k8s.io/mount-utils"

	"github.com/nvmirror/nvmirror/pkg/driver"
	"github.com/nvmirror/nvmirror/pkg/driver/fake"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
)

const (
	volumeSize = 64 << 20
	// capacity holds every volume the suite creates at once, three
	// replicas each, with room to expand.
	capacity = 1 << 40
)

func TestSanity(t *testing.T) {
	tmp := t.TempDir()
	root := filepath.Join(tmp, "host")
	for _, f := range []string{"dev/nvme-fabrics", "proc/mdstat"} {
		p := filepath.Join(root, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	host, err := driver.LoadHostIdentity(root)
	if err != nil {
		t.Fatal(err)
	}

	fabric := fake.NewFabric()
	prov := fake.NewProvisioner(fabric, capacity)
	ini := fake.NewInitiator(fabric, root)
	raid := fake.NewRaid(ini)
	ex := fake.NewExec(raid.ContentKey)

	opts := driver.DefaultOptions()
	opts.Mode = driver.AllMode
	opts.Endpoint = "unix://" + filepath.Join(tmp, "csi.sock")
	// Never dialled (the in-memory provisioner is passed in), but Validate
	// checks their form.
	opts.ProvisionerAddress = "in-memory:0"
	opts.ProvisionerCertFile, opts.ProvisionerKeyFile = "/unused/tls.crt", "/unused/tls.key"
	opts.NodeName = "sanity-node"
	opts.HostRoot = root
	opts.StateDir = filepath.Join(tmp, "state")
	if err := opts.Validate(); err != nil {
		t.Fatal(err)
	}
	d, err := driver.NewDriver(opts, prov, driver.NodeDeps{
		Host:      host,
		Initiator: ini,
		Raid:      raid,
		Mounter:   &mount.SafeFormatAndMount{Interface: mount.NewFakeMounter(nil), Exec: ex},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("driver: %v", err)
		}
	})

	cfg := sanity.NewTestConfig()
	cfg.Address = opts.Endpoint
	// Not created here: csi-sanity makes them itself before each spec and
	// fails if they already exist.
	cfg.TargetPath = filepath.Join(tmp, "target")
	cfg.StagingPath = filepath.Join(tmp, "staging")
	cfg.TestVolumeSize = volumeSize
	cfg.TestVolumeParameters = map[string]string{storageclass.KeyNumReplicas: "3"}
	cfg.TestVolumeMutableParameters = map[string]string{storageclass.KeyMaxReplicaDownTime: "30"}
	sanity.Test(t, cfg)
}
