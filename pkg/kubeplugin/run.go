package kubeplugin

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/nvmirror/nvmirror/pkg/adminctl"
	api "github.com/nvmirror/nvmirror/pkg/provisionerapi"
	"github.com/nvmirror/nvmirror/pkg/rpcauth"
)

const usageHead = `usage: kubectl nvmirror COMMAND [ARGS] [flags]

nvmirrorctl's commands, with volumes named by their PersistentVolumeClaim in
the namespace of -n (or pv/NAME for a PersistentVolume), the provisioner
reached through the kubeconfig: a port-forward to its Service, with the CA
and the administrator's client certificate from its Secrets.

`

// Run is kubectl-nvmirror: args are the command line after the program's
// name. Its own flags may come anywhere (kubectl users put -n after the
// command); the rest are the command's.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("kubectl-nvmirror", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var namespace string
	fs.StringVar(&namespace, "namespace", "", "namespace of the PVCs named (default: the kubeconfig context's)")
	fs.StringVar(&namespace, "n", "", "short for --namespace")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
	kubeContext := fs.String("context", "", "kubeconfig context (default: the current one)")
	nvmirrorNS := fs.String("nvmirror-namespace", DefaultNamespace, "namespace nvmirror is installed in (its Service and Secrets)")
	address := fs.String("provisioner", "", "dial the provisioner at this host:port instead of port-forwarding to its Service")
	serverName := fs.String("server-name", ServiceName, "name expected in the provisioner's certificate")
	tokenSecret := fs.String("token-secret", "", "optional: Secret (in --nvmirror-namespace) whose \"token\" is the API bearer token, for a provisioner started with --token-file")
	out := adminctl.AddOutputFlags(fs)
	fs.Usage = func() {
		fmt.Fprint(stderr, usageHead+adminctl.CommandsUsage("PVC")+"\nflags (anywhere on the line):\n")
		fs.PrintDefaults()
	}
	own, rest := SplitFlags(fs, args)
	if err := fs.Parse(own); err != nil {
		return adminctl.Usagef("%v", err)
	}
	if err := out.Validate(); err != nil {
		return err
	}
	if len(rest) == 0 {
		fs.Usage()
		return adminctl.Usagef("a command is required")
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = *kubeconfig
	kc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: *kubeContext})
	cfg, err := kc.ClientConfig()
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	if namespace == "" {
		if namespace, _, err = kc.Namespace(); err != nil {
			return fmt.Errorf("kubeconfig: %w", err)
		}
	}
	client, err := typedcorev1.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, out.Timeout)
	defer cancel()
	creds, err := ReadCredentials(ctx, client, *nvmirrorNS, *tokenSecret)
	if err != nil {
		return err
	}
	addr := *address
	if addr == "" {
		local, stop, err := Forward(ctx, cfg, client, *nvmirrorNS, stderr)
		if err != nil {
			return err
		}
		defer stop()
		addr = local
	}
	conn, err := rpcauth.Dial(addr, rpcauth.ClientConfig{CA: creds.CA, Cert: creds.Cert, Key: creds.Key, Token: creds.Token, ServerName: *serverName})
	if err != nil {
		return err
	}
	defer conn.Close()
	return adminctl.Run(ctx, adminctl.Env{Client: api.NewProvisionerClient(conn), Args: rest, Stdout: stdout, Stderr: stderr, Flags: out, VolumeArg: "PVC", Program: "kubectl nvmirror",
		VolumeID: func(ctx context.Context, arg string) (string, error) { return VolumeID(ctx, client, namespace, arg) }})
}

// SplitFlags separates the flags fs defines, wherever they are on the
// line, from the rest (the command, its arguments and its own flags), in
// order. "--" ends the search; what follows is the command's. -h and
// -help are the program's (a command's own help: after "--").
func SplitFlags(fs *flag.FlagSet, args []string) (own, rest []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return own, append(rest, args[i+1:]...)
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && (name == "h" || name == "help") {
			own = append(own, a) // the plugin's help, not a command's
			continue
		}
		f := fs.Lookup(name)
		if !strings.HasPrefix(a, "-") || a == "-" || f == nil {
			rest = append(rest, a)
			continue
		}
		own = append(own, a)
		if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); hasValue || (ok && bf.IsBoolFlag()) {
			continue
		}
		if i+1 < len(args) {
			i++
			own = append(own, args[i])
		}
	}
	return own, rest
}
