package driver

import "testing"

// TestMutableParametersAreStorageClassParameters: a mutable parameter must
// also be settable in the StorageClass, or a VolumeAttributesClass could set
// something a StorageClass cannot.
func TestMutableParametersAreStorageClassParameters(t *testing.T) {
	known := map[string]bool{ParamNumReplicas: true, ParamMaxReplicaDownTime: true, ParamSameRackAllowed: true,
		ParamProvisioningType: true, ParamFSType: true, ParamZones: true, ParamRacks: true, ParamStorageNodes: true}
	for k := range mutableParameters {
		if !known[k] {
			t.Errorf("mutable parameter %q is not a StorageClass parameter", k)
		}
	}
	if !mutableParameters[ParamMaxReplicaDownTime] {
		t.Error("maxReplicaDownTime must be mutable (healing is tuned through VolumeAttributesClasses)")
	}
}

func TestSizeConstants(t *testing.T) {
	if MinVolumeSizeBytes%sizeGranularity != 0 || DefaultVolumeSizeBytes%sizeGranularity != 0 {
		t.Error("sizes must be multiples of the 1 MiB granularity")
	}
	if DefaultFastIOFailTmo >= DefaultCtrlLossTmo {
		t.Error("fast_io_fail_tmo must expire before ctrl_loss_tmo")
	}
}
