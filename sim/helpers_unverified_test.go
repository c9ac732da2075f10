package sim_test

import (
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/mem"
)

// The helpers added with timers, formats, dynptrs and the packet helpers, called by
// unverified programs with arguments no verifier would let through (NULL,
// huge sizes and lengths, pointers to nowhere, the context where memory
// goes): each run returns, or fails with an errno or a memory fault;
// none panics.
func TestNewHelpersTakeAnyArgumentsFromUnverifiedPrograms(t *testing.T) {
	k := newKernel(t, nil)
	ids := []asm.BuiltinFunc{17, 24, 40, 97, 105, 106, 135, 151, 152, 155, 163, 165, 169, 170, 171, 172, 177, 188, 189, 190, 197, 198, 199, 200, 201, 202, 203, 209}
	// Register sources: a constant, the context, the stack.
	type src struct {
		name string
		ins  func(r asm.Register) asm.Instruction
	}
	srcs := []src{
		{"0", func(r asm.Register) asm.Instruction { return asm.Mov.Imm(r, 0) }},
		{"ctx", func(r asm.Register) asm.Instruction { return asm.Mov.Reg(r, asm.R6) }},
		{"fp-64", func(r asm.Register) asm.Instruction { return asm.Mov.Reg(r, asm.R7) }},
		{"1<<40", func(r asm.Register) asm.Instruction { return asm.LoadImm(r, 1<<40, asm.DWord) }},
		{"-1", func(r asm.Register) asm.Instruction { return asm.Mov.Imm(r, -1) }},
		{"8", func(r asm.Register) asm.Instruction { return asm.Mov.Imm(r, 8) }},
	}
	runs := 0
	for _, typ := range []ebpf.ProgramType{ebpf.XDP, ebpf.SchedCLS} {
		for _, id := range ids {
			for i := 0; i < 40; i++ {
				insns := asm.Instructions{
					asm.Mov.Reg(asm.R6, asm.R1),
					asm.Mov.Reg(asm.R7, asm.R10),
					asm.Add.Imm(asm.R7, -64),
				}
				var desc string
				for r := asm.R1; r <= asm.R5; r++ {
					s := srcs[(i*7+int(r)*(i+3))%len(srcs)]
					insns = append(insns, s.ins(r))
					desc += fmt.Sprintf(" r%d=%s", r, s.name)
				}
				insns = append(insns, id.Call(), asm.Return())
				p, err := k.NewProgramWithOptions(&ebpf.ProgramSpec{Type: typ, License: "GPL", Instructions: insns},
					sim.ProgramOptions{Unverified: true})
				if err != nil {
					t.Fatalf("%v in %s: %v", id, typ, err)
				}
				_, err = p.Run(&sim.RunOptions{Data: make([]byte, 64)})
				p.Close()
				var errno syscall.Errno
				var fault *mem.Fault
				if err != nil && !errors.As(err, &errno) && !errors.As(err, &fault) {
					t.Errorf("%v in %s,%s: %v, neither an errno nor a memory fault", id, typ, desc, err)
				}
				runs++
			}
		}
	}
	t.Logf("%d runs", runs)
}
