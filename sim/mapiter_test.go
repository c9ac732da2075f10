package sim_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// mapIterKernel loads testdata/mapiter.bpf.o on a kernel of runtime rt
// and makes a u32 -> u64 hash of n elements, key i*7 holding i*100.
func mapIterKernel(t testing.TB, rt sim.Runtime, n int) (*sim.Kernel, *sim.Collection, *sim.Map) {
	t.Helper()
	k := newKernel(t, &sim.Options{CPUs: 2, Runtime: rt})
	spec, err := ebpf.LoadCollectionSpec("testdata/mapiter.bpf.o")
	if err != nil {
		t.Fatal(err)
	}
	coll, err := k.NewCollection(spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { coll.Close() })
	m, err := k.NewMap(&ebpf.MapSpec{Name: "counts", Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: uint32(n + 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	for i := 0; i < n; i++ {
		if err := m.Put(uint32(i*7), uint64(i*100)); err != nil {
			t.Fatal(err)
		}
	}
	return k, coll, m
}

// wantDump is what the dump program prints for m: a line per element in
// the order get_next_key walks it, which is the iterator's, and the
// summary with the last seq_num.
func wantDump(t testing.TB, m *sim.Map) string {
	var b strings.Builder
	var key uint32
	var value uint64
	n := 0
	it := m.Iterate()
	for it.Next(&key, &value) {
		fmt.Fprintf(&b, "%d: %d -> %d\n", n, key, value)
		n++
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	// seq_num counts the objects after the first: the end sees n-1.
	fmt.Fprintf(&b, "counts: %d elements, max_entries %d, key_size 4, value_size 8\n", max(n-1, 0), m.MaxEntries())
	return b.String()
}

// openIter attaches prog to m and opens a walk; both close when the test
// ends.
func openIter(t testing.TB, k *sim.Kernel, prog *sim.Program, m *sim.Map) io.Reader {
	t.Helper()
	it, err := k.AttachIter(sim.IterOptions{Program: prog, Map: m})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { it.Close() })
	r, err := it.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func readAllIter(t testing.TB, k *sim.Kernel, prog *sim.Program, m *sim.Map) string {
	t.Helper()
	b, err := io.ReadAll(openIter(t, k, prog, m))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// iterSpec is an iterator program over map elements, written with asm.
func iterSpec(insns ...asm.Instruction) *ebpf.ProgramSpec {
	return &ebpf.ProgramSpec{Name: "it", Type: ebpf.Tracing, AttachType: ebpf.AttachTraceIter,
		AttachTo: "bpf_map_elem", License: "GPL", Instructions: insns}
}

func TestMapIteratorPrintsEveryElementThenItsSummary(t *testing.T) {
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		for _, n := range []int{0, 1, 5, 3000} {
			t.Run(fmt.Sprintf("%s/%d", rt, n), func(t *testing.T) {
				k, coll, m := mapIterKernel(t, rt, n)
				got := readAllIter(t, k, coll.Programs["dump"], m)
				if want := wantDump(t, m); got != want {
					compareLines(t, got, want)
				}
			})
		}
	}
}

func TestMapIteratorWritesValuesInPlace(t *testing.T) {
	k, coll, m := mapIterKernel(t, sim.RuntimeInterpreter, 10)
	got := readAllIter(t, k, coll.Programs["double_values"], m)
	if len(got) != 40 {
		t.Errorf("read %d bytes, want 10 keys of 4", len(got))
	}
	for i := uint32(0); i < 10; i++ {
		var v uint64
		if err := m.Lookup(i*7, &v); err != nil {
			t.Fatal(err)
		}
		if v != uint64(i)*200 {
			t.Errorf("key %d holds %d after the walk, want %d", i*7, v, i*200)
		}
	}
}

// Each open file is a session of its own: reading one does not move
// another, and closing the link leaves open files readable.
func TestMapIteratorSessionsAreIndependent(t *testing.T) {
	k, coll, m := mapIterKernel(t, sim.RuntimeInterpreter, 200)
	it, err := k.AttachIter(sim.IterOptions{Program: coll.Programs["dump"], Map: m})
	if err != nil {
		t.Fatal(err)
	}
	a, err := it.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := it.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	first := make([]byte, 100)
	if _, err := io.ReadFull(a, first); err != nil {
		t.Fatal(err)
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	restA, err := io.ReadAll(a)
	if err != nil {
		t.Fatal(err)
	}
	allB, err := io.ReadAll(b)
	if err != nil {
		t.Fatal(err)
	}
	want := wantDump(t, m)
	if got := string(first) + string(restA); got != want {
		compareLines(t, got, want)
	}
	if string(allB) != want {
		compareLines(t, string(allB), want)
	}
	if _, err := it.Open(); !errors.Is(err, unix.EBADF) {
		t.Errorf("Open on a closed link: %v, want EBADF", err)
	}
}

// The link and every open file hold the map (a user reference) and the
// program, as bpf_iter_attach_map and prepare_seq_file take them.
func TestMapIteratorHoldsItsMapAndProgram(t *testing.T) {
	k, coll, m := mapIterKernel(t, sim.RuntimeInterpreter, 3)
	prog := coll.Programs["dump"]
	_, u0 := m.Refs()
	p0 := prog.Refs()
	it, err := k.AttachIter(sim.IterOptions{Program: prog, Map: m})
	if err != nil {
		t.Fatal(err)
	}
	r, err := it.Open()
	if err != nil {
		t.Fatal(err)
	}
	if _, u := m.Refs(); u != u0+2 {
		t.Errorf("user references with a link and a file: %d, want %d", u, u0+2)
	}
	if p := prog.Refs(); p != p0+2 {
		t.Errorf("program references with a link and a file: %d, want %d", p, p0+2)
	}
	it.Close()
	r.Close()
	if _, u := m.Refs(); u != u0 {
		t.Errorf("user references after closing: %d, want %d", u, u0)
	}
	if p := prog.Refs(); p != p0 {
		t.Errorf("program references after closing: %d, want %d", p, p0)
	}
}

// A program that returns 1 asks for its object again: bpf_seq_read
// fails with EAGAIN when nothing came before it.
func TestMapIteratorRetryIsEAGAIN(t *testing.T) {
	k, _, m := mapIterKernel(t, sim.RuntimeInterpreter, 3)
	prog, err := k.NewProgram(iterSpec(asm.Mov.Imm(asm.R0, 1), asm.Return()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	if _, err := openIter(t, k, prog, m).Read(make([]byte, 64)); !errors.Is(err, unix.EAGAIN) {
		t.Errorf("read: %v, want EAGAIN", err)
	}
}

func TestIteratorLoadsAndAttachesAreRefused(t *testing.T) {
	k, coll, m := mapIterKernel(t, sim.RuntimeInterpreter, 1)
	ret0 := []asm.Instruction{asm.Mov.Imm(asm.R0, 0), asm.Return()}
	for _, c := range []struct {
		name string
		spec *ebpf.ProgramSpec
		want error
	}{
		{"fmod_ret", &ebpf.ProgramSpec{Type: ebpf.Tracing, AttachType: ebpf.AttachModifyReturn, AttachTo: "x", License: "GPL", Instructions: ret0}, uapi.ENOTSUPP},
		{"unknown target", &ebpf.ProgramSpec{Type: ebpf.Tracing, AttachType: ebpf.AttachTraceIter, AttachTo: "tcp", License: "GPL", Instructions: ret0}, unix.ENOENT},
		{"seq_write from XDP", &ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: []asm.Instruction{
			asm.Mov.Imm(asm.R2, 0), asm.Mov.Imm(asm.R3, 0), asm.FnSeqWrite.Call(), asm.Mov.Imm(asm.R0, 0), asm.Return()}}, unix.EINVAL},
		{"not GPL", &ebpf.ProgramSpec{Type: ebpf.Tracing, AttachType: ebpf.AttachTraceIter, AttachTo: "bpf_map_elem", License: "MIT", Instructions: []asm.Instruction{
			asm.LoadMem(asm.R1, asm.R1, 0, asm.DWord), asm.LoadMem(asm.R1, asm.R1, 0, asm.DWord),
			asm.Mov.Imm(asm.R2, 0), asm.Mov.Imm(asm.R3, 0), asm.FnSeqWrite.Call(), asm.Mov.Imm(asm.R0, 0), asm.Return()}}, unix.EINVAL},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := k.NewProgram(c.spec)
			if err == nil {
				p.Close()
			}
			if !errors.Is(err, c.want) {
				t.Errorf("load: %v, want %v", err, c.want)
			}
		})
	}
	if _, err := k.AttachIter(sim.IterOptions{Program: coll.Programs["dump"]}); !errors.Is(err, unix.EBADF) {
		t.Errorf("attach without a map: %v, want EBADF", err)
	}
	xdp, err := k.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: ret0})
	if err != nil {
		t.Fatal(err)
	}
	defer xdp.Close()
	if _, err := k.AttachIter(sim.IterOptions{Program: xdp, Map: m}); !errors.Is(err, unix.EINVAL) {
		t.Errorf("attach an XDP program: %v, want EINVAL", err)
	}
}

// Several goroutines read their own walks of one map while others update
// it; every walk ends, and -race finds nothing.
func TestMapIteratorsRunConcurrently(t *testing.T) {
	k, coll, m := mapIterKernel(t, sim.RuntimeInterpreter, 500)
	it, err := k.AttachIter(sim.IterOptions{Program: coll.Programs["dump"], Map: m})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5; i++ {
				r, err := it.Open()
				if err != nil {
					errs <- err
					return
				}
				b, err := io.ReadAll(r)
				r.Close()
				if err != nil || !bytes.Contains(b, []byte("counts: ")) {
					errs <- fmt.Errorf("walk: %v, %d bytes without the summary", err, len(b))
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 2000; i++ {
			if err := m.Put(uint32(i%500*7), uint64(i)); err != nil {
				errs <- err
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// BenchmarkMapIterator reads a whole walk of a 10,000-element hash with
// the dump program (a bpf_seq_printf per element): the figure per
// element.
func BenchmarkMapIterator(b *testing.B) {
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		b.Run(rt.String(), func(b *testing.B) {
			const n = 10000
			k, coll, m := mapIterKernel(b, rt, n)
			it, err := k.AttachIter(sim.IterOptions{Program: coll.Programs["dump"], Map: m})
			if err != nil {
				b.Fatal(err)
			}
			defer it.Close()
			benchWalks(b, n, it.Open)
		})
	}
}

// benchWalks times whole walks of n elements, each opened by open and
// read in 64 KiB reads to its end, and reports the time an element.
func benchWalks(b *testing.B, n int, open func() (io.ReadCloser, error)) {
	buf := make([]byte, 64<<10)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r, err := open()
		if err != nil {
			b.Fatal(err)
		}
		for {
			k, err := r.Read(buf)
			if err == io.EOF || k == 0 && err == nil {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		r.Close()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/elem")
}

// FuzzMapIteratorReads walks a map of fuzzed chunk counts with the chunks
// program (250 bytes a chunk, so that elements straddle reads and some
// overflow the buffer) in reads of fuzzed sizes: what the reads return in
// all, and the errno that ends them, are those of one walk in reads of
// 64 KiB, whatever the sizes, as bpf_seq_read makes them.
func FuzzMapIteratorReads(f *testing.F) {
	f.Add([]byte{60, 60, 60, 10, 0, 60, 131, 60}, []byte{1, 200, 17})
	f.Add([]byte{140, 1, 1}, []byte{255})
	f.Add([]byte{1, 60, 140}, []byte{3, 0})
	f.Add([]byte{}, []byte{9})
	k := newKernel(f, &sim.Options{CPUs: 2})
	spec, err := ebpf.LoadCollectionSpec("testdata/mapiter.bpf.o")
	if err != nil {
		f.Fatal(err)
	}
	coll, err := k.NewCollection(spec)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { coll.Close() })
	f.Fuzz(func(t *testing.T, counts, sizes []byte) {
		if len(counts) > 64 || len(sizes) == 0 {
			return
		}
		m, err := k.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: uint32(max(len(counts), 1))})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		for i, c := range counts {
			if err := m.Put(uint32(i), uint32(c)); err != nil {
				t.Fatal(err)
			}
		}
		limit := 1 << 20 // reads a walk may take; each returns a byte at least
		walk := func(size func(i int) int) (string, error) {
			r := openIter(t, k, coll.Programs["chunks"], m)
			var out []byte
			for i := 0; ; i++ {
				buf := make([]byte, size(i))
				n, err := r.Read(buf)
				out = append(out, buf[:n]...)
				if err == io.EOF {
					return string(out), nil
				}
				if err != nil {
					return string(out), err
				}
				if n == 0 || i > limit {
					t.Fatalf("read %d returned %d bytes without an end", i, n)
				}
			}
		}
		want, wantErr := walk(func(int) int { return 64 << 10 })
		limit = len(want) + 1
		got, gotErr := walk(func(i int) int { return 1 + int(sizes[i%len(sizes)])*97 })
		if errnoOf(gotErr) != errnoOf(wantErr) || (gotErr == nil) != (wantErr == nil) {
			t.Fatalf("reads of fuzzed sizes end with %v, reads of 64 KiB with %v", gotErr, wantErr)
		}
		if got != want {
			t.Fatalf("reads of fuzzed sizes give %d bytes, reads of 64 KiB %d", len(got), len(want))
		}
	})
}

// The bpf_map iterator walks every live map by id, whatever its type,
// the ones a test makes and closes meanwhile included: a map closed
// before the walk reaches it is not shown, and the walk ends once.
func TestMapsIteratorListsTheLiveMapsByID(t *testing.T) {
	k := newKernel(t, nil)
	coll := simCollection(t, k, "testdata/mapiter.bpf.o")
	var ms []*sim.Map
	for i, typ := range []ebpf.MapType{ebpf.Hash, ebpf.Array, ebpf.RingBuf, ebpf.Queue, ebpf.PerCPUHash} {
		spec := &ebpf.MapSpec{Name: fmt.Sprintf("itm_%d", i), Type: typ, KeySize: 4, ValueSize: 8, MaxEntries: 4096}
		switch typ {
		case ebpf.RingBuf:
			spec.KeySize, spec.ValueSize = 0, 0
		case ebpf.Queue:
			spec.KeySize = 0
		}
		m, err := k.NewMap(spec)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		ms = append(ms, m)
	}
	r := openIter(t, k, coll.Programs["maps"], nil)
	first := make([]byte, 10)
	if _, err := io.ReadFull(r, first); err != nil {
		t.Fatal(err)
	}
	ms[3].Close() // before the walk reaches it: the first read took one map
	rest, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	var want strings.Builder
	for i, m := range ms {
		if i == 3 {
			continue
		}
		fmt.Fprintf(&want, "itm_%d: type %d, key %d, value %d, max %d, flags 0x0\n", i, m.Type(), m.KeySize(), m.ValueSize(), m.MaxEntries())
	}
	want.WriteString("end\n")
	compareLines(t, string(first)+string(rest), want.String())
}

// FuzzIterPrograms loads fuzzed bytecode as an iterator program over a
// map's elements, attaches it to a hash and walks it: a refusal carries
// one of the verifier's errnos (EACCES at attach for a program reading
// past the map's keys or values), and a program the verifier accepted
// never faults, however it reads its context, the kernel objects behind
// it and its buffers, and its walk ends.
func FuzzIterPrograms(f *testing.F) {
	ret0 := asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}
	seeds := []asm.Instructions{
		append(asm.Instructions{
			asm.LoadMem(asm.R6, asm.R1, 0, asm.DWord),
			asm.LoadMem(asm.R2, asm.R1, 16, asm.DWord),
			asm.JEq.Imm(asm.R2, 0, "out"),
			asm.LoadMem(asm.R3, asm.R1, 24, asm.DWord),
			asm.JEq.Imm(asm.R3, 0, "out"),
			asm.LoadMem(asm.R4, asm.R3, 0, asm.DWord),
			asm.Add.Imm(asm.R4, 1),
			asm.StoreMem(asm.R3, 0, asm.R4, asm.DWord),
			asm.LoadMem(asm.R1, asm.R6, 0, asm.DWord),
			asm.Mov.Imm(asm.R3, 4),
			asm.FnSeqWrite.Call(),
		}, asm.Mov.Imm(asm.R0, 0).WithSymbol("out"), asm.Return()),
		append(asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 8, asm.DWord),
			asm.LoadMem(asm.R3, asm.R2, 44, asm.Word),
			asm.LoadMem(asm.R4, asm.R2, 8, asm.DWord),
			asm.LoadMem(asm.R5, asm.R4, 28, asm.Word),
		}, ret0...),
		append(asm.Instructions{
			asm.LoadMem(asm.R6, asm.R1, 0, asm.DWord),
			asm.LoadMem(asm.R7, asm.R6, 16, asm.DWord),
			asm.StoreMem(asm.RFP, -8, asm.R7, asm.DWord),
			asm.LoadMem(asm.R1, asm.R6, 0, asm.DWord),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -16),
			asm.LoadImm(asm.R3, 0x0a756c6c25, asm.DWord), // "%llu\n"
			asm.StoreMem(asm.RFP, -16, asm.R3, asm.DWord),
			asm.Mov.Imm(asm.R3, 8),
			asm.Mov.Reg(asm.R4, asm.RFP),
			asm.Add.Imm(asm.R4, -8),
			asm.Mov.Imm(asm.R5, 8),
			asm.FnSeqPrintf.Call(),
		}, ret0...),
	}
	for _, s := range seeds {
		code, err := insn.FromAsm(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(insn.Encode(code))
	}
	k := newKernel(f, &sim.Options{CPUs: 2, MemoryLimit: 64 << 20})
	m, err := k.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 8})
	if err != nil {
		f.Fatal(err)
	}
	for i := uint32(0); i < 5; i++ {
		if err := m.Put(i, uint64(i)); err != nil {
			f.Fatal(err)
		}
	}
	kbtf, err := k.KernelBTF()
	if err != nil {
		f.Fatal(err)
	}
	var fn *btf.Func
	if err := kbtf.TypeByName("bpf_iter_bpf_map_elem", &fn); err != nil {
		f.Fatal(err)
	}
	id, err := kbtf.TypeID(fn)
	if err != nil {
		f.Fatal(err)
	}
	load := sim.ProgramOptions{AttachBTFID: uint32(id), ExpectedAttachType: uint32(ebpf.AttachTraceIter)}
	f.Fuzz(func(t *testing.T, code []byte) {
		prog, err := k.LoadBytecodeWithOptions(ebpf.Tracing, "fuzz", code, load)
		if err != nil {
			if !isVerifierErrno(err) {
				t.Fatalf("load failed without one of the verifier's errnos: %v", err)
			}
			return
		}
		defer prog.Close()
		it, err := k.AttachIter(sim.IterOptions{Program: prog, Map: m})
		if err != nil {
			if !errors.Is(err, uapi.EACCES) {
				t.Fatalf("attach: %v, want EACCES or nothing", err)
			}
			return
		}
		defer it.Close()
		r, err := it.Open()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		buf := make([]byte, 4096)
		for i := 0; i < 64; i++ {
			_, err := r.Read(buf)
			if err == io.EOF {
				return
			}
			if err != nil && !errors.Is(err, uapi.E2BIG) && !errors.Is(err, uapi.EAGAIN) {
				t.Fatalf("a verified iterator program failed: %v\n%s", err, prog.Xlated())
			}
			if err != nil {
				return
			}
		}
		t.Fatalf("the walk of 5 elements did not end in 64 reads")
	})
}

// Loads from kernel objects are probe loads: one through a NULL pointer
// the object holds (a map's inner_map_meta) reads zero, interpreted and
// JITed (the JIT's exception table), and the xlated dump shows the load
// as written, as the kernel's does.
func TestProbeLoadsReadZerosOnAFault(t *testing.T) {
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		t.Run(rt.String(), func(t *testing.T) {
			k, _, m := mapIterKernel(t, rt, 3)
			prog, err := k.NewProgram(iterSpec(
				asm.LoadMem(asm.R2, asm.R1, 8, asm.DWord),  // ctx->map
				asm.LoadMem(asm.R3, asm.R2, 8, asm.DWord),  // map->inner_map_meta: NULL
				asm.LoadMem(asm.R4, asm.R3, 28, asm.Word),  // ->max_entries: a fault
				asm.LoadMem(asm.R5, asm.R1, 24, asm.DWord), // ctx->value
				asm.JEq.Imm(asm.R5, 0, "out"),
				asm.Add.Imm(asm.R4, 7),
				asm.StoreMem(asm.R5, 0, asm.R4, asm.DWord),
				asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
				asm.Return(),
			))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { prog.Close() })
			if prog.Runtime() != rt {
				t.Fatalf("the program runs in %s", prog.Runtime())
			}
			if _, err := io.ReadAll(openIter(t, k, prog, m)); err != nil {
				t.Fatal(err)
			}
			for i := uint32(0); i < 3; i++ {
				var v uint64
				if err := m.Lookup(i*7, &v); err != nil || v != 7 {
					t.Errorf("key %d: %d (%v), want 7: the probe load read zero", i*7, v, err)
				}
			}
			if x := prog.Xlated(); !strings.Contains(x, "r4 = *(u32 *)(r3 +28)") {
				t.Errorf("the probe load's dump:\n%s", x)
			}
		})
	}
}

// A pinned iterator link is a file on the BPF filesystem: opening it
// starts a walk, as `cat` of the pin does, while the pin holds the link
// (and its program and map) after every fd is closed; unpinning lets them
// go. Pins of other objects are not iterators.
func TestPinnedIteratorsAreReadAsFiles(t *testing.T) {
	k, coll, m := mapIterKernel(t, sim.RuntimeInterpreter, 20)
	prog := coll.Programs["dump"]
	p0 := prog.Refs()
	_, u0 := m.Refs()
	it, err := k.AttachIter(sim.IterOptions{Program: prog, Map: m})
	if err != nil {
		t.Fatal(err)
	}
	const pin = "/sys/fs/bpf/dump_counts"
	if err := it.Pin(pin); err != nil {
		t.Fatal(err)
	}
	if !it.IsPinned() {
		t.Error("IsPinned is false after Pin")
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	want := wantDump(t, m)
	for i := 0; i < 2; i++ { // each open is a new walk
		r, err := k.OpenPinnedIter(pin)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil {
			t.Fatal(err)
		}
		compareLines(t, string(got), want)
	}
	if p := prog.Refs(); p != p0+1 {
		t.Errorf("program references with the pin: %d, want %d", p, p0+1)
	}
	if err := it.Unpin(); err != nil {
		t.Fatal(err)
	}
	if p := prog.Refs(); p != p0 {
		t.Errorf("program references after unpinning: %d, want %d", p, p0)
	}
	if _, u := m.Refs(); u != u0 {
		t.Errorf("map user references after unpinning: %d, want %d", u, u0)
	}
	if _, err := k.OpenPinnedIter(pin); !errors.Is(err, unix.ENOENT) {
		t.Errorf("open after unpinning: %v, want ENOENT", err)
	}
	if err := m.Pin("/sys/fs/bpf/a_map"); err != nil {
		t.Fatal(err)
	}
	defer m.Unpin()
	if _, err := k.OpenPinnedIter("/sys/fs/bpf/a_map"); !errors.Is(err, unix.EINVAL) {
		t.Errorf("open of a pinned map: %v, want EINVAL", err)
	}
}
