package kdiff

import (
	"bytes"
	"fmt"
	"strings"
	"sync"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/insn"
)

// Outcome is what loading and running a program produced.
type Outcome struct {
	// Rejected is the load error, nil if the program loaded.
	Rejected error
	Retval   uint32
	Packet   []byte
	// RunErr is an error of the test run itself.
	RunErr error
	// Xlated is the program as the kernel runs it after its verifier's
	// rewrites, when the outcome is the kernel's (XlatedErr says why not).
	Xlated    []insn.Insn
	XlatedErr error

	// For programs with maps (mapops.go): MapErr is the error of creating
	// a map, which stops everything else; Runs holds every test run
	// (Retval, Packet and RunErr repeat the first); Before and After are
	// the results of the program's user-space operations; Maps is every
	// map's contents at the end.
	MapErr        error
	Runs          []RunResult
	Before, After []OpResult
	Maps          []MapDump
	prog          *Program
}

// Sim runs programs on a bpfsim kernel.
type Sim struct {
	K *sim.Kernel

	obsOnce sync.Once // RunObserved's helper (observe.go)
	obs     *observer
	obsErr  error
}

// NewSim boots a simulated kernel for differential runs.
func NewSim() (*Sim, error) { return NewSimWith(nil) }

// NewSimWith boots a simulated kernel with options, e.g. one that JITs.
func NewSimWith(o *sim.Options) (*Sim, error) {
	k, err := sim.NewKernel(o)
	if err != nil {
		return nil, err
	}
	return &Sim{K: k}, nil
}

// Run loads p in the simulated kernel and test-runs it once; a program
// with maps runs as described at Program.
func (s *Sim) Run(p *Program) Outcome {
	if p.Maps != nil {
		return s.runMaps(p)
	}
	prog, err := s.K.NewProgram(p.Spec)
	if err != nil {
		return Outcome{Rejected: err}
	}
	out := make([]byte, len(p.Packet))
	ret, err := prog.Run(&sim.RunOptions{Data: p.Packet, DataOut: out})
	return Outcome{Retval: ret, Packet: out, RunErr: err}
}

// RunXlated runs the kernel's own xlated version of p on bpfsim. When p's
// outcomes differ but this one matches the kernel's, the difference comes
// from the kernel's rewrite of the program, not from how bpfsim executes
// instructions.
func (s *Sim) RunXlated(p *Program, xlated []insn.Insn) Outcome {
	if p.Maps != nil {
		return s.runXlatedMaps(p, xlated)
	}
	prog, err := s.K.LoadXlated(p.Spec.Type, "xlated", xlated)
	if err != nil {
		return Outcome{Rejected: err}
	}
	out := make([]byte, len(p.Packet))
	ret, err := prog.Run(&sim.RunOptions{Data: p.Packet, DataOut: out})
	return Outcome{Retval: ret, Packet: out, RunErr: err}
}

// Diff describes how two outcomes differ, or returns "" if they agree:
// both rejected, or both ran to the same return value and packet. For
// programs with maps they must also agree on every later run, the errno
// (and key or value) of every user-space operation, in order, and the final
// contents of every map; failing to create the maps agrees if the errnos
// do.
func Diff(kernel, simulated Outcome) string {
	var d []string
	if kernel.MapErr != nil || simulated.MapErr != nil {
		if Errno(kernel.MapErr) == Errno(simulated.MapErr) && Errno(kernel.MapErr) != -1 {
			return ""
		}
		return fmt.Sprintf("creating maps: kernel %s, bpfsim %s", errText(kernel.MapErr), errText(simulated.MapErr))
	}
	switch {
	case (kernel.Rejected == nil) != (simulated.Rejected == nil):
		return fmt.Sprintf("verdicts differ: kernel %v, bpfsim %v", orOK(kernel.Rejected), orOK(simulated.Rejected))
	case kernel.Rejected != nil:
		return ""
	}
	if (kernel.RunErr == nil) != (simulated.RunErr == nil) {
		d = append(d, fmt.Sprintf("run errors differ: kernel %v, bpfsim %v", orOK(kernel.RunErr), orOK(simulated.RunErr)))
	}
	if kernel.Retval != simulated.Retval {
		d = append(d, fmt.Sprintf("retval: kernel %#x, bpfsim %#x", kernel.Retval, simulated.Retval))
	}
	if !bytes.Equal(kernel.Packet, simulated.Packet) {
		// Report every differing 8-byte word: the generated programs store
		// one register or stack slot per word.
		for i := 0; i < max(len(kernel.Packet), len(simulated.Packet)); i += 8 {
			k, s := window(kernel.Packet, i), window(simulated.Packet, i)
			if !bytes.Equal(k, s) {
				d = append(d, fmt.Sprintf("packet[%d:%d]: kernel % x, bpfsim % x", i, i+8, k, s))
			}
		}
	}
	if p := kernel.prog; p != nil && p.Maps != nil {
		d = append(d, diffMaps(p, kernel, simulated)...)
	}
	return strings.Join(d, "; ")
}

func window(b []byte, i int) []byte {
	lo, hi := i&^7, min(i&^7+8, len(b))
	if lo >= len(b) {
		return nil
	}
	return b[lo:hi]
}

func orOK(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

// Listing renders a program's instructions in bpftool's syntax, for
// failure reports.
func Listing(spec *ebpf.ProgramSpec) string {
	insns, err := insn.FromAsm(spec.Instructions)
	if err != nil {
		return spec.Instructions.String()
	}
	return insn.Dump(insns, nil)
}
