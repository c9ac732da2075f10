package kdiff

import (
	"sync"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Observing what map helpers return inside programs. A test that claims
// programs exercise hits, misses and failing updates needs to count them,
// and neither kernel reports them. RunObserved runs a copy of the program
// on bpfsim with, after every map helper call, a call of a helper of
// kdiff's own that records the return value and gives it back in r0:
//
//	call bpf_map_update_elem
//	r1 = 2        ; which helper
//	r2 = r0       ; its return value
//	r3 = 0x1      ; the flags, for updates
//	call observe  ; records, returns r2
//
// r1-r5 are dead after a helper call, so the copy computes what the
// program computes; jumps are adjusted to the inserted instructions, and
// a jump to the instruction after a call still lands on it.

// HelperEvent is one map helper call a program made.
type HelperEvent struct {
	// Helper is uapi.FuncMapLookupElem, FuncMapUpdateElem or
	// FuncMapDeleteElem.
	Helper int32
	// Map is the map's index in Program.Maps, -1 if unknown.
	Map int
	// Flags are an update's flags when they were a constant.
	Flags int64
	// Ret is the helper's return value: for lookups the value's address
	// (0 for a miss), otherwise 0 or -errno.
	Ret uint64
}

// Errno returns the errno of a failed update or delete, 0 on success.
func (e HelperEvent) Errno() int {
	if e.Helper == uapi.FuncMapLookupElem || int64(e.Ret) >= 0 {
		return 0
	}
	return int(-int64(e.Ret))
}

// observeHelper is the id of kdiff's recording helper, far from the
// kernel's ids.
const observeHelper = 0x7d1ff

type observer struct {
	mu     sync.Mutex
	events []HelperEvent
	maps   map[int32]int // fd of a map → index in Program.Maps
}

func (s *Sim) observer() (*observer, error) {
	s.obsOnce.Do(func() {
		s.obs = &observer{}
		s.obsErr = s.K.RegisterHelper(&sim.Helper{ID: observeHelper, Name: "kdiff_observe",
			Fn: func(_ *interp.Machine, r1, r2, r3, r4, _ uint64) (uint64, error) {
				o := s.obs
				o.mu.Lock()
				idx, ok := o.maps[int32(r4)]
				if !ok {
					idx = -1
				}
				o.events = append(o.events, HelperEvent{Helper: int32(r1), Map: idx, Flags: int64(int32(r3)), Ret: r2})
				o.mu.Unlock()
				return r2, nil
			}})
	})
	return s.obs, s.obsErr
}

// RunObserved is Run with every map helper call of the program recorded.
// Its outcome must be Run's.
func (s *Sim) RunObserved(p *Program) (Outcome, []HelperEvent, error) {
	obs, err := s.observer()
	if err != nil {
		return Outcome{}, nil, err
	}
	var instErr error
	o := s.runMapsWith(p, func(handles []*sim.Map) (*sim.Program, error) {
		spec, err := associateAll(p, handles)
		if err != nil {
			return nil, err
		}
		x, err := insn.FromAsm(spec.Instructions)
		if err != nil {
			return nil, err
		}
		obs.mu.Lock()
		obs.events, obs.maps = nil, map[int32]int{}
		for i, h := range handles {
			obs.maps[int32(h.FD())] = i
		}
		obs.mu.Unlock()
		x, instErr = instrument(x)
		if instErr != nil {
			return nil, instErr
		}
		// Unverified: the recording helper hands r0 back, which the
		// verifier cannot know (to it a helper returns a number), so the
		// original program was verified and this copy runs as it is.
		return s.K.LoadInsnsWithOptions(spec.Type, spec.Name, x, sim.ProgramOptions{Unverified: true})
	})
	if instErr != nil {
		return o, nil, instErr
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	return o, obs.events, nil
}

// instrument inserts the recording call after every map helper call.
func instrument(x []insn.Insn) ([]insn.Insn, error) {
	at := map[int][]insn.Insn{}
	for i, in := range x {
		if in.Code != insn.JMP|insn.CALL || in.Src != 0 {
			continue
		}
		switch in.Imm {
		case uapi.FuncMapLookupElem, uapi.FuncMapUpdateElem, uapi.FuncMapDeleteElem:
		default:
			continue
		}
		// The map's fd and an update's flags are set just before the call
		// (mapCall): look back a few instructions for them.
		fd, flags := int32(-1), int32(0)
		for j := i - 1; j >= 0 && j >= i-8; j-- {
			p := x[j]
			if p.IsLdImm64() && p.Src == insn.PseudoMapFD && p.Dst == insn.R1 && fd < 0 {
				fd = p.Imm
			}
			if p.Code == insn.ALU64|insn.MOV|insn.K && p.Dst == insn.R4 {
				flags = p.Imm
				break
			}
		}
		at[i] = []insn.Insn{
			{Code: insn.ALU64 | insn.MOV | insn.K, Dst: insn.R1, Imm: in.Imm},
			{Code: insn.ALU64 | insn.MOV | insn.X, Dst: insn.R2, Src: insn.R0},
			{Code: insn.ALU64 | insn.MOV | insn.K, Dst: insn.R3, Imm: flags},
			{Code: insn.ALU64 | insn.MOV | insn.K, Dst: insn.R4, Imm: fd},
			{Code: insn.JMP | insn.CALL, Imm: observeHelper},
		}
	}
	return insertAfter(x, at)
}

// insertAfter inserts at[i] after instruction slot i and adjusts every
// jump and bpf-to-bpf call, so that each still reaches the instruction it
// reached.
func insertAfter(x []insn.Insn, at map[int][]insn.Insn) ([]insn.Insn, error) {
	pos := make([]int, len(x)+1) // new position of old slot i
	n := 0
	for i := range x {
		pos[i] = n
		n += 1 + len(at[i])
	}
	pos[len(x)] = n
	out := make([]insn.Insn, 0, n)
	for i, in := range x {
		if i > 0 && x[i-1].IsLdImm64() {
			out = append(out, in) // second slot of an lddw
			continue
		}
		cls := in.Class()
		rel := func(off int64) (int64, error) {
			t := int64(i) + 1 + off
			if t < 0 || t > int64(len(x)) {
				return 0, errors.Errorf("insn %d jumps out of the program", i)
			}
			return int64(pos[t]) - int64(pos[i]) - 1, nil
		}
		switch {
		case cls == insn.JMP && in.Op() == insn.CALL && in.Src == insn.PseudoCall,
			cls == insn.JMP32 && in.Op() == insn.JA:
			off, err := rel(int64(in.Imm))
			if err != nil {
				return nil, err
			}
			in.Imm = int32(off)
		case (cls == insn.JMP || cls == insn.JMP32) && in.Op() != insn.CALL && in.Op() != insn.EXIT:
			off, err := rel(int64(in.Off))
			if err != nil {
				return nil, err
			}
			if off != int64(int16(off)) {
				return nil, errors.Errorf("insn %d: jump too long after instrumenting", i)
			}
			in.Off = int16(off)
		}
		out = append(out, in)
		out = append(out, at[i]...)
	}
	return out, nil
}
