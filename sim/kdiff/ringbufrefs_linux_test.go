//go:build linux

package kdiff

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// kernelAddress hides what differs between two kernels' logs: map
// addresses.
var kernelAddress = regexp.MustCompile(`0x[0-9a-f]{8,}`)

// refLog is a verifier log as the comparison sees it.
func refLog(log string) string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		l = strings.TrimRight(l, " ")
		if l == "" || strings.HasPrefix(l, "processed ") || strings.HasPrefix(l, "(0) ") {
			continue
		}
		out = append(out, kernelAddress.ReplaceAllString(l, "ADDR"))
	}
	return strings.Join(out, "\n")
}

// Each program is loaded in this machine's kernel and in bpfsim at log
// level 2: the same verdict, errno and message, and the same whole log,
// line by line: every state printed with its references, the precision
// backtracking, a leak naming the reference and the call that acquired
// it.
func TestRingbufReferencesAreTrackedLikeTheKernel(t *testing.T) {
	k := linuxLikeSim(t)
	kfds, sfds := map[string]int{}, map[string]int{}
	for name, spec := range ringbufRefMaps {
		km, sm := mapsInBoth(t, k, spec)
		kfds[name], sfds[name] = km.FD(), sm.FD()
	}
	accepted, logsCompared := 0, 0
	for _, c := range ringbufRefCases {
		t.Run(c.name, func(t *testing.T) {
			kerr, serr, klog, slog := loadBothLogged(t, k, ringbufRefSpec(t, c.insns, kfds), ringbufRefSpec(t, c.insns, sfds))
			if errnoOf(kerr) != errnoOf(serr) || verifierMessage(kerr) != verifierMessage(serr) {
				t.Fatalf("verdicts differ\nkernel: %v: %s\nbpfsim: %v: %s", errnoOf(kerr), verifierMessage(kerr), errnoOf(serr), verifierMessage(serr))
			}
			if c.errno != errnoOf(kerr) || c.msg != verifierMessage(kerr) {
				t.Errorf("the kernel answers %v: %s; the table (TestRingbufReferenceVerdicts) says %v: %s",
					errnoOf(kerr), verifierMessage(kerr), c.errno, c.msg)
			}
			if kerr == nil {
				accepted++
			}
			if a, b := refLog(klog), refLog(slog); a != b {
				t.Errorf("logs differ\nkernel:\n%s\nbpfsim:\n%s", a, b)
			}
			t.Logf("%v %s", errnoOf(kerr), verifierMessage(kerr))
			logsCompared++
		})
	}
	t.Logf("%d of %d programs accepted by both; %d logs compared", accepted, len(ringbufRefCases), logsCompared)
}

// loadBothLogged loads a program in this machine's kernel (kspec) and in
// bpfsim (sspec) at log level 2 and returns each side's error and whole
// verifier log; the programs are closed.
func loadBothLogged(t *testing.T, k *sim.Kernel, kspec, sspec *ebpf.ProgramSpec) (kerr, serr error, klog, slog string) {
	t.Helper()
	opts := ebpf.ProgramOptions{LogLevel: ebpf.LogLevelInstruction | ebpf.LogLevelBranch, LogSizeStart: 1 << 20}
	kp, kerr := ebpf.NewProgramWithOptions(kspec, opts)
	sp, serr := k.NewProgramWithOptions(sspec, sim.ProgramOptions{LogLevel: opts.LogLevel})
	if kerr == nil {
		klog = kp.VerifierLog
		kp.Close()
	} else {
		var ve *ebpf.VerifierError
		if !errors.As(kerr, &ve) {
			t.Fatalf("kernel: %v", kerr)
		}
		klog = strings.Join(ve.Log, "\n")
	}
	if serr == nil {
		slog = sp.VerifierLog()
		sp.Close()
	} else {
		var ve *verifier.Error
		if !errors.As(serr, &ve) {
			t.Fatalf("bpfsim: %v", serr)
		}
		slog = ve.Log
	}
	return kerr, serr, klog, slog
}

// A program reserves a record for each packet, copies the packet's first
// 16 bytes into it and submits it, or discards it when the first byte is
// odd: in this machine's kernel and in bpfsim, interpreted and JITed, the
// same return values and the same records, in order. Records of 24 bytes
// in a 4,096-byte ring wrap around its end, where the record is written
// through the second mapping of the data pages.
func TestRingbufReserveSubmitMatchesKernel(t *testing.T) {
	if _, err := OpenKernel(); err != nil {
		t.Skipf("kernel comparison skipped: this machine cannot load BPF programs: %v", err)
	}
	prog := seq(asm.Instructions{
		asm.LoadMem(asm.R7, asm.R1, 0, asm.Word),
		asm.LoadMem(asm.R8, asm.R1, 4, asm.Word),
		asm.Mov.Reg(asm.R2, asm.R7),
		asm.Add.Imm(asm.R2, 16),
		asm.JGT.Reg(asm.R2, asm.R8, "short"),
	}, reserveInsns(16), asm.Instructions{
		asm.JEq.Imm(asm.R0, 0, "full"),
		asm.Mov.Reg(asm.R6, asm.R0),
		asm.LoadMem(asm.R2, asm.R7, 0, asm.DWord),
		asm.StoreMem(asm.R6, 0, asm.R2, asm.DWord),
		asm.LoadMem(asm.R2, asm.R7, 8, asm.DWord),
		asm.StoreMem(asm.R6, 8, asm.R2, asm.DWord),
		asm.LoadMem(asm.R2, asm.R7, 0, asm.Byte),
		asm.And.Imm(asm.R2, 1),
		asm.JEq.Imm(asm.R2, 0, "submit"),
	}, commitInsns(asm.R6, true), asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()},
		label("submit", commitInsns(asm.R6, false)), asm.Instructions{
			asm.Mov.Imm(asm.R0, 0), asm.Return(),
			asm.Mov.Imm(asm.R0, 2).WithSymbol("full"), asm.Return(),
			asm.Mov.Imm(asm.R0, 3).WithSymbol("short"), asm.Return(),
		})
	pkts := make([][]byte, 600)
	for i := range pkts {
		pkts[i] = make([]byte, 20)
		for j := range pkts[i] {
			pkts[i][j] = byte(i*7 + j*13 + i*j)
		}
	}
	// A drain every 200 packets: the ring fills in between (170 records
	// of 24 bytes, discarded ones included), so that some reservations
	// fail.
	type result struct{ rets, records []string }
	run := func(runProg func([]byte) uint32, drain func() []string) result {
		var res result
		for i, pkt := range pkts {
			res.rets = append(res.rets, fmt.Sprint(runProg(pkt)))
			if i%200 == 199 {
				res.records = append(res.records, drain()...)
			}
		}
		res.records = append(res.records, drain()...)
		return res
	}
	km, err := ebpf.NewMap(ringbufRefMaps["rb"])
	if err != nil {
		t.Fatal(err)
	}
	defer km.Close()
	kp, err := ebpf.NewProgram(ringbufRefSpec(t, prog, map[string]int{"rb": km.FD()}))
	if err != nil {
		t.Fatal(err)
	}
	defer kp.Close()
	krd, err := ringbuf.NewReader(km)
	if err != nil {
		t.Fatal(err)
	}
	defer krd.Close()
	want := run(func(pkt []byte) uint32 {
		r, err := kp.Run(&ebpf.RunOptions{Data: pkt})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}, func() []string {
		krd.SetDeadline(time.Now())
		return drainRing(t, func() ([]byte, error) { rec, err := krd.Read(); return rec.RawSample, err })
	})
	full := strings.Count(strings.Join(want.rets, " "), "2")
	discarded := strings.Count(strings.Join(want.rets, " "), "1")
	t.Logf("kernel: %d records read, %d discarded, %d reservations found the ring full", len(want.records), discarded, full)
	if full == 0 || discarded == 0 || len(want.records) < 200 {
		t.Fatalf("the kernel's run did not fill the ring (%d full) or kept too few records (%d)", full, len(want.records))
	}
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		k, err := sim.NewKernel(&sim.Options{Runtime: rt})
		if err != nil {
			t.Fatal(err)
		}
		sm, err := k.NewMap(ringbufRefMaps["rb"])
		if err != nil {
			t.Fatal(err)
		}
		sp, err := k.NewProgram(ringbufRefSpec(t, prog, map[string]int{"rb": sm.FD()}))
		if err != nil {
			t.Fatal(err)
		}
		srd, err := sim.NewRingbufReader(sm)
		if err != nil {
			t.Fatal(err)
		}
		got := run(func(pkt []byte) uint32 {
			r, err := sp.Run(&sim.RunOptions{Data: pkt})
			if err != nil {
				t.Fatal(err)
			}
			return uint32(r)
		}, func() []string {
			return drainRing(t, func() ([]byte, error) { rec, err := srd.Read(); return rec.RawSample, err })
		})
		if fmt.Sprint(got.rets) != fmt.Sprint(want.rets) {
			t.Errorf("%v: return values differ\nkernel: %v\nbpfsim: %v", rt, want.rets, got.rets)
		}
		if fmt.Sprint(got.records) != fmt.Sprint(want.records) {
			t.Errorf("%v: records differ: kernel %d, bpfsim %d\nkernel: %v\nbpfsim: %v", rt, len(want.records), len(got.records), want.records, got.records)
		}
		srd.Close()
		sp.Close()
		sm.Close()
	}
}

// ringbufReserveDynptrLoop is ringbufReserveLoop through a ring buffer
// dynptr at fp-16, writing the counter from fp-24.
func ringbufReserveDynptrLoop(fd int, n int32) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Imm(asm.R6, n),
		asm.LoadMapPtr(asm.R1, fd).WithSymbol("loop"),
		asm.Mov.Imm(asm.R2, 64),
		asm.Mov.Imm(asm.R3, 0),
		asm.Mov.Reg(asm.R4, asm.RFP),
		asm.Add.Imm(asm.R4, -16),
		asm.BuiltinFunc(uapi.FuncRingbufReserveDynptr).Call(),
		asm.Mov.Reg(asm.R7, asm.R0),
		asm.StoreMem(asm.RFP, -24, asm.R6, asm.DWord),
		asm.Mov.Reg(asm.R1, asm.RFP),
		asm.Add.Imm(asm.R1, -16),
		asm.Mov.Imm(asm.R2, 0),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -24),
		asm.Mov.Imm(asm.R4, 8),
		asm.Mov.Imm(asm.R5, 0),
		asm.BuiltinFunc(uapi.FuncDynptrWrite).Call(),
		asm.Mov.Reg(asm.R1, asm.RFP),
		asm.Add.Imm(asm.R1, -16),
		asm.Mov.Imm(asm.R2, uapi.BPF_RB_NO_WAKEUP),
		asm.BuiltinFunc(uapi.FuncRingbufSubmitDynptr).Call(),
		asm.JNE.Imm(asm.R7, 0, "full"),
		asm.Sub.Imm(asm.R6, 1),
		asm.JNE.Imm(asm.R6, 0, "loop"),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 2).WithSymbol("full"),
		asm.Return(),
	}
}

// ringbufReserveLoop reserves, fills and submits n records of 64 bytes
// in ring fd; 2 if one found the ring full.
func ringbufReserveLoop(fd int, n int32) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Imm(asm.R6, n),
		asm.LoadMapPtr(asm.R1, fd).WithSymbol("loop"),
		asm.Mov.Imm(asm.R2, 64),
		asm.Mov.Imm(asm.R3, 0),
		asm.FnRingbufReserve.Call(),
		asm.JEq.Imm(asm.R0, 0, "full"),
		asm.StoreMem(asm.R0, 0, asm.R6, asm.DWord),
		asm.Mov.Reg(asm.R1, asm.R0),
		asm.Mov.Imm(asm.R2, uapi.BPF_RB_NO_WAKEUP),
		asm.FnRingbufSubmit.Call(),
		asm.Sub.Imm(asm.R6, 1),
		asm.JNE.Imm(asm.R6, 0, "loop"),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 2).WithSymbol("full"),
		asm.Return(),
	}
}

// BenchmarkRingbufReserveSubmit is one 64-byte record reserved, written
// and submitted by a program (loop overhead, four instructions, included),
// on bpfsim (interpreted) and, through BPF_PROG_TEST_RUN with repeat, on
// this machine's kernel; the ring is drained between batches, outside the
// time measured (the runners' own durations). The dynptr- runs do the
// same through a ring buffer dynptr (bpf_ringbuf_reserve_dynptr,
// bpf_dynptr_write of 8 bytes, bpf_ringbuf_submit_dynptr).
func BenchmarkRingbufReserveSubmit(b *testing.B) {
	benchRingbufLoop(b, "", ringbufReserveLoop)
	benchRingbufLoop(b, "dynptr-", ringbufReserveDynptrLoop)
}

func benchRingbufLoop(b *testing.B, prefix string, loop func(fd int, n int32) asm.Instructions) {
	const perRun, runsPerBatch = 50, 200 // 10,000 records of 72 bytes in 1 MiB
	spec := &ebpf.MapSpec{Type: ebpf.RingBuf, MaxEntries: 1 << 20}
	measure := func(b *testing.B, run func(repeat int) (uint32, time.Duration), drain func() int) {
		var total time.Duration
		for done := 0; done < b.N; {
			n := min(runsPerBatch, b.N-done)
			ret, d := run(n)
			if ret != 0 {
				b.Fatalf("the program returned %d", ret)
			}
			total += d * time.Duration(n)
			if got := drain(); got != n*perRun {
				b.Fatalf("%d records read, want %d", got, n*perRun)
			}
			done += n
		}
		b.ReportMetric(float64(total.Nanoseconds())/float64(b.N*perRun), "ns/record")
		b.ReportMetric(0, "ns/op")
	}
	b.Run(prefix+"bpfsim", func(b *testing.B) {
		k, err := sim.NewKernel(nil)
		if err != nil {
			b.Fatal(err)
		}
		m, err := k.NewMap(spec)
		if err != nil {
			b.Fatal(err)
		}
		defer m.Close()
		p, err := k.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: loop(m.FD(), perRun)})
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		rd, err := sim.NewRingbufReader(m)
		if err != nil {
			b.Fatal(err)
		}
		defer rd.Close()
		pkt := make([]byte, 64)
		b.ResetTimer()
		measure(b, func(repeat int) (uint32, time.Duration) {
			res, err := p.Test(&sim.RunOptions{Data: pkt, Repeat: uint32(repeat)})
			if err != nil {
				b.Fatal(err)
			}
			return uint32(res.R0), res.Duration
		}, func() int {
			return countRing(b, func() error { _, err := rd.Read(); return err })
		})
	})
	b.Run(prefix+"kernel", func(b *testing.B) {
		if _, err := OpenKernel(); err != nil {
			b.Skipf("skipped: this machine cannot load BPF programs: %v", err)
		}
		m, err := ebpf.NewMap(spec)
		if err != nil {
			b.Fatal(err)
		}
		defer m.Close()
		p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: loop(m.FD(), perRun)})
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		rd, err := ringbuf.NewReader(m)
		if err != nil {
			b.Fatal(err)
		}
		defer rd.Close()
		pkt := make([]byte, 64)
		b.ResetTimer()
		measure(b, func(repeat int) (uint32, time.Duration) {
			ret, d, err := p.Benchmark(pkt, repeat, nil)
			if err != nil {
				b.Fatal(err)
			}
			return ret, d
		}, func() int {
			rd.SetDeadline(time.Now())
			var rec ringbuf.Record
			return countRing(b, func() error { return rd.ReadInto(&rec) })
		})
	})
}

// countRing reads records until none is ready and returns how many.
func countRing(b *testing.B, read func() error) int {
	for n := 0; ; n++ {
		err := read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return n
		}
		if err != nil {
			b.Fatal(err)
		}
	}
}
