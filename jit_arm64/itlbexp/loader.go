package itlbexp

import (
	"encoding/binary"
	"math"
	"math/rand/v2"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/jit_arm64/a64"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Loader produces the JIT images of the experiment's programs, numbered
// from 0. Len is asked first, to size the allocation (the JIT's sizing
// pass); Code is then asked for the image that will run at image, the
// address the JIT resolves branches and calls against (ro_image), and
// must return exactly Len bytes. A Loader must be deterministic: the two
// modes of a comparison must run the same programs.
//
// The experiment calls an image with X0 pointing to a readable and
// writable context of CtxSize bytes and SP at the top of a stack with
// StackSize bytes of room, the way the arm64 JIT's code is entered with
// BPF R1 in X0 on a kernel stack; the image must return with RET.
type Loader interface {
	Len(i int) (int, error)
	Code(i int, image uint64) ([]byte, error)
}

// HelperAddr is the kernel function the stand-ins call once per run,
// standing for bpf_trace_printk, which the series' stress programs call:
// the experiment registers a Go function there that charges the helper's
// kernel text (Config.Helper).
const HelperAddr uint64 = KernelText + 0x80_0000

// Sizes of the memory an image may use.
const (
	CtxSize   = 4096
	StackSize = 16 << 10
)

// CodeFunc is a Loader for position-independent images: the function is
// called for both Len and Code, and must return the same bytes each time.
type CodeFunc func(i int) ([]byte, error)

// Len returns the length of f(i).
func (f CodeFunc) Len(i int) (int, error) {
	b, err := f(i)
	return len(b), err
}

// Code returns f(i); the image address is not needed.
func (f CodeFunc) Code(i int, _ uint64) ([]byte, error) { return f(i) }

// StandIns returns a Loader of generated stand-ins for JIT-compiled BPF
// programs until the real JIT plugs in: program i is an A64 function of
// 300 B to 4 KiB (log-uniform, as small programs outnumber large ones)
// shaped like the arm64 JIT's output: the frame set-up of its prologue,
// then basic blocks that load from the context, compute, spill to and
// reload from the stack and branch forward on the loaded value, one
// bounded loop over stack slots, one helper call (to HelperAddr, as the
// JIT calls helpers: the address moved into a register, then BLR) and the
// epilogue. Every block is reached on every run, so a run fetches from
// every page of its image. The programs depend on seed and i only.
func StandIns(seed uint64) Loader {
	return CodeFunc(func(i int) ([]byte, error) {
		if i < 0 {
			return nil, errors.Wrapf(uapi.EINVAL, "itlbexp: program %d", i)
		}
		return standIn(seed, i)
	})
}

// Stand-in sizes in bytes.
const (
	minStandIn = 300
	maxStandIn = 4096
)

// asm collects instruction words and the first encoding error.
type asm struct {
	words []uint32
	err   error
}

func (a *asm) emit(w uint32, err error) {
	if err != nil && a.err == nil {
		a.err = err
	}
	a.words = append(a.words, w)
}

func standIn(seed uint64, i int) ([]byte, error) {
	r := rand.New(rand.NewPCG(seed, uint64(i)))
	size := math.Exp(math.Log(minStandIn) + r.Float64()*(math.Log(maxStandIn)-math.Log(minStandIn)))
	words := int(size) / 4
	frame := int64(16 * (4 + r.IntN(29))) // 64..512 bytes of BPF stack
	slot := func() int64 { return 8 * r.Int64N(frame/8) }

	// BPF's callee-saved registers live in x19-x28 in the arm64 JIT; the
	// stand-ins keep the context, the accumulator and a mix there, so that
	// they survive the helper call.
	const (
		ctx, acc, mix = a64.X19, a64.X20, a64.X21
		val, tmp, cnt = a64.X9, a64.X12, a64.X13
		helperAddrReg = a64.X10
		epilogueLen   = 6
		loopLen       = 7
		helperCallLen = 7 // mov x0, then 3 for the address, blr, add
	)
	var a asm
	// Prologue: the frame record, callee-saved registers and the BPF
	// stack, as build_prologue.
	a.emit(a64.StorePair(a64.FP, a64.LR, a64.SP, -16, a64.PreIndex))
	a.emit(a64.Mov(a64.FP, a64.SP))
	a.emit(a64.StorePair(a64.X19, a64.X20, a64.SP, -16, a64.PreIndex))
	a.emit(a64.StorePair(a64.X21, a64.X22, a64.SP, -16, a64.PreIndex))
	a.emit(a64.SubImm(a64.SP, a64.SP, frame))
	a.emit(a64.MovReg(ctx, a64.X0))
	a.emit(a64.Movz(acc, 0, 0))
	a.emit(a64.Movz(mix, uint32(i)&0xffff, 0))

	bodyEnd := words - epilogueLen
	room := max(1, bodyEnd-len(a.words)-loopLen-helperCallLen)
	loopAt := len(a.words) + r.IntN(room)
	callAt := len(a.words) + r.IntN(room)
	loopDone, callDone := false, false
	for len(a.words) < bodyEnd {
		switch {
		case !callDone && len(a.words) >= callAt:
			// A helper call as the JIT emits it: the address in a
			// scratch register (emit_addr_mov_i64), then BLR.
			a.emit(a64.MovReg(a64.X0, acc))
			ws, err := a64.AppendMovAddr(nil, helperAddrReg, HelperAddr)
			if err != nil {
				return nil, errors.WithMessagef(err, "itlbexp: stand-in %d", i)
			}
			a.words = append(a.words, ws...)
			a.emit(a64.Blr(helperAddrReg))
			a.emit(a64.Add(acc, acc, a64.X0))
			callDone = true
		case !loopDone && len(a.words) >= loopAt:
			// A bounded loop over a stack slot.
			o := slot()
			a.emit(a64.Movz(cnt, uint32(4+r.IntN(29)), 0))
			a.emit(a64.LoadImm(a64.Size64, tmp, a64.SP, o))
			a.emit(a64.Add(tmp, tmp, cnt))
			a.emit(a64.StoreImm(a64.Size64, tmp, a64.SP, o))
			a.emit(a64.Add(acc, acc, tmp))
			a.emit(a64.SubsImm(cnt, cnt, 1))
			a.emit(a64.BCond(a64.CondNE, -5))
			loopDone = true
		default:
			// A basic block: load a context field, fold it in, spill,
			// test it and skip two instructions when it is large, reload
			// a slot.
			s1, s2 := slot(), slot()
			a.emit(a64.LoadImm(a64.Size64, val, ctx, 8*r.Int64N(CtxSize/8/4)))
			a.emit(a64.Add(acc, acc, val))
			a.emit(a64.StoreImm(a64.Size64, acc, a64.SP, s1))
			a.emit(a64.CmpImm(val, int64(r.IntN(4096))))
			a.emit(a64.BCond(a64.CondHI, 3))
			a.emit(a64.Eor(mix, mix, acc))
			a.emit(a64.AddImm(mix, mix, 1))
			a.emit(a64.LoadImm(a64.Size64, tmp, a64.SP, s2))
			a.emit(a64.Add(acc, acc, tmp))
		}
	}
	// Epilogue: return acc ^ mix, restoring what the prologue saved.
	a.emit(a64.Eor(a64.X0, acc, mix))
	a.emit(a64.AddImm(a64.SP, a64.SP, frame))
	a.emit(a64.LoadPair(a64.X21, a64.X22, a64.SP, 16, a64.PostIndex))
	a.emit(a64.LoadPair(a64.X19, a64.X20, a64.SP, 16, a64.PostIndex))
	a.emit(a64.LoadPair(a64.FP, a64.LR, a64.SP, 16, a64.PostIndex))
	a.emit(a64.Ret(a64.LR))
	if a.err != nil {
		return nil, errors.WithMessagef(a.err, "itlbexp: stand-in %d", i)
	}
	b := make([]byte, 4*len(a.words))
	for k, w := range a.words {
		binary.LittleEndian.PutUint32(b[4*k:], w)
	}
	return b, nil
}
