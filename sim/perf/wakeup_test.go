package perf_test

import (
	"testing"
	"time"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/perf"
)

// wakeCase is a reader blocked on empty rings, and samples written to
// CPU 0's ring while it waits: whether they wake it before its deadline.
type wakeCase struct {
	name    string
	opts    perf.ReaderOptions
	samples int
	early   bool
}

// Each sample is a 24-byte record: the header, the u32 size and 12 bytes
// of padded raw data. The rings have one page; half of it is 2048 bytes.
var wakeCases = []wakeCase{
	{"every sample wakes by default", perf.ReaderOptions{}, 1, true},
	{"two samples of three wait", perf.ReaderOptions{WakeupEvents: 3}, 2, false},
	{"the third sample of three wakes", perf.ReaderOptions{WakeupEvents: 3}, 3, true},
	{"four samples under a 100-byte watermark wait", perf.ReaderOptions{Watermark: 100}, 4, false},
	{"the fifth sample crosses the watermark", perf.ReaderOptions{Watermark: 100}, 5, true},
	{"four samples reaching a 96-byte watermark do not cross it", perf.ReaderOptions{Watermark: 96}, 4, false},
	{"85 samples of a thousand wait", perf.ReaderOptions{WakeupEvents: 1000}, 85, false},
	{"the 86th crosses half the ring", perf.ReaderOptions{WakeupEvents: 1000}, 86, true},
}

const (
	wakeDeadline = 800 * time.Millisecond
	wakeOutputAt = 100 * time.Millisecond
	wakeEarly    = 400 * time.Millisecond
)

// wakeSide is one kernel's perf ring: its reader and a sample writer.
type wakeSide struct {
	read     func() (sample bool, err error)
	output   func()
	deadline func(time.Time)
}

// runWakeCase writes c's samples while the reader waits and returns
// whether it returned early, with a sample.
func runWakeCase(t *testing.T, c wakeCase, s wakeSide) (early, sample bool) {
	t.Helper()
	s.deadline(time.Now().Add(wakeDeadline))
	type result struct {
		sample bool
		err    error
		took   time.Duration
	}
	done := make(chan result, 1)
	go func() {
		start := time.Now()
		sample, err := s.read()
		done <- result{sample, err, time.Since(start)}
	}()
	time.Sleep(wakeOutputAt)
	for i := 0; i < c.samples; i++ {
		s.output()
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("Read: %v", r.err)
	}
	return r.took < wakeEarly, r.sample
}

// simWakeSide is bpfsim's side: one CPU's rings, read by sim/perf.
func simWakeSide(t *testing.T, opts perf.ReaderOptions) wakeSide {
	t.Helper()
	k := newKernel(t, 2)
	arr := newPerfArray(t, k, nil)
	rd, err := perf.NewReaderWithOptions(arr, 4096, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rd.Close() })
	p := load(t, k, outputProg(arr.FD()))
	ctx := outputCtx([]byte("8 bytes!"), 0xffffffff, 8) // BPF_F_CURRENT_CPU
	return wakeSide{
		read: func() (bool, error) {
			r, err := rd.Read()
			return r.RawSample != nil, err
		},
		output: func() {
			if ret, err := p.Run(&sim.RunOptions{Context: ctx, CPU: 0}); err != nil || ret != 0 {
				t.Errorf("output: %d, %v", int32(ret), err)
			}
		},
		deadline: rd.SetDeadline,
	}
}

// A blocked reader is woken as the kernel's perf rings wake theirs: every
// WakeupEvents samples, each Watermark bytes, and each half ring whatever
// the options; otherwise it sleeps to its deadline and then reads what
// came.
func TestPerfReadersWakeAsTheKernelWakesThem(t *testing.T) {
	for _, c := range wakeCases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			early, sample := runWakeCase(t, c, simWakeSide(t, c.opts))
			if early != c.early || !sample {
				t.Errorf("bpfsim: returned early %v, with a sample %v; want early %v, with a sample", early, sample, c.early)
			}
		})
	}
}

func TestPerfReaderOptionsAreChecked(t *testing.T) {
	k := newKernel(t, 2)
	arr := newPerfArray(t, k, nil)
	for _, opts := range []perf.ReaderOptions{{Watermark: 1, WakeupEvents: 1}, {Overwritable: true}, {Watermark: -1}} {
		if rd, err := perf.NewReaderWithOptions(arr, 4096, opts); err == nil {
			rd.Close()
			t.Errorf("%+v: no error", opts)
		}
	}
}
