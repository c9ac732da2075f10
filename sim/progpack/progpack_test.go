package progpack_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/bpfsim/bpfsim/jit_arm64"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/progpack"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

func newAllocator(t testing.TB, o progpack.Options) (*progpack.Allocator, *mem.Space) {
	t.Helper()
	s := mem.New()
	a, err := progpack.New(s, jit_arm64.NewPatcher(s), o)
	if err != nil {
		t.Fatal(err)
	}
	return a, s
}

func mustAlloc(t testing.TB, a *progpack.Allocator, proglen, align uint32) *progpack.Binary {
	t.Helper()
	b, err := a.Alloc(proglen, align)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func read(t testing.TB, s *mem.Space, addr uint64, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if err := s.Read(addr, b); err != nil {
		t.Fatal(err)
	}
	return b
}

// code is a recognisable program of n bytes (n a multiple of 4).
func code(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := 0; i < n; i += 4 {
		binary.LittleEndian.PutUint32(b[i:], 0x91000000|uint32(seed)<<10|uint32(i))
	}
	return b
}

// jit writes prog the way a JIT does, into the RW image, and finalizes.
func jit(t testing.TB, a *progpack.Allocator, prog []byte) *progpack.Binary {
	t.Helper()
	b := mustAlloc(t, a, uint32(len(prog)), 4)
	if err := a.Space().Write(b.RWImage(), prog); err != nil {
		t.Fatal(err)
	}
	if err := a.Finalize(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func allBRK(b []byte) bool {
	for i := 0; i+4 <= len(b); i += 4 {
		if binary.LittleEndian.Uint32(b[i:]) != jit_arm64.BreakFault {
			return false
		}
	}
	return true
}

func isWriteFault(err error) bool {
	var f *mem.Fault
	return errors.As(err, &f) && f.Access == mem.Write && errors.Is(err, uapi.EFAULT)
}

func areasNamed(s *mem.Space, name string) int {
	n := 0
	for _, a := range s.Areas() {
		if a.Name == name {
			n++
		}
	}
	return n
}

func TestImageSizesAreRoundedLikeTheKernel(t *testing.T) {
	for _, c := range []struct {
		mode    progpack.Mode
		proglen uint32
		size    uint32
	}{
		// round_up(proglen + header + 16, 64)
		{progpack.Packs, 1, 64},
		{progpack.Packs, 40, 64},
		{progpack.Packs, 41, 128},
		{progpack.Packs, 1000, 1024},
		{progpack.Packs, 4096, 4160},
		// round_up(proglen + header + 128, PAGE_SIZE)
		{progpack.NoPacks, 1, 4096},
		{progpack.NoPacks, 3960, 4096},
		{progpack.NoPacks, 3961, 8192},
	} {
		t.Run(fmt.Sprintf("%v/%d", c.mode, c.proglen), func(t *testing.T) {
			a, s := newAllocator(t, progpack.Options{Mode: c.mode})
			b := mustAlloc(t, a, c.proglen, 4)
			if b.Size() != c.size || b.Len() != c.proglen {
				t.Errorf("size %d for %d bytes, want %d", b.Size(), c.proglen, c.size)
			}
			hdr := read(t, s, b.RWHeader(), 4)
			if got := binary.LittleEndian.Uint32(hdr); got != c.size {
				t.Errorf("rw_header->size = %d, want %d", got, c.size)
			}
			st := a.Stats()
			if c.mode == progpack.Packs && st.ChunksUsed != int(c.size/progpack.ChunkSize) {
				t.Errorf("%d chunks used, want %d", st.ChunksUsed, c.size/progpack.ChunkSize)
			}
			if st.Charged != uint64(c.size) || st.Images != 1 || st.ImageBytes != uint64(c.size) {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// The image starts at a random offset, aligned as asked, inside the
// header's first chunk (packs) or page, so that the header is found by
// rounding the program address down, and the image still fits.
func TestImageStartsAlignedInTheHeadersFirstChunk(t *testing.T) {
	for _, mode := range []progpack.Mode{progpack.Packs, progpack.NoPacks} {
		for _, align := range []uint32{1, 4, 8} {
			for _, pick := range []string{"lowest", "highest"} {
				t.Run(fmt.Sprintf("%v/align %d/%s", mode, align, pick), func(t *testing.T) {
					var holes []uint32
					rnd := func(n uint32) uint32 {
						holes = append(holes, n)
						if pick == "lowest" {
							return 0
						}
						return n - 1
					}
					a, _ := newAllocator(t, progpack.Options{Mode: mode, Rand: rnd})
					first := uint64(progpack.ChunkSize)
					if mode == progpack.NoPacks {
						first = mem.PageSize
					}
					for _, proglen := range []uint32{1, 37, 40, 100, 3000} {
						b := mustAlloc(t, a, proglen, align)
						off := b.Image() - b.Header()
						if off < progpack.HeaderSize || off >= first || off%uint64(align) != 0 {
							t.Errorf("proglen %d: image at header+%d", proglen, off)
						}
						if off+uint64(proglen) > uint64(b.Size()) {
							t.Errorf("proglen %d: image at header+%d overruns %d bytes", proglen, off, b.Size())
						}
						if a.Hdr(b.Image()) != b.Header() || b.RWImage()-b.RWHeader() != off {
							t.Errorf("proglen %d: Hdr(%#x) = %#x, header %#x", proglen, b.Image(), a.Hdr(b.Image()), b.Header())
						}
					}
					// hole = min(size - (proglen + header), first - header):
					// 55 for one byte in a 64-byte chunk, 4087 in a page.
					if want := uint32(first) - 9; holes[0] != want {
						t.Errorf("hole for proglen 1 = %d, want %d", holes[0], want)
					}
				})
			}
		}
	}
}

func TestPackAllocIsFirstFitInTheBitmap(t *testing.T) {
	a, _ := newAllocator(t, progpack.Options{})
	pa := func(size uint64) uint64 {
		t.Helper()
		addr, err := a.PackAlloc(size)
		if err != nil {
			t.Fatal(err)
		}
		return addr
	}
	base := pa(64) // chunk 0
	if base%mem.HugeSize != 0 || base < mem.ModulesStart || base >= mem.ModulesEnd {
		t.Fatalf("pack at %#x is not a 2 MiB block in the modules region", base)
	}
	chunk := func(addr uint64) uint64 { return (addr - base) / progpack.ChunkSize }
	b := pa(100) // chunks 1-2
	c := pa(1)   // chunk 3
	if chunk(b) != 1 || chunk(c) != 3 {
		t.Fatalf("b at chunk %d, c at %d, want 1 and 3", chunk(b), chunk(c))
	}
	if err := a.PackFree(b, 100); err != nil {
		t.Fatal(err)
	}
	e := pa(192) // three chunks: the hole at 1-2 is too small
	d := pa(64)  // one chunk: the first free one
	f := pa(64)  // the remaining chunk of the hole
	g := pa(64)  // after e
	for name, c := range map[string][2]uint64{"3 chunks": {chunk(e), 4}, "1st single": {chunk(d), 1}, "2nd single": {chunk(f), 2}, "3rd single": {chunk(g), 7}} {
		if c[0] != c[1] {
			t.Errorf("%s at chunk %d, want %d", name, c[0], c[1])
		}
	}
	if st := a.Stats(); st.Packs != 1 || st.ChunksUsed != 8 || st.ChunksFree != progpack.ChunkCount-8 {
		t.Errorf("stats %+v", st)
	}
}

func TestFullPacksSpillIntoANewPackAndFirstFitScansPacksInOrder(t *testing.T) {
	a, _ := newAllocator(t, progpack.Options{})
	big, err := a.PackAlloc(progpack.PackSize - progpack.ChunkSize)
	if err != nil {
		t.Fatal(err)
	}
	two, err := a.PackAlloc(2 * progpack.ChunkSize) // does not fit the last chunk
	if err != nil {
		t.Fatal(err)
	}
	if two/mem.HugeSize == big/mem.HugeSize {
		t.Fatal("a two-chunk request went into a pack with one free chunk")
	}
	one, err := a.PackAlloc(progpack.ChunkSize)
	if err != nil {
		t.Fatal(err)
	}
	if one != big+progpack.PackSize-progpack.ChunkSize {
		t.Errorf("one chunk at %#x, want the first pack's last chunk %#x", one, big+progpack.PackSize-progpack.ChunkSize)
	}
	st := a.Stats()
	if st.Packs != 2 || st.PacksCreated != 2 || st.HugeMappings != 2 || st.MappedBytes != 2*progpack.PackSize || st.ChunksUsed != progpack.ChunkCount+2 {
		t.Errorf("stats %+v", st)
	}
}

func TestAPackIsUnmappedWhenItsLastChunkGoes(t *testing.T) {
	a, s := newAllocator(t, progpack.Options{})
	x := jit(t, a, code(400, 1))
	y := jit(t, a, code(400, 2))
	pack, _ := s.AreaOf(x.Header())
	if !pack.Huge || pack.Perm != mem.PermRX || pack.Name != "bpf_prog_pack" || pack.Start != a.Hdr(pack.Start) {
		t.Fatalf("pack area %+v", pack)
	}
	if err := a.Free(x); err != nil {
		t.Fatal(err)
	}
	if st := a.Stats(); st.Packs != 1 || st.PacksFreed != 0 {
		t.Fatalf("after freeing one of two images: %+v", st)
	}
	if err := a.Free(y); err != nil {
		t.Fatal(err)
	}
	st := a.Stats()
	if st.Packs != 0 || st.PacksFreed != 1 || st.ChunksUsed != 0 || st.MappedBytes != 0 || st.Charged != 0 || st.Images != 0 {
		t.Errorf("after freeing the last image: %+v", st)
	}
	if _, ok := s.AreaOf(pack.Start); ok {
		t.Error("the empty pack is still mapped")
	}
	if err := s.Read(y.Image(), make([]byte, 4)); !errors.Is(err, uapi.EFAULT) {
		t.Errorf("reading the freed pack: %v, want a fault", err)
	}
	if s.Backed() != 0 {
		t.Errorf("%d bytes of backing memory left", s.Backed())
	}
}

// TestARecycledPackReadsAsBRKThroughout: a pack whose memory is that of a
// freed pack (packs come and go as programs do) is the illegal
// instruction in every slot, as a fresh, filled one is: every image's
// chunks were refilled when it was freed.
func TestARecycledPackReadsAsBRKThroughout(t *testing.T) {
	a, s := newAllocator(t, progpack.Options{})
	var bins []*progpack.Binary
	for i := 0; i < 40; i++ {
		bins = append(bins, jit(t, a, code(100+96*i, byte(i))))
	}
	for _, b := range bins {
		if err := a.Free(b); err != nil {
			t.Fatal(err)
		}
	}
	b := jit(t, a, code(400, 9))
	if st := a.Stats(); st.PacksCreated != 2 || st.PacksFreed != 1 {
		t.Fatalf("stats %+v: want a second pack", st)
	}
	pack, _ := s.AreaOf(b.Header())
	img := read(t, s, pack.Start, int(pack.Size))
	start := int(b.Header() - pack.Start)
	if !allBRK(img[:start]) || !allBRK(img[start+int(b.Size()):]) {
		t.Fatal("the recycled pack holds something other than BRK outside the new image")
	}
}

// The acceptance item: freed program regions read as BRK, so a jump into
// freed code traps, and RX memory refuses data writes.
func TestFreedImagesReadAsBRKAndRXMemoryRefusesWrites(t *testing.T) {
	a, s := newAllocator(t, progpack.Options{})
	keep := jit(t, a, code(256, 1))
	gone := jit(t, a, code(1000, 2))
	if !bytes.Equal(read(t, s, gone.Image(), 1000), code(1000, 2)) {
		t.Fatal("the finalized image does not hold the program")
	}
	for _, addr := range []uint64{gone.Header(), gone.Image(), gone.Image() + 996} {
		if err := s.Write(addr, []byte{0, 0, 0, 0}); !isWriteFault(err) {
			t.Errorf("kernel write to RX %#x: %v", addr, err)
		}
		tlb := s.NewTLB()
		if f := tlb.Store32(addr, 0); f == nil || f.Access != mem.Write {
			t.Errorf("program store to RX %#x: %v", addr, f)
		}
	}
	hdr, size := gone.Header(), int(gone.Size())
	if err := a.Free(gone); err != nil {
		t.Fatal(err)
	}
	if region := read(t, s, hdr, size); !allBRK(region) {
		t.Errorf("the freed region does not read as BRK #0x100: % x", region[:32])
	}
	if !bytes.Equal(read(t, s, keep.Image(), 256), code(256, 1)) {
		t.Error("freeing one image changed its neighbour")
	}
	if err := s.Write(hdr, []byte{1}); !isWriteFault(err) {
		t.Errorf("write to the freed region: %v", err)
	}
}

func TestFinalizeLeavesNoWritableCopy(t *testing.T) {
	for _, mode := range []progpack.Mode{progpack.Packs, progpack.NoPacks} {
		t.Run(mode.String(), func(t *testing.T) {
			a, s := newAllocator(t, progpack.Options{Mode: mode})
			prog := code(600, 3)
			b := mustAlloc(t, a, uint32(len(prog)), 4)
			rw, rwImage := b.RWHeader(), b.RWImage()
			if err := s.Write(rwImage, prog); err != nil {
				t.Fatalf("JIT write to the RW image: %v", err)
			}
			if mode == progpack.Packs {
				if rw == b.Header() {
					t.Fatal("the RW header is the RX header")
				}
				if err := s.Write(b.Image(), prog[:4]); !isWriteFault(err) {
					t.Errorf("the RX image is writable before Finalize: %v", err)
				}
				if !allBRK(read(t, s, b.Header(), int(b.Size()))) {
					t.Error("the RX chunk is not BRK before Finalize")
				}
				if st := a.Stats(); st.RWBuffers != 1 || st.RWBytes != uint64(b.Size()) {
					t.Errorf("stats before Finalize %+v", st)
				}
			}
			if err := a.Finalize(b); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(read(t, s, b.Image(), len(prog)), prog) {
				t.Error("the RX image does not hold the program")
			}
			if got := binary.LittleEndian.Uint32(read(t, s, b.Header(), 4)); got != b.Size() {
				t.Errorf("ro_header->size = %d, want %d", got, b.Size())
			}
			if b.RWHeader() != 0 || b.RWImage() != 0 || !b.Finalized() {
				t.Error("the image still offers a writable copy")
			}
			if mode == progpack.Packs {
				if _, ok := s.AreaOf(rw); ok {
					t.Error("the RW buffer is still mapped")
				}
				if err := s.Read(rw, make([]byte, 1)); !errors.Is(err, uapi.EFAULT) {
					t.Errorf("reading the freed RW buffer: %v", err)
				}
			}
			for _, area := range s.Areas() {
				if area.Perm&mem.PermWrite != 0 {
					t.Errorf("a writable area remains: %+v", area)
				}
			}
			if err := s.Write(b.Image(), prog[:4]); !isWriteFault(err) {
				t.Errorf("write to the finalized image: %v", err)
			}
			if st := a.Stats(); st.RWBuffers != 0 {
				t.Errorf("stats after Finalize %+v", st)
			}
		})
	}
}

func TestLargeImagesGetAnAllocationOfTheirOwn(t *testing.T) {
	a, s := newAllocator(t, progpack.Options{})
	small := jit(t, a, code(64, 1))
	exact, err := a.PackAlloc(progpack.PackSize)
	if err != nil {
		t.Fatal(err)
	}
	if st := a.Stats(); st.Packs != 2 || st.OwnAllocs != 0 {
		t.Errorf("a pack-sized request did not get a pack: %+v", st)
	}
	big := jit(t, a, code(progpack.PackSize, 2))
	area, _ := s.AreaOf(big.Header())
	if area.Huge || area.Name != "bpf_jit_alloc_exec" || area.Perm != mem.PermRX || area.Size != progpack.PackSize+mem.PageSize {
		t.Errorf("large image area %+v", area)
	}
	if big.Header()%mem.PageSize != 0 {
		t.Errorf("large image header at %#x", big.Header())
	}
	st := a.Stats()
	if st.Packs != 2 || st.OwnAllocs != 1 || st.OwnBytes != area.Size || st.PageMappings != int(area.Size/mem.PageSize) || st.HugeMappings != 2 {
		t.Errorf("stats %+v", st)
	}
	if !bytes.Equal(read(t, s, big.Image()+progpack.PackSize-8, 8), code(progpack.PackSize, 2)[progpack.PackSize-8:]) {
		t.Error("the large image lost its tail")
	}
	if err := a.FreeImage(big.Image()); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.AreaOf(area.Start); ok {
		t.Error("the large image is still mapped")
	}
	if err := a.PackFree(exact, progpack.PackSize); err != nil {
		t.Fatal(err)
	}
	if err := a.Free(small); err != nil {
		t.Fatal(err)
	}
	if st := a.Stats(); st != (progpack.Stats{PacksCreated: 2, PacksFreed: 2}) {
		t.Errorf("stats after freeing everything %+v", st)
	}
	if len(s.Areas()) != 0 {
		t.Errorf("areas left: %s", s.Info())
	}
}

func TestNoPacksGivesEveryImageItsOwnPages(t *testing.T) {
	a, s := newAllocator(t, progpack.Options{Mode: progpack.NoPacks})
	b := mustAlloc(t, a, 100, 4)
	if b.RWHeader() != b.Header() || b.RWImage() != b.Image() || b.Header()%mem.PageSize != 0 {
		t.Fatalf("image %#x/%#x, rw %#x/%#x", b.Header(), b.Image(), b.RWHeader(), b.RWImage())
	}
	if area, _ := s.AreaOf(b.Header()); area.Perm != mem.PermRW || area.Name != "bpf_jit_binary" || area.Huge {
		t.Errorf("unfinalized image area %+v", area)
	}
	if !allBRK(read(t, s, b.Header()+4, int(b.Size())-4)) {
		t.Error("the image is not filled with BRK")
	}
	if err := s.Write(b.Image(), code(100, 1)); err != nil {
		t.Fatal(err)
	}
	if err := a.Finalize(b); err != nil {
		t.Fatal(err)
	}
	if area, _ := s.AreaOf(b.Header()); area.Perm != mem.PermRX {
		t.Errorf("finalized image area %+v", area)
	}
	more := []*progpack.Binary{b}
	for i := 0; i < 9; i++ {
		more = append(more, jit(t, a, code(100, byte(i))))
	}
	st := a.Stats()
	if st.Packs != 0 || st.OwnAllocs != 10 || st.PageMappings != 10 || st.HugeMappings != 0 || st.MappedBytes != 10*mem.PageSize || st.Charged != 10*mem.PageSize {
		t.Errorf("stats %+v", st)
	}
	for _, b := range more {
		hdr := b.Header()
		if err := a.FreeImage(b.Image()); err != nil {
			t.Fatal(err)
		}
		if err := s.Read(hdr, make([]byte, 4)); !errors.Is(err, uapi.EFAULT) {
			t.Errorf("freed image at %#x is readable: %v", hdr, err)
		}
	}
	if st := a.Stats(); st.OwnAllocs != 0 || st.Charged != 0 || st.Images != 0 {
		t.Errorf("stats after freeing %+v", st)
	}
}

// The figures behind the arm64 series' iTLB argument: 100 small programs
// cost one 2 MiB block entry with packs and 100 page entries without.
func TestStatsCompareMemoryWithAndWithoutPacks(t *testing.T) {
	for _, c := range []struct {
		opts         progpack.Options
		mapped       uint64
		huge, pages  int
		packs, owned int
	}{
		{progpack.Options{}, progpack.PackSize, 1, 0, 1, 0},
		{progpack.Options{PageMappedPacks: true}, progpack.PackSize, 0, 512, 1, 0},
		{progpack.Options{Mode: progpack.NoPacks}, 100 * mem.PageSize, 0, 100, 0, 100},
	} {
		name := c.opts.Mode.String()
		if c.opts.PageMappedPacks {
			name += " mapped by pages"
		}
		t.Run(name, func(t *testing.T) {
			a, s := newAllocator(t, c.opts)
			for i := 0; i < 100; i++ {
				jit(t, a, code(300, byte(i)))
			}
			st := a.Stats()
			if st.MappedBytes != c.mapped || st.HugeMappings != c.huge || st.PageMappings != c.pages || st.Packs != c.packs || st.OwnAllocs != c.owned || st.Images != 100 {
				t.Errorf("stats %+v", st)
			}
			var huge int
			for _, area := range s.Areas() {
				if area.Huge {
					huge++
				}
			}
			if huge != c.huge {
				t.Errorf("%d huge areas in the address space, stats say %d", huge, c.huge)
			}
		})
	}
}

// A JIT that fails after Alloc frees the image unfinalized (the arm64 JIT's
// out_free_hdr): the RW buffer goes and the chunk is invalidated.
func TestFreeingAnUnfinalizedImageDropsItsBuffer(t *testing.T) {
	a, s := newAllocator(t, progpack.Options{})
	keep := jit(t, a, code(64, 1))
	b := mustAlloc(t, a, 500, 4)
	rw, hdr, size := b.RWHeader(), b.Header(), int(b.Size())
	if err := s.Write(b.RWImage(), code(500, 2)); err != nil {
		t.Fatal(err)
	}
	if err := a.Free(b); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.AreaOf(rw); ok {
		t.Error("the RW buffer is still mapped")
	}
	if !allBRK(read(t, s, hdr, size)) {
		t.Error("the chunk is not BRK")
	}
	if st := a.Stats(); st.Images != 1 || st.RWBuffers != 0 || st.Charged != uint64(keep.Size()) || areasNamed(s, "bpf_jit_rw") != 0 {
		t.Errorf("stats %+v", st)
	}
}

// failingArch is arm64's hooks with a text copy that fails, as
// bpf_arch_text_copy does when aarch64_insn_copy returns NULL.
type failingArch struct{ *jit_arm64.Patcher }

func (failingArch) TextCopy(dst uint64, src []byte) error {
	return fmt.Errorf("copy refused: %w", uapi.EINVAL)
}

func TestFinalizeFailureFreesTheImage(t *testing.T) {
	s := mem.New()
	a, err := progpack.New(s, failingArch{jit_arm64.NewPatcher(s)}, progpack.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b := mustAlloc(t, a, 100, 4)
	if err := a.Finalize(b); !errors.Is(err, uapi.EINVAL) {
		t.Fatalf("Finalize = %v, want the copy's EINVAL", err)
	}
	if st := a.Stats(); st != (progpack.Stats{PacksCreated: 1, PacksFreed: 1}) {
		t.Errorf("stats %+v", st)
	}
	if len(s.Areas()) != 0 {
		t.Errorf("areas left: %s", s.Info())
	}
	if err := a.Free(b); !errors.Is(err, uapi.EINVAL) {
		t.Errorf("Free after a failed Finalize: %v", err)
	}
}

func TestMisuseIsEINVAL(t *testing.T) {
	a, s := newAllocator(t, progpack.Options{})
	other, _ := newAllocator(t, progpack.Options{})
	final := jit(t, a, code(64, 1))
	freed := jit(t, a, code(64, 2))
	if err := a.Free(freed); err != nil {
		t.Fatal(err)
	}
	chunk, err := a.PackAlloc(100)
	if err != nil {
		t.Fatal(err)
	}
	foreign := mustAlloc(t, other, 64, 4)
	for _, c := range []struct {
		name string
		err  error
	}{
		{"zero-length image", func() error { _, err := a.Alloc(0, 4); return err }()},
		{"alignment not a power of two", func() error { _, err := a.Alloc(8, 3); return err }()},
		{"zero alignment", func() error { _, err := a.Alloc(8, 0); return err }()},
		{"alignment above 8", func() error { _, err := a.Alloc(8, 16); return err }()},
		{"size overflowing the header", func() error { _, err := a.Alloc(math.MaxUint32, 4); return err }()},
		{"zero-sized PackAlloc", func() error { _, err := a.PackAlloc(0); return err }()},
		{"finalizing twice", a.Finalize(final)},
		{"finalizing a freed image", a.Finalize(freed)},
		{"freeing twice", a.Free(freed)},
		{"finalizing another allocator's image", a.Finalize(foreign)},
		{"freeing another allocator's image", a.Free(foreign)},
		{"FreeImage of the header", a.FreeImage(final.Header())},
		{"FreeImage inside the image", a.FreeImage(final.Image() + 4)},
		{"PackFree with the wrong size", a.PackFree(chunk, 64)},
		{"PackFree inside an allocation", a.PackFree(chunk+64, 36)},
		{"PackFree of unknown memory", a.PackFree(mem.ModulesStart+1<<30, 64)},
		{"nil space", func() error { _, err := progpack.New(nil, jit_arm64.NewPatcher(s), progpack.Options{}); return err }()},
		{"hooks of another space", func() error {
			_, err := progpack.New(s, jit_arm64.NewPatcher(mem.New()), progpack.Options{})
			return err
		}()},
		{"unknown mode", func() error {
			_, err := progpack.New(s, jit_arm64.NewPatcher(s), progpack.Options{Mode: 7})
			return err
		}()},
	} {
		if !errors.Is(c.err, uapi.EINVAL) {
			t.Errorf("%s: %v, want EINVAL", c.name, c.err)
		}
	}
	// Nothing was changed by the refused calls.
	st := a.Stats()
	if st.Images != 1 || st.ChunksUsed != int(final.Size())/progpack.ChunkSize+2 || st.Charged != uint64(final.Size()) {
		t.Errorf("stats %+v", st)
	}
	if !bytes.Equal(read(t, s, final.Image(), 64), code(64, 1)) {
		t.Error("the live image changed")
	}
}

func TestExhaustedMemoryIsENOMEMAndLeavesNothingBehind(t *testing.T) {
	for _, c := range []struct {
		name  string
		limit uint64
		run   func(a *progpack.Allocator) error
	}{
		{"no room for a pack", 1 << 20, func(a *progpack.Allocator) error { _, err := a.Alloc(100, 4); return err }},
		{"room for the pack but not the RW buffer", progpack.PackSize, func(a *progpack.Allocator) error { _, err := a.Alloc(100, 4); return err }},
		{"larger than the modules region", 8 << 30, func(a *progpack.Allocator) error { _, err := a.PackAlloc(3 << 30); return err }},
	} {
		t.Run(c.name, func(t *testing.T) {
			a, s := newAllocator(t, progpack.Options{})
			s.SetLimit(c.limit)
			if err := c.run(a); !errors.Is(err, uapi.ENOMEM) {
				t.Fatalf("got %v, want ENOMEM", err)
			}
			if st := a.Stats(); st.Packs != 0 || st.Images != 0 || st.Charged != 0 || st.OwnAllocs != 0 {
				t.Errorf("stats %+v", st)
			}
			if len(s.Areas()) != 0 {
				t.Errorf("areas left: %s", s.Info())
			}
		})
	}
}

func TestHooksSeeWholeImagesAtTheirHeaders(t *testing.T) {
	s := mem.New()
	rec := &recordingArch{Patcher: jit_arm64.NewPatcher(s)}
	a, err := progpack.New(s, rec, progpack.Options{})
	if err != nil {
		t.Fatal(err)
	}
	keep := jit(t, a, code(64, 1))
	b := jit(t, a, code(300, 2))
	if err := a.Free(b); err != nil {
		t.Fatal(err)
	}
	want := []string{
		fmt.Sprintf("copy %#x %d", keep.Header(), keep.Size()),
		fmt.Sprintf("copy %#x %d", b.Header(), b.Size()),
		fmt.Sprintf("invalidate %#x %d", b.Header(), b.Size()),
	}
	if strings.Join(rec.calls, "; ") != strings.Join(want, "; ") {
		t.Errorf("hook calls %q, want %q", rec.calls, want)
	}
}

type recordingArch struct {
	*jit_arm64.Patcher
	calls []string
}

func (r *recordingArch) TextCopy(dst uint64, src []byte) error {
	r.calls = append(r.calls, fmt.Sprintf("copy %#x %d", dst, len(src)))
	return r.Patcher.TextCopy(dst, src)
}

func (r *recordingArch) TextInvalidate(dst, n uint64) error {
	r.calls = append(r.calls, fmt.Sprintf("invalidate %#x %d", dst, n))
	return r.Patcher.TextInvalidate(dst, n)
}

// JITs on several CPUs allocate, finalize and free images at once; the
// pack mutex keeps the bitmaps consistent and every image keeps its code.
func TestConcurrentAllocFinalizeFree(t *testing.T) {
	for _, mode := range []progpack.Mode{progpack.Packs, progpack.NoPacks} {
		t.Run(mode.String(), func(t *testing.T) {
			a, s := newAllocator(t, progpack.Options{Mode: mode})
			const workers, rounds = 4, 60
			var wg sync.WaitGroup
			errs := make(chan error, workers)
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(uint64(w), 1))
					var live []*progpack.Binary
					for r := 0; r < rounds; r++ {
						prog := code(4*(1+rng.IntN(600)), byte(w*rounds+r))
						b, err := a.Alloc(uint32(len(prog)), 4)
						if err == nil {
							err = s.Write(b.RWImage(), prog)
						}
						if err == nil {
							err = a.Finalize(b)
						}
						if err == nil {
							got := make([]byte, len(prog))
							if err = s.Read(b.Image(), got); err == nil && !bytes.Equal(got, prog) {
								err = fmt.Errorf("worker %d: image at %#x does not hold its program", w, b.Image())
							}
						}
						if err != nil {
							errs <- err
							return
						}
						live = append(live, b)
						if rng.IntN(2) == 0 {
							i := rng.IntN(len(live))
							if err := a.Free(live[i]); err != nil {
								errs <- err
								return
							}
							live = append(live[:i], live[i+1:]...)
						}
					}
					for _, b := range live {
						if err := a.Free(b); err != nil {
							errs <- err
							return
						}
					}
				}(w)
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			st := a.Stats()
			if st.Packs != 0 || st.Images != 0 || st.ChunksUsed != 0 || st.Charged != 0 || st.OwnAllocs != 0 || st.PacksCreated != st.PacksFreed {
				t.Errorf("stats after everything was freed %+v", st)
			}
			if len(s.Areas()) != 0 {
				t.Errorf("areas left: %s", s.Info())
			}
		})
	}
}
