package kdiff

import (
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// The values of the spin lock maps: struct val { u32 cnt; struct
// bpf_spin_lock l; }, the lock at offset 4 as in the kernel's selftests.
var (
	btfU32      = &btf.Int{Name: "unsigned int", Size: 4}
	btfSpinLock = &btf.Struct{Name: "bpf_spin_lock", Size: 4, Members: []btf.Member{{Name: "val", Type: btfU32}}}
	btfLockVal  = &btf.Struct{Name: "val", Size: 8, Members: []btf.Member{
		{Name: "cnt", Type: btfU32},
		{Name: "l", Type: btfSpinLock, Offset: 32},
	}}
	btfPlainVal = &btf.Struct{Name: "plain", Size: 8, Members: []btf.Member{
		{Name: "a", Type: btfU32},
		{Name: "b", Type: btfU32, Offset: 32},
	}}
)

// spinLockMaps are the maps the spin lock programs use, by the names
// their instructions refer to (and the kernel's messages quote).
var spinLockMaps = map[string]*ebpf.MapSpec{
	"lockarr":  {Name: "lockarr", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 2, Key: btfU32, Value: btfLockVal},
	"lockarr2": {Name: "lockarr2", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1, Key: btfU32, Value: btfLockVal},
	"lockhash": {Name: "lockhash", Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 4, Key: btfU32, Value: btfLockVal},
	"plain":    {Name: "plain", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1, Key: btfU32, Value: btfPlainVal},
	"nobtf":    {Name: "nobtf", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1},
	"progs":    {Name: "progs", Type: ebpf.ProgramArray, KeySize: 4, ValueSize: 4, MaxEntries: 1},
}

// lookupKey looks up key in map m: R0 is the value or NULL.
func lookupKey(m string, key int32) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Imm(asm.R1, key),
		asm.StoreMem(asm.RFP, -4, asm.R1, asm.Word),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.LoadMapPtr(asm.R1, 0).WithReference(m),
		asm.FnMapLookupElem.Call(),
	}
}

// lockAt calls fn (bpf_spin_lock or bpf_spin_unlock) on reg+off.
func lockAt(fn asm.BuiltinFunc, reg asm.Register, off int32) asm.Instructions {
	return asm.Instructions{asm.Mov.Reg(asm.R1, reg), asm.Add.Imm(asm.R1, off), fn.Call()}
}

var (
	lock6   = lockAt(asm.FnSpinLock, asm.R6, 4)
	unlock6 = lockAt(asm.FnSpinUnlock, asm.R6, 4)
	// bump6 adds 1 to the value's counter.
	bump6 = asm.Instructions{
		asm.LoadMem(asm.R2, asm.R6, 0, asm.Word),
		asm.Add.Imm(asm.R2, 1),
		asm.StoreMem(asm.R6, 0, asm.R2, asm.Word),
	}
)

// spinLockCase is a program that takes a map value's bpf_spin_lock, with
// a way of keeping or breaking the verifier's rules for it.
type spinLockCase struct {
	name  string
	typ   ebpf.ProgramType
	errno uapi.Errno
	msg   string
	insns asm.Instructions
}

// spinLockCases: errno and msg are what this machine's kernel (Linux
// 6.18) answered; TestSpinLockRulesAreTheKernels asks it again where it
// can.
var spinLockCases = []spinLockCase{
	{"lock, count and unlock", ebpf.XDP, 0, "", seq(lookupKey("lockarr", 0), nullOut, lock6, bump6, unlock6, exit0)},
	{"lock a hash value", ebpf.XDP, 0, "", seq(lookupKey("lockhash", 0), nullOut, lock6, bump6, unlock6, exit0)},
	{"lock an array value without a null check (a constant key)", ebpf.XDP, 0, "", seq(asm.Instructions{
		asm.StoreImm(asm.RFP, -4, 0, asm.Word), asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, -4),
		asm.LoadMapPtr(asm.R1, 0).WithReference("lockarr"), asm.FnMapLookupElem.Call(), asm.Mov.Reg(asm.R6, asm.R0)},
		lock6, bump6, unlock6, exit0)},
	{"lock through a copy made before the null check", ebpf.XDP, 0, "", seq(lookupKey("lockhash", 0),
		asm.Instructions{asm.Mov.Reg(asm.R7, asm.R0), asm.JEq.Imm(asm.R0, 0, "out"), asm.Mov.Reg(asm.R6, asm.R0)},
		lockAt(asm.FnSpinLock, asm.R7, 4), bump6, unlock6, exit0)},
	{"tc program", ebpf.SchedCLS, 0, "", seq(lookupKey("lockarr", 0), nullOut, lock6, bump6, unlock6, exit0)},
	{"the unlock is missing", ebpf.XDP, uapi.EINVAL, "BPF_EXIT instruction in main prog cannot be used inside bpf_spin_lock-ed region",
		seq(lookupKey("lockarr", 0), nullOut, lock6, bump6, exit0)},
	{"the unlock is missing on one path", ebpf.XDP, uapi.EINVAL, "BPF_EXIT instruction in main prog cannot be used inside bpf_spin_lock-ed region",
		seq(lookupKey("lockarr", 0), nullOut, lock6, asm.Instructions{
			asm.LoadMem(asm.R2, asm.R6, 0, asm.Word), asm.JEq.Imm(asm.R2, 0, "out")}, unlock6, exit0)},
	{"lock and unlock under the same condition", ebpf.XDP, 0, "", seq(
		asm.Instructions{asm.FnGetPrandomU32.Call(), asm.Mov.Reg(asm.R8, asm.R0)},
		lookupKey("lockarr", 0), nullOut,
		asm.Instructions{asm.JEq.Imm(asm.R8, 0, "skip1")}, lock6,
		asm.Instructions{asm.Mov.Imm(asm.R2, 1).WithSymbol("skip1"), asm.JEq.Imm(asm.R8, 0, "out")}, unlock6, exit0)},
	{"a bounded loop under the lock", ebpf.XDP, 0, "", seq(lookupKey("lockarr", 0), nullOut, lock6,
		asm.Instructions{asm.Mov.Imm(asm.R8, 0)},
		label("loop", bump6), asm.Instructions{asm.Add.Imm(asm.R8, 1), asm.JLT.Imm(asm.R8, 4, "loop")},
		unlock6, exit0)},
	{"a helper call under the lock", ebpf.XDP, uapi.EINVAL, "function calls are not allowed while holding a lock",
		seq(lookupKey("lockarr", 0), nullOut, lock6, asm.Instructions{asm.FnKtimeGetNs.Call()}, unlock6, exit0)},
	{"a tail call under the lock", ebpf.XDP, uapi.EINVAL, "function calls are not allowed while holding a lock",
		seq(lookupKey("lockarr", 0), nullOut, lock6, asm.Instructions{
			asm.Mov.Reg(asm.R1, asm.R6), asm.LoadMapPtr(asm.R2, 0).WithReference("progs"), asm.Mov.Imm(asm.R3, 0), asm.FnTailCall.Call()},
			unlock6, exit0)},
	{"a legacy packet load under the lock", ebpf.SchedCLS, uapi.EINVAL, "BPF_LD_[ABS|IND] cannot be used inside bpf_spin_lock-ed region",
		seq(asm.Instructions{asm.Mov.Reg(asm.R9, asm.R1)}, lookupKey("lockarr", 0), nullOut, lock6,
			asm.Instructions{asm.Mov.Reg(asm.R6, asm.R9), asm.LoadAbs(0, asm.Byte)}, exit0)},
	// The second bpf_spin_lock is a call under the first lock: do_check
	// refuses it before process_spin_lock could say "Locking two
	// bpf_spin_locks are not allowed".
	{"two locks at once", ebpf.XDP, uapi.EINVAL, "function calls are not allowed while holding a lock",
		seq(lookupKey("lockarr", 0), nullOut, lookupKey("lockarr2", 0), asm.Instructions{asm.JEq.Imm(asm.R0, 0, "out"), asm.Mov.Reg(asm.R7, asm.R0)},
			lock6, lockAt(asm.FnSpinLock, asm.R7, 4), exit0)},
	{"the same lock twice", ebpf.XDP, uapi.EINVAL, "function calls are not allowed while holding a lock",
		seq(lookupKey("lockarr", 0), nullOut, lock6, lock6, exit0)},
	{"an unlock without a lock", ebpf.XDP, uapi.EINVAL, "bpf_spin_unlock without taking a lock",
		seq(lookupKey("lockarr", 0), nullOut, unlock6, exit0)},
	{"unlock another value's lock", ebpf.XDP, uapi.EINVAL, "bpf_spin_unlock of different lock",
		seq(lookupKey("lockhash", 0), nullOut, lookupKey("lockhash", 1), asm.Instructions{asm.JEq.Imm(asm.R0, 0, "out"), asm.Mov.Reg(asm.R7, asm.R0)},
			lock6, lockAt(asm.FnSpinUnlock, asm.R7, 4), exit0)},
	{"unlock the same value of another map", ebpf.XDP, uapi.EINVAL, "bpf_spin_unlock of different lock",
		seq(lookupKey("lockarr", 0), nullOut, lookupKey("lockarr2", 0), asm.Instructions{asm.JEq.Imm(asm.R0, 0, "out"), asm.Mov.Reg(asm.R7, asm.R0)},
			lock6, lockAt(asm.FnSpinUnlock, asm.R7, 4), exit0)},
	{"the lock is not at that offset", ebpf.XDP, uapi.EINVAL, "off 0 doesn't point to 'struct bpf_spin_lock' that is at 4",
		seq(lookupKey("lockarr", 0), nullOut, lockAt(asm.FnSpinLock, asm.R6, 0), exit0)},
	{"a variable offset", ebpf.XDP, uapi.EINVAL, "R1 doesn't have constant offset. bpf_spin_lock has to be at the constant offset",
		seq(asm.Instructions{asm.FnGetPrandomU32.Call(), asm.And.Imm(asm.R0, 4), asm.Mov.Reg(asm.R8, asm.R0)},
			lookupKey("lockarr", 0), nullOut, asm.Instructions{asm.Mov.Reg(asm.R1, asm.R6), asm.Add.Reg(asm.R1, asm.R8), asm.FnSpinLock.Call()}, exit0)},
	{"a map whose value has no lock", ebpf.XDP, uapi.EINVAL, "map 'plain' has no valid bpf_spin_lock",
		seq(lookupKey("plain", 0), nullOut, lock6, unlock6, exit0)},
	{"a map without BTF", ebpf.XDP, uapi.EINVAL, "map 'nobtf' has to have BTF in order to use bpf_spin_lock",
		seq(lookupKey("nobtf", 0), nullOut, lock6, unlock6, exit0)},
	{"a pointer that may be NULL", ebpf.XDP, uapi.EACCES, "R1 type=map_value_or_null expected=map_value, ptr_",
		seq(lookupKey("lockhash", 0), asm.Instructions{asm.Mov.Reg(asm.R1, asm.R0), asm.FnSpinLock.Call()}, exit0)},
	{"a stack pointer", ebpf.XDP, uapi.EACCES, "R1 type=fp expected=map_value, ptr_",
		seq(asm.Instructions{asm.Mov.Imm(asm.R2, 0), asm.StoreMem(asm.RFP, -8, asm.R2, asm.DWord)}, lockAt(asm.FnSpinLock, asm.RFP, -4), exit0)},
	{"a load of the lock", ebpf.XDP, uapi.EACCES, "bpf_spin_lock cannot be accessed directly by load/store",
		seq(lookupKey("lockarr", 0), nullOut, asm.Instructions{asm.LoadMem(asm.R2, asm.R6, 4, asm.Word)}, exit0)},
	{"a store to the lock", ebpf.XDP, uapi.EACCES, "bpf_spin_lock cannot be accessed directly by load/store",
		seq(lookupKey("lockarr", 0), nullOut, asm.Instructions{asm.StoreImm(asm.R6, 4, 0, asm.Word)}, exit0)},
	{"a wide load over the lock", ebpf.XDP, uapi.EACCES, "bpf_spin_lock cannot be accessed directly by load/store",
		seq(lookupKey("lockarr", 0), nullOut, asm.Instructions{asm.LoadMem(asm.R2, asm.R6, 0, asm.DWord)}, exit0)},
	{"a load at a variable offset that may reach the lock", ebpf.XDP, uapi.EACCES, "bpf_spin_lock cannot be accessed directly by load/store",
		seq(asm.Instructions{asm.FnGetPrandomU32.Call(), asm.And.Imm(asm.R0, 4), asm.Mov.Reg(asm.R8, asm.R0)},
			lookupKey("lockarr", 0), nullOut, asm.Instructions{asm.Add.Reg(asm.R6, asm.R8), asm.LoadMem(asm.R2, asm.R6, 0, asm.Word)}, exit0)},
	{"a helper reads the value with its lock", ebpf.XDP, uapi.EACCES, "bpf_spin_lock cannot be accessed directly by load/store",
		seq(lookupKey("lockarr", 0), nullOut, asm.Instructions{
			asm.Mov.Reg(asm.R3, asm.R6), asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, -4),
			asm.LoadMapPtr(asm.R1, 0).WithReference("lockarr"), asm.Mov.Imm(asm.R4, 0), asm.FnMapUpdateElem.Call()}, exit0)},
	{"a socket filter uses a map with a lock", ebpf.SocketFilter, uapi.EINVAL, "socket filter progs cannot use bpf_spin_lock yet",
		seq(lookupKey("lockarr", 0), exit0)},
	{"a kprobe uses a map with a lock", ebpf.Kprobe, uapi.EINVAL, "tracing progs cannot use bpf_spin_lock yet",
		seq(lookupKey("lockarr", 0), exit0)},
	{"a static function runs under the lock", ebpf.XDP, 0, "", seq(lookupKey("lockarr", 0), nullOut, lock6,
		asm.Instructions{asm.Mov.Reg(asm.R1, asm.R6), asm.Call.Label("bump")}, unlock6, exit0,
		label("bump", asm.Instructions{asm.LoadMem(asm.R2, asm.R1, 0, asm.Word), asm.Add.Imm(asm.R2, 1),
			asm.StoreMem(asm.R1, 0, asm.R2, asm.Word), asm.Mov.Imm(asm.R0, 0), asm.Return()}))},
	{"a static function releases the caller's lock", ebpf.XDP, 0, "", seq(lookupKey("lockarr", 0), nullOut, lock6,
		asm.Instructions{asm.Mov.Reg(asm.R1, asm.R6), asm.Call.Label("release")}, exit0,
		label("release", asm.Instructions{asm.Add.Imm(asm.R1, 4), asm.FnSpinUnlock.Call(), asm.Mov.Imm(asm.R0, 0), asm.Return()}))},
	{"a static function returns with its lock held", ebpf.XDP, 0, "", seq(lookupKey("lockarr", 0), nullOut,
		asm.Instructions{asm.Mov.Reg(asm.R1, asm.R6), asm.Call.Label("take")}, unlock6, exit0,
		label("take", asm.Instructions{asm.Add.Imm(asm.R1, 4), asm.FnSpinLock.Call(), asm.Mov.Imm(asm.R0, 0), asm.Return()}))},
	{"a static function calls a helper under the caller's lock", ebpf.XDP, uapi.EINVAL, "function calls are not allowed while holding a lock",
		seq(lookupKey("lockarr", 0), nullOut, lock6,
			asm.Instructions{asm.Call.Label("f")}, unlock6, exit0,
			label("f", asm.Instructions{asm.FnKtimeGetNs.Call(), asm.Mov.Imm(asm.R0, 0), asm.Return()}))},
}

// spinLockSpec is the program of a case, with its maps' fds.
func spinLockSpec(t testing.TB, c spinLockCase, fds map[string]int) *ebpf.ProgramSpec {
	spec := ringbufRefSpec(t, c.insns, fds)
	spec.Type = c.typ
	return spec
}

// bpfsim's verifier gives each spin lock program the verdict the kernel
// gave it: this runs on any machine.
func TestSpinLockVerdicts(t *testing.T) {
	k, err := sim.NewKernel(nil)
	if err != nil {
		t.Fatal(err)
	}
	fds := map[string]int{}
	for name, spec := range spinLockMaps {
		m, err := k.NewMap(spec)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		fds[name] = m.FD()
	}
	for _, c := range spinLockCases {
		t.Run(c.name, func(t *testing.T) {
			wantVerdict(t, k, spinLockSpec(t, c, fds), c.errno, c.msg)
		})
	}
}
