//go:build linux

package kdiff

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// ringbufProgram copies the packet's first 40 bytes to the stack and
// outputs size of them to the ring buffer fd, returning what
// bpf_ringbuf_output returned; with query, it returns the bytes waiting
// in the ring after the output instead.
func ringbufProgram(fd int, size int32, query bool) asm.Instructions {
	p := asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 0, asm.Word),
		asm.LoadMem(asm.R3, asm.R1, 4, asm.Word),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 40),
		asm.JGT.Reg(asm.R4, asm.R3, "out"),
	}
	for off := int16(0); off < 40; off += 8 {
		p = append(p, asm.LoadMem(asm.R5, asm.R2, off, asm.DWord), asm.StoreMem(asm.RFP, off-40, asm.R5, asm.DWord))
	}
	p = append(p,
		asm.LoadMapPtr(asm.R1, fd),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -40),
		asm.Mov.Imm(asm.R3, size),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnRingbufOutput.Call(),
	)
	if query {
		p = append(p,
			asm.LoadMapPtr(asm.R1, fd),
			asm.Mov.Imm(asm.R2, uapi.BPF_RB_AVAIL_DATA),
			asm.FnRingbufQuery.Call(),
		)
	}
	return append(p, asm.Return(), asm.Mov.Imm(asm.R0, 2).WithSymbol("out"), asm.Return())
}

// The same programs write the same packets into a ring buffer in this
// machine's kernel and in bpfsim, interpreted and JITed, until the ring
// fills and then after draining it: the same return values (0, -EAGAIN,
// the bytes waiting), and the same records read back, in order.
func TestRingbufOutputMatchesKernel(t *testing.T) {
	if _, err := OpenKernel(); err != nil {
		t.Skipf("kernel comparison skipped: this machine cannot load BPF programs: %v", err)
	}
	spec := &ebpf.MapSpec{Type: ebpf.RingBuf, MaxEntries: 4096}
	sizes := []int32{1, 13, 40, 0}
	rng := rand.New(rand.NewPCG(5, 6))
	type step struct {
		prog  int // index in sizes; with query for odd steps
		query bool
		pkt   []byte
		drain bool
	}
	var steps []step
	for i := 0; i < 400; i++ {
		pkt := make([]byte, 64)
		for j := range pkt {
			pkt[j] = byte(rng.IntN(256))
		}
		steps = append(steps, step{prog: rng.IntN(len(sizes)), query: i%2 == 1, pkt: pkt, drain: i%250 == 249})
	}
	type result struct{ rets, records []string }
	run := func(newMap func() (int, func() []string, func()), load func(fd int, insns asm.Instructions) (func([]byte) (uint32, error), func())) result {
		fd, drain, closeMap := newMap()
		defer closeMap()
		var runs [2][4]func([]byte) (uint32, error)
		for q := 0; q < 2; q++ {
			for i, s := range sizes {
				r, c := load(fd, ringbufProgram(fd, s, q == 1))
				defer c()
				runs[q][i] = r
			}
		}
		var res result
		for _, st := range steps {
			q := 0
			if st.query {
				q = 1
			}
			ret, err := runs[q][st.prog](st.pkt)
			if err != nil {
				t.Fatal(err)
			}
			res.rets = append(res.rets, fmt.Sprint(int32(ret)))
			if st.drain {
				res.records = append(res.records, drain()...)
			}
		}
		res.records = append(res.records, drain()...)
		return res
	}
	kernelRes := run(func() (int, func() []string, func()) {
		m, err := ebpf.NewMap(spec)
		if err != nil {
			t.Fatal(err)
		}
		rd, err := ringbuf.NewReader(m)
		if err != nil {
			t.Fatal(err)
		}
		return m.FD(), func() []string {
				rd.SetDeadline(time.Now())
				return drainRing(t, func() ([]byte, error) { rec, err := rd.Read(); return rec.RawSample, err })
			}, func() {
				rd.Close()
				m.Close()
			}
	}, func(fd int, insns asm.Instructions) (func([]byte) (uint32, error), func()) {
		p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: insns})
		if err != nil {
			t.Fatal(err)
		}
		return func(pkt []byte) (uint32, error) { return p.Run(&ebpf.RunOptions{Data: pkt}) }, func() { p.Close() }
	})
	waiting := 0
	for _, r := range kernelRes.rets {
		if r == fmt.Sprint(-int32(uapi.EAGAIN)) {
			waiting++
		}
	}
	t.Logf("kernel: %d records read, %d outputs found the ring full", len(kernelRes.records), waiting)
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		k, err := sim.NewKernel(&sim.Options{Runtime: rt})
		if err != nil {
			t.Fatal(err)
		}
		simRes := run(func() (int, func() []string, func()) {
			m, err := k.NewMap(spec)
			if err != nil {
				t.Fatal(err)
			}
			rd, err := sim.NewRingbufReader(m)
			if err != nil {
				t.Fatal(err)
			}
			return m.FD(), func() []string {
					return drainRing(t, func() ([]byte, error) { rec, err := rd.Read(); return rec.RawSample, err })
				}, func() {
					rd.Close()
					m.Close()
				}
		}, func(fd int, insns asm.Instructions) (func([]byte) (uint32, error), func()) {
			p, err := k.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: insns})
			if err != nil {
				t.Fatal(err)
			}
			return func(pkt []byte) (uint32, error) { return p.Run(&sim.RunOptions{Data: pkt}) }, func() { p.Close() }
		})
		if fmt.Sprint(simRes.rets) != fmt.Sprint(kernelRes.rets) {
			t.Errorf("%v: return values differ\nkernel: %v\nbpfsim: %v", rt, kernelRes.rets, simRes.rets)
		}
		if fmt.Sprint(simRes.records) != fmt.Sprint(kernelRes.records) {
			t.Errorf("%v: records differ: kernel %d, bpfsim %d", rt, len(kernelRes.records), len(simRes.records))
		}
	}
}

// drainRing reads records until the reader has none ready, each as hex.
func drainRing(t testing.TB, read func() ([]byte, error)) []string {
	t.Helper()
	var out []string
	for {
		sample, err := read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%x", sample))
	}
}
