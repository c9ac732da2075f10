package sim_test

import (
	"encoding/binary"
	"fmt"
	"math/rand"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// A world is a kernel, simulated or real, seen through what tail call
// scenarios need: maps by fd, programs, prog array updates and test runs.
type world interface {
	newMap(spec *ebpf.MapSpec) (fd int, err error)
	load(typ ebpf.ProgramType, insns asm.Instructions) (handle int, err error)
	// progFD is the fd of a loaded program, for user-space updates.
	progFD(handle int) int
	progID(handle int) uint32
	update(mapFD int, key uint32, value any, flags ebpf.MapUpdateFlags) error
	setSlot(mapFD int, key uint32, prog int) error
	del(mapFD int, key uint32) error
	lookupU32(mapFD int, key uint32) (uint32, error)
	lookupU64(mapFD int, key uint32) (uint64, error)
	run(prog int) (uint32, error)
	close()
}

// tcErrno returns the errno an error carries, from bpfsim or the kernel.
func tcErrno(err error) int {
	if err == nil {
		return 0
	}
	var se syscall.Errno
	if errors.As(err, &se) {
		return int(se)
	}
	var ue uapi.Errno
	if errors.As(err, &ue) {
		return int(ue)
	}
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return int(syscall.ENOENT)
	}
	return -1
}

// simWorld is bpfsim.
type simWorld struct {
	k     *sim.Kernel
	maps  map[int]*sim.Map
	progs []*sim.Program
}

func newSimWorld(k *sim.Kernel) *simWorld { return &simWorld{k: k, maps: map[int]*sim.Map{}} }

func (w *simWorld) newMap(spec *ebpf.MapSpec) (int, error) {
	m, err := w.k.NewMap(spec)
	if err != nil {
		return 0, err
	}
	w.maps[m.FD()] = m
	return m.FD(), nil
}

func (w *simWorld) load(typ ebpf.ProgramType, insns asm.Instructions) (int, error) {
	p, err := w.k.NewProgram(&ebpf.ProgramSpec{Type: typ, Instructions: insns, License: "GPL"})
	if err != nil {
		return 0, err
	}
	w.progs = append(w.progs, p)
	return len(w.progs) - 1, nil
}

func (w *simWorld) progFD(h int) int           { return w.progs[h].FD() }
func (w *simWorld) progID(h int) uint32        { return w.progs[h].ID() }
func (w *simWorld) m(fd int) *sim.Map          { return w.maps[fd] }
func (w *simWorld) del(fd int, k uint32) error { return w.m(fd).Delete(k) }

func (w *simWorld) update(fd int, key uint32, value any, flags ebpf.MapUpdateFlags) error {
	return w.m(fd).Update(key, value, flags)
}

func (w *simWorld) setSlot(fd int, key uint32, prog int) error {
	return w.m(fd).Update(key, w.progs[prog], ebpf.UpdateAny)
}

func (w *simWorld) lookupU32(fd int, key uint32) (v uint32, err error) {
	err = w.m(fd).Lookup(key, &v)
	return v, err
}

func (w *simWorld) lookupU64(fd int, key uint32) (v uint64, err error) {
	err = w.m(fd).Lookup(key, &v)
	return v, err
}

func (w *simWorld) run(prog int) (uint32, error) {
	return w.progs[prog].Run(&sim.RunOptions{Data: make([]byte, 64)})
}

func (w *simWorld) close() {
	for _, p := range w.progs {
		p.Close()
	}
	for _, m := range w.maps {
		m.Close()
	}
}

// kernelWorld is this machine's kernel, through cilium/ebpf.
type kernelWorld struct {
	maps  map[int]*ebpf.Map
	progs []*ebpf.Program
}

func newKernelWorld() *kernelWorld { return &kernelWorld{maps: map[int]*ebpf.Map{}} }

func (w *kernelWorld) newMap(spec *ebpf.MapSpec) (int, error) {
	m, err := ebpf.NewMap(spec)
	if err != nil {
		return 0, err
	}
	w.maps[m.FD()] = m
	return m.FD(), nil
}

func (w *kernelWorld) load(typ ebpf.ProgramType, insns asm.Instructions) (int, error) {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: typ, Instructions: insns, License: "GPL"})
	if err != nil {
		return 0, err
	}
	w.progs = append(w.progs, p)
	return len(w.progs) - 1, nil
}

func (w *kernelWorld) progFD(h int) int { return w.progs[h].FD() }

func (w *kernelWorld) progID(h int) uint32 {
	info, err := w.progs[h].Info()
	if err != nil {
		return 0
	}
	id, _ := info.ID()
	return uint32(id)
}

func (w *kernelWorld) m(fd int) *ebpf.Map         { return w.maps[fd] }
func (w *kernelWorld) del(fd int, k uint32) error { return w.m(fd).Delete(k) }

func (w *kernelWorld) update(fd int, key uint32, value any, flags ebpf.MapUpdateFlags) error {
	if v, ok := value.(int); ok {
		value = uint32(v)
	}
	return w.m(fd).Update(key, value, flags)
}

func (w *kernelWorld) setSlot(fd int, key uint32, prog int) error {
	return w.m(fd).Update(key, w.progs[prog], ebpf.UpdateAny)
}

func (w *kernelWorld) lookupU32(fd int, key uint32) (v uint32, err error) {
	err = w.m(fd).Lookup(key, &v)
	return v, err
}

func (w *kernelWorld) lookupU64(fd int, key uint32) (v uint64, err error) {
	err = w.m(fd).Lookup(key, &v)
	return v, err
}

func (w *kernelWorld) run(prog int) (uint32, error) {
	return w.progs[prog].Run(&ebpf.RunOptions{Data: make([]byte, 64)})
}

func (w *kernelWorld) close() {
	for _, p := range w.progs {
		p.Close()
	}
	for _, m := range w.maps {
		m.Close()
	}
}

// progArraySpec and countersSpec are the maps of tail call scenarios.
func progArraySpec(n uint32) *ebpf.MapSpec {
	return &ebpf.MapSpec{Type: ebpf.ProgramArray, KeySize: 4, ValueSize: 4, MaxEntries: n}
}

func countersSpec(n uint32) *ebpf.MapSpec {
	return &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: n}
}

// indexForm is how a tail call's index gets into r3.
type indexForm int

const (
	idxMov64    indexForm = iota // r3 = k
	idxMov32                     // w3 = k
	idxHighBits                  // r3 = k | 1<<32: the index is the low 32 bits
	idxCount                     // r3 = (this program's run count before) & 7
	idxCountAdd                  // r3 = run count + k
	idxForms
)

// tailAttempt is one bpf_tail_call of a generated program.
type tailAttempt struct {
	form indexForm
	k    int32
}

// tcProg is a generated program: it counts its runs in counters[id], then
// tries its tail calls in order, then returns 100+id.
type tcProg struct {
	id       int
	attempts []tailAttempt
	// subprog makes the tail calls from a function the program calls,
	// with stack bytes of the program's own stack in use; the program
	// then returns the function's result plus 1000.
	subprog bool
	stack   int
	// voidFn declares the function void in its BTF, which the kernel
	// refuses for a function that tail calls.
	voidFn bool
}

// withFunc gives ins BTF func info: cilium/ebpf then hands the kernel
// func info for the whole program.
func withFunc(ins asm.Instruction, name string, linkage btf.FuncLinkage, void bool) asm.Instruction {
	var ret btf.Type = &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
	if void {
		ret = &btf.Void{}
	}
	return btf.WithFuncMetadata(ins, &btf.Func{Name: name, Linkage: linkage,
		Type: &btf.FuncProto{Return: ret, Params: []btf.FuncParam{{Name: "ctx", Type: &btf.Pointer{Target: &btf.Void{}}}}}})
}

func (p tcProg) insns(countersFD, arrayFD int) asm.Instructions {
	skip := fmt.Sprintf("skip%d", p.id)
	in := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.StoreImm(asm.R10, -4, int64(p.id), asm.Word),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, -4),
		asm.LoadMapPtr(asm.R1, countersFD),
		asm.FnMapLookupElem.Call(),
		asm.Mov.Imm(asm.R7, 0),
		asm.JEq.Imm(asm.R0, 0, skip),
		asm.LoadMem(asm.R7, asm.R0, 0, asm.DWord),
		asm.Mov.Reg(asm.R1, asm.R7),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
		asm.Mov.Reg(asm.R1, asm.R6).WithSymbol(skip),
	}
	var calls asm.Instructions
	for _, a := range p.attempts {
		calls = append(calls, asm.Mov.Reg(asm.R1, asm.R6), asm.LoadMapPtr(asm.R2, arrayFD))
		switch a.form {
		case idxMov64:
			calls = append(calls, asm.Mov.Imm(asm.R3, a.k))
		case idxMov32:
			calls = append(calls, asm.Mov.Imm32(asm.R3, a.k))
		case idxHighBits:
			calls = append(calls, asm.LoadImm(asm.R3, int64(uint64(uint32(a.k))|1<<32), asm.DWord))
		case idxCount:
			calls = append(calls, asm.Mov.Reg(asm.R3, asm.R7), asm.And.Imm(asm.R3, 7))
		case idxCountAdd:
			calls = append(calls, asm.Mov.Reg(asm.R3, asm.R7), asm.Add.Imm(asm.R3, a.k))
		}
		calls = append(calls, asm.FnTailCall.Call())
	}
	if !p.subprog {
		in = append(in, calls...)
		return append(in, asm.Mov.Imm(asm.R0, int32(100+p.id)), asm.Return())
	}
	fn := fmt.Sprintf("tc_fn%d", p.id)
	if p.stack > 0 {
		in = append(in, asm.StoreImm(asm.R10, int16(-p.stack), 1, asm.Word))
	}
	in = append(in,
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Call.Label(fn),
		asm.Add.Imm(asm.R0, 1000),
		asm.Return(),
	)
	in[0] = withFunc(in[0], fmt.Sprintf("tc_main%d", p.id), btf.GlobalFunc, false)
	first := withFunc(asm.Mov.Reg(asm.R6, asm.R1), fn, btf.StaticFunc, p.voidFn)
	body := append(asm.Instructions{first.WithSymbol(fn), asm.Mov.Imm(asm.R7, 0)}, calls...)
	return append(in, append(body, asm.Mov.Imm(asm.R0, int32(200+p.id)), asm.Return())...)
}

// tcScenario is a set of programs, a prog array with some of them in its
// slots, and the runs of the first program.
type tcScenario struct {
	progs []tcProg
	slots []int // program in each slot, -1 for none
	runs  int
}

func genScenario(r *rand.Rand) tcScenario {
	n := 1 + r.Intn(4)
	size := 1 + r.Intn(6)
	s := tcScenario{runs: 1 + r.Intn(3), slots: make([]int, size)}
	for i := range s.slots {
		s.slots[i] = -1
		if r.Intn(3) > 0 {
			s.slots[i] = r.Intn(n)
		}
	}
	for i := 0; i < n; i++ {
		p := tcProg{id: i}
		for a := 0; a < 1+r.Intn(3); a++ {
			f := indexForm(r.Intn(int(idxForms)))
			k := int32(r.Intn(size + 2)) // some past the end
			if r.Intn(8) == 0 {
				k = -1 // u32 max
			}
			p.attempts = append(p.attempts, tailAttempt{form: f, k: k})
		}
		if r.Intn(6) == 0 {
			p.subprog = true
			p.stack = 8 * r.Intn(40) // up to 312 bytes: some over the 256-byte rule
			p.voidFn = r.Intn(8) == 0
		}
		s.progs = append(s.progs, p)
	}
	return s
}

// tcOutcome is what a scenario produced, comparable across worlds.
type tcOutcome struct {
	loadErrs []int
	rets     []uint32
	runErrs  []int
	counters []uint64
}

func (s tcScenario) play(w world) (tcOutcome, error) {
	defer w.close()
	var out tcOutcome
	cfd, err := w.newMap(countersSpec(uint32(len(s.progs))))
	if err != nil {
		return out, err
	}
	afd, err := w.newMap(progArraySpec(uint32(len(s.slots))))
	if err != nil {
		return out, err
	}
	handles := make([]int, len(s.progs))
	loaded := make([]bool, len(s.progs))
	for i, p := range s.progs {
		h, err := w.load(ebpf.XDP, p.insns(cfd, afd))
		out.loadErrs = append(out.loadErrs, tcErrno(err))
		handles[i], loaded[i] = h, err == nil
	}
	for slot, p := range s.slots {
		if p >= 0 && loaded[p] {
			if err := w.setSlot(afd, uint32(slot), handles[p]); err != nil {
				return out, errors.Wrapf(err, "slot %d", slot)
			}
		}
	}
	if !loaded[0] {
		return out, nil
	}
	for i := 0; i < s.runs; i++ {
		ret, err := w.run(handles[0])
		out.rets = append(out.rets, ret)
		out.runErrs = append(out.runErrs, tcErrno(err))
	}
	for i := range s.progs {
		v, err := w.lookupU64(cfd, uint32(i))
		if err != nil {
			return out, err
		}
		out.counters = append(out.counters, v)
	}
	return out, nil
}

func le32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
