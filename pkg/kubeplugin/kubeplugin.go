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

	corev1 "k8s.io/api/core/v1"
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
	// CASecret holds CAKey, the CA every nvmirror certificate is issued
	// by (the provisioner's among them).
	CASecret = "nvmirror-ca"
	CAKey    = "ca.crt"
	// AdminTLSSecret is the administrator's client certificate (Subject
	// O=admin), a kubernetes.io/tls Secret: the provisioner identifies its
	// callers by their certificates.
	AdminTLSSecret = "nvmirror-admin-tls"
	// TokenKey is the key of the bearer token in the Secret
	// --token-secret names (deploy/ uses no token).
	TokenKey = "token"
)

// PVPrefix marks a volume argument naming a PersistentVolume rather than a
// claim: for a volume whose claim is gone (a Released PV).
const PVPrefix = "pv/"

// Credentials are what the provisioner's API asks of a client: the CA
// its certificate is verified with, the client certificate and key (PEM),
// and the optional bearer token.
type Credentials struct {
	CA, Cert, Key []byte
	Token         string
}

// ReadCredentials reads the CA and the admin's certificate from their
// Secrets and, when tokenSecret is not empty, the bearer token from that
// Secret.
func ReadCredentials(ctx context.Context, c typedcorev1.CoreV1Interface, namespace, tokenSecret string) (Credentials, error) {
	var cr Credentials
	var err error
	if cr.CA, err = secretValue(ctx, c, namespace, CASecret, CAKey); err != nil {
		return Credentials{}, err
	}
	if cr.Cert, err = secretValue(ctx, c, namespace, AdminTLSSecret, corev1.TLSCertKey); err != nil {
		return Credentials{}, err
	}
	if cr.Key, err = secretValue(ctx, c, namespace, AdminTLSSecret, corev1.TLSPrivateKeyKey); err != nil {
		return Credentials{}, err
	}
	if tokenSecret == "" {
		return cr, nil
	}
	token, err := secretValue(ctx, c, namespace, tokenSecret, TokenKey)
	if err != nil {
		return Credentials{}, err
	}
	if cr.Token = strings.TrimSpace(string(token)); cr.Token == "" {
		return Credentials{}, fmt.Errorf("secret %s/%s (--token-secret): %s is empty", namespace, tokenSecret, TokenKey)
	}
	return cr, nil
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
