package sim_test

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/kdiff"
)

// mapIterCase is one walk of a map by an iterator program of
// testdata/mapiter.bpf.c: the map, its contents, and what is compared
// after the read (the map's contents, for programs that write values).
type mapIterCase struct {
	name   string
	prog   string
	spec   ebpf.MapSpec
	fill   func(put func(k, v any) error) error
	after  bool // compare the contents after the walk
	percpu bool // needs 2 possible CPUs in the kernel
	// errno is how the kernel's walk ends (0: at its end), checked so
	// that the case tests what it means to.
	errno unix.Errno
}

// zeroSeed (BPF_F_ZERO_SEED) makes a hash map's buckets, and so its walk
// order, the same in both kernels.
const zeroSeed = 0x40

func mapIterCases() []mapIterCase {
	u32u64 := func(n int, mul uint32) func(put func(k, v any) error) error {
		return func(put func(k, v any) error) error {
			for i := 0; i < n; i++ {
				if err := put(uint32(i)*mul, uint64(i)*1000+7); err != nil {
					return err
				}
			}
			return nil
		}
	}
	percpu := func(n int) func(put func(k, v any) error) error {
		return func(put func(k, v any) error) error {
			for i := 0; i < n; i++ {
				if err := put(uint32(i), []uint64{uint64(i), uint64(i) * 3}); err != nil {
					return err
				}
			}
			return nil
		}
	}
	chunks := func(values ...uint32) func(put func(k, v any) error) error {
		return func(put func(k, v any) error) error {
			for i, v := range values {
				if err := put(uint32(i), v); err != nil {
					return err
				}
			}
			return nil
		}
	}
	hash := func(name string, typ ebpf.MapType, vs, max uint32) ebpf.MapSpec {
		return ebpf.MapSpec{Name: name, Type: typ, KeySize: 4, ValueSize: vs, MaxEntries: max, Flags: zeroSeed}
	}
	array := func(name string, typ ebpf.MapType, vs, max uint32) ebpf.MapSpec {
		return ebpf.MapSpec{Name: name, Type: typ, KeySize: 4, ValueSize: vs, MaxEntries: max}
	}
	return []mapIterCase{
		{name: "dump hash", prog: "dump", spec: hash("hash_counts", ebpf.Hash, 8, 512), fill: u32u64(300, 7)},
		{name: "dump empty hash", prog: "dump", spec: hash("empty", ebpf.Hash, 8, 16), fill: u32u64(0, 1)},
		{name: "dump LRU hash", prog: "dump", spec: hash("lru", ebpf.LRUHash, 8, 256), fill: u32u64(100, 3)},
		{name: "dump array", prog: "dump", spec: array("arr", ebpf.Array, 8, 40), fill: u32u64(25, 1)},
		{name: "dump big hash", prog: "dump", spec: hash("big", ebpf.Hash, 8, 4096), fill: u32u64(4000, 13)},
		{name: "double hash", prog: "double_values", spec: hash("dbl", ebpf.Hash, 8, 64), fill: u32u64(50, 5), after: true},
		{name: "double array", prog: "double_values", spec: array("dbl_arr", ebpf.Array, 8, 30), fill: u32u64(30, 1), after: true},
		{name: "percpu hash", prog: "percpu_sum", spec: hash("pc_hash", ebpf.PerCPUHash, 8, 64), fill: percpu(40), percpu: true},
		{name: "percpu array", prog: "percpu_sum", spec: array("pc_arr", ebpf.PerCPUArray, 8, 20), fill: percpu(20), percpu: true},
		{name: "LRU percpu hash", prog: "percpu_sum", spec: hash("pc_lru", ebpf.LRUCPUHash, 8, 64), fill: percpu(30), percpu: true},
		// 60 chunks are 15,000 bytes: two elements fill a read's buffer.
		{name: "chunks straddle reads", prog: "chunks", spec: hash("chunks", ebpf.Hash, 4, 64), fill: chunks(60, 60, 60, 10, 0, 60, 131, 60)},
		// 140 chunks (35,000 bytes) overflow the buffer alone: E2BIG.
		{name: "chunks overflow", prog: "chunks", spec: hash("overflow", ebpf.Hash, 4, 64), fill: chunks(60, 10, 140, 60), errno: unix.E2BIG},
		{name: "chunks overflow first", prog: "chunks", spec: array("overflow1", ebpf.Array, 4, 3), fill: chunks(140, 1, 1), errno: unix.E2BIG},
		{name: "chunks overflow after output", prog: "chunks", spec: array("overflow2", ebpf.Array, 4, 3), fill: chunks(1, 60, 140), errno: unix.E2BIG},
	}
}

// iterResult is what a walk gave: the bytes read, the errno that ended
// it (0 for EOF), and the map's contents afterwards.
type iterResult struct {
	out      string
	errno    unix.Errno
	contents string
}

// readIter reads r to its end in reads of 4 KiB (cilium/ebpf hands out
// the kernel's file; a read(2) size changes where reads end, not what
// they return in all).
func readIter(r io.Reader) (string, unix.Errno, error) {
	var out []byte
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		out = append(out, buf[:n]...)
		if errors.Is(err, io.EOF) {
			return string(out), 0, nil
		}
		if err != nil {
			var errno unix.Errno
			if !errors.As(err, &errno) {
				return string(out), 0, err
			}
			return string(out), errno, nil
		}
		if n == 0 {
			return string(out), 0, nil
		}
	}
}

// Every walk of testdata/mapiter.bpf.o's iterators reads the same bytes,
// ends with the same errno, and leaves the same values in this machine's
// kernel and in bpfsim: the per-element runs and the final one, seq_num,
// the map's fields through CO-RE, values written in place, per-CPU values
// copied, and the seq_file's buffer (an element shown again by the next
// read, E2BIG for one that overflows it alone).
func TestMapIteratorsAreTheKernels(t *testing.T) {
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	spec, err := ebpf.LoadCollectionSpec("testdata/mapiter.bpf.o")
	if err != nil {
		t.Fatal(err)
	}
	kcoll, err := ebpf.NewCollection(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer kcoll.Close()
	possible, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	k := newKernel(t, &sim.Options{CPUs: possible})
	scoll := simCollection(t, k, "testdata/mapiter.bpf.o")
	for _, c := range mapIterCases() {
		t.Run(c.name, func(t *testing.T) {
			if c.percpu && possible != 2 {
				t.Skipf("the program reads two CPUs' values; this kernel has %d possible CPUs", possible)
			}
			want := kernelIterRun(t, kcoll.Programs[c.prog], c)
			got := simIterRun(t, k, scoll.Programs[c.prog], c)
			if got.errno != want.errno {
				t.Errorf("read ends with errno %v in bpfsim, %v in the kernel", got.errno, want.errno)
			}
			if want.errno != c.errno {
				t.Fatalf("the kernel's walk ends with errno %v, the case expects %v", want.errno, c.errno)
			}
			compareLines(t, got.out, want.out)
			if got.contents != want.contents {
				t.Errorf("contents after the walk:\nbpfsim %s\nkernel %s", got.contents, want.contents)
			}
			if want.out == "" && want.errno == 0 && c.fill != nil && c.spec.Name != "empty" {
				t.Errorf("the kernel's walk printed nothing")
			}
		})
	}
}

func kernelIterRun(t *testing.T, prog *ebpf.Program, c mapIterCase) iterResult {
	t.Helper()
	spec := c.spec
	m, err := ebpf.NewMap(&spec)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := c.fill(m.Put); err != nil {
		t.Fatal(err)
	}
	it, err := link.AttachIter(link.IterOptions{Program: prog, Map: m})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	r, err := it.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var res iterResult
	if res.out, res.errno, err = readIter(r); err != nil {
		t.Fatal(err)
	}
	if c.after {
		res.contents = contents(t, m.Iterate())
	}
	return res
}

func simIterRun(t *testing.T, k *sim.Kernel, prog *sim.Program, c mapIterCase) iterResult {
	t.Helper()
	spec := c.spec
	m, err := k.NewMap(&spec)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := c.fill(m.Put); err != nil {
		t.Fatal(err)
	}
	var res iterResult
	if res.out, res.errno, err = readIter(openIter(t, k, prog, m)); err != nil {
		t.Fatal(err)
	}
	if c.after {
		res.contents = contents(t, m.Iterate())
	}
	return res
}

// The bpf_map iterator walks every map alive, by id: the maps a test
// makes, of types whose objects start with a struct bpf_map in bpfsim and
// of others, print the same in this machine's kernel and in bpfsim, in
// the order they were made, and the walk's last run prints its end; a map
// closed before the walk is not seen.
func TestMapsIteratorIsTheKernels(t *testing.T) {
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	specs := []ebpf.MapSpec{
		{Name: "itm_hash", Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 10, Flags: zeroSeed},
		{Name: "itm_gone", Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1},
		{Name: "itm_array", Type: ebpf.Array, KeySize: 4, ValueSize: 16, MaxEntries: 3},
		{Name: "itm_ring", Type: ebpf.RingBuf, MaxEntries: 4096},
		{Name: "itm_queue", Type: ebpf.Queue, ValueSize: 4, MaxEntries: 7},
		{Name: "itm_lpm", Type: ebpf.LPMTrie, KeySize: 8, ValueSize: 4, MaxEntries: 4, Flags: unix.BPF_F_NO_PREALLOC},
		{Name: "itm_progs", Type: ebpf.ProgramArray, KeySize: 4, ValueSize: 4, MaxEntries: 2},
		{Name: "itm_lru", Type: ebpf.LRUHash, KeySize: 8, ValueSize: 8, MaxEntries: 16},
	}
	walk := func(t *testing.T, newMap func(*ebpf.MapSpec) (io.Closer, error), read func() (string, unix.Errno)) (string, unix.Errno) {
		var open []io.Closer
		defer func() {
			for _, c := range open {
				c.Close()
			}
		}()
		for _, spec := range specs {
			spec := spec
			m, err := newMap(&spec)
			if err != nil {
				t.Fatal(err)
			}
			if spec.Name == "itm_gone" {
				m.Close()
				continue
			}
			open = append(open, m)
		}
		return read()
	}
	kspec, err := ebpf.LoadCollectionSpec("testdata/mapiter.bpf.o")
	if err != nil {
		t.Fatal(err)
	}
	kcoll, err := ebpf.NewCollection(kspec)
	if err != nil {
		t.Fatal(err)
	}
	defer kcoll.Close()
	want, wantErrno := walk(t, func(s *ebpf.MapSpec) (io.Closer, error) { return ebpf.NewMap(s) }, func() (string, unix.Errno) {
		it, err := link.AttachIter(link.IterOptions{Program: kcoll.Programs["maps"]})
		if err != nil {
			t.Fatal(err)
		}
		defer it.Close()
		r, err := it.Open()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		out, errno, err := readIter(r)
		if err != nil {
			t.Fatal(err)
		}
		return out, errno
	})
	k := newKernel(t, nil)
	scoll := simCollection(t, k, "testdata/mapiter.bpf.o")
	got, gotErrno := walk(t, func(s *ebpf.MapSpec) (io.Closer, error) { return k.NewMap(s) }, func() (string, unix.Errno) {
		out, errno, err := readIter(openIter(t, k, scoll.Programs["maps"], nil))
		if err != nil {
			t.Fatal(err)
		}
		return out, errno
	})
	if gotErrno != wantErrno {
		t.Errorf("the walk ends with errno %v in bpfsim, %v in the kernel", gotErrno, wantErrno)
	}
	if !strings.HasSuffix(want, "end\n") || strings.Count(want, "itm_") != len(specs)-1 {
		t.Fatalf("the kernel's walk printed %q", want)
	}
	compareLines(t, got, want)
}

// mapWalk is what cilium/ebpf's MapIterator and bpfsim's have in
// common.
type mapWalk interface {
	Next(key, value any) bool
	Err() error
}

// contents prints a u32 -> u64 map's elements in the order it walks.
func contents(t *testing.T, it mapWalk) string {
	var k uint32
	var v uint64
	s := ""
	for it.Next(&k, &v) {
		s += fmt.Sprintf("%d=%d ", k, v)
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return s
}

// The verifier and the link refuse what the kernel refuses, with its
// errno: stores into the read-only key or a kernel object, a key used
// before its NULL check, a return value other than 0 or 1, a kernel
// object of the wrong type for a helper, a context slot past the
// arguments; at attach, a program reading more of a key than the map
// has (EACCES), and maps no element iterator walks (EINVAL).
func TestMapIteratorRefusalsAreTheKernels(t *testing.T) {
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	ret0 := asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}
	key := asm.LoadMem(asm.R2, asm.R1, 16, asm.DWord)
	value := asm.LoadMem(asm.R3, asm.R1, 24, asm.DWord)
	loads := []struct {
		name  string
		insns asm.Instructions
	}{
		{"valid", append(asm.Instructions{key, asm.JEq.Imm(asm.R2, 0, "out"), asm.LoadMem(asm.R4, asm.R2, 0, asm.Word)},
			asm.Mov.Imm(asm.R0, 0).WithSymbol("out"), asm.Return())},
		{"write key", append(asm.Instructions{key, asm.JEq.Imm(asm.R2, 0, "out"), asm.StoreMem(asm.R2, 0, asm.R2, asm.Word)},
			asm.Mov.Imm(asm.R0, 0).WithSymbol("out"), asm.Return())},
		{"write value", append(asm.Instructions{value, asm.JEq.Imm(asm.R3, 0, "out"), asm.StoreMem(asm.R3, 0, asm.R3, asm.Word)},
			asm.Mov.Imm(asm.R0, 0).WithSymbol("out"), asm.Return())},
		{"key unchecked", append(asm.Instructions{key, asm.LoadMem(asm.R4, asm.R2, 0, asm.Word)}, ret0...)},
		{"key negative offset", append(asm.Instructions{key, asm.JEq.Imm(asm.R2, 0, "out"), asm.LoadMem(asm.R4, asm.R2, -4, asm.Word)},
			asm.Mov.Imm(asm.R0, 0).WithSymbol("out"), asm.Return())},
		{"return 2", asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}},
		{"store into meta", append(asm.Instructions{asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord), asm.StoreMem(asm.R2, 8, asm.R1, asm.DWord)}, ret0...)},
		{"read meta", append(asm.Instructions{asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord), asm.LoadMem(asm.R3, asm.R2, 16, asm.DWord)}, ret0...)},
		{"read past meta", append(asm.Instructions{asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord), asm.LoadMem(asm.R3, asm.R2, 24, asm.DWord)}, ret0...)},
		{"ctx past the arguments", append(asm.Instructions{asm.LoadMem(asm.R2, asm.R1, 32, asm.DWord)}, ret0...)},
		{"ctx store", append(asm.Instructions{asm.StoreMem(asm.R1, 0, asm.R1, asm.DWord)}, ret0...)},
		{"map as seq_file", append(asm.Instructions{
			asm.LoadMem(asm.R1, asm.R1, 8, asm.DWord), asm.Mov.Imm(asm.R3, 8), asm.Mov.Reg(asm.R2, asm.R10), asm.Add.Imm(asm.R2, -8),
			asm.StoreMem(asm.R10, -8, asm.R3, asm.DWord), asm.FnSeqWrite.Call()}, ret0...)},
		{"seq_write", append(asm.Instructions{
			asm.LoadMem(asm.R1, asm.R1, 0, asm.DWord), asm.LoadMem(asm.R1, asm.R1, 0, asm.DWord), asm.Mov.Imm(asm.R3, 8), asm.Mov.Reg(asm.R2, asm.R10), asm.Add.Imm(asm.R2, -8),
			asm.StoreMem(asm.R10, -8, asm.R3, asm.DWord), asm.FnSeqWrite.Call()}, ret0...)},
		{"read 8 bytes of key", append(asm.Instructions{key, asm.JEq.Imm(asm.R2, 0, "out"), asm.LoadMem(asm.R4, asm.R2, 0, asm.DWord)},
			asm.Mov.Imm(asm.R0, 0).WithSymbol("out"), asm.Return())},
	}
	possible, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	k := newKernel(t, &sim.Options{CPUs: possible})
	mapSpecs := []ebpf.MapSpec{
		{Name: "h", Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 4},
		{Name: "pa", Type: ebpf.ProgramArray, KeySize: 4, ValueSize: 4, MaxEntries: 4},
		{Name: "q", Type: ebpf.Queue, ValueSize: 4, MaxEntries: 4},
		{Name: "lpm", Type: ebpf.LPMTrie, KeySize: 8, ValueSize: 4, MaxEntries: 4, Flags: unix.BPF_F_NO_PREALLOC},
	}
	for _, l := range loads {
		t.Run(l.name, func(t *testing.T) {
			spec := iterSpec(l.insns...)
			kp, kerr := ebpf.NewProgram(spec)
			sp, serr := k.NewProgram(spec)
			if (serr == nil) != (kerr == nil) || errnoOf(serr) != errnoOf(kerr) {
				t.Fatalf("load: bpfsim %v, kernel %v", serr, kerr)
			}
			if kerr != nil {
				return
			}
			defer kp.Close()
			defer sp.Close()
			for _, ms := range mapSpecs {
				ms := ms
				km, err := ebpf.NewMap(&ms)
				if err != nil {
					t.Fatal(err)
				}
				sm, err := k.NewMap(&ms)
				if err != nil {
					t.Fatal(err)
				}
				kl, kerr := link.AttachIter(link.IterOptions{Program: kp, Map: km})
				sl, serr := k.AttachIter(sim.IterOptions{Program: sp, Map: sm})
				if (serr == nil) != (kerr == nil) || errnoOf(serr) != errnoOf(kerr) {
					t.Errorf("attach to %s: bpfsim %v, kernel %v", ms.Type, serr, kerr)
				}
				if kerr == nil {
					kl.Close()
				}
				if serr == nil {
					sl.Close()
				}
				km.Close()
				sm.Close()
			}
		})
	}
}

// BenchmarkMapIteratorKernel is BenchmarkMapIterator's walk in this
// machine's kernel: the same program over a hash of the same 10,000
// elements, read in 64 KiB reads.
func BenchmarkMapIteratorKernel(b *testing.B) {
	if _, err := kdiff.OpenKernel(); err != nil {
		b.Skipf("no kernel figures: %v", err)
	}
	coll, err := ebpf.LoadCollection("testdata/mapiter.bpf.o")
	if err != nil {
		b.Fatal(err)
	}
	defer coll.Close()
	const n = 10000
	m, err := ebpf.NewMap(&ebpf.MapSpec{Name: "counts", Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: n + 1})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	for i := 0; i < n; i++ {
		if err := m.Put(uint32(i*7), uint64(i*100)); err != nil {
			b.Fatal(err)
		}
	}
	it, err := link.AttachIter(link.IterOptions{Program: coll.Programs["dump"], Map: m})
	if err != nil {
		b.Fatal(err)
	}
	defer it.Close()
	benchWalks(b, n, it.Open)
}

// A pinned iterator link reads as a file in this machine's kernel (a
// private BPF filesystem) as in bpfsim, after its fd is closed, twice.
func TestPinnedIteratorsReadAsTheKernels(t *testing.T) {
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	kdir := kernelBPFFS(t) // mapaccess_linux_test.go
	c := mapIterCases()[0] // dump of a hash
	spec := c.spec
	kcoll, err := ebpf.LoadCollection("testdata/mapiter.bpf.o")
	if err != nil {
		t.Fatal(err)
	}
	defer kcoll.Close()
	km, err := ebpf.NewMap(&spec)
	if err != nil {
		t.Fatal(err)
	}
	defer km.Close()
	if err := c.fill(km.Put); err != nil {
		t.Fatal(err)
	}
	kit, err := link.AttachIter(link.IterOptions{Program: kcoll.Programs["dump"], Map: km})
	if err != nil {
		t.Fatal(err)
	}
	kpin := kdir + "/dump"
	if err := kit.Pin(kpin); err != nil {
		t.Fatal(err)
	}
	defer kit.Unpin()
	kit.Close()

	k := newKernel(t, nil)
	scoll := simCollection(t, k, "testdata/mapiter.bpf.o")
	sm, err := k.NewMap(&spec)
	if err != nil {
		t.Fatal(err)
	}
	defer sm.Close()
	if err := c.fill(sm.Put); err != nil {
		t.Fatal(err)
	}
	sit, err := k.AttachIter(sim.IterOptions{Program: scoll.Programs["dump"], Map: sm})
	if err != nil {
		t.Fatal(err)
	}
	const spin = "/sys/fs/bpf/dump"
	if err := sit.Pin(spin); err != nil {
		t.Fatal(err)
	}
	defer sit.Unpin()
	sit.Close()
	for i := 0; i < 2; i++ {
		want, err := os.ReadFile(kpin)
		if err != nil {
			t.Fatal(err)
		}
		r, err := k.OpenPinnedIter(spin)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil {
			t.Fatal(err)
		}
		if len(want) == 0 {
			t.Fatal("the kernel's pinned iterator read nothing")
		}
		compareLines(t, string(got), string(want))
	}
}
