package uapi

// Dynamic pointers (include/linux/bpf.h, kernel/bpf/helpers.c): the
// helpers that make and use them, and the layout of the 16 bytes a
// struct bpf_dynptr holds at run time (struct bpf_dynptr_kern).
const (
	FuncDynptrFromMem        = 197
	FuncRingbufReserveDynptr = 198
	FuncRingbufSubmitDynptr  = 199
	FuncRingbufDiscardDynptr = 200
	FuncDynptrRead           = 201
	FuncDynptrWrite          = 202
	FuncDynptrData           = 203
	FuncUserRingbufDrain     = 209
)

// enum bpf_dynptr_type.
const (
	DynptrTypeInvalid = 0
	DynptrTypeLocal   = 1
	DynptrTypeRingbuf = 2
	DynptrTypeSKB     = 3
	DynptrTypeXDP     = 4
)

// struct bpf_dynptr_kern: data (8 bytes), then size and offset (4 each).
// The size word keeps the type in bits 28-30 and read-only in bit 31.
const (
	DynptrSize      = 16
	DynptrMaxSize   = 1<<24 - 1 // DYNPTR_MAX_SIZE
	DynptrSizeMask  = 0xffffff  // DYNPTR_SIZE_MASK
	DynptrTypeShift = 28        // DYNPTR_TYPE_SHIFT
	DynptrTypeMask  = 0x7
	DynptrRdonlyBit = 1 << 31 // DYNPTR_RDONLY_BIT
	DynptrOffSize   = 8       // offsetof(struct bpf_dynptr_kern, size)
	DynptrOffOffset = 12      // offsetof(struct bpf_dynptr_kern, offset)
)

// DynptrTypeName is dynptr_type_str.
func DynptrTypeName(t uint8) string {
	switch t {
	case DynptrTypeLocal:
		return "local"
	case DynptrTypeRingbuf:
		return "ringbuf"
	case DynptrTypeSKB:
		return "skb"
	case DynptrTypeXDP:
		return "xdp"
	}
	return "<invalid>"
}
