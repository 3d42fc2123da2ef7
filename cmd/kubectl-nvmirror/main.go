// Command kubectl-nvmirror is nvmirrorctl as a kubectl plugin: the same
// commands (pkg/adminctl), with volumes named by PVC and the provisioner
// found through the kubeconfig (pkg/kubeplugin). Installed on PATH, it runs
// as `kubectl nvmirror`:
//
//	kubectl nvmirror volumes
//	kubectl nvmirror volume -n app data-db-0
//	kubectl nvmirror events --volume data-db-0 -n app --since 1h
package main

import (
	"context"
	"os"

	"github.com/nvmirror/nvmirror/pkg/adminctl"
	"github.com/nvmirror/nvmirror/pkg/kubeplugin"
)

func main() {
	os.Exit(adminctl.Exit("kubectl-nvmirror", kubeplugin.Run(context.Background(), os.Args[1:], os.Stdout, os.Stderr), os.Stderr))
}
