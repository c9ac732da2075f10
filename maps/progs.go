package maps

// Programs as maps that hold them see them: the prog array's slots
// (kernel/bpf/arraymap.c) and the owner record every program-holding map
// keeps (struct bpf_map_owner, __bpf_prog_map_compatible in
// kernel/bpf/core.c).

// ProgOwner is what the kernel records of the first program a
// program-holding map meets, and compares every later one against
// (struct bpf_map_owner). A tail call keeps the caller's context and
// runtime, so every program reachable through the map must agree on them.
type ProgOwner struct {
	// Type is the program type (enum bpf_prog_type, resolve_prog_type).
	Type uint32
	// ExpectedAttachType is the program's expected_attach_type.
	ExpectedAttachType uint32
	// Jited, XDPHasFrags and Sleepable are the flags of the same names.
	Jited, XDPHasFrags, Sleepable bool
	// RawContext is bpfsim's own: the program reads its context as the
	// uapi struct because it was loaded unverified, where verified
	// programs of its type read the kernel structure behind it. A tail
	// call between the two would hand one the other's context.
	RawContext bool
}

// ProgObject is a program as a map holding it sees it: an Object (a
// reference on the loaded program, its id) with what the owner check
// compares.
type ProgObject interface {
	Object
	ProgOwner() ProgOwner
}

// AttachTyped is the ability of a ProgObject to tell the expected attach
// type it was loaded with (expected_attach_type).
type AttachTyped interface {
	ExpectedAttachType() uint32
}

// ProgFdField is the ability of maps whose values hold, among plain
// fields, a program's fd (a devmap's struct bpf_devmap_val, a cpumap's
// struct bpf_cpumap_val): user space writes the fd, the map keeps the
// program (a reference on it) and a lookup reads its id back there.
type ProgFdField interface {
	// ProgFdOffset says where this map's values hold the fd, if they
	// have the field.
	ProgFdOffset() (off int, ok bool)
	// UpdateElemWithProg is UpdateElem for a value whose fd is positive:
	// prog is the program it names, nil if it names none.
	UpdateElemWithProg(key, value []byte, prog ProgObject, flags uint64) error
}

// ProgHolder is the ability of maps that hold programs
// (map_type_contains_progs): the kernel checks every program that uses
// such a map, when it loads, against the map's owner, which the first
// program checked (used by a program or stored in the map) sets
// (bpf_check_tail_call, bpf_prog_map_compatible).
type ProgHolder interface {
	// ProgCompatible sets the owner if there is none and reports whether
	// o matches it.
	ProgCompatible(o ProgOwner) bool
}

// TailCallTarget is the ability of prog arrays that the tail call
// instruction reads: the program in slot idx (nil for an empty slot), and
// whether idx is below max_entries. It is safe to call from a running
// program while user space updates the map: it sees the old program or
// the new one.
type TailCallTarget interface {
	ProgAt(idx uint32) (prog ProgObject, inBounds bool)
}

// FdUpdateChecker is the optional ability of an FdValues map to check an
// update's key and flags before the kernel resolves the file descriptor
// in its value, for map types that, like the kernel's fd arrays, refuse
// bad flags and indexes before they look at the fd
// (bpf_fd_array_map_update_elem).
type FdUpdateChecker interface {
	CheckFdUpdate(key []byte, flags uint64) error
}
