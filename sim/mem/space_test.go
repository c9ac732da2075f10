package mem_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

func mustAlloc(t *testing.T, s *mem.Space, size uint64, o mem.AllocOptions) uint64 {
	t.Helper()
	addr, err := s.Alloc(size, o)
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

func TestVmallocAreasAreKernelAddressesWithGuardPages(t *testing.T) {
	s := mem.New()
	a := mustAlloc(t, s, 100, mem.AllocOptions{Perm: mem.PermRW, Name: "a"})
	b := mustAlloc(t, s, 5000, mem.AllocOptions{Perm: mem.PermRW, Name: "b"})
	if a < mem.VmallocStart || a >= mem.VmallocEnd || a%mem.PageSize != 0 {
		t.Fatalf("area at %#x is not a page in the vmalloc range", a)
	}
	if b != a+2*mem.PageSize {
		t.Errorf("second area at %#x, want one page of data and one guard page after %#x", b, a)
	}
	tlb := s.NewTLB()
	if _, f := tlb.Load8(a + mem.PageSize); f == nil {
		t.Error("the guard page after an area is readable")
	}
	if _, f := tlb.Load8(a + 100); f != nil {
		t.Errorf("the rest of the last page faults: %v", f)
	}
	if f := tlb.Store64(b+2*mem.PageSize-8, 1); f != nil {
		t.Errorf("last word of a two-page area: %v", f)
	}
}

func TestReadWriteRoundTripAcrossPages(t *testing.T) {
	s := mem.New()
	addr := mustAlloc(t, s, 3*mem.PageSize, mem.AllocOptions{Perm: mem.PermRW})
	in := bytes.Repeat([]byte("0123456789"), 1000)
	if err := s.Write(addr+100, in); err != nil {
		t.Fatal(err)
	}
	out := make([]byte, len(in))
	if err := s.Read(addr+100, out); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(in, out) {
		t.Fatal("read back different bytes")
	}
	tlb := s.NewTLB()
	// A load that straddles two pages sees both.
	v, f := tlb.Load64(addr + mem.PageSize - 3)
	if f != nil {
		t.Fatal(f)
	}
	want := uint64(0)
	for i := 7; i >= 0; i-- {
		want = want<<8 | uint64(in[mem.PageSize-3-100+i])
	}
	if v != want {
		t.Errorf("straddling load = %#x, want %#x", v, want)
	}
}

func TestPermissionsAreEnforced(t *testing.T) {
	s := mem.New()
	addr := mustAlloc(t, s, 2*mem.PageSize, mem.AllocOptions{Perm: mem.PermRW})
	if err := s.SetPerm(addr+mem.PageSize, mem.PageSize, mem.PermRead); err != nil {
		t.Fatal(err)
	}
	tlb := s.NewTLB()
	if f := tlb.Store8(addr, 1); f != nil {
		t.Errorf("store to the writable page: %v", f)
	}
	f := tlb.Store8(addr+mem.PageSize, 1)
	if f == nil || f.Access != mem.Write {
		t.Fatalf("store to the read-only page: %v", f)
	}
	if err := s.Write(addr+mem.PageSize, []byte{1}); !errors.Is(err, uapi.EFAULT) {
		t.Errorf("kernel write to a read-only page: %v", err)
	}
	// A straddling store that faults on its second page writes nothing.
	if f := tlb.Store64(addr+mem.PageSize-4, ^uint64(0)); f == nil {
		t.Fatal("straddling store into a read-only page succeeded")
	}
	if v, _ := tlb.Load32(addr + mem.PageSize - 4); v != 0 {
		t.Errorf("a faulting store changed memory: %#x", v)
	}
}

func TestSetPermFlushesCachedTranslations(t *testing.T) {
	s := mem.New()
	addr := mustAlloc(t, s, mem.PageSize, mem.AllocOptions{Perm: mem.PermRW})
	tlb := s.NewTLB()
	if f := tlb.Store8(addr, 1); f != nil {
		t.Fatal(f)
	}
	if err := s.SetPerm(addr, mem.PageSize, mem.PermRead); err != nil {
		t.Fatal(err)
	}
	tlb.Sync()
	if f := tlb.Store8(addr, 2); f == nil {
		t.Fatal("a stale TLB entry let a store through after Sync")
	}
}

func TestFreedAreasFaultAndAreNotReused(t *testing.T) {
	s := mem.New()
	a := mustAlloc(t, s, mem.PageSize, mem.AllocOptions{Perm: mem.PermRW})
	if err := s.Free(a); err != nil {
		t.Fatal(err)
	}
	tlb := s.NewTLB()
	if _, f := tlb.Load8(a); f == nil {
		t.Error("freed page is still readable")
	}
	b := mustAlloc(t, s, mem.PageSize, mem.AllocOptions{Perm: mem.PermRW})
	if b == a {
		t.Error("a freed range was handed out again")
	}
	if err := s.Free(a); !errors.Is(err, uapi.EINVAL) {
		t.Errorf("double free: %v", err)
	}
	if s.Backed() != mem.PageSize {
		t.Errorf("backed = %d, want one page", s.Backed())
	}
}

func TestHugeMappings(t *testing.T) {
	s := mem.New()
	addr := mustAlloc(t, s, 100, mem.AllocOptions{Region: mem.RegionModules, Perm: mem.PermRW, Huge: true, Name: "pack"})
	if addr%mem.HugeSize != 0 || addr < mem.ModulesStart || addr >= mem.ModulesEnd {
		t.Fatalf("huge area at %#x", addr)
	}
	tlb := s.NewTLB()
	if f := tlb.Store64(addr+mem.HugeSize-8, 42); f != nil {
		t.Fatalf("last word of the 2 MiB block: %v", f)
	}
	// Make one 4 KiB page in the middle read-only: the block is split.
	page := addr + 5*mem.PageSize
	if err := s.SetPerm(page, mem.PageSize, mem.PermRX); err != nil {
		t.Fatal(err)
	}
	tlb.Sync()
	if f := tlb.Store8(page, 1); f == nil {
		t.Error("store to the read-only page of a split block succeeded")
	}
	if f := tlb.Store8(page-1, 1); f != nil {
		t.Errorf("store next to it: %v", f)
	}
	if v, _ := tlb.Load64(addr + mem.HugeSize - 8); v != 42 {
		t.Errorf("split lost data: %d", v)
	}
	areas := s.Areas()
	if len(areas) != 1 || !areas[0].Huge || areas[0].Size != mem.HugeSize {
		t.Errorf("areas = %+v", areas)
	}
}

func TestAliasSharesMemoryWithItsOwnPermissions(t *testing.T) {
	s := mem.New()
	text := mustAlloc(t, s, mem.PageSize, mem.AllocOptions{Region: mem.RegionModules, Perm: mem.PermRX})
	alias, err := s.Alias(text, mem.PageSize, mem.PermRW, "text_poke")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Write(text, []byte{1}); err == nil {
		t.Fatal("wrote read-only text directly")
	}
	if err := s.Write(alias+8, []byte{0xd4, 0x20}); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 2)
	if err := s.Read(text+8, b); err != nil || b[0] != 0xd4 || b[1] != 0x20 {
		t.Errorf("text sees %x, %v", b, err)
	}
	if !strings.Contains(s.Info(), "alias=") {
		t.Errorf("Info does not show the alias:\n%s", s.Info())
	}
}

type countingDevice struct{ loads, stores int }

func (d *countingDevice) Load(off uint64, size int, signed bool) (uint64, error) {
	d.loads++
	return 0x1_0000_0000 + off, nil
}

func (d *countingDevice) Store(off uint64, size int, v uint64) error {
	d.stores++
	return errors.New("read-only device")
}

func TestDeviceMappingsServeEveryAccess(t *testing.T) {
	s := mem.New()
	dev := &countingDevice{}
	addr := mustAlloc(t, s, mem.PageSize, mem.AllocOptions{Perm: mem.PermRW, Device: dev})
	tlb := s.NewTLB()
	for i := 0; i < 3; i++ {
		v, f := tlb.Load32(addr + 4)
		if f != nil || v != 0x1_0000_0004 {
			t.Fatalf("device load = %#x, %v", v, f)
		}
	}
	if dev.loads != 3 {
		t.Errorf("device saw %d loads, want 3 (device pages are never cached)", dev.loads)
	}
	f := tlb.Store32(addr, 1)
	if f == nil || !strings.Contains(f.Error(), "read-only device") {
		t.Errorf("device store: %v", f)
	}
	if _, err := s.Bytes(addr, 8); err == nil {
		t.Error("Bytes of a device mapping")
	}
}

// A device page's translation is cached (one entry per direction), so
// that a program reading its context again does not walk the page table;
// its accesses still go to the device, and the cache goes when the
// mapping does.
func TestDeviceTranslationsAreCachedUntilUnmapped(t *testing.T) {
	s := mem.New()
	dev := &countingDevice{}
	addr := mustAlloc(t, s, mem.PageSize, mem.AllocOptions{Perm: mem.PermRW, Device: dev})
	tlb := s.NewTLB()
	for i := 0; i < 3; i++ {
		if v, f := tlb.Load32(addr + 8); f != nil || v != 0x1_0000_0008 {
			t.Fatalf("device load = %#x, %v", v, f)
		}
	}
	if tlb.Misses != 1 || dev.loads != 3 {
		t.Errorf("3 loads: %d page-table walks (want 1), %d device loads (want 3)", tlb.Misses, dev.loads)
	}
	// A store is checked apart: the read-side entry does not grant it.
	tlb.Store32(addr, 1)
	tlb.Store32(addr, 1)
	if tlb.Misses != 2 || dev.stores != 2 {
		t.Errorf("2 stores: %d page-table walks in all (want 2), %d device stores (want 2)", tlb.Misses, dev.stores)
	}
	if err := s.Free(addr); err != nil {
		t.Fatal(err)
	}
	tlb.Sync()
	if _, f := tlb.Load32(addr + 8); f == nil {
		t.Error("a load from the freed device mapping did not fault")
	}
	if dev.loads != 3 {
		t.Errorf("the freed device saw a load")
	}
}

func TestBadRequestsGetErrnos(t *testing.T) {
	s := mem.New()
	s.SetLimit(1 << 20)
	for _, c := range []struct {
		name string
		err  error
		want error
	}{
		{"zero size", func() error { _, err := s.Vmalloc(0, mem.PermRW, ""); return err }(), uapi.EINVAL},
		{"over the limit", func() error { _, err := s.Vmalloc(2<<20, mem.PermRW, ""); return err }(), uapi.ENOMEM},
		{"larger than the region", func() error { _, err := s.Vmalloc(^uint64(0), mem.PermRW, ""); return err }(), uapi.ENOMEM},
		{"unknown region", func() error { _, err := s.Alloc(1, mem.AllocOptions{Region: 7}); return err }(), uapi.EINVAL},
		{"unaligned SetPerm", s.SetPerm(mem.VmallocStart+1, mem.PageSize, mem.PermRead), uapi.EINVAL},
		{"SetPerm of unmapped memory", s.SetPerm(mem.VmallocEnd-mem.PageSize, mem.PageSize, mem.PermRead), uapi.EINVAL},
		{"read of a user address", s.Read(0x1000, make([]byte, 1)), uapi.EFAULT},
		{"read that wraps around", s.Read(^uint64(0), make([]byte, 2)), uapi.EFAULT},
	} {
		if !errors.Is(c.err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, c.err, c.want)
		}
	}
}

func TestWordsForAtomics(t *testing.T) {
	s := mem.New()
	addr := mustAlloc(t, s, mem.PageSize, mem.AllocOptions{Perm: mem.PermRead})
	tlb := s.NewTLB()
	if w, f := tlb.Word64(addr, false); w == nil || f != nil {
		t.Errorf("aligned read word: %v, %v", w, f)
	}
	if _, f := tlb.Word64(addr, true); f == nil {
		t.Error("writable word of a read-only page")
	}
	if w, f := tlb.Word32(addr+2, false); w != nil || f != nil {
		t.Error("misaligned word was returned")
	}
}

func TestSetPermOfAWholeAreaShowsInAreas(t *testing.T) {
	s := mem.New()
	a := mustAlloc(t, s, 2*mem.PageSize, mem.AllocOptions{Region: mem.RegionModules, Perm: mem.PermRW})
	b := mustAlloc(t, s, mem.HugeSize, mem.AllocOptions{Region: mem.RegionModules, Perm: mem.PermRW, Huge: true})
	if err := s.SetPerm(a, mem.PageSize, mem.PermRead); err != nil {
		t.Fatal(err)
	}
	if area, _ := s.AreaOf(a); area.Perm != mem.PermRW {
		t.Errorf("half an area made read-only: area perm %s, want it left rw-", area.Perm)
	}
	if err := s.SetPerm(a, 2*mem.PageSize, mem.PermRX); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPerm(b, mem.HugeSize, mem.PermRX); err != nil {
		t.Fatal(err)
	}
	for _, addr := range []uint64{a, b} {
		if area, _ := s.AreaOf(addr); area.Perm != mem.PermRX {
			t.Errorf("area at %#x: perm %s after SetPerm of all of it, want r-x", addr, area.Perm)
		}
	}
	if !strings.Contains(s.Info(), "r-x vmalloc huge") {
		t.Errorf("Info does not show the new permissions:\n%s", s.Info())
	}
}

func TestMirroredTailIsTheSameMemoryAfterTheArea(t *testing.T) {
	s := mem.New()
	const meta, data = mem.PageSize, 2 * mem.PageSize
	a := mustAlloc(t, s, meta+data, mem.AllocOptions{Perm: mem.PermRW, Name: "ring", Mirror: data})
	tlb := s.NewTLB()
	// A word written across the end of the data reaches its start
	// through the second mapping, as a wrapped ring record does.
	end := a + meta + data
	if f := tlb.Store64(end-4, 0x1122334455667788); f != nil {
		t.Fatal(f)
	}
	if v, f := tlb.Load32(a + meta); f != nil || v != 0x11223344 {
		t.Errorf("start of the data after a store across its end: %#x, %v; want 0x11223344", v, f)
	}
	if f := tlb.Store8(a+meta+5, 0xab); f != nil {
		t.Fatal(f)
	}
	if v, f := tlb.Load8(end + 5); f != nil || v != 0xab {
		t.Errorf("mirror of a data byte: %#x, %v; want 0xab", v, f)
	}
	if _, f := tlb.Load8(end + data); f == nil {
		t.Error("the page after the mirror is mapped; want a guard page")
	}
	if got := s.Backed(); got != meta+data {
		t.Errorf("backed %d bytes, want %d: the mirror takes no memory", got, meta+data)
	}
	if ar, ok := s.AreaOf(end); !ok || ar.Size != meta+2*data {
		t.Errorf("area of the mirror: %+v, %v; want one area of %d bytes", ar, ok, meta+2*data)
	}
	if _, err := s.Bytes(end, 8); err == nil {
		t.Error("Bytes of the mirror succeeded; only the first mapping is the area's memory")
	}
	if err := s.Free(a); err != nil {
		t.Fatal(err)
	}
	if s.Backed() != 0 {
		t.Errorf("backed %d bytes after Free", s.Backed())
	}
	tlb.Sync()
	if _, f := tlb.Load8(end); f == nil {
		t.Error("the mirror is still mapped after Free")
	}
}

func TestMirrorMustBeWholePagesOfTheArea(t *testing.T) {
	s := mem.New()
	for _, o := range []mem.AllocOptions{
		{Perm: mem.PermRW, Mirror: 100},
		{Perm: mem.PermRW, Mirror: 3 * mem.PageSize},
		{Perm: mem.PermRW, Mirror: mem.PageSize, Huge: true},
	} {
		if _, err := s.Alloc(2*mem.PageSize, o); !errors.Is(err, uapi.EINVAL) {
			t.Errorf("Alloc(2 pages, %+v) = %v, want EINVAL", o, err)
		}
	}
}
