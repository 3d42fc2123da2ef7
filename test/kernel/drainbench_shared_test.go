package kernel

// drainBenchMarker starts the guest's output line that carries the drain
// benchmark's figures (TestBenchDrain), which the host (TestDrainBenchmark)
// picks out of the stream and logs at the top of its own output.
const drainBenchMarker = "@@DRAIN-BENCH "
