package jit_arm64_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"sync"
	"testing"

	"github.com/bpfsim/bpfsim/jit_arm64"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// text maps size bytes of read-only executable memory in the modules
// region, filled with BRK as the JIT maps it.
func text(t testing.TB, s *mem.Space, size uint64, huge bool) uint64 {
	t.Helper()
	addr, err := s.Alloc(size, mem.AllocOptions{Region: mem.RegionModules, Perm: mem.PermRW, Huge: huge, Name: "text"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Bytes(addr, size)
	if err != nil {
		t.Fatal(err)
	}
	jit_arm64.FillHole(b)
	if err := s.SetPerm(addr, (size+mem.PageSize-1)&^(mem.PageSize-1), mem.PermRX); err != nil {
		t.Fatal(err)
	}
	return addr
}

func read(t testing.TB, s *mem.Space, addr uint64, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if err := s.Read(addr, b); err != nil {
		t.Fatal(err)
	}
	return b
}

func words(b []byte) []uint32 {
	w := make([]uint32, len(b)/4)
	for i := range w {
		w[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	return w
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + 1)
	}
	return b
}

// aliases returns the temporary writable aliases mapped in s.
func aliases(s *mem.Space) []mem.Area {
	var out []mem.Area
	for _, a := range s.Areas() {
		if a.AliasOf != 0 {
			out = append(out, a)
		}
	}
	return out
}

func TestBreakFaultIsBrk0x100(t *testing.T) {
	if jit_arm64.BreakFault != 0xd4202000 {
		t.Errorf("AARCH64_BREAK_FAULT = %#x, want 0xd4202000", jit_arm64.BreakFault)
	}
	// BRK #imm16: 0xd4200000 | imm16 << 5.
	if imm := jit_arm64.BreakFault >> 5 & 0xffff; imm != 0x100 || jit_arm64.BreakFault&^(0xffff<<5) != 0xd4200000 {
		t.Errorf("BreakFault is not brk #0x100: imm %#x", imm)
	}
}

func TestDirectWritesToRXMemoryFault(t *testing.T) {
	s := mem.New()
	addr := text(t, s, mem.PageSize, false)
	err := s.Write(addr+16, []byte{1, 2, 3, 4})
	var f *mem.Fault
	if !errors.As(err, &f) || f.Access != mem.Write || !errors.Is(err, uapi.EFAULT) {
		t.Fatalf("kernel write to RX text: %v, want a write fault", err)
	}
	tlb := s.NewTLB()
	if f := tlb.Store32(addr+16, 0); f == nil || f.Access != mem.Write {
		t.Fatalf("program store to RX text: %v, want a write fault", f)
	}
	if got := words(read(t, s, addr+16, 4))[0]; got != jit_arm64.BreakFault {
		t.Errorf("a refused write changed the text: %#x", got)
	}
}

func TestInsnCopyWritesRXMemoryAndLeavesNoAlias(t *testing.T) {
	for _, c := range []struct {
		name      string
		huge      bool
		off, size uint64
		pages     uint64 // aliases the copy maps
	}{
		{"one instruction", false, 8, 4, 1},
		{"within a page", false, 64, 1000, 1},
		{"up to the end of a page", false, mem.PageSize - 64, 64, 1},
		{"across two pages", false, mem.PageSize - 8, 16, 2},
		{"across three pages", false, mem.PageSize - 4, mem.PageSize + 8, 3},
		{"in a huge mapping", true, 5*mem.PageSize - 12, 24, 2},
		{"empty", false, 0, 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := mem.New()
			size := uint64(4 * mem.PageSize)
			if c.huge {
				size = mem.HugeSize
			}
			base := text(t, s, size, c.huge)
			p := jit_arm64.NewPatcher(s)
			src := pattern(int(c.size))
			got, err := p.InsnCopy(base+c.off, src)
			if err != nil || got != base+c.off {
				t.Fatalf("InsnCopy = %#x, %v", got, err)
			}
			if !bytes.Equal(read(t, s, base+c.off, len(src)), src) {
				t.Error("the text does not hold the copied bytes")
			}
			// The bytes around the copy are untouched.
			if c.off >= 4 && words(read(t, s, base+c.off-4, 4))[0] != jit_arm64.BreakFault {
				t.Error("the instruction before the copy changed")
			}
			if w := words(read(t, s, base+c.off+c.size, 4))[0]; w != jit_arm64.BreakFault {
				t.Errorf("the instruction after the copy changed: %#x", w)
			}
			if st := p.Stats(); st.Aliases != c.pages || st.Flushes != 1 {
				t.Errorf("stats %+v, want %d aliases and one flush", st, c.pages)
			}
			if a := aliases(s); len(a) != 0 {
				t.Errorf("aliases left mapped: %+v", a)
			}
			if err := s.Write(base+c.off, []byte{0}); err == nil {
				t.Error("the text became writable")
			}
			if c.huge {
				if a, _ := s.AreaOf(base); !a.Huge {
					t.Error("patching split the huge mapping")
				}
			}
		})
	}
}

func TestInsnSetFillsWholeInstructionSlots(t *testing.T) {
	for _, c := range []struct {
		name      string
		off, size uint64
	}{
		{"one slot", 0, 4},
		{"across a page", mem.PageSize - 64, 128},
		{"two whole pages", 0, 2 * mem.PageSize},
		{"a size that is not a multiple of 4", 32, 42},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := mem.New()
			base := text(t, s, 3*mem.PageSize, false)
			p := jit_arm64.NewPatcher(s)
			// Start from non-BRK code so the fill is visible.
			if _, err := p.InsnCopy(base, pattern(3*mem.PageSize)); err != nil {
				t.Fatal(err)
			}
			const nop = 0xd503201f
			if got, err := p.InsnSet(base+c.off, nop, c.size); err != nil || got != base+c.off {
				t.Fatalf("InsnSet = %#x, %v", got, err)
			}
			all := read(t, s, base, 3*mem.PageSize)
			want := pattern(3 * mem.PageSize)
			for i := c.off; i+4 <= c.off+c.size; i += 4 {
				binary.LittleEndian.PutUint32(want[i:], nop)
			}
			if !bytes.Equal(all, want) {
				t.Error("the text differs from whole slots set to the instruction and the rest untouched")
			}
			if a := aliases(s); len(a) != 0 {
				t.Errorf("aliases left mapped: %+v", a)
			}
		})
	}
}

func TestBadPatchesAreRefusedWithoutWriting(t *testing.T) {
	s := mem.New()
	base := text(t, s, 2*mem.PageSize, false)
	p := jit_arm64.NewPatcher(s)
	before := read(t, s, base, 2*mem.PageSize)
	for _, c := range []struct {
		name string
		err  error
		want error
	}{
		{"copy to a misaligned address", func() error { _, err := p.InsnCopy(base+2, pattern(8)); return err }(), uapi.EINVAL},
		{"set at a misaligned address", func() error { _, err := p.InsnSet(base+1, 0, 8); return err }(), uapi.EINVAL},
		{"write at a misaligned address", p.InsnWrite(base+6, 0), uapi.EINVAL},
		// The area ends after two pages; its guard page is not mapped.
		{"copy running into the guard page", func() error { _, err := p.InsnCopy(base+mem.PageSize, pattern(mem.PageSize+4)); return err }(), uapi.EFAULT},
		{"set running into the guard page", func() error { _, err := p.InsnSet(base+8, 0, 2*mem.PageSize); return err }(), uapi.EFAULT},
		{"copy to unmapped memory", func() error { _, err := p.InsnCopy(mem.ModulesEnd-mem.PageSize, pattern(4)); return err }(), uapi.EFAULT},
		{"range that wraps around", func() error { _, err := p.InsnSet(^uint64(0)-3, 0, 8); return err }(), uapi.EINVAL},
		{"bpf_arch_text_copy failure", p.TextCopy(base+mem.PageSize, pattern(mem.PageSize+4)), uapi.EINVAL},
		{"bpf_arch_text_invalidate failure", p.TextInvalidate(base+2, 4), uapi.EINVAL},
	} {
		if !errors.Is(c.err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, c.err, c.want)
		}
	}
	if !bytes.Equal(read(t, s, base, 2*mem.PageSize), before) {
		t.Error("a refused patch changed the text")
	}
	if a := aliases(s); len(a) != 0 {
		t.Errorf("aliases left mapped: %+v", a)
	}
	if st := p.Stats(); st.Flushes != 0 {
		t.Errorf("refused patches flushed the instruction cache %d times", st.Flushes)
	}
}

func TestPatchTextNosyncReplacesOneInstruction(t *testing.T) {
	s := mem.New()
	base := text(t, s, mem.PageSize, false)
	p := jit_arm64.NewPatcher(s)
	const bl = 0x94000010
	gen := p.ICacheGen()
	if err := p.PatchTextNosync(base+12, bl); err != nil {
		t.Fatal(err)
	}
	if got, err := p.InsnRead(base + 12); err != nil || got != bl {
		t.Errorf("InsnRead = %#x, %v", got, err)
	}
	if got, _ := p.InsnRead(base + 8); got != jit_arm64.BreakFault {
		t.Errorf("neighbour = %#x", got)
	}
	if p.ICacheGen() == gen {
		t.Error("the instruction cache was not flushed")
	}
	if err := p.InsnWrite(base+16, bl); err != nil {
		t.Fatal(err)
	}
	if p.ICacheGen() != gen+1 {
		t.Error("InsnWrite flushed the instruction cache (only the _nosync patch does)")
	}
}

func TestTextHooksCopyAndInvalidate(t *testing.T) {
	s := mem.New()
	base := text(t, s, 2*mem.PageSize, false)
	p := jit_arm64.NewPatcher(s)
	code := pattern(200)
	if err := p.TextCopy(base+mem.PageSize-100, code); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(read(t, s, base+mem.PageSize-100, 200), code) {
		t.Fatal("TextCopy did not copy")
	}
	if err := p.TextInvalidate(base+mem.PageSize-100, 200); err != nil {
		t.Fatal(err)
	}
	for i, w := range words(read(t, s, base+mem.PageSize-100, 200)) {
		if w != jit_arm64.BreakFault {
			t.Fatalf("word %d after invalidation = %#x, want BRK #0x100", i, w)
		}
	}
}

func TestFillHoleWritesBRKInEveryWholeSlot(t *testing.T) {
	b := bytes.Repeat([]byte{0xaa}, 1030)
	jit_arm64.FillHole(b)
	for i, w := range words(b) {
		if w != jit_arm64.BreakFault {
			t.Fatalf("word %d = %#x", i, w)
		}
	}
	if b[1028] != 0xaa || b[1029] != 0xaa {
		t.Error("the bytes after the last whole slot were written")
	}
}

// Patches from several goroutines (the JIT finalizing images, programs
// being freed) are serialized by the patch lock and never see each
// other's alias.
func TestConcurrentPatchesOfOnePack(t *testing.T) {
	s := mem.New()
	base := text(t, s, mem.HugeSize, true)
	p := jit_arm64.NewPatcher(s)
	const workers, rounds, span = 4, 50, 3 * mem.PageSize / 2
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			dst := base + uint64(w)*span*2
			code := bytes.Repeat([]byte{byte(w + 1)}, span)
			for r := 0; r < rounds; r++ {
				if _, err := p.InsnCopy(dst, code); err != nil {
					errs <- err
					return
				}
				if _, err := p.InsnSet(dst, jit_arm64.BreakFault, span); err != nil {
					errs <- err
					return
				}
			}
			if _, err := p.InsnCopy(dst, code); err != nil {
				errs <- err
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for w := 0; w < workers; w++ {
		if !bytes.Equal(read(t, s, base+uint64(w)*span*2, span), bytes.Repeat([]byte{byte(w + 1)}, span)) {
			t.Errorf("worker %d's region lost its code", w)
		}
	}
	if a := aliases(s); len(a) != 0 {
		t.Errorf("aliases left mapped: %d", len(a))
	}
}

// TestWriteLiteral64ReplacesAnAlignedLiteral: an 8-byte literal in RX
// memory is replaced through an alias; a misaligned one is EINVAL and
// nothing is written; no alias remains.
func TestWriteLiteral64ReplacesAnAlignedLiteral(t *testing.T) {
	s := mem.New()
	addr := text(t, s, mem.PageSize, false)
	p := jit_arm64.NewPatcher(s)
	if err := p.WriteLiteral64(addr+8, 0x1122334455667788); err != nil {
		t.Fatal(err)
	}
	if got := binary.LittleEndian.Uint64(read(t, s, addr+8, 8)); got != 0x1122334455667788 {
		t.Fatalf("literal %#x", got)
	}
	if err := p.WriteLiteral64(addr+4, 1); !errors.Is(err, uapi.EINVAL) {
		t.Fatalf("misaligned literal: %v, want EINVAL", err)
	}
	if got := binary.LittleEndian.Uint32(read(t, s, addr+4, 4)); got != jit_arm64.BreakFault {
		t.Fatalf("the refused write changed the text: %#08x", got)
	}
	if n := len(aliases(s)); n != 0 {
		t.Fatalf("%d aliases remain", n)
	}
}
