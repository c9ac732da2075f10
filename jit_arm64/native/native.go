// Package native runs A64 functions natively, under qemu-aarch64 (Debian's
// qemu-user), and on bpfsim's A64 emulator (jit_arm64/emu) with the same
// inputs, so that the emulator can be checked against a real
// implementation of the architecture. It has no kernel counterpart: it is
// the harness behind the differential tests of the arm64 JIT (issue 7,
// step 6).
//
// A Case is a position-independent function (A64 words, little-endian)
// following AAPCS64, as the arm64 BPF JIT emits for a program without
// helper calls or tail calls, plus the bytes of its input buffer. Both
// runners call it the same way:
//
//   - x0 = the address of a private, writable copy of Data, x1 =
//     len(Data); x2-x18 = 0 except x16, which holds the function's own
//     address (the runner's BLR register); x19-x29 =
//     CalleeSavedPattern(r); x30 = the return address; NZCV = 0;
//   - SP = the top of a 64 KiB (StackSize) zero-filled stack, 16-byte
//     aligned;
//   - the function returns with RET; its result is x0, and Data as the
//     function left it. Clobbered has bit r set for each of x19-x29 that
//     differs from its pattern afterwards, and SPClobbered if SP was not
//     restored: the JIT must preserve them (AAPCS64).
//
// Addresses differ between the two runners (the emulator's memory is
// simulated kernel memory, qemu's is a user address space), so a function
// must not let an address (of Data, of the stack, of itself, or LR) reach
// x0 or memory. Case.Ptrs covers contexts that hold pointers into their
// own buffer (a struct with data/data_end fields): each listed offset
// holds an offset into Data, turned into an absolute address before the
// call and back into an offset in Result.Data.
//
// Native runs many cases in one qemu process: WriteELF builds a tiny static
// aarch64 executable (two PT_LOAD segments, no libc) whose _start, written
// with jit_arm64/a64, calls each case in turn and streams one record per
// case to stdout with write(2). A case that faults (SIGSEGV, SIGILL,
// SIGTRAP from BRK) or hangs kills the process; the records already
// written say which case it was, so that case gets Result.Fault and the
// rest run in a fresh process.
//
// Feeding JIT output: turn each verified, JITed program into a Case (its
// image from the entry point, which must need no relocation: no helper
// calls, no tail calls, no map addresses it dereferences outside Data),
// then
//
//	mism, err := native.Diff(qemu, cases)
//
// runs them natively and on the emulator and returns every difference in
// X0, Data, Clobbered or faulting. A caller that also has the interpreter's
// results compares them with the Results of Native or Emulate directly.
// qemu comes from QEMU, which tests call through a helper that skips the
// test with the error's message when qemu-aarch64 cannot be found or
// installed.
package native

import (
	"encoding/binary"
	"fmt"
)

// Case is one function and its input.
type Case struct {
	// Code is the function: whole A64 instructions, position independent.
	Code []byte
	// Data is copied into a writable buffer passed in x0 (length in x1).
	Data []byte
	// Ptrs lists offsets in Data of 8-byte little-endian fields that hold
	// an offset into Data; the callee sees the absolute address instead.
	Ptrs []int
}

// Result is what one call of a Case produced.
type Result struct {
	X0   uint64
	Data []byte
	// Clobbered has bit r set if xr (19..29) was not preserved, and
	// SPClobbered if SP was not.
	Clobbered uint32
	// Fault says why the function did not return (a signal under qemu, an
	// emulator fault); X0 and Data are then unset.
	Fault string
}

// CalleeSavedOK reports whether x19-x29 and SP were preserved.
func (r Result) CalleeSavedOK() bool { return r.Clobbered == 0 }

// Runner runs a batch of cases; Native (bound to a qemu path) and Emulate
// are Runners.
type Runner func(cases []Case) ([]Result, error)

// relocated returns a copy of Data with each Ptrs field turned from an
// offset into an address relative to base.
func (c Case) relocated(base uint64) ([]byte, error) {
	buf := append([]byte(nil), c.Data...)
	for _, off := range c.Ptrs {
		if off < 0 || off+8 > len(buf) {
			return nil, fmt.Errorf("pointer field at %d outside the %d-byte buffer", off, len(buf))
		}
		v := binary.LittleEndian.Uint64(buf[off:])
		binary.LittleEndian.PutUint64(buf[off:], v+base)
	}
	return buf, nil
}

// unrelocate turns the Ptrs fields of out back into offsets.
func (c Case) unrelocate(out []byte, base uint64) {
	for _, off := range c.Ptrs {
		v := binary.LittleEndian.Uint64(out[off:])
		binary.LittleEndian.PutUint64(out[off:], v-base)
	}
}
