package kubeplugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
)

// Forward opens a port-forward from a local port on 127.0.0.1 to the gRPC
// port of a ready pod behind the provisioner's Service, as `kubectl
// port-forward svc/nvmirror-provisioner` does. It returns the local address
// and a function closing the forward.
func Forward(ctx context.Context, cfg *rest.Config, c typedcorev1.CoreV1Interface, namespace string, errOut io.Writer) (string, func(), error) {
	pod, port, err := servingPod(ctx, c, namespace)
	if err != nil {
		return "", nil, err
	}
	transport, upgrader, err := spdy.RoundTripperFor(cfg)
	if err != nil {
		return "", nil, err
	}
	url := c.RESTClient().Post().Resource("pods").Namespace(namespace).Name(pod).SubResource("portforward").URL()
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, url)
	stop, ready := make(chan struct{}), make(chan struct{})
	pf, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{fmt.Sprintf("0:%d", port)}, stop, ready, io.Discard, errOut)
	if err != nil {
		return "", nil, err
	}
	failed := make(chan error, 1)
	go func() { failed <- pf.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-failed:
		return "", nil, fmt.Errorf("port-forward to pod %s/%s: %w", namespace, pod, err)
	case <-ctx.Done():
		close(stop)
		return "", nil, ctx.Err()
	}
	ports, err := pf.GetPorts()
	if err != nil || len(ports) == 0 {
		close(stop)
		return "", nil, fmt.Errorf("port-forward to pod %s/%s: no local port (%v)", namespace, pod, err)
	}
	return fmt.Sprintf("127.0.0.1:%d", ports[0].Local), func() { close(stop) }, nil
}

// servingPod finds a running, ready pod of the provisioner's Service and
// the container port its gRPC port targets.
func servingPod(ctx context.Context, c typedcorev1.CoreV1Interface, namespace string) (string, int32, error) {
	svc, err := c.Services(namespace).Get(ctx, ServiceName, metav1.GetOptions{})
	if err != nil {
		return "", 0, fmt.Errorf("service %s/%s (nvmirror's namespace is --nvmirror-namespace): %w", namespace, ServiceName, err)
	}
	var target *intstr.IntOrString
	for _, p := range svc.Spec.Ports {
		if p.Name == ServicePort {
			t := p.TargetPort
			if t.Type == intstr.Int && t.IntVal == 0 {
				t = intstr.FromInt32(p.Port)
			}
			target = &t
		}
	}
	if target == nil {
		return "", 0, fmt.Errorf("service %s/%s has no port %q", namespace, ServiceName, ServicePort)
	}
	if len(svc.Spec.Selector) == 0 {
		return "", 0, fmt.Errorf("service %s/%s selects no pods", namespace, ServiceName)
	}
	pods, err := c.Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: labels.SelectorFromSet(svc.Spec.Selector).String()})
	if err != nil {
		return "", 0, err
	}
	var states []string
	for _, p := range pods.Items {
		if !podReady(p) {
			states = append(states, p.Name+" "+string(p.Status.Phase))
			continue
		}
		if target.Type == intstr.Int {
			return p.Name, target.IntVal, nil
		}
		for _, ct := range p.Spec.Containers {
			for _, cp := range ct.Ports {
				if cp.Name == target.StrVal {
					return p.Name, cp.ContainerPort, nil
				}
			}
		}
		states = append(states, p.Name+" has no port "+target.StrVal)
	}
	if len(states) == 0 {
		states = []string{"none"}
	}
	return "", 0, errors.New("no ready pod behind service " + namespace + "/" + ServiceName + ": " + strings.Join(states, ", "))
}

func podReady(p corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
