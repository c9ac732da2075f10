package native

import (
	"debug/elf"
	"encoding/binary"
	"fmt"

	"github.com/bpfsim/bpfsim/jit_arm64/a64"
)

// The batch executable's memory layout. Text (the runner, then each case's
// code) starts just after the headers at TextBase; the data segment (runner
// state, the case table, one output record per case, then the stack as
// .bss) lies at DataBase plus its file offset, which keeps the two
// congruent as the ELF loader needs.
const (
	TextBase = 0x400000
	DataBase = 0x10000000

	// StackSize is the stack each case gets: SP starts at its top, and the
	// runner zero-fills all of it before every case so that each one sees
	// the same contents, as the emulator's freshly allocated stack does.
	StackSize = 64 << 10

	// recordHeader is the size of an output record's header: magic, case
	// index, X0, clobber mask. The case's data buffer follows it, so the
	// record is one contiguous write.
	recordHeader = 32
	recordMagic  = 0x52343641 // "A64R"
	// recordGap separates one record's data buffer from the next record,
	// so that a small overrun does not reach another case's input.
	recordGap = 64

	tableEntry = 32 // code address, record address, data length, spare

	svc0 = 0xd4000001 // SVC #0: the Linux syscall trap

	sysWrite     = 64
	sysExitGroup = 94

	// Exit statuses of the runner.
	exitShortWrite = 3
)

// CalleeSavedPattern is the value the runner (and Emulate) puts in x19-x29
// before calling a case; a case must return with the same values there.
// Bit 63 is clear and the value is non-zero, so "tst x19, x19" clears all
// of NZCV before the call.
func CalleeSavedPattern(r int) uint64 {
	return 0x5eed_0000_0000_0000 | uint64(r)<<40 | 0x0102_0304*uint64(r)
}

// SPClobbered is the bit of Result.Clobbered that says SP was not restored.
const SPClobbered = 1 << 31

// batch is one executable holding many cases.
type batch struct {
	image   []byte
	records []uint64 // address of each case's output record
	dataAt  []uint64 // address of each case's data buffer
}

// asm accumulates instruction words and the first encoding error.
type asm struct {
	w   []uint32
	err error
}

func (a *asm) e(word uint32, err error) {
	if err != nil && a.err == nil {
		a.err = err
	}
	a.w = append(a.w, word)
}

func (a *asm) pc() int { return len(a.w) }

// movAbs loads v into rd with exactly four instructions whatever v is, so
// that the runner's size does not depend on the addresses it holds.
func (a *asm) movAbs(rd a64.Reg, v uint64) {
	a.e(a64.Movz(rd, uint32(v&0xffff), 0))
	for sh := uint(16); sh < 64; sh += 16 {
		a.e(a64.Movk(rd, uint32(v>>sh&0xffff), sh))
	}
}

// branchTo patches the branch at index at to reach target (both indices
// into a.w), using enc to re-encode it.
func (a *asm) branchTo(at, target int, enc func(off int32) (uint32, error)) {
	w, err := enc(int32(target - at))
	if err != nil && a.err == nil {
		a.err = err
	}
	a.w[at] = w
}

// runnerAddrs are the addresses the runner needs.
type runnerAddrs struct {
	table, state, count, stackBase, stackTop uint64
}

// runner emits _start: for each case it zeroes the stack, sets SP to its
// top, x0 to the case's data buffer and x1 to its length, x2-x18 to zero
// (x16 holds the entry, as the BLR register), x19-x29 to
// CalleeSavedPattern and NZCV to zero; calls the case; records which of
// x19-x29 and SP differ afterwards; fills in the record header and writes
// the record to stdout. Streaming one record per case is what tells the
// harness, when qemu dies, which case killed it. It ends with
// exit_group(0), or exit_group(3) if a write came up short.
func runner(ad runnerAddrs) ([]uint32, error) {
	a := &asm{}
	x := a64.X
	a.movAbs(a64.X27, ad.table)
	a.movAbs(a64.X28, ad.count)
	a.e(a64.Movz(a64.X26, 0, 0))
	loop := a.pc()
	a.e(a64.Cmp(a64.X26, a64.X28))
	toDone := a.pc()
	a.e(0, nil) // b.cs done
	a.movAbs(a64.X24, ad.state)
	a.e(a64.StoreImm(a64.Size64, a64.X26, a64.X24, 0))
	// Zero the stack.
	a.movAbs(a64.X9, ad.stackBase)
	a.movAbs(a64.X10, ad.stackTop)
	zero := a.pc()
	a.e(a64.StorePair(a64.XZR, a64.XZR, a64.X9, 16, a64.PostIndex))
	a.e(a64.Cmp(a64.X9, a64.X10))
	a.e(a64.BCond(a64.CondCC, int32(zero-a.pc())))
	// Load the case: entry, record, length.
	a.e(a64.AddShifted(a64.X9, a64.X27, a64.X26, a64.LSL, 5))
	a.e(a64.LoadImm(a64.Size64, a64.X16, a64.X9, 0))
	a.e(a64.LoadImm(a64.Size64, a64.X12, a64.X9, 8))
	a.e(a64.LoadImm(a64.Size64, a64.X1, a64.X9, 16))
	a.e(a64.Mov(a64.SP, a64.X10))
	a.e(a64.AddImm(a64.X0, a64.X12, recordHeader))
	for r := 2; r <= 18; r++ {
		if r != 16 {
			a.e(a64.Movz(x(r), 0, 0))
		}
	}
	for r := 19; r <= 29; r++ {
		a.movAbs(x(r), CalleeSavedPattern(r))
	}
	a.e(a64.Tst(a64.X19, a64.X19))
	a.e(a64.Blr(a64.X16))
	// Back from the case: keep X0, collect the clobber mask in x10.
	a.e(a64.MovReg(a64.X15, a64.X0))
	a.e(a64.Movz(a64.X10, 0, 0))
	for r := 19; r <= 29; r++ {
		a.movAbs(a64.X9, CalleeSavedPattern(r))
		a.e(a64.Cmp(x(r), a64.X9))
		a.e(a64.BCond(a64.CondEQ, 2))
		a.e(a64.OrrImm(a64.X10, a64.X10, 1<<uint(r)))
	}
	a.e(a64.Mov(a64.X9, a64.SP))
	a.movAbs(a64.X11, ad.stackTop)
	a.e(a64.Cmp(a64.X9, a64.X11))
	a.e(a64.BCond(a64.CondEQ, 2))
	a.e(a64.OrrImm(a64.X10, a64.X10, SPClobbered))
	// Reload the loop state the case was free to clobber.
	a.movAbs(a64.X24, ad.state)
	a.e(a64.LoadImm(a64.Size64, a64.X26, a64.X24, 0))
	a.movAbs(a64.X27, ad.table)
	a.movAbs(a64.X28, ad.count)
	a.e(a64.AddShifted(a64.X9, a64.X27, a64.X26, a64.LSL, 5))
	a.e(a64.LoadImm(a64.Size64, a64.X12, a64.X9, 8))
	a.e(a64.LoadImm(a64.Size64, a64.X13, a64.X9, 16))
	a.movAbs(a64.X14, recordMagic)
	a.e(a64.StoreImm(a64.Size32, a64.W14, a64.X12, 0))
	a.e(a64.StoreImm(a64.Size32, a64.W26, a64.X12, 4))
	a.e(a64.StoreImm(a64.Size64, a64.X15, a64.X12, 8))
	a.e(a64.StoreImm(a64.Size64, a64.X10, a64.X12, 16))
	a.e(a64.StoreImm(a64.Size64, a64.XZR, a64.X12, 24))
	// write(1, record, 32+len)
	a.e(a64.Movz(a64.X0, 1, 0))
	a.e(a64.MovReg(a64.X1, a64.X12))
	a.e(a64.AddImm(a64.X2, a64.X13, recordHeader))
	a.e(a64.Movz(a64.X8, sysWrite, 0))
	a.e(svc0, nil)
	a.e(a64.Cmp(a64.X0, a64.X2))
	toFail := a.pc()
	a.e(0, nil) // b.ne fail
	a.e(a64.AddImm(a64.X26, a64.X26, 1))
	a.e(a64.B(int32(loop - a.pc())))
	done := a.pc()
	a.e(a64.Movz(a64.X0, 0, 0))
	a.e(a64.Movz(a64.X8, sysExitGroup, 0))
	a.e(svc0, nil)
	fail := a.pc()
	a.e(a64.Movz(a64.X0, exitShortWrite, 0))
	a.e(a64.Movz(a64.X8, sysExitGroup, 0))
	a.e(svc0, nil)
	a.branchTo(toDone, done, func(off int32) (uint32, error) { return a64.BCond(a64.CondCS, off) })
	a.branchTo(toFail, fail, func(off int32) (uint32, error) { return a64.BCond(a64.CondNE, off) })
	if a.err != nil {
		return nil, fmt.Errorf("native: runner: %w", a.err)
	}
	return a.w, nil
}

// buildBatch lays out cases into one executable.
func buildBatch(cases []Case) (*batch, error) {
	// The runner's size does not depend on its addresses.
	rw, err := runner(runnerAddrs{})
	if err != nil {
		return nil, err
	}
	textStart := HeaderSize(2)
	text := make([]byte, 4*len(rw))
	codeAt := make([]uint64, len(cases))
	for i, c := range cases {
		if len(c.Code) == 0 || len(c.Code)%4 != 0 {
			return nil, fmt.Errorf("native: case %d: code of %d bytes is not whole instructions", i, len(c.Code))
		}
		// Each function starts 16-byte aligned; the gap is BRK.
		for len(text)%16 != 0 {
			text = binary.LittleEndian.AppendUint32(text, a64.BreakFault)
		}
		codeAt[i] = TextBase + textStart + uint64(len(text))
		text = append(text, c.Code...)
	}
	dataOff := roundUp(textStart+uint64(len(text)), 16)
	dataVaddr := DataBase + dataOff
	const stateSize = 64
	tableAt := dataVaddr + stateSize
	data := make([]byte, stateSize+tableEntry*len(cases))
	b := &batch{records: make([]uint64, len(cases)), dataAt: make([]uint64, len(cases))}
	for i, c := range cases {
		rec := dataVaddr + uint64(len(data))
		b.records[i] = rec
		b.dataAt[i] = rec + recordHeader
		buf, err := c.relocated(b.dataAt[i])
		if err != nil {
			return nil, fmt.Errorf("native: case %d: %w", i, err)
		}
		data = append(data, make([]byte, recordHeader)...)
		data = append(data, buf...)
		data = append(data, make([]byte, int(roundUp(uint64(len(data)), 16))-len(data)+recordGap)...)
		e := data[stateSize+tableEntry*i:]
		binary.LittleEndian.PutUint64(e[0:], codeAt[i])
		binary.LittleEndian.PutUint64(e[8:], rec)
		binary.LittleEndian.PutUint64(e[16:], uint64(len(c.Data)))
	}
	stackBase := roundUp(dataVaddr+uint64(len(data)), 16)
	stackTop := stackBase + StackSize
	rw, err = runner(runnerAddrs{table: tableAt, state: dataVaddr, count: uint64(len(cases)), stackBase: stackBase, stackTop: stackTop})
	if err != nil {
		return nil, err
	}
	for i, w := range rw {
		binary.LittleEndian.PutUint32(text[4*i:], w)
	}
	b.image, err = WriteELF(TextBase+textStart, []Segment{
		{Vaddr: TextBase + textStart, Data: text, Memsz: uint64(len(text)), Flags: elf.PF_R | elf.PF_X},
		{Vaddr: dataVaddr, Data: data, Memsz: stackTop - dataVaddr, Flags: elf.PF_R | elf.PF_W},
	})
	if err != nil {
		return nil, err
	}
	return b, nil
}
