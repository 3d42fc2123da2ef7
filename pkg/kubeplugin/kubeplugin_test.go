package kubeplugin

import (
	"context"
	"errors"
	"flag"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
)

func pv(name, driver, handle string) *corev1.PersistentVolume {
	return &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeSpec{PersistentVolumeSource: corev1.PersistentVolumeSource{
			CSI: &corev1.CSIPersistentVolumeSource{Driver: driver, VolumeHandle: handle}}}}
}

func pvc(ns, name, volume string) *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PersistentVolumeClaimSpec{VolumeName: volume}, Status: corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimPending}}
}

func TestVolumeIDOfAClaim(t *testing.T) {
	c := fake.NewClientset(
		pv("pvc-1", "csi.nvmirror.io", "vol-1"), pvc("app", "data-db-0", "pvc-1"),
		pv("pvc-2", "ebs.csi.aws.com", "vol-ebs"), pvc("app", "other", "pvc-2"),
		pvc("app", "pending", ""),
	).CoreV1()
	ctx := context.Background()
	if id, err := VolumeID(ctx, c, "app", "data-db-0"); err != nil || id != "vol-1" {
		t.Errorf("data-db-0: %q %v", id, err)
	}
	if id, err := VolumeID(ctx, c, "app", "pv/pvc-1"); err != nil || id != "vol-1" {
		t.Errorf("pv/pvc-1: %q %v", id, err)
	}
	for arg, want := range map[string]string{
		"other":          "driver ebs.csi.aws.com",
		"pending":        "not bound",
		"missing":        "no PersistentVolumeClaim missing in namespace app",
		"pv/pvc-missing": "PersistentVolume pvc-missing",
	} {
		if _, err := VolumeID(ctx, c, "app", arg); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error saying %q", arg, err, want)
		}
	}
	if _, err := VolumeID(ctx, c, "app", "other"); !errors.Is(err, ErrNotNvmirror) {
		t.Errorf("another driver's claim: %v", err)
	}
	if _, err := VolumeID(ctx, c, "default", "data-db-0"); err == nil {
		t.Error("a claim found in the wrong namespace")
	}
}

func secret(name, key, value string) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "nvmirror", Name: name}, Data: map[string][]byte{key: []byte(value)}}
}

func tlsSecret(name, cert, key string) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "nvmirror", Name: name}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: []byte(cert), corev1.TLSPrivateKeyKey: []byte(key)}}
}

func TestReadCredentials(t *testing.T) {
	ctx := context.Background()
	ca, admin := secret(CASecret, CAKey, "CA"), tlsSecret(AdminTLSSecret, "CRT", "KEY")
	c := fake.NewClientset(ca, admin, secret("my-token", TokenKey, "tok\n")).CoreV1()
	if cr, err := ReadCredentials(ctx, c, "nvmirror", ""); err != nil || string(cr.CA) != "CA" || string(cr.Cert) != "CRT" || string(cr.Key) != "KEY" || cr.Token != "" {
		t.Errorf("credentials without a token secret %+v %v", cr, err)
	}
	if cr, err := ReadCredentials(ctx, c, "nvmirror", "my-token"); err != nil || string(cr.Cert) != "CRT" || cr.Token != "tok" {
		t.Errorf("credentials with --token-secret %+v %v", cr, err)
	}
	for name, tc := range map[string]struct {
		c           *fake.Clientset
		tokenSecret string
	}{
		"nvmirror-admin-tls": {fake.NewClientset(ca), ""},
		"has no tls.key":     {fake.NewClientset(ca, secret(AdminTLSSecret, corev1.TLSCertKey, "CRT")), ""},
		"has no ca.crt":      {fake.NewClientset(secret(CASecret, "tls.crt", "PEM"), admin), ""},
		"my-token":           {fake.NewClientset(ca, admin), "my-token"},
		"token is empty":     {fake.NewClientset(ca, admin, secret("my-token", TokenKey, " \n")), "my-token"},
	} {
		if _, err := ReadCredentials(ctx, tc.c.CoreV1(), "nvmirror", tc.tokenSecret); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestSplitFlagsFindsOwnFlagsAnywhere(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.String("n", "", "")
	fs.String("o", "", "")
	fs.Bool("b", false, "")
	own, rest := SplitFlags(fs, []string{"events", "--volume", "data", "-n", "app", "-o=json", "--since", "1h", "-b", "-h", "--", "-n"})
	if want := []string{"-n", "app", "-o=json", "-b", "-h"}; !slices.Equal(own, want) {
		t.Errorf("own %q, want %q", own, want)
	}
	if want := []string{"events", "--volume", "data", "--since", "1h", "-n"}; !slices.Equal(rest, want) {
		t.Errorf("rest %q, want %q", rest, want)
	}
}

func TestServingPodIsAReadyOneWithTheNamedPort(t *testing.T) {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "nvmirror", Name: ServiceName},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "prov"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 9501}, {Name: ServicePort, Port: 9500, TargetPort: intstr.FromString("grpc")}}}}
	pod := func(name string, ready corev1.ConditionStatus) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "nvmirror", Name: name, Labels: map[string]string{"app": "prov"}},
			Spec:   corev1.PodSpec{Containers: []corev1.Container{{Name: "p", Ports: []corev1.ContainerPort{{Name: "grpc", ContainerPort: 19500}}}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: ready}}}}
	}
	c := fake.NewClientset(svc, pod("old", corev1.ConditionFalse), pod("new", corev1.ConditionTrue)).CoreV1()
	name, port, err := servingPod(context.Background(), c, "nvmirror")
	if err != nil || name != "new" || port != 19500 {
		t.Errorf("servingPod = %s %d %v, want new 19500", name, port, err)
	}
	c = fake.NewClientset(svc, pod("old", corev1.ConditionFalse)).CoreV1()
	if _, _, err := servingPod(context.Background(), c, "nvmirror"); err == nil || !strings.Contains(err.Error(), "no ready pod") {
		t.Errorf("no ready pod: %v", err)
	}
}
