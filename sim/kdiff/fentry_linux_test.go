package kdiff

import (
	"errors"
	"fmt"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/bpfsim/bpfsim/sim"
)

// fentryArgs are the parameter counts of bpf_fentry_test1 to 10.
var fentryArgs = []int{1, 2, 3, 4, 5, 6, 1, 1, 1, 1}

// pointerSlot marks the slots that hold kernel stack addresses, which
// differ between kernels: their programs store whether they are NULL.
func pointerSlot(fn, slot int) bool { return (fn == 8 || fn == 9) && slot == 0 }

// recorder is an fentry or fexit program of bpf_fentry_test<fn> that
// stores each slot of its context (and, for fexit, the return value) in
// the array "seen" at fn*16 (+8 for fexit) + slot; for test8 it also
// stores arg->a, read through the kernel object, at +7.
func recorder(fn int, fexit bool, seenFD int) asm.Instructions {
	base := int32(fn * 16)
	if fexit {
		base += 8
	}
	slots := fentryArgs[fn-1]
	if fexit {
		slots++
	}
	var insns asm.Instructions
	insns = append(insns, asm.Mov.Reg(asm.R6, asm.R1))
	store := func(idx int32, label string) {
		insns = append(insns,
			asm.StoreMem(asm.RFP, -16, asm.R7, asm.DWord),
			asm.Mov.Imm(asm.R1, idx),
			asm.StoreMem(asm.RFP, -4, asm.R1, asm.Word),
			asm.LoadMapPtr(asm.R1, seenFD),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -4),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, label),
			asm.LoadMem(asm.R7, asm.RFP, -16, asm.DWord),
			asm.StoreMem(asm.R0, 0, asm.R7, asm.DWord),
			asm.Mov.Imm(asm.R0, 0).WithSymbol(label),
		)
	}
	for i := 0; i < slots; i++ {
		insns = append(insns, asm.LoadMem(asm.R7, asm.R6, int16(8*i), asm.DWord))
		if pointerSlot(fn, i) {
			insns = append(insns, asm.JEq.Imm(asm.R7, 0, fmt.Sprintf("z%d", i)), asm.Mov.Imm(asm.R7, 1), asm.Mov.Imm(asm.R0, 0).WithSymbol(fmt.Sprintf("z%d", i)))
		}
		store(base+int32(i), fmt.Sprintf("s%d", i))
	}
	if fn == 8 && !fexit {
		insns = append(insns,
			asm.LoadMem(asm.R7, asm.R6, 0, asm.DWord),
			asm.LoadMem(asm.R7, asm.R7, 0, asm.DWord),
			asm.Add.Imm(asm.R7, 100))
		store(base+7, "deref")
	}
	return append(insns, asm.Mov.Imm(asm.R0, 0), asm.Return())
}

var seenSpec = &ebpf.MapSpec{Name: "seen", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 16 * 11}

// fentry and fexit programs attached to bpf_fentry_test1 to 10, in this
// machine's kernel and in bpfsim, and a test run that calls them
// (bpf_prog_test_run_tracing): every argument and return value each
// program saw, as it stored them in a map, alike; and the test run's
// return value and errno, alike.
func TestFentryFexitAreTheKernels(t *testing.T) {
	k := linuxLikeSim(t)
	if _, err := btf.LoadKernelSpec(); err != nil {
		t.Skipf("skipped: no kernel BTF: %v", err)
	}
	kseen, err := ebpf.NewMap(seenSpec)
	if err != nil {
		t.Fatal(err)
	}
	defer kseen.Close()
	sseen, err := k.NewMap(seenSpec)
	if err != nil {
		t.Fatal(err)
	}
	defer sseen.Close()
	var kfirst *ebpf.Program
	var sfirst *sim.Program
	for fn := 1; fn <= 10; fn++ {
		for _, fexit := range []bool{false, true} {
			at := ebpf.AttachTraceFEntry
			if fexit {
				at = ebpf.AttachTraceFExit
			}
			spec := func(m int) *ebpf.ProgramSpec {
				insns := recorder(fn, fexit, m)
				return &ebpf.ProgramSpec{Name: "rec", Type: ebpf.Tracing, AttachType: at, AttachTo: fmt.Sprintf("bpf_fentry_test%d", fn), License: "GPL", Instructions: insns}
			}
			kp, err := ebpf.NewProgram(spec(kseen.FD()))
			if errors.Is(err, unix.EPERM) {
				t.Skipf("skipped: this machine's kernel refuses fentry and fexit programs: %v", err)
			}
			if err != nil {
				t.Fatalf("kernel, test%d fexit=%v: %v", fn, fexit, err)
			}
			defer kp.Close()
			kl, err := link.AttachTracing(link.TracingOptions{Program: kp})
			if err != nil {
				t.Fatalf("kernel attach: %v", err)
			}
			defer kl.Close()
			sp, err := k.NewProgram(spec(sseen.FD()))
			if err != nil {
				t.Fatalf("bpfsim, test%d fexit=%v: %v", fn, fexit, err)
			}
			defer sp.Close()
			sl, err := k.AttachTracing(sim.TracingOptions{Program: sp})
			if err != nil {
				t.Fatal(err)
			}
			defer sl.Close()
			if kfirst == nil {
				kfirst, sfirst = kp, sp
			}
		}
	}
	kret, kerr := kfirst.Run(&ebpf.RunOptions{})
	res, serr := sfirst.Test(&sim.RunOptions{})
	var sret uint32
	if res != nil {
		sret = uint32(res.R0)
	}
	if kret != sret || errnoOf(kerr) != errnoOf(serr) {
		t.Fatalf("test run: kernel %d, %v; bpfsim %d, %v", kret, kerr, sret, serr)
	}
	for i := uint32(0); i < seenSpec.MaxEntries; i++ {
		var kv, sv uint64
		if err := kseen.Lookup(i, &kv); err != nil {
			t.Fatal(err)
		}
		if err := sseen.Lookup(i, &sv); err != nil {
			t.Fatal(err)
		}
		if kv != sv {
			t.Errorf("test%d %s slot %d: kernel %d, bpfsim %d", i/16, map[bool]string{false: "fentry", true: "fexit"}[i%16 >= 8], i%8, kv, sv)
		}
	}
	// A test run with a context is refused alike.
	_, kerr = kfirst.Run(&ebpf.RunOptions{Context: make([]byte, 8)})
	_, serr = sfirst.Test(&sim.RunOptions{Context: make([]byte, 8)})
	if errnoOf(kerr) != errnoOf(serr) {
		t.Errorf("test run with a context: kernel %v, bpfsim %v", kerr, serr)
	}
}
