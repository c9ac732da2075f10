package sim

import (
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// bpf_strncmp (kernel/bpf/helpers.c): a program's bytes against a
// constant string, which the verifier checked is NUL-terminated in a
// read-only map (ARG_PTR_TO_CONST_STR); strncmp's result, -1, 0 or 1.

const funcStrncmp = 182

var strncmpProto = &verifier.FuncProto{
	Args: [5]verifier.ArgType{verifier.ArgPtrToMem, verifier.ArgConstSize, verifier.ArgPtrToConstStr},
}

func (k *Kernel) registerStringHelpers() {
	if err := k.RegisterHelper(&Helper{ID: funcStrncmp, Proto: strncmpProto, Fn: k.helperStrncmp}); err != nil {
		panic(err) // the table has unique ids
	}
}

// helperStrncmp is bpf_strncmp(s1, s1_sz, s2): lib/string.c's strncmp of
// at most s1_sz bytes, stopping at a NUL both strings share.
func (k *Kernel) helperStrncmp(m *interp.Machine, s1, size, s2, _, _ uint64) (uint64, error) {
	if err := checkHelperSize(m, size); err != nil {
		return 0, err
	}
	a, err := readArg(m, s1, uint32(size), 0)
	if err != nil {
		return 0, err
	}
	for i := uint64(0); i < size; i++ {
		c, f := m.TLB.Load8(s2 + i)
		if f != nil {
			f.PC = m.PC()
			return 0, f
		}
		switch c1 := uint64(a[i]); {
		case c1 < c:
			return ^uint64(0), nil // -1
		case c1 > c:
			return 1, nil
		case c1 == 0:
			return 0, nil
		}
	}
	return 0, nil
}
