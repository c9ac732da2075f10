package lb

import (
	"fmt"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/kdiff"
)

// benchPackets returns one packet per flow of svc: flows different
// clients, each its own source address and port.
func benchPackets(svc Service, flows int) [][]byte {
	pkts := make([][]byte, flows)
	for i := range pkts {
		f := clientFlow(svc, i)
		f.Src = f.Src.Next() // not the table tests' clients
		pkts[i] = BuildPacket(f, 18)
	}
	return pkts
}

// hairpinBackends are backends at the service's own address and port: a
// packet balanced to one is a packet for the service again, so that a
// test run repeated on it (BPF_PROG_TEST_RUN's repeat reruns the program
// on the packet as the last run left it) takes the whole forwarding path
// every time, in bpfsim and in the kernel alike.
func hairpinBackends(svc Service, n int) []BackendAddr {
	bs := testBackends(1, n, svc.Port)
	for i := range bs {
		bs[i].Addr = svc.VIP
	}
	return bs
}

type benchTarget struct {
	name string
	// run runs pkt repeat times and returns the last verdict and the
	// mean duration of one run as the runner measured it.
	run func(b *testing.B, pkt, out []byte, repeat uint32) (uint32, time.Duration)
	set func(b *testing.B, svc Service, table []uint32, bs []BackendAddr)
	// repeat is the repetitions of a run in repeat mode.
	repeat uint32
}

func benchTargets(b *testing.B) []benchTarget {
	k, err := sim.NewKernel(&sim.Options{CPUs: 1, Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	s, err := Load(k, testSeed)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	prog := s.Program()
	targets := []benchTarget{{
		name: "bpfsim",
		run: func(b *testing.B, pkt, out []byte, repeat uint32) (uint32, time.Duration) {
			res, err := prog.Test(&sim.RunOptions{Data: pkt, DataOut: out, Repeat: repeat})
			if err != nil {
				b.Fatal(err)
			}
			return uint32(res.R0), res.Duration
		},
		set: func(b *testing.B, svc Service, table []uint32, bs []BackendAddr) {
			if err := s.SetService(svc, table, bs); err != nil {
				b.Fatal(err)
			}
		},
		repeat: 256,
	}}
	if _, err := kdiff.OpenKernel(); err != nil {
		b.Logf("no kernel figures: %v", err)
		return targets
	}
	kern := loadKernelLB(b, testSeed)
	return append(targets, benchTarget{
		name: "kernel",
		run: func(b *testing.B, pkt, out []byte, repeat uint32) (uint32, time.Duration) {
			if repeat > 1 {
				// The kernel's own mean: a repeated XDP test run
				// costs this kernel a fixed ~24 ms per call besides
				// (measured; test_run.c switches the XDP dispatcher
				// around repeated runs), which is not the datapath.
				ret, d, err := kern.prog.Benchmark(pkt, int(repeat), nil)
				if err != nil {
					b.Fatal(err)
				}
				return ret, d
			}
			ret, err := kern.prog.Run(&ebpf.RunOptions{Data: pkt, DataOut: out})
			if err != nil {
				b.Fatal(err)
			}
			return ret, 0
		},
		set: func(b *testing.B, svc Service, table []uint32, bs []BackendAddr) {
			if err := kern.SetService(svc, table, bs); err != nil {
				b.Fatal(err)
			}
		},
		repeat: 1 << 16,
	})
}

// BenchmarkDatapath measures forwarded packets per second on one CPU, in
// bpfsim and in this machine's kernel (its JIT), two ways:
//
//   - per-packet: one test run per packet, over a pool of flows, timed by
//     the caller: what a user of LB.Run gets. Each run pays the test
//     run's set-up and copies, and in the kernel a bpf() system call,
//     which dominates there;
//   - repeat: repeated test runs over the same pool, with hairpin
//     backends so that every repetition forwards, timed by the runner
//     itself (RunResult.Duration; the kernel's BPF_PROG_TEST_RUN
//     duration): the datapath alone.
func BenchmarkDatapath(b *testing.B) {
	for _, target := range benchTargets(b) {
		for _, flows := range []int{1, 1024, 65536} {
			for _, mode := range []string{"per-packet", "repeat"} {
				b.Run(fmt.Sprintf("%s/%s/flows=%d", target.name, mode, flows), func(b *testing.B) {
					var bs []BackendAddr
					repeat := uint32(1)
					if mode == "repeat" {
						bs, repeat = hairpinBackends(webSvc, 31), target.repeat
					} else {
						bs = testBackends(1, 31, 8080)
					}
					target.set(b, webSvc, fillTable(bs, 4093), bs)
					pkts := benchPackets(webSvc, flows)
					out := make([]byte, len(pkts[0])+64)
					b.ResetTimer()
					start := time.Now()
					var runner time.Duration
					for i := 0; i < b.N; i++ {
						v, d := target.run(b, pkts[i%len(pkts)], out, repeat)
						if v != XDPTX {
							b.Fatalf("verdict %d", v)
						}
						runner += d * time.Duration(repeat)
					}
					elapsed := time.Since(start)
					if mode == "repeat" {
						elapsed = runner
					}
					n := float64(b.N) * float64(repeat)
					b.ReportMetric(n/elapsed.Seconds(), "pkts/s")
					b.ReportMetric(float64(elapsed.Nanoseconds())/n, "ns/pkt")
				})
			}
		}
	}
}
