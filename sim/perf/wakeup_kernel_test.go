//go:build linux

package perf_test

import (
	"testing"

	"github.com/cilium/ebpf"
	kperf "github.com/cilium/ebpf/perf"

	"github.com/bpfsim/bpfsim/sim/perf"
)

// kernelWakeSide is this machine's kernel's side: the same program, test
// runs on CPU 0, and cilium/ebpf's reader with the same options.
func kernelWakeSide(t *testing.T, opts perf.ReaderOptions) wakeSide {
	t.Helper()
	arr, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.PerfEventArray})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { arr.Close() })
	rd, err := kperf.NewReaderWithOptions(arr, 4096, kperf.ReaderOptions{Watermark: opts.Watermark, WakeupEvents: opts.WakeupEvents})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rd.Close() })
	p, err := ebpf.NewProgram(outputProg(arr.FD()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	ctx := outputCtx([]byte("8 bytes!"), 0xffffffff, 8)
	return wakeSide{
		read: func() (bool, error) {
			r, err := rd.Read()
			return r.RawSample != nil, err
		},
		output: func() {
			// BPF_F_TEST_RUN_ON_CPU: the raw tracepoint runs on CPU 0.
			if ret, err := p.Run(&ebpf.RunOptions{Context: ctx, CPU: 0, Flags: 1}); err != nil || ret != 0 {
				t.Errorf("output: %d, %v", int32(ret), err)
			}
		},
		deadline: rd.SetDeadline,
	}
}

// The wake cases in this machine's kernel: its readers wake as bpfsim's
// (TestPerfReadersWakeAsTheKernelWakesThem holds bpfsim to the table).
func TestPerfWakeCasesAreTheKernels(t *testing.T) {
	openKernel(t)
	for _, c := range wakeCases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			early, sample := runWakeCase(t, c, kernelWakeSide(t, c.opts))
			if early != c.early || !sample {
				t.Errorf("the kernel: returned early %v, with a sample %v; want early %v, with a sample", early, sample, c.early)
			}
		})
	}
}
