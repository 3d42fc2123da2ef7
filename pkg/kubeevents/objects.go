package kubeevents

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
)

// ErrNoClaim is returned when a volume has no Kubernetes objects to
// record its events on: it was created without the claim metadata (not by
// the external-provisioner, or without --extra-create-metadata), the
// registry no longer has it, or its PV is gone or belongs to another
// volume.
var ErrNoClaim = errors.New("volume has no PersistentVolume")

// Volumes reads a volume's registry record, where the claim metadata the
// external-provisioner passed at creation is kept (provisioner.Service
// and store.Store both are one). A volume the registry does not know
// (deleted meanwhile) is store.ErrNotFound.
type Volumes interface {
	GetVolume(ctx context.Context, id string) (*store.Volume, error)
}

// objects are what a volume's events are recorded on.
type objects struct {
	PV  *corev1.ObjectReference
	PVC *corev1.ObjectReference // nil when the PV is not bound
}

// resolve finds the volume's PV, by the name the external-provisioner
// passed, and checks that it really is this volume's (driver and volume
// handle) before anything is recorded on it or on its claim: a PV of that
// name made later for another volume must not get this one's events. The
// claim is the PV's claimRef, with its UID, which `kubectl describe pvc`
// selects events by.
func resolve(ctx context.Context, client typedcorev1.CoreV1Interface, driver, volumeID string, md storageclass.Metadata) (objects, error) {
	if md.PVName == "" {
		return objects{}, ErrNoClaim
	}
	pv, err := client.PersistentVolumes().Get(ctx, md.PVName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return objects{}, fmt.Errorf("%w: PersistentVolume %s not found", ErrNoClaim, md.PVName)
	}
	if err != nil {
		return objects{}, fmt.Errorf("get PersistentVolume %s: %w", md.PVName, err)
	}
	if csi := pv.Spec.CSI; csi == nil || csi.Driver != driver || csi.VolumeHandle != volumeID {
		return objects{}, fmt.Errorf("%w: PersistentVolume %s is not volume %s of %s", ErrNoClaim, md.PVName, volumeID, driver)
	}
	o := objects{PV: &corev1.ObjectReference{APIVersion: "v1", Kind: "PersistentVolume", Name: pv.Name, UID: pv.UID}}
	if c := pv.Spec.ClaimRef; c != nil && c.Name != "" && c.UID != "" {
		o.PVC = &corev1.ObjectReference{APIVersion: "v1", Kind: "PersistentVolumeClaim", Namespace: c.Namespace, Name: c.Name, UID: c.UID}
	}
	return o, nil
}
