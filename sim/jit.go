package sim

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/pkg/errors"
	"golang.org/x/arch/arm64/arm64asm"

	"github.com/bpfsim/bpfsim/jit_arm64"
	"github.com/bpfsim/bpfsim/jit_arm64/a64"
	"github.com/bpfsim/bpfsim/jit_arm64/emu"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/progpack"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Programs run in one of two runtimes, as bpf_prog_select_runtime picks
// one: the interpreter (sim/interp, ___bpf_prog_run), or the arm64 JIT
// (jit_arm64), whose A64 code goes into the prog pack allocator's
// executable memory (sim/progpack) and runs on the A64 emulator
// (jit_arm64/emu) with the same memory, stack, helpers and maps as the
// interpreter. A kernel whose runtime is the JIT runs a program the JIT
// cannot translate in the interpreter, as a kernel without
// CONFIG_BPF_JIT_ALWAYS_ON does; a program loaded with RuntimeJIT fails
// instead.

// Runtime says how programs run.
type Runtime uint8

// Runtimes.
const (
	// RuntimeDefault is, for a program, its kernel's runtime, and for a
	// kernel the interpreter.
	RuntimeDefault Runtime = iota
	// RuntimeInterpreter runs programs in the interpreter.
	RuntimeInterpreter
	// RuntimeJIT compiles programs to A64 and runs them on the emulator.
	RuntimeJIT
)

func (r Runtime) String() string {
	switch r {
	case RuntimeDefault:
		return "default"
	case RuntimeInterpreter:
		return "interpreter"
	case RuntimeJIT:
		return "jit"
	}
	return fmt.Sprintf("Runtime(%d)", uint8(r))
}

// jitState is the kernel's JIT: the allocator and text patcher it places
// images with, and the kernel functions JIT code calls, by address.
type jitState struct {
	once  sync.Once
	err   error
	ready atomic.Bool // set up without error: jit may be read

	jit     *jit_arm64.JIT
	patcher *jit_arm64.Patcher
	// tailSlot is the kernel function the JIT's tail call sequence
	// calls to read a prog array slot; ldAbs serves legacy packet loads.
	tailSlot, ldAbs uint64

	// funcs maps kernel addresses to the Go functions BL/BLR reach;
	// copied on write, so a run reads it without a lock.
	mu      sync.Mutex
	funcs   atomic.Pointer[map[uint64]emu.Func]
	helpers map[uint64]*Helper

	// images are the JITed programs by image address, so that code at
	// any address is traced to its program (a direct tail call changes
	// programs without the kernel seeing it).
	imagesMu sync.RWMutex
	images   []*Program // sorted by image entry

	compiled, fallbacks atomic.Uint64
	// pokeErrors counts failed patches of direct tail calls.
	pokeErrors   atomic.Uint64
	lastFallback atomic.Pointer[error]
}

// JITStats counts what the kernel's JIT did.
type JITStats struct {
	// Compiled counts programs JITed; Fallbacks those a JIT kernel runs
	// in the interpreter because the JIT could not translate them, the
	// last of them for LastFallback's reason.
	Compiled, Fallbacks uint64
	LastFallback        error
}

// JITStats returns the JIT's counters.
func (k *Kernel) JITStats() JITStats {
	s := JITStats{Compiled: k.jits.compiled.Load(), Fallbacks: k.jits.fallbacks.Load()}
	if e := k.jits.lastFallback.Load(); e != nil {
		s.LastFallback = *e
	}
	return s
}

// jitCPU is a CPU's A64 state.
type jitCPU struct {
	cpu *emu.CPU
	// prog is the program running, which a tail call changes: helpers
	// find their call site in its image.
	prog *Program
}

// JIT returns the kernel's JIT and its allocator, setting them up on
// first use.
func (k *Kernel) JIT() (*jit_arm64.JIT, error) {
	if err := k.jitInit(); err != nil {
		return nil, err
	}
	return k.jits.jit, nil
}

func (k *Kernel) jitInit() error {
	st := &k.jits
	st.once.Do(func() { st.err = k.setUpJIT() })
	return st.err
}

func (k *Kernel) setUpJIT() error {
	st := &k.jits
	st.patcher = jit_arm64.NewPatcher(k.mem)
	alloc, err := progpack.New(k.mem, st.patcher, k.progPack)
	if err != nil {
		return err
	}
	st.jit = jit_arm64.New(alloc)
	st.helpers = map[uint64]*Helper{}
	s, err := k.ksyms.define(ksymSpec{name: "bpf_tail_call_slot", kind: ksymCallBase}, 0)
	if err != nil {
		return err
	}
	st.tailSlot = s.Addr
	if s, err = k.ksyms.define(ksymSpec{name: "bpf_skb_load_helper", kind: ksymCallBase}, 0); err != nil {
		return err
	}
	st.ldAbs = s.Addr
	funcs := map[uint64]emu.Func{st.tailSlot: k.jitTailCallSlot, st.ldAbs: k.jitLdAbs}
	st.funcs.Store(&funcs)
	for _, cpu := range k.cpus {
		c := emu.New(cpu.machine.TLB)
		c.Data = cpu
		c.SysRegs[uint32(a64.SysRegTPIDR_EL1)] = cpu.machine.PercpuOffset
		// current: the CPU's task (task.go), whose thread_info holds
		// the CPU number, for the inlined bpf_get_smp_processor_id,
		// and which the inlined bpf_get_current_task returns.
		c.SysRegs[uint32(a64.SysRegSP_EL0)] = cpu.task.page
		c.Fixup = k.jitFixup
		cpu.jit = &jitCPU{cpu: c}
	}
	st.ready.Store(true)
	return nil
}

// runtimeOf is the runtime a program loaded with opts gets.
func (k *Kernel) runtimeOf(opts ProgramOptions) Runtime {
	if opts.Runtime != RuntimeDefault {
		return opts.Runtime
	}
	if k.runtime == RuntimeJIT {
		return RuntimeJIT
	}
	return RuntimeInterpreter
}

// jitCompile compiles a loaded program if its runtime is the JIT. A
// program the JIT cannot translate runs in the interpreter unless the JIT
// was asked for by the program's options.
func (k *Kernel) jitCompile(p *Program, opts ProgramOptions) error {
	if k.runtimeOf(opts) != RuntimeJIT {
		return nil
	}
	if err := k.jitInit(); err != nil {
		return err
	}
	in := &jit_arm64.Input{
		Insns:           p.xlated,
		CallTarget:      k.jitCallTarget(p.fixedUp),
		DirectTailCalls: p.directTailCallInsns(),
		KfuncTarget:     k.jitKfuncTarget(p.fixedUp),
		TailCallSlot:    k.jits.tailSlot,
		LdAbs:           k.jits.ldAbs,
	}
	subs := p.subprogs
	for i, s := range subs {
		depth := s.StackDepth
		if p.verified == nil {
			depth = insn.MaxBPFStack // unverified: any slot may be used
		}
		end := len(p.xlated)
		if i+1 < len(subs) {
			end = subs[i+1].Start
		}
		in.Funcs = append(in.Funcs, jit_arm64.Func{Start: s.Start, End: end, StackDepth: depth})
	}
	img, err := k.jits.jit.Compile(in)
	if err != nil {
		if opts.Runtime == RuntimeJIT {
			return errors.WithMessage(err, "arm64 JIT")
		}
		p.jitErr = err
		k.jits.fallbacks.Add(1)
		k.jits.lastFallback.Store(&err)
		return nil
	}
	k.jits.compiled.Add(1)
	p.jit = img
	p.jitReadsCurrent = readsCurrentTask(p.xlated)
	k.jitAddImage(p)
	return k.jitDirectFixup(p)
}

// jitCallTarget resolves a call's imm to the kernel address the JIT
// calls, and makes sure the emulator reaches the function there.
func (k *Kernel) jitCallTarget(fixed bool) func(int32) (uint64, error) {
	return func(imm int32) (uint64, error) {
		if fixed && !jitInlinedHelpers[imm] {
			return k.jitKernelFunc(imm)
		}
		// A helper by id: an unverified program's call, or one the
		// verifier left for the JIT to inline.
		h, err := k.resolveHelper(imm)
		if err != nil {
			return 0, err
		}
		s, err := k.helperKsym(imm, h)
		if err != nil {
			return 0, err
		}
		k.jitRegister(s.Addr, h)
		return s.Addr, nil
	}
}

// jitKfuncTarget resolves a fixed-up kfunc call: the function at
// __bpf_call_base + imm. Before the fix-ups the imm is a BTF id, which the
// JIT cannot call.
func (k *Kernel) jitKfuncTarget(fixed bool) func(int32) (uint64, error) {
	return func(imm int32) (uint64, error) {
		if !fixed {
			return 0, errors.Wrapf(jit_arm64.ErrNotSupported, "kfunc call by BTF id %d in a program the verifier did not fix up", imm)
		}
		return k.jitKernelFunc(imm)
	}
}

// jitKernelFunc returns the address of the kernel function at
// __bpf_call_base + imm, and makes the emulator run it there.
func (k *Kernel) jitKernelFunc(imm int32) (uint64, error) {
	s, ok := k.ksyms.at(imm)
	if !ok || s.spec.kind == ksymCallBase {
		return 0, errors.Wrapf(uapi.EINVAL, "call to __bpf_call_base%+d, where the simulated kernel has no function", imm)
	}
	h, err := k.ksymFunc(s)
	if err != nil {
		return 0, err
	}
	k.jitRegister(s.Addr, h)
	return s.Addr, nil
}

// jitAddImage records p's image; jitRemoveImage forgets it.
func (k *Kernel) jitAddImage(p *Program) {
	st := &k.jits
	st.imagesMu.Lock()
	defer st.imagesMu.Unlock()
	e := p.jit.Entry()
	i, _ := slices.BinarySearchFunc(st.images, e, func(q *Program, e uint64) int { return cmp.Compare(q.jit.Entry(), e) })
	st.images = slices.Insert(st.images, i, p)
}

func (k *Kernel) jitRemoveImage(p *Program) {
	st := &k.jits
	st.imagesMu.Lock()
	defer st.imagesMu.Unlock()
	if i := slices.Index(st.images, p); i >= 0 {
		st.images = slices.Delete(st.images, i, i+1)
	}
}

// jitFixup is search_bpf_extables: the exception table entry of the
// JITed image holding pc, for a probe load that faulted.
func (k *Kernel) jitFixup(pc uint64) (int, bool) {
	p := k.jitProgAt(pc)
	if p == nil {
		return 0, false
	}
	reg, ok := p.jit.Fixup(pc)
	return int(reg.Num()), ok
}

// jitProgAt returns the JITed program whose image holds addr, or nil.
func (k *Kernel) jitProgAt(addr uint64) *Program {
	st := &k.jits
	st.imagesMu.RLock()
	defer st.imagesMu.RUnlock()
	i, found := slices.BinarySearchFunc(st.images, addr, func(q *Program, a uint64) int { return cmp.Compare(q.jit.Entry(), a) })
	if !found {
		i--
	}
	if i < 0 {
		return nil
	}
	p := st.images[i]
	if addr >= p.jit.Entry()+uint64(p.jit.Len()) {
		return nil
	}
	return p
}

// jitCaller returns the program that made the call returning to ret:
// the one running, or, after a direct tail call, the program it jumped
// to.
func (k *Kernel) jitCaller(jc *jitCPU, ret uint64) *Program {
	p := jc.prog
	if img := p.jit; img != nil && ret > img.Entry() && ret <= img.Entry()+uint64(img.Len()) {
		return p
	}
	if q := k.jitProgAt(ret - 4); q != nil {
		jc.prog = q
		return q
	}
	return p
}

// jitRegister makes the emulator run h when code calls addr.
func (k *Kernel) jitRegister(addr uint64, h *Helper) {
	st := &k.jits
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.helpers[addr] == h {
		return
	}
	st.helpers[addr] = h
	next := maps.Clone(*st.funcs.Load())
	next[addr] = k.jitHelperFunc(h)
	st.funcs.Store(&next)
}

// jitHelperFunc adapts a helper to the emulator: BPF R1-R5 are x0-x4 and
// the result goes to x0, where the JIT's "mov x7, x0" finds it.
func (k *Kernel) jitHelperFunc(h *Helper) emu.Func {
	return func(c *emu.CPU) error {
		cpu := c.Data.(*CPU)
		m := cpu.machine
		if err := k.jitSetCallSite(cpu, c); err != nil {
			return err
		}
		r0, err := h.Fn(m, c.R[0], c.R[1], c.R[2], c.R[3], c.R[4])
		if err != nil {
			return err
		}
		c.R[0] = r0
		return nil
	}
}

// jitSetCallSite tells the CPU's machine which program and instruction
// the kernel function being called from JIT code serves, as the
// interpreter knows them for its own calls: helpers name the call site in
// their errors.
func (k *Kernel) jitSetCallSite(cpu *CPU, c *emu.CPU) error {
	p := k.jitCaller(cpu.jit, c.R[30])
	code, err := p.interpCode()
	if err != nil {
		return err
	}
	cpu.machine.SetCallSite(code, p.jit.CallSite(c.R[30]))
	return nil
}

// jitLdAbs is the kernel function of the JIT's legacy packet loads
// (jit_arm64.Input.LdAbs): the load of the CPU's test-run packet, as the
// interpreter does it, or -EFAULT for bytes outside it.
func (k *Kernel) jitLdAbs(c *emu.CPU) error {
	cpu := c.Data.(*CPU)
	m := cpu.machine
	v, ok, f := m.Packet.Load(m.TLB, int32(uint32(c.R[1])), int(c.R[2]))
	if f != nil {
		p := k.jitCaller(cpu.jit, c.R[30])
		f.PC = p.jit.CallSite(c.R[30])
		return f
	}
	if !ok {
		c.R[0] = ^uint64(13) + 1 // -EFAULT
		return nil
	}
	c.R[0] = v
	return nil
}

// jitTailCallSlot is the kernel function of the JIT's tail call sequence
// (jit_arm64.Input.TailCallSlot): the prog array in x1, the index in w2;
// it leaves the target's bpf_func in x10, or 0, and changes nothing else.
func (k *Kernel) jitTailCallSlot(c *emu.CPU) error {
	cpu := c.Data.(*CPU)
	m := cpu.machine
	if err := k.jitSetCallSite(cpu, c); err != nil {
		return err
	}
	target, inBounds, err := k.tailCallProg(m, c.R[1], uint32(c.R[2]))
	if err != nil {
		return err
	}
	if !inBounds || target == nil {
		c.R[10] = 0
		return nil
	}
	if target.jit == nil {
		// The owner check keeps JIT and interpreter programs apart.
		return errors.Wrapf(uapi.EFAULT, "pc %d: tail call into program %s, which is not JITed", m.PC(), target.name)
	}
	c.R[10] = target.jit.Entry()
	cpu.jit.prog = target
	return nil
}

// jitLimitFactor scales RunOptions.MaxInsns, a budget of BPF
// instructions, to A64 ones.
const jitLimitFactor = 4

// runJIT runs a JITed program on cpu with R1 and R2.
func (k *Kernel) runJIT(cpu *CPU, p *Program, r1, r2 uint64) (uint64, error) {
	return k.runJITAt(cpu, p, p.jit.Entry(), r1, r2)
}

// readsCurrentTask tells a program that calls bpf_get_current_task or
// bpf_get_current_task_btf, which the JIT inlines as a read of SP_EL0.
func readsCurrentTask(xlated []insn.Insn) bool {
	for _, in := range xlated {
		if in.Code == insn.JMP|insn.CALL && in.Src == 0 && (in.Imm == funcGetCurrentTask || in.Imm == funcGetCurrentTaskBTF) {
			return true
		}
	}
	return false
}

// runJITAt runs p's image from entry, one of its functions, with args in
// R1 and on.
func (k *Kernel) runJITAt(cpu *CPU, p *Program, entry uint64, args ...uint64) (uint64, error) {
	if p.jitReadsCurrent {
		// The inlined helpers read the task page, which the
		// interpreter's helpers write on first use: write it first.
		if _, _, err := k.currentTask(cpu); err != nil {
			return 0, err
		}
	}
	jc := cpu.jit
	c := jc.cpu
	m := cpu.machine
	c.Funcs = *k.jits.funcs.Load()
	c.SetSP(m.StackTop())
	c.Limit = m.MaxInsns * jitLimitFactor
	jc.prog = p
	start := c.Retired
	r0, err := c.Run(entry, args...)
	m.Executed = c.Retired - start
	jc.prog = nil
	if err == nil {
		return r0, nil
	}
	var f *emu.Fault
	if !errors.As(err, &f) {
		return 0, err
	}
	switch f.Kind {
	case emu.KindFunc:
		var u *interp.Unwind
		if errors.As(f.Err, &u) {
			return u.R0, nil
		}
		return 0, f.Err
	case emu.KindLimit:
		return 0, &interp.RuntimeError{PC: -1, Errno: uapi.E2BIG,
			Msg: fmt.Sprintf("the run retired %d A64 instructions, the limit for %d BPF instructions", c.Limit, m.MaxInsns)}
	}
	at, pc := "outside the program", -1
	if q := k.jitProgAt(f.PC); q != nil {
		if pc = q.jit.InsnAt(f.PC); pc >= 0 {
			at = fmt.Sprintf("pc %d", pc)
			if q.bpfProg != p.bpfProg {
				at = fmt.Sprintf("pc %d of program %s", pc, q.name)
			}
		}
	}
	if f.Mem != nil {
		f.Mem.PC = pc
	}
	if f.Kind == emu.KindAlign {
		// arm64 faults on a misaligned atomic; in the kernel that is an
		// oops, here an EFAULT.
		return 0, errors.Wrapf(uapi.EFAULT, "%s (jited): %v", at, err)
	}
	return 0, errors.WithMessagef(err, "%s (jited)", at)
}

// Runtime reports how the program runs: RuntimeJIT or RuntimeInterpreter.
func (p *Program) Runtime() Runtime {
	if p.jit != nil {
		return RuntimeJIT
	}
	return RuntimeInterpreter
}

// JITError says why a program of a JIT kernel runs in the interpreter:
// what the JIT could not translate. Nil for a JITed program.
func (p *Program) JITError() error { return p.jitErr }

// ReadsUninitializedStack says that the verifier let the program read
// stack it never wrote (privileged programs may): such reads see whatever
// the stack held, which the interpreter (zeroed frames) and the JIT
// (frames laid out as the arm64 kernel lays them) do not agree on, as two
// kernels would not. False for an unverified program, which may do
// anything.
func (p *Program) ReadsUninitializedStack() bool {
	return p.verified != nil && p.verified.ReadsUninitStack
}

// JITImage returns the program's A64 image, nil for an interpreted one.
func (p *Program) JITImage() *jit_arm64.Image { return p.jit }

// DumpJited lists the program's A64 code as bpftool prog dump jited
// does, with each xlated instruction (and its source line, if the
// program has line info) before the code translated from it.
func (p *Program) DumpJited() (string, error) {
	img := p.jit
	if img == nil {
		return "", errors.Wrap(uapi.EINVAL, "program is not JITed")
	}
	var b strings.Builder
	name := p.name
	if name == "" {
		name = "unnamed"
	}
	fmt.Fprintf(&b, "bpf_prog_%s: image at %#x, %d bytes\n", name, img.Entry(), img.Len())
	sym := p.xlatedSymbols()
	dump := toDump(p.xlated)
	words := img.Words()
	// What to print before each word: function and epilogue headings,
	// then the BPF instructions whose code starts there.
	marks := map[int][]string{}
	for f, e := range img.FuncEntries() {
		marks[e/4] = append(marks[e/4], fmt.Sprintf("; function %d: prologue", f))
	}
	epilogues := map[int]bool{}
	for _, e := range img.Epilogues() {
		epilogues[e/4] = true
	}
	line := 0
	for i := 0; i < len(p.xlated); i++ {
		w := img.Offset(i) / 4
		if l, ok := p.lineAt(i, &line); ok {
			marks[w] = append(marks[w], "; "+strings.TrimLeft(l.Line.String(), " \t\n\v\f\r"))
		}
		marks[w] = append(marks[w], fmt.Sprintf("; %d: %s", i, insn.Format(dump, i, sym)))
		if p.xlated[i].IsLdImm64() {
			i++
		}
	}
	base := img.Entry()
	for w, word := range words {
		for _, m := range marks[w] {
			b.WriteString(m + "\n")
		}
		if epilogues[w] {
			b.WriteString("; epilogue\n")
		}
		var raw [4]byte
		binary.LittleEndian.PutUint32(raw[:], word)
		text := ".inst"
		if inst, err := arm64asm.Decode(raw[:]); err == nil {
			// objdump's layout: the mnemonic, a tab, the operands
			text = strings.TrimSpace(strings.Replace(arm64asm.GNUSyntax(inst), " ", "\t", 1))
		}
		fmt.Fprintf(&b, "  %x:\t%08x\t%s\n", base+uint64(4*w), word, text)
	}
	return b.String(), nil
}
