package sim

import (
	"encoding/binary"
	"fmt"

	"github.com/cilium/ebpf/btf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/structops"
)

// bpf_dummy_ops (net/bpf/bpf_dummy_struct_ops.c): the struct_ops type the
// kernel has for testing, the only one whose programs BPF_PROG_TEST_RUN
// runs. Its members take a struct bpf_dummy_ops_state { int val; }, which
// programs may read and write, and numbers:
//
//	int (*test_1)(struct bpf_dummy_ops_state *cb);  cb may be NULL
//	int (*test_2)(struct bpf_dummy_ops_state *cb, int a1, unsigned short a2,
//	              char a3, unsigned long a4);
//	int (*test_sleepable)(struct bpf_dummy_ops_state *cb);
//
// Only test_sleepable takes sleepable programs. An instance cannot be
// registered (EOPNOTSUPP), as in the kernel: the type exists for test
// runs.

var (
	dummyState = &btf.Struct{Name: "bpf_dummy_ops_state", Size: 4, Members: []btf.Member{
		{Name: "val", Type: &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}},
	}}
	dummyOpsType = func() *structops.Type {
		i32 := &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
		state := &btf.Pointer{Target: dummyState}
		member := func(name string, off uint32, params ...btf.FuncParam) btf.Member {
			return btf.Member{Name: name, Offset: btf.Bits(off * 8), Type: &btf.Pointer{Target: &btf.FuncProto{Return: i32, Params: params}}}
		}
		// The kernel takes the parameters' names, __nullable among
		// them, from the type's stub functions (bpf_dummy_ops__test_1).
		ops := &btf.Struct{Name: "bpf_dummy_ops", Size: 24, Members: []btf.Member{
			member("test_1", 0, btf.FuncParam{Name: "cb" + structops.NullableSuffix, Type: state}),
			member("test_2", 8, btf.FuncParam{Name: "cb", Type: state},
				btf.FuncParam{Name: "a1", Type: i32},
				btf.FuncParam{Name: "a2", Type: &btf.Int{Name: "short unsigned int", Size: 2}},
				btf.FuncParam{Name: "a3", Type: &btf.Int{Name: "char", Size: 1}},
				btf.FuncParam{Name: "a4", Type: &btf.Int{Name: "long unsigned int", Size: 8}}),
			member("test_sleepable", 16, btf.FuncParam{Name: "cb", Type: state}),
		}}
		return &structops.Type{
			Struct: ops,
			CheckMember: func(m structops.Member, p structops.ProgInfo) error {
				if p.Sleepable && m.Name != "test_sleepable" {
					return uapi.EINVAL
				}
				return nil
			},
			StructWrite: func(s *btf.Struct, off, size int) error {
				if s.Name != dummyState.Name {
					return errors.New("only access to bpf_dummy_ops_state is supported")
				}
				if off+size > int(s.Size) {
					return fmt.Errorf("write access at off %d with size %d", off, size)
				}
				return nil
			},
			InitMember: func(structops.Member, []byte, []byte) (bool, error) { return false, uapi.EOPNOTSUPP },
			Reg:        func(*structops.Map, *structops.Link) error { return uapi.EOPNOTSUPP },
			Unreg:      func(*structops.Map, *structops.Link) {},
		}
	}()
)

// prepareStructOpsRun is bpf_struct_ops_test_run's set-up for a
// bpf_dummy_ops program (other struct_ops programs: EOPNOTSUPP): the
// context is the member's arguments, a u64 each; a non-zero first one is
// the user address of a struct bpf_dummy_ops_state, copied in from the
// task's memory and back after the run, the program getting a kernel copy
// of it. A pointer argument that may not be NULL must not be.
func (k *Kernel) prepareStructOpsRun(cpu *CPU, p *Program, ctx []byte) (*runEnv, error) {
	d := p.so.desc
	if d == nil || d.Type != dummyOpsType {
		return nil, errors.Wrap(uapi.EOPNOTSUPP, "struct_ops programs have test runs for bpf_dummy_ops only")
	}
	m, _ := d.Member(int(p.so.member))
	if len(ctx) != 8*len(m.Args) {
		return nil, errors.Wrapf(uapi.EINVAL, "the context holds %d bytes, %s takes %d arguments of 8", len(ctx), m.Name, len(m.Args))
	}
	args := make([]uint64, len(m.Args))
	for i := range args {
		args[i] = binary.LittleEndian.Uint64(ctx[8*i:])
	}
	task := cpu.task.current
	var state [4]byte
	if args[0] != 0 && task.readUser(args[0], state[:]) != 0 {
		return nil, errors.Wrapf(uapi.EFAULT, "struct bpf_dummy_ops_state at %#x", args[0])
	}
	for i, a := range m.Args {
		if a.Struct != nil && !a.Nullable && args[i] == 0 {
			return nil, errors.Wrapf(uapi.EINVAL, "%s's argument %s may not be NULL", m.Name, a.Name)
		}
	}
	sc, err := k.structOpsCPU(cpu.ID)
	if err != nil {
		return nil, err
	}
	user := args[0]
	if user != 0 {
		copy(sc.buf[sc.stateOff:], state[:])
		args[0] = sc.args + uint64(sc.stateOff)
	}
	return &runEnv{r1: sc.putArgs(0, args), output: func() ([]byte, []byte, error) {
		if user != 0 && task.writeUser(user, sc.buf[sc.stateOff:sc.stateOff+4]) != 0 {
			return nil, nil, errors.Wrapf(uapi.EFAULT, "struct bpf_dummy_ops_state at %#x", user)
		}
		return nil, nil, nil
	}}, nil
}
