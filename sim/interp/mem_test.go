package interp_test

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

func TestLoadsReadLittleEndianAndExtend(t *testing.T) {
	data := []byte{0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88}
	for _, c := range []struct {
		name   string
		in     insn.Insn
		expect uint64
	}{
		{"u8", ldxMem(insn.B, 0, 1, 0), 0x81},
		{"u16", ldxMem(insn.H, 0, 1, 0), 0x8281},
		{"u32", ldxMem(insn.W, 0, 1, 0), 0x84838281},
		{"u64", ldxMem(insn.DW, 0, 1, 0), 0x8887868584838281},
		{"u16 unaligned", ldxMem(insn.H, 0, 1, 3), 0x8584},
		{"s8", ldxMemSX(insn.B, 0, 1, 0), 0xffffffffffffff81},
		{"s16", ldxMemSX(insn.H, 0, 1, 0), 0xffffffffffff8281},
		{"s32", ldxMemSX(insn.W, 0, 1, 0), 0xffffffff84838281},
		{"negative offset", ldxMem(insn.B, 0, 1, -1), 0x88},
	} {
		t.Run(c.name, func(t *testing.T) {
			vm := newTestVM(t)
			addr := vm.data(t, data, mem.PermRW)
			r1 := addr
			if c.in.Off < 0 {
				r1 = addr + 8
			}
			got, err := vm.run(t, prog(c.in, exit()), nil, r1, 0)
			if err != nil || got != c.expect {
				t.Errorf("got %#x, %v; want %#x", got, err, c.expect)
			}
		})
	}
}

func TestStoresWriteOnlyTheirBytes(t *testing.T) {
	for _, c := range []struct {
		name   string
		in     insn.Insn
		expect uint64
	}{
		{"stxb", stxMem(insn.B, 1, 2, 1), 0xaaaaaaaaaaaa88aa},
		{"stxh", stxMem(insn.H, 1, 2, 1), 0xaaaaaaaaaa7788aa},
		{"stxw", stxMem(insn.W, 1, 2, 0), 0xaaaaaaaa55667788},
		{"stxdw", stxMem(insn.DW, 1, 2, 0), 0x1122334455667788},
		{"stb", stMem(insn.B, 1, 0, -1), 0xaaaaaaaaaaaaaaff},
		{"sth", stMem(insn.H, 1, 2, -2), 0xaaaaaaaafffeaaaa},
		{"stw", stMem(insn.W, 1, 4, 7), 0x00000007aaaaaaaa},
		{"stdw sign-extends", stMem(insn.DW, 1, 0, -2), 0xfffffffffffffffe},
	} {
		t.Run(c.name, func(t *testing.T) {
			vm := newTestVM(t)
			addr := vm.data(t, []byte{0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa}, mem.PermRW)
			p := prog(ldImm64(2, 0x1122334455667788), c.in, ldxMem(insn.DW, 0, 1, 0), exit())
			got, err := vm.run(t, p, nil, addr, 0)
			if err != nil || got != c.expect {
				t.Errorf("got %#x, %v; want %#x", got, err, c.expect)
			}
		})
	}
}

func TestAtomics(t *testing.T) {
	const initial = 0x00000001_80000003
	for _, c := range []struct {
		name            string
		size            uint8
		op              int32
		src             uint64
		r0              uint64 // cmpxchg's comparand
		wantMem, wantR0 uint64
		wantSrc         uint64 // src after a fetching op
	}{
		{"add64", insn.DW, insn.ADD, 2, 0, initial + 2, 0, 2},
		{"add32 wraps in 32 bits", insn.W, insn.ADD, 0x80000000, 0, 0x00000001_00000003, 0, 0x80000000},
		{"or64", insn.DW, insn.OR, 0x10, 0, initial | 0x10, 0, 0x10},
		{"and64", insn.DW, insn.AND, 0xff, 0, 3, 0, 0xff},
		{"xor64", insn.DW, insn.XOR, initial, 0, 0, 0, initial},
		{"fetch_add64", insn.DW, insn.ADD | insn.Fetch, 1, 0, initial + 1, 0, initial},
		{"fetch_add32 zero-extends", insn.W, insn.ADD | insn.Fetch, hiGarbage | 1, 0, 0x00000001_80000004, 0, 0x80000003},
		{"fetch_or32", insn.W, insn.OR | insn.Fetch, 4, 0, 0x00000001_80000007, 0, 0x80000003},
		{"fetch_and64", insn.DW, insn.AND | insn.Fetch, 1, 0, 1, 0, initial},
		{"fetch_xor32", insn.W, insn.XOR | insn.Fetch, 3, 0, 0x00000001_80000000, 0, 0x80000003},
		{"xchg64", insn.DW, insn.Xchg, 7, 0, 7, 0, initial},
		{"xchg32", insn.W, insn.Xchg, hiGarbage | 7, 0, 0x00000001_00000007, 0, 0x80000003},
		{"cmpxchg64 hit", insn.DW, insn.Cmpxchg, 9, initial, 9, initial, 9},
		{"cmpxchg64 miss", insn.DW, insn.Cmpxchg, 9, 5, initial, initial, 9},
		{"cmpxchg32 hit ignores r0's upper half", insn.W, insn.Cmpxchg, 9, hiGarbage | 0x80000003, 0x00000001_00000009, 0x80000003, 9},
		{"cmpxchg32 miss zero-extends r0", insn.W, insn.Cmpxchg, 9, 5, initial, 0x80000003, 9},
	} {
		t.Run(c.name, func(t *testing.T) {
			vm := newTestVM(t)
			// Keep the word on the stack: r10-8 is 8-byte aligned.
			p := prog(
				ldImm64(1, initial), stxMem(insn.DW, 10, 1, -8),
				ldImm64(2, c.src), ldImm64(0, c.r0),
				atomicOp(c.size, 10, 2, -8, c.op),
				stxMem(insn.DW, 10, 0, -16), stxMem(insn.DW, 10, 2, -24),
				ldxMem(insn.DW, 0, 10, -8), exit())
			got, err := vm.run(t, p, nil, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			if got != c.wantMem {
				t.Errorf("memory = %#x, want %#x", got, c.wantMem)
			}
			// Read back r0 and src as the program left them.
			p2 := append(p[:len(p)-2:len(p)-2], ldxMem(insn.DW, 0, 10, -16), exit())
			if got, _ := newTestVM(t).run(t, p2, nil, 0, 0); c.op == insn.Cmpxchg && got != c.wantR0 {
				t.Errorf("r0 = %#x, want %#x", got, c.wantR0)
			}
			p3 := append(p[:len(p)-2:len(p)-2], ldxMem(insn.DW, 0, 10, -24), exit())
			if got, _ := newTestVM(t).run(t, p3, nil, 0, 0); got != c.wantSrc {
				t.Errorf("src = %#x, want %#x", got, c.wantSrc)
			}
		})
	}
}

func TestMisalignedAtomicIsStillAtomicallyCorrect(t *testing.T) {
	vm := newTestVM(t)
	addr := vm.data(t, make([]byte, 16), mem.PermRW)
	p := prog(movImm(2, 5), atomicOp(insn.DW, 1, 2, 3, insn.ADD), atomicOp(insn.DW, 1, 2, 3, insn.ADD|insn.Fetch),
		alu64Reg(insn.MOV, 0, 2), exit())
	got, err := vm.run(t, p, nil, addr, 0)
	if err != nil || got != 5 {
		t.Fatalf("fetched %d, %v; want 5", got, err)
	}
	b := make([]byte, 16)
	if err := vm.space.Read(addr, b); err != nil {
		t.Fatal(err)
	}
	if v := binary.LittleEndian.Uint64(b[3:]); v != 10 {
		t.Errorf("memory holds %d, want 10", v)
	}
}

func TestLoadAcquireStoreRelease(t *testing.T) {
	for _, size := range []uint8{insn.B, insn.H, insn.W, insn.DW} {
		p := prog(ldImm64(2, 0x1122334455667788),
			atomicOp(size, 10, 2, -8, insn.StoreRel),
			insn.Insn{Code: insn.STX | insn.ATOMIC | size, Dst: 0, Src: 10, Off: -8, Imm: insn.LoadAcq},
			exit())
		want := uint64(0x1122334455667788) & (allOnes >> (64 - 8*insn.SizeBytes(size)))
		if got := mustRun(t, p); got != want {
			t.Errorf("size %d: got %#x, want %#x", insn.SizeBytes(size), got, want)
		}
	}
}

func TestLocalCalls(t *testing.T) {
	t.Run("callee-saved registers and separate stacks", func(t *testing.T) {
		p := prog(
			movImm(6, 6), movImm(1, 40),
			stMem(insn.DW, 10, -8, 111), // caller's stack slot
			callLocal(4),
			ldxMem(insn.DW, 1, 10, -8), // still 111
			alu64Reg(insn.ADD, 0, 1),
			alu64Reg(insn.ADD, 0, 6), // r6 still 6
			exit(),
			// callee: r0 = r1 + 2, clobbering r6 and its own r10-8
			movImm(6, 1000), stMem(insn.DW, 10, -8, 222),
			alu64Reg(insn.MOV, 0, 1), alu64Imm(insn.ADD, 0, 2), exit())
		if got := mustRun(t, p); got != 42+111+6 {
			t.Errorf("got %d, want %d", got, 42+111+6)
		}
	})
	t.Run("callee frame pointer is 512 bytes lower", func(t *testing.T) {
		p := prog(alu64Reg(insn.MOV, 6, 10), callLocal(3), alu64Reg(insn.SUB, 6, 0), alu64Reg(insn.MOV, 0, 6), exit(),
			alu64Reg(insn.MOV, 0, 10), exit())
		if got := mustRun(t, p); got != 512 {
			t.Errorf("caller fp - callee fp = %d, want 512", got)
		}
	})
	t.Run("callee stack starts zeroed", func(t *testing.T) {
		p := prog(callLocal(1), exit(), ldxMem(insn.DW, 0, 10, -512), exit())
		if got := mustRun(t, p); got != 0 {
			t.Errorf("got %#x", got)
		}
	})
	t.Run("eight frames is the limit", func(t *testing.T) {
		// A function that calls itself forever.
		p := prog(callLocal(1), exit(), callLocal(-1), exit())
		_, err := newTestVM(t).run(t, p, nil, 0, 0)
		var re *interp.RuntimeError
		if !errors.As(err, &re) || !errors.Is(err, uapi.E2BIG) || re.PC != 2 {
			t.Fatalf("got %v, want a call-depth RuntimeError at pc 2", err)
		}
	})
}

func TestMayGotoFallsThroughUntilTheLoopBudget(t *testing.T) {
	// loop: r0 += 1; may_goto +1; goto loop; exit
	mayGoto := insn.Insn{Code: insn.JMP | insn.JCOND, Off: 1}
	p := prog(movImm(0, 0), alu64Imm(insn.ADD, 0, 1), mayGoto, ja(-3), exit())
	vm := newTestVM(t)
	vm.m.MaxInsns = 1 << 26
	if got, err := vm.run(t, p, nil, 0, 0); err != nil || got != 8*1024*1024+1 {
		t.Errorf("iterations = %d, %v; want BPF_MAX_LOOPS+1", got, err)
	}
}

func TestBudgetStopsRunawayPrograms(t *testing.T) {
	vm := newTestVM(t)
	vm.m.MaxInsns = 1000
	_, err := vm.run(t, prog(movImm(0, 0), ja(-1), exit()), nil, 0, 0)
	var re *interp.RuntimeError
	if !errors.As(err, &re) || !errors.Is(err, uapi.E2BIG) || re.PC != 1 {
		t.Fatalf("got %v, want a budget RuntimeError at pc 1", err)
	}
	if vm.m.Executed < 1000 || vm.m.Executed > 1002 {
		t.Errorf("executed %d instructions, want about 1000", vm.m.Executed)
	}
}

func TestFaultsNameThePCAndAddress(t *testing.T) {
	vm := newTestVM(t)
	ro := vm.data(t, []byte{1, 2, 3, 4}, mem.PermRead)
	for _, c := range []struct {
		name   string
		p      []insn.Insn
		r1     uint64
		addr   uint64
		access mem.Access
	}{
		{"read of an unmapped kernel address", prog(movImm(0, 0), ldxMem(insn.DW, 0, 1, 0), exit()), mem.VmallocEnd - 4096, mem.VmallocEnd - 4096, mem.Read},
		{"read of a user address", prog(ldxMem(insn.W, 0, 1, 16), exit()), 0, 16, mem.Read},
		{"write to a read-only page", prog(stMem(insn.B, 1, 1, 9), exit()), ro, ro + 1, mem.Write},
		{"atomic on a read-only page", prog(atomicOp(insn.W, 1, 1, 0, insn.ADD), exit()), ro, ro, mem.Write},
		{"stack underflow into the guard page", prog(ldxMem(insn.DW, 0, 10, 8), exit()), 0, 0, mem.Read},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := vm.run(t, c.p, nil, c.r1, 0)
			var f *mem.Fault
			if !errors.As(err, &f) {
				t.Fatalf("got %v, want a fault", err)
			}
			wantPC := len(c.p) - 2
			if f.PC != wantPC || f.Access != c.access || (c.addr != 0 && f.Addr != c.addr) {
				t.Errorf("fault %+v, want pc %d %s at %#x", f, wantPC, c.access, c.addr)
			}
			if !errors.Is(err, uapi.EFAULT) {
				t.Errorf("fault does not match EFAULT")
			}
		})
	}
}

func TestHelpers(t *testing.T) {
	add := &interp.Helper{ID: 1, Name: "add5", Fn: func(_ *interp.Machine, a, b, c, d, e uint64) (uint64, error) {
		return a + b + c + d + e, nil
	}}
	unwind := &interp.Helper{ID: 2, Name: "throw", Fn: func(_ *interp.Machine, a, _, _, _, _ uint64) (uint64, error) {
		return 0, &interp.Unwind{R0: a}
	}}
	boom := errors.New("boom")
	fail := &interp.Helper{ID: 3, Name: "fail", Fn: func(*interp.Machine, uint64, uint64, uint64, uint64, uint64) (uint64, error) {
		return 0, boom
	}}
	helpers := map[int32]*interp.Helper{1: add, 2: unwind, 3: fail}

	t.Run("arguments and result", func(t *testing.T) {
		p := prog(movImm(1, 1), movImm(2, 2), movImm(3, 3), movImm(4, 4), movImm(5, 5), callHelper(1), exit())
		if got, err := newTestVM(t).run(t, p, helpers, 0, 0); err != nil || got != 15 {
			t.Errorf("got %d, %v", got, err)
		}
	})
	t.Run("unwind ends the program from a nested frame", func(t *testing.T) {
		p := prog(callLocal(2), movImm(0, 1), exit(), movImm(1, 77), callHelper(2), movImm(0, 2), exit())
		if got, err := newTestVM(t).run(t, p, helpers, 0, 0); err != nil || got != 77 {
			t.Errorf("got %d, %v; want 77", got, err)
		}
	})
	t.Run("a helper error stops the program", func(t *testing.T) {
		_, err := newTestVM(t).run(t, prog(callHelper(3), exit()), helpers, 0, 0)
		if !errors.Is(err, boom) {
			t.Errorf("got %v", err)
		}
	})
}

func TestCompileRejectsWhatCannotRun(t *testing.T) {
	none := func(id int32) (*interp.Helper, error) { return nil, errors.New("no helpers") }
	for _, c := range []struct {
		name string
		p    []insn.Insn
	}{
		{"unknown opcode", prog(insn.Insn{Code: 0xff}, exit())},
		{"jump out of range", prog(ja(5), exit())},
		{"jump into lddw", prog(ja(1), ldImm64(0, 1), exit())},
		{"jump back into lddw", prog(ldImm64(0, 1), ja(-2), exit())},
		{"register 12", prog(insn.Insn{Code: insn.ALU64 | insn.MOV | insn.K, Dst: 12}, exit())},
		{"bad byte swap width", prog(insn.Insn{Code: insn.ALU | insn.END, Imm: 8}, exit())},
		{"atomic of one byte", prog(atomicOp(insn.B, 10, 1, -8, insn.ADD), exit())},
		{"unresolved map load", prog([]insn.Insn{{Code: insn.LD | insn.IMM | insn.DW, Src: insn.PseudoMapFD}, {}}, exit())},
		{"unknown helper", prog(callHelper(7), exit())},
		{"movsx32 from 32 bits", prog(insn.Insn{Code: insn.ALU | insn.MOV | insn.X, Off: 32}, exit())},
		{"lddw at the end", prog(insn.Insn{Code: insn.LD | insn.IMM | insn.DW})},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := interp.Compile(c.p, none); err == nil {
				t.Fatal("compiled")
			}
		})
	}
}

func TestCompileAcceptsJumpsAroundLddw(t *testing.T) {
	for _, c := range []struct {
		name string
		p    []insn.Insn
	}{
		{"back to the lddw", prog(ldImm64(0, 1), ja(-3), exit())},
		{"over the lddw", prog(ja(2), ldImm64(0, 1), exit())},
		{"to itself", prog(ja(-1), exit())},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := interp.Compile(c.p, nil); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestRunningOffTheEndIsAnError(t *testing.T) {
	_, err := newTestVM(t).run(t, prog(movImm(0, 1)), nil, 0, 0)
	if !errors.Is(err, uapi.EINVAL) {
		t.Errorf("got %v", err)
	}
}

// A helper calls back into the program (CallFunc, as bpf_loop does): the
// callback runs in its own frame with the arguments given, may call
// functions itself, and the caller's registers R6-R9, its stack and its
// frame survive; the callback address an lddw of BPF_PSEUDO_FUNC loads
// names the function.
func TestHelpersCallBackIntoTheProgram(t *testing.T) {
	calls := 0
	loop := &interp.Helper{ID: 1, Name: "loop3", Fn: func(m *interp.Machine, fn, ctx, _, _, _ uint64) (uint64, error) {
		start, ok := interp.FuncStart(fn)
		if !ok {
			return 0, errors.New("not a callback")
		}
		sum := uint64(0)
		for i := uint64(0); i < 3; i++ {
			v, err := m.CallFunc(start, i, ctx, 0, 0)
			if err != nil {
				return 0, err
			}
			calls++
			sum += v
		}
		return sum, nil
	}}
	pseudoFunc := func(dst uint8, off int32) []insn.Insn {
		return []insn.Insn{{Code: insn.LD | insn.IMM | insn.DW, Dst: dst, Src: insn.PseudoFunc, Imm: off}, {}}
	}
	// main: r6 = 1000, fp-8 = 5; r0 = loop3(cb, fp-8) + r6 + fp-8
	// cb(i, ctx): return *ctx * 10 + sq(i), where sq is a function.
	p := prog(
		movImm(6, 1000),
		stMem(insn.DW, 10, -8, 5),
		pseudoFunc(1, 8), // to cb
		alu64Reg(insn.MOV, 2, 10),
		alu64Imm(insn.ADD, 2, -8),
		callHelper(1),
		alu64Reg(insn.ADD, 0, 6),
		ldxMem(insn.DW, 1, 10, -8),
		alu64Reg(insn.ADD, 0, 1),
		exit(),
		// cb, at 11
		ldxMem(insn.DW, 6, 2, 0),
		alu64Imm(insn.MUL, 6, 10),
		callLocal(2), // sq(r1)
		alu64Reg(insn.ADD, 0, 6),
		exit(),
		// sq, at 16
		alu64Reg(insn.MOV, 0, 1),
		alu64Reg(insn.MUL, 0, 1),
		exit(),
	)
	got, err := newTestVM(t).run(t, p, map[int32]*interp.Helper{1: loop}, 0, 0)
	// 3 calls: 50+0, 50+1, 50+4 = 155; plus r6 (1000) and fp-8 (5).
	if err != nil || got != 1160 || calls != 3 {
		t.Fatalf("got %d, %v after %d calls; want 1160 after 3", got, err, calls)
	}
}
