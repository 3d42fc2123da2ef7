package etcdtest

import (
	"os"
	"testing"
)

func TestStartStop(t *testing.T) {
	bin := Binary()
	if bin == "" {
		if os.Getenv(RequireEnv) == "1" {
			t.Fatal(RequireEnv + "=1 but etcd is not installed")
		}
		t.Skip(ErrNoEtcd)
	}
	s, err := Start(bin)
	if err != nil {
		t.Fatal(err)
	}
	dir := s.dir
	s.Stop()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("data dir %s left behind: %v", dir, err)
	}
	if v := Version(bin); v == "" {
		t.Error("no version")
	}
}
