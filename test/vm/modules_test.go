package vm

import (
	"reflect"
	"strings"
	"testing"
)

const sampleModulesDep = `kernel/fs/configfs/configfs.ko:
kernel/drivers/md/md-mod.ko:
kernel/drivers/md/raid1.ko: kernel/drivers/md/md-mod.ko
kernel/lib/crc-t10dif.ko: kernel/crypto/crct10dif_common.ko
kernel/crypto/crct10dif_common.ko:
kernel/block/t10-pi.ko: kernel/lib/crc-t10dif.ko kernel/lib/crc64-rocksoft.ko.xz
kernel/lib/crc64-rocksoft.ko.xz:
kernel/drivers/nvme/host/nvme-core.ko: kernel/block/t10-pi.ko kernel/lib/crc-t10dif.ko
kernel/drivers/nvme/host/nvme-fabrics.ko: kernel/drivers/nvme/host/nvme-core.ko
kernel/drivers/nvme/host/nvme-tcp.ko: kernel/drivers/nvme/host/nvme-core.ko kernel/drivers/nvme/host/nvme-fabrics.ko
kernel/drivers/nvme/target/nvmet.ko: kernel/fs/configfs/configfs.ko kernel/block/t10-pi.ko
kernel/drivers/nvme/target/nvmet-tcp.ko: kernel/drivers/nvme/target/nvmet.ko
kernel/x/a.ko: kernel/x/b.ko
kernel/x/b.ko: kernel/x/a.ko
`

func TestLoadOrder(t *testing.T) {
	md, err := parseModulesDep(strings.NewReader(sampleModulesDep))
	if err != nil {
		t.Fatal(err)
	}
	got, err := md.loadOrder([]string{"raid1", "nvme-tcp", "nvmet_tcp"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"kernel/drivers/md/md-mod.ko",
		"kernel/drivers/md/raid1.ko",
		"kernel/crypto/crct10dif_common.ko",
		"kernel/lib/crc-t10dif.ko",
		"kernel/lib/crc64-rocksoft.ko.xz",
		"kernel/block/t10-pi.ko",
		"kernel/drivers/nvme/host/nvme-core.ko",
		"kernel/drivers/nvme/host/nvme-fabrics.ko",
		"kernel/drivers/nvme/host/nvme-tcp.ko",
		"kernel/fs/configfs/configfs.ko",
		"kernel/drivers/nvme/target/nvmet.ko",
		"kernel/drivers/nvme/target/nvmet-tcp.ko",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("load order:\n got %v\nwant %v", got, want)
	}
}

func TestLoadOrderErrors(t *testing.T) {
	md, err := parseModulesDep(strings.NewReader(sampleModulesDep))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ wanted, errPart string }{
		{"nosuch", `module "nosuch" is not in modules.dep`},
		{"a", "module dependency cycle: a -> b -> a"},
	} {
		if _, err := md.loadOrder([]string{tc.wanted}); err == nil || !strings.Contains(err.Error(), tc.errPart) {
			t.Errorf("loadOrder(%q): want error containing %q, got %v", tc.wanted, tc.errPart, err)
		}
	}
	if _, err := parseModulesDep(strings.NewReader("no colon here\n")); err == nil {
		t.Error("want a parse error for a line without ':'")
	}
}
