//go:build linux

package kdiff

import (
	"runtime"

	"github.com/cilium/ebpf"
	"github.com/pkg/errors"
	"golang.org/x/sys/unix"
)

// PossibleCPUs is num_possible_cpus(): how many copies a per-CPU map value
// has. A Sim comparing per-CPU maps needs as many (NewSimCPUs).
func (k *Kernel) PossibleCPUs() int {
	n, err := ebpf.PossibleCPU()
	if err != nil {
		return 1
	}
	return n
}

// PinnableCPUs is how many CPUs, counted from CPU 0, this process may run
// on: the CPUs test runs can be pinned to (MapGenOptions.CPUs). 0 if it
// may not run on CPU 0.
func (k *Kernel) PinnableCPUs() int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return 0
	}
	n := 0
	for n < k.PossibleCPUs() && set.IsSet(n) {
		n++
	}
	return n
}

// onCPU runs fn on a thread pinned to cpu. An XDP test run executes on the
// CPU of the thread that asks for it, so this is how a program's per-CPU
// map accesses go to a known CPU's copy.
func onCPU(cpu int, fn func()) error {
	runtime.LockOSThread()
	var old, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		runtime.UnlockOSThread()
		return errors.Wrap(err, "sched_getaffinity")
	}
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		runtime.UnlockOSThread()
		return errors.Wrapf(err, "pinning the test run to CPU %d", cpu)
	}
	fn()
	if err := unix.SchedSetaffinity(0, &old); err != nil {
		// Leave the thread locked: it ends with this goroutine instead of
		// going back to the scheduler pinned.
		return nil
	}
	runtime.UnlockOSThread()
	return nil
}

// runMaps runs a program with maps in the kernel: see Program and
// Sim.runMaps, which does the same on bpfsim. Test runs are pinned to the
// CPUs in p.Runs.
func (k *Kernel) runMaps(p *Program) Outcome {
	o := Outcome{prog: p}
	var ms []*ebpf.Map
	defer func() {
		for _, m := range ms {
			m.Close()
		}
	}()
	ids := map[uint32]int{}
	for i, spec := range p.Maps {
		m, err := ebpf.NewMap(spec)
		if err != nil {
			o.MapErr = errors.Wrapf(err, "map %s", spec.Name)
			return o
		}
		ms = append(ms, m)
		if info, err := m.Info(); err == nil {
			if id, ok := info.ID(); ok {
				ids[uint32(id)] = i
			}
		}
	}
	var prog *ebpf.Program
	if p.Spec != nil {
		spec := p.Spec.Copy()
		for i, m := range ms {
			if err := associate(spec.Instructions, p.Maps[i].Name, m); err != nil {
				o.Rejected = err
				return o
			}
		}
		var err error
		if prog, err = ebpf.NewProgram(spec); err != nil {
			o.Rejected = err
			return o
		}
		defer prog.Close()
	}
	ncpu := k.PossibleCPUs()
	ums := make([]userMap, len(ms))
	for i, m := range ms {
		ums[i] = kernelMap{m: m, spec: p.Maps[i], ncpu: ncpu}
	}
	o.Before = applyOps(p.Maps, ums, p.Before, ncpu)
	if prog != nil {
		for _, cpu := range p.Runs {
			r := RunResult{CPU: cpu, Packet: make([]byte, len(p.Packet))}
			if err := onCPU(cpu, func() {
				r.Retval, r.Err = prog.Run(&ebpf.RunOptions{Data: p.Packet, DataOut: r.Packet})
			}); err != nil {
				r.Err = err
			}
			o.Runs = append(o.Runs, r)
		}
		if len(o.Runs) > 0 {
			o.Retval, o.Packet, o.RunErr = o.Runs[0].Retval, o.Runs[0].Packet, o.Runs[0].Err
		}
		o.Xlated, o.XlatedErr = xlated(prog)
		if o.XlatedErr == nil {
			o.XlatedErr = translateXlated(o.Xlated, func(id uint32) (int, bool) {
				i, ok := ids[id]
				return i, ok
			}, kernelFunc)
		}
		if o.XlatedErr != nil {
			o.Xlated = nil
		}
	}
	o.After = applyOps(p.Maps, ums, p.After, ncpu)
	o.Maps = dumpMaps(p.Maps, ums)
	return o
}

// kernelMap is user-space access to a kernel map through cilium/ebpf.
type kernelMap struct {
	m    *ebpf.Map
	spec *ebpf.MapSpec
	ncpu int
}

func (m kernelMap) percpu() bool { return IsPercpu(m.spec) }

// join turns cilium/ebpf's per-CPU slice into OpResult's layout.
func join(vals [][]byte) []byte {
	var v []byte
	for _, x := range vals {
		v = append(v, x...)
	}
	return v
}

func (m kernelMap) Lookup(key []byte) ([]byte, error) {
	if m.percpu() {
		var vals [][]byte
		if err := m.m.Lookup(key, &vals); err != nil {
			return nil, err
		}
		return join(vals), nil
	}
	var v []byte
	if err := m.m.Lookup(key, &v); err != nil {
		return nil, err
	}
	return v, nil
}

func (m kernelMap) Update(key, value []byte, flags uint64) error {
	if m.percpu() {
		vs := int(m.spec.ValueSize)
		vals := make([][]byte, m.ncpu)
		for c := range vals {
			vals[c] = value[c*vs : (c+1)*vs]
		}
		return m.m.Update(key, vals, ebpf.MapUpdateFlags(flags))
	}
	return m.m.Update(key, value, ebpf.MapUpdateFlags(flags))
}

func (m kernelMap) Delete(key []byte) error { return m.m.Delete(key) }

func (m kernelMap) NextKey(key []byte) ([]byte, error) {
	next := make([]byte, m.spec.KeySize)
	var err error
	if key == nil {
		err = m.m.NextKey(nil, next)
	} else {
		err = m.m.NextKey(key, next)
	}
	if err != nil {
		return nil, err
	}
	return next, nil
}

func (m kernelMap) LookupAndDelete(key []byte) ([]byte, error) {
	if m.percpu() {
		var vals [][]byte
		if err := m.m.LookupAndDelete(key, &vals); err != nil {
			return nil, err
		}
		return join(vals), nil
	}
	var v []byte
	if err := m.m.LookupAndDelete(key, &v); err != nil {
		return nil, err
	}
	return v, nil
}

// kernelFunc names the function a call in xlated code reaches: one of the
// kernel's, or an error wrapping ErrNoKernelSymbols when the kernel hides
// their addresses.
func kernelFunc(imm int32) (string, error) {
	name, err := kernelCallName(imm) // samexlated_linux.go
	if err != nil {
		return "", err
	}
	if name == "" {
		return "", errors.New("no function of /proc/kallsyms is there")
	}
	return name, nil
}
