package k8s

import (
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestTokenKubeconfig(t *testing.T) {
	type cluster struct {
		Server        string `yaml:"server"`
		CA            string `yaml:"certificate-authority"`
		TLSServerName string `yaml:"tls-server-name"`
	}
	var kc struct {
		Clusters []struct {
			Name    string  `yaml:"name"`
			Cluster cluster `yaml:"cluster"`
		} `yaml:"clusters"`
		Users []struct {
			User struct {
				Token string `yaml:"token"`
			} `yaml:"user"`
		} `yaml:"users"`
		Contexts []struct {
			Name    string            `yaml:"name"`
			Context map[string]string `yaml:"context"`
		} `yaml:"contexts"`
		CurrentContext string `yaml:"current-context"`
	}
	for _, c := range []cluster{
		{Server: "https://127.0.0.1:6443", CA: "/tmp/ca.crt"},
		{Server: "https://10.0.2.100:6443", CA: "/etc/kubernetes/ca.crt", TLSServerName: "kubernetes.default.svc"},
	} {
		text := tokenKubeconfig(c.Server, c.CA, c.TLSServerName, "s3cret")
		if err := yaml.Unmarshal([]byte(text), &kc); err != nil {
			t.Fatalf("%v\n%s", err, text)
		}
		if len(kc.Clusters) != 1 || kc.Clusters[0].Cluster != c || len(kc.Users) != 1 || kc.Users[0].User.Token != "s3cret" {
			t.Errorf("kubeconfig for %+v reads as %+v\n%s", c, kc, text)
		}
		if len(kc.Contexts) != 1 || kc.CurrentContext != kc.Contexts[0].Name || kc.Contexts[0].Context["cluster"] != kc.Clusters[0].Name {
			t.Errorf("kubeconfig's context %+v, current %q", kc.Contexts, kc.CurrentContext)
		}
	}
}
