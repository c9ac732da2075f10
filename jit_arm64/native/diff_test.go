package native_test

import (
	"flag"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/bpfsim/bpfsim/jit_arm64/native"
)

var randomCount = flag.Int("native.random", 2500, "random A64 functions the qemu differential test compares")

func randomCases(seed uint64, n int) []native.Case {
	r := rand.New(rand.NewPCG(seed, 0x6136345f6e6174))
	cases := make([]native.Case, n)
	for i := range cases {
		cases[i] = randomCase(r)
	}
	return cases
}

// TestRandomFunctionsAgreeBetweenQEMUAndTheEmulator is the emulator's
// validation against a real implementation: thousands of random functions
// built from the JIT's instruction forms (see gen_test.go) run under
// qemu-aarch64 and on jit_arm64/emu, and X0, the whole data buffer (every
// value register and the flags are stored into it at the end), the
// callee-saved registers and faulting must agree.
func TestRandomFunctionsAgreeBetweenQEMUAndTheEmulator(t *testing.T) {
	q := qemuOrSkip(t)
	n := *randomCount
	if testing.Short() {
		n = 300
	}
	cases := randomCases(1, n)
	start := time.Now()
	a, err := native.RunNative(q, cases, native.Options{})
	if err != nil {
		t.Fatal(err)
	}
	qemuTime := time.Since(start)
	start = time.Now()
	b, err := native.Emulate(cases)
	if err != nil {
		t.Fatal(err)
	}
	emuTime := time.Since(start)
	insns := 0
	for i := range cases {
		insns += len(cases[i].Code) / 4
		if a[i].Fault != "" || a[i].Clobbered != 0 {
			t.Errorf("case %d under qemu: fault %q, clobbered %#x: the generator must build well-behaved functions\n%s",
				i, a[i].Fault, a[i].Clobbered, native.Disassemble(cases[i].Code))
		}
	}
	mism := native.Compare(cases, a, b)
	for i, m := range mism {
		if i == 5 {
			t.Errorf("... and %d more", len(mism)-5)
			break
		}
		t.Errorf("qemu (a) and the emulator (b) disagree: %v", m)
	}
	t.Logf("%d functions (%d instructions) compared: %d mismatches; qemu %v, emulator %v",
		len(cases), insns, len(mism), qemuTime.Round(time.Millisecond), emuTime.Round(time.Millisecond))
}

// TestCompareReportsEveryKindOfDifference checks the comparison itself:
// each perturbed field of a result must be reported.
func TestCompareReportsEveryKindOfDifference(t *testing.T) {
	cases := randomCases(2, 4)
	a, err := native.Emulate(cases)
	if err != nil {
		t.Fatal(err)
	}
	b, err := native.Emulate(cases)
	if err != nil {
		t.Fatal(err)
	}
	if m := native.Compare(cases, a, b); len(m) != 0 {
		t.Fatalf("identical runs differ: %v", m)
	}
	b[0].X0++
	b[1].Data = append([]byte(nil), b[1].Data...)
	b[1].Data[300] ^= 1
	b[2].Clobbered = 1 << 19
	b[3] = native.Result{Fault: "boom"}
	m := native.Compare(cases, a, b)
	want := []string{"x0", "data[296:304]", "clobbered", "fault"}
	if len(m) != 4 {
		t.Fatalf("got %d mismatches, want 4: %v", len(m), m)
	}
	for i := range m {
		if m[i].Index != i || len(m[i].What) != 1 || m[i].What[0] != want[i] {
			t.Errorf("mismatch %d: %d %v, want %s", i, m[i].Index, m[i].What, want[i])
		}
	}
}

func BenchmarkQEMUBatch(b *testing.B) {
	q := qemuOrSkip(b)
	cases := randomCases(3, 1000)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := native.RunNative(q, cases, native.Options{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(cases))/b.Elapsed().Seconds(), "cases/s")
}

func BenchmarkEmulate(b *testing.B) {
	cases := randomCases(3, 1000)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := native.Emulate(cases); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(cases))/b.Elapsed().Seconds(), "cases/s")
}
