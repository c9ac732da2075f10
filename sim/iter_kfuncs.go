package sim

import (
	"github.com/cilium/ebpf/btf"

	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/kfunc"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// The numeric open-coded iterator (kernel/bpf/bpf_iter.c: bpf_iter_num_new,
// _next and _destroy; the kernel's common kfuncs, for every program type).
// libbpf's bpf_for(i, start, end) and bpf_repeat(n) loop over it. Its
// struct bpf_iter_num is, to the kernel, struct bpf_iter_num_kern: the
// last value returned (cur) and the end of the range, two ints; the
// verifier keeps the program from touching either.

// maxLoops is BPF_MAX_LOOPS: the most values one numeric iterator yields.
const maxLoops = 8 * 1024 * 1024

// iterNumParam is the struct bpf_iter_num pointer every one takes first.
func iterNumParam(typ func(string) btf.Type) btf.FuncParam {
	return param("it", &btf.Pointer{Target: typ("bpf_iter_num")})
}

func init() {
	builtinKfuncs["bpf_iter_num_new"] = &builtinKfunc{
		flags: kfunc.IterNew,
		proto: func(typ func(string) btf.Type) *btf.FuncProto {
			return &btf.FuncProto{Return: btfInt, Params: []btf.FuncParam{
				iterNumParam(typ), param("start", btfInt), param("end", btfInt)}}
		},
		fn: func(*Kernel) func(m *interp.Machine, r1, r2, r3, r4, r5 uint64) (uint64, error) {
			return kfuncIterNumNew
		},
	}
	builtinKfuncs["bpf_iter_num_next"] = &builtinKfunc{
		flags: kfunc.IterNext | kfunc.RetNull,
		proto: func(typ func(string) btf.Type) *btf.FuncProto {
			return &btf.FuncProto{Return: &btf.Pointer{Target: btfInt}, Params: []btf.FuncParam{iterNumParam(typ)}}
		},
		fn: func(*Kernel) func(m *interp.Machine, r1, r2, r3, r4, r5 uint64) (uint64, error) {
			return kfuncIterNumNext
		},
	}
	builtinKfuncs["bpf_iter_num_destroy"] = &builtinKfunc{
		flags: kfunc.IterDestroy,
		proto: func(typ func(string) btf.Type) *btf.FuncProto {
			return &btf.FuncProto{Return: (*btf.Void)(nil), Params: []btf.FuncParam{iterNumParam(typ)}}
		},
		fn: func(*Kernel) func(m *interp.Machine, r1, r2, r3, r4, r5 uint64) (uint64, error) {
			return func(m *interp.Machine, it, _, _, _, _ uint64) (uint64, error) {
				return 0, storeIterNum(m, it, 0, 0)
			}
		},
	}
}

// kfuncIterNumNew is bpf_iter_num_new(it, start, end): the range [start,
// end), empty when they are equal. A reversed range is -EINVAL and one
// longer than BPF_MAX_LOOPS -E2BIG, each leaving an iterator that yields
// nothing (which the program must still destroy).
func kfuncIterNumNew(m *interp.Machine, it, start, end, _, _ uint64) (uint64, error) {
	s, e := int32(start), int32(end)
	switch {
	case s > e:
		return errnoRet(uapi.EINVAL), storeIterNum(m, it, 0, 0)
	case int64(e)-int64(s) > maxLoops:
		return errnoRet(uapi.E2BIG), storeIterNum(m, it, 0, 0)
	}
	// The first next moves cur to start; start-1 wraps for
	// math.MinInt32, as the kernel's int does.
	return 0, storeIterNum(m, it, s-1, e)
}

// kfuncIterNumNext is bpf_iter_num_next(it): a pointer to the next value,
// kept in the iterator itself, or NULL once the range is done (and from
// then on).
func kfuncIterNumNext(m *interp.Machine, it, _, _, _, _ uint64) (uint64, error) {
	cur, f := m.TLB.Load32(it)
	var end uint64
	if f == nil {
		end, f = m.TLB.Load32(it + 4)
	}
	if f != nil {
		f.PC = m.PC()
		return 0, f
	}
	// cur+1 in int arithmetic, as the kernel computes it before
	// widening: it wraps only for a range that starts at MinInt32.
	next := int32(cur) + 1
	if int64(next) >= int64(int32(end)) {
		return 0, storeIterNum(m, it, 0, 0)
	}
	if f := m.TLB.Store32(it, uint64(uint32(next))); f != nil {
		f.PC = m.PC()
		return 0, f
	}
	return it, nil
}

// storeIterNum writes struct bpf_iter_num_kern {int cur; int end;}.
func storeIterNum(m *interp.Machine, it uint64, cur, end int32) error {
	f := m.TLB.Store64(it, uint64(uint32(cur))|uint64(uint32(end))<<32)
	if f != nil {
		f.PC = m.PC()
		return f
	}
	return nil
}
