package kdiff

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim/uapi"
)

// dynptrLogCases are small programs whose whole level-2 logs are
// compared: dynptr slots in the states, slices, references, and the
// destruction of a dynptr by a store.
var dynptrLogCases = []struct {
	name  string
	insns asm.Instructions
}{
	{"local read, data and write", append(localOverArr(), asm.Instructions{
		asm.Mov.Reg(asm.R1, asm.RFP),
		asm.Add.Imm(asm.R1, -24),
		asm.Mov.Imm(asm.R2, 4),
		asm.Mov.Imm(asm.R3, 8),
		asm.BuiltinFunc(uapi.FuncDynptrData).Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.Mov.Imm(asm.R1, 7),
		asm.StoreMem(asm.R0, 7, asm.R1, asm.Byte),
		asm.Mov.Reg(asm.R1, asm.RFP),
		asm.Add.Imm(asm.R1, -32),
		asm.Mov.Imm(asm.R2, 8),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -24),
		asm.Mov.Imm(asm.R4, 0),
		asm.Mov.Imm(asm.R5, 0),
		asm.BuiltinFunc(uapi.FuncDynptrRead).Call(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	}...)},
	{"ringbuf reserve, slice, submit", append(reserveInRb(), asm.Instructions{
		asm.Mov.Reg(asm.R1, asm.RFP),
		asm.Add.Imm(asm.R1, -16),
		asm.Mov.Imm(asm.R2, 0),
		asm.Mov.Imm(asm.R3, 8),
		asm.BuiltinFunc(uapi.FuncDynptrData).Call(),
		asm.JEq.Imm(asm.R0, 0, "submit"),
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
		asm.Mov.Reg(asm.R1, asm.RFP).WithSymbol("submit"),
		asm.Add.Imm(asm.R1, -16),
		asm.Mov.Imm(asm.R2, 0),
		asm.BuiltinFunc(uapi.FuncRingbufSubmitDynptr).Call(),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
	}...)},
	{"ringbuf dynptr leaked", append(reserveInRb(), asm.Instructions{
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
	}...)},
	{"local dynptr destroyed by a store", append(localOverArr(), asm.Instructions{
		asm.Mov.Imm(asm.R1, 0),
		asm.StoreMem(asm.RFP, -20, asm.R1, asm.Word),
		asm.Mov.Reg(asm.R1, asm.RFP),
		asm.Add.Imm(asm.R1, -24),
		asm.Mov.Imm(asm.R2, 0),
		asm.Mov.Imm(asm.R3, 8),
		asm.BuiltinFunc(uapi.FuncDynptrData).Call(),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
	}...)},
}

// Dynptr programs loaded at log level 2 in this machine's kernel and in
// bpfsim: the same verdicts and the same whole logs, line by line (the
// dynptr slots in each state, slices, references).
func TestDynptrLogsAreTheKernels(t *testing.T) {
	k := linuxLikeSim(t)
	kfds, sfds := map[string]int{}, map[string]int{}
	for name, spec := range ringbufRefMaps {
		km, sm := mapsInBoth(t, k, spec)
		kfds[name], sfds[name] = km.FD(), sm.FD()
	}
	for _, c := range dynptrLogCases {
		t.Run(c.name, func(t *testing.T) {
			kerr, serr, klog, slog := loadBothLogged(t, k, ringbufRefSpec(t, c.insns, kfds), ringbufRefSpec(t, c.insns, sfds))
			if errnoOf(kerr) != errnoOf(serr) || verifierMessage(kerr) != verifierMessage(serr) {
				t.Fatalf("verdicts differ\nkernel: %v: %s\nbpfsim: %v: %s", errnoOf(kerr), verifierMessage(kerr), errnoOf(serr), verifierMessage(serr))
			}
			if a, b := refLog(klog), refLog(slog); a != b {
				t.Errorf("logs differ\nkernel:\n%s\nbpfsim:\n%s", a, b)
			}
			t.Logf("%v %s", errnoOf(kerr), verifierMessage(kerr))
		})
	}
}

// localOverArr makes a local dynptr at fp-24 over the value of the array
// "arr" (exiting when the lookup fails).
func localOverArr() asm.Instructions {
	return asm.Instructions{
		asm.Mov.Imm(asm.R1, 0),
		asm.StoreMem(asm.RFP, -4, asm.R1, asm.Word),
		asm.LoadMapPtr(asm.R1, 0).WithReference("arr"),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JNE.Imm(asm.R0, 0, "found"),
		asm.Return(),
		asm.Mov.Reg(asm.R1, asm.R0).WithSymbol("found"),
		asm.Mov.Imm(asm.R2, 16),
		asm.Mov.Imm(asm.R3, 0),
		asm.Mov.Reg(asm.R4, asm.RFP),
		asm.Add.Imm(asm.R4, -24),
		asm.BuiltinFunc(uapi.FuncDynptrFromMem).Call(),
	}
}

// A program passing its dynptr to global functions, logged at level 2 in
// this machine's kernel and in bpfsim: each function verified on its own
// with a CONST_PTR_TO_DYNPTR argument, the same whole logs.
func TestDynptrGlobalFunctionLogIsTheKernels(t *testing.T) {
	k := linuxLikeSim(t)
	spec, err := ebpf.LoadCollectionSpec("../testdata/dynptr_global.bpf.o")
	if err != nil {
		t.Fatal(err)
	}
	p := spec.Programs["accepted"]
	kerr, serr, klog, slog := loadBothLogged(t, k, p.Copy(), p.Copy())
	if kerr != nil || serr != nil {
		t.Fatalf("kernel: %v\nbpfsim: %v", kerr, serr)
	}
	if a, b := globalFuncLog(klog), globalFuncLog(slog); a != b {
		t.Errorf("logs differ\nkernel:\n%s\nbpfsim:\n%s", a, b)
	}
}

var (
	kfuncCallID   = regexp.MustCompile(`(call bpf_\w+)#\d+`)
	statePadding  = regexp.MustCompile(` +;( |$)`)
	stackLiveness = regexp.MustCompile(`^\([\d,]+\) (frame \d+ insn \d+ \+(live|written)|live stack update)`)
)

// globalFuncLog is refLog without what bpfsim's logs lack for any
// program, which TestDynptrGlobalFunctionLogIsTheKernels does not test:
// 6.18's stack liveness lines of each function; and with the kfuncs' BTF
// ids, which are each kernel's own.
func globalFuncLog(log string) string {
	var out []string
	for _, l := range strings.Split(refLog(log), "\n") {
		if stackLiveness.MatchString(l) {
			continue
		}
		// The state after an instruction is padded to a column the
		// ids' digits move.
		l = kfuncCallID.ReplaceAllString(l, "$1#ID")
		out = append(out, statePadding.ReplaceAllString(l, " ;$1"))
	}
	return strings.Join(out, "\n")
}

// reserveInRb reserves an 8-byte record of the ring "rb" in a dynptr at
// fp-16.
func reserveInRb() asm.Instructions {
	return asm.Instructions{
		asm.LoadMapPtr(asm.R1, 0).WithReference("rb"),
		asm.Mov.Imm(asm.R2, 8),
		asm.Mov.Imm(asm.R3, 0),
		asm.Mov.Reg(asm.R4, asm.RFP),
		asm.Add.Imm(asm.R4, -16),
		asm.BuiltinFunc(uapi.FuncRingbufReserveDynptr).Call(),
	}
}

// Programs looping over open-coded numeric iterators, logged at level 2
// in this machine's kernel and in bpfsim: the iterator's slots and
// references in each state, the drained and active paths of each
// bpf_iter_num_next, where the loop converges, the loops' entries, exits
// and backedges (6.17's SCC lines), the same whole logs.
func TestIterLogsAreTheKernels(t *testing.T) {
	k := linuxLikeSim(t)
	for _, c := range []struct{ obj, prog string }{
		{"iter_refused.bpf.o", "accepted"}, {"iter_refused.bpf.o", "nested"}, {"iter_refused.bpf.o", "index_checked"},
		{"iter_refused.bpf.o", "counter_widened"}, {"iter_refused.bpf.o", "next_used_after_destroy"},
		{"iter_refused.bpf.o", "next_in_static_callee"}, {"iter_refused.bpf.o", "destroy_in_static_callee"},
		{"iter_refused.bpf.o", "new_in_static_callee"}, {"iter_refused.bpf.o", "iterator_in_loop_callback"},
		{"iter.bpf.o", "range"}, {"iter.bpf.o", "nested"}, {"iter.bpf.o", "table"},
		{"iter.bpf.o", "functions"}, {"iter.bpf.o", "callchains"}, {"iter.bpf.o", "for_loop"}, {"iter.bpf.o", "bits"},
	} {
		t.Run(c.obj+"/"+c.prog, func(t *testing.T) {
			spec, err := ebpf.LoadCollectionSpec("../testdata/" + c.obj)
			if err != nil {
				t.Fatal(err)
			}
			kp, sp := spec.Programs[c.prog].Copy(), spec.Programs[c.prog].Copy()
			// The maps the program uses, made alike in both.
			for name, ms := range spec.Maps {
				if strings.HasPrefix(name, ".") {
					continue // data sections: the programs use none
				}
				km, sm := mapsInBoth(t, k, ms)
				if err := kp.Instructions.AssociateMap(name, km); err != nil && !errors.Is(err, asm.ErrUnreferencedSymbol) {
					t.Fatal(err)
				}
				if err := sp.Instructions.AssociateMap(name, sm); err != nil && !errors.Is(err, asm.ErrUnreferencedSymbol) {
					t.Fatal(err)
				}
			}
			kerr, serr, klog, slog := loadBothLogged(t, k, kp, sp)
			if errnoOf(kerr) != errnoOf(serr) || verifierMessage(kerr) != verifierMessage(serr) {
				t.Fatalf("verdicts differ\nkernel: %v: %s\nbpfsim: %v: %s", errnoOf(kerr), verifierMessage(kerr), errnoOf(serr), verifierMessage(serr))
			}
			if a, b := globalFuncLog(klog), globalFuncLog(slog); a != b {
				t.Errorf("logs differ\nkernel:\n%s\nbpfsim:\n%s", a, b)
			}
			// And the same instructions processed and states kept.
			if a, b := statsLine(klog), statsLine(slog); a != b || a == "" {
				t.Errorf("kernel: %s\nbpfsim: %s", a, b)
			}
		})
	}
}

// statsLine is a log's "processed N insns ..." line.
func statsLine(log string) string {
	for _, l := range strings.Split(log, "\n") {
		if strings.HasPrefix(l, "processed ") {
			return strings.TrimSpace(l)
		}
	}
	return ""
}
