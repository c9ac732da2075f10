package maps

import "encoding/binary"

// The map object's own fields, struct bpf_map (include/linux/bpf.h), at
// the map's address: what a program reads through a pointer the kernel
// hands it typed by BTF (an iterator's ctx->map). The kernel's layout
// depends on its configuration and programs reach it through CO-RE, so
// the simulated kernel has a layout of its own, with the fields programs
// read, described in its BTF with these offsets.
const (
	HeaderOps          = 0  // const struct bpf_map_ops *ops: 0 here
	HeaderInnerMapMeta = 8  // struct bpf_map *inner_map_meta: 0 here
	HeaderMapType      = 16 // enum bpf_map_type map_type
	HeaderKeySize      = 20 // u32 key_size
	HeaderValueSize    = 24 // u32 value_size
	HeaderMaxEntries   = 28 // u32 max_entries
	HeaderMapExtra     = 32 // u64 map_extra
	HeaderMapFlags     = 40 // u32 map_flags
	HeaderID           = 44 // u32 id
	HeaderName         = 48 // char name[BPF_OBJ_NAME_LEN]
	HeaderNameLen      = 16
	HeaderSize         = 64
)

// Header returns m's struct bpf_map.
func (m *Map) Header() []byte {
	b := make([]byte, HeaderSize)
	le := binary.LittleEndian
	le.PutUint32(b[HeaderMapType:], uint32(m.Attr.Type))
	le.PutUint32(b[HeaderKeySize:], m.KeySize)
	le.PutUint32(b[HeaderValueSize:], m.ValueSize)
	le.PutUint32(b[HeaderMaxEntries:], m.MaxEntries)
	le.PutUint64(b[HeaderMapExtra:], m.MapExtra)
	le.PutUint32(b[HeaderMapFlags:], m.Attr.Flags)
	le.PutUint32(b[HeaderID:], m.ID)
	copy(b[HeaderName:HeaderName+HeaderNameLen-1], m.Name)
	return b
}
