package driver

import "testing"

func TestSizeConstants(t *testing.T) {
	if MinVolumeSizeBytes%sizeGranularity != 0 || DefaultVolumeSizeBytes%sizeGranularity != 0 {
		t.Error("sizes must be multiples of the 1 MiB granularity")
	}
	if DefaultFastIOFailTmo >= DefaultCtrlLossTmo {
		t.Error("fast_io_fail_tmo must expire before ctrl_loss_tmo")
	}
}
