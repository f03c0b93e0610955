package qemu

import (
	"sync"
	"time"
)

func rdtsc() uint64

// HostTSCKHz measures the host's time stamp counter rate.
//
// Under TCG the guest's TSC is the host's (QEMU reads the host counter), but
// the guest kernel calibrates it against the emulated PIT, and on a loaded
// host that calibration stalls: the kernel hung after "tsc: Unable to
// calibrate against PIT" in 5 of 5 boots at load 4-6 on two cores. Telling
// the guest the rate (tsc_early_khz) skips the calibration; measuring it here
// keeps guest clocks right (a guessed rate would make `sleep 1` wrong).
var HostTSCKHz = sync.OnceValue(func() uint64 {
	const window = 20 * time.Millisecond
	start, t0 := rdtsc(), time.Now()
	time.Sleep(window)
	end, elapsed := rdtsc(), time.Since(t0)
	return (end - start) * uint64(time.Millisecond) / uint64(elapsed) // ticks per ms = kHz
})
