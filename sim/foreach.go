package sim

import (
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// helperForEachMapElem is bpf_for_each_map_elem(map, callback_fn,
// callback_ctx, flags) and the map types' map_for_each_callback
// (bpf_for_each_array_elem, bpf_for_each_hash_elem), which the verifier's
// fix-ups call in its place: callback_fn(map, key, value, callback_ctx)
// for each element until it returns 1. It returns the calls made, or
// -EINVAL for flags other than 0.
func (k *Kernel) helperForEachMapElem(m *interp.Machine, r1, fn, ctx, flags, _ uint64) (uint64, error) {
	mp, err := k.helperMap(m, r1)
	if err != nil {
		return 0, err
	}
	fe, ok := mp.Ops.(maps.ForEacher)
	if !ok {
		return 0, errors.Wrapf(uapi.EFAULT, "pc %d: %s maps cannot be walked", m.PC(), mp.Type.Name)
	}
	if flags != 0 {
		return errnoRet(uapi.EINVAL), nil
	}
	call, err := k.callback(m, fn)
	if err != nil {
		return 0, err
	}
	cpu, ok := m.Data.(*CPU)
	if !ok {
		return 0, errors.Wrapf(uapi.EFAULT, "pc %d: no CPU runs the program", m.PC())
	}
	// An array's key is the index, which the kernel passes in a
	// variable on its stack: a slot of the CPU's helper stack here,
	// one per nested walk.
	keySlot, err := cpu.pushHelperSlot(k)
	if err != nil {
		return 0, err
	}
	defer cpu.popHelperSlot()
	n, err := fe.ForEachElem(m.CPU, func(key uint64, idx uint32, value uint64) (bool, error) {
		if key == 0 {
			if f := m.TLB.Store32(keySlot, uint64(idx)); f != nil {
				return false, f
			}
			key = keySlot
		}
		ret, err := call(r1, key, value, ctx)
		return ret != 0, err
	})
	return uint64(n), err
}

// helperStackSlots is how many nested helper calls may each hold a slot:
// more than the call frames a program may have.
const helperStackSlots = 64

// pushHelperSlot returns the address of a free 8-byte slot of the CPU's
// helper stack, a page of simulated memory made on first use.
func (c *CPU) pushHelperSlot(k *Kernel) (uint64, error) {
	if c.helperStack == 0 {
		addr, err := k.mem.Vmalloc(mem.PageSize, mem.PermRW, "helper_stack")
		if err != nil {
			return 0, err
		}
		c.helperStack = addr
	}
	if c.helperDepth == helperStackSlots {
		return 0, errors.Wrap(uapi.EFAULT, "helper calls nested too deeply")
	}
	c.helperDepth++
	return c.helperStack + uint64(c.helperDepth-1)*8, nil
}

func (c *CPU) popHelperSlot() { c.helperDepth-- }
