package driver

import (
	"flag"
	"strings"
	"testing"
)

func validNodeOptions() Options {
	o := DefaultOptions()
	o.Mode = NodeMode
	o.NodeName = "worker-1"
	o.ProvisionerAddress = "prov:9500"
	o.ProvisionerCertFile, o.ProvisionerKeyFile = "/etc/nvmirror/node-tls/tls.crt", "/etc/nvmirror/node-tls/tls.key"
	return o
}

func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Options)
		mention string // "" = valid
	}{
		{"defaults for a node", func(*Options) {}, ""},
		{"controller ignores node flags", func(o *Options) { o.Mode = ControllerMode; o.NodeName = ""; o.FastIOFailTmo = -1 }, ""},
		{"bad mode", func(o *Options) { o.Mode = "both" }, "mode"},
		{"tcp endpoint", func(o *Options) { o.Endpoint = "tcp://0.0.0.0:10000" }, "unix"},
		{"relative endpoint", func(o *Options) { o.Endpoint = "csi.sock" }, "--endpoint"},
		{"no provisioner", func(o *Options) { o.ProvisionerAddress = "" }, "--provisioner-address"},
		{"provisioner without port", func(o *Options) { o.ProvisionerAddress = "prov" }, "--provisioner-address"},
		{"no client certificate", func(o *Options) { o.ProvisionerCertFile = "" }, "--provisioner-cert-file"},
		{"controller needs one too", func(o *Options) { o.Mode = ControllerMode; o.ProvisionerKeyFile = "" }, "--provisioner-key-file"},
		{"no node name", func(o *Options) { o.NodeName = "" }, "--node-name"},
		{"relative state dir", func(o *Options) { o.StateDir = "state" }, "--state-dir"},
		{"fast io fail off", func(o *Options) { o.FastIOFailTmo = -1 }, "--fast-io-fail-tmo"},
		{"fast io fail at once", func(o *Options) { o.FastIOFailTmo = 0 }, ""},
		{"fast io fail above ctrl loss", func(o *Options) { o.CtrlLossTmo = 5; o.FastIOFailTmo = 10 }, "below --ctrl-loss-tmo"},
		{"ctrl loss forever", func(o *Options) { o.CtrlLossTmo = -1 }, ""},
		{"ctrl loss zero", func(o *Options) { o.CtrlLossTmo = 0 }, "--ctrl-loss-tmo"},
		{"bitmap chunk", func(o *Options) { o.BitmapChunkBytes = 5000 }, "--bitmap-chunk-bytes"},
		{"device wait", func(o *Options) { o.DeviceWaitTimeout = 0 }, "--device-wait-timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := validNodeOptions()
			tt.mutate(&o)
			err := o.Validate()
			if tt.mention == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.mention) {
				t.Fatalf("got %v, want an error mentioning %q", err, tt.mention)
			}
		})
	}
}

func TestOptionsFlags(t *testing.T) {
	o := DefaultOptions()
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	o.AddFlags(fs)
	err := fs.Parse([]string{"--mode=controller", "--endpoint=unix:///run/csi.sock", "--provisioner-address=p:1", "--ctrl-loss-tmo=600", "--device-wait-timeout=5s"})
	if err != nil {
		t.Fatal(err)
	}
	if o.Mode != ControllerMode || o.Endpoint != "unix:///run/csi.sock" || o.CtrlLossTmo != 600 || o.DeviceWaitTimeout.Seconds() != 5 {
		t.Fatalf("parsed %+v", o)
	}
	if err := fs.Parse([]string{"--mode=everything"}); err == nil {
		t.Fatal("bad mode accepted")
	}
}
