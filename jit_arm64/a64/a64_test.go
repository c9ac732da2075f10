package a64_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/pkg/errors"
	"golang.org/x/arch/arm64/arm64asm"

	"github.com/bpfsim/bpfsim/jit_arm64/a64"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// edgeRegs are the register numbers every form is tried with: the first
// argument registers, the JIT's R0 (x7), a middle one, FP, LR, and 31
// (the zero register or SP, depending on the field).
var edgeRegs = []int{0, 1, 7, 15, 29, 30, 31}

type tcase struct {
	form string
	p    params
	expect
}

func (c tcase) String() string {
	return fmt.Sprintf("%s r=%v is64=%v imm=%d sel=%d", c.form, c.p.r, c.p.is64, c.p.imm, c.p.sel)
}

// allCases enumerates every form with the edge operands: both widths, all
// pairs of edge registers for the first two operands (the others derived
// from them), every edge immediate and selector; then random operands.
func allCases(t testing.TB) []tcase {
	var out []tcase
	for _, f := range forms {
		sels := f.sels
		if sels == 0 {
			sels = 1
		}
		for _, is64 := range []bool{false, true} {
			for i, a := range edgeRegs {
				for j, b := range edgeRegs {
					c := edgeRegs[(i+j+1)%len(edgeRegs)]
					d := edgeRegs[(2*i+j+3)%len(edgeRegs)]
					for _, imm := range f.edges {
						for sel := 0; sel < sels; sel++ {
							p := params{r: [4]int{a, b, c, d}, is64: is64, imm: imm, sel: sel}
							e := f.gen(p)
							if e.err != nil {
								t.Fatalf("%s %+v: unexpected error: %v", f.name, p, e.err)
							}
							out = append(out, tcase{form: f.name, p: p, expect: e})
						}
					}
				}
			}
		}
	}
	// Plus seeded random operands over the full ranges (the fuzz test's
	// input space), 400 per form.
	rng := rand.New(rand.NewSource(3))
	for _, f := range forms {
		for i := 0; i < 400; i++ {
			p := params{r: [4]int{rng.Intn(32), rng.Intn(32), rng.Intn(32), rng.Intn(32)},
				is64: rng.Intn(2) == 1, imm: rng.Int63() - rng.Int63(), sel: rng.Intn(64)}
			if f.sels > 0 {
				p.sel %= f.sels
			}
			e := f.gen(p)
			if e.err != nil {
				t.Fatalf("%s %+v: unexpected error: %v", f.name, p, e.err)
			}
			out = append(out, tcase{form: f.name, p: p, expect: e})
		}
	}
	return out
}

// goWant is the text arm64asm's GNUSyntax must print at address pc.
func (e expect) goWant() string {
	want := e.gnu
	if e.goText != "" {
		want = e.goText
	}
	return strings.ReplaceAll(want, "<T>", fmt.Sprintf(".%+#x", uint64(e.rel)))
}

// objdumpWant is the text objdump must print for the word at address pc:
// it shows PC-relative operands as absolute addresses.
func (e expect) objdumpWant(pc uint64) string {
	target := pc + uint64(e.rel)
	if e.page {
		target = pc&^0xfff + uint64(e.rel)
	}
	return strings.ReplaceAll(e.gnu, "<T>", fmt.Sprintf("%#x", target))
}

func word(b []byte, w uint32) []byte { return binary.LittleEndian.AppendUint32(b, w) }

// checkArm64asm disassembles one case with arm64asm and compares.
func checkArm64asm(c tcase) error {
	inst, err := arm64asm.Decode(word(nil, c.word))
	if c.goText == goUnknown {
		// arm64asm (x/arch) has no LSE or SB decoding: confirm that is
		// still so, then check the fields with the test's own decoder.
		if err == nil {
			return fmt.Errorf("%08x: arm64asm now decodes %q; drop goUnknown for this form", c.word, arm64asm.GNUSyntax(inst))
		}
		if c.word == a64.SB {
			return nil // objdump alone checks SB
		}
		txt, ok := decodeAtomic(c.word)
		if !ok {
			return fmt.Errorf("%08x: the field decoder does not recognise the word (want %q)", c.word, c.gnu)
		}
		if normalize(txt) != normalize(c.gnu) {
			return fmt.Errorf("%08x: field decoder says %q, want %q", c.word, txt, c.gnu)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("%08x: arm64asm: %v (want %q)", c.word, err, c.goWant())
	}
	if got, want := arm64asm.GNUSyntax(inst), c.goWant(); normalize(got) != normalize(want) {
		return fmt.Errorf("%08x: arm64asm says %q, want %q", c.word, got, want)
	}
	return nil
}

func TestEncodingsMatchArm64asm(t *testing.T) {
	cases := allCases(t)
	perForm := map[string]int{}
	for _, c := range cases {
		perForm[c.form]++
		if err := checkArm64asm(c); err != nil {
			t.Errorf("%v: %v", c, err)
		}
	}
	t.Logf("%d encodings in %d forms", len(cases), len(perForm))
}

// objdumpPath installs GNU binutils for AArch64 when it can
// (scripts/install-aarch64-binutils.sh) and returns the objdump to use.
func objdumpPath(t *testing.T) string {
	const tool = "aarch64-linux-gnu-objdump"
	if p, err := exec.LookPath(tool); err == nil {
		return p
	}
	_, file, _, _ := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(file), "..", "..", "scripts", "install-aarch64-binutils.sh")
	out, err := exec.Command("bash", script).CombinedOutput()
	if err != nil {
		t.Skipf("GNU objdump for AArch64 unavailable (%s could not install binutils-aarch64-linux-gnu: %v: %s)",
			filepath.Base(script), err, bytes.TrimSpace(out))
	}
	p, err := exec.LookPath(tool)
	if err != nil {
		t.Skipf("GNU objdump for AArch64 unavailable after installing: %v", err)
	}
	return p
}

// objdump disassembles words as a raw AArch64 image and returns one text per
// word.
func objdump(t *testing.T, words []uint32) []string {
	tool := objdumpPath(t)
	var buf []byte
	for _, w := range words {
		buf = word(buf, w)
	}
	file := filepath.Join(t.TempDir(), "a64.bin")
	if err := os.WriteFile(file, buf, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(tool, "-D", "-b", "binary", "-maarch64", file).Output()
	if err != nil {
		t.Fatalf("%s: %v", tool, err)
	}
	texts := make([]string, len(words))
	got := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		// "     1a4:	d4200000 	brk	#0x0"
		fields := strings.SplitN(sc.Text(), "\t", 3)
		if len(fields) != 3 || !strings.HasSuffix(fields[0], ":") {
			continue
		}
		addr, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(fields[0], ":")), 16, 64)
		if err != nil || addr%4 != 0 || addr/4 >= uint64(len(words)) {
			continue
		}
		if w, err := strconv.ParseUint(strings.TrimSpace(fields[1]), 16, 32); err != nil || uint32(w) != words[addr/4] {
			t.Fatalf("objdump line %q: word does not match %08x", sc.Text(), words[addr/4])
		}
		texts[addr/4] = fields[2]
		got++
	}
	if got != len(words) {
		t.Fatalf("objdump printed %d of %d words", got, len(words))
	}
	return texts
}

func TestEncodingsMatchGNUObjdump(t *testing.T) {
	cases := allCases(t)
	words := make([]uint32, len(cases))
	for i, c := range cases {
		words[i] = c.word
	}
	texts := objdump(t, words)
	for i, c := range cases {
		if got, want := texts[i], c.objdumpWant(uint64(4*i)); normalize(got) != normalize(want) {
			t.Errorf("%v: %08x at %#x: objdump says %q, want %q", c, c.word, 4*i, got, want)
		}
	}
	t.Logf("%d encodings disassembled by %s", len(cases), objdumpPath(t))
}

// TestKnownWords pins encodings to instruction words found in real arm64
// kernel and toolchain output, independent of any disassembler.
func TestKnownWords(t *testing.T) {
	must := func(w uint32, err error) uint32 {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	for _, c := range []struct {
		asm  string
		got  uint32
		want uint32
	}{
		{"stp x29, x30, [sp, #-16]!", must(a64.StorePair(a64.FP, a64.LR, a64.SP, -16, a64.PreIndex)), 0xa9bf7bfd},
		{"ldp x29, x30, [sp], #16", must(a64.LoadPair(a64.FP, a64.LR, a64.SP, 16, a64.PostIndex)), 0xa8c17bfd},
		{"mov x29, sp", must(a64.Mov(a64.FP, a64.SP)), 0x910003fd},
		{"ret", must(a64.Ret(a64.LR)), 0xd65f03c0},
		{"nop", must(a64.Hint(a64.HintNOP)), 0xd503201f},
		{"paciasp", must(a64.Hint(a64.HintPACIASP)), 0xd503233f},
		{"autiasp", must(a64.Hint(a64.HintAUTIASP)), 0xd50323bf},
		{"bti c", must(a64.Hint(a64.HintBTIC)), 0xd503245f},
		{"mov x9, lr", must(a64.MovReg(a64.X9, a64.LR)), 0xaa1e03e9},
		{"mov x0, x7", must(a64.MovReg(a64.X0, a64.X7)), 0xaa0703e0},
		{"br x10", must(a64.Br(a64.X10)), 0xd61f0140},
		{"blr x10", must(a64.Blr(a64.X10)), 0xd63f0140},
		{"brk #0x100 (AARCH64_BREAK_FAULT)", must(a64.Brk(0x100)), 0xd4202000},
		{"dmb ish", must(a64.Dmb(a64.BarrierISH)), 0xd5033bbf},
		{"dsb nsh", must(a64.Dsb(a64.BarrierNSH)), 0xd503379f},
		{"mrs x0, sp_el0", must(a64.Mrs(a64.X0, a64.SysRegSP_EL0)), 0xd5384100},
		{"mrs x0, tpidr_el1", must(a64.Mrs(a64.X0, a64.SysRegTPIDR_EL1)), 0xd538d080},
		{"ldr x10, #8 (PLT)", must(a64.LoadLiteral(a64.X10, 2)), 0x5800004a},
		{"casal x0, x1, [x2]", must(a64.Cas(a64.OrderAcqRel, a64.X0, a64.X1, a64.X2)), 0xc8e0fc41},
		{"ldaddal x0, x1, [x2]", must(a64.AtomicLoadOp(a64.AtomicAdd, a64.OrderAcqRel, a64.X0, a64.X1, a64.X2)), 0xf8e00041},
		{"stadd w0, [x2]", must(a64.AtomicStoreOp(a64.AtomicAdd, a64.OrderNone, a64.W0, a64.X2)), 0xb820005f},
	} {
		if c.got != c.want {
			t.Errorf("%s: got %08x, want %08x", c.asm, c.got, c.want)
		}
	}
	for _, c := range []struct {
		name string
		got  uint32
		want uint32
	}{{"NOP", a64.NOP, 0xd503201f}, {"PACIASP", a64.PACIASP, 0xd503233f}, {"AUTIASP", a64.AUTIASP, 0xd50323bf},
		{"BTIC", a64.BTIC, 0xd503245f}, {"BTIJ", a64.BTIJ, 0xd503249f}, {"BTIJC", a64.BTIJC, 0xd50324df},
		{"ISB", a64.ISB, 0xd5033fdf}, {"SB", a64.SB, 0xd50330ff}, {"BreakFault", a64.BreakFault, 0xd4202000}} {
		if c.got != c.want {
			t.Errorf("%s = %08x, want %08x", c.name, c.got, c.want)
		}
	}
}

// TestBitmaskImmediatesAreExactlyTheManualsSet checks EncodeBitmask against
// DecodeBitMasks: every value the manual can produce encodes, and decodes
// back from the returned fields to itself; the counts are 1302 (32-bit: the
// sum of e*(e-1) for e = 2..32) and 5334 (64-bit: plus 64*63); nothing else
// encodes.
func TestBitmaskImmediatesAreExactlyTheManualsSet(t *testing.T) {
	for _, is64 := range []bool{false, true} {
		vals := bitmaskValues[is64]
		// Per element size e (2..32 or 64): e rotations of e-1 run lengths.
		want := map[bool]int{false: 1302, true: 5334}[is64]
		if len(vals) != want {
			t.Fatalf("is64=%v: the manual gives %d values, want %d", is64, len(vals), want)
		}
		set := map[uint64]bool{}
		for _, v := range vals {
			set[v] = true
			n, immr, imms, ok := a64.EncodeBitmask(v, is64)
			if !ok {
				t.Errorf("is64=%v: %#x not encoded", is64, v)
				continue
			}
			back, ok := decodeBitMasks(int(n), int(imms), int(immr), is64)
			if !ok || back != v {
				t.Errorf("is64=%v: %#x encoded as N=%d immr=%d imms=%d, which decodes to %#x (ok=%v)", is64, v, n, immr, imms, back, ok)
			}
		}
		rng := rand.New(rand.NewSource(1))
		tries := []uint64{0, mask(is64), 0x1234, 0x00ff00ff00ff00fe, 0x5, 1 << 32, 0xffffffff00000000}
		for i := 0; i < 200000; i++ {
			tries = append(tries, rng.Uint64()&mask(is64), uint64(rng.Int63())>>uint(rng.Intn(64)))
		}
		for _, v := range tries {
			if _, _, _, ok := a64.EncodeBitmask(v, is64); ok != set[v] {
				t.Errorf("is64=%v: EncodeBitmask(%#x) ok=%v, manual says %v", is64, v, ok, set[v])
			}
			if a64.IsBitmaskImm(v, is64) != set[v] {
				t.Errorf("is64=%v: IsBitmaskImm(%#x) != %v", is64, v, set[v])
			}
		}
	}
}

// movCount is the number of instructions the kernel's emit_a64_mov_i64
// uses, worked out from the value's halfwords rather than by replaying its
// algorithm: 32-bit values take one instruction per needed halfword of the
// shorter of the MOVZ and MOVN forms; others the halfwords that differ from
// the fill below and including the highest one that does.
func movCount(v uint64) int {
	if v>>32 == 0 {
		hi, lo := v>>16, v&0xffff
		switch {
		case hi&0x8000 != 0 && hi == 0xffff, hi&0x8000 != 0 && lo == 0xffff:
			return 1
		case hi&0x8000 != 0, hi != 0:
			return 2
		}
		return 1
	}
	differ := func(fill uint64) int {
		n := 0
		for s := 0; s < 64; s += 16 {
			if (v>>s)&0xffff != fill {
				n++
			}
		}
		return n
	}
	zeros, onesN := differ(0), differ(0xffff)
	if onesN < zeros {
		return max(onesN, 1)
	}
	return zeros
}

func movValues() []uint64 {
	vals := []uint64{0, 1, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xffffffff, 0x1_0000_0000,
		0xffffffffffffffff, 0xfffffffffffffffe, 0xffffffff00000000, 0xffff0000ffff0000, 0x0000ffff0000ffff,
		0x123456789abcdef0, 0x8000000000000000, 0x7fffffffffffffff, 0xffff800000001234, 0xffffffffffff1234,
		0x0000_1234_0000_0000, 0xffff_1234_ffff_ffff, 0xdead_0000_beef_0000, 0xffffffff80000000}
	rng := rand.New(rand.NewSource(2))
	for i := 0; i < 20000; i++ {
		v := rng.Uint64()
		// Knock out random halfwords to zero or all ones so every sequence
		// length and both MOVZ and MOVN starts occur.
		for s := 0; s < 64; s += 16 {
			switch rng.Intn(3) {
			case 0:
				v &^= 0xffff << s
			case 1:
				v |= 0xffff << s
			}
		}
		vals = append(vals, v)
	}
	return vals
}

func TestMovImm64LoadsTheValueWithTheKernelsLength(t *testing.T) {
	for _, v := range movValues() {
		seq, err := a64.MovImm64(a64.X10, v)
		if err != nil {
			t.Fatalf("%#x: %v", v, err)
		}
		got, reg, err := runMoveWide(seq)
		if err != nil || got != v || reg != 10 {
			t.Fatalf("%#x: sequence %08x loads %#x into x%d (%v)", v, seq, got, reg, err)
		}
		if len(seq) != movCount(v) {
			t.Errorf("%#x: %d instructions, the kernel uses %d", v, len(seq), movCount(v))
		}
	}
}

func TestMovImm32LoadsTheValueWithTheKernelsLength(t *testing.T) {
	for _, v := range movValues() {
		v32 := int32(uint32(v))
		for _, rd := range []a64.Reg{a64.W3, a64.X3} {
			seq, err := a64.MovImm32(rd, v32)
			if err != nil {
				t.Fatalf("%#x: %v", v32, err)
			}
			got, _, err := runMoveWide(seq)
			want := uint64(uint32(v32))
			if rd.Is64() {
				want = uint64(int64(v32)) // the 64-bit variant sign-extends
			}
			if err != nil || got != want {
				t.Fatalf("%v, %#x: sequence %08x loads %#x, want %#x (%v)", rd, v32, seq, got, want, err)
			}
			if len(seq) != movCount(uint64(uint32(v32))) {
				t.Errorf("%v, %#x: %d instructions, the kernel uses %d", rd, v32, len(seq), movCount(uint64(uint32(v32))))
			}
		}
	}
}

func TestMovAddrIsAlwaysThreeInstructions(t *testing.T) {
	for _, v := range movValues() {
		addr := v | 0xffff<<48
		seq, err := a64.AppendMovAddr(nil, a64.X10, addr)
		if err != nil {
			t.Fatal(err)
		}
		got, _, err := runMoveWide(seq)
		if err != nil || got != addr || len(seq) != 3 {
			t.Fatalf("%#x: %d words %08x load %#x (%v)", addr, len(seq), seq, got, err)
		}
	}
	if _, err := a64.AppendMovAddr(nil, a64.X10, 0x0000_1234_5678_9abc); !errors.Is(err, uapi.EINVAL) {
		t.Errorf("user address: err = %v, want EINVAL", err)
	}
}

// TestMovSequencesDisassemble runs the sequences of a few values through
// both disassemblers (the texts the kernel's JIT output shows).
func TestMovSequencesDisassemble(t *testing.T) {
	for _, c := range []struct {
		val  uint64
		want []string
	}{
		{0, []string{"mov w10, #0x0"}},
		{33, []string{"mov w10, #0x21"}},
		{0x12345678, []string{"mov w10, #0x5678", "movk w10, #0x1234, lsl #16"}},
		{0xffffffff, []string{"mov w10, #0xffffffff"}},
		{0x80000000, []string{"mov w10, #0x8000ffff", "movk w10, #0x0"}},
		{0xffffffffffffffff, []string{"mov x10, #0xffffffffffffffff"}},
		{0xffffffffffff1234, []string{"mov x10, #0xffffffffffff1234"}},
		{0x123456789abcdef0, []string{"mov x10, #0x1234000000000000", "movk x10, #0x5678, lsl #32",
			"movk x10, #0x9abc, lsl #16", "movk x10, #0xdef0"}},
		{0xffff_8000_0000_1234, []string{"mov x10, #0xffff000000000000", "movk x10, #0x8000, lsl #32", "movk x10, #0x1234"}},
		{0xffff_8000_ffff_1234, []string{"mov x10, #0xffff8000ffffffff", "movk x10, #0x1234"}},
		{0x0000_0001_0000_0000, []string{"mov x10, #0x100000000"}},
	} {
		seq, err := a64.MovImm64(a64.X10, c.val)
		if err != nil {
			t.Fatal(err)
		}
		if len(seq) != len(c.want) {
			t.Errorf("%#x: %d instructions, want %d", c.val, len(seq), len(c.want))
			continue
		}
		for i, w := range seq {
			inst, err := arm64asm.Decode(word(nil, w))
			if err != nil || normalize(arm64asm.GNUSyntax(inst)) != normalize(c.want[i]) {
				t.Errorf("%#x[%d]: %08x is %q (%v), want %q", c.val, i, w, arm64asm.GNUSyntax(inst), err, c.want[i])
			}
		}
	}
}

// TestEncodeRejects lists operands no encoding exists for: each must be an
// error wrapping EINVAL, never a word.
func TestEncodeRejects(t *testing.T) {
	for _, c := range []struct {
		name string
		enc  func() (uint32, error)
	}{
		{"add imm out of range", func() (uint32, error) { return a64.AddImm(a64.X0, a64.X1, 0x1001) }},
		{"add imm negative", func() (uint32, error) { return a64.AddImm(a64.X0, a64.X1, -1) }},
		{"add imm above 0xfff000", func() (uint32, error) { return a64.SubImm(a64.X0, a64.X1, 0x1000000) }},
		{"add imm with xzr destination", func() (uint32, error) { return a64.AddImm(a64.XZR, a64.X1, 1) }},
		{"cmp imm with sp in the zr field", func() (uint32, error) { return a64.SubsImm(a64.SP, a64.X1, 1) }},
		{"add imm mixed widths", func() (uint32, error) { return a64.AddImm(a64.X0, a64.W1, 1) }},
		{"add reg with sp", func() (uint32, error) { return a64.Add(a64.X0, a64.SP, a64.X1) }},
		{"add reg with ror", func() (uint32, error) { return a64.AddShifted(a64.X0, a64.X1, a64.X2, a64.ROR, 1) }},
		{"w shift amount 32", func() (uint32, error) { return a64.SubShifted(a64.W0, a64.W1, a64.W2, a64.LSL, 32) }},
		{"zero value register", func() (uint32, error) { return a64.Add(a64.Reg(0), a64.X1, a64.X2) }},
		{"logical imm zero", func() (uint32, error) { return a64.AndImm(a64.X0, a64.X1, 0) }},
		{"logical imm all ones", func() (uint32, error) { return a64.OrrImm(a64.W0, a64.W1, 0xffffffff) }},
		{"logical imm not a pattern", func() (uint32, error) { return a64.EorImm(a64.X0, a64.X1, 0x1234) }},
		{"logical imm beyond 32 bits", func() (uint32, error) { return a64.AndImm(a64.W0, a64.W1, 0x1_0000_00ff) }},
		{"ands imm to sp", func() (uint32, error) { return a64.AndsImm(a64.SP, a64.X1, 0xff) }},
		{"logical imm from sp", func() (uint32, error) { return a64.AndImm(a64.X0, a64.SP, 0xff) }},
		{"bic has no immediate", func() (uint32, error) { return a64.LogicImm(a64.BIC, a64.X0, a64.X1, 0xff) }},
		{"lsl 64", func() (uint32, error) { return a64.LslImm(a64.X0, a64.X1, 64) }},
		{"lsr w 32", func() (uint32, error) { return a64.LsrImm(a64.W0, a64.W1, 32) }},
		{"ubfm w immr 32", func() (uint32, error) { return a64.Ubfm(a64.W0, a64.W1, 32, 0) }},
		{"extr 64", func() (uint32, error) { return a64.Extr(a64.X0, a64.X1, a64.X2, 64) }},
		{"rev64 on w", func() (uint32, error) { return a64.Rev64(a64.W0, a64.W1) }},
		{"udiv mixed widths", func() (uint32, error) { return a64.Udiv(a64.X0, a64.X1, a64.W2) }},
		{"madd with sp", func() (uint32, error) { return a64.Madd(a64.X0, a64.X1, a64.X2, a64.SP) }},
		{"movz imm16 too wide", func() (uint32, error) { return a64.Movz(a64.X0, 0x10000, 0) }},
		{"movz w shift 32", func() (uint32, error) { return a64.Movz(a64.W0, 1, 32) }},
		{"movk shift 8", func() (uint32, error) { return a64.Movk(a64.X0, 1, 8) }},
		{"movn to sp", func() (uint32, error) { return a64.Movn(a64.SP, 1, 0) }},
		{"ldr unaligned offset", func() (uint32, error) { return a64.LoadImm(a64.Size64, a64.X0, a64.X1, 4) }},
		{"ldr negative offset", func() (uint32, error) { return a64.LoadImm(a64.Size32, a64.W0, a64.X1, -4) }},
		{"ldr offset too large", func() (uint32, error) { return a64.LoadImm(a64.Size8, a64.W0, a64.X1, 4096) }},
		{"ldr 64 into w", func() (uint32, error) { return a64.LoadImm(a64.Size64, a64.W0, a64.X1, 0) }},
		{"ldrb into x", func() (uint32, error) { return a64.LoadImm(a64.Size8, a64.X0, a64.X1, 0) }},
		{"ldrsw into w", func() (uint32, error) { return a64.LoadSignedImm(a64.Size32, a64.W0, a64.X1, 0) }},
		{"ldrs 64", func() (uint32, error) { return a64.LoadSignedReg(a64.Size64, a64.X0, a64.X1, a64.X2) }},
		{"ldr base xzr", func() (uint32, error) { return a64.LoadImm(a64.Size64, a64.X0, a64.XZR, 0) }},
		{"ldr base w", func() (uint32, error) { return a64.LoadReg(a64.Size64, a64.X0, a64.W1, a64.X2) }},
		{"ldr index sp", func() (uint32, error) { return a64.LoadReg(a64.Size64, a64.X0, a64.X1, a64.SP) }},
		{"str from sp", func() (uint32, error) { return a64.StoreImm(a64.Size64, a64.SP, a64.X1, 0) }},
		{"ldur 256", func() (uint32, error) { return a64.LoadUnscaled(a64.Size64, a64.X0, a64.X1, 256) }},
		{"stur -257", func() (uint32, error) { return a64.StoreUnscaled(a64.Size8, a64.W0, a64.X1, -257) }},
		{"ldr literal out of range", func() (uint32, error) { return a64.LoadLiteral(a64.X0, 1<<18) }},
		{"stp offset not a multiple", func() (uint32, error) { return a64.StorePair(a64.X0, a64.X1, a64.SP, -12, a64.PreIndex) }},
		{"stp offset too far", func() (uint32, error) { return a64.StorePair(a64.X0, a64.X1, a64.SP, 512, a64.PreIndex) }},
		{"ldp w offset too far", func() (uint32, error) { return a64.LoadPair(a64.W0, a64.W1, a64.SP, -260, a64.SignedOffset) }},
		{"stp mixed widths", func() (uint32, error) { return a64.StorePair(a64.X0, a64.W1, a64.SP, 0, a64.PreIndex) }},
		{"ldp same register", func() (uint32, error) { return a64.LoadPair(a64.X3, a64.X3, a64.SP, 16, a64.PostIndex) }},
		{"ldp writeback into data register", func() (uint32, error) { return a64.LoadPair(a64.X3, a64.X4, a64.X4, 16, a64.PostIndex) }},
		{"stp writeback from data register", func() (uint32, error) { return a64.StorePair(a64.X3, a64.X4, a64.X3, -16, a64.PreIndex) }},
		{"pair bad mode", func() (uint32, error) { return a64.StorePair(a64.X0, a64.X1, a64.SP, 0, 0) }},
		{"stxr status overlaps data", func() (uint32, error) { return a64.Stxr(a64.W1, a64.X1, a64.X2) }},
		{"stlxr status overlaps base", func() (uint32, error) { return a64.Stlxr(a64.W2, a64.X1, a64.X2) }},
		{"stxr x status", func() (uint32, error) { return a64.Stxr(a64.X3, a64.X1, a64.X2) }},
		{"ldarb into x", func() (uint32, error) { return a64.Ldar(a64.Size8, a64.X0, a64.X1) }},
		{"ldadd mixed widths", func() (uint32, error) {
			return a64.AtomicLoadOp(a64.AtomicAdd, a64.OrderAcqRel, a64.X0, a64.W1, a64.X2)
		}},
		{"ldadd base w", func() (uint32, error) {
			return a64.AtomicLoadOp(a64.AtomicAdd, a64.OrderNone, a64.X0, a64.X1, a64.W2)
		}},
		{"bad atomic op", func() (uint32, error) { return a64.AtomicLoadOp(5, a64.OrderNone, a64.X0, a64.X1, a64.X2) }},
		{"stswp", func() (uint32, error) { return a64.AtomicStoreOp(a64.AtomicSwp, a64.OrderNone, a64.X0, a64.X2) }},
		{"stadd acquire", func() (uint32, error) { return a64.AtomicStoreOp(a64.AtomicAdd, a64.OrderAcquire, a64.X0, a64.X2) }},
		{"cas bad order", func() (uint32, error) { return a64.Cas(4, a64.X0, a64.X1, a64.X2) }},
		{"b out of range", func() (uint32, error) { return a64.B(1 << 25) }},
		{"bl out of range", func() (uint32, error) { return a64.Bl(-1<<25 - 1) }},
		{"b.cond out of range", func() (uint32, error) { return a64.BCond(a64.CondEQ, 1<<18) }},
		{"b.cond bad condition", func() (uint32, error) { return a64.BCond(16, 0) }},
		{"cbz out of range", func() (uint32, error) { return a64.Cbz(a64.X0, -1<<18-1) }},
		{"cbz sp", func() (uint32, error) { return a64.Cbz(a64.SP, 0) }},
		{"br w register", func() (uint32, error) { return a64.Br(a64.W10) }},
		{"blr sp", func() (uint32, error) { return a64.Blr(a64.SP) }},
		{"adr out of range", func() (uint32, error) { return a64.Adr(a64.X0, 1<<20) }},
		{"adrp out of range", func() (uint32, error) { return a64.Adrp(a64.X0, -1<<20-1) }},
		{"hint 128", func() (uint32, error) { return a64.Hint(128) }},
		{"brk 0x10000", func() (uint32, error) { return a64.Brk(0x10000) }},
		{"dmb option 0", func() (uint32, error) { return a64.Dmb(0) }},
		{"dsb option 16", func() (uint32, error) { return a64.Dsb(16) }},
		{"mrs into w", func() (uint32, error) { return a64.Mrs(a64.W0, a64.SysRegSP_EL0) }},
		{"mrs bad sysreg", func() (uint32, error) { return a64.Mrs(a64.X0, 1) }},
	} {
		w, err := c.enc()
		if !errors.Is(err, uapi.EINVAL) {
			t.Errorf("%s: got word %08x, err %v; want EINVAL", c.name, w, err)
		}
	}
	for _, f := range []func() ([]uint32, error){
		func() ([]uint32, error) { return a64.MovImm64(a64.W0, 1) },
		func() ([]uint32, error) { return a64.MovImm64(a64.SP, 1) },
		func() ([]uint32, error) { return a64.MovImm32(a64.WSP, 1) },
	} {
		if seq, err := f(); !errors.Is(err, uapi.EINVAL) || len(seq) != 0 {
			t.Errorf("mov sequence into a bad register: %08x, %v; want EINVAL and nothing", seq, err)
		}
	}
}

func TestRegisterViews(t *testing.T) {
	for n := 0; n < 31; n++ {
		x, w := a64.X(n), a64.W(n)
		if x.Num() != uint32(n) || w.Num() != uint32(n) || !x.Is64() || w.Is64() || x.AsW() != w || w.AsX() != x {
			t.Errorf("register %d: views inconsistent", n)
		}
		if x.String() != fmt.Sprintf("x%d", n) || w.String() != fmt.Sprintf("w%d", n) {
			t.Errorf("register %d: names %v %v", n, x, w)
		}
	}
	if a64.X(31) != a64.XZR || a64.W(31) != a64.WZR || a64.XZR.IsSP() || !a64.SP.IsSP() || !a64.XZR.IsZR() || a64.SP.IsZR() {
		t.Error("register 31 views inconsistent")
	}
	if a64.SP.String() != "sp" || a64.WSP.String() != "wsp" || a64.XZR.String() != "xzr" || a64.WZR.String() != "wzr" {
		t.Error("register 31 names")
	}
	if a64.Reg(0).Valid() || !a64.W0.Valid() {
		t.Error("zero Reg must be invalid, W0 valid")
	}
	if a64.X7 != a64.X(7) || a64.W30 != a64.W(30) || a64.FP != a64.X29 || a64.LR != a64.X30 {
		t.Error("named registers")
	}
}

// FuzzEncode feeds random operands to a random form: every encoding must
// succeed (forms map operands into range) and disassemble, with arm64asm or
// the field decoder, to the text the form predicts.
func FuzzEncode(f *testing.F) {
	f.Add(uint8(0), uint8(0), uint8(1), uint8(2), uint8(3), true, int64(5), uint8(0))
	f.Add(uint8(20), uint8(31), uint8(31), uint8(31), uint8(31), false, int64(-1), uint8(3))
	f.Add(uint8(40), uint8(29), uint8(30), uint8(7), uint8(9), true, int64(1)<<40, uint8(17))
	f.Fuzz(func(t *testing.T, fi, r0, r1, r2, r3 uint8, is64 bool, imm int64, sel uint8) {
		fm := forms[int(fi)%len(forms)]
		p := params{r: [4]int{int(r0 % 32), int(r1 % 32), int(r2 % 32), int(r3 % 32)}, is64: is64, imm: imm, sel: int(sel)}
		if fm.sels > 0 {
			p.sel %= fm.sels
		}
		e := fm.gen(p)
		if e.err != nil {
			t.Fatalf("%s %+v: %v", fm.name, p, e.err)
		}
		if err := checkArm64asm(tcase{form: fm.name, p: p, expect: e}); err != nil {
			t.Fatalf("%s %+v: %v", fm.name, p, err)
		}
	})
}

// BenchmarkEncode measures one encoded instruction across a mix of forms.
func BenchmarkEncode(b *testing.B) {
	encs := []func() (uint32, error){
		func() (uint32, error) { return a64.AddImm(a64.X0, a64.X1, 0x123) },
		func() (uint32, error) { return a64.Add(a64.X0, a64.X1, a64.X2) },
		func() (uint32, error) { return a64.AndImm(a64.X0, a64.X1, 0x00ff00ff00ff00ff) },
		func() (uint32, error) { return a64.LoadImm(a64.Size64, a64.X7, a64.X25, 8*100) },
		func() (uint32, error) { return a64.StorePair(a64.FP, a64.LR, a64.SP, -16, a64.PreIndex) },
		func() (uint32, error) {
			return a64.AtomicLoadOp(a64.AtomicAdd, a64.OrderAcqRel, a64.X1, a64.X1, a64.X10)
		},
		func() (uint32, error) { return a64.BCond(a64.CondCS, 100) },
		func() (uint32, error) { return a64.LslImm(a64.X11, a64.X2, 3) },
	}
	b.ReportAllocs()
	var sink uint32
	for i := 0; b.Loop(); i++ {
		w, err := encs[i%len(encs)]()
		if err != nil {
			b.Fatal(err)
		}
		sink ^= w
	}
	_ = sink
}

// BenchmarkMovImm64 measures the constant-loading sequence, appending into
// a reused buffer as a JIT pass would.
func BenchmarkMovImm64(b *testing.B) {
	vals := movValues()[:1024]
	buf := make([]uint32, 0, 8)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		var err error
		buf, err = a64.AppendMovImm64(buf[:0], a64.X10, vals[i%len(vals)])
		if err != nil {
			b.Fatal(err)
		}
	}
}
