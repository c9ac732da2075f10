package native_test

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"strings"
	"testing"
	"time"

	"github.com/bpfsim/bpfsim/jit_arm64/a64"
	"github.com/bpfsim/bpfsim/jit_arm64/native"
)

// qemuOrSkip returns qemu-aarch64's path, installing Debian's qemu-user
// through scripts/qemu-user.sh if needed, or skips the test saying why.
func qemuOrSkip(t testing.TB) string {
	t.Helper()
	p, err := native.QEMU()
	if err != nil {
		t.Skipf("qemu-aarch64 unavailable, native comparison skipped: %v", err)
	}
	return p
}

func w(word uint32, err error) uint32 {
	if err != nil {
		panic(err)
	}
	return word
}

func code(words ...uint32) []byte {
	b := make([]byte, 0, 4*len(words))
	for _, x := range words {
		b = binary.LittleEndian.AppendUint32(b, x)
	}
	return b
}

var ret = w(a64.Ret(a64.LR))

func le64(vs ...uint64) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint64(b, v)
	}
	return b
}

// handCases are functions with known results, one per behaviour of the
// calling convention.
func handCases() (cases []native.Case, want []native.Result) {
	add := func(name string, c native.Case, r native.Result) {
		_ = name
		cases = append(cases, c)
		want = append(want, r)
	}
	// x0 = len + first doubleword; stores the sum into the second.
	add("reads data and length, writes data", native.Case{
		Code: code(
			w(a64.LoadImm(a64.Size64, a64.X2, a64.X0, 0)),
			w(a64.Add(a64.X2, a64.X2, a64.X1)),
			w(a64.StoreImm(a64.Size64, a64.X2, a64.X0, 8)),
			w(a64.MovReg(a64.X0, a64.X2)),
			ret),
		Data: le64(100, 0),
	}, native.Result{X0: 116, Data: le64(100, 116)})
	// Uses the stack like the JIT: push fp/lr and x19, a 32-byte frame.
	add("stack frame and callee-saved registers restored", native.Case{
		Code: code(
			w(a64.StorePair(a64.FP, a64.LR, a64.SP, -16, a64.PreIndex)),
			w(a64.Mov(a64.FP, a64.SP)),
			w(a64.StorePair(a64.X19, a64.X20, a64.SP, -16, a64.PreIndex)),
			w(a64.SubImm(a64.SP, a64.SP, 32)),
			w(a64.Movz(a64.X19, 7, 0)),
			w(a64.StoreImm(a64.Size64, a64.X19, a64.SP, 8)),
			w(a64.LoadImm(a64.Size64, a64.X0, a64.SP, 8)),
			w(a64.LoadImm(a64.Size64, a64.X1, a64.SP, 16)), // zero-filled stack
			w(a64.Add(a64.X0, a64.X0, a64.X1)),
			w(a64.AddImm(a64.SP, a64.SP, 32)),
			w(a64.LoadPair(a64.X19, a64.X20, a64.SP, 16, a64.PostIndex)),
			w(a64.LoadPair(a64.FP, a64.LR, a64.SP, 16, a64.PostIndex)),
			ret),
		Data: []byte{},
	}, native.Result{X0: 7, Data: []byte{}})
	// Reads the registers the convention fixes: x2 (zero) and x19.
	add("x2 is zero and x19 holds its pattern", native.Case{
		Code: code(w(a64.Add(a64.X0, a64.X2, a64.X19)), ret),
	}, native.Result{X0: native.CalleeSavedPattern(19), Data: []byte{}})
	add("clobbering x20 and x29 is reported", native.Case{
		Code: code(w(a64.Movz(a64.X20, 1, 0)), w(a64.Movz(a64.X29, 1, 0)), w(a64.Movz(a64.X0, 5, 0)), ret),
	}, native.Result{X0: 5, Data: []byte{}, Clobbered: 1<<20 | 1<<29})
	add("an unbalanced stack is reported", native.Case{
		Code: code(w(a64.SubImm(a64.SP, a64.SP, 16)), w(a64.Movz(a64.X0, 6, 0)), ret),
	}, native.Result{X0: 6, Data: []byte{}, Clobbered: native.SPClobbered})
	// Ptrs: the first field becomes the buffer's address; the function
	// loads through it.
	add("pointer fields are relocated", native.Case{
		Code: code(
			w(a64.LoadImm(a64.Size64, a64.X1, a64.X0, 0)),
			w(a64.LoadImm(a64.Size64, a64.X2, a64.X1, 8)),
			w(a64.AddImm(a64.X1, a64.X1, 16)),
			w(a64.StoreImm(a64.Size64, a64.X1, a64.X0, 0)), // offset 16 once unrelocated
			w(a64.MovReg(a64.X0, a64.X2)),
			ret),
		Data: le64(0, 0xabcdef),
		Ptrs: []int{0},
	}, native.Result{X0: 0xabcdef, Data: le64(16, 0xabcdef)})
	return cases, want
}

func checkResults(t *testing.T, got, want []native.Result) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d results, want %d", len(got), len(want))
	}
	for i := range want {
		g, wr := got[i], want[i]
		if g.Fault != wr.Fault || g.X0 != wr.X0 || g.Clobbered != wr.Clobbered || !bytes.Equal(g.Data, wr.Data) {
			t.Errorf("case %d: got %+v, want %+v", i, g, wr)
		}
	}
}

func TestHandWrittenCasesGiveTheirResultsOnBothRunners(t *testing.T) {
	cases, want := handCases()
	t.Run("emulator", func(t *testing.T) {
		got, err := native.Emulate(cases)
		if err != nil {
			t.Fatal(err)
		}
		checkResults(t, got, want)
	})
	t.Run("qemu", func(t *testing.T) {
		q := qemuOrSkip(t)
		got, err := native.RunNative(q, cases, native.Options{})
		if err != nil {
			t.Fatal(err)
		}
		checkResults(t, got, want)
	})
}

func TestFaultingCaseIsReportedAndTheRestStillRun(t *testing.T) {
	q := qemuOrSkip(t)
	ok := native.Case{Code: code(w(a64.Movz(a64.X0, 1, 0)), ret), Data: []byte{1}}
	cases := []native.Case{
		ok,
		{Code: code(w(a64.Movz(a64.X1, 0, 0)), w(a64.LoadImm(a64.Size64, a64.X0, a64.X1, 0)), ret)}, // NULL load
		ok,
		{Code: code(w(a64.Brk(1)), ret)},
		{Code: code(0x00000000, ret)}, // udf #0
		ok,
	}
	for _, run := range []struct {
		name string
		fn   native.Runner
	}{{"qemu", native.Native(q, native.Options{})}, {"emulator", native.Emulate}} {
		t.Run(run.name, func(t *testing.T) {
			got, err := run.fn(cases)
			if err != nil {
				t.Fatal(err)
			}
			for i, r := range got {
				faulted := i == 1 || i == 3 || i == 4
				if (r.Fault != "") != faulted {
					t.Errorf("case %d: fault %q, want faulted=%v", i, r.Fault, faulted)
				}
				if !faulted && (r.X0 != 1 || !bytes.Equal(r.Data, []byte{1})) {
					t.Errorf("case %d: %+v", i, r)
				}
			}
			if run.name == "qemu" {
				for i, sig := range map[int]string{1: "segmentation fault", 3: "trace/breakpoint trap", 4: "illegal instruction"} {
					if !strings.Contains(got[i].Fault, sig) {
						t.Errorf("case %d: fault %q does not name %q", i, got[i].Fault, sig)
					}
				}
			}
		})
	}
}

func TestHungCaseTimesOut(t *testing.T) {
	q := qemuOrSkip(t)
	cases := []native.Case{
		{Code: code(w(a64.B(0)))},
		{Code: code(w(a64.Movz(a64.X0, 9, 0)), ret)},
	}
	got, err := native.RunNative(q, cases, native.Options{Timeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(got[0].Fault, "timed out") || got[1].Fault != "" || got[1].X0 != 9 {
		t.Errorf("got %+v", got)
	}
}

func TestChunksSplitABatchWithoutChangingResults(t *testing.T) {
	q := qemuOrSkip(t)
	cases, want := handCases()
	got, err := native.RunNative(q, cases, native.Options{Chunk: 2})
	if err != nil {
		t.Fatal(err)
	}
	checkResults(t, got, want)
}

func TestWriteELFIsAValidStaticExecutable(t *testing.T) {
	text := code(ret)
	img, err := native.WriteELF(native.TextBase+native.HeaderSize(2), []native.Segment{
		{Vaddr: native.TextBase + native.HeaderSize(2), Data: text, Memsz: 4, Flags: elf.PF_R | elf.PF_X},
		{Vaddr: native.DataBase + native.HeaderSize(2) + 16, Data: []byte{1, 2}, Memsz: 4096, Flags: elf.PF_R | elf.PF_W},
	})
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.NewFile(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	if f.Type != elf.ET_EXEC || f.Machine != elf.EM_AARCH64 || f.Class != elf.ELFCLASS64 || f.Entry != native.TextBase+native.HeaderSize(2) {
		t.Errorf("header: %+v", f.FileHeader)
	}
	if len(f.Progs) != 2 || f.Progs[1].Memsz != 4096 || f.Progs[1].Filesz != 2 || f.Progs[0].Flags != elf.PF_R|elf.PF_X {
		t.Fatalf("program headers: %+v", f.Progs)
	}
	got := make([]byte, 4)
	if _, err := f.Progs[0].ReadAt(got, 0); err != nil || !bytes.Equal(got, text) {
		t.Errorf("text segment reads % x (%v)", got, err)
	}
	if _, err := native.WriteELF(0, []native.Segment{{Vaddr: native.DataBase, Data: []byte{1}, Memsz: 1}}); err == nil {
		t.Error("a segment not congruent to its file offset was accepted")
	}
}
