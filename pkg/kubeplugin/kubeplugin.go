// Package kubeplugin is what kubectl-nvmirror adds to the admin commands
// (pkg/adminctl): it reaches the provisioner through the kubeconfig (the
// Service and Secrets deploy/base creates, a port-forward to the Service's
// pod) and names volumes by their PersistentVolumeClaim.
package kubeplugin

import (
	"context"
	"errors"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/nvmirror/nvmirror/pkg/storageclass"
)

// Names of deploy/base's objects the plugin reads (in nvmirror's
// namespace, --nvmirror-namespace).
const (
	DefaultNamespace = "nvmirror"
	// ServiceName is the provisioner's Service, and the name its
	// certificate is issued for.
	ServiceName = "nvmirror-provisioner"
	// ServicePort is the Service's port of the gRPC API.
	ServicePort = "grpc"
	// CASecret holds CAKey, the CA of the provisioner's certificate.
	CASecret = "nvmirror-ca"
	CAKey    = "ca.crt"
	// TokenSecret holds TokenKey, the API bearer token.
	TokenSecret = "nvmirror-api-token"
	TokenKey    = "token"
)

// PVPrefix marks a volume argument naming a PersistentVolume rather than a
// claim: for a volume whose claim is gone (a Released PV).
const PVPrefix = "pv/"

// Credentials are what the provisioner's API asks of a client.
type Credentials struct {
	CA    []byte
	Token string
}

// ReadCredentials reads the CA and the token from their Secrets.
func ReadCredentials(ctx context.Context, c typedcorev1.CoreV1Interface, namespace string) (Credentials, error) {
	ca, err := secretValue(ctx, c, namespace, CASecret, CAKey)
	if err != nil {
		return Credentials{}, err
	}
	token, err := secretValue(ctx, c, namespace, TokenSecret, TokenKey)
	if err != nil {
		return Credentials{}, err
	}
	t := strings.TrimSpace(string(token))
	if t == "" {
		return Credentials{}, fmt.Errorf("secret %s/%s: %s is empty", namespace, TokenSecret, TokenKey)
	}
	return Credentials{CA: ca, Token: t}, nil
}

func secretValue(ctx context.Context, c typedcorev1.CoreV1Interface, namespace, name, key string) ([]byte, error) {
	s, err := c.Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("secret %s/%s (nvmirror's namespace is --nvmirror-namespace): %w", namespace, name, err)
	}
	v, ok := s.Data[key]
	if !ok {
		return nil, fmt.Errorf("secret %s/%s has no %s", namespace, name, key)
	}
	return v, nil
}

// ErrNotNvmirror is returned for a claim or PV that is not an nvmirror
// volume's.
var ErrNotNvmirror = errors.New("not an nvmirror volume")

// VolumeID returns the nvmirror volume ID of the claim named arg in
// namespace (or of the PV, when arg is pv/NAME): the volume handle of the
// PV the claim is bound to, checked to be this driver's.
func VolumeID(ctx context.Context, c typedcorev1.CoreV1Interface, namespace, arg string) (string, error) {
	pvName, ok := strings.CutPrefix(arg, PVPrefix)
	if !ok {
		pvc, err := c.PersistentVolumeClaims(namespace).Get(ctx, arg, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return "", fmt.Errorf("no PersistentVolumeClaim %s in namespace %s (-n)", arg, namespace)
		}
		if err != nil {
			return "", fmt.Errorf("PersistentVolumeClaim %s/%s: %w", namespace, arg, err)
		}
		if pvName = pvc.Spec.VolumeName; pvName == "" {
			return "", fmt.Errorf("PersistentVolumeClaim %s/%s is not bound to a volume yet (%s)", namespace, arg, pvc.Status.Phase)
		}
	}
	pv, err := c.PersistentVolumes().Get(ctx, pvName, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("PersistentVolume %s: %w", pvName, err)
	}
	if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != storageclass.DriverName {
		driver := "not CSI"
		if pv.Spec.CSI != nil {
			driver = "driver " + pv.Spec.CSI.Driver
		}
		return "", fmt.Errorf("PersistentVolume %s (%s): %w", pvName, driver, ErrNotNvmirror)
	}
	return pv.Spec.CSI.VolumeHandle, nil
}
