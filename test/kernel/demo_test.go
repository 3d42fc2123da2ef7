package kernel

// envDemoPace sets the demo's pace (TestDemo). `make demo` sets it to
// demoPaceReal: maxReplicaDownTime counted in minutes as in a cluster, a
// minute's wait for the replacement, a 1 GiB volume. Otherwise (`make
// test`) the demo runs the same story at test pace: maxReplicaDownTime in
// seconds (the node plugin's and provisioner's --heal-time-unit=1s, as
// TestHealer does) and a 128 MiB volume, which saves `make test` more than
// a minute without leaving out a step.
const (
	envDemoPace  = "NVMIRROR_DEMO_PACE"
	demoPaceReal = "real"
)
