//go:build linux

package perf_test

import (
	"errors"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	kperf "github.com/cilium/ebpf/perf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/kdiff"
	"github.com/bpfsim/bpfsim/sim/perf"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// BenchmarkPerfOutput measures samples per second from a program into a
// reader: an XDP program writes one 8-byte sample per run, runs in batches
// of 1,000 (RunOptions.Repeat), and after each batch the reader takes every
// record. The kernel runs the same program and reads with cilium/ebpf's
// perf reader, in the same benchmark.
func BenchmarkPerfOutput(b *testing.B) {
	const batch = 1000
	const ringBytes = 1 << 20
	pkt := make([]byte, 64)

	b.Run("bpfsim", func(b *testing.B) {
		k := newKernel(b, 2)
		m := newPerfArray(b, k, nil)
		rd, err := perf.NewReader(m, ringBytes)
		if err != nil {
			b.Fatal(err)
		}
		defer rd.Close()
		p := load(b, k, xdpOutputProg(m.FD(), uapi.BPF_F_CURRENT_CPU))
		var rec perf.Record
		b.ResetTimer()
		start := time.Now()
		read := 0
		for done := 0; done < b.N; done += batch {
			n := min(batch, b.N-done)
			if _, err := p.Run(&sim.RunOptions{Data: pkt, Repeat: uint32(n)}); err != nil {
				b.Fatal(err)
			}
			rd.SetDeadline(time.Now())
			for {
				err := rd.ReadInto(&rec)
				if errors.Is(err, os.ErrDeadlineExceeded) {
					break
				}
				if err != nil || rec.LostSamples != 0 {
					b.Fatalf("%v, lost %d", err, rec.LostSamples)
				}
				read++
			}
		}
		if read != b.N {
			b.Fatalf("read %d samples of %d", read, b.N)
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "samples/s")
	})

	b.Run("kernel", func(b *testing.B) {
		if _, err := kdiff.OpenKernel(); err != nil {
			b.Skipf("no kernel: %v", err)
		}
		m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.PerfEventArray})
		if err != nil {
			b.Fatal(err)
		}
		defer m.Close()
		rd, err := kperf.NewReader(m, ringBytes)
		if err != nil {
			b.Fatal(err)
		}
		defer rd.Close()
		p, err := ebpf.NewProgram(xdpOutputProg(m.FD(), uapi.BPF_F_CURRENT_CPU))
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		var rec kperf.Record
		b.ResetTimer()
		start := time.Now()
		read := 0
		for done := 0; done < b.N; done += batch {
			n := min(batch, b.N-done)
			if _, err := p.Run(&ebpf.RunOptions{Data: pkt, Repeat: uint32(n)}); err != nil {
				b.Fatal(err)
			}
			rd.SetDeadline(time.Now())
			for {
				err := rd.ReadInto(&rec)
				if errors.Is(err, os.ErrDeadlineExceeded) {
					break
				}
				if err != nil || rec.LostSamples != 0 {
					b.Fatalf("%v, lost %d", err, rec.LostSamples)
				}
				read++
			}
		}
		if read != b.N {
			b.Fatalf("read %d samples of %d", read, b.N)
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "samples/s")
	})
}
