package sim_test

import (
	"encoding/binary"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/structops"
)

// ciliumDir returns cilium/ebpf's module directory, or skips.
func ciliumDir(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/cilium/ebpf").Output()
	if err != nil {
		t.Skipf("skipped: cannot find the cilium/ebpf module: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// copyMember is an init_member that takes one data member as it is.
func copyMember(name string) func(structops.Member, []byte, []byte) (bool, error) {
	return func(m structops.Member, kdata, udata []byte) (bool, error) {
		if m.Name != name {
			return false, nil
		}
		copy(kdata[m.Offset:m.Offset+m.Size], udata[m.Offset:])
		return true, nil
	}
}

func noReg(*structops.Map, *structops.Link) error { return nil }
func noUnreg(*structops.Map, *structops.Link)     {}

// cilium/ebpf's testdata/struct_ops.c: a .struct_ops.link instance of
// bpf_testmod_ops with test_1 and data = 0xdeadbeef, loaded against a
// simulated bpf_testmod_ops of the same shape.
func TestCiliumStructOpsObjectLoadsAgainstSimulatedTestmod(t *testing.T) {
	spec, err := ebpf.LoadCollectionSpec(filepath.Join(ciliumDir(t), "testdata", "struct_ops-el.elf"))
	if err != nil {
		t.Skipf("skipped: %v", err)
	}
	k := newKernel(t, nil)
	intT := &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
	_, err = k.RegisterStructOps(&structops.Type{
		Struct: &btf.Struct{Name: "bpf_testmod_ops", Size: 24, Members: []btf.Member{
			{Name: "test_1", Type: &btf.Pointer{Target: &btf.FuncProto{Return: intT}}},
			{Name: "test_2", Type: &btf.Pointer{Target: &btf.FuncProto{Return: &btf.Void{}, Params: []btf.FuncParam{{Type: intT}, {Type: intT}}}}, Offset: 64},
			{Name: "data", Type: intT, Offset: 128},
		}},
		InitMember: copyMember("data"),
		Reg:        noReg, Unreg: noUnreg,
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := k.NewCollection(spec)
	if err != nil {
		t.Fatal(err)
	}
	m := c.Maps["testmod_ops"]
	sm := m.StructOps()
	if sm == nil || sm.State() != structops.StateReady || m.Flags()&(1<<13) == 0 {
		t.Fatalf("testmod_ops: %v", m)
	}
	if got := binary.LittleEndian.Uint32(sm.Data()[16:]); got != 0xdeadbeef {
		t.Errorf("data = %#x, want 0xdeadbeef", got)
	}
	if sm.Program(0) == nil || sm.Program(1) != nil {
		t.Errorf("test_1 %v, test_2 %v: want test_1 only", sm.Program(0), sm.Program(1))
	}
	l, err := k.AttachStructOps(m)
	if err != nil {
		t.Fatal(err)
	}
	if r0, err := l.Map().Call(0, 0); err != nil || r0 != 0 {
		t.Errorf("test_1() = %d, %v", r0, err)
	}
	l.Close()
	c.Close()
	checkLeaks(t, k)
}

// cilium/ebpf's examples/sched_ext object: a .struct_ops.link sched_ext_ops
// with only its name, "minimal", loaded against a simulated sched_ext_ops
// of the same shape (the real one has many more members; the object
// names only this one, and cilium/ebpf maps members by name).
func TestCiliumSchedExtExampleLoadsAgainstSimulatedSchedExt(t *testing.T) {
	spec, err := ebpf.LoadCollectionSpec(filepath.Join(ciliumDir(t), "examples", "sched_ext", "bpf_bpfel.o"))
	if err != nil {
		t.Skipf("skipped: %v", err)
	}
	k := newKernel(t, nil)
	char := &btf.Int{Name: "char", Size: 1, Encoding: btf.Char}
	var registered string
	_, err = k.RegisterStructOps(&structops.Type{
		Struct: &btf.Struct{Name: "sched_ext_ops", Size: 128 + 8, Members: []btf.Member{
			{Name: "name", Type: &btf.Array{Type: char, Index: &btf.Int{Name: "int", Size: 4}, Nelems: 128}},
			{Name: "dispatch", Type: &btf.Pointer{Target: &btf.FuncProto{Return: &btf.Void{}, Params: []btf.FuncParam{{Name: "cpu", Type: &btf.Int{Name: "int", Size: 4}}}}}, Offset: 128 * 8},
		}},
		InitMember: copyMember("name"),
		Reg: func(m *structops.Map, _ *structops.Link) error {
			registered = strings.TrimRight(string(m.Data()[:128]), "\x00")
			return nil
		},
		Unreg: noUnreg,
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := k.NewCollection(spec)
	if err != nil {
		t.Fatal(err)
	}
	l, err := k.AttachStructOps(c.Maps["minimal_sched"])
	if err != nil {
		t.Fatal(err)
	}
	if registered != "minimal" {
		t.Errorf("registered scheduler %q, want minimal", registered)
	}
	l.Close()
	c.Close()
	checkLeaks(t, k)
}

var _ = sim.Options{}
