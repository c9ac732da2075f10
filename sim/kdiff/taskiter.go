package kdiff

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/cilium/ebpf/asm"
)

// Programs walking tasks, with the open-coded task iterator
// (bpf_iter_task_new, _next, _destroy) or as task iterators, for the
// tests that run them in this machine's kernel and in
// bpfsim. call makes a call of a kfunc by name, in the kernel the
// program is for.

// TaskIterLoop is a program that walks the tasks of flags (with the
// current task for PROC_THREADS when current is set) with the open-coded
// task iterator at fp-24 and returns how many it saw; body runs for
// each, the task in r6.
func TaskIterLoop(call func(string) asm.Instruction, flags int32, current bool, body ...asm.Instruction) asm.Instructions {
	p := asm.Instructions{asm.Mov.Imm(asm.R2, 0)}
	if current {
		p = asm.Instructions{asm.FnGetCurrentTaskBtf.Call(), asm.Mov.Reg(asm.R2, asm.R0)}
	}
	p = append(p,
		asm.Mov.Reg(asm.R1, asm.RFP),
		asm.Add.Imm(asm.R1, -24),
		asm.Mov.Imm(asm.R3, flags),
		call("bpf_iter_task_new"),
		asm.Mov.Imm(asm.R7, 0),
		asm.Mov.Reg(asm.R1, asm.RFP).WithSymbol("loop"),
		asm.Add.Imm(asm.R1, -24),
		call("bpf_iter_task_next"),
		asm.JEq.Imm(asm.R0, 0, "done"),
		asm.Mov.Reg(asm.R6, asm.R0),
		asm.Add.Imm(asm.R7, 1),
	)
	p = append(p, body...)
	return append(p,
		asm.Ja.Label("loop"),
		asm.Mov.Reg(asm.R1, asm.RFP).WithSymbol("done"),
		asm.Add.Imm(asm.R1, -24),
		call("bpf_iter_task_destroy"),
		asm.Mov.Reg(asm.R0, asm.R7),
		asm.Return(),
	)
}

// TaskIterRecord is a program that walks the tasks of flags (the current task's process for
// PROC_THREADS) and writes how many it saw and the first 63 pids, in
// order, into the value of the array map fd (64 u32s); it returns the
// count too. The count lives in the map value, not a register, so that
// the verifier's walk of the loop converges.
func TaskIterRecord(call func(string) asm.Instruction, pidOff int16, fd int, flags int32) asm.Instructions {
	p := asm.Instructions{
		asm.Mov.Imm(asm.R1, 0),
		asm.StoreMem(asm.RFP, -32, asm.R1, asm.Word),
		asm.LoadMapPtr(asm.R1, fd),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -32),
		asm.FnMapLookupElem.Call(),
		asm.JNE.Imm(asm.R0, 0, "found"),
		asm.Return(),
		asm.Mov.Reg(asm.R9, asm.R0).WithSymbol("found"),
		asm.Mov.Imm(asm.R1, 0),
		asm.StoreMem(asm.R9, 0, asm.R1, asm.Word),
	}
	body := asm.Instructions{
		asm.LoadMem(asm.R1, asm.R9, 0, asm.Word),
		asm.Mov.Reg(asm.R2, asm.R1),
		asm.Add.Imm(asm.R2, 1),
		asm.StoreMem(asm.R9, 0, asm.R2, asm.Word),
		asm.JGE.Imm(asm.R1, 63, "loop"),
		asm.LSh.Imm(asm.R1, 2),
		asm.Mov.Reg(asm.R2, asm.R9),
		asm.Add.Reg(asm.R2, asm.R1),
		asm.LoadMem(asm.R3, asm.R6, pidOff, asm.Word),
		asm.StoreMem(asm.R2, 4, asm.R3, asm.Word),
	}
	loop := TaskIterLoop(call, flags, flags == 2, body...)
	// Return the count from the map value rather than r7.
	loop[len(loop)-2] = asm.LoadMem(asm.R0, asm.R9, 0, asm.Word)
	return append(p, loop...)
}

// TaskDump is a task iterator program (SEC("iter/task")) that writes
// each task's pid and tgid (at pidOff and tgidOff in task_struct), and
// "end!end!" for the NULL task that ends the walk.
func TaskDump(pidOff, tgidOff int16) asm.Instructions {
	return asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 8, asm.DWord),
		asm.LoadMem(asm.R1, asm.R1, 0, asm.DWord),
		asm.LoadMem(asm.R1, asm.R1, 0, asm.DWord),
		asm.JNE.Imm(asm.R2, 0, "task"),
		asm.Mov.Imm(asm.R3, 0x21646e65), // "end!"
		asm.StoreMem(asm.RFP, -8, asm.R3, asm.Word),
		asm.StoreMem(asm.RFP, -4, asm.R3, asm.Word),
		asm.Ja.Label("write"),
		asm.LoadMem(asm.R3, asm.R2, pidOff, asm.Word).WithSymbol("task"),
		asm.StoreMem(asm.RFP, -8, asm.R3, asm.Word),
		asm.LoadMem(asm.R3, asm.R2, tgidOff, asm.Word),
		asm.StoreMem(asm.RFP, -4, asm.R3, asm.Word),
		asm.Mov.Reg(asm.R2, asm.RFP).WithSymbol("write"),
		asm.Add.Imm(asm.R2, -8),
		asm.Mov.Imm(asm.R3, 8),
		asm.FnSeqWrite.Call(),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
	}
}

// ReadTaskDump reads a walk of a TaskDump iterator, opened by open
// (bpfsim's Iter.Open or cilium/ebpf's link.Iter.Open), to its end and
// returns its tasks, pid then tgid, in the order it wrote them; an error
// unless the walk ends with exactly one NULL task.
func ReadTaskDump(open func() (io.ReadCloser, error)) ([][2]uint32, error) {
	r, err := open()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	out, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	const end = "end!end!"
	if len(out)%8 != 0 || len(out) < 8 || string(out[len(out)-8:]) != end {
		return nil, fmt.Errorf("the walk does not end with one NULL task (%d bytes)", len(out))
	}
	var tasks [][2]uint32
	for b := out[:len(out)-8]; len(b) > 0; b = b[8:] {
		if string(b[:8]) == end {
			return nil, fmt.Errorf("a NULL task before the end of the walk")
		}
		tasks = append(tasks, [2]uint32{binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint32(b[4:])})
	}
	return tasks, nil
}
