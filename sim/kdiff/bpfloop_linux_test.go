//go:build linux

package kdiff

import (
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
)

// Each bpf_loop program is loaded in this machine's kernel and in bpfsim:
// the same verdict, errno and message; for programs both accept, the same
// xlated code (the inlined loop, the callback's lddw) and the same number
// of instructions processed; and the same results on packets whose first
// byte sets some loop counts and flags, interpreted and JITed: loops the
// verifier inlined, and loops the helper runs, calling back into the
// program.
func TestBpfLoopMatchesKernel(t *testing.T) {
	k := linuxLikeSim(t)
	jit, err := sim.NewKernel(&sim.Options{Runtime: sim.RuntimeJIT})
	if err != nil {
		t.Fatal(err)
	}
	var pkts [][]byte
	for _, first := range []byte{0, 1, 2, 7, 100, 255} {
		pkt := make([]byte, 14)
		pkt[0] = first
		pkts = append(pkts, pkt)
	}
	accepted := 0
	for _, c := range bpfLoopCases {
		t.Run(c.name, func(t *testing.T) {
			spec := &ebpf.ProgramSpec{Name: "loop", Type: ebpf.XDP, License: "GPL", Instructions: c.insns}
			if matchKernelVerdict(t, k, jit, spec, c.errno, c.msg, pkts) {
				accepted++
			}
		})
	}
	t.Logf("%d programs accepted and run by both", accepted)
}

// BenchmarkBpfLoop is one iteration of an inlined bpf_loop whose callback
// adds its index to a stack slot (the loop's 6 instructions and the
// callback's 6), on bpfsim interpreted and, through BPF_PROG_TEST_RUN
// with repeat, on this machine's kernel.
func BenchmarkBpfLoop(b *testing.B) {
	const n = 1000
	spec := &ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL",
		Instructions: loopMain(callLoop(asm.Mov.Imm(asm.R1, n), "cb", -8, flags0), sumCallback("cb", n))}
	pkt := make([]byte, 64)
	b.Run("bpfsim", func(b *testing.B) {
		k, err := sim.NewKernel(nil)
		if err != nil {
			b.Fatal(err)
		}
		p, err := k.NewProgram(spec)
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		reportSimRepeat(b, p, pkt, n, "ns/iteration")
	})
	b.Run("kernel", func(b *testing.B) {
		if _, err := OpenKernel(); err != nil {
			b.Skipf("skipped: this machine cannot load BPF programs: %v", err)
		}
		p, err := ebpf.NewProgram(spec)
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		reportKernelRepeat(b, p, pkt, n, "ns/iteration")
	})
}

// reportSimRepeat runs p b.N times on pkt (RunOptions.Repeat) and
// reports the mean time of a run divided by per, in unit.
func reportSimRepeat(b *testing.B, p *sim.Program, pkt []byte, per float64, unit string) {
	b.Helper()
	res, err := p.Test(&sim.RunOptions{Data: pkt, Repeat: uint32(b.N)})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(res.Duration.Nanoseconds())/per, unit)
	b.ReportMetric(0, "ns/op")
}

// reportKernelRepeat is reportSimRepeat in this machine's kernel
// (BPF_PROG_TEST_RUN with repeat).
func reportKernelRepeat(b *testing.B, p *ebpf.Program, pkt []byte, per float64, unit string) {
	b.Helper()
	_, d, err := p.Benchmark(pkt, b.N, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(d.Nanoseconds())/per, unit)
	b.ReportMetric(0, "ns/op")
}
