package k8s

import (
	"os"
	"testing"

	"github.com/nvmirror/nvmirror/test/vm"
)

// TestMain removes the binaries built for the VMs the tests boot (test/vm
// builds each once per process) when the tests are done.
func TestMain(m *testing.M) { os.Exit(vm.RunTests(m)) }
