package sim_test

import (
	"testing"
	"time"

	"github.com/cilium/ebpf"
	ciliumringbuf "github.com/cilium/ebpf/ringbuf"

	"github.com/bpfsim/bpfsim/sim/kdiff"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// kernelWakeSide is this machine's kernel's side of a wake case: the same
// programs, read by cilium/ebpf's ringbuf.Reader over epoll.
func kernelWakeSide(t testing.TB) wakeSide {
	t.Helper()
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.RingBuf, MaxEntries: 4096})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	rd, err := ciliumringbuf.NewReader(m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rd.Close() })
	progs := map[uint64]*ebpf.Program{}
	for _, f := range []uint64{0, uapi.BPF_RB_NO_WAKEUP, uapi.BPF_RB_FORCE_WAKEUP} {
		p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "GPL", Instructions: ringbufOutput(m.FD(), f)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		progs[f] = p
	}
	return wakeSide{
		read: func() (bool, error) {
			rec, err := rd.Read()
			return rec.RawSample != nil, err
		},
		output: func(flags uint64) {
			if _, err := progs[flags].Run(&ebpf.RunOptions{Data: make([]byte, 64)}); err != nil {
				t.Error(err)
			}
		},
		flush:    func() { rd.Flush() },
		close:    func() { rd.Close() },
		deadline: rd.SetDeadline,
	}
}

// The wake cases, in this machine's kernel: its readers are woken (or
// not) as bpfsim's are (TestRingbufReadersWakeAsTheKernelWakesThem holds
// bpfsim to the same table).
func TestRingbufWakeCasesAreTheKernels(t *testing.T) {
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	for _, c := range wakeCases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			early, record, err := runWakeCase(t, c, kernelWakeSide(t))
			checkWakeCase(t, "the kernel", c, early, record, err)
		})
	}
}

// BenchmarkRingbufWakeup measures a record's way from a program's
// bpf_ringbuf_output to a reader blocked in Read in another goroutine, in
// bpfsim and, in the same run, in this machine's kernel (a tc test run,
// cilium/ebpf's reader over epoll).
func BenchmarkRingbufWakeup(b *testing.B) {
	sides := map[string]func(testing.TB) wakeSide{"bpfsim": simWakeSide, "kernel": kernelWakeSide}
	for _, name := range []string{"bpfsim", "kernel"} {
		b.Run(name, func(b *testing.B) {
			if name == "kernel" {
				if _, err := kdiff.OpenKernel(); err != nil {
					b.Skipf("no kernel comparison: %v", err)
				}
			}
			s := sides[name](b)
			s.deadline(time.Time{}) // block
			got := make(chan error)
			go func() {
				for {
					_, err := s.read()
					got <- err
					if err != nil {
						return
					}
				}
			}()
			for b.Loop() {
				s.output(0)
				if err := <-got; err != nil {
					b.Fatal(err)
				}
			}
			s.close()
			<-got
		})
	}
}
