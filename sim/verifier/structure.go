// Package verifier is bpfsim's counterpart of kernel/bpf/verifier.c, for
// a privileged loader: it proves a program safe as the kernel does,
// refusing what the kernel refuses with the kernel's errno and log, and
// then rewrites it as the kernel's fix-up passes do.
//
// The passes, in the order a load runs them, and where they live:
//   - structure (structure.go): the instruction limits of bpf_prog_load,
//     check_subprogs' functions and jump ranges, resolve_pseudo_ldimm64's
//     lddw rules; cfg.go: check_cfg and the static register liveness;
//   - abstract interpretation (verifier.go, check.go): register and stack
//     states (regs.go, state.go, tnum.go, scalar.go), ALU (alu.go), memory
//     (mem.go, with the context rules of progtypes.go), jumps (jmp.go),
//     helper and function calls (call.go, protos.go, callback.go,
//     globals.go), kfuncs (kfunc.go), references (refs.go), spin locks
//     (spinlock.go), timers (timer.go), dynptrs (dynptr.go), open-coded
//     iterators (iter.go), maps of maps (mapinmap.go), tail calls
//     (tailcall.go); state pruning (prune.go) with precision
//     (precision.go), liveness (liveness.go) and loop convergence over the
//     control flow graph's strongly connected components (scc.go, as in
//     Linux 6.17); the log (log.go);
//   - fix-ups (fixups.go, patch.go): dead code, context conversion
//     (ctxconv.go), calls made direct, inlined map lookups and bpf_loop
//     (inlineloop.go), kfunc calls (kfunc_fixups.go) and, as seed 003
//     proposes, inlined kfunc bodies (inlinekfunc.go).
package verifier

import (
	"fmt"
	"slices"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// MaxInsns is BPF_COMPLEXITY_LIMIT_INSNS, the most instructions a
// privileged loader may submit.
const MaxInsns = 1_000_000

// Error is a load failure with the kernel's verifier log line and errno.
type Error struct {
	Errno uapi.Errno
	Msg   string // as the kernel's verifier log prints it
	// Log is the verifier log up to the error (its last line is Msg), at
	// the log level the load asked for.
	Log string
}

func (e *Error) Error() string { return e.Msg }

// Unwrap exposes the errno for errors.Is.
func (e *Error) Unwrap() error { return e.Errno }

func reject(errno uapi.Errno, format string, args ...any) error {
	return errors.WithStack(&Error{Errno: errno, Msg: fmt.Sprintf(format, args...)})
}

// Subprog is one function of a program: its first instruction and the
// index one past its last.
type Subprog struct {
	Start, End int
	// StackDepth is the deepest stack offset the function touches, as
	// verification found it.
	StackDepth int
}

// CheckStructure runs the kernel's structural checks and returns the
// program's subprograms in order, the main program first.
func CheckStructure(insns []insn.Insn) ([]Subprog, error) {
	n := len(insns)
	if n == 0 || n > MaxInsns {
		return nil, reject(uapi.E2BIG, "program has %d instructions; it must have 1 to %d", n, MaxInsns)
	}
	if subs, ok := checkStraightLine(insns); ok {
		return subs, nil
	}
	subs, err := findSubprogs(insns)
	if err != nil {
		return nil, err
	}
	if err := checkSubprogs(insns, subs); err != nil {
		return nil, err
	}
	return subs, checkLdImm64(insns)
}

// checkStraightLine is CheckStructure in one scan for a well-formed
// program without calls, jumps (exits aside) or loads other than lddw of
// a constant or a map: one function, no jump to check, only its last
// instruction and its lddw pairs. ok is false for any other program, and
// for any fault, which the full checks then report as they order them.
func checkStraightLine(insns []insn.Insn) (subs []Subprog, ok bool) {
	n := len(insns)
	last := n - 1 // the last instruction's first slot
	for i := 0; i < n; i++ {
		in := &insns[i]
		switch c := in.Code; {
		case c == insn.JMP|insn.EXIT:
		case c&0x07 == insn.JMP || c&0x07 == insn.JMP32:
			return nil, false
		case c == insn.LD|insn.IMM|insn.DW:
			if in.Src == insn.PseudoFunc || in.Src > insn.PseudoMapIdxValue || i == n-1 {
				return nil, false
			}
			if next := &insns[i+1]; next.Code != 0 || next.Dst != 0 || next.Src != 0 || next.Off != 0 {
				return nil, false
			}
			if i+1 == n-1 {
				last = i
			}
			i++
		case c&0x07 == insn.LD:
			return nil, false // legacy packet loads, bad lddw opcodes
		}
	}
	if insns[last].Code != insn.JMP|insn.EXIT {
		return nil, false
	}
	return []Subprog{{Start: 0, End: n}}, true
}

// CheckRegisters refuses register numbers past r10 anywhere in the
// program. The verifier finds them on the paths it explores (and refuses
// unreachable code); a program loaded unverified needs this check before
// the interpreter runs it.
func CheckRegisters(insns []insn.Insn) error { return checkRegisters(insns) }

// checkRegisters refuses register numbers past r10: AX (r11) belongs to the
// kernel's own rewrites, and the encoding allows up to r15.
func checkRegisters(insns []insn.Insn) error {
	for i, in := range insns {
		if i > 0 && insns[i-1].IsLdImm64() {
			continue // the second slot is checked with its lddw
		}
		if in.Dst > insn.R10 {
			return reject(uapi.EINVAL, "R%d is invalid", in.Dst)
		}
		if in.Src > insn.R10 && !(in.Class() == insn.JMP && in.Op() == insn.CALL) {
			return reject(uapi.EINVAL, "R%d is invalid", in.Src)
		}
	}
	return nil
}

// checkLdImm64 mirrors resolve_pseudo_ldimm64's shape checks: a 64-bit
// immediate load needs a second slot with an all-zero header.
func checkLdImm64(insns []insn.Insn) error {
	for i := 0; i < len(insns); i++ {
		in := insns[i]
		if in.Class() == insn.LD && in.Mode() == insn.IMM && in.SizeBits() != insn.DW {
			return reject(uapi.EINVAL, "unknown opcode %02x", in.Code)
		}
		if !in.IsLdImm64() {
			continue
		}
		if i == len(insns)-1 {
			return reject(uapi.EINVAL, "invalid bpf_ld_imm64 insn")
		}
		next := insns[i+1]
		if next.Code != 0 || next.Dst != 0 || next.Src != 0 || next.Off != 0 {
			return reject(uapi.EINVAL, "invalid bpf_ld_imm64 insn")
		}
		if in.Src > insn.PseudoMapIdxValue {
			return reject(uapi.EINVAL, "unrecognized bpf_ld_imm64 insn")
		}
		i++
	}
	return nil
}

// findSubprogs collects function starts from bpf-to-bpf calls and
// function-pointer loads, as add_subprog_and_kfunc does.
func findSubprogs(insns []insn.Insn) ([]Subprog, error) {
	var startBuf [8]int
	starts := append(startBuf[:0], 0)
	for i, in := range insns {
		isCall := in.Code == insn.JMP|insn.CALL && in.Src == insn.PseudoCall
		isFunc := in.IsLdImm64() && in.Src == insn.PseudoFunc
		if !isCall && !isFunc {
			continue
		}
		target := i + 1 + int(in.Imm)
		if target < 0 || target >= len(insns) {
			return nil, reject(uapi.EINVAL, "call to invalid destination")
		}
		starts = append(starts, target)
	}
	slices.Sort(starts)
	starts = slices.Compact(starts)
	subs := make([]Subprog, len(starts))
	for i, s := range starts {
		end := len(insns)
		if i+1 < len(starts) {
			end = starts[i+1]
		}
		subs[i] = Subprog{Start: s, End: end}
	}
	return subs, nil
}

// checkSubprogs mirrors check_subprogs: jumps stay inside their function,
// and every function ends with an exit or an unconditional jump.
func checkSubprogs(insns []insn.Insn, subs []Subprog) error {
	// second marks the slots holding an lddw's upper half; a bitmap on
	// the stack covers the usual program without allocating.
	var bitBuf [64]uint64
	bitmap := bitBuf[:]
	if w := (len(insns) + 63) / 64; w > len(bitmap) {
		bitmap = make([]uint64, w)
	}
	second := func(i int) bool { return bitmap[i/64]&(1<<(i%64)) != 0 }
	for i := 0; i+1 < len(insns); i++ {
		// A truncated lddw at the end is checkLdImm64's to report.
		if insns[i].IsLdImm64() {
			bitmap[(i+1)/64] |= 1 << ((i + 1) % 64)
			i++
		}
	}
	for _, sp := range subs {
		for i := sp.Start; i < sp.End; i++ {
			in := insns[i]
			if second(i) {
				continue
			}
			cl := in.Class()
			if cl != insn.JMP && cl != insn.JMP32 {
				continue
			}
			op := in.Op()
			if op == insn.CALL || op == insn.EXIT {
				continue
			}
			off := int(in.Off)
			if in.Code == insn.JMP32|insn.JA {
				off = int(in.Imm)
			}
			target := i + 1 + off
			if target < sp.Start || target >= sp.End {
				return reject(uapi.EINVAL, "jump out of range from insn %d to %d", i, target)
			}
			if second(target) {
				return reject(uapi.EINVAL, "jump into the middle of ldimm64 insn %d", target-1)
			}
		}
		last := insns[sp.End-1]
		if second(sp.End - 1) {
			last = insns[sp.End-2]
		}
		if last.Code != insn.JMP|insn.EXIT && last.Code != insn.JMP|insn.JA && last.Code != insn.JMP32|insn.JA {
			return reject(uapi.EINVAL, "last insn is not an exit or jmp")
		}
	}
	return nil
}
