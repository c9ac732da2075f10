// Package kfunc describes kernel functions that BPF programs call directly
// (kfuncs): what a subsystem declares with BTF_KFUNCS_START and
// register_btf_kfunc_id_set (include/linux/btf.h, kernel/bpf/btf.c).
//
// A kfunc is a Go function with a BTF prototype. The simulated kernel
// gives it a BTF id in its vmlinux BTF (programs call it with
// BPF_PSEUDO_KFUNC_CALL and that id) and an address in its text, as it
// does helpers; the verifier checks each call against the prototype. The
// names of the parameters carry the kernel's suffixes: a parameter named
// "x__sz" is the size of the memory the one before it points to, one
// named "x__prog" is filled in by the verifier with the calling program's
// struct bpf_prog_aux pointer, whatever the program passes, and one named
// "x__ign" is not checked at all (the kfunc must cope with any value, as
// bpf_iter_bits_new reads its words the way bpf_probe_read_kernel does).
// A kfunc flagged IterNew, IterNext or IterDestroy is part of an
// open-coded iterator, and follows the kernel's rules for those.
//
// This package imports nothing of the simulated kernel but the interpreter's
// machine, so subsystems (package structops, examples) can declare kfuncs
// without importing package sim.
package kfunc

import (
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/interp"
)

// Flags are the kfunc flags of include/linux/btf.h (KF_*), with their
// kernel values.
type Flags uint32

const (
	// Acquire (KF_ACQUIRE): the kfunc returns a reference the program
	// must release.
	Acquire Flags = 1 << 0
	// Release (KF_RELEASE): the kfunc releases the reference passed to
	// it, a kernel object (a pointer to a struct that is not plain
	// memory) the program acquired. It implies TrustedArgs.
	Release Flags = 1 << 1
	// RetNull (KF_RET_NULL): a returned pointer may be NULL and must be
	// checked before use.
	RetNull Flags = 1 << 2
	// TrustedArgs (KF_TRUSTED_ARGS): kernel objects passed must be
	// trusted (trusted_ptr_) or referenced, not pointers merely read out
	// of other objects.
	TrustedArgs Flags = 1 << 4
	// Sleepable (KF_SLEEPABLE): only sleepable programs may call it.
	Sleepable Flags = 1 << 5
	// RCU (KF_RCU): pointer arguments must be trusted, referenced or
	// RCU-protected kernel objects (rcu_ptr_, as the task_struct's
	// real_parent a program reads out of a trusted task).
	RCU Flags = 1 << 7
	// IterNew, IterNext and IterDestroy (KF_ITER_NEW, KF_ITER_NEXT,
	// KF_ITER_DESTROY) make the kfunc part of an open-coded iterator:
	// bpf_iter_<type>_new(struct bpf_iter_<type> *it, ...) makes one on
	// the program's stack, bpf_iter_<type>_next(it) returns a pointer to
	// the next element or NULL (with RetNull) and
	// bpf_iter_<type>_destroy(it) ends it. The verifier tracks the
	// iterator as the kernel's does: made before use, destroyed on
	// every path, its loop verified until it converges.
	IterNew     Flags = 1 << 8
	IterNext    Flags = 1 << 9
	IterDestroy Flags = 1 << 10
	// RCUProtected (KF_RCU_PROTECTED), with IterNew: the iterator is
	// made only in an RCU read section (any non-sleepable program), and
	// the objects its next returns are RCU-protected (rcu_ptr_), not
	// trusted.
	RCUProtected Flags = 1 << 11
)

// Func is one kfunc.
type Func struct {
	// Name is the function's name, the BTF name programs call it by.
	Name string
	// Proto is its prototype. Parameter names carry the suffixes above.
	Proto *btf.FuncProto
	// Flags are its KF_* flags.
	Flags Flags
	// ProgTypes are the program types whose id set holds the kfunc
	// (register_btf_kfunc_id_set once per type); empty: every type.
	ProgTypes []ebpf.ProgramType
	// Fn runs the kfunc with the program's r1-r5 on machine m and
	// returns r0, like a helper's function.
	Fn func(m *interp.Machine, r1, r2, r3, r4, r5 uint64) (uint64, error)
	// Inline, if set, makes the kfunc inlinable (seed 003): BPF that does
	// what Fn does, which the verifier puts in place of each call,
	// specialised to what it knew there (see verifier.CheckInlineBody for
	// what a body may do, and verifier.InlineBail).
	Inline []insn.Insn
}

// AllowedFor reports whether programs of type t may call f.
func (f *Func) AllowedFor(t ebpf.ProgramType) bool {
	if len(f.ProgTypes) == 0 {
		return true
	}
	for _, pt := range f.ProgTypes {
		if pt == t {
			return true
		}
	}
	return false
}
