package verifier

// Stack slot liveness. Registers use a static analysis (computeLiveness),
// as Linux 6.15+ does; stack slots are tracked as the kernel long did:
// a read marks the slot read in the checkpoints the current path descends
// from, up to the one after which the path wrote the whole slot. Pruning
// then ignores slots a checkpoint's explored future never read. (The
// kernel's 6.18 stack liveness reaches the same slots by another route.)

// frameMasks are per-frame sets of stack slots (bit spi: fp-8*(spi+1)).
type frameMasks [maxCallFrames]uint64

// markStackRead is mark_reg_read for the slots in mask of frame fr.
func (e *env) markStackRead(fr int, mask uint64) { markStackReadFrom(e.cur, fr, mask, nil) }

// markStackReadFrom marks the slots read in the checkpoints above st;
// changed, if not nil, is set when a mark is new.
func markStackReadFrom(st *vstate, fr int, mask uint64, changed *bool) {
	for ; mask != 0 && st.parent != nil; st = st.parent {
		// Slots the state wrote itself screen off its parents.
		mask &^= st.written[fr]
		p := st.parent
		if fr > p.curframe {
			return
		}
		mask &^= p.read[fr] // already marked, and so are their parents
		if mask != 0 && changed != nil {
			*changed = true
		}
		p.read[fr] |= mask
	}
}

// markStackWritten records a full 8-byte write of slot spi of frame fr.
func (e *env) markStackWritten(fr, spi int) { e.cur.written[fr] |= 1 << uint(spi&63) }

// propagateLiveness is propagate_liveness for the stack: the current path
// was pruned against old, so it will read what old's future read.
func (e *env) propagateLiveness(old *vstate) { e.propagateLivenessFrom(old, e.cur, nil) }

// propagateLivenessFrom is propagate_liveness for st, a state old
// covered (the current state, or a backedge's).
func (e *env) propagateLivenessFrom(old, st *vstate, changed *bool) {
	for fr := 0; fr <= old.curframe && fr <= st.curframe; fr++ {
		if m := old.read[fr]; m != 0 {
			markStackReadFrom(st, fr, m, changed)
		}
	}
}
