package kdiff

import (
	"strings"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// The kernel's xlated code of a program with maps cannot run on bpfsim as
// it is: its lddw instructions name maps by kernel id, its helper calls go
// straight to the map type's functions (fixup_bpf_calls turns
// bpf_map_update_elem into a call of htab_map_update_elem, and so on), and
// its lookups are inlined with the kernel's own layout constants
// (array_map_gen_lookup, percpu_array_map_gen_lookup, htab_map_gen_lookup,
// htab_percpu_map_gen_lookup). translateXlated undoes exactly that, and
// nothing else: each map reference becomes the map's index in
// Program.Maps, each direct call the helper it came from, and each inlined
// lookup a bpf_map_lookup_elem call followed by `goto +0` fillers, so that
// every other instruction, and every jump offset, stays as the kernel has
// it.

// ErrNoKernelSymbols says the kernel hides its functions' addresses from
// this process (/proc/kallsyms shows zeros under kernel.kptr_restrict), so
// calls in xlated code cannot be named and translated.
var ErrNoKernelSymbols = errors.New("kernel function addresses are hidden from this process (/proc/kallsyms, kernel.kptr_restrict)")

// translateXlated rewrites xlated in place. mapIndex gives the index in
// Program.Maps of the kernel map with an id; callName names the kernel
// function a call's imm reaches (imm is its offset from __bpf_call_base).
func translateXlated(x []insn.Insn, mapIndex func(id uint32) (int, bool), callName func(imm int32) (string, error)) error {
	for i := 0; i < len(x); i++ {
		in := x[i]
		switch {
		case in.IsLdImm64():
			if in.Src == insn.PseudoMapFD || in.Src == insn.PseudoMapValue {
				if in.Src == insn.PseudoMapValue {
					return errors.Errorf("insn %d: direct map value access is not translated", i)
				}
				idx, ok := mapIndex(uint32(in.Imm))
				if !ok {
					return errors.Errorf("insn %d: map id %d is not one of the program's maps", i, in.Imm)
				}
				x[i].Imm = int32(idx)
			}
			i++
		case in.Code == insn.JMP|insn.CALL && in.Src == 0:
			name, err := callName(in.Imm)
			if err != nil {
				return errors.Wrapf(err, "insn %d: call to the kernel function at %+d from __bpf_call_base", i, in.Imm)
			}
			n, err := translateCall(x, i, name)
			if err != nil {
				return errors.Wrapf(err, "insn %d", i)
			}
			i += n
		case isArrayGenLookup(x, i):
			// r1 += offsetof(struct bpf_array, value or pptrs); r0 = *(u32 *)(r2 +0);
			// if r0 >= max_entries goto +J; ...; goto +1; r0 = 0
			end := i + 3 + int(x[i+2].Off)
			x[i] = helperCall(uapi.FuncMapLookupElem)
			nop(x[i+1 : end+1])
			i = end
		}
	}
	return nil
}

// translateCall turns the call at x[i] to the kernel function name back
// into a helper call, and fills the rest of an inlined lookup; it returns
// how many instructions after i it consumed.
func translateCall(x []insn.Insn, i int, name string) (int, error) {
	switch {
	case name == "__htab_map_lookup_elem":
		// htab_map_gen_lookup: call; if r0 == 0 goto +N; r0 += value
		// offset (and for PERCPU_HASH: r0 = *(u64 *)(r0 +0); r0 =
		// this_cpu_ptr(r0)).
		if i+1 >= len(x) || x[i+1].Code != insn.JMP|insn.JEQ|insn.K || x[i+1].Dst != insn.R0 || x[i+1].Imm != 0 ||
			i+2+int(x[i+1].Off) > len(x) {
			return 0, errors.New("__htab_map_lookup_elem without the inlined null check after it")
		}
		n := 1 + int(x[i+1].Off)
		x[i] = helperCall(uapi.FuncMapLookupElem)
		nop(x[i+1 : i+1+n])
		return n, nil
	case name == "bpf_map_lookup_elem" || strings.HasSuffix(name, "map_lookup_elem"):
		x[i] = helperCall(uapi.FuncMapLookupElem)
	case strings.HasSuffix(name, "_update_elem"):
		x[i] = helperCall(uapi.FuncMapUpdateElem)
	case strings.HasSuffix(name, "_delete_elem"):
		x[i] = helperCall(uapi.FuncMapDeleteElem)
	default:
		return 0, errors.Errorf("call to %s, which is not translated", name)
	}
	return 0, nil
}

// isArrayGenLookup recognises the start of an inlined array lookup.
func isArrayGenLookup(x []insn.Insn, i int) bool {
	if i+3 >= len(x) {
		return false
	}
	a, l, j := x[i], x[i+1], x[i+2]
	if a.Code != insn.ALU64|insn.ADD|insn.K || a.Dst != insn.R1 ||
		l.Code != insn.LDX|insn.MEM|insn.W || l.Dst != insn.R0 || l.Src != insn.R2 || l.Off != 0 ||
		j.Code != insn.JMP|insn.JGE|insn.K || j.Dst != insn.R0 || j.Off < 2 {
		return false
	}
	end := i + 3 + int(j.Off)
	return end < len(x) && x[end] == (insn.Insn{Code: insn.ALU64 | insn.MOV | insn.K, Dst: insn.R0}) &&
		x[end-1] == (insn.Insn{Code: insn.JMP | insn.JA, Off: 1})
}

func helperCall(id int32) insn.Insn { return insn.Insn{Code: insn.JMP | insn.CALL, Imm: id} }

// nop fills with `goto +0`.
func nop(x []insn.Insn) {
	for i := range x {
		x[i] = insn.Insn{Code: insn.JMP | insn.JA}
	}
}
