package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/pkg/provisionerclient"
	"github.com/nvmirror/nvmirror/pkg/rpcauth"
	"github.com/nvmirror/nvmirror/pkg/rpcauth/rpcauthtest"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

func parse(args ...string) (Options, bool, error) {
	fs := flag.NewFlagSet("nvmirror-provisioner", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return parseFlags(fs, args)
}

// requiredFlags are the flags without a default.
func requiredFlags() []string {
	return []string{"--tls-cert-file=/c", "--tls-key-file=/k", "--tls-client-ca-file=/ca", "--agent-cert-file=/ac", "--agent-key-file=/ak", "--storage-node=sn-1=10.0.0.1:9400"}
}

func TestFlagValidation(t *testing.T) {
	base := requiredFlags()
	if o, _, err := parse(base...); err != nil || len(o.StorageNodes) != 1 || o.Store != "bolt" {
		t.Fatalf("valid flags: %+v, %v", o, err)
	}
	o, _, err := parse(append(base, "--storage-node=sn-2=10.0.0.2:9400,sn-3=10.0.0.3:9400", "--store=etcd", "--etcd-endpoints=https://e1:2379,https://e2:2379")...)
	if err != nil || len(o.StorageNodes) != 3 || len(o.EtcdEndpoints) != 2 {
		t.Fatalf("repeated and comma-separated flags: %+v, %v", o, err)
	}
	if _, v, err := parse("--version"); !v || err != nil {
		t.Errorf("--version: %v, %v", v, err)
	}
	for _, tc := range []struct {
		args []string
		flag string
	}{
		{[]string{"--store=mysql"}, "--store"},
		{[]string{"--listen=nowhere"}, "--listen"},
		{[]string{"--syslog-address=s:514", "--syslog-transport=smtp"}, "--syslog-transport"},
		{[]string{"--storage-node=sn-9"}, "--storage-node"},
		{[]string{"--sweep-interval=0s"}, "--sweep-interval"},
		{[]string{"--sweep-interval=soon"}, "sweep-interval"}, // the flag package's own parse error
	} {
		_, _, err := parse(append(append([]string(nil), base...), tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.flag) {
			t.Errorf("%v: %v, want an error naming %s", tc.args, err, tc.flag)
		}
	}
	// Every missing required flag is reported at once.
	_, _, err = parse()
	for _, f := range []string{"--tls-cert-file", "--tls-client-ca-file", "--agent-cert-file", "--agent-key-file", "--storage-node"} {
		if err == nil || !strings.Contains(err.Error(), f) {
			t.Errorf("no flags: %v, want %s named", err, f)
		}
	}
}

// TestRunServesAndStops starts the whole process in-memory (bolt store, one
// storage node that is not there), reaches it through the client the CSI
// driver uses, and stops it by cancelling the context (SIGTERM).
func TestRunServesAndStops(t *testing.T) {
	dir := t.TempDir()
	tlsFlags, client := testCredentials(t, dir)
	o, _, err := parse(append(tlsFlags, "--listen=127.0.0.1:0", "--storage-node=sn-1=127.0.0.1:1", "--bolt-path="+filepath.Join(dir, "db", "registry.db"),
		"--syslog-address=127.0.0.1:1", "--syslog-queue-dir="+filepath.Join(dir, "queue"), "--agent-timeout=1s")...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrc := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- run(ctx, o, func(a string) { addrc <- a }) }()
	var addr string
	select {
	case addr = <-addrc:
	case err := <-done:
		t.Fatalf("run ended before serving: %v", err)
	}
	conn, err := rpcauth.Dial(addr, client)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := provisionerclient.New(conn)
	cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
	defer ccancel()
	// Leadership (bolt: at once) is reported asynchronously: wait for it
	// through the client, bounded by the context.
	for {
		err := c.Ping(cctx)
		if err == nil {
			break
		}
		if !errors.Is(err, volume.ErrUnavailable) || cctx.Err() != nil {
			t.Fatalf("Ping: %v", err)
		}
		select {
		case <-cctx.Done():
			t.Fatalf("Ping: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	nodes, err := c.ListStorageNodes(cctx)
	if err != nil || len(nodes) != 1 || nodes[0].GetName() != "sn-1" || nodes[0].GetReachable() {
		t.Fatalf("ListStorageNodes = %v, %v", nodes, err)
	}
	_, err = c.CreateVolume(cctx, volume.CreateVolumeRequest{Name: "pvc-1", SizeBytes: 1 << 30, Parameters: map[string]string{"numReplicas": "1"}})
	if !errors.Is(err, volume.ErrResourceExhausted) || !strings.Contains(err.Error(), "sn-1") {
		t.Errorf("CreateVolume with the only node away: %v, want ResourceExhausted naming sn-1", err)
	}
	if err := c.ReportAudit(cctx, volume.AuditRecord{Operation: "CreateVolume", Outcome: volume.AuditSuccess}); err != nil {
		t.Errorf("ReportAudit (queued for syslog): %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not stop after cancel")
	}
}

// testCredentials writes a CA, the provisioner's server and agent client
// certificates and a client certificate for the tests' calls (controller
// and admin: the lifecycle and nvmirrorctl's calls) into dir, and returns
// the provisioner's TLS flags and the client's configuration.
func testCredentials(t *testing.T, dir string) ([]string, rpcauth.ClientConfig) {
	t.Helper()
	ca := rpcauthtest.NewCA(t)
	caFile := ca.WriteCA(t, dir)
	crt, key := ca.Server(t, "nvmirror-provisioner").WriteNamed(t, dir, "server")
	agentCrt, agentKey := ca.Client(t, "nvmirror-provisioner", "provisioner").WriteNamed(t, dir, "agent-client")
	clientCrt, clientKey := ca.Client(t, "test-client", "controller", "admin").WriteNamed(t, dir, "client")
	return []string{"--tls-cert-file=" + crt, "--tls-key-file=" + key, "--tls-client-ca-file=" + caFile,
			"--agent-ca-file=" + caFile, "--agent-cert-file=" + agentCrt, "--agent-key-file=" + agentKey},
		rpcauth.ClientConfig{CAFile: caFile, ServerName: "localhost", CertFile: clientCrt, KeyFile: clientKey}
}

// TestRunNamesTheBadCertificateFlag: a certificate file that does not load
// stops the process with an error naming the flags and the file.
func TestRunNamesTheBadCertificateFlag(t *testing.T) {
	dir := t.TempDir()
	tlsFlags, _ := testCredentials(t, dir)
	for _, tc := range []struct{ flag, want string }{
		{"--tls-client-ca-file=" + filepath.Join(dir, "missing-ca.crt"), "--tls-client-ca-file"},
		{"--agent-cert-file=" + filepath.Join(dir, "missing.crt"), "--agent-cert-file"},
	} {
		o, _, err := parse(append(append([]string{}, tlsFlags...), "--listen=127.0.0.1:0", "--storage-node=sn-1=127.0.0.1:1",
			"--bolt-path="+filepath.Join(t.TempDir(), "registry.db"), tc.flag)...)
		if err != nil {
			t.Fatal(err)
		}
		err = run(context.Background(), o, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "missing") {
			t.Errorf("%s: %v, want an error naming %s and the file", tc.flag, err, tc.want)
		}
	}
}
