package agent

import (
	"flag"
	"io"
	"os"
	"testing"

	"k8s.io/klog/v2"
)

// TestMain silences klog unless NVMIRROR_TEST_LOG is set: the agent logs
// every create and delete at level 0, which drowns benchmark output.
func TestMain(m *testing.M) {
	if os.Getenv("NVMIRROR_TEST_LOG") == "" {
		fs := flag.NewFlagSet("klog", flag.ContinueOnError)
		klog.InitFlags(fs)
		_ = fs.Set("logtostderr", "false")
		_ = fs.Set("alsologtostderr", "false")
		_ = fs.Set("stderrthreshold", "FATAL")
		klog.SetOutput(io.Discard)
	}
	os.Exit(m.Run())
}
