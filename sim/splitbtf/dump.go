package splitbtf

import (
	"fmt"
	"io"
	"math"
)

// Dump writes b's own types as `bpftool btf dump file F format raw` prints
// them (with -B BASE for split BTF): one line per type, members, values
// and parameters on tab-indented lines below it.
func (b *BTF) Dump(w io.Writer) error {
	for i := range b.Types {
		if _, err := io.WriteString(w, b.DumpType(b.StartID()+uint32(i))+"\n"); err != nil {
			return err
		}
	}
	return nil
}

// DumpType is the text Dump prints for type id, without the last newline.
func (b *BTF) DumpType(id uint32) string {
	t := b.TypeByID(id)
	if t == nil {
		return fmt.Sprintf("[%d] (no such type)", id)
	}
	out := fmt.Sprintf("[%d] %s '%s'", id, t.Kind(), b.dumpStr(t.NameOff))
	switch t.Kind() {
	case KindInt:
		v := t.Data[0]
		out += fmt.Sprintf(" size=%d bits_offset=%d nr_bits=%d encoding=%s", t.SizeType, v>>16&0xff, v&0xff, intEncodingName(v>>24&0x0f))
	case KindPointer, KindConst, KindVolatile, KindRestrict, KindTypedef, KindTypeTag:
		out += fmt.Sprintf(" type_id=%d", t.SizeType)
	case KindArray:
		out += fmt.Sprintf(" type_id=%d index_type_id=%d nr_elems=%d", t.Data[0], t.Data[1], t.Data[2])
	case KindStruct, KindUnion:
		out += fmt.Sprintf(" size=%d vlen=%d", t.SizeType, t.Vlen())
		for m := 0; m+2 < len(t.Data); m += 3 {
			off, bits := t.Data[m+2], uint32(0)
			if t.KindFlag() {
				off, bits = off&0xffffff, off>>24
			}
			out += fmt.Sprintf("\n\t'%s' type_id=%d bits_offset=%d", b.dumpStr(t.Data[m]), t.Data[m+1], off)
			if bits != 0 {
				out += fmt.Sprintf(" bitfield_size=%d", bits)
			}
		}
	case KindEnum:
		out += fmt.Sprintf(" encoding=%s size=%d vlen=%d", signedness(t), t.SizeType, t.Vlen())
		for v := 0; v+1 < len(t.Data); v += 2 {
			if t.KindFlag() {
				out += fmt.Sprintf("\n\t'%s' val=%d", b.dumpStr(t.Data[v]), int32(t.Data[v+1]))
			} else {
				out += fmt.Sprintf("\n\t'%s' val=%d", b.dumpStr(t.Data[v]), t.Data[v+1])
			}
		}
	case KindEnum64:
		out += fmt.Sprintf(" encoding=%s size=%d vlen=%d", signedness(t), t.SizeType, t.Vlen())
		for v := 0; v+2 < len(t.Data); v += 3 {
			val := uint64(t.Data[v+2])<<32 | uint64(t.Data[v+1])
			if t.KindFlag() {
				out += fmt.Sprintf("\n\t'%s' val=%dLL", b.dumpStr(t.Data[v]), int64(val))
			} else {
				out += fmt.Sprintf("\n\t'%s' val=%dULL", b.dumpStr(t.Data[v]), val)
			}
		}
	case KindForward:
		kind := "struct"
		if t.KindFlag() {
			kind = "union"
		}
		out += " fwd_kind=" + kind
	case KindFunc:
		out += fmt.Sprintf(" type_id=%d linkage=%s", t.SizeType, pick(t.Vlen(), "static", "global", "extern"))
	case KindFuncProto:
		out += fmt.Sprintf(" ret_type_id=%d vlen=%d", t.SizeType, t.Vlen())
		for p := 0; p+1 < len(t.Data); p += 2 {
			out += fmt.Sprintf("\n\t'%s' type_id=%d", b.dumpStr(t.Data[p]), t.Data[p+1])
		}
	case KindVar:
		out += fmt.Sprintf(" type_id=%d, linkage=%s", t.SizeType, pick(int(t.Data[0]), "static", "global", "extern"))
	case KindDatasec:
		out += fmt.Sprintf(" size=%d vlen=%d", t.SizeType, t.Vlen())
		for v := 0; v+2 < len(t.Data); v += 3 {
			out += fmt.Sprintf("\n\ttype_id=%d offset=%d size=%d", t.Data[v], t.Data[v+1], t.Data[v+2])
			if vt := b.TypeByID(t.Data[v]); vt != nil {
				out += fmt.Sprintf(" (%s '%s')", vt.Kind(), b.dumpStr(vt.NameOff))
			}
		}
	case KindFloat:
		out += fmt.Sprintf(" size=%d", t.SizeType)
	case KindDeclTag:
		out += fmt.Sprintf(" type_id=%d component_idx=%d", t.SizeType, int32(t.Data[0]))
	}
	return out
}

func (b *BTF) dumpStr(off uint32) string {
	if off == 0 {
		return "(anon)"
	}
	if s, ok := b.Str(off); ok {
		return s
	}
	return "(invalid)"
}

func intEncodingName(e uint32) string {
	switch e {
	case 0:
		return "(none)"
	case 1:
		return "SIGNED"
	case 2:
		return "CHAR"
	case 4:
		return "BOOL"
	}
	return "UNKN"
}

func signedness(t *Type) string {
	if t.KindFlag() {
		return "SIGNED"
	}
	return "UNSIGNED"
}

func pick(i int, names ...string) string {
	if i >= 0 && i < len(names) && i < math.MaxInt32 {
		return names[i]
	}
	return "(unknown)"
}
