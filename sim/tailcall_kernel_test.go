package sim_test

import (
	"fmt"
	"math/rand"
	"reflect"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/kdiff"
)

// kernelLikeOptions makes bpfsim count tail calls as this machine's JIT
// does (x86-64 and arm64 alike: only tail calls that reach a program).
func kernelLikeOptions() *sim.Options {
	return &sim.Options{TailCallCount: interp.CountSuccesses}
}

func needKernel(t testing.TB) {
	t.Helper()
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("no BPF in this kernel: %v", err)
	}
}

// TestTailCallCorpusMatchesKernel plays generated scenarios (programs
// counting their runs and tail calling through a prog array with constant,
// 32-bit, high-bit, variable and out-of-range indexes, empty slots,
// cycles that reach the limit, tail calls from subprograms) in bpfsim and
// in this machine's kernel, and compares load verdicts, return values and
// counters.
func TestTailCallCorpusMatchesKernel(t *testing.T) {
	needKernel(t)
	const n = 300
	r := rand.New(rand.NewSource(12))
	agree, loaded, limit := 0, 0, 0
	for i := 0; i < n; i++ {
		s := genScenario(r)
		kout, kerr := s.play(newKernelWorld())
		sout, serr := s.play(newSimWorld(newKernel(t, kernelLikeOptions())))
		if (kerr == nil) != (serr == nil) || !reflect.DeepEqual(kout, sout) {
			t.Errorf("scenario %d %+v:\nkernel %+v (%v)\nbpfsim %+v (%v)", i, s, kout, kerr, sout, serr)
			continue
		}
		agree++
		if len(kout.rets) > 0 {
			loaded++
		}
		for _, c := range kout.counters {
			if c >= 34 {
				limit++
				break
			}
		}
	}
	t.Logf("%d/%d scenarios agree; %d ran, %d reached the tail call limit", agree, n, loaded, limit)
}

// TestProgArrayErrnosMatchKernel compares the errnos of prog array
// operations from user space.
func TestProgArrayErrnosMatchKernel(t *testing.T) {
	needKernel(t)
	type step struct {
		name string
		do   func(w world, pa, other int, progs []int) error
	}
	steps := []step{
		{"create value_size 8", func(w world, _, _ int, _ []int) error {
			_, err := w.newMap(&ebpf.MapSpec{Type: ebpf.ProgramArray, KeySize: 4, ValueSize: 8, MaxEntries: 1})
			return err
		}},
		{"create BPF_F_RDONLY_PROG", func(w world, _, _ int, _ []int) error {
			_, err := w.newMap(&ebpf.MapSpec{Type: ebpf.ProgramArray, KeySize: 4, ValueSize: 4, MaxEntries: 1, Flags: 1 << 7})
			return err
		}},
		{"create BPF_F_MMAPABLE", func(w world, _, _ int, _ []int) error {
			_, err := w.newMap(&ebpf.MapSpec{Type: ebpf.ProgramArray, KeySize: 4, ValueSize: 4, MaxEntries: 1, Flags: 1 << 10})
			return err
		}},
		{"NOEXIST", func(w world, pa, _ int, p []int) error {
			return w.update(pa, 0, uint32(w.progFD(p[0])), ebpf.UpdateNoExist)
		}},
		{"EXIST", func(w world, pa, _ int, p []int) error {
			return w.update(pa, 0, uint32(w.progFD(p[0])), ebpf.UpdateExist)
		}},
		{"past the end", func(w world, pa, _ int, p []int) error {
			return w.update(pa, 2, uint32(w.progFD(p[0])), ebpf.UpdateAny)
		}},
		{"past the end, bad fd", func(w world, pa, _ int, _ []int) error { return w.update(pa, 2, uint32(9999), ebpf.UpdateAny) }},
		{"bad fd", func(w world, pa, _ int, _ []int) error { return w.update(pa, 0, uint32(9999), ebpf.UpdateAny) }},
		{"map fd", func(w world, pa, other int, _ []int) error { return w.update(pa, 0, uint32(other), ebpf.UpdateAny) }},
		{"lookup empty", func(w world, pa, _ int, _ []int) error { _, err := w.lookupU32(pa, 0); return err }},
		{"lookup past the end", func(w world, pa, _ int, _ []int) error { _, err := w.lookupU32(pa, 5); return err }},
		{"delete empty", func(w world, pa, _ int, _ []int) error { return w.del(pa, 0) }},
		{"delete past the end", func(w world, pa, _ int, _ []int) error { return w.del(pa, 2) }},
		{"insert socket filter first", func(w world, pa, _ int, p []int) error { return w.setSlot(pa, 0, p[1]) }},
		{"then XDP", func(w world, pa, _ int, p []int) error { return w.setSlot(pa, 1, p[0]) }},
		{"then socket filter again", func(w world, pa, _ int, p []int) error { return w.setSlot(pa, 1, p[1]) }},
		{"lookup gives the id", func(w world, pa, _ int, p []int) error {
			id, err := w.lookupU32(pa, 0)
			if err == nil && id != w.progID(p[1]) {
				return fmt.Errorf("id %d, want %d", id, w.progID(p[1]))
			}
			return err
		}},
		{"delete", func(w world, pa, _ int, _ []int) error { return w.del(pa, 0) }},
		{"XDP program using the socket filter's map", func(w world, pa, _ int, _ []int) error {
			_, err := w.load(ebpf.XDP, tailCaller(pa, 0, 0))
			return err
		}},
	}
	play := func(w world) []string {
		defer w.close()
		pa, err := w.newMap(progArraySpec(2))
		if err != nil {
			t.Fatal(err)
		}
		other, err := w.newMap(countersSpec(1))
		if err != nil {
			t.Fatal(err)
		}
		x, err := w.load(ebpf.XDP, retProg(1))
		if err != nil {
			t.Fatal(err)
		}
		s, err := w.load(ebpf.SocketFilter, retProg(1))
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, st := range steps {
			err := st.do(w, pa, other, []int{x, s})
			out = append(out, fmt.Sprintf("%s: errno %d", st.name, tcErrno(err)))
		}
		return out
	}
	kout := play(newKernelWorld())
	sout := play(newSimWorld(newKernel(t, kernelLikeOptions())))
	for i := range kout {
		if kout[i] != sout[i] {
			t.Errorf("kernel %q, bpfsim %q", kout[i], sout[i])
		} else {
			t.Log(kout[i])
		}
	}
}
