package uapi

// struct_ops map flags and the bpf() command of program association
// (include/uapi/linux/bpf.h).
const (
	// BPF_F_LINK makes a struct_ops map that is attached through a
	// struct_ops link instead of by its update.
	BPF_F_LINK = 1 << 13
	// BPF_F_VTYPE_BTF_OBJ_FD says btf_vmlinux_value_type_id is a type of
	// the module BTF in value_type_btf_obj_fd.
	BPF_F_VTYPE_BTF_OBJ_FD = 1 << 15

	// BPF_PROG_ASSOC_STRUCT_OPS is bpf() command 38.
	BPF_PROG_ASSOC_STRUCT_OPS = 38
)

// Error numbers only struct_ops returns.
const (
	ENOLINK     Errno = 67
	EINPROGRESS Errno = 115
)
