package sim_test

import (
	"errors"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	ciliumringbuf "github.com/cilium/ebpf/ringbuf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// wakeCase is a reader blocked on an empty ring buffer, and what happens
// while it waits: records output with flags, one after the other, then
// maybe a flush or a close.
type wakeCase struct {
	name         string
	flags        []uint64
	flush, close bool
	// What the reader's Read does: return early (before its deadline)
	// or at it, with a record or with an error.
	early  bool
	record bool
	err    error
}

var wakeCases = []wakeCase{
	{name: "a record wakes the reader", flags: []uint64{0}, early: true, record: true},
	{name: "a record without wake-up does not", flags: []uint64{uapi.BPF_RB_NO_WAKEUP}, record: true},
	// The second record is not the one the reader waits for.
	{name: "a record behind one without wake-up does not", flags: []uint64{uapi.BPF_RB_NO_WAKEUP, 0}, record: true},
	{name: "a forced wake-up behind one without does", flags: []uint64{uapi.BPF_RB_NO_WAKEUP, uapi.BPF_RB_FORCE_WAKEUP}, early: true, record: true},
	{name: "a forced wake-up does", flags: []uint64{uapi.BPF_RB_FORCE_WAKEUP}, early: true, record: true},
	{name: "a flush returns the record without wake-up", flags: []uint64{uapi.BPF_RB_NO_WAKEUP}, flush: true, early: true, record: true},
	{name: "a flush of nothing", flush: true, early: true, err: ciliumringbuf.ErrFlushed},
	{name: "a close", close: true, early: true, err: os.ErrClosed},
	{name: "nothing", err: os.ErrDeadlineExceeded},
}

// Timings of a wake case: the deadline, when the records are output after
// the reader blocked, and the time before which a return is early.
const (
	wakeDeadline = 800 * time.Millisecond
	wakeOutputAt = 100 * time.Millisecond
	wakeEarly    = 400 * time.Millisecond
)

// ringbufOutput is a tc program that outputs an 8-byte record with flags.
func ringbufOutput(fd int, flags uint64) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Imm(asm.R1, 42),
		asm.StoreMem(asm.RFP, -8, asm.R1, asm.DWord),
		asm.LoadMapPtr(asm.R1, fd),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -8),
		asm.Mov.Imm(asm.R3, 8),
		asm.Mov.Imm(asm.R4, int32(flags)),
		asm.FnRingbufOutput.Call(),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
	}
}

// wakeSide is one kernel's ring buffer: a reader and the outputs.
type wakeSide struct {
	read     func() (record bool, err error)
	output   func(flags uint64)
	flush    func()
	close    func()
	deadline func(time.Time)
}

// runWakeCase plays c on a side and returns what its reader did.
func runWakeCase(t *testing.T, c wakeCase, s wakeSide) (early, record bool, err error) {
	t.Helper()
	s.deadline(time.Now().Add(wakeDeadline))
	type result struct {
		record bool
		err    error
		took   time.Duration
	}
	done := make(chan result, 1)
	go func() {
		start := time.Now()
		record, err := s.read()
		done <- result{record, err, time.Since(start)}
	}()
	time.Sleep(wakeOutputAt)
	for _, f := range c.flags {
		s.output(f)
	}
	switch {
	case c.flush:
		s.flush()
	case c.close:
		s.close()
	}
	r := <-done
	return r.took < wakeEarly, r.record, r.err
}

// checkWakeCase fails t unless the reader did what c says.
func checkWakeCase(t *testing.T, who string, c wakeCase, early, record bool, err error) {
	t.Helper()
	if early != c.early || record != c.record || (c.err == nil) != (err == nil) || c.err != nil && !errors.Is(err, c.err) {
		t.Errorf("%s: returned early %v, with a record %v, error %v; want early %v, a record %v, error %v", who, early, record, err, c.early, c.record, c.err)
	}
}

// simWakeSide is bpfsim's side of a wake case.
func simWakeSide(t testing.TB) wakeSide {
	t.Helper()
	k := newKernel(t, nil)
	m, err := k.NewMap(&ebpf.MapSpec{Type: ebpf.RingBuf, MaxEntries: 4096})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	rd, err := sim.NewRingbufReader(m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rd.Close() })
	progs := map[uint64]*sim.Program{}
	for _, f := range []uint64{0, uapi.BPF_RB_NO_WAKEUP, uapi.BPF_RB_FORCE_WAKEUP} {
		progs[f] = load(t, k, ebpf.SchedCLS, ringbufOutput(m.FD(), f))
	}
	return wakeSide{
		read: func() (bool, error) {
			rec, err := rd.Read()
			return rec.RawSample != nil, err
		},
		output: func(flags uint64) {
			if _, err := progs[flags].Test(&sim.RunOptions{Data: make([]byte, 64)}); err != nil {
				t.Error(err)
			}
		},
		flush:    func() { rd.Flush() },
		close:    func() { rd.Close() },
		deadline: rd.SetDeadline,
	}
}

// A reader blocked on a ring buffer is woken as bpf_ringbuf_commit wakes
// the kernel's (by a record it was waiting for, unless
// BPF_RB_NO_WAKEUP; by BPF_RB_FORCE_WAKEUP always), and by a flush or a
// close; otherwise it sleeps to its deadline, and then reads what came.
func TestRingbufReadersWakeAsTheKernelWakesThem(t *testing.T) {
	for _, c := range wakeCases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			early, record, err := runWakeCase(t, c, simWakeSide(t))
			checkWakeCase(t, "bpfsim", c, early, record, err)
		})
	}
}

// Without a deadline set, Read never blocks.
func TestRingbufReaderWithoutDeadlineDoesNotBlock(t *testing.T) {
	s := simWakeSide(t)
	start := time.Now()
	if _, err := s.read(); !errors.Is(err, os.ErrDeadlineExceeded) || time.Since(start) > wakeEarly {
		t.Errorf("an empty ring: %v after %v", err, time.Since(start))
	}
	s.output(uapi.BPF_RB_NO_WAKEUP)
	if record, err := s.read(); !record || err != nil {
		t.Errorf("a ready record: %v, %v", record, err)
	}
}
