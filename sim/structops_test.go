package sim_test

import (
	"encoding/binary"
	"sync"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/kfunc"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/structops"
)

// testOps is a simulated subsystem in the shape of bpf_testmod's
// bpf_testmod_ops: struct test_ops { int (*test_1)(void); int
// (*test_2)(int a, int b); int data; }, whose init_member takes data, and
// two kfuncs: test_ops_kdata(aux__prog) returns the kdata of the calling
// program's associated instance (0 for none), test_ops_call(args,
// aux__prog) calls that instance's test_2 with args->a and args->b, or
// returns -1.
type testOps struct {
	k    *sim.Kernel
	desc *structops.Desc

	mu         sync.Mutex
	registered map[*structops.Map]bool
	events     []string
	// block, if set, is called by test_ops_kdata after it read the
	// association (to hold a run inside its RCU section).
	block func()
}

var (
	intType  = &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
	u64Type  = &btf.Int{Name: "u64", Size: 8}
	voidPtr  = &btf.Pointer{Target: &btf.Void{}}
	argsType = &btf.Struct{Name: "test_ops_args", Size: 8, Members: []btf.Member{
		{Name: "a", Type: intType}, {Name: "b", Type: intType, Offset: 32}}}
	testOpsStruct = &btf.Struct{Name: "test_ops", Size: 24, Members: []btf.Member{
		{Name: "test_1", Type: &btf.Pointer{Target: &btf.FuncProto{Return: intType}}},
		{Name: "test_2", Type: &btf.Pointer{Target: &btf.FuncProto{Return: intType, Params: []btf.FuncParam{{Name: "a", Type: intType}, {Name: "b", Type: intType}}}}, Offset: 64},
		{Name: "data", Type: intType, Offset: 128},
	}}
)

func newTestOps(t testing.TB, k *sim.Kernel) *testOps {
	t.Helper()
	s := &testOps{k: k, registered: map[*structops.Map]bool{}}
	typ := &structops.Type{
		Struct: testOpsStruct,
		InitMember: func(m structops.Member, kdata, udata []byte) (bool, error) {
			if m.Name != "data" {
				return false, nil
			}
			copy(kdata[m.Offset:m.Offset+4], udata[m.Offset:])
			return true, nil
		},
		Reg: func(m *structops.Map, l *structops.Link) error {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.registered[m] = true
			s.events = append(s.events, "reg")
			return nil
		},
		Unreg: func(m *structops.Map, l *structops.Link) {
			s.mu.Lock()
			defer s.mu.Unlock()
			delete(s.registered, m)
			s.events = append(s.events, "unreg")
		},
		Update: func(m, old *structops.Map, l *structops.Link) error {
			s.mu.Lock()
			defer s.mu.Unlock()
			delete(s.registered, old)
			s.registered[m] = true
			s.events = append(s.events, "update")
			return nil
		},
		Kfuncs: []*kfunc.Func{
			{
				Name:  "test_ops_kdata",
				Proto: &btf.FuncProto{Return: u64Type, Params: []btf.FuncParam{{Name: "aux__prog", Type: voidPtr}}},
				Fn: func(m *interp.Machine, aux, _, _, _, _ uint64) (uint64, error) {
					kdata := k.ProgGetAssocStructOps(aux)
					if s.block != nil {
						s.block()
					}
					return kdata, nil
				},
			},
			{
				Name: "test_ops_call",
				Proto: &btf.FuncProto{Return: intType, Params: []btf.FuncParam{
					{Name: "args", Type: &btf.Pointer{Target: argsType}}, {Name: "aux__prog", Type: voidPtr}}},
				Fn: func(m *interp.Machine, args, aux, _, _, _ uint64) (uint64, error) {
					sm := k.AssocStructOpsMap(aux)
					if sm == nil {
						return uint64(0xffffffff), nil
					}
					var b [8]byte
					if err := m.ReadMem(args, b[:]); err != nil {
						return 0, err
					}
					return sm.CallFrom(m, 1, uint64(binary.LittleEndian.Uint32(b[0:])), uint64(binary.LittleEndian.Uint32(b[4:])))
				},
			},
		},
	}
	d, err := k.RegisterStructOps(typ)
	if err != nil {
		t.Fatal(err)
	}
	s.desc = d
	return s
}

func (s *testOps) isRegistered(m *structops.Map) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.registered[m]
}

// kfuncCall is a call of the kfunc name.
func kfuncCall(t testing.TB, k *sim.Kernel, name string) asm.Instruction {
	t.Helper()
	id, ok := k.KfuncID(name)
	if !ok {
		t.Fatalf("no kfunc %s", name)
	}
	return asm.Instruction{OpCode: asm.OpCode(asm.JumpClass).SetJumpOp(asm.Call), Src: asm.PseudoKfuncCall, Constant: int64(id)}
}

// test2Prog implements test_2 as a + b + bias.
func test2Prog(t testing.TB, p *sim.Process, bias int32) *sim.Program {
	t.Helper()
	prog, err := p.NewProgram(&ebpf.ProgramSpec{Name: "test_2", Type: ebpf.StructOps, AttachTo: "test_ops:test_2", License: "GPL",
		Instructions: asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord),
			asm.LoadMem(asm.R3, asm.R1, 8, asm.DWord),
			asm.Mov.Reg(asm.R0, asm.R2),
			asm.Add.Reg(asm.R0, asm.R3),
			asm.Add.Imm(asm.R0, bias),
			asm.Return(),
		}})
	if err != nil {
		t.Fatal(err)
	}
	return prog
}

// kdataProg returns, from a program of type typ, the kdata of its
// associated instance through test_ops_kdata (what the struct_ops
// association kfunc returns).
func kdataProg(t testing.TB, k *sim.Kernel, p *sim.Process, typ ebpf.ProgramType, attachTo string) *sim.Program {
	t.Helper()
	var flags uint32
	if typ == ebpf.Syscall {
		flags = uapi.BPF_F_SLEEPABLE // syscall programs are
	}
	prog, err := p.NewProgram(&ebpf.ProgramSpec{Name: "kdata", Type: typ, AttachTo: attachTo, License: "GPL", Flags: flags,
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R1, 0),
			kfuncCall(t, k, "test_ops_kdata"),
			asm.Return(),
		}})
	if err != nil {
		t.Fatal(err)
	}
	return prog
}

// callProg calls test_ops_call with a = 3, b = 4 from a syscall program.
func callProg(t testing.TB, k *sim.Kernel, p *sim.Process) *sim.Program {
	t.Helper()
	prog, err := p.NewProgram(&ebpf.ProgramSpec{Name: "call", Type: ebpf.Syscall, License: "GPL", Flags: uapi.BPF_F_SLEEPABLE,
		Instructions: asm.Instructions{
			asm.StoreImm(asm.R10, -8, 3, asm.Word),
			asm.StoreImm(asm.R10, -4, 4, asm.Word),
			asm.Mov.Reg(asm.R1, asm.R10),
			asm.Add.Imm(asm.R1, -8),
			asm.Mov.Imm(asm.R2, 0),
			kfuncCall(t, k, "test_ops_call"),
			asm.Return(),
		}})
	if err != nil {
		t.Fatal(err)
	}
	return prog
}

// opsMap creates a test_ops struct_ops map.
func opsMap(t testing.TB, p *sim.Process, name string, flags uint32) *sim.Map {
	t.Helper()
	m, err := p.NewMap(&ebpf.MapSpec{Name: name, Type: ebpf.StructOpsMap, KeySize: 4, MaxEntries: 1, Value: testOpsStruct, Flags: flags})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// opsValue is a struct bpf_struct_ops_test_ops with test_1 and test_2
// holding fds (0: none) and data.
func opsValue(d *structops.Desc, test1, test2 int, data uint32) []byte {
	v := make([]byte, d.ValueSize())
	binary.LittleEndian.PutUint64(v[structops.DataOffset:], uint64(test1))
	binary.LittleEndian.PutUint64(v[structops.DataOffset+8:], uint64(test2))
	binary.LittleEndian.PutUint32(v[structops.DataOffset+16:], data)
	return v
}

func run(t testing.TB, p *sim.Program) uint64 {
	t.Helper()
	res, err := p.Test(&sim.RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return res.R0
}

func mustErrno(t *testing.T, err error, want uapi.Errno) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("error %v, want %v", err, want)
	}
}

func checkLeaks(t *testing.T, k *sim.Kernel) {
	t.Helper()
	if err := k.CheckLeaks(); err != nil {
		t.Fatal(err)
	}
}

func TestStructOpsLegacyAttachRegistersOnUpdateAndDeleteUnregisters(t *testing.T) {
	k := newKernel(t, nil)
	s := newTestOps(t, k)
	p := k.InitProcess()
	prog := test2Prog(t, p, 100)
	m := opsMap(t, p, "ops", 0)
	sm := m.StructOps()
	if sm.State() != structops.StateInit {
		t.Fatalf("state %s", sm.State())
	}
	if err := m.Put(uint32(0), opsValue(s.desc, 0, prog.FD(), 7)); err != nil {
		t.Fatal(err)
	}
	if sm.State() != structops.StateInUse || !s.isRegistered(sm) {
		t.Fatalf("state %s, registered %v", sm.State(), s.isRegistered(sm))
	}
	if got := binary.LittleEndian.Uint32(sm.Data()[16:]); got != 7 {
		t.Errorf("kdata.data = %d, init_member should have copied 7", got)
	}
	if tr := binary.LittleEndian.Uint64(sm.Data()[8:]); tr == 0 || tr != sm.Trampoline(1) {
		t.Errorf("kdata.test_2 = %#x, want the trampoline %#x", tr, sm.Trampoline(1))
	}
	if r0, err := sm.Call(0, 1, 2, 5); err != nil || r0 != 107 {
		t.Fatalf("test_2(2, 5) = %d, %v; want 107", r0, err)
	}
	if _, err := sm.Call(0, 0); !errors.Is(err, structops.ErrNoProgram) {
		t.Errorf("calling test_1, which no program implements: %v", err)
	}
	// The syscall lookup shows the state and the references that are not
	// user references: the registration's.
	var v []byte
	if err := m.Lookup(uint32(0), &v); err != nil {
		t.Fatal(err)
	}
	if st, rc := binary.LittleEndian.Uint32(v[4:]), binary.LittleEndian.Uint32(v[0:]); st != uint32(structops.StateInUse) || rc != 1 {
		t.Errorf("lookup: state %d refcnt %d, want inuse and 1", st, rc)
	}
	mustErrno(t, m.Put(uint32(0), opsValue(s.desc, 0, prog.FD(), 7)), uapi.EBUSY)
	if err := m.Delete(uint32(0)); err != nil {
		t.Fatal(err)
	}
	if sm.State() != structops.StateToBeFree || s.isRegistered(sm) {
		t.Fatalf("after delete: state %s, registered %v", sm.State(), s.isRegistered(sm))
	}
	mustErrno(t, m.Delete(uint32(0)), uapi.EINPROGRESS)
	prog.Close()
	m.Close()
	checkLeaks(t, k)
}

func TestStructOpsUpdateIsAllOrNothing(t *testing.T) {
	k := newKernel(t, nil)
	s := newTestOps(t, k)
	p := k.InitProcess()
	good := test2Prog(t, p, 1)
	sys := callProg(t, k, p)
	array, err := k.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		value func() []byte
		key   uint32
		errno uapi.Errno
	}{
		{"a closed fd is EBADF", func() []byte { return opsValue(s.desc, 0, 99, 0) }, 0, uapi.EBADF},
		{"a map fd in a function member is EINVAL", func() []byte { return opsValue(s.desc, 0, array.FD(), 0) }, 0, uapi.EINVAL},
		{"a program of another type is EINVAL", func() []byte { return opsValue(s.desc, 0, sys.FD(), 0) }, 0, uapi.EINVAL},
		{"a program for another member is EINVAL", func() []byte { return opsValue(s.desc, good.FD(), good.FD(), 0) }, 0, uapi.EINVAL},
		{"a non-zero header is EINVAL", func() []byte { v := opsValue(s.desc, 0, good.FD(), 0); v[4] = 1; return v }, 0, uapi.EINVAL},
		{"non-zero padding is EINVAL", func() []byte { v := opsValue(s.desc, 0, good.FD(), 0); v[20] = 1; return v }, 0, uapi.EINVAL},
		{"a key other than 0 is E2BIG", func() []byte { return opsValue(s.desc, 0, good.FD(), 0) }, 1, uapi.E2BIG},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := opsMap(t, p, "ops", 0)
			defer m.Close()
			before := good.Refs()
			mustErrno(t, m.Put(tc.key, tc.value()), tc.errno)
			sm := m.StructOps()
			if sm.State() != structops.StateInit || sm.Program(1) != nil || s.isRegistered(sm) {
				t.Fatalf("a failed update left state %s, program %v", sm.State(), sm.Program(1))
			}
			if good.Refs() != before {
				t.Errorf("program refs %d, were %d", good.Refs(), before)
			}
			if _, ok := good.StructOpsAssoc(); ok {
				t.Error("a failed update left the program associated")
			}
			// The map is still usable.
			if err := m.Put(uint32(0), opsValue(s.desc, 0, good.FD(), 0)); err != nil {
				t.Fatal(err)
			}
			if err := m.Delete(uint32(0)); err != nil {
				t.Fatal(err)
			}
		})
	}
	mustErrno(t, opsMap(t, p, "ops", 0).Update(uint32(0), opsValue(s.desc, 0, good.FD(), 0), ebpf.UpdateNoExist), uapi.EINVAL)
	p.Close()
	checkLeaks(t, k)
}

func TestStructOpsMapCreationErrors(t *testing.T) {
	k := newKernel(t, nil)
	s := newTestOps(t, k)
	p := k.InitProcess()
	for _, tc := range []struct {
		name  string
		id    btf.TypeID
		size  uint32
		flags uint32
		errno uapi.Errno
	}{
		{"no value type id is EINVAL", 0, s.desc.ValueSize(), 0, uapi.EINVAL},
		{"a type id that is no struct_ops value is ENOTSUPP", s.desc.TypeID, s.desc.ValueSize(), 0, uapi.ENOTSUPP},
		{"a wrong value size is EINVAL", s.desc.ValueTypeID, s.desc.ValueSize() - 8, 0, uapi.EINVAL},
		{"an unknown flag is EINVAL", s.desc.ValueTypeID, s.desc.ValueSize(), uapi.BPF_F_RDONLY, uapi.EINVAL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := p.NewStructOpsMap("ops", tc.id, tc.size, tc.flags)
			mustErrno(t, err, tc.errno)
		})
	}
	checkLeaks(t, k)
}

func TestStructOpsProgramLoadChecksTheMember(t *testing.T) {
	k := newKernel(t, nil)
	newTestOps(t, k)
	p := k.InitProcess()
	body := asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}
	for _, tc := range []struct {
		name     string
		spec     ebpf.ProgramSpec
		errno    uapi.Errno
		contains string
	}{
		{"a data member is EINVAL", ebpf.ProgramSpec{AttachTo: "test_ops:data", License: "GPL"}, uapi.EINVAL, "attach to invalid member data"},
		{"an unknown struct is ENOTSUPP", ebpf.ProgramSpec{AttachTo: "nope:test_1", License: "GPL"}, uapi.ENOTSUPP, ""},
		{"a non-GPL license is EINVAL", ebpf.ProgramSpec{AttachTo: "test_ops:test_1", License: "MIT"}, uapi.EINVAL, "GPL compatible"},
		{"reading past the member's arguments is EACCES", ebpf.ProgramSpec{AttachTo: "test_ops:test_1", License: "GPL",
			Instructions: asm.Instructions{asm.LoadMem(asm.R0, asm.R1, 0, asm.DWord), asm.Return()}}, uapi.EACCES, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := tc.spec
			spec.Type, spec.Name = ebpf.StructOps, "p"
			if spec.Instructions == nil {
				spec.Instructions = body
			}
			_, err := p.NewProgram(&spec)
			mustErrno(t, err, tc.errno)
			if tc.contains != "" && !contains(err.Error(), tc.contains) {
				t.Errorf("error %q does not say %q", err, tc.contains)
			}
		})
	}
	checkLeaks(t, k)
}

func contains(s, sub string) bool {
	return len(sub) == 0 || len(s) >= len(sub) && (s == sub || indexOf(s, sub) >= 0)
}

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

func TestStructOpsLinkRegistersAndUpdateSwapsInstances(t *testing.T) {
	k := newKernel(t, nil)
	s := newTestOps(t, k)
	p := k.InitProcess()
	a, b := test2Prog(t, p, 10), test2Prog(t, p, 20)
	ma, mb := opsMap(t, p, "a", uapi.BPF_F_LINK), opsMap(t, p, "b", uapi.BPF_F_LINK)
	_, err := k.AttachStructOps(ma)
	mustErrno(t, err, uapi.EINVAL) // not updated yet
	for _, c := range []struct {
		m    *sim.Map
		prog *sim.Program
	}{{ma, a}, {mb, b}} {
		if err := c.m.Put(uint32(0), opsValue(s.desc, 0, c.prog.FD(), 0)); err != nil {
			t.Fatal(err)
		}
		if st := c.m.StructOps().State(); st != structops.StateReady {
			t.Fatalf("state %s, want ready", st)
		}
	}
	mustErrno(t, ma.Delete(uint32(0)), uapi.EOPNOTSUPP)
	legacy := opsMap(t, p, "legacy", 0)
	_, err = k.AttachStructOps(legacy)
	mustErrno(t, err, uapi.EINVAL)
	l, err := k.AttachStructOps(ma)
	if err != nil {
		t.Fatal(err)
	}
	if !s.isRegistered(ma.StructOps()) {
		t.Fatal("link did not register")
	}
	refsA, _ := ma.Refs()
	if err := l.Update(mb); err != nil {
		t.Fatal(err)
	}
	if s.isRegistered(ma.StructOps()) || !s.isRegistered(mb.StructOps()) || l.Map() != mb.StructOps() {
		t.Fatal("link update did not swap the instances")
	}
	if r, _ := ma.Refs(); r != refsA-1 {
		t.Errorf("old map refs %d, want %d: the link's reference moves", r, refsA-1)
	}
	if r0, err := l.Map().Call(1, 1, 1, 1); err != nil || r0 != 22 {
		t.Errorf("test_2 through the link = %d, %v; want 22", r0, err)
	}
	l.Close()
	if s.isRegistered(mb.StructOps()) {
		t.Error("closing the link did not unregister")
	}
	if got := s.events; len(got) != 3 || got[0] != "reg" || got[1] != "update" || got[2] != "unreg" {
		t.Errorf("events %v", got)
	}
	p.Close()
	checkLeaks(t, k)
}

// Seed 004, "The command should only increase refcount once for a program".
func TestAssocStructOpsTakesOneReferencePerProgram(t *testing.T) {
	k := newKernel(t, nil)
	s := newTestOps(t, k)
	p := k.InitProcess()
	m, other := opsMap(t, p, "a", 0), opsMap(t, p, "b", 0)
	sys := kdataProg(t, k, p, ebpf.Syscall, "")
	before, _ := m.Refs()
	for i := 0; i < 3; i++ {
		if err := sys.AssocStructOps(m); err != nil {
			t.Fatal(err)
		}
	}
	if r, _ := m.Refs(); r != before+1 {
		t.Fatalf("refs %d after three associations, want %d", r, before+1)
	}
	// A non-struct_ops program's association is for good.
	otherBefore, _ := other.Refs()
	mustErrno(t, sys.AssocStructOps(other), uapi.EBUSY)
	if r, _ := other.Refs(); r != otherBefore {
		t.Errorf("a refused association changed the other map's refs: %d, were %d", r, otherBefore)
	}
	if a, ok := sys.StructOpsAssoc(); !ok || a.MapID != m.ID() {
		t.Errorf("association %+v, %v", a, ok)
	}
	_ = s
	p.Close()
	checkLeaks(t, k)
}

// Seed 004, v1->v2: "Poison st_ops_assoc when reusing the program in more
// than one struct_ops maps".
func TestAssocStructOpsPoisonedWhenOneProgramServesTwoMaps(t *testing.T) {
	k := newKernel(t, nil)
	s := newTestOps(t, k)
	p := k.InitProcess()
	prog := kdataProg(t, k, p, ebpf.StructOps, "test_ops:test_1")
	ma, mb := opsMap(t, p, "a", 0), opsMap(t, p, "b", 0)
	refsA, _ := ma.Refs()
	if err := ma.Put(uint32(0), opsValue(s.desc, prog.FD(), 0, 0)); err != nil {
		t.Fatal(err)
	}
	if a, ok := prog.StructOpsAssoc(); !ok || a.MapID != ma.ID() || a.Poisoned {
		t.Fatalf("after one map: %+v %v", a, ok)
	}
	// The struct_ops program takes no reference on its map: the map
	// tracks it. (The one more reference is the registration's.)
	if r, _ := ma.Refs(); r != refsA+1 {
		t.Errorf("map refs %d, want %d", r, refsA+1)
	}
	if r0, err := ma.StructOps().Call(0, 0); err != nil || r0 != ma.StructOps().KData() {
		t.Fatalf("kfunc from the map's program = %#x, %v; want kdata %#x", r0, err, ma.StructOps().KData())
	}
	if err := mb.Put(uint32(0), opsValue(s.desc, prog.FD(), 0, 0)); err != nil {
		t.Fatalf("reusing a program poisons, it does not fail the update: %v", err)
	}
	if a, ok := prog.StructOpsAssoc(); !ok || !a.Poisoned {
		t.Fatalf("after two maps: %+v %v, want poisoned", a, ok)
	}
	for _, m := range []*sim.Map{ma, mb} {
		if r0, err := m.StructOps().Call(0, 0); err != nil || r0 != 0 {
			t.Errorf("kfunc through map %s = %#x, %v; want NULL", m.Name(), r0, err)
		}
	}
	// Poison is sticky, also once a map is gone.
	ma.Delete(uint32(0))
	ma.Close()
	k.SynchronizeRCU()
	if a, _ := prog.StructOpsAssoc(); !a.Poisoned {
		t.Error("poison was cleared by freeing a map")
	}
	mb.Delete(uint32(0))
	p.Close()
	checkLeaks(t, k)
}

// Seed 004, v2->v3: "Return NULL if the map is not fully initialized".
func TestAssocStructOpsNullBeforeFullInitialisation(t *testing.T) {
	k := newKernel(t, nil)
	s := newTestOps(t, k)
	p := k.InitProcess()
	sys := kdataProg(t, k, p, ebpf.Syscall, "")
	m := opsMap(t, p, "ops", 0)
	if err := sys.AssocStructOps(m); err != nil {
		t.Fatal(err)
	}
	if got := run(t, sys); got != 0 {
		t.Fatalf("associated with a map in state init: %#x, want NULL", got)
	}
	// A program of the map running during the update, before the state
	// leaves init (here from the subsystem's validate), sees NULL too.
	prog := kdataProg(t, k, p, ebpf.StructOps, "test_ops:test_1")
	var duringUpdate uint64
	s.desc.Type.Validate = func(sm *structops.Map) error {
		var err error
		duringUpdate, err = sm.Call(1, 0)
		return err
	}
	defer func() { s.desc.Type.Validate = nil }()
	if err := m.Put(uint32(0), opsValue(s.desc, prog.FD(), 0, 0)); err != nil {
		t.Fatal(err)
	}
	if duringUpdate != 0 {
		t.Errorf("during the update: %#x, want NULL", duringUpdate)
	}
	if got, want := run(t, sys), m.StructOps().KData(); got != want {
		t.Errorf("after the update: %#x, want kdata %#x", got, want)
	}
	m.Delete(uint32(0))
	p.Close()
	checkLeaks(t, k)
}

// Seed 004: the association is dropped when the program is freed
// (bpf_prog_free_deferred), with the reference it held.
func TestAssocStructOpsDroppedWhenProgramIsFreed(t *testing.T) {
	k := newKernel(t, nil)
	newTestOps(t, k)
	p := k.InitProcess()
	m := opsMap(t, p, "ops", 0)
	base, _ := m.Refs()
	sys := kdataProg(t, k, p, ebpf.Syscall, "")
	if err := sys.AssocStructOps(m); err != nil {
		t.Fatal(err)
	}
	sys.Close()
	k.SynchronizeRCU()
	if r, _ := m.Refs(); r != base {
		t.Fatalf("refs %d after the program's free, want %d", r, base)
	}
	m.Close()
	checkLeaks(t, k)
}

// Seed 004, v5->v6: "Drop refcnt bumping for async callbacks and add RCU
// annotation". bpfsim has no bpf_timer: a timer callback is modelled as a
// later run of the program (Program.RunCallback), inside an RCU read-side
// section, with no reference of its own on the map.
func TestAssocStructOpsTimerCallbackSeesItUnderRCU(t *testing.T) {
	k := newKernel(t, nil)
	s := newTestOps(t, k)
	p := k.InitProcess()
	prog := kdataProg(t, k, p, ebpf.StructOps, "test_ops:test_1")
	m := opsMap(t, p, "ops", 0)
	if err := m.Put(uint32(0), opsValue(s.desc, prog.FD(), 0, 0)); err != nil {
		t.Fatal(err)
	}
	kdata := m.StructOps().KData()
	refs, _ := m.Refs()
	// The callback while the map lives sees its kdata, and arming or
	// running it takes no reference.
	if got, err := prog.RunCallback(0); err != nil || got != kdata {
		t.Fatalf("callback = %#x, %v; want %#x", got, err, kdata)
	}
	if r, _ := m.Refs(); r != refs {
		t.Fatalf("refs %d, want %d", r, refs)
	}
	// A callback running while the map's last reference goes keeps it
	// (its memory) alive until the callback ends: RCU, not a reference.
	entered, release := make(chan struct{}), make(chan struct{})
	s.block = func() { close(entered); <-release }
	done := make(chan uint64)
	go func() {
		r0, err := prog.RunCallback(1)
		if err != nil {
			t.Error(err)
		}
		done <- r0
	}()
	<-entered
	s.block = nil
	if err := m.Delete(uint32(0)); err != nil {
		t.Fatal(err)
	}
	m.Close()
	if _, ok := k.Memory().AreaOf(kdata); !ok {
		t.Fatal("the map was freed under a running callback")
	}
	close(release)
	if got := <-done; got != kdata {
		t.Errorf("callback that started before the free = %#x, want %#x", got, kdata)
	}
	k.SynchronizeRCU()
	if _, ok := k.Memory().AreaOf(kdata); ok {
		t.Fatal("the map outlived its last reference and the grace period: a pending callback must not hold it")
	}
	// A callback after the map's free finds no association, not a
	// dangling one.
	if got, err := prog.RunCallback(0); err != nil || got != 0 {
		t.Errorf("callback after the free = %#x, %v; want NULL", got, err)
	}
	prog.Close()
	checkLeaks(t, k)
}

// Seed 004: a struct_ops map lives until its link and every program
// associated with it are gone.
func TestStructOpsMapFreedOnlyAfterLinkAndEveryAssociatedProgram(t *testing.T) {
	k := newKernel(t, nil)
	s := newTestOps(t, k)
	p := k.InitProcess()
	impl := test2Prog(t, p, 0)
	m := opsMap(t, p, "ops", uapi.BPF_F_LINK)
	if err := m.Put(uint32(0), opsValue(s.desc, 0, impl.FD(), 0)); err != nil {
		t.Fatal(err)
	}
	s1, s2 := kdataProg(t, k, p, ebpf.Syscall, ""), callProg(t, k, p)
	for _, prog := range []*sim.Program{s1, s2} {
		if err := prog.AssocStructOps(m); err != nil {
			t.Fatal(err)
		}
	}
	l, err := k.AttachStructOps(m)
	if err != nil {
		t.Fatal(err)
	}
	kdata := m.StructOps().KData()
	impl.Close()
	alive := func(step string, want bool) {
		t.Helper()
		k.SynchronizeRCU()
		if _, ok := k.Memory().AreaOf(kdata); ok != want {
			t.Fatalf("after %s: map alive %v, want %v", step, ok, want)
		}
	}
	m.Close()
	alive("closing the map's fd", true)
	if got := run(t, s2); got != 7 {
		t.Errorf("test_ops_call from the syscall program = %d, want 3+4", got)
	}
	l.Close()
	alive("closing the link", true)
	s1.Close()
	alive("freeing one associated program", true)
	if got := run(t, s2); got != 7 {
		t.Errorf("after the link is gone, the association still reaches the instance: %d", got)
	}
	s2.Close()
	alive("freeing the last associated program", false)
	checkLeaks(t, k)
}

func TestProgAssocStructOpsErrors(t *testing.T) {
	k := newKernel(t, nil)
	s := newTestOps(t, k)
	p, other := k.InitProcess(), k.NewProcess()
	ops := opsMap(t, p, "ops", 0)
	otherOps := opsMap(t, other, "ops", 0)
	array, err := k.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	sys := kdataProg(t, k, p, ebpf.Syscall, "")
	stOps := kdataProg(t, k, p, ebpf.StructOps, "test_ops:test_1")
	closed := kdataProg(t, k, p, ebpf.Syscall, "")
	closedFD := closed.FD()
	closed.Close()
	_ = s
	for _, tc := range []struct {
		name          string
		progFD, mapFD int
		flags         uint32
		errno         uapi.Errno
	}{
		{"flags other than 0 are EINVAL", sys.FD(), ops.FD(), 1, uapi.EINVAL},
		{"a map that is not struct_ops is EINVAL", sys.FD(), array.FD(), 0, uapi.EINVAL},
		{"a map fd of another process is EBADF", sys.FD(), otherOps.FD() + 10, 0, uapi.EBADF},
		{"a closed program is EBADF", closedFD, ops.FD(), 0, uapi.EBADF},
		{"a struct_ops program is EINVAL", stOps.FD(), ops.FD(), 0, uapi.EINVAL},
		{"a map fd in the program slot is EINVAL", ops.FD(), ops.FD(), 0, uapi.EINVAL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := ops.Refs()
			mustErrno(t, p.ProgAssocStructOps(tc.progFD, tc.mapFD, tc.flags), tc.errno)
			if r, _ := ops.Refs(); r != before {
				t.Errorf("refs %d, were %d", r, before)
			}
		})
	}
	// The libbpf-style wrapper refuses what libbpf refuses before the
	// command, and a handle of another process.
	mustErrno(t, stOps.AssocStructOps(ops), uapi.EINVAL)
	mustErrno(t, sys.AssocStructOps(array), uapi.EINVAL)
	mustErrno(t, closed.AssocStructOps(ops), uapi.EINVAL)
	mustErrno(t, sys.AssocStructOps(otherOps), uapi.EBADF)
	if _, ok := sys.StructOpsAssoc(); ok {
		t.Error("a failed association left one")
	}
	p.Close()
	other.Close()
	checkLeaks(t, k)
}

func TestKfuncCallsAreVerified(t *testing.T) {
	k := newKernel(t, nil)
	newTestOps(t, k)
	if err := k.RegisterKfunc(&kfunc.Func{Name: "xdp_only", Proto: &btf.FuncProto{Return: intType}, ProgTypes: []ebpf.ProgramType{ebpf.XDP},
		Fn: func(*interp.Machine, uint64, uint64, uint64, uint64, uint64) (uint64, error) { return 0, nil }}); err != nil {
		t.Fatal(err)
	}
	call := func(name string) asm.Instruction { return kfuncCall(t, k, name) }
	for _, tc := range []struct {
		name    string
		license string
		insns   asm.Instructions
		errno   uapi.Errno
	}{
		{"an unknown BTF id is EINVAL", "GPL", asm.Instructions{{OpCode: asm.OpCode(asm.JumpClass).SetJumpOp(asm.Call), Src: asm.PseudoKfuncCall, Constant: 99999}, asm.Return()}, uapi.EINVAL},
		{"a kfunc of another program type is EACCES", "GPL", asm.Instructions{call("xdp_only"), asm.Return()}, uapi.EACCES},
		{"a non-GPL program is EINVAL", "MIT", asm.Instructions{asm.Mov.Imm(asm.R1, 0), call("test_ops_kdata"), asm.Return()}, uapi.EINVAL},
		{"a scalar for a struct pointer is EACCES", "GPL", asm.Instructions{asm.Mov.Imm(asm.R1, 8), call("test_ops_call"), asm.Return()}, uapi.EACCES},
		{"a struct that runs past the stack frame is EINVAL", "GPL", asm.Instructions{asm.Mov.Reg(asm.R1, asm.R10), asm.Add.Imm(asm.R1, -4), call("test_ops_call"), asm.Return()}, uapi.EINVAL},
		{"R0 of a void-less kfunc is readable, R1 is not", "GPL", asm.Instructions{asm.Mov.Imm(asm.R1, 0), call("test_ops_kdata"), asm.Mov.Reg(asm.R0, asm.R1), asm.Return()}, uapi.EACCES},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := k.NewProgram(&ebpf.ProgramSpec{Type: ebpf.Syscall, License: tc.license, Flags: uapi.BPF_F_SLEEPABLE, Instructions: tc.insns})
			mustErrno(t, err, tc.errno)
		})
	}
	// The __prog argument is the verifier's: whatever the program leaves
	// in R1, the kfunc gets the aux.
	prog, err := k.NewProgram(&ebpf.ProgramSpec{Type: ebpf.Syscall, License: "GPL", Flags: uapi.BPF_F_SLEEPABLE, Instructions: asm.Instructions{call("test_ops_kdata"), asm.Return()}})
	if err != nil {
		t.Fatalf("an uninitialised __prog argument: %v", err)
	}
	if !contains(prog.Xlated(), "r1 = 0x") {
		t.Errorf("the fix-up should load the aux into r1:\n%s", prog.Xlated())
	}
	prog.Close()
	_, err = k.LoadInsnsWithOptions(ebpf.Syscall, "raw", mustInsns(t, asm.Instructions{call("test_ops_kdata"), asm.Return()}), sim.ProgramOptions{Unverified: true, Flags: uapi.BPF_F_SLEEPABLE})
	mustErrno(t, err, uapi.EINVAL)
	checkLeaks(t, k)
}

func mustInsns(t testing.TB, in asm.Instructions) []insn.Insn {
	t.Helper()
	out, err := insn.FromAsm(in)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// BenchmarkStructOpsMemberCall is the subsystem calling a member: the
// program test_2 runs on a simulated CPU with two arguments.
func BenchmarkStructOpsMemberCall(b *testing.B) {
	k, err := sim.NewKernel(nil)
	if err != nil {
		b.Fatal(err)
	}
	s := newTestOps(b, k)
	p := k.InitProcess()
	prog := test2Prog(b, p, 1)
	m := opsMap(b, p, "ops", 0)
	if err := m.Put(uint32(0), opsValue(s.desc, 0, prog.FD(), 0)); err != nil {
		b.Fatal(err)
	}
	sm := m.StructOps()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := sm.Call(0, 1, uint64(i), 2); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAssocKfunc is one program run that calls the association kfunc
// (bpf_prog_get_assoc_struct_ops through test_ops_kdata), against the same
// run of a program that does not (BenchmarkAssocKfunc/baseline): the
// difference is the kfunc's cost.
func BenchmarkAssocKfunc(b *testing.B) {
	k, err := sim.NewKernel(nil)
	if err != nil {
		b.Fatal(err)
	}
	s := newTestOps(b, k)
	p := k.InitProcess()
	impl := test2Prog(b, p, 1)
	m := opsMap(b, p, "ops", 0)
	if err := m.Put(uint32(0), opsValue(s.desc, 0, impl.FD(), 0)); err != nil {
		b.Fatal(err)
	}
	withKfunc := kdataProg(b, k, p, ebpf.StructOps, "test_ops:test_1")
	baseline, err := p.NewProgram(&ebpf.ProgramSpec{Type: ebpf.StructOps, AttachTo: "test_ops:test_1", License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R1, 0), asm.Mov.Imm(asm.R0, 0), asm.Return()}})
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		prog *sim.Program
	}{{"kfunc", withKfunc}, {"baseline", baseline}} {
		if err := bc.prog.AssocStructOps(m); err == nil {
			b.Fatal("a struct_ops program was associated explicitly")
		}
		b.Run(bc.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if _, err := bc.prog.RunCallback(0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
