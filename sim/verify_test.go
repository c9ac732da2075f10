package sim_test

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/kdiff"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// verifierCase is a program and what the kernel's verifier says of it: ""
// for accepted, else the errno and the last line of its log.
type verifierCase struct {
	name  string
	typ   ebpf.ProgramType
	insns func(m *sim.Map) asm.Instructions
	errno uapi.Errno
	msg   string
}

func fixed(insns ...asm.Instruction) func(*sim.Map) asm.Instructions {
	return func(*sim.Map) asm.Instructions { return insns }
}

// lookup is "r0 = bpf_map_lookup_elem(m, &(u32){0} at fp-4)".
func lookup(m *sim.Map) asm.Instructions {
	return asm.Instructions{
		asm.StoreImm(asm.RFP, -4, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, m.FD()).WithReference("m"),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
	}
}

func withLookup(tail ...asm.Instruction) func(*sim.Map) asm.Instructions {
	return func(m *sim.Map) asm.Instructions { return append(lookup(m), tail...) }
}

// xdpPacket loads data into r2 and data_end into r3.
var xdpPacket = []asm.Instruction{
	asm.LoadMem(asm.R2, asm.R1, 0, asm.Word),
	asm.LoadMem(asm.R3, asm.R1, 4, asm.Word),
}

var verifierCases = []verifierCase{
	{"returning nothing", ebpf.XDP, fixed(asm.Return()), uapi.EACCES, "R0 !read_ok"},
	{"reading an unset register", ebpf.XDP, fixed(asm.Mov.Reg(asm.R0, asm.R5), asm.Return()), uapi.EACCES, "R5 !read_ok"},
	{"writing the frame pointer", ebpf.XDP, fixed(asm.Mov.Imm(asm.R10, 0), asm.Mov.Imm(asm.R0, 0), asm.Return()), uapi.EACCES, "frame pointer is read only"},
	{"stack below 512 bytes", ebpf.XDP, fixed(asm.Mov.Imm(asm.R0, 0), asm.StoreMem(asm.RFP, -520, asm.R0, asm.DWord), asm.Return()),
		uapi.EACCES, "invalid write to stack R10 off=-520 size=8"},
	{"stack above the frame", ebpf.XDP, fixed(asm.LoadMem(asm.R0, asm.RFP, 0, asm.DWord), asm.Return()),
		uapi.EACCES, "invalid read from stack R10 off=0 size=8"},
	{"misaligned stack access", ebpf.XDP, fixed(asm.StoreImm(asm.RFP, -6, 0, asm.Word), asm.Mov.Imm(asm.R0, 0), asm.Return()),
		uapi.EACCES, "misaligned stack access off 0+0+-6 size 4"},
	{"uninitialised stack is readable by root", ebpf.XDP, fixed(asm.LoadMem(asm.R0, asm.RFP, -8, asm.DWord), asm.Return()), 0, ""},
	{"a map value without the null check", ebpf.XDP, func(m *sim.Map) asm.Instructions {
		return append(asm.Instructions{
			asm.FnGetPrandomU32.Call(),
			asm.StoreMem(asm.RFP, -4, asm.R0, asm.Word),
			asm.LoadMapPtr(asm.R1, m.FD()).WithReference("m"),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -4),
			asm.FnMapLookupElem.Call(),
		}, asm.LoadMem(asm.R0, asm.R0, 0, asm.DWord), asm.Return())
	}, uapi.EACCES, "R0 invalid mem access 'map_value_or_null'"},
	{"an array value at a constant index needs no null check", ebpf.XDP, withLookup(asm.LoadMem(asm.R0, asm.R0, 0, asm.DWord), asm.Return()), 0, ""},
	{"an array value at a constant index past the end does", ebpf.XDP, func(m *sim.Map) asm.Instructions {
		insns := lookup(m)
		insns[0] = asm.StoreImm(asm.RFP, -4, 1, asm.Word)
		return append(insns, asm.LoadMem(asm.R0, asm.R0, 0, asm.DWord), asm.Return())
	}, uapi.EACCES, "R0 invalid mem access 'map_value_or_null'"},
	{"a map value with the null check", ebpf.XDP, withLookup(
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.LoadMem(asm.R0, asm.R0, 0, asm.DWord),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return()), 0, ""},
	{"past the end of a map value", ebpf.XDP, withLookup(
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.LoadMem(asm.R0, asm.R0, 8, asm.DWord),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return()), uapi.EACCES, "R0 min value is outside of the allowed memory range"},
	{"an index with no lower bound into a map value", ebpf.XDP, withLookup(
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.Mov.Reg(asm.R6, asm.R0),
		asm.FnKtimeGetNs.Call(),
		asm.Add.Reg(asm.R6, asm.R0),
		asm.LoadMem(asm.R0, asm.R6, 0, asm.Byte),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return()), uapi.EINVAL, "math between map_value pointer and register with unbounded min value is not allowed"},
	{"an unbounded index into a map value", ebpf.XDP, withLookup(
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.Mov.Reg(asm.R6, asm.R0),
		asm.FnGetPrandomU32.Call(),
		asm.And.Imm(asm.R0, 0x7fffffff),
		asm.Add.Reg(asm.R6, asm.R0),
		asm.LoadMem(asm.R0, asm.R6, 0, asm.Byte),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return()), uapi.EACCES, "R6 unbounded memory access, make sure to bounds check any such access"},
	{"a bounded index into a map value", ebpf.XDP, withLookup(
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.Mov.Reg(asm.R6, asm.R0),
		asm.FnGetPrandomU32.Call(),
		asm.And.Imm(asm.R0, 7),
		asm.Add.Reg(asm.R6, asm.R0),
		asm.LoadMem(asm.R0, asm.R6, 0, asm.Byte),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return()), 0, ""},
	{"a packet byte without a bounds check", ebpf.XDP, fixed(append(xdpPacket,
		asm.LoadMem(asm.R0, asm.R2, 0, asm.Byte),
		asm.Return())...), uapi.EACCES, "R2 offset is outside of the packet"},
	{"a packet byte after a bounds check", ebpf.XDP, fixed(append(xdpPacket,
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 1),
		asm.Mov.Imm(asm.R0, 0),
		asm.JGT.Reg(asm.R4, asm.R3, "out"),
		asm.LoadMem(asm.R0, asm.R2, 0, asm.Byte),
		asm.Return().WithSymbol("out"))...), 0, ""},
	{"one byte past the bounds check", ebpf.XDP, fixed(append(xdpPacket,
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 1),
		asm.Mov.Imm(asm.R0, 0),
		asm.JGT.Reg(asm.R4, asm.R3, "out"),
		asm.LoadMem(asm.R0, asm.R2, 1, asm.Byte),
		asm.Return().WithSymbol("out"))...), uapi.EACCES, "R2 offset is outside of the packet"},
	{"a scalar as the key", ebpf.XDP, func(m *sim.Map) asm.Instructions {
		return asm.Instructions{
			asm.LoadMapPtr(asm.R1, m.FD()).WithReference("m"),
			asm.Mov.Imm(asm.R2, 0),
			asm.FnMapLookupElem.Call(),
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		}
	}, uapi.EACCES, "R2 type=scalar expected=fp, pkt, pkt_meta, map_key, map_value, mem, ringbuf_mem, buf, trusted_ptr_"},
	{"a scalar as the map", ebpf.XDP, fixed(
		asm.Mov.Imm(asm.R1, 0),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -8),
		asm.FnMapLookupElem.Call(),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return()), uapi.EACCES, "R1 type=scalar expected=map_ptr"},
	{"an endless loop", ebpf.XDP, fixed(
		asm.Mov.Imm(asm.R0, 0),
		asm.JEq.Imm(asm.R0, 0, "loop").WithSymbol("loop"),
		asm.Return()), uapi.EINVAL, "infinite loop detected at insn 1"},
	{"a bounded loop", ebpf.XDP, fixed(
		asm.Mov.Imm(asm.R0, 0),
		asm.Mov.Imm(asm.R1, 10),
		asm.Add.Imm(asm.R0, 3).WithSymbol("loop"),
		asm.Sub.Imm(asm.R1, 1),
		asm.JNE.Imm(asm.R1, 0, "loop"),
		asm.Return()), 0, ""},
	{"a loop too long to explore", ebpf.XDP, fixed(
		asm.Mov.Imm(asm.R0, 0),
		asm.Add.Imm(asm.R0, 1).WithSymbol("loop"),
		asm.JLT.Imm(asm.R0, 1000000, "loop"),
		asm.Return()), uapi.E2BIG, "BPF program is too large. Processed 1000001 insn"},
	{"dead code after exit", ebpf.XDP, fixed(
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 1),
		asm.Return()), uapi.EINVAL, "unreachable insn 2"},
	{"writing to the context", ebpf.XDP, fixed(
		asm.StoreImm(asm.R1, 0, 0, asm.Word),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return()), uapi.EACCES, "invalid bpf_context access off=0 size=4"},
	{"multiplying a pointer", ebpf.XDP, fixed(
		asm.Mul.Imm(asm.R1, 2),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return()), uapi.EACCES, "R1 pointer arithmetic with *= operator prohibited"},
	{"32-bit arithmetic on a pointer", ebpf.XDP, fixed(
		asm.Add.Imm32(asm.R1, 2),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return()), uapi.EACCES, "R1 32-bit pointer arithmetic prohibited"},
	{"adding two pointers", ebpf.XDP, fixed(
		asm.Add.Reg(asm.R1, asm.RFP),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return()), uapi.EACCES, "R1 pointer += pointer prohibited"},
	{"dividing by a constant zero", ebpf.XDP, fixed(
		asm.Mov.Imm(asm.R0, 1),
		asm.Div.Imm(asm.R0, 0),
		asm.Return()), uapi.EINVAL, "div by zero"},
	{"a helper that does not exist", ebpf.XDP, fixed(
		asm.Instruction{OpCode: asm.OpCode(asm.JumpClass).SetJumpOp(asm.Call), Constant: 100000},
		asm.Return()), uapi.EINVAL, "invalid func unknown#100000"},
	{"a pointer in r0 from a subprogram", ebpf.XDP, fixed(
		asm.Call.Label("f"),
		asm.Return(),
		asm.Mov.Reg(asm.R0, asm.RFP).WithSymbol("f"),
		asm.Return()), uapi.EINVAL, "cannot return stack pointer to the caller"},
	{"a subprogram reading the caller's stack", ebpf.XDP, fixed(
		asm.Mov.Imm(asm.R1, 7),
		asm.StoreMem(asm.RFP, -8, asm.R1, asm.DWord),
		asm.Mov.Reg(asm.R1, asm.RFP),
		asm.Add.Imm(asm.R1, -8),
		asm.Call.Label("f"),
		asm.Return(),
		asm.LoadMem(asm.R0, asm.R1, 0, asm.DWord).WithSymbol("f"),
		asm.Return()), 0, ""},
	{"legacy packet access outside socket programs", ebpf.XDP, fixed(
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadAbs(0, asm.Byte),
		asm.Return()), uapi.EINVAL, "BPF_LD_[ABS|IND] instructions not allowed for this program type"},
}

// TestVerifierVerdicts checks bpfsim's verdicts and messages on programs
// with a known fault, and, where this machine can load BPF programs, that
// the kernel says the same.
func TestVerifierVerdicts(t *testing.T) {
	k := newKernel(t, nil)
	m := newMap(t, k, &ebpf.MapSpec{Name: "m", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	_, kerr := kdiff.OpenKernel()
	var km *ebpf.Map
	if kerr == nil {
		var err error
		if km, err = ebpf.NewMap(&ebpf.MapSpec{Name: "m", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1}); err != nil {
			t.Fatal(err)
		}
		defer km.Close()
	} else {
		t.Logf("kernel comparison skipped: %v", kerr)
	}
	for _, c := range verifierCases {
		t.Run(c.name, func(t *testing.T) {
			insns := c.insns(m)
			if err := insns.AssociateMap("m", m); err != nil && !strings.Contains(err.Error(), "unreferenced") {
				t.Fatal(err)
			}
			_, err := k.NewProgram(&ebpf.ProgramSpec{Name: "v", Type: c.typ, Instructions: insns, License: "GPL"})
			checkVerdict(t, "bpfsim", err, c)
			if km == nil {
				return
			}
			kinsns := c.insns(m)
			_ = kinsns.AssociateMap("m", km)
			p, err := ebpf.NewProgramWithOptions(&ebpf.ProgramSpec{Name: "v", Type: c.typ, Instructions: kinsns, License: "GPL"},
				ebpf.ProgramOptions{LogLevel: ebpf.LogLevelBranch})
			if err == nil {
				p.Close()
			}
			checkVerdict(t, "the kernel", kernelMsg(err), c)
		})
	}
}

// kernelMsg turns the kernel's verifier error into one whose message is the
// log's last meaningful line.
func kernelMsg(err error) error {
	var ve *ebpf.VerifierError
	if !errors.As(err, &ve) {
		return err
	}
	for i := len(ve.Log) - 1; i >= 0; i-- {
		l := strings.TrimSpace(ve.Log[i])
		if l == "" || strings.HasPrefix(l, "processed ") || strings.HasPrefix(l, "cur state:") || strings.HasPrefix(l, "old state:") {
			continue
		}
		return &verifier.Error{Errno: verdictErrno(err), Msg: l}
	}
	return err
}

func verdictErrno(err error) uapi.Errno {
	for _, e := range []uapi.Errno{uapi.EACCES, uapi.EINVAL, uapi.E2BIG, uapi.EFAULT} {
		if errors.Is(err, e) {
			return e
		}
	}
	return 0
}

func checkVerdict(t *testing.T, who string, err error, c verifierCase) {
	t.Helper()
	if c.msg == "" {
		if err != nil {
			t.Errorf("%s refused it: %v", who, err)
		}
		return
	}
	var ve *verifier.Error
	if !errors.As(err, &ve) {
		t.Errorf("%s: got %v, want the verifier to refuse it: %s", who, err, c.msg)
		return
	}
	if verdictErrno(err) != c.errno || !strings.Contains(ve.Msg, c.msg) {
		t.Errorf("%s: got %v (%v), want %v: %q", who, ve.Msg, verdictErrno(err), c.errno, c.msg)
	}
}

// TestVerifierLogMatchesKernel compares bpfsim's verifier log with the
// kernel's, line by line, for a program that passes and one that fails:
// the live register table of level 2, each instruction with the registers
// it changed, the state at every new path, the error. Map addresses and
// the kernel's own debugging lines (stack liveness) are left out.
func TestVerifierLogMatchesKernel(t *testing.T) {
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel comparison skipped: %v", err)
	}
	k := newKernel(t, nil)
	m := newMap(t, k, &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	km, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer km.Close()
	prog := func(check int32) asm.Instructions {
		return asm.Instructions{
			asm.Mov.Imm(asm.R6, 0),
			asm.StoreMem(asm.RFP, -8, asm.R6, asm.DWord),
			asm.LoadMapPtr(asm.R1, 0).WithReference("m"),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -8),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, check, "out"),
			asm.LoadMem(asm.R0, asm.R0, 0, asm.DWord),
			asm.Return(),
			asm.Mov.Imm(asm.R0, 1).WithSymbol("out"),
			asm.Return(),
		}
	}
	for _, c := range []struct {
		name  string
		check int32
		level ebpf.LogLevel
	}{
		{"accepted, level 1", 0, ebpf.LogLevelBranch},
		{"accepted, level 2", 0, ebpf.LogLevelInstruction},
		{"refused, level 1", 1, ebpf.LogLevelBranch},
		{"refused, level 2", 1, ebpf.LogLevelInstruction},
	} {
		t.Run(c.name, func(t *testing.T) {
			insns := prog(c.check)
			if err := insns.AssociateMap("m", m); err != nil {
				t.Fatal(err)
			}
			var simLog string
			p, err := k.NewProgramWithOptions(&ebpf.ProgramSpec{Type: ebpf.XDP, Instructions: insns, License: "GPL"}, sim.ProgramOptions{LogLevel: c.level})
			var ve *verifier.Error
			switch {
			case err == nil:
				simLog = p.VerifierLog()
			case errors.As(err, &ve):
				simLog = ve.Log
			default:
				t.Fatal(err)
			}
			kinsns := prog(c.check)
			if err := kinsns.AssociateMap("m", km); err != nil {
				t.Fatal(err)
			}
			var kernelLog []string
			kp, err := ebpf.NewProgramWithOptions(&ebpf.ProgramSpec{Type: ebpf.XDP, Instructions: kinsns, License: "GPL"}, ebpf.ProgramOptions{LogLevel: c.level})
			var kve *ebpf.VerifierError
			switch {
			case err == nil:
				kernelLog = strings.Split(kp.VerifierLog, "\n")
				kp.Close()
			case errors.As(err, &kve):
				kernelLog = kve.Log
			default:
				t.Fatal(err)
			}
			want := normalizeLog(kernelLog)
			got := normalizeLog(strings.Split(simLog, "\n"))
			t.Logf("%d lines compared", len(want))
			if len(want) == 0 && (c.check != 0 || c.level == ebpf.LogLevelInstruction) {
				t.Fatal("the kernel's log is empty: nothing compared")
			}
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("logs differ\nbpfsim:\n%s\nkernel:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

var mapAddr = regexp.MustCompile(`0x[0-9a-f]{16}`)

func normalizeLog(lines []string) []string {
	var out []string
	for _, l := range lines {
		l = strings.TrimRight(l, " ")
		switch {
		case l == "", strings.HasPrefix(l, "(0) "), strings.HasPrefix(l, "processed "):
			continue // the kernel's stack liveness debugging, the statistics
		}
		out = append(out, mapAddr.ReplaceAllString(l, "MAP"))
	}
	return out
}

// TestDirectValueAccessVerdicts checks the loads of a map value's address
// (BPF_PSEUDO_MAP_VALUE) that the kernel refuses before verifying
// anything, errno and message, against the kernel where it can load.
func TestDirectValueAccessVerdicts(t *testing.T) {
	k := newKernel(t, nil)
	_, kerr := kdiff.OpenKernel()
	if kerr != nil {
		t.Logf("kernel comparison skipped: %v", kerr)
	}
	for _, c := range []struct {
		name  string
		typ   ebpf.MapType
		n     uint32
		off   uint32
		errno uapi.Errno
		msg   string
	}{
		{"a one-element array", ebpf.Array, 1, 4, 0, ""},
		{"an offset past the value", ebpf.Array, 1, 8, uapi.EINVAL, "invalid access to map value pointer, value_size=8 off=8"},
		// The kernel-internal ENOTSUPP reaches user space here.
		{"an array of two elements", ebpf.Array, 2, 0, uapi.ENOTSUPP, "invalid access to map value pointer, value_size=8 off=0"},
		{"a per-CPU array", ebpf.PerCPUArray, 1, 0, uapi.EINVAL, "no direct value access support for this map type"},
		{"a hash", ebpf.Hash, 1, 0, uapi.EINVAL, "no direct value access support for this map type"},
	} {
		t.Run(c.name, func(t *testing.T) {
			spec := &ebpf.MapSpec{Type: c.typ, KeySize: 4, ValueSize: 8, MaxEntries: c.n}
			prog := func(fd int) *ebpf.ProgramSpec {
				return &ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: asm.Instructions{
					asm.LoadMapValue(asm.R0, fd, c.off),
					asm.Mov.Imm(asm.R0, 2),
					asm.Return(),
				}}
			}
			check := func(who string, err error, msg string) {
				t.Helper()
				var errno uapi.Errno
				errors.As(err, &errno)
				if errno != c.errno || !strings.Contains(msg, c.msg) {
					t.Errorf("%s: got errno %d (%v), want %d and %q", who, errno, err, c.errno, c.msg)
				}
			}
			m := newMap(t, k, spec)
			p, err := k.NewProgram(prog(m.FD()))
			if err == nil {
				p.Close()
			}
			var ve *verifier.Error
			msg := ""
			if errors.As(err, &ve) {
				msg = ve.Msg
			}
			check("bpfsim", err, msg)
			if kerr != nil {
				return
			}
			km, err := ebpf.NewMap(spec)
			if err != nil {
				t.Fatal(err)
			}
			defer km.Close()
			kp, err := ebpf.NewProgramWithOptions(prog(km.FD()), ebpf.ProgramOptions{LogLevel: ebpf.LogLevelBranch})
			if err == nil {
				kp.Close()
			}
			check("the kernel", err, fmt.Sprint(err))
		})
	}
}
