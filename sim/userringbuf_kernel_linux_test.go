package sim_test

import (
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/kdiff"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// kernelUserRing writes records into a kernel user ring buffer through
// its mapping, as libbpf's user_ring_buffer does: the consumer position's
// page read-only, the producer position's page and the data (mapped
// twice) writable.
type kernelUserRing struct {
	cons, prod []byte
	size       uint64
}

func mapKernelUserRing(t testing.TB, m *ebpf.Map, size int) *kernelUserRing {
	pg := os.Getpagesize()
	cons, err := unix.Mmap(m.FD(), 0, pg, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	prod, err := unix.Mmap(m.FD(), int64(pg), pg+2*size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(cons); unix.Munmap(prod) })
	return &kernelUserRing{cons: cons, prod: prod, size: uint64(size)}
}

func word64(b []byte) *uint64 { return (*uint64)(unsafe.Pointer(&b[0])) }
func word32(b []byte) *uint32 { return (*uint32)(unsafe.Pointer(&b[0])) }

// userRing is what a drain test writes through: the kernel's mapping or
// bpfsim's writer.
type userRing interface {
	// put reserves a record of size bytes starting with b, and submits
	// it, discards it (commit 1) or leaves it busy (2), returning a
	// function that submits it later.
	put(b byte, size uint32, commit int) (submit func(), err error)
}

func (r *kernelUserRing) put(b byte, size uint32, commit int) (func(), error) {
	pg := uint64(os.Getpagesize())
	total := (uint64(size) + uapi.BPF_RINGBUF_HDR_SZ + 7) &^ 7
	cons, prod := atomic.LoadUint64(word64(r.cons)), atomic.LoadUint64(word64(r.prod))
	if total > r.size {
		return nil, uapi.E2BIG
	}
	if r.size-(prod-cons) < total {
		return nil, uapi.ENOSPC
	}
	hdr := word32(r.prod[pg+prod&(r.size-1):])
	atomic.StoreUint32(hdr, size|uapi.BPF_RINGBUF_BUSY_BIT)
	data := r.prod[pg+(prod+uapi.BPF_RINGBUF_HDR_SZ)&(r.size-1):]
	for i := uint32(0); i < size; i++ {
		data[i] = b + byte(i)
	}
	atomic.StoreUint64(word64(r.prod), prod+total)
	done := func(bit uint32) { atomic.StoreUint32(hdr, size|bit) }
	switch commit {
	case 0:
		done(0)
	case 1:
		done(uapi.BPF_RINGBUF_DISCARD_BIT)
	}
	return func() { done(0) }, nil
}

type simUserRing struct{ w *sim.UserRingbufWriter }

func (r simUserRing) put(b byte, size uint32, commit int) (func(), error) {
	rec, err := r.w.Reserve(size)
	if err != nil {
		return nil, err
	}
	p := make([]byte, size)
	for i := range p {
		p[i] = b + byte(i)
	}
	rec.Write(p)
	switch commit {
	case 0:
		rec.Submit()
	case 1:
		rec.Discard()
	}
	return rec.Submit, nil
}

// drainScript writes records and drains them, printing what each drain
// returns: records submitted, discarded and left busy, a ring filled and
// wrapped around its end, records too large or with no room, and drain
// flags.
func drainScript(t *testing.T, ring userRing, drain func(flags int32) uint32) string {
	var b strings.Builder
	put := func(v byte, size uint32, commit int) func() {
		s, err := ring.put(v, size, commit)
		fmt.Fprintf(&b, "put %d %d %d: %v\n", v, size, commit, errnoOf(err))
		return s
	}
	run := func(flags int32) { fmt.Fprintf(&b, "drain %d: %d\n", flags, int32(drain(flags))) }
	put(3, 1, 0)
	put(50, 10, 1)
	put(7, 5, 0)
	busy := put(100, 3, 2)
	put(11, 2, 0)
	run(0)
	busy()
	run(0)
	run(0)
	run(4) // an unknown flag
	run(uapi.BPF_RB_FORCE_WAKEUP)
	for round := 0; round < 6; round++ {
		for i := 0; i < 7; i++ {
			put(byte(round*7+i), uint32(100+i*50), i%3/2)
		}
		run(uapi.BPF_RB_NO_WAKEUP)
	}
	put(1, 4096, 0)   // larger than the ring with its header
	put(1, 4096-8, 0) // the whole ring
	put(1, 1, 0)      // no room left
	run(0)
	return b.String()
}

// The same records written into this machine's kernel's user ring buffer
// and into bpfsim's are drained alike: every drain's result (records
// drained, their first bytes' sum read through the callback's dynptr,
// errnos), interpreted and JITed; a busy record stops a drain.
func TestUserRingbufDrainIsTheKernels(t *testing.T) {
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	spec := &ebpf.MapSpec{Type: ebpf.MapType(uapi.MapTypeUserRingbuf), MaxEntries: 4096}
	km, err := ebpf.NewMap(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer km.Close()
	kprogs := map[int32]*ebpf.Program{}
	want := drainScript(t, mapKernelUserRing(t, km, 4096), func(flags int32) uint32 {
		p, ok := kprogs[flags]
		if !ok {
			var err error
			if p, err = ebpf.NewProgram(testSpec(t, ebpf.XDP, drainSum(km.FD(), flags))); err != nil {
				t.Fatal(err)
			}
			kprogs[flags] = p
		}
		ret, err := p.Run(&ebpf.RunOptions{Data: make([]byte, 64)})
		if err != nil {
			t.Fatal(err)
		}
		return ret
	})
	for _, p := range kprogs {
		p.Close()
	}
	t.Logf("kernel:\n%s", want)
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		t.Run(rt.String(), func(t *testing.T) {
			k := newKernel(t, &sim.Options{Runtime: rt})
			sm := newMap(t, k, spec)
			w, err := sim.NewUserRingbufWriter(sm)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			sprogs := map[int32]*sim.Program{}
			got := drainScript(t, simUserRing{w}, func(flags int32) uint32 {
				p, ok := sprogs[flags]
				if !ok {
					var err error
					if p, err = k.NewProgram(testSpec(t, ebpf.XDP, drainSum(sm.FD(), flags))); err != nil {
						t.Fatal(err)
					}
					sprogs[flags] = p
				}
				return runXDP(t, p)
			})
			if got != want {
				t.Errorf("bpfsim:\n%s\nkernel:\n%s", got, want)
			}
		})
	}
}

// What the verifier refuses around user ring buffers, with the kernel's
// messages: the map and the helper only go together, the callback
// returns 0 or 1, and the record's dynptr is the kernel's.
func TestUserRingbufRefusalsAreTheKernels(t *testing.T) {
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	user := &ebpf.MapSpec{Type: ebpf.MapType(uapi.MapTypeUserRingbuf), MaxEntries: 4096}
	plain := &ebpf.MapSpec{Type: ebpf.RingBuf, MaxEntries: 4096}
	k := newKernel(t, nil)
	for _, c := range []struct {
		name string
		spec *ebpf.MapSpec
		edit func(insns asm.Instructions) asm.Instructions
		msg  string
	}{
		{"accepted", user, nil, ""},
		{"drain of a ring buffer", plain, nil, "cannot pass map_type 27 into func bpf_user_ringbuf_drain#209"},
		{"callback returns 2", user, func(in asm.Instructions) asm.Instructions {
			in[len(in)-2] = asm.Mov.Imm(asm.R0, 2)
			return in
		}, "At callback return the register R0 has smin=2 smax=2 should have been in [0, 1]"},
		{"callback submits the record", user, func(in asm.Instructions) asm.Instructions {
			n := len(in)
			return append(in[:n-2:n-2], asm.Mov.Reg(asm.R1, asm.R9), asm.Mov.Imm(asm.R2, 0),
				asm.BuiltinFunc(uapi.FuncRingbufSubmitDynptr).Call(), asm.Mov.Imm(asm.R0, 0), asm.Return())
		}, "cannot release unowned const bpf_dynptr"},
	} {
		t.Run(c.name, func(t *testing.T) {
			km, err := ebpf.NewMap(c.spec)
			if err != nil {
				t.Fatal(err)
			}
			defer km.Close()
			sm := newMap(t, k, c.spec)
			prog := func(fd int) *ebpf.ProgramSpec {
				insns := drainSum(fd, 0)
				// The callback keeps its dynptr in r9.
				insns[12] = btf.WithFuncMetadata(asm.Mov.Reg(asm.R9, asm.R1), btf.FuncMetadata(&insns[12])).WithSymbol("cb")
				insns = append(insns[:13:13], append(asm.Instructions{asm.Mov.Reg(asm.R6, asm.R2)}, insns[13:]...)...)
				if c.edit != nil {
					insns = c.edit(insns)
				}
				return testSpec(t, ebpf.XDP, insns)
			}
			kp, kErr := ebpf.NewProgram(prog(km.FD()))
			if kErr == nil {
				kp.Close()
			}
			sp, sErr := k.NewProgram(prog(sm.FD()))
			if sErr == nil {
				sp.Close()
			}
			if got := kdiff.LastLogLine(kErr); got != c.msg {
				t.Errorf("the kernel's message is %q, the test expects %q (%v)", got, c.msg, kErr)
			}
			if (kErr == nil) != (sErr == nil) || kErr != nil && !strings.Contains(sErr.Error(), c.msg) {
				t.Errorf("kernel: %v\nbpfsim: %v", kErr, sErr)
			}
		})
	}
}

// BenchmarkUserRingbufDrain is a record of 16 bytes drained by a program
// whose callback reads its first byte through the dynptr, in bpfsim and
// in this machine's kernel (the test-run durations of drains of 64
// records; writing them is not timed).
func BenchmarkUserRingbufDrain(b *testing.B) {
	const batch = 64
	spec := &ebpf.MapSpec{Type: ebpf.MapType(uapi.MapTypeUserRingbuf), MaxEntries: 4096}
	measure := func(b *testing.B, ring userRing, drain func() (uint32, time.Duration)) {
		var total time.Duration
		for done := 0; done < b.N; done += batch {
			for i := 0; i < batch; i++ {
				if _, err := ring.put(1, 16, 0); err != nil {
					b.Fatal(err)
				}
			}
			ret, d := drain()
			if ret != batch+batch*1000 {
				b.Fatalf("drained %d", ret)
			}
			total += d
		}
		b.ReportMetric(float64(total.Nanoseconds())/float64((b.N+batch-1)/batch*batch), "ns/record")
		b.ReportMetric(0, "ns/op")
	}
	b.Run("bpfsim", func(b *testing.B) {
		k, err := sim.NewKernel(nil)
		if err != nil {
			b.Fatal(err)
		}
		m, err := k.NewMap(spec)
		if err != nil {
			b.Fatal(err)
		}
		defer m.Close()
		w, err := sim.NewUserRingbufWriter(m)
		if err != nil {
			b.Fatal(err)
		}
		defer w.Close()
		p, err := k.NewProgram(testSpec(b, ebpf.XDP, drainSum(m.FD(), 0)))
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		measure(b, simUserRing{w}, func() (uint32, time.Duration) {
			res, err := p.Test(&sim.RunOptions{Data: make([]byte, 64)})
			if err != nil {
				b.Fatal(err)
			}
			return uint32(res.R0), res.Duration
		})
	})
	b.Run("kernel", func(b *testing.B) {
		if _, err := kdiff.OpenKernel(); err != nil {
			b.Skipf("skipped: this machine cannot load BPF programs: %v", err)
		}
		m, err := ebpf.NewMap(spec)
		if err != nil {
			b.Fatal(err)
		}
		defer m.Close()
		p, err := ebpf.NewProgram(testSpec(b, ebpf.XDP, drainSum(m.FD(), 0)))
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		ring := mapKernelUserRing(b, m, 4096)
		measure(b, ring, func() (uint32, time.Duration) {
			ret, d, err := p.Benchmark(make([]byte, 64), 1, nil)
			if err != nil {
				b.Fatal(err)
			}
			return ret, d
		})
	})
}
