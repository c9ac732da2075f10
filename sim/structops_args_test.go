package sim_test

import (
	"encoding/binary"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/kfunc"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
	"github.com/bpfsim/bpfsim/structops"
)

// A subsystem whose operations get kernel objects: struct task { int pid;
// u32 weight; struct task *parent; }, and struct task_ops { int
// (*weigh)(struct task *p); void (*wake)(struct task *p__nullable, u64
// flags); }. Programs may store into a task's weight, nothing else.
var (
	taskStruct = func() *btf.Struct {
		s := &btf.Struct{Name: "task", Size: 16}
		s.Members = []btf.Member{
			{Name: "pid", Type: intType},
			{Name: "weight", Type: &btf.Int{Name: "u32", Size: 4}, Offset: 32},
			{Name: "parent", Type: &btf.Pointer{Target: s}, Offset: 64},
		}
		return s
	}()
	taskOpsStruct = &btf.Struct{Name: "task_ops", Size: 16, Members: []btf.Member{
		{Name: "weigh", Type: &btf.Pointer{Target: &btf.FuncProto{Return: intType, Params: []btf.FuncParam{
			{Name: "p", Type: &btf.Pointer{Target: taskStruct}}}}}},
		{Name: "wake", Type: &btf.Pointer{Target: &btf.FuncProto{Return: &btf.Void{}, Params: []btf.FuncParam{
			{Name: "p__nullable", Type: &btf.Pointer{Target: taskStruct}}, {Name: "flags", Type: u64Type}}}}, Offset: 64},
	}}
)

const (
	taskWeigh = 0
	taskWake  = 1
)

// registerTaskOps registers task_ops; the instance registered last is
// put in *last.
func registerTaskOps(t testing.TB, k *sim.Kernel, last **structops.Map) {
	t.Helper()
	_, err := k.RegisterStructOps(&structops.Type{
		Struct: taskOpsStruct,
		StructWrite: func(s *btf.Struct, off, size int) error {
			if s.Name != "task" || off != 4 || size != 4 {
				return errors.New("only a task's weight is writable")
			}
			return nil
		},
		Reg: func(m *structops.Map, _ *structops.Link) error {
			if last != nil {
				*last = m
			}
			return nil
		},
		Unreg: func(*structops.Map, *structops.Link) {},
	})
	if err != nil {
		t.Fatal(err)
	}
}

// newTask puts a task in simulated kernel memory.
func newTask(t testing.TB, k *sim.Kernel, pid int32, weight uint32, parent uint64) uint64 {
	t.Helper()
	addr, err := k.Memory().Vmalloc(mem.PageSize, mem.PermRW, "task")
	if err != nil {
		t.Fatal(err)
	}
	var b [16]byte
	binary.LittleEndian.PutUint32(b[0:], uint32(pid))
	binary.LittleEndian.PutUint32(b[4:], weight)
	binary.LittleEndian.PutUint64(b[8:], parent)
	if err := k.Memory().Write(addr, b[:]); err != nil {
		t.Fatal(err)
	}
	return addr
}

func taskOpsProg(p *sim.Process, member string, insns asm.Instructions) (*sim.Program, error) {
	return p.NewProgram(&ebpf.ProgramSpec{Name: member, Type: ebpf.StructOps, AttachTo: "task_ops:" + member, License: "GPL", Instructions: insns})
}

// taskOpsMap makes a task_ops instance with weigh and wake, registered.
func taskOpsMap(t testing.TB, p *sim.Process, weigh, wake *sim.Program) {
	t.Helper()
	d, ok := p.Kernel().StructOpsType("task_ops")
	if !ok {
		t.Fatal("task_ops not registered")
	}
	m, err := p.NewMap(&ebpf.MapSpec{Name: "ops", Type: ebpf.StructOpsMap, KeySize: 4, MaxEntries: 1, Value: taskOpsStruct})
	if err != nil {
		t.Fatal(err)
	}
	v := make([]byte, d.ValueSize())
	binary.LittleEndian.PutUint64(v[structops.DataOffset:], uint64(weigh.FD()))
	binary.LittleEndian.PutUint64(v[structops.DataOffset+8:], uint64(wake.FD()))
	if err := m.Put(uint32(0), v); err != nil {
		t.Fatal(err)
	}
}

// weigh returns p->weight * 1000 + p->parent->pid; wake adds flags to
// p->weight when p is not NULL.
var (
	weighInsns = asm.Instructions{
		asm.LoadMem(asm.R1, asm.R1, 0, asm.DWord), // p
		asm.LoadMem(asm.R0, asm.R1, 4, asm.Word),  // p->weight
		asm.Mul.Imm(asm.R0, 1000),
		asm.LoadMem(asm.R2, asm.R1, 8, asm.DWord), // p->parent: untrusted, maybe NULL
		asm.LoadMem(asm.R2, asm.R2, 0, asm.Word),  // its pid, 0 if NULL
		asm.Add.Reg(asm.R0, asm.R2),
		asm.Return(),
	}
	wakeInsns = asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord), // p, maybe NULL
		asm.LoadMem(asm.R3, asm.R1, 8, asm.DWord), // flags
		asm.JEq.Imm(asm.R2, 0, "out"),
		asm.LoadMem(asm.R4, asm.R2, 4, asm.Word),
		asm.Add.Reg(asm.R4, asm.R3),
		asm.StoreMem(asm.R2, 4, asm.R4, asm.Word),
		asm.Return().WithSymbol("out"), // void: R0 unset
	}
)

// A struct_ops program reads the kernel objects its member is given as
// trusted pointers, walks to others (a NULL one reading as zeros), and
// stores where the subsystem allows: interpreted and JITed.
func TestStructOpsProgramsReadAndWriteTheirArguments(t *testing.T) {
	for name, rt := range map[string]sim.Runtime{"interpreted": sim.RuntimeInterpreter, "JITed": sim.RuntimeJIT} {
		t.Run(name, func(t *testing.T) {
			k, err := sim.NewKernel(&sim.Options{Runtime: rt})
			if err != nil {
				t.Fatal(err)
			}
			var sm *structops.Map
			registerTaskOps(t, k, &sm)
			p := k.NewProcess()
			defer p.Close()
			weigh, err := taskOpsProg(p, "weigh", weighInsns)
			if err != nil {
				t.Fatal(err)
			}
			wake, err := taskOpsProg(p, "wake", wakeInsns)
			if err != nil {
				t.Fatal(err)
			}
			taskOpsMap(t, p, weigh, wake)

			parent := newTask(t, k, 1, 5, 0)
			child := newTask(t, k, 42, 3, parent)
			for _, c := range []struct {
				task uint64
				want uint64
			}{{child, 3*1000 + 1}, {parent, 5 * 1000}} {
				got, err := sm.Call(0, taskWeigh, c.task)
				if err != nil {
					t.Fatal(err)
				}
				if got != c.want {
					t.Errorf("weigh(%#x) = %d, want %d", c.task, got, c.want)
				}
			}
			if _, err := sm.Call(0, taskWake, child, 7); err != nil {
				t.Fatal(err)
			}
			if _, err := sm.Call(1, taskWake, 0, 7); err != nil { // NULL: nothing
				t.Fatal(err)
			}
			b := make([]byte, 4)
			if err := k.Memory().Read(child+4, b); err != nil {
				t.Fatal(err)
			}
			if w := binary.LittleEndian.Uint32(b); w != 10 {
				t.Errorf("child's weight after wake: %d, want 10", w)
			}
		})
	}
}

// What the verifier refuses in struct_ops programs' use of their
// arguments, each with the kernel's errno and message.
func TestStructOpsArgumentMisusesAreRefused(t *testing.T) {
	k, err := sim.NewKernel(nil)
	if err != nil {
		t.Fatal(err)
	}
	registerTaskOps(t, k, nil)
	p := k.NewProcess()
	defer p.Close()
	for _, c := range []struct {
		name, member string
		insns        asm.Instructions
		errno        uapi.Errno
		msg          string
	}{
		{"nullable argument used untested", "wake", asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord),
			asm.LoadMem(asm.R0, asm.R2, 0, asm.Word),
			asm.Return(),
		}, uapi.EACCES, "R2 invalid mem access 'trusted_ptr_or_null_'"},
		{"store outside what the subsystem allows", "weigh", asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord),
			asm.Mov.Imm(asm.R0, 0),
			asm.StoreMem(asm.R2, 0, asm.R0, asm.Word),
			asm.Return(),
		}, uapi.EACCES, "only a task's weight is writable"},
		{"half a pointer member", "weigh", asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord),
			asm.LoadMem(asm.R0, asm.R2, 12, asm.Word),
			asm.Return(),
		}, uapi.EACCES, "cannot access ptr member parent with moff 8 in struct task with off 12 size 4"},
		{"past the struct", "weigh", asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord),
			asm.LoadMem(asm.R0, asm.R2, 16, asm.Word),
			asm.Return(),
		}, uapi.EACCES, "access beyond struct task at off 16 size 4"},
		{"pointer argument read in part", "weigh", asm.Instructions{
			asm.LoadMem(asm.R0, asm.R1, 0, asm.Word),
			asm.Return(),
		}, uapi.EACCES, "invalid bpf_context access off=0 size=4"},
		{"an argument the member lacks", "weigh", asm.Instructions{
			asm.LoadMem(asm.R0, asm.R1, 8, asm.DWord),
			asm.Return(),
		}, uapi.EACCES, "invalid bpf_context access off=8 size=8"},
		{"int member without R0", "weigh", asm.Instructions{
			asm.Return(),
		}, uapi.EACCES, "R0 !read_ok"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := taskOpsProg(p, c.member, c.insns)
			var ve *verifier.Error
			if !errors.Is(err, c.errno) || !errors.As(err, &ve) || ve.Msg != c.msg {
				t.Fatalf("error %v, want %v: %s", err, c.errno, c.msg)
			}
		})
	}
	// The level-2 log types the arguments as the kernel's does.
	prog, err := p.NewProgramWithOptions(&ebpf.ProgramSpec{Name: "weigh", Type: ebpf.StructOps, AttachTo: "task_ops:weigh", License: "GPL", Instructions: weighInsns},
		sim.ProgramOptions{LogLevel: ebpf.LogLevelInstruction | ebpf.LogLevelBranch})
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	for _, want := range []string{"func 'weigh' arg0 has btf_id ", "type STRUCT 'task'", "R1=trusted_ptr_task()", "R2=ptr_task()"} {
		if !strings.Contains(prog.VerifierLog(), want) {
			t.Errorf("log lacks %q:\n%s", want, prog.VerifierLog())
		}
	}
}

// taskRefs are kfuncs handing out references on tasks, as the kernel's
// bpf_task_from_pid and bpf_task_release do: task_get(pid) finds a task
// and counts a reference (KF_ACQUIRE | KF_RET_NULL), task_put(p) drops it
// (KF_RELEASE).
type taskRefs struct {
	mu    sync.Mutex
	tasks map[uint64]uint64 // pid -> task address
	refs  map[uint64]int    // task address -> references held
}

func registerTaskRefs(t testing.TB, k *sim.Kernel, tr *taskRefs) {
	t.Helper()
	taskPtr := &btf.Pointer{Target: taskStruct}
	for _, f := range []*kfunc.Func{
		{Name: "task_get", Flags: kfunc.Acquire | kfunc.RetNull,
			Proto: &btf.FuncProto{Return: taskPtr, Params: []btf.FuncParam{{Name: "pid", Type: intType}}},
			Fn: func(_ *interp.Machine, pid, _, _, _, _ uint64) (uint64, error) {
				tr.mu.Lock()
				defer tr.mu.Unlock()
				addr, ok := tr.tasks[uint64(uint32(pid))]
				if ok {
					tr.refs[addr]++
				}
				return addr, nil
			}},
		{Name: "task_put", Flags: kfunc.Release,
			Proto: &btf.FuncProto{Return: &btf.Void{}, Params: []btf.FuncParam{{Name: "p", Type: taskPtr}}},
			Fn: func(_ *interp.Machine, p, _, _, _, _ uint64) (uint64, error) {
				tr.mu.Lock()
				defer tr.mu.Unlock()
				tr.refs[p]--
				return 0, nil
			}},
	} {
		if err := k.RegisterKfunc(f); err != nil {
			t.Fatal(err)
		}
	}
}

// A program takes a reference on a task through a KF_ACQUIRE kfunc,
// reads it, and gives it back through the KF_RELEASE one on every path:
// interpreted and JITed, the kfuncs see every reference returned; the
// verifier refuses a program that keeps one, with the kernel's message.
func TestKfuncReferencesAreGivenBack(t *testing.T) {
	for name, rt := range map[string]sim.Runtime{"interpreted": sim.RuntimeInterpreter, "JITed": sim.RuntimeJIT} {
		t.Run(name, func(t *testing.T) {
			k, err := sim.NewKernel(&sim.Options{Runtime: rt})
			if err != nil {
				t.Fatal(err)
			}
			tr := &taskRefs{tasks: map[uint64]uint64{}, refs: map[uint64]int{}}
			registerTaskRefs(t, k, tr)
			parent := newTask(t, k, 1, 5, 0)
			child := newTask(t, k, 42, 3, parent)
			tr.tasks[1], tr.tasks[42] = parent, child
			p := k.NewProcess()
			defer p.Close()

			// weight*1000 + parent's pid of the task whose pid is the
			// packet's length past an Ethernet header, -1 if none.
			body := asm.Instructions{
				asm.LoadMem(asm.R2, asm.R1, 0, asm.Word), // skb->len
				asm.Sub.Imm(asm.R2, 14),
				asm.Mov.Reg(asm.R1, asm.R2),
				kfuncCall(t, k, "task_get"),
				asm.Mov.Reg(asm.R6, asm.R0),
				asm.Mov.Imm(asm.R0, -1),
				asm.JEq.Imm(asm.R6, 0, "out"),
				asm.LoadMem(asm.R7, asm.R6, 4, asm.Word),
				asm.Mul.Imm(asm.R7, 1000),
				asm.LoadMem(asm.R8, asm.R6, 8, asm.DWord),
				asm.LoadMem(asm.R8, asm.R8, 0, asm.Word),
				asm.Add.Reg(asm.R7, asm.R8),
				asm.Mov.Reg(asm.R1, asm.R6),
				kfuncCall(t, k, "task_put"),
				asm.Mov.Reg(asm.R0, asm.R7),
				asm.Return().WithSymbol("out"),
			}
			prog, err := p.NewProgram(&ebpf.ProgramSpec{Name: "weight", Type: ebpf.SchedCLS, License: "GPL", Instructions: body})
			if err != nil {
				t.Fatal(err)
			}
			defer prog.Close()
			for _, c := range []struct {
				pid  int
				want uint32
			}{{42, 3001}, {1, 5000}, {7, 0xffffffff}} {
				res, err := prog.Test(&sim.RunOptions{Data: make([]byte, 14+c.pid)})
				if err != nil {
					t.Fatal(err)
				}
				if uint32(res.R0) != c.want {
					t.Errorf("task %d: %d, want %d", c.pid, int32(res.R0), int32(c.want))
				}
			}
			for addr, n := range tr.refs {
				if n != 0 {
					t.Errorf("task at %#x: %d references left", addr, n)
				}
			}

			// Without the release on the path that read the task.
			leaky := append(asm.Instructions{}, body[:12]...)
			leaky = append(leaky, asm.Mov.Reg(asm.R0, asm.R7), asm.Return().WithSymbol("out"))
			_, err = p.NewProgram(&ebpf.ProgramSpec{Name: "leaky", Type: ebpf.SchedCLS, License: "GPL", Instructions: leaky})
			var ve *verifier.Error
			if !errors.Is(err, uapi.EINVAL) || !errors.As(err, &ve) || ve.Msg != "BPF_EXIT instruction in main prog would lead to reference leak" {
				t.Fatalf("leaky program: %v", err)
			}
		})
	}
}

// FuzzKfuncReferences loads fuzzed tc programs that may call task_get and
// task_put: each is refused with one of the verifier's errnos, or runs on
// packets of a few lengths without failing and gives back every
// reference it took. Loads of struct_ops programs for task_ops' members
// from the same bytes are refused with a verifier errno or accepted.
func FuzzKfuncReferences(f *testing.F) {
	k := newKernel(f, &sim.Options{CPUs: 2, MemoryLimit: 64 << 20})
	tr := &taskRefs{tasks: map[uint64]uint64{}, refs: map[uint64]int{}}
	registerTaskRefs(f, k, tr)
	registerTaskOps(f, k, nil)
	parent := newTask(f, k, 1, 5, 0)
	child := newTask(f, k, 2, 3, parent)
	tr.tasks[1], tr.tasks[2] = parent, child
	get, put := kfuncCall(f, k, "task_get"), kfuncCall(f, k, "task_put")
	seeds := []asm.Instructions{
		{
			asm.LoadMem(asm.R2, asm.R1, 0, asm.Word),
			asm.Sub.Imm(asm.R2, 14),
			asm.Mov.Reg(asm.R1, asm.R2),
			get,
			asm.Mov.Reg(asm.R6, asm.R0),
			asm.Mov.Imm(asm.R0, -1),
			asm.JEq.Imm(asm.R6, 0, "out"),
			asm.LoadMem(asm.R7, asm.R6, 8, asm.DWord),
			asm.LoadMem(asm.R7, asm.R7, 0, asm.Word),
			asm.Mov.Reg(asm.R1, asm.R6),
			put,
			asm.Mov.Reg(asm.R0, asm.R7),
			asm.Return().WithSymbol("out"),
		},
		weighInsns,
		wakeInsns,
	}
	for _, s := range seeds {
		code, err := insn.FromAsm(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(insn.Encode(code))
	}
	d, ok := k.StructOpsType("task_ops")
	if !ok {
		f.Fatal("no task_ops")
	}
	f.Fuzz(func(t *testing.T, code []byte) {
		for member := range d.Members {
			prog, err := k.LoadBytecodeWithOptions(ebpf.StructOps, "fuzz", code,
				sim.ProgramOptions{AttachBTFID: uint32(d.TypeID), ExpectedAttachType: uint32(member), License: "GPL"})
			if err != nil {
				if !isVerifierErrno(err) {
					t.Fatalf("struct_ops load failed without one of the verifier's errnos: %v", err)
				}
				continue
			}
			prog.Close()
		}
		prog, err := k.LoadBytecodeWithOptions(ebpf.SchedCLS, "fuzz", code, sim.ProgramOptions{License: "GPL"})
		if err != nil {
			if !isVerifierErrno(err) {
				t.Fatalf("load failed without one of the verifier's errnos: %v", err)
			}
			return
		}
		defer prog.Close()
		for _, n := range []int{14, 15, 16, 17} {
			_, err := prog.Test(&sim.RunOptions{Data: make([]byte, n), MaxInsns: 1 << 22})
			if errors.Is(err, uapi.E2BIG) {
				// A long loop ran out of the budget, which stopped
				// the run, perhaps holding references.
				tr.mu.Lock()
				clear(tr.refs)
				tr.mu.Unlock()
				return
			}
			if err != nil {
				t.Fatalf("a verified program failed: %v\n%s", err, prog.Xlated())
			}
		}
		tr.mu.Lock()
		defer tr.mu.Unlock()
		for addr, n := range tr.refs {
			if n != 0 {
				t.Fatalf("a verified program left %d references on the task at %#x\n%s", n, addr, prog.Xlated())
			}
		}
	})
}

// A struct_ops member call whose program reads its task argument and
// walks to the parent (weigh), and a tc test run taking and giving back a
// reference on a task through kfuncs: interpreted and JITed.
func BenchmarkKernelObjects(b *testing.B) {
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		k := newKernel(b, &sim.Options{Runtime: rt})
		var sm *structops.Map
		registerTaskOps(b, k, &sm)
		tr := &taskRefs{tasks: map[uint64]uint64{}, refs: map[uint64]int{}}
		registerTaskRefs(b, k, tr)
		parent := newTask(b, k, 1, 5, 0)
		child := newTask(b, k, 42, 3, parent)
		tr.tasks[42] = child
		p := k.NewProcess()
		weigh, err := taskOpsProg(p, "weigh", weighInsns)
		if err != nil {
			b.Fatal(err)
		}
		wake, err := taskOpsProg(p, "wake", wakeInsns)
		if err != nil {
			b.Fatal(err)
		}
		taskOpsMap(b, p, weigh, wake)
		b.Run("struct_ops-call/"+rt.String(), func(b *testing.B) {
			for b.Loop() {
				if _, err := sm.Call(0, taskWeigh, child); err != nil {
					b.Fatal(err)
				}
			}
		})
		prog, err := p.NewProgram(&ebpf.ProgramSpec{Name: "refs", Type: ebpf.SchedCLS, License: "GPL", Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R1, 42),
			kfuncCall(b, k, "task_get"),
			asm.Mov.Reg(asm.R6, asm.R0),
			asm.JEq.Imm(asm.R6, 0, "out"),
			asm.Mov.Reg(asm.R1, asm.R6),
			kfuncCall(b, k, "task_put"),
			asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
			asm.Return(),
		}})
		if err != nil {
			b.Fatal(err)
		}
		b.Run("acquire-release/"+rt.String(), func(b *testing.B) {
			res, err := prog.Test(&sim.RunOptions{Data: make([]byte, 64), Repeat: uint32(b.N)})
			if err != nil {
				b.Fatal(err)
			}
			_ = res
		})
		p.Close()
	}
}

// bpf_get_current_task_btf gives the task the run is in as a trusted
// task_struct: a program reads its tgid and its real parent's pid, and
// takes and gives back a reference on it with bpf_task_acquire and
// bpf_task_release, interpreted and JITed.
func TestCurrentTaskBTFIsTheRunsTask(t *testing.T) {
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		t.Run(rt.String(), func(t *testing.T) {
			k := newKernel(t, &sim.Options{Runtime: rt})
			spec, err := k.KernelBTF()
			if err != nil {
				t.Fatal(err)
			}
			var task *btf.Struct
			if err := spec.TypeByName("task_struct", &task); err != nil {
				t.Fatal(err)
			}
			off := map[string]int16{}
			for _, m := range task.Members {
				off[m.Name] = int16(m.Offset.Bytes())
			}
			prog, err := k.NewProgram(&ebpf.ProgramSpec{Name: "current", Type: ebpf.SchedCLS, License: "GPL", Instructions: asm.Instructions{
				asm.FnGetCurrentTaskBtf.Call(),
				asm.Mov.Reg(asm.R1, asm.R0),
				kfuncCall(t, k, "bpf_task_acquire"),
				asm.Mov.Reg(asm.R6, asm.R0),
				asm.Mov.Imm(asm.R0, -1),
				asm.JEq.Imm(asm.R6, 0, "out"),
				asm.LoadMem(asm.R7, asm.R6, off["tgid"], asm.Word),
				asm.LSh.Imm(asm.R7, 16),
				asm.LoadMem(asm.R1, asm.R6, off["real_parent"], asm.DWord),
				asm.LoadMem(asm.R1, asm.R1, off["pid"], asm.Word),
				asm.Or.Reg(asm.R7, asm.R1),
				asm.Mov.Reg(asm.R1, asm.R6),
				kfuncCall(t, k, "bpf_task_release"),
				asm.Mov.Reg(asm.R0, asm.R7),
				asm.Return().WithSymbol("out"),
			}})
			if err != nil {
				t.Fatal(err)
			}
			defer prog.Close()
			parent := &sim.Task{PID: 77, TGID: 77, Comm: "parent"}
			res, err := prog.Test(&sim.RunOptions{Data: make([]byte, 64), Task: &sim.Task{PID: 101, TGID: 100, Comm: "child", Parent: parent}})
			if err != nil {
				t.Fatal(err)
			}
			if want := uint64(100<<16 | 77); res.R0 != want {
				t.Errorf("got %#x, want %#x (tgid 100, parent 77)", res.R0, want)
			}
		})
	}
}
