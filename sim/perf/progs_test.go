package perf_test

import (
	"encoding/binary"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// Programs shared by the bpfsim tests and the kernel-differential tests.
// They refer to the perf event array by fd, which both kernels resolve in
// their own fd table.

// outputCtxSize is the raw tracepoint context of outputProg: 32 bytes of
// payload, the flags, the size.
const outputCtxSize = 48

// outputProg is a raw tracepoint program that copies the 32 payload bytes
// of its context to the stack and calls bpf_perf_event_output(ctx, map,
// ctx.flags, stack, ctx.size & 31), returning what the helper returned.
func outputProg(mapFD int) *ebpf.ProgramSpec {
	insns := asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1)}
	for i := int16(0); i < 4; i++ {
		insns = append(insns,
			asm.LoadMem(asm.R7, asm.R6, 8*i, asm.DWord),
			asm.StoreMem(asm.R10, -32+8*i, asm.R7, asm.DWord))
	}
	insns = append(insns,
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.LoadMapPtr(asm.R2, mapFD),
		asm.LoadMem(asm.R3, asm.R6, 32, asm.DWord),
		asm.Mov.Reg(asm.R4, asm.R10),
		asm.Add.Imm(asm.R4, -32),
		asm.LoadMem(asm.R5, asm.R6, 40, asm.DWord),
		asm.And.Imm(asm.R5, 31),
		asm.FnPerfEventOutput.Call(),
		asm.Return(),
	)
	return &ebpf.ProgramSpec{Name: "perf_out", Type: ebpf.RawTracepoint, License: "GPL", Instructions: insns}
}

// outputCtx is a context for outputProg.
func outputCtx(payload []byte, flags uint64, size int) []byte {
	ctx := make([]byte, outputCtxSize)
	copy(ctx, payload)
	binary.LittleEndian.PutUint64(ctx[32:], flags)
	binary.LittleEndian.PutUint64(ctx[40:], uint64(size))
	return ctx
}

// xdpOutputProg is an XDP program that calls bpf_perf_event_output(ctx,
// map, flags, stack, 8) with 8 bytes of metadata 0x11..0x88 on the stack
// and returns the helper's result. The upper 32 bits of flags ask for
// packet bytes to be appended.
func xdpOutputProg(mapFD int, flags uint64) *ebpf.ProgramSpec {
	return &ebpf.ProgramSpec{Name: "xdp_perf_out", Type: ebpf.XDP, License: "GPL", Instructions: asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadImm(asm.R7, -0x778899aabbccddef, asm.DWord),
		asm.StoreMem(asm.R10, -8, asm.R7, asm.DWord),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.LoadMapPtr(asm.R2, mapFD),
		asm.LoadImm(asm.R3, int64(flags), asm.DWord),
		asm.Mov.Reg(asm.R4, asm.R10),
		asm.Add.Imm(asm.R4, -8),
		asm.Mov.Imm(asm.R5, 8),
		asm.FnPerfEventOutput.Call(),
		asm.Return(),
	}}
}

// readValueProg is a raw tracepoint program that calls
// bpf_perf_event_read_value(map, ctx.flags, stack, ctx.size) and stores
// the result and the 24-byte buffer in slot 0 of the array out:
// r0 (8 bytes), counter, enabled, running. With read set, it calls
// bpf_perf_event_read(map, ctx.flags) instead and stores r0 only.
func readValueProg(mapFD, outFD int, read bool) *ebpf.ProgramSpec {
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.Mov.Imm(asm.R7, 0),
		asm.StoreMem(asm.R10, -8, asm.R7, asm.Word), // key
	}
	for off := int16(-40); off < -8; off += 8 {
		insns = append(insns, asm.StoreMem(asm.R10, off, asm.R7, asm.DWord))
	}
	if read {
		insns = append(insns,
			asm.LoadMapPtr(asm.R1, mapFD),
			asm.LoadMem(asm.R2, asm.R6, 0, asm.DWord),
			asm.FnPerfEventRead.Call(),
		)
	} else {
		insns = append(insns,
			asm.LoadMapPtr(asm.R1, mapFD),
			asm.LoadMem(asm.R2, asm.R6, 0, asm.DWord),
			asm.Mov.Reg(asm.R3, asm.R10),
			asm.Add.Imm(asm.R3, -32),
			asm.Mov.Imm(asm.R4, 24),
			asm.FnPerfEventReadValue.Call(),
		)
	}
	insns = append(insns,
		asm.StoreMem(asm.R10, -40, asm.R0, asm.DWord),
		asm.LoadMapPtr(asm.R1, outFD),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, -8),
		asm.Mov.Reg(asm.R3, asm.R10),
		asm.Add.Imm(asm.R3, -40),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnMapUpdateElem.Call(),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
	)
	return &ebpf.ProgramSpec{Name: "perf_read", Type: ebpf.RawTracepoint, License: "GPL", Instructions: insns}
}

// padded is the RawSample the kernel returns for data written to fresh
// ring pages: data and zeros up to a multiple of 8 bytes with the u32
// size before it.
func padded(data []byte) []byte {
	n := (len(data)+4+7)&^7 - 4
	return append(append([]byte(nil), data...), make([]byte, n-len(data))...)
}

// payload returns 32 recognisable bytes for run i.
func payload(i int) []byte {
	b := make([]byte, 32)
	for j := range b {
		b[j] = byte(i*7 + j)
	}
	return b
}

// errno returns the helper return value -e as the u32 a test run reports.
func errno(e int) uint32 { return uint32(-int32(e)) }
