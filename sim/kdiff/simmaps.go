package kdiff

import (
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/insn"
)

// NewSimCPUs boots a simulated kernel with cpus possible CPUs: for
// programs with per-CPU maps, as many as the kernel compared with has
// (Kernel.PossibleCPUs), so that user space sees the same number of
// copies.
func NewSimCPUs(cpus int) (*Sim, error) {
	k, err := sim.NewKernel(&sim.Options{CPUs: cpus})
	if err != nil {
		return nil, err
	}
	return &Sim{K: k}, nil
}

// runMaps runs a program with maps: it creates the maps, loads the
// program, runs p.Before, test-runs the program on the CPUs of p.Runs,
// runs p.After and dumps every map.
func (s *Sim) runMaps(p *Program) Outcome {
	return s.runMapsWith(p, func(handles []*sim.Map) (*sim.Program, error) {
		spec, err := associateAll(p, handles)
		if err != nil {
			return nil, err
		}
		return s.K.NewProgram(spec)
	})
}

// runXlatedMaps is runMaps with the kernel's xlated code, translated
// (translateXlated), in place of the program.
func (s *Sim) runXlatedMaps(p *Program, xlated []insn.Insn) Outcome {
	return s.runMapsWith(p, func(handles []*sim.Map) (*sim.Program, error) {
		if xlated == nil {
			return nil, errors.New("no xlated code")
		}
		x, err := xlatedForSim(xlated, handles)
		if err != nil {
			return nil, err
		}
		return s.K.LoadXlated(p.Spec.Type, "xlated", x)
	})
}

// associateAll returns a copy of p.Spec whose map references point at
// handles.
func associateAll(p *Program, handles []*sim.Map) (*ebpf.ProgramSpec, error) {
	spec := p.Spec.Copy()
	for i, h := range handles {
		if err := associate(spec.Instructions, p.Maps[i].Name, h); err != nil {
			return nil, err
		}
	}
	return spec, nil
}

// runMapsWith is runMaps with the program loaded by load (not called when
// p.Spec is nil).
func (s *Sim) runMapsWith(p *Program, load func([]*sim.Map) (*sim.Program, error)) Outcome {
	o := Outcome{prog: p}
	var handles []*sim.Map
	defer func() {
		for _, h := range handles {
			h.Close()
		}
	}()
	for _, spec := range p.Maps {
		h, err := s.K.NewMap(spec)
		if err != nil {
			o.MapErr = errors.Wrapf(err, "map %s", spec.Name)
			return o
		}
		handles = append(handles, h)
	}
	var prog *sim.Program
	if p.Spec != nil {
		var err error
		if prog, err = load(handles); err != nil {
			o.Rejected = err
			return o
		}
		defer prog.Close()
	}
	ncpu := s.K.NumCPUs()
	ms := make([]userMap, len(handles))
	for i, h := range handles {
		ms[i] = simMap{h: h, spec: p.Maps[i], ncpu: ncpu}
	}
	o.Before = applyOps(p.Maps, ms, p.Before, ncpu)
	if prog != nil {
		for _, cpu := range p.Runs {
			out := make([]byte, len(p.Packet))
			ret, err := prog.Run(&sim.RunOptions{Data: p.Packet, DataOut: out, CPU: uint32(cpu)})
			o.Runs = append(o.Runs, RunResult{CPU: cpu, Retval: ret, Packet: out, Err: err})
		}
		if len(o.Runs) > 0 {
			o.Retval, o.Packet, o.RunErr = o.Runs[0].Retval, o.Runs[0].Packet, o.Runs[0].Err
		}
	}
	o.After = applyOps(p.Maps, ms, p.After, ncpu)
	o.Maps = dumpMaps(p.Maps, ms)
	return o
}

// associate points the instructions that refer to map name at m; a map no
// instruction refers to is fine.
func associate(insns asm.Instructions, name string, m asm.FDer) error {
	err := insns.AssociateMap(name, m)
	if errors.Is(err, asm.ErrUnreferencedSymbol) {
		return nil
	}
	return err
}

// xlatedForSim turns the map references of translated xlated code (see
// translateXlated: lddw with BPF_PSEUDO_MAP_FD and the index of the map in
// Program.Maps) into the addresses of bpfsim's maps.
func xlatedForSim(xlated []insn.Insn, maps []*sim.Map) ([]insn.Insn, error) {
	x := append([]insn.Insn(nil), xlated...)
	for i := 0; i < len(x); i++ {
		if !x[i].IsLdImm64() {
			continue
		}
		if x[i].Src == insn.PseudoMapFD {
			idx := int(x[i].Imm)
			if idx < 0 || idx >= len(maps) || i+1 >= len(x) {
				return nil, errors.Errorf("insn %d: xlated code refers to map index %d of %d", i, idx, len(maps))
			}
			addr := maps[idx].Address()
			x[i].Src, x[i].Imm, x[i+1].Imm = 0, int32(uint32(addr)), int32(uint32(addr>>32))
		}
		i++
	}
	return x, nil
}

// simMap is user-space access to a bpfsim map.
type simMap struct {
	h    *sim.Map
	spec *ebpf.MapSpec
	ncpu int
}

func (m simMap) Lookup(key []byte) ([]byte, error) {
	v, err := m.h.LookupBytes(key)
	if err != nil {
		return nil, err
	}
	return m.strip(v), nil
}

func (m simMap) strip(v []byte) []byte {
	if IsPercpu(m.spec) {
		return percpuStrip(v, int(m.spec.ValueSize), m.ncpu)
	}
	return v
}

func (m simMap) Update(key, value []byte, flags uint64) error {
	if IsPercpu(m.spec) {
		value = percpuPad(value, int(m.spec.ValueSize), m.ncpu)
	}
	return m.h.Update(key, value, ebpf.MapUpdateFlags(flags))
}

func (m simMap) Delete(key []byte) error { return m.h.Delete(key) }

func (m simMap) NextKey(key []byte) ([]byte, error) {
	if key == nil {
		return m.h.NextKeyBytes(nil)
	}
	return m.h.NextKeyBytes(key)
}

func (m simMap) LookupAndDelete(key []byte) ([]byte, error) {
	var v []byte
	if err := m.h.LookupAndDelete(key, &v); err != nil {
		return nil, err
	}
	return m.strip(v), nil
}
