package kdiff

import (
	"bytes"
	"fmt"
	"sort"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/pkg/errors"
)

// What both runners share for programs with maps: the user-space
// operations, the final dump, and their comparison.

// OpResult is what one user-space map operation gave.
type OpResult struct {
	// Err is the operation's error, nil on success. Runners compare the
	// errno it carries (Errno).
	Err error
	// Key is the key MapNextKey returned. It is left out for maps whose
	// order is not comparable (see Ordered).
	Key []byte
	// Value is what MapLookup or MapLookupAndDelete returned: ValueSize
	// bytes, or for a per-CPU map ValueSize bytes per possible CPU, one
	// after the other (without the padding to 8 bytes of the syscall
	// layout).
	Value []byte
}

// MapDump is a map's contents walked with get_next_key from the start,
// each key's value read with a lookup. For maps whose order is not
// comparable the entries are sorted by key.
type MapDump struct {
	Keys, Values [][]byte
	// Ordered says the keys are in the kernel's get_next_key order.
	Ordered bool
	// Err stopped the walk.
	Err error
}

// RunResult is one test run of a program.
type RunResult struct {
	CPU    int
	Retval uint32
	Packet []byte
	Err    error
}

// userMap is one side's user-space access to a map: kernel maps through
// cilium/ebpf, bpfsim maps through sim.Map. Values are as in OpResult.
type userMap interface {
	Lookup(key []byte) ([]byte, error)
	Update(key, value []byte, flags uint64) error
	Delete(key []byte) error
	// NextKey with a nil key asks for the first key.
	NextKey(key []byte) ([]byte, error)
	LookupAndDelete(key []byte) ([]byte, error)
}

// Errno returns the errno err carries: 0 for nil, -1 for an error without
// one (a failure of the harness rather than of the map operation).
func Errno(err error) int {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return int(e)
	}
	return -1
}

func errnoName(n int) string {
	switch n {
	case 0:
		return "ok"
	case -1:
		return "no errno"
	case 524:
		return "ENOTSUPP"
	}
	for _, e := range []struct {
		n    syscall.Errno
		name string
	}{{syscall.EPERM, "EPERM"}, {syscall.ENOENT, "ENOENT"}, {syscall.E2BIG, "E2BIG"}, {syscall.EBADF, "EBADF"},
		{syscall.ENOMEM, "ENOMEM"}, {syscall.EACCES, "EACCES"}, {syscall.EFAULT, "EFAULT"}, {syscall.EBUSY, "EBUSY"},
		{syscall.EEXIST, "EEXIST"}, {syscall.EINVAL, "EINVAL"}, {syscall.ENOSPC, "ENOSPC"}, {syscall.EOPNOTSUPP, "EOPNOTSUPP"}} {
		if int(e.n) == n {
			return e.name
		}
	}
	return fmt.Sprintf("errno %d", n)
}

// opValue is the value an update passes: op.Value, or for a per-CPU map
// every CPU's PercpuValue one after the other.
func opValue(spec *ebpf.MapSpec, op MapOp, ncpu int) []byte {
	if !IsPercpu(spec) {
		return op.Value
	}
	var v []byte
	for c := 0; c < ncpu; c++ {
		v = append(v, PercpuValue(op.Value, c)...)
	}
	return v
}

// applyOps runs ops on the maps and returns their results.
func applyOps(specs []*ebpf.MapSpec, ms []userMap, ops []MapOp, ncpu int) []OpResult {
	res := make([]OpResult, len(ops))
	for i, op := range ops {
		m, spec, r := ms[op.Map], specs[op.Map], &res[i]
		switch op.Kind {
		case MapLookup:
			r.Value, r.Err = m.Lookup(op.Key)
		case MapUpdate:
			r.Err = m.Update(op.Key, opValue(spec, op, ncpu), op.Flags)
		case MapDelete:
			r.Err = m.Delete(op.Key)
		case MapNextKey:
			r.Key, r.Err = m.NextKey(op.Key)
			if !Ordered(spec) {
				r.Key = nil
			}
		case MapLookupAndDelete:
			r.Value, r.Err = m.LookupAndDelete(op.Key)
		default:
			r.Err = errors.Errorf("unknown map operation %d", op.Kind)
		}
	}
	return res
}

// dumpMaps walks every map.
func dumpMaps(specs []*ebpf.MapSpec, ms []userMap) []MapDump {
	dumps := make([]MapDump, len(ms))
	for i, m := range ms {
		dumps[i] = dumpMap(specs[i], m)
	}
	return dumps
}

func dumpMap(spec *ebpf.MapSpec, m userMap) MapDump {
	d := MapDump{Ordered: Ordered(spec)}
	var key []byte
	for {
		if len(d.Keys) > int(spec.MaxEntries) {
			d.Err = errors.Errorf("get_next_key gave more than max_entries (%d) keys", spec.MaxEntries)
			break
		}
		next, err := m.NextKey(key)
		if Errno(err) == int(syscall.ENOENT) {
			break
		}
		if err != nil {
			d.Err = errors.Wrapf(err, "get_next_key after % x", key)
			break
		}
		value, err := m.Lookup(next)
		if err != nil {
			d.Err = errors.Wrapf(err, "lookup of % x", next)
			break
		}
		d.Keys, d.Values = append(d.Keys, next), append(d.Values, value)
		key = next
	}
	if !d.Ordered {
		idx := make([]int, len(d.Keys))
		for i := range idx {
			idx[i] = i
		}
		sort.Slice(idx, func(a, b int) bool { return bytes.Compare(d.Keys[idx[a]], d.Keys[idx[b]]) < 0 })
		keys, values := make([][]byte, len(idx)), make([][]byte, len(idx))
		for i, j := range idx {
			keys[i], values[i] = d.Keys[j], d.Values[j]
		}
		d.Keys, d.Values = keys, values
	}
	return d
}

// percpuStrip turns the syscall layout of a per-CPU value (each CPU's copy
// padded to 8 bytes) into OpResult's.
func percpuStrip(raw []byte, valueSize, ncpu int) []byte {
	stride := (valueSize + 7) &^ 7
	out := make([]byte, 0, valueSize*ncpu)
	for c := 0; c < ncpu && (c+1)*stride <= len(raw); c++ {
		out = append(out, raw[c*stride:c*stride+valueSize]...)
	}
	return out
}

// percpuPad is the reverse of percpuStrip.
func percpuPad(v []byte, valueSize, ncpu int) []byte {
	stride := (valueSize + 7) &^ 7
	out := make([]byte, stride*ncpu)
	for c := 0; c < ncpu && (c+1)*valueSize <= len(v); c++ {
		copy(out[c*stride:], v[c*valueSize:(c+1)*valueSize])
	}
	return out
}

// diffMaps describes how the map parts of two outcomes differ.
func diffMaps(p *Program, kernel, simulated Outcome) []string {
	var d []string
	for i := 1; i < max(len(kernel.Runs), len(simulated.Runs)); i++ {
		if i >= len(kernel.Runs) || i >= len(simulated.Runs) {
			d = append(d, fmt.Sprintf("kernel ran %d times, bpfsim %d", len(kernel.Runs), len(simulated.Runs)))
			break
		}
		k, s := kernel.Runs[i], simulated.Runs[i]
		if x := diffRun(k.Retval, s.Retval, k.Packet, s.Packet, k.Err, s.Err); len(x) > 0 {
			d = append(d, fmt.Sprintf("run %d (CPU %d): %s", i, k.CPU, joinDiff(x)))
		}
	}
	d = append(d, diffOps(p, "before", p.Before, kernel.Before, simulated.Before)...)
	d = append(d, diffOps(p, "after", p.After, kernel.After, simulated.After)...)
	for i := 0; i < max(len(kernel.Maps), len(simulated.Maps)); i++ {
		if i >= len(kernel.Maps) || i >= len(simulated.Maps) {
			d = append(d, fmt.Sprintf("kernel dumped %d maps, bpfsim %d", len(kernel.Maps), len(simulated.Maps)))
			break
		}
		if x := diffDump(kernel.Maps[i], simulated.Maps[i]); x != "" {
			d = append(d, fmt.Sprintf("final contents of m%d: %s", i, x))
		}
	}
	return d
}

func diffOps(p *Program, when string, ops []MapOp, kernel, simulated []OpResult) []string {
	var d []string
	if len(kernel) != len(simulated) {
		return []string{fmt.Sprintf("%s: kernel ran %d operations, bpfsim %d", when, len(kernel), len(simulated))}
	}
	for i := range kernel {
		k, s := kernel[i], simulated[i]
		var x []string
		if ke, se := Errno(k.Err), Errno(s.Err); ke != se || ke == -1 {
			x = append(x, fmt.Sprintf("kernel %s, bpfsim %s", errText(k.Err), errText(s.Err)))
		}
		if !bytes.Equal(k.Key, s.Key) {
			x = append(x, fmt.Sprintf("key: kernel % x, bpfsim % x", k.Key, s.Key))
		}
		if !bytes.Equal(k.Value, s.Value) {
			x = append(x, fmt.Sprintf("value: kernel % x, bpfsim % x", k.Value, s.Value))
		}
		if len(x) > 0 {
			op := fmt.Sprintf("op %d", i)
			if i < len(ops) {
				op = ops[i].String()
			}
			d = append(d, fmt.Sprintf("%s #%d %s: %s", when, i, op, joinDiff(x)))
		}
	}
	return d
}

func errText(err error) string {
	if err == nil {
		return "ok"
	}
	return fmt.Sprintf("%s (%v)", errnoName(Errno(err)), err)
}

func diffDump(k, s MapDump) string {
	if ke, se := Errno(k.Err), Errno(s.Err); ke != se || (k.Err == nil) != (s.Err == nil) {
		return fmt.Sprintf("walk: kernel %s, bpfsim %s", errText(k.Err), errText(s.Err))
	}
	var x []string
	for i := 0; i < max(len(k.Keys), len(s.Keys)); i++ {
		var kk, sk, kv, sv []byte
		if i < len(k.Keys) {
			kk, kv = k.Keys[i], k.Values[i]
		}
		if i < len(s.Keys) {
			sk, sv = s.Keys[i], s.Values[i]
		}
		if !bytes.Equal(kk, sk) || !bytes.Equal(kv, sv) {
			x = append(x, fmt.Sprintf("entry %d: kernel % x => % x, bpfsim % x => % x", i, kk, kv, sk, sv))
		}
	}
	if len(k.Keys) != len(s.Keys) {
		x = append(x, fmt.Sprintf("kernel has %d keys, bpfsim %d", len(k.Keys), len(s.Keys)))
	}
	return joinDiff(x)
}

func joinDiff(x []string) string {
	s := ""
	for i, e := range x {
		if i > 0 {
			s += "; "
		}
		s += e
	}
	return s
}

// diffRun compares one test run.
func diffRun(kr, sr uint32, kp, sp []byte, ke, se error) []string {
	var d []string
	if (ke == nil) != (se == nil) {
		d = append(d, fmt.Sprintf("run errors differ: kernel %v, bpfsim %v", orOK(ke), orOK(se)))
	}
	if kr != sr {
		d = append(d, fmt.Sprintf("retval: kernel %#x, bpfsim %#x", kr, sr))
	}
	if !bytes.Equal(kp, sp) {
		for i := 0; i < max(len(kp), len(sp)); i += 8 {
			k, s := window(kp, i), window(sp, i)
			if !bytes.Equal(k, s) {
				d = append(d, fmt.Sprintf("packet[%d:%d]: kernel % x, bpfsim % x", i, i+8, k, s))
			}
		}
	}
	return d
}
