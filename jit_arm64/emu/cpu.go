// Package emu executes A64 (AArch64) machine code from the simulated kernel
// address space (sim/mem): the code the arm64 BPF JIT
// (arch/arm64/net/bpf_jit_comp.c) produces, placed in executable memory by
// sim/progpack. It models one CPU's integer state (X0-X30, SP, PC, NZCV),
// fetches instructions through the CPU's TLB with an execute-permission
// check, and runs the forms jit_arm64/a64 encodes. Calls into the kernel
// (helpers, map operations) are BL/BLR to addresses registered as Go
// functions.
//
// Each word is decoded once into an internal op and cached per address;
// the cache entry remembers the word it was decoded from and is re-decoded
// whenever the word in memory differs, so text patching (jit_arm64's
// Patcher, freed program memory refilled with BRK) is seen at the next
// fetch without an explicit flush.
//
// An optional instruction-TLB model (itlb.go: EnableITLB) counts the
// fetches, misses and walks that 4 KiB pages and 2 MiB blocks of code
// cause, for seed 000's prog pack experiment.
//
// Not modelled: SIMD/FP, exception levels, the extended-register add/sub
// forms, alignment faults of ordinary loads and stores (arm64 kernel
// memory allows unaligned access to normal memory), and a multi-CPU
// exclusive monitor (see ldxr/stxr in exec.go).
package emu

import (
	"fmt"

	"github.com/bpfsim/bpfsim/sim/mem"
)

// ReturnSentinel is the link register value Run installs: a RET (or BR) to
// it ends the run. It is a canonical kernel address in no mapped region.
const ReturnSentinel uint64 = 0xffff_ffff_ffff_f000

// Func is a kernel function implemented in Go, called by BL/BLR to its
// address. It reads its arguments from X0-X7 and leaves its result in X0;
// an error stops the run.
type Func func(c *CPU) error

// CPU is one simulated arm64 CPU. It is not safe for concurrent use; run
// one CPU per goroutine, each with its own TLB.
type CPU struct {
	// R holds the registers: R[0..30] are X0-X30, R[RegZR] is always
	// zero, R[RegSP] is SP.
	R [numRegs]uint64
	// PC is the address of the next instruction.
	PC uint64
	// N, Z, C, V are the condition flags.
	N, Z, C, V bool

	// SysRegs holds the values MRS reads, keyed by the a64.SysReg
	// encoding (e.g. a64.SysRegSP_EL0 for current).
	SysRegs map[uint32]uint64
	// Funcs maps addresses to Go functions a BL/BLR may call.
	Funcs map[uint64]Func
	// Limit, if non-zero, is the most instructions one Run may retire.
	Limit uint64
	// Retired counts instructions executed (Go functions count as one, the
	// call instruction).
	Retired uint64
	// Data is the embedder's per-CPU state, for Go functions to use.
	Data any
	// Fixup is the kernel's exception table: for a data access at pc
	// that faulted, the register to zero before the code goes on at
	// pc+4 (ex_handler_bpf for a BPF probe load); ok false lets the
	// fault end the run. Nil: no entries.
	Fixup func(pc uint64) (reg int, ok bool)

	tlb  *mem.TLB
	itlb *itlb // the instruction-TLB model (itlb.go), nil when off

	// The exclusive monitor: the address and value of the last LDXR.
	exAddr  uint64
	exVal   uint64
	exValid bool

	pages map[uint64]*codePage
}

// codePage caches decoded instructions of one 4 KiB page.
type codePage struct {
	insts [mem.PageSize / 4]inst
	valid [mem.PageSize / 4]bool
}

// New returns a CPU that reaches memory through tlb.
func New(tlb *mem.TLB) *CPU {
	return &CPU{tlb: tlb, pages: make(map[uint64]*codePage), Funcs: make(map[uint64]Func), SysRegs: make(map[uint32]uint64)}
}

// TLB returns the CPU's translation cache.
func (c *CPU) TLB() *mem.TLB { return c.tlb }

// X returns register Xn (0..30; 31 reads as zero).
func (c *CPU) X(n int) uint64 { return c.R[n&31] }

// SetX sets register Xn (0..30); writes to 31 are ignored.
func (c *CPU) SetX(n int, v uint64) {
	if n&31 != 31 {
		c.R[n&31] = v
	}
}

// SP returns the stack pointer.
func (c *CPU) SP() uint64 { return c.R[RegSP] }

// SetSP sets the stack pointer.
func (c *CPU) SetSP(v uint64) { c.R[RegSP] = v }

// FlushDecoded drops every decoded instruction. Decoded entries check
// their word at each fetch, so this only frees memory.
func (c *CPU) FlushDecoded() { clear(c.pages) }

// Fault is an error raised by the executing code: a memory fault (Mem set;
// errors.Is(err, uapi.EFAULT) holds), a BRK, an unknown instruction or an
// error returned by a Go function.
type Fault struct {
	PC   uint64
	Word uint32
	Kind FaultKind
	Imm  uint32     // BRK immediate
	Mem  *mem.Fault // for KindMemory and KindFetch
	Err  error      // for KindFunc and KindLimit
}

// FaultKind says what stopped the run.
type FaultKind uint8

// Fault kinds.
const (
	KindFetch   FaultKind = iota // instruction fetch refused (not mapped, not executable)
	KindMemory                   // a data access faulted
	KindBrk                      // BRK executed
	KindUnknown                  // a word the emulator does not decode
	KindFunc                     // a Go function returned an error
	KindLimit                    // the instruction limit was reached
	KindAlign                    // misaligned PC or atomic access
)

func (f *Fault) Error() string {
	switch f.Kind {
	case KindFetch:
		return fmt.Sprintf("a64: instruction fetch at pc %#x: %v", f.PC, f.Mem)
	case KindMemory:
		return fmt.Sprintf("a64: at pc %#x (0x%08x): %v", f.PC, f.Word, f.Mem)
	case KindBrk:
		return fmt.Sprintf("a64: brk #%#x at pc %#x", f.Imm, f.PC)
	case KindUnknown:
		return fmt.Sprintf("a64: unknown instruction 0x%08x at pc %#x", f.Word, f.PC)
	case KindFunc:
		return fmt.Sprintf("a64: kernel function called at pc %#x: %v", f.PC, f.Err)
	case KindAlign:
		return fmt.Sprintf("a64: alignment fault at pc %#x (0x%08x): %v", f.PC, f.Word, f.Err)
	}
	return fmt.Sprintf("a64: at pc %#x: %v", f.PC, f.Err)
}

// Unwrap gives the memory fault or the Go function's error.
func (f *Fault) Unwrap() error {
	if f.Mem != nil {
		return f.Mem
	}
	return f.Err
}

// Run calls the code at entry with args in X0.. (at most 8), SP as it is,
// and LR set to ReturnSentinel, and runs until the code returns to the
// sentinel. It returns X0.
func (c *CPU) Run(entry uint64, args ...uint64) (uint64, error) {
	if len(args) > 8 {
		return 0, fmt.Errorf("a64: %d arguments, at most 8 pass in registers", len(args))
	}
	for i, a := range args {
		c.R[i] = a
	}
	c.R[30] = ReturnSentinel
	c.PC = entry
	if err := c.run(); err != nil {
		return 0, err
	}
	return c.R[0], nil
}

// fetchPage checks that pc's page is executable and returns its backing
// memory and decode cache.
//
// The page table decides, page by page, with execute access.
func (c *CPU) fetchPage(pc uint64) (*[mem.PageSize]byte, *codePage, *Fault) {
	pg, f := c.tlb.FetchPage(pc)
	if f != nil {
		return nil, nil, &Fault{PC: pc, Kind: KindFetch, Mem: f}
	}
	vpn := pc >> mem.PageShift
	cp := c.pages[vpn]
	if cp == nil {
		cp = new(codePage)
		c.pages[vpn] = cp
	}
	return pg, cp, nil
}

const noPage = ^uint64(0)

func (c *CPU) run() error {
	c.tlb.Sync()
	curVPN := noPage
	var pg *[mem.PageSize]byte
	var cp *codePage
	// pc and retired live in locals while code runs: they go back to the
	// CPU before anything that may look at them (a Go function, a return).
	pc, retired := c.PC, c.Retired
	limit := ^uint64(0)
	if c.Limit != 0 {
		limit = retired + c.Limit
	}
	for {
		if pc&3 != 0 {
			c.PC, c.Retired = pc, retired
			return &Fault{PC: pc, Kind: KindAlign, Err: fmt.Errorf("pc not 4-byte aligned")}
		}
		if vpn := pc >> mem.PageShift; vpn != curVPN {
			var f *Fault
			if pg, cp, f = c.fetchPage(pc); f != nil {
				c.PC, c.Retired = pc, retired
				return f
			}
			if c.itlb != nil {
				c.itlb.access(pc, 0)
			}
			curVPN = vpn
		}
		off := pc & (mem.PageSize - 1)
		w := uint32(mem.Load32(pg, off))
		in := &cp.insts[off>>2]
		if !cp.valid[off>>2] || in.word != w {
			*in = decode(w)
			cp.valid[off>>2] = true
		}
		if retired >= limit {
			c.PC, c.Retired = pc, retired
			return &Fault{PC: pc, Word: w, Kind: KindLimit, Err: fmt.Errorf("instruction limit %d reached", c.Limit)}
		}
		retired++
		if in.op == opBL || in.op == opBlr {
			// The target may be a Go function, which sees the CPU.
			c.PC, c.Retired = pc, retired
		}
		next, err := c.exec(in, pc)
		if err != nil && c.Fixup != nil {
			if f, isFault := err.(*Fault); isFault && f.Kind == KindMemory {
				if reg, ok := c.Fixup(pc); ok {
					c.R[reg&31] = 0
					pc += 4
					continue
				}
			}
		}
		if err != nil {
			c.PC = pc
			if in.op != opBL && in.op != opBlr {
				c.Retired = retired
			}
			return err
		}
		switch next {
		case ReturnSentinel:
			c.PC, c.Retired = next, retired
			return nil
		case pcCalled:
			// A Go function ran: it may have changed the address space
			// and charged instructions (ChargeFetch).
			c.tlb.Sync()
			curVPN = noPage
			retired = c.Retired
			next = c.R[30]
			if next == ReturnSentinel {
				c.PC = next
				return nil
			}
		}
		pc = next
	}
}

// pcCalled is what exec returns after calling a Go function; it is never a
// valid next pc (not 4-byte aligned).
const pcCalled = ^uint64(0)
