//go:build linux

package kdiff

import (
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/arraymap"
	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// The verifier's rewrites, compared with this machine's kernel: the same
// program loaded in both must come out as the same instructions. bpfsim
// runs with the kernel's own dead code rule (verifier.HardWireFromSeen).
// What may differ is only what depends on the kernel's build: map
// addresses, offsetof(struct bpf_array, value) and the addresses of kernel
// functions, so calls are compared by the name of the function they reach.

func linuxLikeSim(t *testing.T) *sim.Kernel {
	t.Helper()
	if _, err := OpenKernel(); err != nil {
		t.Skipf("skipped: this machine cannot load BPF programs: %v", err)
	}
	k, err := sim.NewKernel(&sim.Options{HardWire: verifier.HardWireFromSeen})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// loadInKernel loads raw instructions in this machine's kernel and returns
// its xlated program.
func loadInKernel(t *testing.T, typ ebpf.ProgramType, insns []insn.Insn) []insn.Insn {
	t.Helper()
	p, err := ebpf.NewProgram(specOf(t, typ, insns))
	if err != nil {
		t.Fatalf("the kernel refused the program: %v", err)
	}
	defer p.Close()
	x, err := KernelXlated(p)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// mapsInBoth creates the map of spec in this machine's kernel and in k,
// both closed when the test ends.
func mapsInBoth(t *testing.T, k *sim.Kernel, spec *ebpf.MapSpec) (*ebpf.Map, *sim.Map) {
	t.Helper()
	km, err := ebpf.NewMap(spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { km.Close() })
	sm, err := k.NewMap(spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sm.Close() })
	return km, sm
}

func loadInSim(t *testing.T, k *sim.Kernel, typ ebpf.ProgramType, insns []insn.Insn) []insn.Insn {
	t.Helper()
	p, err := k.LoadInsns(typ, "prog", insns)
	if err != nil {
		t.Fatalf("bpfsim refused the program: %v", err)
	}
	defer p.Close()
	return p.Instructions()
}

// sameXlated is SameXlated, failing t where they differ.
func sameXlated(t *testing.T, k *sim.Kernel, kernel, simulated []insn.Insn) (valueOffset int32) {
	t.Helper()
	off, err := SameXlated(k, kernel, simulated)
	if errors.Is(err, ErrNoKernelSymbols) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return off
}

func lddwMap(dst uint8, fd int) []insn.Insn {
	return []insn.Insn{{Code: insn.LD | insn.IMM | insn.DW, Dst: dst, Src: insn.PseudoMapFD, Imm: int32(fd)}, {}}
}

func movImm(dst uint8, imm int32) insn.Insn {
	return insn.Insn{Code: insn.ALU64 | insn.MOV | insn.K, Dst: dst, Imm: imm}
}

func fpPlus(dst uint8, off int32) []insn.Insn {
	return []insn.Insn{
		{Code: insn.ALU64 | insn.MOV | insn.X, Dst: dst, Src: insn.R10},
		{Code: insn.ALU64 | insn.ADD | insn.K, Dst: dst, Imm: off},
	}
}

func callHelper(id int32) insn.Insn { return insn.Insn{Code: insn.JMP | insn.CALL, Imm: id} }

// mapCalls calls every helper bpfsim has for the map: a zero key at
// fp-8, a zero value at fp-32.
func mapCalls(fd int, percpu bool) []insn.Insn {
	p := []insn.Insn{movImm(insn.R1, 0)}
	for off := int16(-32); off < 0; off += 8 {
		p = append(p, insn.Insn{Code: insn.STX | insn.MEM | insn.DW, Dst: insn.R10, Src: insn.R1, Off: off})
	}
	p = append(p, fpPlus(insn.R2, -8)...)
	p = append(p, lddwMap(insn.R1, fd)...)
	p = append(p, callHelper(uapi.FuncMapLookupElem))
	p = append(p, fpPlus(insn.R2, -8)...)
	p = append(p, fpPlus(insn.R3, -32)...)
	p = append(p, movImm(insn.R4, 0))
	p = append(p, lddwMap(insn.R1, fd)...)
	p = append(p, callHelper(uapi.FuncMapUpdateElem))
	p = append(p, fpPlus(insn.R2, -8)...)
	p = append(p, lddwMap(insn.R1, fd)...)
	p = append(p, callHelper(uapi.FuncMapDeleteElem))
	if percpu {
		p = append(p, fpPlus(insn.R2, -8)...)
		p = append(p, movImm(insn.R3, 0))
		p = append(p, lddwMap(insn.R1, fd)...)
		p = append(p, callHelper(uapi.FuncMapLookupPercpuElem))
	}
	return append(p, movImm(insn.R0, 0), insn.Insn{Code: insn.JMP | insn.EXIT})
}

func TestMapCallFixupsMatchKernel(t *testing.T) {
	k := linuxLikeSim(t)
	for _, c := range []struct {
		name string
		spec ebpf.MapSpec
	}{
		{"array, power-of-two elements", ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 12, MaxEntries: 5}},
		{"array, other elements", ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 20, MaxEntries: 7}},
		{"array made for map-in-map", ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 3, Flags: uapi.BPF_F_INNER_MAP}},
		{"percpu array", ebpf.MapSpec{Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: 9}},
		{"hash", ebpf.MapSpec{Type: ebpf.Hash, KeySize: 6, ValueSize: 8, MaxEntries: 5}},
		{"hash, long keys", ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 20, MaxEntries: 5}},
		{"percpu hash", ebpf.MapSpec{Type: ebpf.PerCPUHash, KeySize: 4, ValueSize: 8, MaxEntries: 5}},
		{"lpm trie", ebpf.MapSpec{Type: ebpf.LPMTrie, KeySize: 8, ValueSize: 8, MaxEntries: 5, Flags: uapi.BPF_F_NO_PREALLOC}},
	} {
		t.Run(c.name, func(t *testing.T) {
			km, sm := mapsInBoth(t, k, &c.spec)
			percpu := c.spec.Type == ebpf.PerCPUArray || c.spec.Type == ebpf.PerCPUHash
			kx := loadInKernel(t, ebpf.SocketFilter, mapCalls(km.FD(), percpu))
			sx := loadInSim(t, k, ebpf.SocketFilter, mapCalls(sm.FD(), percpu))
			if off := sameXlated(t, k, kx, sx); off != 0 {
				t.Logf("this kernel's offsetof(struct bpf_array, value) is %d, bpfsim's %d", off, arraymap.ValueOffset)
			}
		})
	}
}

// The seed programs of the dead code tests (sim/deadcode_test.go), which
// this kernel treats by the successors it saw.
func TestDeadCodeMatchesKernel(t *testing.T) {
	k := linuxLikeSim(t)
	jne := func(dst uint8, imm int32, off int16) insn.Insn {
		return insn.Insn{Code: insn.JMP | insn.JNE | insn.K, Dst: dst, Imm: imm, Off: off}
	}
	exit := insn.Insn{Code: insn.JMP | insn.EXIT}
	for _, c := range []struct {
		name  string
		insns []insn.Insn
	}{
		{"cond_always_false", []insn.Insn{movImm(1, 1), movImm(0, 42), jne(1, 1, 1), movImm(0, 24), exit}},
		{"cond_always_true", []insn.Insn{movImm(1, 2), movImm(0, 42), jne(1, 1, 1), movImm(0, 24), exit}},
		{"cond_unknown", []insn.Insn{callHelper(uapi.FuncGetPrandomU32), {Code: insn.ALU64 | insn.MOV | insn.X, Dst: 1, Src: 0},
			movImm(0, 42), jne(1, 1, 1), movImm(0, 24), exit}},
		{"condition on a constant argument", []insn.Insn{movImm(1, 42), {Code: insn.JMP | insn.CALL, Src: insn.PseudoCall, Imm: 1}, exit,
			movImm(0, 1), jne(1, 42, 1), movImm(0, 2), exit}},
	} {
		t.Run(c.name, func(t *testing.T) {
			sameXlated(t, k, loadInKernel(t, ebpf.SocketFilter, c.insns), loadInSim(t, k, ebpf.SocketFilter, c.insns))
		})
	}
}

func TestDivModGuardsMatchKernel(t *testing.T) {
	k := linuxLikeSim(t)
	p := []insn.Insn{callHelper(uapi.FuncGetPrandomU32), {Code: insn.ALU64 | insn.MOV | insn.X, Dst: 1, Src: 0}}
	for _, cls := range []uint8{insn.ALU64, insn.ALU} {
		for _, op := range []uint8{insn.DIV, insn.MOD} {
			for _, signed := range []int16{0, 1} {
				p = append(p, insn.Insn{Code: cls | op | insn.X, Dst: 1, Src: 0, Off: signed})
				p = append(p, insn.Insn{Code: cls | op | insn.K, Dst: 1, Off: signed, Imm: -1})
			}
		}
	}
	p = append(p, movImm(0, 0), insn.Insn{Code: insn.JMP | insn.EXIT})
	sameXlated(t, k, loadInKernel(t, ebpf.SocketFilter, p), loadInSim(t, k, ebpf.SocketFilter, p))
}

// bpfsim's dump of a program from an ELF object with BTF, line info and
// all, is bpftool's dump of the same object loaded in the kernel, but for
// what depends on the kernel's build and on rewrites bpfsim does not make
// (normalize says which).
func TestXlatedDumpWithSourceMatchesBpftool(t *testing.T) {
	k := linuxLikeSim(t)
	bpftool, err := exec.LookPath("bpftool")
	if err != nil {
		t.Skip("skipped: bpftool is not installed (Debian package bpftool)")
	}
	for _, c := range []struct{ object, prog string }{
		{"../testdata/maps.bpf.o", "count"},
		{"../testdata/progs.bpf.o", "xdp_sum"},
		{"../testdata/progs.bpf.o", "double_it"},
		// kfunc calls, named from the kernel's symbols
		{"../testdata/iter.bpf.o", "for_loop"},
	} {
		t.Run(c.prog, func(t *testing.T) {
			spec, err := ebpf.LoadCollectionSpec(c.object)
			if err != nil {
				t.Fatal(err)
			}
			kc, err := ebpf.NewCollection(spec)
			if err != nil {
				t.Fatal(err)
			}
			defer kc.Close()
			info, err := kc.Programs[c.prog].Info()
			if err != nil {
				t.Fatal(err)
			}
			id, _ := info.ID()
			want, err := exec.Command(bpftool, "prog", "dump", "xlated", "id", fmt.Sprint(id)).Output()
			if err != nil {
				t.Fatalf("bpftool: %v", err)
			}
			spec, err = ebpf.LoadCollectionSpec(c.object)
			if err != nil {
				t.Fatal(err)
			}
			sc, err := k.NewCollection(spec)
			if err != nil {
				t.Fatal(err)
			}
			defer sc.Close()
			got := sc.Programs[c.prog].Xlated()
			if normalize(got) != normalize(string(want)) {
				t.Fatalf("dumps differ (after normalizing):\n%s", lineDiffs(normalize(string(want)), normalize(got)))
			}
		})
	}
}

var (
	mapID = regexp.MustCompile(`map\[id:\d+\]`)
	// The call immediates: offsets between kernel functions.
	callImm = regexp.MustCompile(`(call [A-Za-z_0-9]+)#-?\d+`)
	// The value offset of struct bpf_array, added right after loading
	// an array map's address.
	arrayValue = regexp.MustCompile(`(r1 = map\[id:N\]\n\s*\d+: \(07\) r1 \+= )\d+`)
	// bpftool releases before the per-CPU instruction existed print it
	// as a plain move.
	percpu = regexp.MustCompile(`&\(void __percpu \*\)\((r\d+)\)`)
	// XDP context loads: the kernel rewrites xdp_md->data and data_end
	// into 8-byte loads of xdp_buff's fields; bpfsim's xdp_md reads as
	// written (a context device), so it does not.
	xdpCtx = regexp.MustCompile(`\((61|79)\) (r\d+) = \*\(u(32|64) \*\)\(r1 \+(0|4|8)\)`)
)

func normalize(dump string) string {
	dump = mapID.ReplaceAllString(dump, "map[id:N]")
	dump = callImm.ReplaceAllString(dump, "$1#IMM")
	dump = arrayValue.ReplaceAllString(dump, "${1}VALUE_OFFSET")
	dump = percpu.ReplaceAllString(dump, "$1")
	return xdpCtx.ReplaceAllString(dump, "(ctx) $2 = ctx->data or data_end")
}

func lineDiffs(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := 0; i < max(len(w), len(g)); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			fmt.Fprintf(&b, "bpftool: %q\nbpfsim:  %q\n", wl, gl)
		}
	}
	return b.String()
}
