package perf_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/perfarray"
	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/perf"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

func newKernel(t testing.TB, cpus int) *sim.Kernel {
	t.Helper()
	k, err := sim.NewKernel(&sim.Options{CPUs: cpus})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newPerfArray(t testing.TB, k *sim.Kernel, spec *ebpf.MapSpec) *sim.Map {
	t.Helper()
	if spec == nil {
		spec = &ebpf.MapSpec{Name: "events", Type: ebpf.PerfEventArray}
	}
	m, err := k.NewMap(spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func load(t testing.TB, k *sim.Kernel, spec *ebpf.ProgramSpec) *sim.Program {
	t.Helper()
	p, err := k.NewProgram(spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// drain reads every record until the deadline error.
func drain(t testing.TB, rd *perf.Reader) []perf.Record {
	t.Helper()
	rd.SetDeadline(time.Now())
	var recs []perf.Record
	for {
		rec, err := rd.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return recs
		}
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, rec)
	}
}

func TestPerfEventArrayDefaultsToOneSlotPerCPU(t *testing.T) {
	k := newKernel(t, 3)
	for _, tc := range []struct {
		max, want uint32
	}{{0, 3}, {2, 2}, {64, 3}} {
		m := newPerfArray(t, k, &ebpf.MapSpec{Type: ebpf.PerfEventArray, MaxEntries: tc.max})
		if m.MaxEntries() != tc.want || m.KeySize() != 4 || m.ValueSize() != 4 {
			t.Errorf("max_entries %d gave %d/%d/%d, want %d/4/4", tc.max, m.MaxEntries(), m.KeySize(), m.ValueSize(), tc.want)
		}
	}
	if _, err := k.NewMap(&ebpf.MapSpec{Type: ebpf.PerfEventArray, ValueSize: 8}); err == nil {
		t.Error("a perf event array with 8-byte values was created")
	}
}

func TestReaderReturnsEachCPUsRecordsInOrderWithExactBytes(t *testing.T) {
	k := newKernel(t, 2)
	m := newPerfArray(t, k, nil)
	rd, err := perf.NewReader(m, 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	p := load(t, k, outputProg(m.FD()))
	want := map[int][][]byte{}
	for i := 0; i < 40; i++ {
		cpu, size := i%2, i%32
		if i%5 == 0 {
			cpu = 1 // not strictly alternating
		}
		ret, err := p.Run(&sim.RunOptions{Context: outputCtx(payload(i), uapi.BPF_F_CURRENT_CPU, size), CPU: uint32(cpu)})
		if err != nil || ret != 0 {
			t.Fatalf("run %d: %d %v", i, ret, err)
		}
		want[cpu] = append(want[cpu], padded(payload(i)[:size]))
	}
	got := map[int][][]byte{}
	for _, rec := range drain(t, rd) {
		if rec.LostSamples != 0 {
			t.Fatalf("lost %d samples", rec.LostSamples)
		}
		got[rec.CPU] = append(got[rec.CPU], rec.RawSample)
	}
	for cpu := 0; cpu < 2; cpu++ {
		if len(got[cpu]) != len(want[cpu]) {
			t.Fatalf("CPU %d: %d records, want %d", cpu, len(got[cpu]), len(want[cpu]))
		}
		for i := range want[cpu] {
			if !bytes.Equal(got[cpu][i], want[cpu][i]) {
				t.Errorf("CPU %d record %d: % x, want % x", cpu, i, got[cpu][i], want[cpu][i])
			}
		}
	}
}

func TestFullRingReturnsENOSPCAndTheReaderSeesTheLostCount(t *testing.T) {
	k := newKernel(t, 1)
	m := newPerfArray(t, k, nil)
	rd, err := perf.NewReader(m, 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	p := load(t, k, outputProg(m.FD()))
	// 28 bytes make 40-byte records: 102 fit in 4096 bytes.
	var rets []uint32
	for i := 0; i < 110; i++ {
		ret, err := p.Run(&sim.RunOptions{Context: outputCtx(payload(i), uapi.BPF_F_CURRENT_CPU, 28)})
		if err != nil {
			t.Fatal(err)
		}
		rets = append(rets, ret)
	}
	for i, r := range rets {
		if want := map[bool]uint32{true: 0, false: errno(int(uapi.ENOSPC))}[i < 102]; r != want {
			t.Fatalf("run %d returned %#x, want %#x", i, r, want)
		}
	}
	recs := drain(t, rd)
	if len(recs) != 102 {
		t.Fatalf("%d records, want 102", len(recs))
	}
	if _, err := p.Run(&sim.RunOptions{Context: outputCtx(payload(200), uapi.BPF_F_CURRENT_CPU, 28)}); err != nil {
		t.Fatal(err)
	}
	recs = drain(t, rd)
	if len(recs) != 2 || recs[0].LostSamples != 8 || !bytes.Equal(recs[1].RawSample, padded(payload(200)[:28])) {
		t.Fatalf("after the ring emptied: %+v, want a LOST record of 8 and the new sample", recs)
	}
}

func TestOutputHelperReturnsTheKernelsErrnos(t *testing.T) {
	k := newKernel(t, 2)
	m := newPerfArray(t, k, nil)
	counter, err := k.OpenPerfEvent(perfarray.EventAttr{Type: uapi.PERF_TYPE_HARDWARE}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer counter.Close()
	rd, err := perf.NewReader(m, 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	p := load(t, k, outputProg(m.FD()))
	for _, tc := range []struct {
		name  string
		cpu   uint32
		flags uint64
		size  int
		setup func()
		want  uint32
	}{
		{"current CPU", 0, uapi.BPF_F_CURRENT_CPU, 8, nil, 0},
		{"explicit index of the CPU", 1, 1, 8, nil, 0},
		{"empty sample", 1, 1, 0, nil, 0},
		{"bits above the index", 0, 1 << 32, 8, nil, errno(int(uapi.EINVAL))},
		{"ctxlen from a tracing program", 0, 4<<32 | uapi.BPF_F_CURRENT_CPU, 8, nil, errno(int(uapi.EINVAL))},
		{"index past max_entries", 0, 2, 8, nil, errno(int(uapi.E2BIG))},
		{"another CPU's event", 0, 1, 8, nil, errno(int(uapi.EOPNOTSUPP))},
		{"a counter event", 0, 0, 8, func() {
			if err := m.Put(uint32(0), uint32(counter.FD())); err != nil {
				t.Fatal(err)
			}
		}, errno(int(uapi.EINVAL))},
		{"an empty slot", 0, 0, 8, func() {
			if err := m.Delete(uint32(0)); err != nil {
				t.Fatal(err)
			}
		}, errno(int(uapi.ENOENT))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup()
			}
			ret, err := p.Run(&sim.RunOptions{Context: outputCtx(payload(1), tc.flags, tc.size), CPU: tc.cpu})
			if err != nil || ret != tc.want {
				t.Fatalf("returned %#x (%v), want %#x", ret, err, tc.want)
			}
		})
	}
}

func TestXDPOutputAppendsPacketBytes(t *testing.T) {
	k := newKernel(t, 1)
	m := newPerfArray(t, k, nil)
	rd, err := perf.NewReader(m, 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	pkt := make([]byte, 20)
	for i := range pkt {
		pkt[i] = byte(0xc0 + i)
	}
	meta := []byte{0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88}
	for _, tc := range []struct {
		name   string
		flags  uint64
		want   uint32
		sample []byte
	}{
		{"metadata only", uapi.BPF_F_CURRENT_CPU, 0, padded(meta)},
		{"10 packet bytes", 10<<32 | uapi.BPF_F_CURRENT_CPU, 0, padded(append(append([]byte(nil), meta...), pkt[:10]...))},
		{"the whole packet", 20<<32 | uapi.BPF_F_CURRENT_CPU, 0, padded(append(append([]byte(nil), meta...), pkt...))},
		{"more than the packet", 21<<32 | uapi.BPF_F_CURRENT_CPU, errno(int(uapi.EFAULT)), nil},
		{"bits above ctxlen", 1<<52 | uapi.BPF_F_CURRENT_CPU, errno(int(uapi.EINVAL)), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := load(t, k, xdpOutputProg(m.FD(), tc.flags))
			ret, err := p.Run(&sim.RunOptions{Data: pkt})
			if err != nil || ret != tc.want {
				t.Fatalf("returned %#x (%v), want %#x", ret, err, tc.want)
			}
			recs := drain(t, rd)
			switch {
			case tc.sample == nil && len(recs) != 0:
				t.Fatalf("a failed output wrote %+v", recs)
			case tc.sample != nil && (len(recs) != 1 || !bytes.Equal(recs[0].RawSample, tc.sample)):
				t.Fatalf("records %+v, want one of % x", recs, tc.sample)
			}
		})
	}
}

func TestPerfEventReadHelpersReadTheCounter(t *testing.T) {
	k := newKernel(t, 2)
	m := newPerfArray(t, k, nil)
	out, err := k.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 32, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	ev, err := k.OpenPerfEvent(perfarray.EventAttr{Type: uapi.PERF_TYPE_HARDWARE, Config: uapi.PERF_COUNT_HW_INSTRUCTIONS}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ev.Close()
	ev.Event().SetCount(0xfeedbeef)
	ev.Event().SetTimes(5000, 2500)
	if err := m.Put(uint32(0), uint32(ev.FD())); err != nil {
		t.Fatal(err)
	}
	readValue := load(t, k, readValueProg(m.FD(), out.FD(), false))
	read := load(t, k, readValueProg(m.FD(), out.FD(), true))
	result := func() [4]uint64 {
		var b []byte
		if err := out.Lookup(uint32(0), &b); err != nil {
			t.Fatal(err)
		}
		var r [4]uint64
		for i := range r {
			r[i] = binary.LittleEndian.Uint64(b[8*i:])
		}
		return r
	}
	neg := func(e uapi.Errno) uint64 { return uint64(-int64(e)) }
	for _, tc := range []struct {
		name  string
		prog  *sim.Program
		cpu   uint32
		flags uint64
		want  [4]uint64
	}{
		{"read_value on the event's CPU", readValue, 0, uapi.BPF_F_CURRENT_CPU, [4]uint64{0, 0xfeedbeef, 5000, 2500}},
		{"read_value from another CPU", readValue, 1, 0, [4]uint64{neg(uapi.EINVAL), 0, 0, 0}},
		{"read_value of an empty slot", readValue, 1, uapi.BPF_F_CURRENT_CPU, [4]uint64{neg(uapi.ENOENT), 0, 0, 0}},
		{"read_value past max_entries", readValue, 0, 2, [4]uint64{neg(uapi.E2BIG), 0, 0, 0}},
		{"read_value with flags", readValue, 0, 1 << 40, [4]uint64{neg(uapi.EINVAL), 0, 0, 0}},
		{"read", read, 0, 0, [4]uint64{0xfeedbeef}},
		{"read from another CPU", read, 1, 0, [4]uint64{neg(uapi.EINVAL)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := binary.LittleEndian.AppendUint64(nil, tc.flags)
			if _, err := tc.prog.Run(&sim.RunOptions{Context: ctx, CPU: tc.cpu}); err != nil {
				t.Fatal(err)
			}
			if got := result(); got != tc.want {
				t.Fatalf("got %#x, want %#x", got, tc.want)
			}
		})
	}
}

func TestVerifierPairsPerfEventArraysWithTheirHelpersOnly(t *testing.T) {
	k := newKernel(t, 1)
	m := newPerfArray(t, k, nil)
	h, err := k.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	lookup := &ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: asm.Instructions{
		asm.Mov.Imm(asm.R0, 0),
		asm.StoreMem(asm.R10, -8, asm.R0, asm.DWord),
		asm.LoadMapPtr(asm.R1, m.FD()),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, -8),
		asm.FnMapLookupElem.Call(),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
	}}
	for _, tc := range []struct {
		name string
		spec *ebpf.ProgramSpec
		msg  string
	}{
		{"lookup in a perf event array", lookup, "cannot pass map_type 4 into func bpf_map_lookup_elem#1"},
		{"output to a hash", xdpOutputProg(h.FD(), 0), "cannot pass map_type 1 into func bpf_perf_event_output#25"},
		{"read_value of a hash", readValueProg(h.FD(), h.FD(), false), "cannot pass map_type 1 into func bpf_perf_event_read_value#55"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := k.NewProgram(tc.spec)
			if !errors.Is(err, uapi.EINVAL) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("load: %v, want EINVAL with %q", err, tc.msg)
			}
		})
	}
	// The packet is not memory these helpers may read.
	pkt := &ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: asm.Instructions{
		asm.LoadMem(asm.R4, asm.R1, 0, asm.Word),
		asm.LoadMem(asm.R5, asm.R1, 4, asm.Word),
		asm.Mov.Reg(asm.R3, asm.R4),
		asm.Add.Imm(asm.R3, 8),
		asm.JGT.Reg(asm.R3, asm.R5, "out"),
		asm.LoadMapPtr(asm.R2, m.FD()),
		asm.LoadImm(asm.R3, uapi.BPF_F_CURRENT_CPU, asm.DWord),
		asm.Mov.Imm(asm.R5, 8),
		asm.FnPerfEventOutput.Call(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	}}
	if _, err := k.NewProgram(pkt); !errors.Is(err, uapi.EACCES) {
		t.Fatalf("output of packet memory: %v, want EACCES", err)
	}
	gpl := outputProg(m.FD())
	gpl.License = "MIT"
	if _, err := k.NewProgram(gpl); !errors.Is(err, uapi.EINVAL) {
		t.Fatalf("a non-GPL program calling bpf_perf_event_output: %v, want EINVAL", err)
	}
}

func TestUserSpaceOperationsOnAPerfEventArray(t *testing.T) {
	k := newKernel(t, 2)
	m := newPerfArray(t, k, nil)
	ev, err := k.NewPerfEvent(0, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer ev.Close()
	inherit, err := k.OpenPerfEvent(perfarray.EventAttr{Type: uapi.PERF_TYPE_SOFTWARE, Config: uapi.PERF_COUNT_SW_CPU_CLOCK, Inherit: true}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer inherit.Close()
	var v uint32
	var next uint32
	for _, tc := range []struct {
		name string
		op   func() error
		want error
	}{
		{"put an event", func() error { return m.Put(uint32(0), uint32(ev.FD())) }, nil},
		{"put with BPF_NOEXIST", func() error { return m.Update(uint32(1), uint32(ev.FD()), ebpf.UpdateNoExist) }, uapi.EINVAL},
		{"put past the end", func() error { return m.Put(uint32(2), uint32(ev.FD())) }, uapi.E2BIG},
		{"put a map fd", func() error { return m.Put(uint32(1), uint32(m.FD())) }, uapi.EBADF},
		{"put a closed fd", func() error { return m.Put(uint32(1), uint32(1000)) }, uapi.EBADF},
		{"put an inherited event", func() error { return m.Put(uint32(1), uint32(inherit.FD())) }, uapi.EOPNOTSUPP},
		{"lookup", func() error { return m.Lookup(uint32(0), &v) }, uapi.ENOTSUPP},
		{"next key", func() error { return m.NextKey(uint32(0), &next) }, nil},
		{"next key of the last", func() error { return m.NextKey(uint32(1), &next) }, uapi.ENOENT},
		{"delete an empty slot", func() error { return m.Delete(uint32(1)) }, uapi.ENOENT},
		{"delete past the end", func() error { return m.Delete(uint32(2)) }, uapi.E2BIG},
		{"delete", func() error { return m.Delete(uint32(0)) }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.op()
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestReaderDeadlineAndClose(t *testing.T) {
	k := newKernel(t, 2)
	m := newPerfArray(t, k, nil)
	rd, err := perf.NewReader(m, 1)
	if err != nil {
		t.Fatal(err)
	}
	if rd.BufferSize() != 4096 {
		t.Fatalf("buffer size %d, want 4096", rd.BufferSize())
	}
	p := load(t, k, outputProg(m.FD()))

	t.Run("a past deadline on empty rings", func(t *testing.T) {
		rd.SetDeadline(time.Now().Add(-time.Second))
		if _, err := rd.Read(); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("got %v, want os.ErrDeadlineExceeded", err)
		}
	})
	t.Run("records before the deadline error", func(t *testing.T) {
		for cpu := uint32(0); cpu < 2; cpu++ {
			if _, err := p.Run(&sim.RunOptions{Context: outputCtx(payload(int(cpu)), uapi.BPF_F_CURRENT_CPU, 4), CPU: cpu}); err != nil {
				t.Fatal(err)
			}
		}
		rd.SetDeadline(time.Now())
		cpus := map[int]bool{}
		for i := 0; i < 2; i++ {
			rec, err := rd.Read()
			if err != nil {
				t.Fatalf("record %d: %v", i, err)
			}
			cpus[rec.CPU] = true
		}
		if !cpus[0] || !cpus[1] {
			t.Fatalf("records from CPUs %v, want 0 and 1", cpus)
		}
		if _, err := rd.Read(); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("got %v, want os.ErrDeadlineExceeded", err)
		}
	})
	t.Run("a deadline that passes while waiting", func(t *testing.T) {
		rd.SetDeadline(time.Now().Add(20 * time.Millisecond))
		start := time.Now()
		if _, err := rd.Read(); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("got %v, want os.ErrDeadlineExceeded", err)
		}
		if d := time.Since(start); d < 15*time.Millisecond {
			t.Fatalf("returned after %v, before the deadline", d)
		}
	})
	t.Run("a blocked read wakes for a sample", func(t *testing.T) {
		rd.SetDeadline(time.Time{})
		got := make(chan perf.Record, 1)
		go func() {
			rec, err := rd.Read()
			if err != nil {
				t.Error(err)
			}
			got <- rec
		}()
		time.Sleep(10 * time.Millisecond)
		if _, err := p.Run(&sim.RunOptions{Context: outputCtx(payload(9), uapi.BPF_F_CURRENT_CPU, 3), CPU: 1}); err != nil {
			t.Fatal(err)
		}
		select {
		case rec := <-got:
			if rec.CPU != 1 || !bytes.Equal(rec.RawSample, padded(payload(9)[:3])) {
				t.Fatalf("record %+v", rec)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Read did not wake up")
		}
	})
	t.Run("close interrupts a blocked read", func(t *testing.T) {
		errc := make(chan error, 1)
		go func() {
			_, err := rd.Read()
			errc <- err
		}()
		time.Sleep(10 * time.Millisecond)
		if err := rd.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-errc:
			if !errors.Is(err, os.ErrClosed) {
				t.Fatalf("got %v, want os.ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Close did not interrupt Read")
		}
		if _, err := rd.Read(); !errors.Is(err, perf.ErrClosed) {
			t.Fatalf("read after close: %v, want ErrClosed", err)
		}
		if err := rd.Close(); err != nil {
			t.Fatalf("second close: %v", err)
		}
	})
	t.Run("the array keeps the closed reader's events", func(t *testing.T) {
		// As in the kernel, the slots hold their own references until the
		// map file that installed them is released.
		ret, err := p.Run(&sim.RunOptions{Context: outputCtx(payload(1), uapi.BPF_F_CURRENT_CPU, 3)})
		if err != nil || ret != 0 {
			t.Fatalf("output after the reader closed: %#x %v, want 0", ret, err)
		}
	})
}

func TestPauseEmptiesTheSlotsAndResumeRefillsThem(t *testing.T) {
	k := newKernel(t, 1)
	m := newPerfArray(t, k, nil)
	rd, err := perf.NewReader(m, 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	p := load(t, k, outputProg(m.FD()))
	run := func() uint32 {
		ret, err := p.Run(&sim.RunOptions{Context: outputCtx(payload(1), uapi.BPF_F_CURRENT_CPU, 3)})
		if err != nil {
			t.Fatal(err)
		}
		return ret
	}
	if err := rd.Pause(); err != nil {
		t.Fatal(err)
	}
	if r := run(); r != errno(int(uapi.ENOENT)) {
		t.Fatalf("paused output returned %#x, want -ENOENT", r)
	}
	if err := rd.Resume(); err != nil {
		t.Fatal(err)
	}
	if r := run(); r != 0 {
		t.Fatalf("resumed output returned %#x, want 0", r)
	}
	if recs := drain(t, rd); len(recs) != 1 {
		t.Fatalf("%d records, want 1", len(recs))
	}
}
