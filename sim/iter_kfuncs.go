package sim

import (
	"encoding/binary"
	"math/bits"

	"github.com/cilium/ebpf/btf"

	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/kfunc"
	"github.com/bpfsim/bpfsim/sim/mem"
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

// The bits iterator (kernel/bpf/helpers.c: bpf_iter_bits_new, _next and
// _destroy, Linux 6.11+): the set bits of nr_words 64-bit words at any
// address, lowest first. _new copies the words (one into the iterator
// itself, more into memory it allocates, which _destroy frees), reading
// them as bpf_probe_read_kernel does, so the pointer is not checked by
// the verifier ("__ign"). Its struct bpf_iter_bits is, to the kernel,
// struct bpf_iter_bits_kern: the words' address or the one word, then
// nr_bits and the last bit returned, two ints.

// bitsIterMaxWords is BITS_ITER_NR_WORDS_MAX.
const bitsIterMaxWords = 511

// Offsets in struct bpf_iter_bits_kern.
const (
	bitsIterNrBits = 8
	bitsIterBit    = 12
)

func init() {
	iterBitsParam := func(typ func(string) btf.Type) btf.FuncParam {
		return param("it", &btf.Pointer{Target: typ("bpf_iter_bits")})
	}
	builtinKfuncs["bpf_iter_bits_new"] = &builtinKfunc{
		flags: kfunc.IterNew,
		proto: func(typ func(string) btf.Type) *btf.FuncProto {
			return &btf.FuncProto{Return: btfInt, Params: []btf.FuncParam{
				iterBitsParam(typ), param("unsafe_ptr__ign", &btf.Pointer{Target: &btf.Const{Type: btfU64}}),
				param("nr_words", btfU32)}}
		},
		fn: func(k *Kernel) func(m *interp.Machine, r1, r2, r3, r4, r5 uint64) (uint64, error) {
			return k.kfuncIterBitsNew
		},
	}
	builtinKfuncs["bpf_iter_bits_next"] = &builtinKfunc{
		flags: kfunc.IterNext | kfunc.RetNull,
		proto: func(typ func(string) btf.Type) *btf.FuncProto {
			return &btf.FuncProto{Return: &btf.Pointer{Target: btfInt}, Params: []btf.FuncParam{iterBitsParam(typ)}}
		},
		fn: func(*Kernel) func(m *interp.Machine, r1, r2, r3, r4, r5 uint64) (uint64, error) {
			return kfuncIterBitsNext
		},
	}
	builtinKfuncs["bpf_iter_bits_destroy"] = &builtinKfunc{
		flags: kfunc.IterDestroy,
		proto: func(typ func(string) btf.Type) *btf.FuncProto {
			return &btf.FuncProto{Return: (*btf.Void)(nil), Params: []btf.FuncParam{iterBitsParam(typ)}}
		},
		fn: func(k *Kernel) func(m *interp.Machine, r1, r2, r3, r4, r5 uint64) (uint64, error) {
			return k.kfuncIterBitsDestroy
		},
	}
}

// kfuncIterBitsNew is bpf_iter_bits_new(it, unsafe_ptr__ign, nr_words):
// a NULL pointer or no words is -EINVAL, more than 511 words -E2BIG, and
// words it cannot read -EFAULT; each leaves an iterator that yields
// nothing.
func (k *Kernel) kfuncIterBitsNew(m *interp.Machine, it, ptr, nrWords, _, _ uint64) (uint64, error) {
	if err := storeIterBits(m, it, 0, 0, -1); err != nil {
		return 0, err
	}
	n := uint32(nrWords)
	switch {
	case ptr == 0 || n == 0:
		return errnoRet(uapi.EINVAL), nil
	case n > bitsIterMaxWords:
		return errnoRet(uapi.E2BIG), nil
	}
	words := make([]byte, 8*n)
	if m.TLB.Space().Read(ptr, words) != nil {
		return errnoRet(uapi.EFAULT), nil
	}
	if n == 1 {
		// The one word is kept in the iterator itself.
		return 0, storeIterBits(m, it, binary.LittleEndian.Uint64(words), 64, -1)
	}
	addr, err := k.mem.Alloc(uint64(len(words)), mem.AllocOptions{Perm: mem.PermRW, Name: "bpf_iter_bits"})
	if err != nil {
		return errnoRet(uapi.ENOMEM), nil
	}
	if err := k.mem.Write(addr, words); err != nil {
		return 0, err
	}
	return 0, storeIterBits(m, it, addr, int32(8*len(words)), -1)
}

// kfuncIterBitsNext is bpf_iter_bits_next(it): a pointer to the next set
// bit's index, kept in the iterator, or NULL once there is none.
func kfuncIterBitsNext(m *interp.Machine, it, _, _, _, _ uint64) (uint64, error) {
	var kit [16]byte
	if err := m.ReadMem(it, kit[:]); err != nil {
		return 0, err
	}
	nrBits := int32(binary.LittleEndian.Uint32(kit[bitsIterNrBits:]))
	bit := int32(binary.LittleEndian.Uint32(kit[bitsIterBit:]))
	if nrBits == 0 || bit >= nrBits {
		return 0, nil
	}
	next, err := findNextBit(m, kit[:8], int(nrBits), int(bit)+1)
	if err != nil {
		return 0, err
	}
	if f := m.TLB.Store32(it+bitsIterBit, uint64(uint32(int32(next)))); f != nil {
		f.PC = m.PC()
		return 0, f
	}
	if next >= int(nrBits) {
		return 0, nil
	}
	return it + bitsIterBit, nil
}

// findNextBit is find_next_bit over the iterator's n bits: the first set
// bit at or after from, or n. head is the iterator's first 8 bytes: the
// one word itself when n is 64, else the words' address. Words are read
// one at a time from from's, so that a walk reads each word about once.
func findNextBit(m *interp.Machine, head []byte, n, from int) (int, error) {
	addr := binary.LittleEndian.Uint64(head)
	var buf [8]byte
	for w := from / 64; w < n/64; w++ {
		word := head
		if n != 64 {
			if err := m.ReadMem(addr+8*uint64(w), buf[:]); err != nil {
				return 0, err
			}
			word = buf[:]
		}
		v := binary.LittleEndian.Uint64(word)
		if w == from/64 {
			v &= ^uint64(0) << (from % 64)
		}
		if v != 0 {
			return w*64 + bits.TrailingZeros64(v), nil
		}
	}
	return n, nil
}

// kfuncIterBitsDestroy is bpf_iter_bits_destroy(it): the words' copy, if
// _new allocated one, is freed.
func (k *Kernel) kfuncIterBitsDestroy(m *interp.Machine, it, _, _, _, _ uint64) (uint64, error) {
	var kit [16]byte
	if err := m.ReadMem(it, kit[:]); err != nil {
		return 0, err
	}
	if int32(binary.LittleEndian.Uint32(kit[bitsIterNrBits:])) <= 64 {
		return 0, nil
	}
	return 0, k.mem.Free(binary.LittleEndian.Uint64(kit[:8]))
}

// storeIterBits writes struct bpf_iter_bits_kern.
func storeIterBits(m *interp.Machine, it, words uint64, nrBits, bit int32) error {
	var kit [16]byte
	binary.LittleEndian.PutUint64(kit[:], words)
	binary.LittleEndian.PutUint32(kit[bitsIterNrBits:], uint32(nrBits))
	binary.LittleEndian.PutUint32(kit[bitsIterBit:], uint32(bit))
	return m.WriteMem(it, kit[:])
}
