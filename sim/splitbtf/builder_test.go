package splitbtf

import (
	"math/rand"
	"testing"
)

// builder adds types to a BTF for tests, failing the test on an error.
type builder struct {
	t *testing.T
	b *BTF
}

func (bb builder) str(s string) uint32 {
	if s == "" {
		return 0
	}
	off, err := bb.b.AddStr(s)
	if err != nil {
		bb.t.Fatal(err)
	}
	return off
}

func (bb builder) add(kind Kind, name string, kflag bool, sizeType uint32, vlen int, data ...uint32) uint32 {
	return bb.b.AddType(Type{NameOff: bb.str(name), Info: Info(kind, kflag, vlen), SizeType: sizeType, Data: data})
}

func (bb builder) intT(name string, size uint32, signed bool) uint32 {
	enc := uint32(0)
	if signed {
		enc = 1 << 24
	}
	return bb.add(KindInt, name, false, size, 0, enc|size*8)
}

func (bb builder) ref(kind Kind, name string, to uint32) uint32 {
	return bb.add(kind, name, false, to, 0)
}

// member is a struct or union member: name, type, bit offset.
type member struct {
	name string
	typ  uint32
	off  uint32
}

func (bb builder) composite(kind Kind, name string, size uint32, ms ...member) uint32 {
	var data []uint32
	for _, m := range ms {
		data = append(data, bb.str(m.name), m.typ, m.off)
	}
	return bb.add(kind, name, false, size, len(ms), data...)
}

func (bb builder) enum(name string, size uint32, values ...string) uint32 {
	var data []uint32
	for i, v := range values {
		data = append(data, bb.str(v), uint32(i))
	}
	return bb.add(KindEnum, name, false, size, len(values), data...)
}

func (bb builder) array(elem, index, n uint32) uint32 {
	return bb.add(KindArray, "", false, 0, 0, elem, index, n)
}

func (bb builder) proto(ret uint32, params ...member) uint32 {
	var data []uint32
	for _, p := range params {
		data = append(data, bb.str(p.name), p.typ)
	}
	return bb.add(KindFuncProto, "", false, ret, len(params), data...)
}

func newRand(seed int64) *rand.Rand { return rand.New(rand.NewSource(seed)) }
