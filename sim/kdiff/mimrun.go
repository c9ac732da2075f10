package kdiff

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
)

// Playing map-in-map scenarios (mimgen.go) on either side.

// MimOutcome is everything a scenario showed on one side.
type MimOutcome struct {
	// Verdict is "accepted", or the load's errno and the verifier's
	// message.
	Verdict  string
	Accepted bool
	// Lines describe, in order, every step's result and, after every
	// run, every map's contents.
	Lines []string
	// Runs counts the test runs made, RunsChangingMaps those after which
	// some map held something else than before.
	Runs, RunsChangingMaps int
}

// mimWorld is one side: the kernel through cilium/ebpf, or bpfsim.
type mimWorld interface {
	newMap(spec *ebpf.MapSpec) (mimMap, error)
	// load loads spec, whose map references are already associated.
	load(spec *ebpf.ProgramSpec) (mimProg, error)
	// message is the verifier's message in a load error.
	message(err error) string
	ncpu() int
}

type mimMap interface {
	userMap
	FD() int
	// handle is what a program's map reference is associated with.
	handle() asm.FDer
	ID() uint32
	Close() error
}

type mimProg interface {
	run(pkt []byte, cpu int) (uint32, error)
	Close() error
}

// PlayMim plays s on the kernel (k) and returns what it showed.
func (k *Kernel) PlayMim(s *MimScenario) MimOutcome { return playMim(s, k.mimWorld()) }

// PlayMim plays s on bpfsim.
func (s *Sim) PlayMim(sc *MimScenario) MimOutcome { return playMim(sc, simMimWorld{s.K}) }

func playMim(s *MimScenario, w mimWorld) MimOutcome {
	var o MimOutcome
	var open []mimMap
	defer func() {
		for _, m := range open {
			m.Close()
		}
	}()
	line := func(format string, args ...any) { o.Lines = append(o.Lines, fmt.Sprintf(format, args...)) }
	outer, err := w.newMap(s.Outer)
	if err != nil {
		line("create outer: %s", errnoName(Errno(err)))
		o.Verdict = "not loaded"
		return o
	}
	open = append(open, outer)
	inners := make([]mimMap, len(s.Inners))
	byID := map[uint32]string{}
	for i, spec := range s.Inners {
		m, err := w.newMap(spec)
		line("create i%d: %s", i, errnoName(Errno(err)))
		if err != nil {
			continue
		}
		inners[i] = m
		open = append(open, m)
		byID[m.ID()] = fmt.Sprintf("i%d", i)
	}

	spec := s.Spec.Copy()
	var prog mimProg
	if err := associate(spec.Instructions, "outer", outer.handle()); err != nil {
		o.Verdict = "associate: " + err.Error()
	} else if prog, err = w.load(spec); err != nil {
		o.Verdict = errnoName(Errno(err)) + ": " + w.message(err)
	} else {
		o.Verdict, o.Accepted = "accepted", true
		defer prog.Close()
	}

	ncpu := w.ncpu()
	for _, st := range s.Steps {
		switch st.Kind {
		case MimSetSlot:
			if inners[st.Inner] == nil {
				line("%s: no map", st)
				continue
			}
			fd := binary.LittleEndian.AppendUint32(nil, uint32(inners[st.Inner].FD()))
			line("%s: %s", st, errnoName(Errno(outer.Update(KeyBytes(st.Key, s.Outer.KeySize), fd, st.Flags))))
		case MimDeleteSlot:
			line("%s: %s", st, errnoName(Errno(outer.Delete(KeyBytes(st.Key, s.Outer.KeySize)))))
		case MimInnerUpdate, MimInnerDelete:
			m := inners[st.Inner]
			if m == nil {
				line("%s: no map", st)
				continue
			}
			if st.Kind == MimInnerDelete {
				line("%s: %s", st, errnoName(Errno(m.Delete(KeyBytes(st.Key, s.Inners[st.Inner].KeySize)))))
				continue
			}
			v := st.Value
			if IsPercpu(s.Inners[st.Inner]) {
				v = nil
				for c := 0; c < ncpu; c++ {
					v = append(v, PercpuValue(st.Value, c)...)
				}
			}
			line("%s: %s", st, errnoName(Errno(m.Update(KeyBytes(st.Key, s.Inners[st.Inner].KeySize), v, st.Flags))))
		case MimRun:
			if prog == nil {
				continue
			}
			before := mimDump(s, outer, inners, byID)
			ret, err := prog.run(st.Packet, st.CPU)
			o.Runs++
			line("run %d on CPU %d: %#x %s", o.Runs, st.CPU, ret, errnoName(Errno(err)))
			after := mimDump(s, outer, inners, byID)
			if strings.Join(before, "\n") != strings.Join(after, "\n") {
				o.RunsChangingMaps++
			}
			o.Lines = append(o.Lines, after...)
		}
	}
	if prog == nil {
		o.Lines = append(o.Lines, mimDump(s, outer, inners, byID)...)
	}
	return o
}

// mimDump describes every map: the outer map's slots by inner map name,
// each inner map's keys and values.
func mimDump(s *MimScenario, outer mimMap, inners []mimMap, byID map[uint32]string) []string {
	var out []string
	var b strings.Builder
	b.WriteString("  outer:")
	for _, slot := range mimOuterSlots(s.Outer, outer) {
		name := slot.err
		if name == "" {
			if name = byID[slot.id]; name == "" {
				name = fmt.Sprintf("unknown id %d", slot.id)
			}
		}
		fmt.Fprintf(&b, " %x=%s", slot.key, name)
	}
	out = append(out, b.String())
	for i, m := range inners {
		if m == nil {
			continue
		}
		d := dumpMap(s.Inners[i], m)
		b.Reset()
		fmt.Fprintf(&b, "  i%d:", i)
		for j, k := range d.Keys {
			fmt.Fprintf(&b, " %x=%x", k, d.Values[j])
		}
		if d.Err != nil {
			fmt.Fprintf(&b, " (%s)", errnoName(Errno(d.Err)))
		}
		out = append(out, b.String())
	}
	return out
}

// verifierMessage is the message a refused load ends with: the last
// meaningful line of the verifier log (the kernel's, in a VerifierError)
// or of the error, without the instruction it is about.
func verifierMessage(err error) string {
	if err == nil {
		return ""
	}
	var ve *ebpf.VerifierError
	var log string
	if errors.As(err, &ve) {
		log = strings.Join(ve.Log, "\n")
	} else {
		log = err.Error()
	}
	l := VerifierMessage(log)
	if j := strings.LastIndex(l, ": "); j >= 0 && strings.Contains(l[:j], ") ") {
		l = l[j+2:] // "12: (61) r0 = ...: R0 invalid ..." → the message
	}
	return l
}

// bpfsim's side.
type simMimWorld struct{ k *sim.Kernel }

type simMimMap struct{ simMap }

func (m simMimMap) FD() int          { return m.h.FD() }
func (m simMimMap) handle() asm.FDer { return m.h }
func (m simMimMap) ID() uint32       { return m.h.ID() }
func (m simMimMap) Close() error     { return m.h.Close() }

func (w simMimWorld) newMap(spec *ebpf.MapSpec) (mimMap, error) {
	h, err := w.k.NewMap(spec)
	if err != nil {
		return nil, err
	}
	return simMimMap{simMap{h: h, spec: spec, ncpu: w.k.NumCPUs()}}, nil
}

type simMimProg struct{ p *sim.Program }

func (p simMimProg) run(pkt []byte, cpu int) (uint32, error) {
	return p.p.Run(&sim.RunOptions{Data: pkt, CPU: uint32(cpu)})
}
func (p simMimProg) Close() error { return p.p.Close() }

func (w simMimWorld) load(spec *ebpf.ProgramSpec) (mimProg, error) {
	p, err := w.k.NewProgram(spec)
	if err != nil {
		return nil, err
	}
	return simMimProg{p}, nil
}

func (w simMimWorld) message(err error) string { return verifierMessage(err) }
func (w simMimWorld) ncpu() int                { return w.k.NumCPUs() }

type mimSlot struct {
	key []byte
	id  uint32
	err string // "-" for an empty slot, else the errno of a failed lookup
}

// mimOuterSlots walks the outer map's keys with get_next_key and looks
// each up: an array of maps has every index as a key, and "-" marks the
// empty ones. A hash of maps walked in an order that is not the same on
// both sides (see Ordered) is sorted by key.
func mimOuterSlots(spec *ebpf.MapSpec, m mimMap) []mimSlot {
	var slots []mimSlot
	var key []byte
	for len(slots) <= int(spec.MaxEntries) {
		next, err := m.NextKey(key)
		if Errno(err) == int(syscall.ENOENT) {
			break
		}
		if err != nil {
			return append(slots, mimSlot{key: key, err: "get_next_key " + errnoName(Errno(err))})
		}
		slot := mimSlot{key: next}
		v, err := m.Lookup(next)
		switch {
		case Errno(err) == int(syscall.ENOENT):
			slot.err = "-"
		case err != nil:
			slot.err = errnoName(Errno(err))
		case len(v) != 4:
			slot.err = fmt.Sprintf("%d-byte value", len(v))
		default:
			slot.id = binary.LittleEndian.Uint32(v)
		}
		slots = append(slots, slot)
		key = next
	}
	if !Ordered(spec) {
		sort.Slice(slots, func(i, j int) bool { return bytes.Compare(slots[i].key, slots[j].key) < 0 })
	}
	return slots
}
