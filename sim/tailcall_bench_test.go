package sim_test

import (
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
)

// BenchmarkTailCall measures a chain of 33 tail calls (a program that
// tail calls itself until the limit) on bpfsim and, in the same run, on
// this machine's kernel through test runs with repeat; ns/tailcall is the
// time of one invocation divided by 33.
func BenchmarkTailCall(b *testing.B) {
	b.Run("bpfsim", func(b *testing.B) {
		k := newKernel(b, nil)
		pa, err := k.NewMap(progArraySpec(1))
		if err != nil {
			b.Fatal(err)
		}
		p, err := k.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: tailCaller(pa.FD(), 0, 0)})
		if err != nil {
			b.Fatal(err)
		}
		if err := pa.Put(uint32(0), p); err != nil {
			b.Fatal(err)
		}
		opts := &sim.RunOptions{Data: make([]byte, 64)}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := p.Run(opts); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/33, "ns/tailcall")
	})
	b.Run("kernel", func(b *testing.B) {
		needKernel(b)
		pa, err := ebpf.NewMap(progArraySpec(1))
		if err != nil {
			b.Fatal(err)
		}
		defer pa.Close()
		p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: tailCaller(pa.FD(), 0, 0)})
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		if err := pa.Put(uint32(0), p); err != nil {
			b.Fatal(err)
		}
		var total time.Duration
		for done := 0; done < b.N; {
			n := min(b.N-done, 100000)
			ret, d, err := p.Benchmark(make([]byte, 64), n, nil)
			if err != nil || ret != 0 {
				b.Fatal(ret, err)
			}
			total += d * time.Duration(n)
			done += n
		}
		b.ReportMetric(float64(total.Nanoseconds())/float64(b.N)/33, "ns/tailcall")
	})
}
