package interp

import (
	"fmt"
	"unsafe"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// StackSize is the stack area a Machine needs: one 512-byte frame for each
// level of bpf-to-bpf call.
const StackSize = maxFrames * insn.MaxBPFStack

// maxFrames bounds the frames of one invocation. The verifier limits a
// program to 8, but a tail call from a function replaces only that
// function's frame: the frames below it stay, under the program it
// continues in, which may call 7 deeper and tail call again (the kernel
// bounds the stack those frames use, not their number). Rounded up so
// that the stack fills whole pages and ends at the guard page.
const maxFrames = (insn.MaxCallFrames + MaxTailCallCnt*(insn.MaxCallFrames-1) + 7) &^ 7

// Helper is a kernel function a program can call by id.
type Helper struct {
	ID   int32
	Name string // as the kernel names it, e.g. "bpf_ktime_get_ns"
	// Fn runs the helper on machine m with the program's r1-r5 and returns
	// r0. An error stops the program: a *mem.Fault for a bad pointer, an
	// *Unwind to end the program early with a value.
	Fn func(m *Machine, r1, r2, r3, r4, r5 uint64) (uint64, error)
	// Proto is what the verifier checks a call against (the type half of
	// struct bpf_func_proto). Nil leaves the arguments unchecked.
	Proto *verifier.FuncProto
}

// Unwind, returned by a helper, ends the program at once with R0 in r0,
// unwinding every frame the way bpf_throw does.
type Unwind struct{ R0 uint64 }

func (u *Unwind) Error() string { return fmt.Sprintf("program unwound with r0=%#x", u.R0) }

// RuntimeError reports why a program stopped other than by exiting or
// faulting: its instruction budget ran out, its calls nested too deep, or it
// reached an instruction slot that cannot execute.
type RuntimeError struct {
	PC    int
	Msg   string
	Errno uapi.Errno
}

func (e *RuntimeError) Error() string { return fmt.Sprintf("pc %d: %s", e.PC, e.Msg) }

// Unwrap exposes the errno, so errors.Is(err, uapi.E2BIG) works.
func (e *RuntimeError) Unwrap() error { return e.Errno }

// Machine is one simulated CPU as the interpreter sees it: its TLB into the
// shared address space and its stack. A Machine runs one program at a time.
type Machine struct {
	// CPU is the simulated CPU number, what bpf_get_smp_processor_id returns.
	CPU int
	TLB *mem.TLB
	// MaxInsns stops a run after this many instructions with an E2BIG
	// RuntimeError; 0 means no limit.
	MaxInsns uint64
	// Executed counts the instructions of the last run.
	Executed uint64
	// Data is the kernel's per-CPU state, for helpers to use.
	Data any
	// PercpuOffset is this CPU's per-CPU offset (__per_cpu_offset), what
	// the kernel-internal "r = &(void __percpu *)(r)" instruction adds.
	PercpuOffset uint64
	// TailCall finds the target of a tail call: the program in slot
	// index of the prog array at address array (nil for an empty slot)
	// and whether index is below the array's max_entries. Nil: tail
	// calls fail with an error.
	TailCall func(m *Machine, array uint64, index uint32) (target *Program, inBounds bool, err error)
	// TailCallCount is which tail calls count towards the limit.
	TailCallCount TailCallCount
	// Packet is the packet legacy packet access (LD_ABS, LD_IND) reads;
	// the kernel sets it before running a program whose context is an
	// skb, and clears it otherwise.
	Packet Packet

	stack    []byte // StackSize bytes of simulated memory
	stackTop uint64 // address just above the stack: frame 0's r10

	prog *Program // running program, for helpers
	// base is &prog.ops[0], the dispatch loop's view of prog.
	base unsafe.Pointer

	// pc (one past the current instruction) and steps are parked here
	// whenever the dispatch loop calls out of itself.
	pc     int
	steps  uint64
	depth  int
	frames [maxFrames]frame
	// tailCalls counts the tail calls of the running invocation
	// (tail_call_cnt), across its whole chain.
	tailCalls int
}

// TailCallCount says which tail calls count towards MAX_TAIL_CALL_CNT. The
// kernel's runtimes differ on tail calls into an empty slot.
type TailCallCount uint8

const (
	// CountAttempts counts every tail call below the limit whose index
	// is in bounds, empty slot or not: the interpreter (___bpf_prog_run
	// increments tail_call_cnt before it reads the slot).
	CountAttempts TailCallCount = iota
	// CountSuccesses counts only tail calls that reach a program: the
	// JITs of x86-64 ("Inc tail_call_cnt if the slot is populated") and
	// arm64 (which commits the incremented count after the NULL check).
	// Checked against an x86-64 6.18 kernel, for direct and indirect
	// tail calls alike.
	CountSuccesses
)

// MaxTailCallCnt is MAX_TAIL_CALL_CNT: the tail calls one invocation may
// make, counted across its whole chain; the next one falls through.
const MaxTailCallCnt = 33

// NewMachine returns a machine for CPU cpu. stackBase is the address of a
// StackSize-byte writable area of simulated memory, stack its backing.
func NewMachine(cpu int, tlb *mem.TLB, stackBase uint64, stack []byte) (*Machine, error) {
	if len(stack) != StackSize {
		return nil, errors.Wrapf(uapi.EINVAL, "machine stack is %d bytes, want %d", len(stack), StackSize)
	}
	return &Machine{CPU: cpu, TLB: tlb, stack: stack, stackTop: stackBase + StackSize}, nil
}

// StackTop returns r10 of the outermost frame.
func (m *Machine) StackTop() uint64 { return m.stackTop }

// Program returns the program running on the machine, if any.
func (m *Machine) Program() *Program { return m.prog }

// SetCallSite records that the machine serves a call of instruction pc of
// p made by other code than the interpreter (the JIT's), so that helpers
// see the same Program and PC as when the interpreter calls them.
func (m *Machine) SetCallSite(p *Program, pc int) {
	m.prog = p
	m.pc = pc + 1
}

// PC returns the instruction index of the call being served, for helpers
// that report errors.
func (m *Machine) PC() int { return m.pc - 1 }

// ReadMem copies simulated memory at addr into p, with the permission
// checks a program's loads get.
func (m *Machine) ReadMem(addr uint64, p []byte) error {
	if err := m.TLB.Space().Read(addr, p); err != nil {
		return m.atPC(err)
	}
	return nil
}

// WriteMem copies p into simulated memory at addr.
func (m *Machine) WriteMem(addr uint64, p []byte) error {
	if err := m.TLB.Space().Write(addr, p); err != nil {
		return m.atPC(err)
	}
	return nil
}

func (m *Machine) atPC(err error) error {
	var f *mem.Fault
	if errors.As(err, &f) && f.PC < 0 {
		f.PC = m.PC()
	}
	return err
}

// frameStack returns the 512 bytes of frame depth's stack.
func (m *Machine) frameStack(depth int) []byte {
	hi := StackSize - depth*insn.MaxBPFStack
	return m.stack[hi-insn.MaxBPFStack : hi]
}
