//go:build linux

package perf_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	kperf "github.com/cilium/ebpf/perf"
	"golang.org/x/sys/unix"

	"github.com/bpfsim/bpfsim/perfarray"
	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/kdiff"
	"github.com/bpfsim/bpfsim/sim/perf"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Kernel-differential tests: the same programs write perf samples in this
// machine's kernel (read with cilium/ebpf's perf reader) and in bpfsim
// (read with sim/perf), and must give the same helper results and the same
// records, CPU by CPU, in the same order, with the same bytes.

func openKernel(t *testing.T) *kdiff.Kernel {
	t.Helper()
	kk, err := kdiff.OpenKernel()
	if err != nil {
		t.Skipf("no kernel to compare with: %v", err)
	}
	if kk.PinnableCPUs() < kk.PossibleCPUs() {
		t.Skipf("test runs cannot be pinned to all %d CPUs", kk.PossibleCPUs())
	}
	return kk
}

// onCPU runs fn on a thread pinned to cpu: XDP test runs execute on the
// calling CPU.
func onCPU(t *testing.T, cpu int, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var old, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		t.Fatal(err)
	}
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		t.Fatal(err)
	}
	defer unix.SchedSetaffinity(0, &old)
	fn()
}

// rec is what both readers give, for comparing.
type rec struct {
	sample    []byte
	lost      uint64
	remaining int
}

func (r rec) String() string {
	if r.lost > 0 {
		return fmt.Sprintf("LOST %d (remaining %d)", r.lost, r.remaining)
	}
	return fmt.Sprintf("% x (remaining %d)", r.sample, r.remaining)
}

// step is one thing a scenario does.
type step struct {
	cpu   int
	ctx   []byte // for outputProg
	pause bool   // Pause before, Resume after
	read  bool   // drain the readers instead of running
}

// perCPU groups records by CPU.
type perCPU map[int][]rec

// kernelSide runs steps on the kernel.
func kernelSide(t *testing.T, steps []step) ([]uint32, []perCPU) {
	arr, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.PerfEventArray})
	if err != nil {
		t.Fatal(err)
	}
	defer arr.Close()
	rd, err := kperf.NewReader(arr, 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	p, err := ebpf.NewProgram(outputProg(arr.FD()))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var rets []uint32
	var reads []perCPU
	for _, s := range steps {
		if s.read {
			got := perCPU{}
			rd.SetDeadline(time.Now())
			for {
				r, err := rd.Read()
				if errors.Is(err, os.ErrDeadlineExceeded) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				got[r.CPU] = append(got[r.CPU], rec{r.RawSample, r.LostSamples, r.Remaining})
			}
			reads = append(reads, got)
			continue
		}
		if s.pause {
			if err := rd.Pause(); err != nil {
				t.Fatal(err)
			}
		}
		// BPF_F_TEST_RUN_ON_CPU: raw tracepoints run on the CPU asked for.
		ret, err := p.Run(&ebpf.RunOptions{Context: s.ctx, CPU: uint32(s.cpu), Flags: 1})
		if err != nil {
			t.Fatal(err)
		}
		rets = append(rets, ret)
		if s.pause {
			if err := rd.Resume(); err != nil {
				t.Fatal(err)
			}
		}
	}
	return rets, reads
}

// simSide runs steps on bpfsim.
func simSide(t *testing.T, cpus int, steps []step) ([]uint32, []perCPU) {
	k := newKernel(t, cpus)
	arr := newPerfArray(t, k, nil)
	rd, err := perf.NewReader(arr, 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	p := load(t, k, outputProg(arr.FD()))
	var rets []uint32
	var reads []perCPU
	for _, s := range steps {
		if s.read {
			got := perCPU{}
			for _, r := range drain(t, rd) {
				got[r.CPU] = append(got[r.CPU], rec{r.RawSample, r.LostSamples, r.Remaining})
			}
			reads = append(reads, got)
			continue
		}
		if s.pause {
			if err := rd.Pause(); err != nil {
				t.Fatal(err)
			}
		}
		ret, err := p.Run(&sim.RunOptions{Context: s.ctx, CPU: uint32(s.cpu)})
		if err != nil {
			t.Fatal(err)
		}
		rets = append(rets, ret)
		if s.pause {
			if err := rd.Resume(); err != nil {
				t.Fatal(err)
			}
		}
	}
	return rets, reads
}

func TestOutputRecordsMatchTheKernel(t *testing.T) {
	kk := openKernel(t)
	cpus := kk.PossibleCPUs()
	var steps []step
	// Every sample size, on every CPU, mixed.
	for i := 0; i < 64; i++ {
		cpu := (i * 7 / 3) % cpus
		steps = append(steps, step{cpu: cpu, ctx: outputCtx(payload(i), uapi.BPF_F_CURRENT_CPU, i%32)})
	}
	// Explicit indexes and the errnos.
	for cpu := 0; cpu < cpus; cpu++ {
		steps = append(steps,
			step{cpu: cpu, ctx: outputCtx(payload(100+cpu), uint64(cpu), 9)},
			step{cpu: cpu, ctx: outputCtx(payload(1), uint64((cpu+1)%cpus), 9)},
			step{cpu: cpu, ctx: outputCtx(payload(1), 1<<32|uapi.BPF_F_CURRENT_CPU, 9)},
			step{cpu: cpu, ctx: outputCtx(payload(1), 4<<32, 9)},
			step{cpu: cpu, ctx: outputCtx(payload(1), uint64(cpus), 9)},
			step{cpu: cpu, ctx: outputCtx(payload(1), uapi.BPF_F_CURRENT_CPU, 9), pause: true},
		)
	}
	steps = append(steps, step{read: true})
	// Fill CPU 0's ring, read it, write again: the lost count comes first.
	for i := 0; i < 110; i++ {
		steps = append(steps, step{cpu: 0, ctx: outputCtx(payload(i), uapi.BPF_F_CURRENT_CPU, 28)})
	}
	steps = append(steps, step{read: true},
		step{cpu: 0, ctx: outputCtx(payload(7), uapi.BPF_F_CURRENT_CPU, 5)},
		step{read: true})

	krets, kreads := kernelSide(t, steps)
	srets, sreads := simSide(t, cpus, steps)
	for i := range krets {
		if krets[i] != srets[i] {
			t.Errorf("run %d: kernel returned %#x, bpfsim %#x", i, krets[i], srets[i])
		}
	}
	lost := 0
	for i := range kreads {
		for cpu := 0; cpu < cpus; cpu++ {
			kr, sr := kreads[i][cpu], sreads[i][cpu]
			if len(kr) != len(sr) {
				t.Errorf("read %d, CPU %d: kernel gave %d records, bpfsim %d", i, cpu, len(kr), len(sr))
				continue
			}
			for j := range kr {
				if !bytes.Equal(kr[j].sample, sr[j].sample) || kr[j].lost != sr[j].lost || kr[j].remaining != sr[j].remaining {
					t.Errorf("read %d, CPU %d, record %d: kernel %v, bpfsim %v", i, cpu, j, kr[j], sr[j])
				}
				if kr[j].lost > 0 {
					lost++
				}
			}
		}
	}
	if lost == 0 {
		t.Error("the scenario never produced a LOST record")
	}
	t.Logf("%d runs, %d reads compared on %d CPUs", len(krets), len(kreads), cpus)
}

func TestXDPOutputMatchesTheKernel(t *testing.T) {
	kk := openKernel(t)
	cpus := kk.PossibleCPUs()
	pkt := make([]byte, 20)
	for i := range pkt {
		pkt[i] = byte(0xc0 + i)
	}
	flags := []uint64{
		uapi.BPF_F_CURRENT_CPU, 10<<32 | uapi.BPF_F_CURRENT_CPU, 20<<32 | uapi.BPF_F_CURRENT_CPU,
		21<<32 | uapi.BPF_F_CURRENT_CPU, 1<<52 | uapi.BPF_F_CURRENT_CPU, 3<<32 | 1, 0, uint64(cpus),
	}
	type outcome struct {
		ret  uint32
		recs perCPU
	}
	// Kernel.
	arr, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.PerfEventArray})
	if err != nil {
		t.Fatal(err)
	}
	defer arr.Close()
	krd, err := kperf.NewReader(arr, 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer krd.Close()
	var kout []outcome
	for _, f := range flags {
		p, err := ebpf.NewProgram(xdpOutputProg(arr.FD(), f))
		if err != nil {
			t.Fatal(err)
		}
		for cpu := 0; cpu < cpus; cpu++ {
			var ret uint32
			onCPU(t, cpu, func() { ret, err = p.Run(&ebpf.RunOptions{Data: pkt}) })
			if err != nil {
				t.Fatal(err)
			}
			o := outcome{ret: ret, recs: perCPU{}}
			krd.SetDeadline(time.Now())
			for {
				r, err := krd.Read()
				if errors.Is(err, os.ErrDeadlineExceeded) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				o.recs[r.CPU] = append(o.recs[r.CPU], rec{r.RawSample, r.LostSamples, r.Remaining})
			}
			kout = append(kout, o)
		}
		p.Close()
	}
	// bpfsim.
	k := newKernel(t, cpus)
	sarr := newPerfArray(t, k, nil)
	srd, err := perf.NewReader(sarr, 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer srd.Close()
	var sout []outcome
	for _, f := range flags {
		p := load(t, k, xdpOutputProg(sarr.FD(), f))
		for cpu := 0; cpu < cpus; cpu++ {
			ret, err := p.Run(&sim.RunOptions{Data: pkt, CPU: uint32(cpu)})
			if err != nil {
				t.Fatal(err)
			}
			o := outcome{ret: ret, recs: perCPU{}}
			for _, r := range drain(t, srd) {
				o.recs[r.CPU] = append(o.recs[r.CPU], rec{r.RawSample, r.LostSamples, r.Remaining})
			}
			sout = append(sout, o)
		}
	}
	samples := 0
	for _, o := range kout {
		for _, rs := range o.recs {
			samples += len(rs)
		}
	}
	if samples == 0 {
		t.Error("the kernel wrote no samples")
	}
	t.Logf("%d runs, %d samples compared", len(kout), samples)
	for i := range kout {
		f, cpu := flags[i/cpus], i%cpus
		if kout[i].ret != sout[i].ret {
			t.Errorf("flags %#x on CPU %d: kernel returned %#x, bpfsim %#x", f, cpu, kout[i].ret, sout[i].ret)
		}
		if fmt.Sprint(kout[i].recs) != fmt.Sprint(sout[i].recs) {
			t.Errorf("flags %#x on CPU %d: kernel records %v, bpfsim %v", f, cpu, kout[i].recs, sout[i].recs)
		}
	}
}

func errnoOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return 0xffff
}

// openKernelEvent opens a perf event in the kernel.
func openKernelEvent(t *testing.T, typ uint32, config uint64, cpu int, inherit bool) int {
	t.Helper()
	attr := unix.PerfEventAttr{Type: typ, Config: config, Sample_type: unix.PERF_SAMPLE_RAW, Wakeup: 1}
	attr.Size = uint32(unsafe.Sizeof(attr))
	if inherit {
		attr.Bits |= unix.PerfBitInherit
	}
	fd, err := unix.PerfEventOpen(&attr, -1, cpu, -1, unix.PERF_FLAG_FD_CLOEXEC)
	if err != nil {
		t.Skipf("perf_event_open: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func TestUserSpaceErrnosMatchTheKernel(t *testing.T) {
	openKernel(t)
	// Kernel.
	arr, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.PerfEventArray, MaxEntries: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer arr.Close()
	other, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	kev := openKernelEvent(t, unix.PERF_TYPE_SOFTWARE, unix.PERF_COUNT_SW_BPF_OUTPUT, 0, false)
	kinh := openKernelEvent(t, unix.PERF_TYPE_SOFTWARE, unix.PERF_COUNT_SW_CPU_CLOCK, 0, true)
	// bpfsim.
	k := newKernel(t, 2)
	sarr := newPerfArray(t, k, &ebpf.MapSpec{Type: ebpf.PerfEventArray, MaxEntries: 2})
	sother, err := k.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sother.Close()
	sev, err := k.NewPerfEvent(0, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer sev.Close()
	sinh, err := k.OpenPerfEvent(perfarray.EventAttr{Type: uapi.PERF_TYPE_SOFTWARE, Config: uapi.PERF_COUNT_SW_CPU_CLOCK, Inherit: true}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sinh.Close()

	type mapOps interface {
		Update(key, value any, flags ebpf.MapUpdateFlags) error
		Lookup(key, valueOut any) error
		Delete(key any) error
		NextKey(key, nextKeyOut any) error
	}
	type fds struct{ ev, inherit, mapFD int }
	var v, next uint32
	ops := []struct {
		name string
		op   func(m mapOps, f fds) error
	}{
		{"update", func(m mapOps, f fds) error { return m.Update(uint32(0), uint32(f.ev), ebpf.UpdateAny) }},
		{"update again", func(m mapOps, f fds) error { return m.Update(uint32(0), uint32(f.ev), ebpf.UpdateAny) }},
		{"update with NOEXIST", func(m mapOps, f fds) error { return m.Update(uint32(1), uint32(f.ev), ebpf.UpdateNoExist) }},
		{"update with EXIST", func(m mapOps, f fds) error { return m.Update(uint32(0), uint32(f.ev), ebpf.UpdateExist) }},
		{"update past the end", func(m mapOps, f fds) error { return m.Update(uint32(2), uint32(f.ev), ebpf.UpdateAny) }},
		{"update past the end with NOEXIST", func(m mapOps, f fds) error { return m.Update(uint32(2), uint32(f.ev), ebpf.UpdateNoExist) }},
		{"update with a map fd", func(m mapOps, f fds) error { return m.Update(uint32(1), uint32(f.mapFD), ebpf.UpdateAny) }},
		{"update with a closed fd", func(m mapOps, f fds) error { return m.Update(uint32(1), uint32(9999), ebpf.UpdateAny) }},
		{"update with an inherited event", func(m mapOps, f fds) error { return m.Update(uint32(1), uint32(f.inherit), ebpf.UpdateAny) }},
		{"lookup a filled slot", func(m mapOps, f fds) error { return m.Lookup(uint32(0), &v) }},
		{"lookup an empty slot", func(m mapOps, f fds) error { return m.Lookup(uint32(1), &v) }},
		{"next key", func(m mapOps, f fds) error { return m.NextKey(uint32(0), &next) }},
		{"next key of the last", func(m mapOps, f fds) error { return m.NextKey(uint32(1), &next) }},
		{"next key past the end", func(m mapOps, f fds) error { return m.NextKey(uint32(7), &next) }},
		{"delete an empty slot", func(m mapOps, f fds) error { return m.Delete(uint32(1)) }},
		{"delete past the end", func(m mapOps, f fds) error { return m.Delete(uint32(2)) }},
		{"delete", func(m mapOps, f fds) error { return m.Delete(uint32(0)) }},
		{"delete again", func(m mapOps, f fds) error { return m.Delete(uint32(0)) }},
	}
	for _, o := range ops {
		ke := errnoOf(o.op(arr, fds{kev, kinh, other.FD()}))
		se := errnoOf(o.op(sarr, fds{sev.FD(), sinh.FD(), sother.FD()}))
		if ke != se {
			t.Errorf("%s: kernel errno %d (%v), bpfsim %d (%v)", o.name, ke, ke, se, se)
		}
		t.Logf("%s: errno %d", o.name, ke)
	}
	// Creation.
	for _, spec := range []*ebpf.MapSpec{
		{Type: ebpf.PerfEventArray, KeySize: 4, ValueSize: 4, MaxEntries: 2, Flags: uapi.BPF_F_PRESERVE_ELEMS},
		{Type: ebpf.PerfEventArray, KeySize: 4, ValueSize: 4, MaxEntries: 2, Flags: uapi.BPF_F_RDONLY_PROG},
		{Type: ebpf.PerfEventArray, KeySize: 4, ValueSize: 4, MaxEntries: 2, Flags: uapi.BPF_F_MMAPABLE},
		{Type: ebpf.PerfEventArray, KeySize: 4, ValueSize: 4, MaxEntries: 2, Flags: uapi.BPF_F_NO_PREALLOC},
		{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 2, Flags: uapi.BPF_F_PRESERVE_ELEMS},
	} {
		km, kerr := ebpf.NewMap(spec)
		if kerr == nil {
			km.Close()
		}
		sm, serr := k.NewMap(spec)
		if serr == nil {
			sm.Close()
		}
		if errnoOf(kerr) != errnoOf(serr) {
			t.Errorf("create %v flags %#x: kernel %v, bpfsim %v", spec.Type, spec.Flags, kerr, serr)
		}
	}
}

func TestPerfEventReadErrnosMatchTheKernel(t *testing.T) {
	kk := openKernel(t)
	cpus := kk.PossibleCPUs()
	if cpus < 2 {
		t.Skip("needs 2 CPUs")
	}
	// A counter on CPU 0 in slot 0; slot 1 empty.
	arr, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.PerfEventArray, MaxEntries: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer arr.Close()
	out, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 32, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	kfd := openKernelEvent(t, unix.PERF_TYPE_SOFTWARE, unix.PERF_COUNT_SW_CPU_CLOCK, 0, false)
	if err := arr.Put(uint32(0), uint32(kfd)); err != nil {
		t.Fatal(err)
	}
	k := newKernel(t, cpus)
	sarr := newPerfArray(t, k, &ebpf.MapSpec{Type: ebpf.PerfEventArray, MaxEntries: 2})
	sout, err := k.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 32, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sout.Close()
	sev, err := k.OpenPerfEvent(perfarray.EventAttr{Type: uapi.PERF_TYPE_SOFTWARE, Config: uapi.PERF_COUNT_SW_CPU_CLOCK}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sev.Close()
	if err := sarr.Put(uint32(0), uint32(sev.FD())); err != nil {
		t.Fatal(err)
	}
	for _, read := range []bool{false, true} {
		kp, err := ebpf.NewProgram(readValueProg(arr.FD(), out.FD(), read))
		if err != nil {
			t.Fatal(err)
		}
		defer kp.Close()
		sp := load(t, k, readValueProg(sarr.FD(), sout.FD(), read))
		for _, c := range []struct {
			cpu   int
			flags uint64
		}{{0, uapi.BPF_F_CURRENT_CPU}, {0, 0}, {1, 0}, {1, uapi.BPF_F_CURRENT_CPU}, {0, 2}, {0, 1 << 33}} {
			ctx := make([]byte, 8)
			for i := range 8 {
				ctx[i] = byte(c.flags >> (8 * i))
			}
			if _, err := kp.Run(&ebpf.RunOptions{Context: ctx, CPU: uint32(c.cpu), Flags: 1}); err != nil {
				t.Fatal(err)
			}
			if _, err := sp.Run(&sim.RunOptions{Context: ctx, CPU: uint32(c.cpu)}); err != nil {
				t.Fatal(err)
			}
			var kb, sb []byte
			if err := out.Lookup(uint32(0), &kb); err != nil {
				t.Fatal(err)
			}
			if err := sout.Lookup(uint32(0), &sb); err != nil {
				t.Fatal(err)
			}
			// r0 must agree; the counter only where the read failed (it is
			// then zeroed), since the kernel's clock keeps running.
			kr0, sr0 := int64(le64(kb)), int64(le64(sb))
			if read && kr0 >= 0 && sr0 >= 0 {
				continue // a counter value on both sides
			}
			if kr0 != sr0 || (kr0 != 0 && !bytes.Equal(kb[8:], sb[8:])) {
				t.Errorf("read=%v CPU %d flags %#x: kernel r0 %d buf % x, bpfsim r0 %d buf % x", read, c.cpu, c.flags, kr0, kb[8:], sr0, sb[8:])
			}
		}
	}
}

func le64(b []byte) uint64 {
	var v uint64
	for i := 7; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}
