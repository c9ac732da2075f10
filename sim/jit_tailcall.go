package sim

import (
	"sync"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/arraymap"
	"github.com/bpfsim/bpfsim/jit_arm64"
	"github.com/bpfsim/bpfsim/jit_arm64/a64"
	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Direct tail calls of JITed programs (jit_arm64's tailCallDirect): each
// poke descriptor's tail call jumps to the program in its slot through
// code the kernel patches whenever the slot changes (map_poke_run →
// bpf_arch_poke_desc_update), with seed 001's state machine. The
// interpreter reads the slot at every tail call instead.

// directSites is a JITed program's direct tail call sites and what each
// jumps to now.
type directSites struct {
	mu    sync.Mutex
	sites []directSite
}

type directSite struct {
	jit_arm64.DirectTailCall
	m   *maps.Map
	key uint32
	// stable says the site was fixed up after the JIT (tailcall_target_
	// stable): slot changes before that are the fix-up's to see.
	stable bool
	target *Program // nil: state C (skip, unwind, nop)
}

// DirectTailCallTargets reports, for each direct tail call site of a JITed
// program, the id of the program its code jumps to (0: none, the site
// skips), in the order of the poke descriptors. Nil for an interpreted
// program.
func (p *Program) DirectTailCallTargets() []uint32 {
	if p.direct == nil {
		return nil
	}
	p.direct.mu.Lock()
	defer p.direct.mu.Unlock()
	out := make([]uint32, len(p.direct.sites))
	for i, s := range p.direct.sites {
		if s.target != nil {
			out[i] = s.target.id
		}
	}
	return out
}

// directTailCallInsns are the instructions of the program's tail calls
// the JIT may make direct.
func (p *Program) directTailCallInsns() []int {
	var out []int
	for _, d := range p.pokes {
		if _, ok := d.Map.Ops.(arraymap.PokeFixer); ok {
			out = append(out, d.Insn)
		}
	}
	return out
}

// jitDirectFixup is bpf_tail_call_direct_fixup: after the image is
// final, each site gets the program its slot holds now.
func (k *Kernel) jitDirectFixup(p *Program) error {
	sites := p.jit.DirectTailCalls()
	if len(sites) == 0 {
		return nil
	}
	ds := &directSites{}
	for _, s := range sites {
		d := p.pokeAt(s.Insn)
		if d == nil {
			return errors.Wrapf(uapi.EFAULT, "direct tail call at insn %d has no poke descriptor", s.Insn)
		}
		ds.sites = append(ds.sites, directSite{DirectTailCall: s, m: d.Map, key: d.Key})
	}
	p.direct = ds
	for i := range ds.sites {
		site := &ds.sites[i]
		var err error
		site.m.Ops.(arraymap.PokeFixer).PokeFixup(site.key, func(obj maps.ProgObject) {
			ds.mu.Lock()
			defer ds.mu.Unlock()
			site.stable = true
			if t := progOf(obj); t != nil {
				err = k.pokeInstall(site, t)
			}
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// pokeAt returns the poke descriptor of the tail call at insn.
func (p *Program) pokeAt(insn int) *pokeDescRef {
	for i := range p.pokes {
		if p.pokes[i].Insn == insn {
			return &pokeDescRef{Map: p.pokes[i].Map, Key: p.pokes[i].Key}
		}
	}
	return nil
}

type pokeDescRef struct {
	Map *maps.Map
	Key uint32
}

func progOf(obj maps.ProgObject) *Program {
	if po, ok := obj.(*progObject); ok {
		return po.p
	}
	return nil
}

// pokeRunJIT is the JIT's part of map_poke_run for program p: slot key
// of m went from old to new.
func (k *Kernel) pokeRunJIT(p *Program, m *maps.Map, key uint32, new maps.ProgObject) {
	ds := p.direct
	if ds == nil {
		return
	}
	ds.mu.Lock()
	defer ds.mu.Unlock()
	for i := range ds.sites {
		site := &ds.sites[i]
		if site.m != m || site.key != key || !site.stable {
			continue
		}
		var err error
		switch t := progOf(new); {
		case t == nil && site.target != nil:
			err = k.pokeRemove(site)
		case t != nil && site.target == nil:
			err = k.pokeInstall(site, t)
		case t != nil:
			err = k.pokeUpdate(site, t)
		}
		if err != nil {
			// Text patching of a live image only fails on a broken
			// image: the kernel WARNs and carries on.
			k.jits.pokeErrors.Add(1)
		}
	}
}

// pokeInstall is C → D → B: the literal and the tail, then away with the
// skip.
func (k *Kernel) pokeInstall(s *directSite, t *Program) error {
	if t.jit == nil {
		return errors.Wrapf(uapi.EINVAL, "tail call target %s is not JITed", t.name)
	}
	if err := k.pokeLiteral(s, t); err != nil {
		return err
	}
	b, err := a64.B(int32(int64(s.Stub-s.Target) / 4))
	if err != nil {
		return err
	}
	if err := k.jits.patcher.PatchTextNosync(s.Target, b); err != nil {
		return err
	}
	if err := k.jits.patcher.PatchTextNosync(s.Bypass, a64.NOP); err != nil {
		return err
	}
	s.target = t
	return nil
}

// pokeUpdate is B(f) → B(f'): only the literal changes.
func (k *Kernel) pokeUpdate(s *directSite, t *Program) error {
	if t.jit == nil {
		return errors.Wrapf(uapi.EINVAL, "tail call target %s is not JITed", t.name)
	}
	if err := k.pokeLiteral(s, t); err != nil {
		return err
	}
	s.target = t
	return nil
}

// pokeRemove is B → C: the skip first; then, once no CPU can be between
// the bypass and the tail (a grace period), the tail goes.
func (k *Kernel) pokeRemove(s *directSite) error {
	b, err := a64.B(int32(int64(s.Out-s.Bypass) / 4))
	if err != nil {
		return err
	}
	if err := k.jits.patcher.PatchTextNosync(s.Bypass, b); err != nil {
		return err
	}
	k.rcu.synchronize()
	if err := k.jits.patcher.PatchTextNosync(s.Target, a64.NOP); err != nil {
		return err
	}
	s.target = nil
	return nil
}

// pokeLiteral points the site's stub at t's tail call entry.
func (k *Kernel) pokeLiteral(s *directSite, t *Program) error {
	return k.jits.patcher.WriteLiteral64(s.Literal, t.jit.TailCallEntry())
}
