package sim

import (
	"github.com/cilium/ebpf/btf"

	"github.com/bpfsim/bpfsim/sim/interp"
)

// bpf_rcu_read_lock and bpf_rcu_read_unlock (kernel/bpf/helpers.c): a
// sleepable program's RCU read section, in which the objects it reads
// out of trusted ones through RCU-protected fields are rcu_ptr_ rather
// than untrusted, and the open-coded task iterator may be made. The
// verifier counts them (verifier/kfunc.go); at run time they do nothing
// here: a program's whole run is one RCU read section for bpfsim's RCU
// (rcu.go), sleepable or not.
func init() {
	noop := func(*Kernel) func(m *interp.Machine, r1, r2, r3, r4, r5 uint64) (uint64, error) {
		return func(*interp.Machine, uint64, uint64, uint64, uint64, uint64) (uint64, error) { return 0, nil }
	}
	void := func(func(string) btf.Type) *btf.FuncProto { return &btf.FuncProto{Return: (*btf.Void)(nil)} }
	builtinKfuncs["bpf_rcu_read_lock"] = &builtinKfunc{proto: void, fn: noop}
	builtinKfuncs["bpf_rcu_read_unlock"] = &builtinKfunc{proto: void, fn: noop}
}
