package sim

import (
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// The map helpers (kernel/bpf/helpers.c): r1 holds the map pointer a
// program loaded, r2 a pointer to the key in the program's memory.
//
// Until the verifier exists, these helpers also check what the verifier
// would have proven: that r1 is a map and that the key and value pointers
// are readable. A program that breaks those rules stops with an error
// naming the helper, where the kernel would have refused to load it.
func (k *Kernel) registerMapHelpers() {
	for _, h := range []*Helper{
		{ID: uapi.FuncMapLookupElem, Fn: k.helperMapLookupElem},
		{ID: uapi.FuncMapUpdateElem, Fn: k.helperMapUpdateElem},
		{ID: uapi.FuncMapDeleteElem, Fn: k.helperMapDeleteElem},
		{ID: uapi.FuncMapLookupPercpuElem, Fn: k.helperMapLookupPercpuElem},
		{ID: uapi.FuncMapPushElem, Fn: k.helperMapPushElem},
		{ID: uapi.FuncMapPopElem, Fn: k.helperMapPopElem},
		{ID: uapi.FuncMapPeekElem, Fn: k.helperMapPeekElem},
	} {
		if err := k.RegisterHelper(h); err != nil {
			panic(err)
		}
	}
}

// helperMap turns r1 back into the map it points to.
func (k *Kernel) helperMap(m *interp.Machine, addr uint64) (*maps.Map, error) {
	mp, ok := k.progMap(m, addr)
	if !ok {
		return nil, errors.Wrapf(uapi.EFAULT, "pc %d: %s: r1=%#x is not a map",
			m.PC(), uapi.HelperName(m.Program().Insns()[m.PC()].Imm), addr)
	}
	return mp, nil
}

// readArg returns the n bytes a program passed by pointer, for reading
// only, and valid until the next readArg of the same slot. Within one
// page it is a view of the page itself; otherwise, and under the race
// detector (which wants simulated memory read through mem's atomic
// loads), the bytes are copied into the CPU's scratch buffer slot.
func readArg(m *interp.Machine, addr uint64, n uint32, slot int) ([]byte, error) {
	if off := addr & (mem.PageSize - 1); !mem.RaceMode && off+uint64(n) <= mem.PageSize {
		if pg := m.TLB.ReadPage(addr); pg != nil {
			return pg[off : off+uint64(n) : off+uint64(n)], nil
		}
	}
	cpu := m.Data.(*CPU)
	buf := cpu.scratch(slot, int(n))
	if f := m.TLB.Read(addr, buf); f != nil {
		f.PC = m.PC()
		return nil, f
	}
	return buf, nil
}

// ret converts a map operation's error into the helper's return value: 0
// or -errno.
func ret(err error) uint64 {
	if err == nil {
		return 0
	}
	var e uapi.Errno
	if errors.As(err, &e) {
		return errnoRet(e)
	}
	return errnoRet(uapi.EINVAL)
}

func (k *Kernel) helperMapLookupElem(m *interp.Machine, r1, r2, _, _, _ uint64) (uint64, error) {
	mp, err := k.helperMap(m, r1)
	if err != nil {
		return 0, err
	}
	key, err := readArg(m, r2, mp.KeySize, 0)
	if err != nil {
		return 0, err
	}
	addr, err := mp.Ops.LookupElem(m.CPU, key)
	if err != nil {
		return 0, nil
	}
	return addr, nil
}

// progWrite applies BPF_F_RDONLY_PROG: the verifier refuses writes to such
// a map from a program ("write into map forbidden"), with EACCES.
func progWrite(mp *maps.Map) error {
	if mp.Attr.Flags&uapi.BPF_F_RDONLY_PROG != 0 {
		return errors.Wrap(uapi.EACCES, "write into map forbidden")
	}
	return nil
}

func (k *Kernel) helperMapUpdateElem(m *interp.Machine, r1, r2, r3, r4, _ uint64) (uint64, error) {
	mp, err := k.helperMap(m, r1)
	if err != nil {
		return 0, err
	}
	return mapUpdateElem(m, mp, r2, r3, r4)
}

// mapUpdateElem is bpf_map_update_elem on a map already found, for the
// helper and for the direct call of its kernel function.
func mapUpdateElem(m *interp.Machine, mp *maps.Map, r2, r3, r4 uint64) (uint64, error) {
	if err := progWrite(mp); err != nil {
		return ret(err), nil
	}
	key, err := readArg(m, r2, mp.KeySize, 0)
	if err != nil {
		return 0, err
	}
	value, err := readArg(m, r3, mp.ValueSize, 1)
	if err != nil {
		return 0, err
	}
	return ret(mp.Ops.UpdateElem(m.CPU, key, value, r4)), nil
}

func (k *Kernel) helperMapDeleteElem(m *interp.Machine, r1, r2, _, _, _ uint64) (uint64, error) {
	mp, err := k.helperMap(m, r1)
	if err != nil {
		return 0, err
	}
	if err := progWrite(mp); err != nil {
		return ret(err), nil
	}
	key, err := readArg(m, r2, mp.KeySize, 0)
	if err != nil {
		return 0, err
	}
	return ret(mp.Ops.DeleteElem(m.CPU, key)), nil
}

// helperMapLookupPercpuElem is bpf_map_lookup_percpu_elem(map, key, cpu).
func (k *Kernel) helperMapLookupPercpuElem(m *interp.Machine, r1, r2, r3, _, _ uint64) (uint64, error) {
	mp, err := k.helperMap(m, r1)
	if err != nil {
		return 0, err
	}
	p, ok := mp.Ops.(maps.PercpuValues)
	if !ok {
		return 0, errors.Wrapf(uapi.EINVAL, "pc %d: bpf_map_lookup_percpu_elem on a %s map", m.PC(), mp.Attr.Type)
	}
	key, err := readArg(m, r2, mp.KeySize, 0)
	if err != nil {
		return 0, err
	}
	addr, err := p.LookupPercpuElem(key, int(uint32(r3)))
	if err != nil {
		return 0, nil
	}
	return addr, nil
}

func (k *Kernel) queueMap(m *interp.Machine, r1 uint64) (*maps.Map, maps.PushPopPeeker, error) {
	mp, err := k.helperMap(m, r1)
	if err != nil {
		return nil, nil, err
	}
	q, ok := mp.Ops.(maps.PushPopPeeker)
	if !ok {
		return nil, nil, errors.Wrapf(uapi.EINVAL, "pc %d: push/pop/peek on a %s map", m.PC(), mp.Attr.Type)
	}
	return mp, q, nil
}

func (k *Kernel) helperMapPushElem(m *interp.Machine, r1, r2, r3, _, _ uint64) (uint64, error) {
	mp, q, err := k.queueMap(m, r1)
	if err != nil {
		return 0, err
	}
	if err := progWrite(mp); err != nil {
		return ret(err), nil
	}
	value, err := readArg(m, r2, mp.ValueSize, 1)
	if err != nil {
		return 0, err
	}
	return ret(q.PushElem(m.CPU, value, r3)), nil
}

// popPeek serves pop and peek: the value goes to the program's buffer.
func (k *Kernel) popPeek(m *interp.Machine, r1, r2 uint64, pop bool) (uint64, error) {
	mp, q, err := k.queueMap(m, r1)
	if err != nil {
		return 0, err
	}
	if pop {
		if err := progWrite(mp); err != nil {
			return ret(err), nil
		}
	}
	value := m.Data.(*CPU).scratch(1, int(mp.ValueSize))
	if pop {
		err = q.PopElem(m.CPU, value)
	} else {
		err = q.PeekElem(m.CPU, value)
	}
	if err != nil {
		return ret(err), nil
	}
	if f := m.TLB.Write(r2, value); f != nil {
		f.PC = m.PC()
		return 0, f
	}
	return 0, nil
}

func (k *Kernel) helperMapPopElem(m *interp.Machine, r1, r2, _, _, _ uint64) (uint64, error) {
	return k.popPeek(m, r1, r2, true)
}

func (k *Kernel) helperMapPeekElem(m *interp.Machine, r1, r2, _, _, _ uint64) (uint64, error) {
	return k.popPeek(m, r1, r2, false)
}
