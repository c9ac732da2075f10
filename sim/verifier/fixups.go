package verifier

import (
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// The passes that rewrite a program once verification accepted it, in the
// order bpf_check runs them for a privileged loader:
//
//	opt_hard_wire_dead_code_branches  conditional jumps that always go one
//	                                  way become gotos
//	opt_remove_dead_code              instructions no path reached go
//	opt_remove_nops                   so do `goto +0` and `may_goto +0`
//	do_misc_fixups                    division guards, inlined map lookups,
//	                                  direct calls of kernel functions
//
// An unprivileged loader gets sanitize_dead_code instead of the first three
// (dead instructions become `goto -1` traps); bpfsim models a privileged
// loader, so it never does.
//
// What the kernel does at this stage and bpfsim does not, and why:
// convert_ctx_accesses, because the simulated contexts are laid out so that
// programs read them as written (see the context devices in package sim);
// the rewrite of LD_ABS and LD_IND into calls (gen_ld_abs), because the
// interpreter runs legacy packet access natively with the kernel's
// semantics; the may_goto counter on the stack, because the interpreter
// keeps a may_goto count per frame itself; Spectre masking of pointer
// arithmetic, which only unprivileged programs get; and the
// zero-extension pass, which only JITs that leave the upper half of 32-bit
// results undefined need (bpf_jit_needs_zext).

// HardWire says what opt_hard_wire_dead_code_branches decides from.
type HardWire int

const (
	// HardWireFromPredictions rewrites a conditional jump whose outcome
	// the verifier always knew: taken on every path (`goto off`) or on
	// none (`goto +0`), from InsnAux.TrueTaken and FalseTaken. This is
	// the RFC "bpf: use branch predictions in
	// opt_hard_wire_dead_code_branches()" (bpf-next, November 2024): it
	// also removes conditions whose both successors other paths reach,
	// such as a test of a constant argument inside a function.
	HardWireFromPredictions HardWire = iota
	// HardWireFromSeen rewrites a conditional jump only when one of its
	// two successors was never reached. This is what Linux does (6.12
	// and 6.18 included): use it to compare xlated code with a kernel's.
	HardWireFromSeen
)

func (h HardWire) String() string {
	switch h {
	case HardWireFromPredictions:
		return "branch predictions"
	case HardWireFromSeen:
		return "successors seen"
	}
	return "unknown"
}

// KernelCalls is how the fix-ups find the kernel functions calls go to.
// Each returns the call's imm: the function's address minus
// __bpf_call_base's, which is what a direct call carries (BPF_CALL_IMM).
type KernelCalls interface {
	// Helper returns the function behind helper id (the func of its struct
	// bpf_func_proto). inlinedByJIT reports a helper the JIT emits
	// itself (bpf_jit_inlines_helper_call): its call keeps the helper id.
	Helper(id int32) (imm int32, inlinedByJIT bool, err error)
	// MapOp returns the function of m's type that the map helper id
	// calls (ops->map_lookup_elem for bpf_map_lookup_elem, and so on).
	MapOp(m *maps.Map, helper int32) (int32, error)
	// Func returns the kernel function called name, for the sequences map
	// types generate.
	Func(name string) (int32, error)
}

// FixupConfig is what the rewrite passes need besides the program.
type FixupConfig struct {
	HardWire HardWire
	// Calls resolves helper and map calls to kernel functions; nil leaves
	// calls as they are (helper ids), for a kernel with no function
	// table.
	Calls KernelCalls
	// Type is the program type's context rules; when it is also a
	// CtxConverter, context loads are rewritten (convert_ctx_accesses).
	// Nil leaves them as written.
	Type ProgType
	// ProgAux is the address of the program's struct bpf_prog_aux, which
	// a call of bpf_timer_set_callback gets in R3.
	ProgAux uint64
	// InlineKfuncs replaces calls of inlinable kfuncs by their bodies,
	// specialised to what the verifier knew at each call (seed 003's
	// RFC; inlinekfunc.go).
	InlineKfuncs bool
	// Sleepable says the program may sleep: its local storage gets may
	// allocate with GFP_KERNEL rather than GFP_ATOMIC.
	Sleepable bool
}

// The gfp_t a local storage get is called with, the hidden fifth argument
// do_misc_fixups passes (include/linux/gfp_types.h of 6.x).
const (
	gfpAtomic = 0x820 // __GFP_HIGH | __GFP_KSWAPD_RECLAIM
	gfpKernel = 0xcc0 // __GFP_RECLAIM | __GFP_IO | __GFP_FS
)

// Fixup runs the rewrite passes on a verified program.
//
// The kernel removes dead code, then nops, then applies the other fix-ups
// (do_misc_fixups), each pass rewriting the program. bpfsim finds what
// each pass changes on the program as verified and rewrites it once: a
// removal maps every jump target the same way whether done at once or in
// turn, and the fix-ups never look at removed instructions. Programs with
// may_goto, whose nop removal looks back, take the passes one by one.
func Fixup(p *Prog, cfg *FixupConfig) error {
	if err := optimizeBpfLoop(p); err != nil {
		return err
	}
	defer numberCallbacks(p)
	if p.noJumps {
		// Straight-line code, all of it reached (check_cfg refuses
		// the rest): nothing to hard-wire or remove.
		return doMiscFixups(p, nil, cfg)
	}
	hardWireDeadCodeBranches(p, cfg.HardWire)
	remove, ok := deadCodeAndNops(p)
	if !ok {
		if err := removeDeadCode(p); err != nil {
			return err
		}
		if err := removeNops(p); err != nil {
			return err
		}
	}
	return doMiscFixups(p, remove, cfg)
}

// deadCodeAndNops finds what opt_remove_dead_code and opt_remove_nops
// remove together: the dead instructions, and the `goto +0` there will be
// once they are gone. remove is nil when nothing goes; ok is false, for
// programs with may_goto.
func deadCodeAndNops(p *Prog) (remove []bool, ok bool) {
	n := len(p.Insns)
	any := false
	for i, in := range p.Insns {
		if in.Code == insn.JMP|insn.JCOND {
			return nil, false
		}
		if !p.Aux[i].Seen || in == nop {
			any = true
		}
	}
	if !any {
		return nil, true
	}
	// after[i] is where instruction i ends up once the dead code is gone
	// (for a dead one, where the next live one does).
	after := growInts(&p.spare.start, n+1)
	size := 0
	for i := 0; i < n; i++ {
		after[i] = size
		if p.Aux[i].Seen {
			size++
		}
	}
	after[n] = size
	remove = zeroed(p.spare.remove, n)
	p.spare.remove = remove
	for i, in := range p.Insns {
		switch {
		case !p.Aux[i].Seen:
			remove[i] = true
		case in.Code == insn.JMP|insn.JA && in.Src == 0 && in.Dst == 0 && in.Imm == 0:
			if t := i + 1 + int(in.Off); t >= 0 && t <= n && after[t] == after[i]+1 {
				remove[i] = true // a goto +0 once the dead code is out
			}
		}
	}
	return remove, true
}

// isCondJump is insn_is_cond_jump: every JMP32 operation but gotol, and
// every JMP operation but goto, call and exit (may_goto included).
func isCondJump(code uint8) bool {
	op := code & 0xf0
	switch code & 0x07 {
	case insn.JMP32:
		return op != insn.JA
	case insn.JMP:
		return op != insn.JA && op != insn.EXIT && op != insn.CALL
	}
	return false
}

// hardWireDeadCodeBranches is opt_hard_wire_dead_code_branches: a
// conditional jump that always goes the same way becomes `goto off`
// (always taken) or `goto +0` (never taken, removed as a nop next). The
// program keeps its length.
func hardWireDeadCodeBranches(p *Prog, mode HardWire) {
	for i, in := range p.Insns {
		if !isCondJump(in.Code) {
			continue
		}
		var off int16
		switch mode {
		case HardWireFromPredictions:
			a := p.Aux[i]
			switch {
			case a.TrueTaken && !a.FalseTaken:
				off = in.Off
			case !a.TrueTaken && a.FalseTaken:
				off = 0
			default:
				continue
			}
		case HardWireFromSeen:
			next, target := i+1, i+1+int(in.Off)
			switch {
			case next < len(p.Aux) && !p.Aux[next].Seen:
				off = in.Off
			case target >= 0 && target < len(p.Aux) && !p.Aux[target].Seen:
				off = 0
			default:
				continue
			}
		default:
			continue
		}
		p.Insns[i] = insn.Insn{Code: insn.JMP | insn.JA, Off: off}
	}
}

// removeDeadCode is opt_remove_dead_code: every run of instructions no
// path reached goes. After hard-wiring, no live jump leads into one.
func removeDeadCode(p *Prog) error {
	var dead []bool
	for i, a := range p.Aux {
		if !a.Seen {
			if dead == nil {
				dead = make([]bool, len(p.Aux))
			}
			dead[i] = true
		}
	}
	if dead == nil {
		return nil
	}
	return p.rewrite(dead, nil)
}

var (
	nop      = insn.Insn{Code: insn.JMP | insn.JA}
	mayGoto0 = insn.Insn{Code: insn.JMP | insn.JCOND, Src: insn.MayGoto}
)

// removeNops is opt_remove_nops: `goto +0` and `may_goto +0` go. The
// kernel removes them one at a time from the first, and after a
// `may_goto +0` steps back, since the removal may have turned a
// `may_goto +1` just before it into another `may_goto +0`. Without
// may_goto there is nothing to step back for, and one rewrite removing
// them all gives the same program.
func removeNops(p *Prog) error {
	var nops []bool
	for i, in := range p.Insns {
		if in == mayGoto0 {
			return removeNopsOneByOne(p)
		}
		if in == nop {
			if nops == nil {
				nops = make([]bool, len(p.Insns))
			}
			nops[i] = true
		}
	}
	if nops == nil {
		return nil
	}
	return p.rewrite(nops, nil)
}

func removeNopsOneByOne(p *Prog) error {
	for i := 0; i < len(p.Insns); i++ {
		in := p.Insns[i]
		isMayGoto0 := in == mayGoto0
		if in != nop && !isMayGoto0 {
			continue
		}
		if err := p.Remove(i, 1); err != nil {
			return err
		}
		i--
		if isMayGoto0 && i >= 0 {
			i--
		}
	}
	return nil
}

// insnBufSize is INSN_BUF_SIZE: the longest sequence a map type may
// generate for one lookup is one less.
const insnBufSize = 32

// doMiscFixups is convert_ctx_accesses, then the part of do_misc_fixups
// bpfsim needs (see the top of this file for the rest): division and
// modulo guards, and calls. The two passes rewrite different instructions,
// so one rewrite does both. Each
// instruction of the verified program is looked at once; the sequences
// that replace some of them are spliced in together at the end, as if one
// by one, and never looked at again. The instructions in remove (nil for
// none) go in the same rewrite.
func doMiscFixups(p *Prog, remove []bool, cfg *FixupConfig) error {
	calls := cfg.Calls
	conv, _ := cfg.Type.(CtxConverter)
	var patches map[int][]insn.Insn
	for i := 0; i < len(p.Insns); i++ {
		in := &p.Insns[i] // by pointer: see insn.Insn
		var seq []insn.Insn
		switch {
		case remove != nil && remove[i]:
			continue
		case in.IsLdImm64():
			i++
			continue
		case conv != nil && p.Aux[i].CtxAccess:
			seq = conv.ConvertCtxAccess(in, p.Aux[i].CtxFieldSize)
		case p.Aux[i].ProbeMem:
			// convert_ctx_accesses: a load from a kernel object
			// becomes a probe load, which reads zeros on a fault.
			mode := uint8(insn.ProbeMem)
			if in.Mode() == insn.MEMSX {
				mode = insn.ProbeMemSX
			}
			in.Code = insn.LDX | mode | in.Code&0x18
		case isSignedDivByMinusOne(in):
			seq = signedDivByMinusOne(in)
		case isDivModByReg(in):
			seq = divModGuard(*in)
		case in.Code == insn.JMP|insn.CALL && in.Src == 0 && in.Imm == uapi.FuncTailCall:
			fixupTailCall(p, i)
		case in.Code == insn.JMP|insn.CALL && in.Src == 0 && in.Imm == uapi.FuncTimerSetCallback:
			// bpf_timer_set_callback(timer, callback_fn, prog->aux).
			if calls != nil {
				if _, err := fixupHelperCall(p, i, calls); err != nil {
					return err
				}
			}
			seq = []insn.Insn{
				{Code: insn.LD | insn.IMM | insn.DW, Dst: insn.R3, Imm: int32(uint32(cfg.ProgAux))},
				{Imm: int32(uint32(cfg.ProgAux >> 32))},
				p.Insns[i],
			}
		case in.Code == insn.JMP|insn.CALL && in.Src == 0 && in.Imm == uapi.FuncTaskStorageGet:
			// bpf_task_storage_get(map, task, value, flags, gfp).
			gfp := int32(gfpAtomic)
			if cfg.Sleepable {
				gfp = gfpKernel
			}
			if calls != nil {
				if _, err := fixupHelperCall(p, i, calls); err != nil { // rewrites the call's imm
					return err
				}
			}
			seq = []insn.Insn{{Code: insn.ALU64 | insn.MOV | insn.K, Dst: insn.R5, Imm: gfp}, p.Insns[i]}
		case in.Code == insn.JMP|insn.CALL && in.Src == 0 && calls != nil:
			var err error
			if seq, err = fixupHelperCall(p, i, calls); err != nil {
				return err
			}
		case in.Code == insn.JMP|insn.CALL && in.Src == insn.PseudoKfuncCall:
			if kf, facts := p.Aux[i].Kfunc, p.Aux[i].KfuncFacts; cfg.InlineKfuncs && kf != nil && kf.Body != nil && facts != nil {
				if body, ok := specializeBody(kf.Body, facts); ok {
					seq = body
					break
				}
			}
			var err error
			if seq, err = fixupKfuncCall(p, i, calls); err != nil { // kfunc_fixups.go
				return err
			}
		}
		if seq != nil {
			if patches == nil {
				patches = map[int][]insn.Insn{}
			}
			patches[i] = seq
		}
	}
	if pg, ok := cfg.Type.(PrologueGenerator); ok && p.directWrite {
		pro, err := prologue(p, pg, calls, patches[0])
		if err != nil {
			return err
		}
		if patches == nil {
			patches = map[int][]insn.Insn{}
		}
		patches[0] = pro
	}
	if patches == nil && remove == nil {
		return nil
	}
	if err := p.rewrite(remove, patches); err != nil {
		return err
	}
	placePokes(p)
	return nil
}

func isSignedDivByMinusOne(in *insn.Insn) bool {
	cls := in.Class()
	return (cls == insn.ALU || cls == insn.ALU64) && (in.Op() == insn.DIV || in.Op() == insn.MOD) &&
		in.Source() == insn.K && in.Off == 1 && in.Imm == -1
}

// signedDivByMinusOne makes the one signed division that can trap
// impossible: x s/ -1 is -x (which leaves INT_MIN as it is), x s% -1 is 0.
func signedDivByMinusOne(in *insn.Insn) []insn.Insn {
	if in.Op() == insn.DIV {
		return []insn.Insn{{Code: in.Class() | insn.NEG | insn.K, Dst: in.Dst}}
	}
	return []insn.Insn{{Code: insn.ALU | insn.MOV | insn.K, Dst: in.Dst}}
}

func isDivModByReg(in *insn.Insn) bool {
	cls := in.Class()
	return (cls == insn.ALU || cls == insn.ALU64) && (in.Op() == insn.DIV || in.Op() == insn.MOD) &&
		in.Source() == insn.X
}

// divModGuard wraps a division or modulo by a register in the checks that
// give BPF its defined results where a CPU would trap: x / 0 is 0, x % 0
// is x, and for the signed forms INT_MIN / -1 is INT_MIN and x % -1 is 0.
// The signed forms test the divisor plus one (in AX) against 1, catching
// 0 and -1 with one unsigned comparison. A 32-bit modulo that keeps x
// still zero-extends it, as every 32-bit operation does.
func divModGuard(in insn.Insn) []insn.Insn {
	is64 := in.Class() == insn.ALU64
	alu, jmp := uint8(insn.ALU), uint8(insn.JMP32)
	if is64 {
		alu, jmp = insn.ALU64, insn.JMP
	}
	ja := func(off int16) insn.Insn { return insn.Insn{Code: insn.JMP | insn.JA, Off: off} }
	zext := insn.Insn{Code: insn.ALU | insn.MOV | insn.X, Dst: in.Dst, Src: in.Dst}
	signed := in.Off == 1
	switch {
	case in.Op() == insn.DIV && !signed:
		return []insn.Insn{
			{Code: jmp | insn.JNE | insn.K, Dst: in.Src, Off: 2}, // divisor != 0: divide
			{Code: insn.ALU | insn.XOR | insn.X, Dst: in.Dst, Src: in.Dst},
			ja(1),
			in,
		}
	case in.Op() == insn.MOD && !signed:
		seq := []insn.Insn{
			{Code: jmp | insn.JEQ | insn.K, Dst: in.Src, Off: 1}, // divisor == 0: keep x
			in,
		}
		if !is64 {
			seq[0].Off = 2
			seq = append(seq, ja(1), zext)
		}
		return seq
	case in.Op() == insn.DIV:
		return []insn.Insn{
			{Code: insn.ALU64 | insn.MOV | insn.X, Dst: insn.AX, Src: in.Src},
			{Code: alu | insn.ADD | insn.K, Dst: insn.AX, Imm: 1},
			{Code: jmp | insn.JGT | insn.K, Dst: insn.AX, Off: 4, Imm: 1}, // neither 0 nor -1
			{Code: jmp | insn.JEQ | insn.K, Dst: insn.AX, Off: 1},         // -1: negate
			{Code: alu | insn.MOV | insn.K, Dst: in.Dst},                  // 0: x = 0 (negated, still 0)
			{Code: alu | insn.NEG | insn.K, Dst: in.Dst},
			ja(1),
			in,
		}
	default:
		seq := []insn.Insn{
			{Code: insn.ALU64 | insn.MOV | insn.X, Dst: insn.AX, Src: in.Src},
			{Code: alu | insn.ADD | insn.K, Dst: insn.AX, Imm: 1},
			{Code: jmp | insn.JGT | insn.K, Dst: insn.AX, Off: 3, Imm: 1}, // neither 0 nor -1
			{Code: jmp | insn.JEQ | insn.K, Dst: insn.AX, Off: 3, Imm: 1}, // 0: keep x
			{Code: insn.ALU | insn.MOV | insn.K, Dst: in.Dst},             // -1: 0
			ja(1),
			in,
		}
		if !is64 {
			seq[3].Off = 4
			seq = append(seq, ja(1), zext)
		}
		return seq
	}
}

// fixupHelperCall rewrites the helper call at i: a map helper whose map is
// known goes to the map type's own function, or is replaced by the
// lookup sequence the type generates; any other helper becomes a direct
// call of its function. It returns the sequence to splice in, or nil when
// the call was rewritten in place.
//
// The kernel specializes map calls only for programs it will JIT
// (prog->jit_requested); bpfsim models a 64-bit kernel with the JIT always
// on, as arm64 distributions build it (CONFIG_BPF_JIT_ALWAYS_ON).
func fixupHelperCall(p *Prog, i int, calls KernelCalls) ([]insn.Insn, error) {
	id := p.Insns[i].Imm
	imm, inlined, err := calls.Helper(id)
	if err != nil {
		return nil, reject(uapi.EFAULT, "kernel subsystem misconfigured func %s#%d: %v", uapi.HelperName(id), id, err)
	}
	if inlined {
		return nil, nil
	}
	aux := &p.Aux[i]
	if isMapHelper(id) && aux.MapPtr != nil && !aux.MapPoisoned {
		m := aux.MapPtr
		if gen, ok := m.Ops.(maps.LookupGenerator); ok && id == uapi.FuncMapLookupElem {
			seq, err := gen.GenLookup(func(name string) (insn.Insn, error) {
				imm, err := calls.Func(name)
				return insn.Insn{Code: insn.JMP | insn.CALL, Imm: imm}, err
			})
			switch {
			case errors.Is(err, uapi.EOPNOTSUPP):
				// Not inlined for this map: call its lookup directly.
			case err != nil:
				return nil, reject(uapi.EINVAL, "bpf verifier is misconfigured: %v", err)
			case len(seq) == 0 || len(seq) >= insnBufSize:
				return nil, reject(uapi.EINVAL, "bpf verifier is misconfigured")
			default:
				return seq, nil
			}
		}
		op, err := calls.MapOp(m, id)
		if err != nil {
			return nil, reject(uapi.EFAULT, "kernel subsystem misconfigured func %s#%d: %v", uapi.HelperName(id), id, err)
		}
		p.Insns[i].Imm = op
		return nil, nil
	}
	p.Insns[i].Imm = imm
	return nil, nil
}

// isMapHelper reports the helpers whose call may go straight to the map
// type's function (the ones bpfsim has of the kernel's list).
func isMapHelper(id int32) bool {
	switch id {
	case uapi.FuncMapLookupElem, uapi.FuncMapUpdateElem, uapi.FuncMapDeleteElem,
		uapi.FuncMapPushElem, uapi.FuncMapPopElem, uapi.FuncMapPeekElem,
		uapi.FuncMapLookupPercpuElem, uapi.FuncForEachMapElem, uapi.FuncRedirectMap:
		return true
	}
	return false
}
