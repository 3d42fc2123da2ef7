# nvmirror build and test entry points. `make test` is what CI runs; it
# installs what it needs on a fresh Debian machine (apt packages as root, Go
# modules, a Debian kernel unpacked into .cache/vm) and runs everything,
# including the real-kernel tests in a qemu VM.

# bash for pipefail: `make demo` filters go test's output and must keep its status.
SHELL       := /bin/bash
GO          ?= go
# Computed once and exported, so that every recipe and sub-make of one run stamps and finds the
# same images even if the tree changes meanwhile (a recursive ?= re-ran git describe at each use).
ifeq ($(origin VERSION),undefined)
VERSION     := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
endif
export VERSION
LDFLAGS     := -s -w -X github.com/nvmirror/nvmirror/pkg/version.Version=$(VERSION)
BIN         := bin
# Packages whose tests run on the host; test/kernel boots the VM and runs in
# its own target, and so does test/k8s (a control plane and a VM).
HOST_PKGS    = $(shell $(GO) list ./... | grep -v -e /test/kernel -e /test/k8s)
# Where `make bench-datapath` writes its table (between the markers) and,
# beside it, its chart (performance.svg).
BENCH_DOC   ?= $(CURDIR)/docs/performance.md
FUZZTIME    ?= 10s
KERNEL_PKG  ?=
# The kernel for the NVMe in-band authentication tests: Debian 6.1 is built
# without CONFIG_NVME_AUTH/CONFIG_NVME_TARGET_AUTH; bookworm-backports' 6.12
# has both. Pinned so a run is reproducible; unpacked beside the default one.
AUTH_KERNEL_PKG   ?= linux-image-6.12.95+deb12-amd64
AUTH_KERNEL_SUITE ?= bookworm-backports

.PHONY: all build deps vm-deps vm-kernel vm-kernel-auth vet unit host-checks race test-kernel test sanity demo bench bench-datapath bench-drain bench-snapshots fuzz clean
.PHONY: proto
.PHONY: image-check image-binaries
.PHONY: k8s-tools test-k8s test-k8s-control test-k8s-node test-k8s-e2e helm-render images

all: build

# GOBUILD builds static binaries with the version stamped in.
GOBUILD     = CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)'
# IMAGE_CMDS are the programs the container image holds: every command but
# kubectl-nvmirror, a kubectl plugin that runs on an administrator's
# workstation, never in a container (38 MiB the nodes need not load).
IMAGE_CMDS  := ./cmd/nvmirror-csi ./cmd/nvmirror-provisioner ./cmd/nvmirror-target ./cmd/nvmirrorctl

## build: static binaries of every command into bin/
build:
	$(GOBUILD) -o $(BIN)/ ./cmd/...

## image-binaries: the programs of the container image (IMAGE_CMDS) into $(BIN)/, as the
## Dockerfile builds them
image-binaries:
	$(GOBUILD) -o $(BIN)/ $(IMAGE_CMDS)

## deps: Debian packages (as root, when missing) and Go modules
deps:
	hack/install-deps.sh
	$(GO) mod download

## vm-kernel: unpack a Debian kernel for the test VM into .cache/vm (KERNEL_PKG=linux-image-... to pin)
vm-kernel:
	hack/vm-kernel.sh $(KERNEL_PKG)

## vm-kernel-auth: unpack the 6.12 backports kernel (NVMe DH-HMAC-CHAP) into .cache/vm/kernel-auth
vm-kernel-auth:
	hack/vm-kernel.sh $(AUTH_KERNEL_PKG) $(AUTH_KERNEL_SUITE) kernel-auth

vm-deps: deps vm-kernel vm-kernel-auth

## vet: go vet for host and guest (vmguest) code, and gofmt
vet:
	$(GO) vet ./...
	$(GO) vet -tags vmguest ./test/...
	$(GO) -C hack/helm-render vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

## image-check: the container image without a Docker engine (also part of `make unit`):
## BuildKit's lint rules on the Dockerfile (hack/dockerfile-lint), the binaries built from
## the build context by the Dockerfile's own make image-binaries as static ELF files, and the runtime
## stage's packages for every program the code runs; and, once `make images` has built them,
## the images' tars (skipped here when there are none; `make unit` requires them)
image-check:
	$(GO) test -count=1 ./test/image/

## unit: host tests with the race detector: unit tests, fuzz seed corpora, in-process
## csi-sanity, the integration tests against real etcd and rsyslog, deploy/ rendered by
## the kubectl k8s-tools builds, and the images `make images` built, read from their tars
## by test/image (all of which fail, not skip, here when missing)
unit: k8s-tools helm-render images
	NVMIRROR_REQUIRE_ETCD=1 NVMIRROR_REQUIRE_RSYSLOG=1 NVMIRROR_REQUIRE_KUBECTL=1 NVMIRROR_REQUIRE_IMAGES=1 \
	  NVMIRROR_IMAGES_DIR="$$(VERSION='$(VERSION)' hack/images.sh --print-dir)" \
	  $(GO) test -race -count=1 $(HOST_PKGS)

## test-kernel: the real-kernel tests in the VM (fails, never skips, if the VM cannot run)
test-kernel:
	NVMIRROR_REQUIRE_VM=1 NVMIRROR_VM_LOGDIR=$(CURDIR)/_output/vm $(GO) test -v -count=1 -timeout 60m ./test/kernel/

## k8s-tools: kube-apiserver, kube-controller-manager, kubectl, the CSI sidecars and snapshot-controller, and for a
## real node kubelet, kube-scheduler, agnhost, e2e.test and containerd v2, built from the pinned helper modules in
## hack/k8s/ into ~/.cache/nvmirror/k8s, shared by every clone (NVMIRROR_K8S_CACHE overrides; a no-op once built)
k8s-tools:
	hack/k8s-tools.sh >/dev/null

## images: every container image a test Kubernetes node runs, built without a Docker engine
## (buildah: overlay storage where the kernel mounts it, else vfs; chroot isolation) as
## docker-archive tars for `ctr -n k8s.io images import`: ours from the Dockerfile on local
## debian and golang bases, the CSI sidecars and snapshot-controller from the k8s-tools builds,
## the test stand-ins, agnhost and busybox
## (hack/images/images.txt). Cached per image in ~/.cache/nvmirror/images (NVMIRROR_IMAGES_CACHE
## overrides; a source change rebuilds only our image); `hack/images.sh --print-dir` names the
## directory (docs/images.md). Needs root, buildah and mmdebstrap (make deps)
images: k8s-tools
	VERSION='$(VERSION)' hack/images.sh >/dev/null

## helm-render: compile hack/helm-render (the Helm library, a module of its own) ahead of
## the tests that render the chart with it (test/deploy, test/k8s): its first build takes minutes,
## which would otherwise count against their test timeout
helm-render:
	$(GO) -C hack/helm-render build -o /dev/null .

## test-k8s: the Kubernetes e2e (test/k8s): deploy/ against a real API server, and a PVC's
## whole life through the real sidecars, nvmirror and storage nodes in a VM; then a real kubelet
## node (containerd, runc, CNI in a VM) running nvmirror from our images and deploy/, pods
## through a storage node's loss, and the focused set of Kubernetes' external storage e2e suite
## (fails, never skips, if a tool is missing)
test-k8s: test-k8s-control test-k8s-node

# What the test/k8s targets need first. `make test` has them done before its sub-makes and
# empties the list there: done again, they cost the kubelet node's start about 20 s (the
# images' and helm-render's checks link and hash even when nothing changed).
K8S_DEPS ?= vm-deps k8s-tools helm-render images

# What every test/k8s target runs go test with; the VMs' console and output logs are kept in
# _output/vm (a kubelet node's whole log, where a failure prints its last 200 lines).
K8S_TEST = NVMIRROR_REQUIRE_K8S=1 NVMIRROR_REQUIRE_VM=1 NVMIRROR_REQUIRE_SNAPSHOTS=1 NVMIRROR_K8S_LOGDIR=$(CURDIR)/_output/k8s \
	  NVMIRROR_VM_LOGDIR=$(CURDIR)/_output/vm \
	  NVMIRROR_E2E_SUITE=focused NVMIRROR_IMAGES_DIR="$$(VERSION='$(VERSION)' hack/images.sh --print-dir)" \
	  $(GO) test -v -count=1

## test-k8s-control: test-k8s but the kubelet node: deploy/ against the API server, the PVC's
## life with the agents in a service VM, and test/k8s's unit tests
test-k8s-control: $(K8S_DEPS)
	$(K8S_TEST) -timeout 30m -skip '^TestKubeletNode$$' ./test/k8s/

## test-k8s-node: test-k8s's kubelet node (TestKubeletNode) with the focused e2e set
test-k8s-node: $(K8S_DEPS)
	$(K8S_TEST) -timeout 45m -run '^TestKubeletNode$$' ./test/k8s/

## test-k8s-e2e: the kubelet node with every spec of Kubernetes' external storage e2e suite that
## applies to nvmirror (test/k8s E2EFullFocus/E2EFullSkip; hours under TCG), its JUnit report in
## _output/k8s/TestKubeletNode/e2e-suite (volume-modify-stress and the performance suites, run
## with the StorageClass in Immediate binding mode, in its immediate-binding/); E2E_SUITES (a regular expression of suite names, e.g.
## E2E_SUITES='subPath|multiVolume') runs only those suites' specs of the set
E2E_SUITES ?=
test-k8s-e2e: vm-deps k8s-tools images
	NVMIRROR_REQUIRE_K8S=1 NVMIRROR_REQUIRE_VM=1 NVMIRROR_K8S_LOGDIR=$(CURDIR)/_output/k8s NVMIRROR_VM_LOGDIR=$(CURDIR)/_output/vm \
	  NVMIRROR_E2E_SUITE=full \
	  NVMIRROR_E2E_SUITES='$(E2E_SUITES)' \
	  NVMIRROR_IMAGES_DIR="$$(VERSION='$(VERSION)' hack/images.sh --print-dir)" \
	  $(GO) test -v -count=1 -timeout 6h -run '^TestKubeletNode$$' ./test/k8s/

## test: everything CI runs. The host's checks (vet, unit, test-k8s-control) run one after
## another beside the real-kernel tests (make -j2, each target's output printed whole when it
## ends): much of the guest's time is waiting on its own timers (a maxReplicaDownTime, heal
## intervals, NVMe reconnects), which they fill. test-k8s-node runs alone after them: its
## kubelet node keeps both CPUs busy (beside test-kernel, the two emulated VMs slowed each
## other so much that make test took 39 minutes instead of 35: docs/testing.md).
test: vm-deps k8s-tools helm-render images
	$(MAKE) --no-print-directory -j2 --output-sync=target test-kernel host-checks K8S_DEPS=
	$(MAKE) --no-print-directory test-k8s-node K8S_DEPS=

## host-checks: vet, unit, then test-k8s-control (what `make test` runs beside test-kernel)
host-checks: vet unit test-k8s-control

## sanity: the real csi-sanity binary against the real stack in the VM (mount and block)
sanity: vm-deps
	NVMIRROR_REQUIRE_VM=1 NVMIRROR_VM_RUN=TestCSISanity $(GO) test -v -count=1 -timeout 20m ./test/kernel/

## demo: the whole product on one machine, narrated: 4 storage nodes, the provisioner with a
## syslog receiver, the node plugin; a 3-replica 1 GiB volume through an outage and a loss
demo: vm-deps
	@set -o pipefail; NVMIRROR_REQUIRE_VM=1 NVMIRROR_VM_RUN='^TestDemo$$' NVMIRROR_DEMO_PACE=real \
	  $(GO) test -v -count=1 -timeout 30m -run TestRealKernel ./test/kernel/ 2>&1 \
	  | grep --line-buffered -v -E '^(=== |--- |PASS$$|ok  |    )' \
	  || { echo "demo FAILED: rerun with 'NVMIRROR_VM_RUN=TestDemo go test -v -run TestRealKernel ./test/kernel/' for details"; exit 1; }

## bench: every benchmark: on the host (placement, stores, volume create/delete per backend,
## agent replica create/delete; the healer's cycle, NVMe poll and steady-state CPU at
## 10/100/1000 arrays: before its caches, with them, and with the kernel log trigger and the
## incremental cycle, about 13 minutes), then bench-drain in a VM (about half an hour) and
## bench-snapshots in another
bench:
	$(GO) test -run '^$$' -bench . -benchmem $(HOST_PKGS)
	$(MAKE) bench-drain
	$(MAKE) bench-snapshots

## bench-drain: time and bytes moved to drain a storage node holding 10 thin 1 GiB volumes
## with 64 MiB written each, through the real stack in one VM boot with a 20 GiB scratch disk
## (a sparse file in the test's temp dir); prints one line of figures (docs/maintenance.md)
bench-drain: vm-deps
	NVMIRROR_REQUIRE_VM=1 NVMIRROR_BENCH_MODE=full NVMIRROR_VM_LOGDIR=$(CURDIR)/_output/vm \
	  $(GO) test -v -count=1 -timeout 50m -run '^TestDrainBenchmark$$' ./test/kernel/

## bench-datapath: the data path against its peers in one VM boot: one NVMe/TCP namespace,
## nvmirror with 2 and 3 replicas, DRBD with 2 nodes; fio jobs and recovery, rewriting the
## table of docs/performance.md and docs/performance.svg (about 10 minutes under TCG;
## `make test` runs only its smoke variant, in test-kernel)
bench-datapath: vm-deps
	NVMIRROR_REQUIRE_VM=1 NVMIRROR_BENCH_MODE=full NVMIRROR_BENCH_DOC=$(BENCH_DOC) \
	  NVMIRROR_VM_LOGDIR=$(CURDIR)/_output/vm \
	  $(GO) test -v -count=1 -timeout 45m -run '^TestDatapathBenchmark$$' ./test/kernel/

## bench-snapshots: snapshot, restore and stage times of 3-replica 1 GiB and 16 GiB volumes with 64 MiB
## written, on an XFS pool with reflinks and on an ext4 one, through the real stack in one VM boot (3 rounds
## each: median and range, and the 16 GiB / 1 GiB ratios), rewriting the Snapshots table of
## docs/performance.md; `make test` runs only its smoke variant, in test-kernel's boot
bench-snapshots: vm-deps
	NVMIRROR_REQUIRE_VM=1 NVMIRROR_BENCH_MODE=full NVMIRROR_BENCH_DOC=$(BENCH_DOC) \
	  NVMIRROR_VM_LOGDIR=$(CURDIR)/_output/vm \
	  $(GO) test -v -count=1 -timeout 100m -run '^TestSnapshotBenchmark$$' ./test/kernel/

## fuzz: run each fuzz target for FUZZTIME
fuzz:
	@for pkg in $$(grep -rl --include=*_test.go "^func Fuzz" pkg | xargs -n1 dirname | sort -u | sed 's|^|./|'); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep ^Fuzz); do \
	    echo "fuzz $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

## proto: regenerate pkg/agentapi and pkg/provisionerapi from api/ (secret fields carry
## csi.proto's csi_secret option, so protosanitizer strips them from logs; needs protoc,
## protoc-gen-go matching go.mod's google.golang.org/protobuf, protoc-gen-go-grpc)
PROTOC_GEN_GO_VERSION ?= $(shell $(GO) list -m -f '{{.Version}}' google.golang.org/protobuf)
proto:
	@command -v protoc >/dev/null || { echo "protoc missing: apt-get install -y protobuf-compiler"; exit 1; }
	GOFLAGS= $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOFLAGS= $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
	PATH="$$($(GO) env GOPATH)/bin:$$PATH" protoc -I api \
	  -I "$$($(GO) list -m -f '{{.Dir}}' github.com/container-storage-interface/spec)" \
	  --go_out=. --go_opt=module=github.com/nvmirror/nvmirror \
	  --go_opt=Mcsi.proto=github.com/container-storage-interface/spec/lib/go/csi \
	  --go-grpc_out=. --go-grpc_opt=module=github.com/nvmirror/nvmirror \
	  --go-grpc_opt=Mcsi.proto=github.com/container-storage-interface/spec/lib/go/csi \
	  api/target/v1/target.proto api/provisioner/v1/provisioner.proto

clean:
	rm -rf $(BIN) _output
