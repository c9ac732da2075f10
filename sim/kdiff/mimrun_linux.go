//go:build linux

package kdiff

import (
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// The kernel's side of the map-in-map corpus: maps and programs through
// cilium/ebpf, test runs pinned to the step's CPU (onCPU).

type kernelMimWorld struct{ k *Kernel }

func (k *Kernel) mimWorld() mimWorld { return kernelMimWorld{k} }

type kernelMimMap struct{ kernelMap }

func (m kernelMimMap) FD() int          { return m.m.FD() }
func (m kernelMimMap) handle() asm.FDer { return m.m }
func (m kernelMimMap) Close() error     { return m.m.Close() }
func (m kernelMimMap) ID() uint32 {
	info, err := m.m.Info()
	if err != nil {
		return 0
	}
	id, _ := info.ID()
	return uint32(id)
}

func (w kernelMimWorld) newMap(spec *ebpf.MapSpec) (mimMap, error) {
	m, err := ebpf.NewMap(spec)
	if err != nil {
		return nil, err
	}
	return kernelMimMap{kernelMap{m: m, spec: spec, ncpu: w.ncpu()}}, nil
}

type kernelMimProg struct{ p *ebpf.Program }

func (p kernelMimProg) run(pkt []byte, cpu int) (ret uint32, err error) {
	if perr := onCPU(cpu, func() { ret, err = p.p.Run(&ebpf.RunOptions{Data: pkt}) }); perr != nil {
		return 0, perr
	}
	return ret, err
}
func (p kernelMimProg) Close() error { return p.p.Close() }

func (w kernelMimWorld) load(spec *ebpf.ProgramSpec) (mimProg, error) {
	p, err := ebpf.NewProgram(spec)
	if err != nil {
		return nil, err
	}
	return kernelMimProg{p}, nil
}

func (w kernelMimWorld) message(err error) string { return verifierMessage(err) }
func (w kernelMimWorld) ncpu() int                { return w.k.PossibleCPUs() }
