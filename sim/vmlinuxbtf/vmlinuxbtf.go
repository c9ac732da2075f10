// Package vmlinuxbtf holds the types of the simulated kernel's vmlinux BTF
// (/sys/kernel/btf/vmlinux; kernel/bpf/btf.c's btf_vmlinux): the ones a
// program's CO-RE relocations meet in practice, and whose layout bpfsim
// simulates.
//
// A program compiled against vmlinux.h (bpftool btf dump ... format c)
// reaches every struct through preserve_access_index, so even ctx->data of
// an XDP program is a CO-RE field relocation, which the loader resolves
// against the kernel's BTF before the verifier sees the program (libbpf's
// bpf_core_apply_relo, cilium/ebpf's btf.CORERelocate). These types are
// the kernel's, as Linux 6.18 on x86-64 describes them: the UAPI context
// structures (include/uapi/linux/bpf.h) and the enums programs probe with
// bpf_core_enum_value_exists, x86-64's struct pt_regs, and arm64's struct
// user_pt_regs, which bpf_tracing.h reads for __TARGET_ARCH_arm64. Kernel
// internals (task_struct, sk_buff...) are not here: bpfsim does not
// simulate their layout, so a relocation against them fails as against a
// kernel without the type.
//
// vmlinux.btf is generated from this machine's kernel by gen.go
// (go generate), which keeps Names and nothing else; a test compares every
// type with the running kernel's.
package vmlinuxbtf

import (
	"bytes"
	_ "embed"
	"sync"

	"github.com/cilium/ebpf/btf"
	"github.com/pkg/errors"
)

//go:generate go run gen.go

// Names are the types gen.go takes from the kernel's BTF, with what they
// refer to.
var Names = []string{
	// Program contexts and the structures they point to.
	"__sk_buff", "xdp_md", "bpf_sock", "bpf_flow_keys", "bpf_sock_tuple",
	"bpf_raw_tracepoint_args", "pt_regs",
	// Map value and helper argument structures.
	"bpf_spin_lock", "bpf_timer", "bpf_perf_event_value", "bpf_devmap_val",
	"bpf_cpumap_val", "bpf_fib_lookup", "bpf_tunnel_key", "bpf_dynptr",
	// Kfunc argument structures.
	"bpf_iter_num", "bpf_iter_bits",
	// Enums that programs probe.
	"bpf_func_id", "bpf_map_type", "bpf_prog_type", "bpf_attach_type",
	"xdp_action",
}

// Arm64Names are the types gen.go makes for arm64, whose kernel is not the
// one it reads: struct user_pt_regs (arch/arm64/include/uapi/asm/ptrace.h).
var Arm64Names = []string{"user_pt_regs"}

//go:embed vmlinux.btf
var raw []byte

var (
	once   sync.Once
	parsed *btf.Spec
	err    error
)

// Spec returns a copy of the types, which the caller may change.
func Spec() (*btf.Spec, error) {
	once.Do(func() {
		parsed, err = btf.LoadSpecFromReader(bytes.NewReader(raw))
		err = errors.Wrap(err, "parsing the embedded vmlinux BTF")
	})
	if err != nil {
		return nil, err
	}
	return parsed.Copy(), nil
}

// Types returns copies of the named types (Names and Arm64Names), in that
// order; what they refer to comes with them.
func Types() ([]btf.Type, error) {
	s, err := Spec()
	if err != nil {
		return nil, err
	}
	var out []btf.Type
	for _, name := range append(append([]string(nil), Names...), Arm64Names...) {
		t, err := TypeByName(s, name)
		if err != nil {
			return nil, errors.Wrap(err, "embedded vmlinux BTF")
		}
		out = append(out, t)
	}
	return out, nil
}

// TypeByName finds the struct, union, enum or typedef called name in s:
// a function may have the same name (bpf_spin_lock is both).
func TypeByName(s *btf.Spec, name string) (btf.Type, error) {
	ts, err := s.AnyTypesByName(name)
	if err != nil {
		return nil, errors.Wrap(err, name)
	}
	for _, t := range ts {
		switch t.(type) {
		case *btf.Struct, *btf.Union, *btf.Enum, *btf.Typedef:
			return t, nil
		}
	}
	return nil, errors.Errorf("%s: no struct, union, enum or typedef of that name", name)
}

// Raw returns vmlinux.btf: the types as raw BTF, in the numbering of the
// kernel they were taken from, for tools that work on raw BTF.
func Raw() []byte { return append([]byte(nil), raw...) }
