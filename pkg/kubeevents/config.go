package kubeevents

import (
	"errors"
	"fmt"
	"os"
	"time"

	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Mode says when the provisioner records Kubernetes events (--kube-events).
type Mode string

const (
	// ModeAuto: when the provisioner runs in a pod (in-cluster
	// configuration) or is given a kubeconfig; a failure to set up the
	// client is logged and the provisioner runs without.
	ModeAuto Mode = "auto"
	// ModeOn: always; the provisioner does not start without a client.
	ModeOn Mode = "true"
	// ModeOff: never.
	ModeOff Mode = "false"
)

// ParseMode parses a --kube-events value.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeAuto, ModeOn, ModeOff:
		return m, nil
	}
	return "", fmt.Errorf("%q: want auto, true or false", s)
}

// requestTimeout bounds each call to the API server, so a hung connection
// holds the sink's worker (or client-go's writer) no longer than that.
const requestTimeout = 10 * time.Second

// ErrNoCluster is returned by NewClient in ModeAuto when there is neither
// a kubeconfig nor an in-cluster configuration.
var ErrNoCluster = errors.New("not running in a Kubernetes pod and no --kubeconfig")

// NewClient returns the Kubernetes client of mode: from kubeconfig when
// set, else the in-cluster configuration (the pod's service account). It
// returns (nil, nil) for ModeOff, and ErrNoCluster in ModeAuto outside a
// pod without kubeconfig.
func NewClient(mode Mode, kubeconfig string) (typedcorev1.CoreV1Interface, error) {
	if mode == ModeOff {
		return nil, nil
	}
	var cfg *rest.Config
	var err error
	switch {
	case kubeconfig != "":
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	case os.Getenv("KUBERNETES_SERVICE_HOST") == "" && mode == ModeAuto:
		return nil, ErrNoCluster
	default:
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, err
	}
	cfg.Timeout = requestTimeout
	cfg.UserAgent = "nvmirror-provisioner"
	return typedcorev1.NewForConfig(cfg)
}
