package verifier

import (
	"fmt"
	"strings"
)

// Stack slot byte types (enum bpf_stack_slot_type).
const (
	stackInvalid uint8 = iota // never written: '?'
	stackSpill                // part of a spilled register: 'r'
	stackMisc                 // written, value unknown: 'm'
	stackZero                 // written with zero: '0'
	stackDynptr               // part of a dynptr (dynptr.go): 'd'
	stackIter                 // part of an open-coded iterator (iter.go): 'i'
)

var slotTypeChar = [...]byte{stackInvalid: '?', stackSpill: 'r', stackMisc: 'm', stackZero: '0', stackDynptr: 'd', stackIter: 'i'}

// isStackObj reports a byte of an object only kfuncs and helpers may
// touch (a dynptr's or an iterator's), which loads may not read.
func isStackObj(t uint8) bool { return t == stackDynptr || t == stackIter }

// regSize is BPF_REG_SIZE; maxStack is MAX_BPF_STACK.
const (
	regSize  = 8
	maxStack = 512
	// maxCallFrames is MAX_CALL_FRAMES.
	maxCallFrames = 8
)

// stackSlot is struct bpf_stack_state: 8 bytes of stack. types[i] is the
// byte at offset -(8*spi + i + 1) from the frame pointer, so types[7] is
// the lowest address: a register spilled with an aligned 8-byte store
// covers all eight, a narrower spill the high indexes first.
type stackSlot struct {
	spilled regState
	types   [regSize]uint8
}

func (s *stackSlot) isSpilled() bool { return s.types[regSize-1] == stackSpill }

func (s *stackSlot) isSpilledScalar() bool {
	return s.isSpilled() && s.spilled.typ == scalarValue
}

// funcState is struct bpf_func_state: one frame of the call chain.
type funcState struct {
	regs [11]regState
	// stack holds the allocated slots; stack[spi] is the 8 bytes at
	// fp-8*(spi+1).
	stack    []stackSlot
	callsite int // the call instruction, -1 for the main program
	frameno  uint8
	subprog  int
	// inCallbackFn marks the frame of a callback a helper calls
	// (bpf_loop's), which must return a value in [retMin, retMax] and
	// returns to the helper's call; callbackDepth counts, in a caller,
	// the callback visits its pending bpf_loop call scheduled.
	inCallbackFn   bool
	retMin, retMax int64
	// inAsyncCallbackFn marks frame 0 of a timer callback's exploration
	// (in_async_callback_fn): it must return 0.
	inAsyncCallbackFn bool
	callbackDepth     uint64
}

func (f *funcState) allocated() int { return len(f.stack) * regSize }

func (f *funcState) clone() *funcState {
	c := *f
	c.stack = append([]stackSlot(nil), f.stack...)
	return &c
}

// growStack is grow_stack_state: slots exist down to -size.
func (f *funcState) growStack(size int) {
	n := (size + regSize - 1) / regSize
	for len(f.stack) < n {
		f.stack = append(f.stack, stackSlot{})
	}
}

// vstate is struct bpf_verifier_state: a whole call chain at one point of
// one path.
type vstate struct {
	frames   []*funcState // frames[curframe] is the running function
	curframe int
	// parent is the checkpoint this state was derived from; branches
	// counts the paths still being explored below a checkpoint (the
	// state itself counts one while it runs).
	parent   *vstate
	branches int
	insnIdx  int
	// mayGotoDepth counts the may_goto instructions taken on this path.
	mayGotoDepth int
	// refs are the references the path holds (refs.go), oldest first.
	refs []refState
	// activeLocks counts the spin locks held (spinlock.go); activeLockID
	// and activeLockPtr name the last one taken, which must be the first
	// released.
	activeLocks   int
	activeLockID  uint32
	activeLockPtr uint16
	// activeRCULocks counts the bpf_rcu_read_lock calls not yet
	// unlocked (active_rcu_lock): 0 or 1, as 6.18 refuses nesting.
	activeRCULocks int
	// callbackUnrollDepth counts the callback visits on this path.
	callbackUnrollDepth int
	// histStart and histEnd delimit, in env.hist, the instruction
	// history since firstInsnIdx, the instruction this state started at
	// (its parent checkpoint's); lastInsnIdx is the instruction before
	// the current one.
	histStart, histEnd        int
	firstInsnIdx, lastInsnIdx int
	// dfsDepth is the number of checkpoints above the state.
	dfsDepth int
	// sccEntry marks a checkpoint that entered its loop (scc.go), and
	// inFreeList one dropped from its list but not yet freed. Neither is
	// copied by cloneInto.
	sccEntry, inFreeList bool
	// read are, for a checkpoint, the stack slots its explored future
	// read; written are the slots fully written since the state's parent
	// checkpoint (liveness.go).
	read, written frameMasks
}

func (s *vstate) cur() *funcState { return s.frames[s.curframe] }

func (s *vstate) clone() *vstate { return s.cloneInto(&vstate{}) }

// cloneInto copies s into c, reusing c's frames and stacks (a state whose
// path ended), and returns c.
func (s *vstate) cloneInto(c *vstate) *vstate {
	frames := c.frames[:0]
	for i, f := range s.frames {
		var cf *funcState
		if i < cap(c.frames) && c.frames[:cap(c.frames)][i] != nil {
			cf = c.frames[:cap(c.frames)][i]
		} else {
			cf = &funcState{}
		}
		stack := append(cf.stack[:0], f.stack...)
		*cf = *f
		cf.stack = stack
		frames = append(frames, cf)
	}
	refs := append(c.refs[:0], s.refs...)
	*c = vstate{
		refs:                refs,
		activeLocks:         s.activeLocks,
		activeLockID:        s.activeLockID,
		activeLockPtr:       s.activeLockPtr,
		activeRCULocks:      s.activeRCULocks,
		frames:              frames,
		curframe:            s.curframe,
		parent:              s.parent,
		branches:            s.branches,
		insnIdx:             s.insnIdx,
		mayGotoDepth:        s.mayGotoDepth,
		callbackUnrollDepth: s.callbackUnrollDepth,
		histStart:           s.histStart,
		histEnd:             s.histEnd,
		firstInsnIdx:        s.firstInsnIdx,
		lastInsnIdx:         s.lastInsnIdx,
		dfsDepth:            s.dfsDepth,
		written:             s.written,
	}
	return c
}

// forEachReg visits every register and spilled register of every frame
// (bpf_for_each_reg_in_vstate).
func (s *vstate) forEachReg(fn func(r *regState)) {
	for _, f := range s.frames[:s.curframe+1] {
		for i := range f.regs {
			fn(&f.regs[i])
		}
		for i := range f.stack {
			if f.stack[i].isSpilled() {
				fn(&f.stack[i].spilled)
			}
		}
	}
}

// format prints a frame the way print_verifier_state does.
func (f *funcState) format(tab *env) string {
	return f.formatMasked(tab, ^uint16(0), ^uint64(0))
}

// formatMasked prints the registers and stack slots in the masks.
func (f *funcState) formatMasked(tab *env, regMask uint16, stackMask uint64) string {
	var b strings.Builder
	if f.frameno != 0 {
		fmt.Fprintf(&b, " frame%d:", f.frameno)
	}
	for i := range f.regs {
		r := &f.regs[i]
		if r.typ == notInit || regMask&(1<<i) == 0 {
			continue
		}
		fmt.Fprintf(&b, " R%d=%s", i, r.format(tab, f.frameno))
	}
	for spi := range f.stack {
		s := &f.stack[spi]
		if stackMask&(1<<uint(spi&63)) == 0 {
			continue
		}
		var types [regSize]byte
		valid := false
		for j, t := range s.types {
			types[j] = slotTypeChar[t]
			if t != stackInvalid {
				valid = true
			}
		}
		if !valid {
			continue
		}
		off := -(spi + 1) * regSize
		if s.isDynptr() {
			// Printed once, at the first slot, as the kernel prints it.
			if s.spilled.firstSlot {
				fmt.Fprintf(&b, " fp%d=%s", off, formatDynptr(s))
			}
			continue
		}
		if s.isIter() {
			// Printed at its main slot, the one holding the reference.
			if s.spilled.refObjID != 0 {
				fmt.Fprintf(&b, " fp%d=%s", off, formatIter(&s.spilled))
			}
			continue
		}
		if s.isSpilled() {
			j := 0
			for j < regSize && s.types[j] != stackSpill {
				j++
			}
			fmt.Fprintf(&b, " fp%d=%s%s", off, types[:j], s.spilled.format(tab, f.frameno))
			continue
		}
		fmt.Fprintf(&b, " fp%d=%s", off, types[:])
	}
	return b.String()
}

// frameLine ends a frame's printed state as print_verifier_state does:
// the references the path holds, then " cb" in a callback's frame.
func (s *vstate) frameLine(f *funcState, body string) string {
	body += s.refsSuffix()
	if f.inCallbackFn {
		body += " cb"
	}
	return body
}
