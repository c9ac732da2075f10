package kdiff

import (
	"os"
	"runtime"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// taskStorageMapSpec is a task storage map of 8-byte values with key
// type key.
func taskStorageMapSpec(flags, maxEntries, valueSize uint32, key btf.Type) *ebpf.MapSpec {
	return &ebpf.MapSpec{Type: ebpf.TaskStorage, KeySize: 4, ValueSize: valueSize, Flags: flags, MaxEntries: maxEntries,
		Key:   key,
		Value: &btf.Array{Type: &btf.Int{Name: "char", Size: 1, Encoding: btf.Char}, Index: &btf.Int{Name: "int", Size: 4}, Nelems: valueSize}}
}

// Task storage maps created with good and bad attributes in this machine's
// kernel and in bpfsim: the same errno for each.
func TestTaskStorageCreationIsTheKernels(t *testing.T) {
	k := linuxLikeSim(t)
	u32 := &btf.Int{Name: "unsigned int", Size: 4}
	for _, c := range []struct {
		name string
		spec *ebpf.MapSpec
	}{
		{"good", taskStorageMapSpec(uapi.BPF_F_NO_PREALLOC, 0, 8, btfInt)},
		{"BPF_F_CLONE", taskStorageMapSpec(uapi.BPF_F_NO_PREALLOC|uapi.BPF_F_CLONE, 0, 8, btfInt)},
		{"an unsigned key", taskStorageMapSpec(uapi.BPF_F_NO_PREALLOC, 0, 8, u32)},
		{"the largest value", taskStorageMapSpec(uapi.BPF_F_NO_PREALLOC, 0, 65407, btfInt)},
		{"a value too large", taskStorageMapSpec(uapi.BPF_F_NO_PREALLOC, 0, 65408, btfInt)},
		{"no BPF_F_NO_PREALLOC", taskStorageMapSpec(0, 0, 8, btfInt)},
		{"max_entries", taskStorageMapSpec(uapi.BPF_F_NO_PREALLOC, 1, 8, btfInt)},
		{"BPF_F_RDONLY_PROG", taskStorageMapSpec(uapi.BPF_F_NO_PREALLOC|uapi.BPF_F_RDONLY_PROG, 0, 8, btfInt)},
		{"no BTF", &ebpf.MapSpec{Type: ebpf.TaskStorage, KeySize: 4, ValueSize: 8, Flags: uapi.BPF_F_NO_PREALLOC}},
		{"an 8-byte key", &ebpf.MapSpec{Type: ebpf.TaskStorage, KeySize: 8, ValueSize: 8, Flags: uapi.BPF_F_NO_PREALLOC,
			Key: &btf.Int{Name: "long int", Size: 8, Encoding: btf.Signed}, Value: &btf.Int{Name: "long int", Size: 8}}},
		{"a struct key", &ebpf.MapSpec{Type: ebpf.TaskStorage, KeySize: 4, ValueSize: 8, Flags: uapi.BPF_F_NO_PREALLOC,
			Key: &btf.Struct{Name: "k", Size: 4, Members: []btf.Member{{Name: "fd", Type: btfInt}}}, Value: &btf.Int{Name: "long int", Size: 8}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			km, kerr := ebpf.NewMap(c.spec)
			if kerr == nil {
				km.Close()
			}
			sm, serr := k.NewMap(c.spec)
			if serr == nil {
				sm.Close()
			}
			if errnoOf(kerr) != errnoOf(serr) {
				t.Fatalf("kernel: %v\nbpfsim: %v", kerr, serr)
			}
		})
	}
}

// taskCounterInsns adds 5 to the running task's value in the task storage
// map fd, made from 10 at fp-8 (or NULL, zeros) with flags' create, and
// returns 7; 0 when it gets no value.
func taskCounterInsns(fd int, flags int32, init bool) []insn.Insn {
	p := []insn.Insn{callHelper(funcGetCurrentTaskBTF), {Code: insn.ALU64 | insn.MOV | insn.X, Dst: insn.R2, Src: insn.R0}}
	if init {
		p = append(p, movImm(insn.R3, 10), insn.Insn{Code: insn.STX | insn.MEM | insn.DW, Dst: insn.R10, Src: insn.R3, Off: -8})
		p = append(p, fpPlus(insn.R3, -8)...)
	} else {
		p = append(p, movImm(insn.R3, 0))
	}
	p = append(p, lddwMap(insn.R1, fd)...)
	return append(p,
		movImm(insn.R4, flags),
		callHelper(uapi.FuncTaskStorageGet),
		insn.Insn{Code: insn.JMP | insn.JEQ | insn.K, Dst: insn.R0, Off: 5},
		insn.Insn{Code: insn.LDX | insn.MEM | insn.DW, Dst: insn.R1, Src: insn.R0},
		insn.Insn{Code: insn.ALU64 | insn.ADD | insn.K, Dst: insn.R1, Imm: 5},
		insn.Insn{Code: insn.STX | insn.MEM | insn.DW, Dst: insn.R0, Src: insn.R1},
		movImm(insn.R0, 7),
		insn.Insn{Code: insn.JMP | insn.EXIT},
		movImm(insn.R0, 0),
		insn.Insn{Code: insn.JMP | insn.EXIT},
	)
}

// taskDeleterInsns deletes the running task's value and returns what
// bpf_task_storage_delete returned.
func taskDeleterInsns(fd int) []insn.Insn {
	p := []insn.Insn{callHelper(funcGetCurrentTaskBTF), {Code: insn.ALU64 | insn.MOV | insn.X, Dst: insn.R2, Src: insn.R0}}
	p = append(p, lddwMap(insn.R1, fd)...)
	return append(p, callHelper(uapi.FuncTaskStorageDelete), insn.Insn{Code: insn.JMP | insn.EXIT})
}

const funcGetCurrentTaskBTF = 158

// The same steps on a task storage map in this machine's kernel and in
// bpfsim: raw tracepoint programs test-run in the asking task getting,
// creating (from a value or zeros), incrementing and deleting its value,
// and user space reading, writing and deleting it through a pidfd of the
// task, with every flag and a bad fd. Return values, errnos and the
// values read are the kernel's, interpreted and JITed; so is the xlated
// code of a get, with the gfp_t the fix-up passes in r5.
func TestTaskStorageIsTheKernels(t *testing.T) {
	for _, jit := range []bool{false, true} {
		name := "interpreted"
		if jit {
			name = "JITed"
		}
		t.Run(name, func(t *testing.T) { taskStorageSteps(t, jit) })
	}
}

func taskStorageSteps(t *testing.T, jit bool) {
	if _, err := OpenKernel(); err != nil {
		t.Skipf("skipped: this machine cannot load BPF programs: %v", err)
	}
	rt := sim.RuntimeInterpreter
	if jit {
		rt = sim.RuntimeJIT
	}
	k, err := sim.NewKernel(&sim.Options{Runtime: rt})
	if err != nil {
		t.Fatal(err)
	}
	// The kernel's test run runs in the asking thread: a pidfd of this
	// thread (PIDFD_THREAD) names the task whose value it makes.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	kfd, err := unix.PidfdOpen(unix.Gettid(), unix.O_EXCL)
	if err != nil {
		t.Skipf("skipped: pidfd_open of a thread: %v", err)
	}
	defer unix.Close(kfd)
	proc := k.InitProcess()
	sfd, err := proc.PidfdOpen(proc.PID(), 0)
	if err != nil {
		t.Fatal(err)
	}
	km, sm := mapsInBoth(t, k, taskStorageMapSpec(uapi.BPF_F_NO_PREALLOC, 0, 8, btfInt))

	run := func(t *stepT, prog func(fd int) []insn.Insn) {
		t.Helper()
		kp, err := ebpf.NewProgram(specOf(t.T, ebpf.RawTracepoint, prog(km.FD())))
		if err != nil {
			t.Fatal(err)
		}
		defer kp.Close()
		kret, kerr := kp.Run(&ebpf.RunOptions{})
		sp, err := k.NewProgram(specOf(t.T, ebpf.RawTracepoint, prog(sm.FD())))
		if err != nil {
			t.Fatal(err)
		}
		defer sp.Close()
		sret, serr := sp.Run(&sim.RunOptions{})
		if kret != sret || errnoOf(kerr) != errnoOf(serr) {
			t.Fatalf("kernel: %d, %v\nbpfsim: %d, %v", int32(kret), kerr, int32(sret), serr)
		}
	}
	// user compares a map operation through the pidfds and, if it
	// succeeds, the value read.
	user := func(t *stepT, op func(m ebpfMap, fd uint32) error, kfd, sfd uint32) {
		t.Helper()
		kerr, serr := op(km, kfd), op(sm, sfd)
		if errnoOf(kerr) != errnoOf(serr) {
			t.Fatalf("kernel: %v\nbpfsim: %v", kerr, serr)
		}
		var kv, sv uint64
		kerr, serr = km.Lookup(kfd, &kv), sm.Lookup(sfd, &sv)
		if errnoOf(kerr) != errnoOf(serr) || kv != sv {
			t.Fatalf("the value after: kernel %d, %v; bpfsim %d, %v", kv, kerr, sv, serr)
		}
	}
	update := func(v uint64, flags ebpf.MapUpdateFlags) func(ebpfMap, uint32) error {
		return func(m ebpfMap, fd uint32) error { return m.Update(fd, v, flags) }
	}
	del := func(m ebpfMap, fd uint32) error { return m.Delete(fd) }
	next := func(m ebpfMap, fd uint32) error { var out uint32; return m.NextKey(fd, &out) }
	counter := func(flags int32, init bool) func(int) []insn.Insn {
		return func(fd int) []insn.Insn { return taskCounterInsns(fd, flags, init) }
	}
	create := int32(uapi.BPF_LOCAL_STORAGE_GET_F_CREATE)
	for _, s := range []struct {
		name string
		do   func(t *stepT)
	}{
		{"a get finds no value", func(t *stepT) { run(t, counter(0, false)) }},
		{"a lookup finds none", func(t *stepT) { user(t, next, uint32(kfd), uint32(sfd)) }},
		{"an update of an existing value finds none", func(t *stepT) { user(t, update(1, ebpf.UpdateExist), uint32(kfd), uint32(sfd)) }},
		{"a get creates one from a value", func(t *stepT) { run(t, counter(create, true)) }},
		{"a get finds it", func(t *stepT) { run(t, counter(create, true)) }},
		{"a get with unknown flags gets nothing", func(t *stepT) { run(t, counter(2, true)) }},
		{"an update that wants none", func(t *stepT) { user(t, update(3, ebpf.UpdateNoExist), uint32(kfd), uint32(sfd)) }},
		{"an update of any", func(t *stepT) { user(t, update(40, ebpf.UpdateAny), uint32(kfd), uint32(sfd)) }},
		{"an update with BPF_F_LOCK and no lock", func(t *stepT) { user(t, update(3, ebpf.UpdateLock), uint32(kfd), uint32(sfd)) }},
		{"an update with unknown flags", func(t *stepT) { user(t, update(3, 8), uint32(kfd), uint32(sfd)) }},
		{"a get after the update", func(t *stepT) { run(t, counter(0, false)) }},
		{"a program deletes it", func(t *stepT) { run(t, taskDeleterInsns) }},
		{"a program deletes it again", func(t *stepT) { run(t, taskDeleterInsns) }},
		{"a get creates zeros", func(t *stepT) { run(t, counter(create, false)) }},
		{"user space deletes it", func(t *stepT) { user(t, del, uint32(kfd), uint32(sfd)) }},
		{"user space deletes it again", func(t *stepT) { user(t, del, uint32(kfd), uint32(sfd)) }},
		{"an fd that is not open", func(t *stepT) { user(t, update(1, ebpf.UpdateAny), 999, 999) }},
		{"an fd that is no pidfd", func(t *stepT) { user(t, update(1, ebpf.UpdateAny), uint32(km.FD()), uint32(sm.FD())) }},
		{"a get for a NULL task gets nothing", func(t *stepT) { run(t, nullTaskInsns(uapi.FuncTaskStorageGet)) }},
		{"a delete for a NULL task", func(t *stepT) { run(t, nullTaskInsns(uapi.FuncTaskStorageDelete)) }},
		{"the keys cannot be walked", func(t *stepT) {
			user(t, update(9, ebpf.UpdateAny), uint32(kfd), uint32(sfd))
			user(t, next, uint32(kfd), uint32(sfd))
		}},
	} {
		// Not a subtest: the kernel's runs must stay in the locked
		// thread.
		s.do(&stepT{T: t, name: s.name})
	}
	if !jit {
		sameXlated(t, k, loadInKernel(t, ebpf.RawTracepoint, taskCounterInsns(km.FD(), create, true)),
			loadInSim(t, k, ebpf.RawTracepoint, taskCounterInsns(sm.FD(), create, true)))
	}
}

// nullTaskInsns calls helper (get, with create, or delete) for a NULL
// task and returns what it returned.
func nullTaskInsns(helper int32) func(fd int) []insn.Insn {
	return func(fd int) []insn.Insn {
		p := []insn.Insn{movImm(insn.R2, 0), movImm(insn.R3, 0), movImm(insn.R4, uapi.BPF_LOCAL_STORAGE_GET_F_CREATE)}
		p = append(p, lddwMap(insn.R1, fd)...)
		return append(p, callHelper(helper), insn.Insn{Code: insn.JMP | insn.EXIT})
	}
}

// ebpfMap is what the steps use of a map, in the kernel or in bpfsim.
type ebpfMap interface {
	Lookup(key, value any) error
	Update(key, value any, flags ebpf.MapUpdateFlags) error
	Delete(key any) error
	NextKey(key, next any) error
}

// Programs misusing task storage, refused by this machine's kernel and by
// bpfsim with the same errno and whole log.
func TestTaskStorageRefusalsAreTheKernels(t *testing.T) {
	k := linuxLikeSim(t)
	km, sm := mapsInBoth(t, k, taskStorageMapSpec(uapi.BPF_F_NO_PREALLOC, 0, 8, btfInt))
	ka, sa := mapsInBoth(t, k, &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	ret0 := []insn.Insn{movImm(insn.R0, 0), {Code: insn.JMP | insn.EXIT}}
	task := []insn.Insn{callHelper(funcGetCurrentTaskBTF), {Code: insn.ALU64 | insn.MOV | insn.X, Dst: insn.R2, Src: insn.R0}}
	zeroAt8 := []insn.Insn{movImm(insn.R1, 0), {Code: insn.STX | insn.MEM | insn.DW, Dst: insn.R10, Src: insn.R1, Off: -8}}
	cat := func(parts ...[]insn.Insn) []insn.Insn {
		var out []insn.Insn
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	for _, c := range []struct {
		name string
		prog func(storage, array int) []insn.Insn
	}{
		{"a NULL task", func(s, _ int) []insn.Insn {
			return cat([]insn.Insn{movImm(insn.R2, 0), movImm(insn.R3, 0), movImm(insn.R4, 0)}, lddwMap(insn.R1, s),
				[]insn.Insn{callHelper(uapi.FuncTaskStorageGet)}, ret0)
		}},
		{"a stack pointer for the task", func(s, _ int) []insn.Insn {
			return cat(zeroAt8, fpPlus(insn.R2, -8), []insn.Insn{movImm(insn.R3, 0), movImm(insn.R4, 0)}, lddwMap(insn.R1, s),
				[]insn.Insn{callHelper(uapi.FuncTaskStorageGet)}, ret0)
		}},
		{"an initial value smaller than the map's", func(s, _ int) []insn.Insn {
			return cat(zeroAt8, task, fpPlus(insn.R3, -4), []insn.Insn{movImm(insn.R4, 1)}, lddwMap(insn.R1, s),
				[]insn.Insn{callHelper(uapi.FuncTaskStorageGet)}, ret0)
		}},
		{"a value used without a NULL test", func(s, _ int) []insn.Insn {
			return cat(task, []insn.Insn{movImm(insn.R3, 0), movImm(insn.R4, 1)}, lddwMap(insn.R1, s),
				[]insn.Insn{callHelper(uapi.FuncTaskStorageGet), {Code: insn.LDX | insn.MEM | insn.DW, Dst: insn.R0, Src: insn.R0}, {Code: insn.JMP | insn.EXIT}})
		}},
		{"a write past the value", func(s, _ int) []insn.Insn {
			return cat(task, []insn.Insn{movImm(insn.R3, 0), movImm(insn.R4, 1)}, lddwMap(insn.R1, s),
				[]insn.Insn{callHelper(uapi.FuncTaskStorageGet),
					{Code: insn.JMP | insn.JEQ | insn.K, Dst: insn.R0, Off: 1},
					{Code: insn.ST | insn.MEM | insn.DW, Dst: insn.R0, Off: 8, Imm: 1}}, ret0)
		}},
		{"a lookup in task storage", func(s, _ int) []insn.Insn {
			return cat(zeroAt8, fpPlus(insn.R2, -8), lddwMap(insn.R1, s), []insn.Insn{callHelper(uapi.FuncMapLookupElem)}, ret0)
		}},
		{"task storage get on an array", func(_, a int) []insn.Insn {
			return cat(task, []insn.Insn{movImm(insn.R3, 0), movImm(insn.R4, 0)}, lddwMap(insn.R1, a),
				[]insn.Insn{callHelper(uapi.FuncTaskStorageGet)}, ret0)
		}},
		{"a delete of a NULL task", func(s, _ int) []insn.Insn {
			return cat([]insn.Insn{movImm(insn.R2, 0)}, lddwMap(insn.R1, s), []insn.Insn{callHelper(uapi.FuncTaskStorageDelete)}, ret0)
		}},
		{"a get and a delete that pass", func(s, _ int) []insn.Insn {
			return cat(task, []insn.Insn{movImm(insn.R3, 0), movImm(insn.R4, 0)}, lddwMap(insn.R1, s),
				[]insn.Insn{callHelper(uapi.FuncTaskStorageGet)}, task, lddwMap(insn.R1, s),
				[]insn.Insn{callHelper(uapi.FuncTaskStorageDelete)}, ret0)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			kspec := specOf(t, ebpf.SchedCLS, c.prog(km.FD(), ka.FD()))
			sspec := specOf(t, ebpf.SchedCLS, c.prog(sm.FD(), sa.FD()))
			kerr, serr, klog, slog := loadBothLogged(t, k, kspec, sspec)
			if errnoOf(kerr) != errnoOf(serr) || verifierMessage(kerr) != verifierMessage(serr) {
				t.Fatalf("verdicts differ\nkernel: %v: %s\nbpfsim: %v: %s", errnoOf(kerr), verifierMessage(kerr), errnoOf(serr), verifierMessage(serr))
			}
			if a, b := refLog(klog), refLog(slog); a != b {
				t.Errorf("logs differ\nkernel:\n%s\nbpfsim:\n%s", a, b)
			}
			t.Logf("%v %s", errnoOf(kerr), verifierMessage(kerr))
		})
	}
}

// stepT names a step in the failures it reports.
type stepT struct {
	*testing.T
	name string
}

func (s *stepT) Fatalf(format string, args ...any) {
	s.T.Helper()
	s.T.Fatalf("%s: "+format, append([]any{s.name}, args...)...)
}

// A tc program getting (creating once) and incrementing its task's value,
// run repeatedly: bpfsim interpreted and JITed, and this machine's kernel,
// in the same run.
func BenchmarkTaskStorageGet(b *testing.B) {
	create := int32(uapi.BPF_LOCAL_STORAGE_GET_F_CREATE)
	pkt := make([]byte, 64)
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		name := map[sim.Runtime]string{sim.RuntimeInterpreter: "bpfsim", sim.RuntimeJIT: "bpfsim-jit"}[rt]
		b.Run(name, func(b *testing.B) {
			k, err := sim.NewKernel(&sim.Options{Runtime: rt})
			if err != nil {
				b.Fatal(err)
			}
			m, err := k.NewMap(taskStorageMapSpec(uapi.BPF_F_NO_PREALLOC, 0, 8, btfInt))
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			p, err := k.NewProgram(specOf(b, ebpf.SchedCLS, taskCounterInsns(m.FD(), create, false)))
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			b.ResetTimer()
			if _, err := p.Test(&sim.RunOptions{Data: pkt, Repeat: uint32(b.N)}); err != nil {
				b.Fatal(err)
			}
		})
	}
	b.Run("kernel", func(b *testing.B) {
		if _, err := OpenKernel(); err != nil {
			b.Skipf("skipped: this machine cannot load BPF programs: %v", err)
		}
		m, err := ebpf.NewMap(taskStorageMapSpec(uapi.BPF_F_NO_PREALLOC, 0, 8, btfInt))
		if err != nil {
			b.Fatal(err)
		}
		defer m.Close()
		p, err := ebpf.NewProgram(specOf(b, ebpf.SchedCLS, taskCounterInsns(m.FD(), create, false)))
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		b.ResetTimer()
		if _, err := p.Run(&ebpf.RunOptions{Data: pkt, Repeat: uint32(b.N)}); err != nil {
			b.Fatal(err)
		}
	})
}

// taskByPidInsns finds task pid with bpf_task_from_pid and returns
// 0xdead if there is none; else, with storage (a task storage map's fd, or 0 for
// none) it adds 5 to the task's value, made from zeros, and it returns
// field off (a u32, read through the reference, or through real_parent
// at parentOff when that is not 0) before releasing the task; 0xdead
// when it finds none.
func taskByPidInsns(call func(string) asm.Instruction, pid int32, storage int, off, parentOff int16) asm.Instructions {
	p := asm.Instructions{
		asm.Mov.Imm(asm.R1, pid),
		call("bpf_task_from_pid"),
		asm.Mov.Reg(asm.R6, asm.R0),
		asm.JNE.Imm(asm.R6, 0, "found"),
		asm.Mov.Imm(asm.R0, 0xdead),
		asm.Return(),
		asm.Mov.Reg(asm.R8, asm.R6).WithSymbol("found"),
	}
	if parentOff != 0 {
		p = append(p, asm.LoadMem(asm.R8, asm.R6, parentOff, asm.DWord))
	}
	p = append(p, asm.LoadMem(asm.R7, asm.R8, off, asm.Word))
	if storage != 0 {
		p = append(p,
			asm.LoadMapPtr(asm.R1, storage),
			asm.Mov.Reg(asm.R2, asm.R6),
			asm.Mov.Imm(asm.R3, 0),
			asm.Mov.Imm(asm.R4, uapi.BPF_LOCAL_STORAGE_GET_F_CREATE),
			asm.FnTaskStorageGet.Call(),
			asm.JEq.Imm(asm.R0, 0, "release"),
			asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
			asm.Add.Imm(asm.R1, 5),
			asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
		)
	}
	return append(p,
		asm.Mov.Reg(asm.R1, asm.R6).WithSymbol("release"),
		call("bpf_task_release"),
		asm.Mov.Reg(asm.R0, asm.R7),
		asm.Return(),
	)
}

// bpf_task_from_pid in tc test runs, in this machine's kernel and in
// bpfsim (interpreted and JITed): a process found by its pid (the test's
// own in the kernel, a second simulated process in bpfsim), its tgid and
// its parent's read through the reference, no task for a negative
// pid, and the process's task storage value made through the reference,
// which user space then reads through a pidfd. (This machine's kernel
// finds no task for pid 1, though /proc shows one: the cases leave init
// out.)
func TestTaskFromPidRunsAsTheKernels(t *testing.T) {
	if _, err := OpenKernel(); err != nil {
		t.Skipf("skipped: this machine cannot load BPF programs: %v", err)
	}
	ks, err := btf.LoadKernelSpec()
	if err != nil {
		t.Skipf("skipped: no kernel BTF: %v", err)
	}
	kcall := func(name string) asm.Instruction { return kernelKfuncCall(t, ks, name) }
	koff := taskOffsetsIn(t, ks)
	km, err := ebpf.NewMap(taskStorageMapSpec(uapi.BPF_F_NO_PREALLOC, 0, 8, btfInt))
	if err != nil {
		t.Fatal(err)
	}
	defer km.Close()
	kself, kparent := int32(os.Getpid()), int32(os.Getppid())
	kfd, err := unix.PidfdOpen(int(kself), 0)
	if err != nil {
		t.Skipf("skipped: pidfd_open: %v", err)
	}
	defer unix.Close(kfd)
	type run struct {
		name string
		// insns builds the program for a kernel whose process under test
		// has pid self.
		insns func(call func(string) asm.Instruction, off taskOffsets, self int32, storage int) asm.Instructions
		want  func(self, parent int32) uint32
	}
	runs := []run{
		{"the process's tgid", func(call func(string) asm.Instruction, off taskOffsets, self int32, _ int) asm.Instructions {
			return taskByPidInsns(call, self, 0, off["tgid"], 0)
		}, func(self, _ int32) uint32 { return uint32(self) }},
		{"its parent's tgid", func(call func(string) asm.Instruction, off taskOffsets, self int32, _ int) asm.Instructions {
			return taskByPidInsns(call, self, 0, off["tgid"], off["real_parent"])
		}, func(_, parent int32) uint32 { return uint32(parent) }},
		{"no task for a negative pid", func(call func(string) asm.Instruction, off taskOffsets, _ int32, _ int) asm.Instructions {
			return taskByPidInsns(call, -5, 0, off["tgid"], 0)
		}, func(int32, int32) uint32 { return 0xdead }},
		{"the process's task storage", func(call func(string) asm.Instruction, off taskOffsets, self int32, storage int) asm.Instructions {
			return taskByPidInsns(call, self, storage, off["tgid"], 0)
		}, func(self, _ int32) uint32 { return uint32(self) }},
	}
	kernelRun := func(r run) uint32 {
		p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "GPL", Instructions: r.insns(kcall, koff, kself, km.FD())})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		ret, err := p.Run(&ebpf.RunOptions{Data: make([]byte, 64)})
		if err != nil {
			t.Fatal(err)
		}
		return ret
	}
	for pass, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		k, scall, soff := simTaskKernel(t, rt)
		// A process of its own, whose parent is init (pid 1).
		proc := k.NewProcess()
		sm, err := proc.NewMap(taskStorageMapSpec(uapi.BPF_F_NO_PREALLOC, 0, 8, btfInt))
		if err != nil {
			t.Fatal(err)
		}
		sself, sparent := int32(proc.PID()), int32(1)
		sfd, err := proc.PidfdOpen(int(sself), 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range runs {
			kret := kernelRun(r)
			p, err := proc.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "GPL", Instructions: r.insns(scall, soff, sself, sm.FD())})
			if err != nil {
				t.Fatal(err)
			}
			sret, err := p.Run(&sim.RunOptions{Data: make([]byte, 64)})
			p.Close()
			if err != nil {
				t.Fatal(err)
			}
			if kret != r.want(kself, kparent) || sret != r.want(sself, sparent) {
				t.Errorf("%v, %s: kernel %d (want %d), bpfsim %d (want %d)", rt, r.name, kret, r.want(kself, kparent), sret, r.want(sself, sparent))
			}
		}
		// The process's value, through a pidfd.
		var kv, sv uint64
		if err := km.Lookup(uint32(kfd), &kv); err != nil {
			t.Fatal(err)
		}
		if err := sm.Lookup(uint32(sfd), &sv); err != nil {
			t.Fatalf("bpfsim: %v", err)
		}
		if kv != 5*uint64(pass+1) || sv != 5 {
			// The kernel's value gets 5 more per pass; bpfsim's map is
			// new each pass.
			t.Errorf("%v: the process's value: kernel %d, bpfsim %d", rt, kv, sv)
		}
		sm.Close()
	}
}
