package splitbtf

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bpfsim/bpfsim/sim/uapi"
)

// The tests here run the same distillations and relocations through
// libbpf v1.7.0 (scripts/btfref.sh builds a small tool on it; its
// btf_relocate.c is the kernel's) and through this package, and require
// the same bytes, or the same errno and message.

var btfref struct {
	once sync.Once
	path string
	err  error
}

// libbpfTool returns the reference tool, building it the first time, or
// skips the test saying why it cannot.
func libbpfTool(t testing.TB) string {
	btfref.once.Do(func() {
		cmd := exec.Command("../../scripts/btfref.sh")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			btfref.err = fmt.Errorf("%v: %s", err, strings.TrimSpace(stderr.String()))
			return
		}
		btfref.path = strings.TrimSpace(string(out))
	})
	if btfref.err != nil {
		t.Skipf("no libbpf reference (scripts/btfref.sh failed; scripts/test-deps.sh installs what it needs): %v", btfref.err)
	}
	return btfref.path
}

// libbpfResult is what the tool made, or the errno and warning it failed
// with.
type libbpfResult struct {
	outs  [][]byte
	errno uapi.Errno
	warn  string
}

var libbpfWarning = regexp.MustCompile(`(?m)^libbpf: (.*)$`)

func runLibbpf(t *testing.T, tool, cmd string, ins [][]byte, nOut int) libbpfResult {
	t.Helper()
	dir := t.TempDir()
	var args []string
	for i, in := range ins {
		p := filepath.Join(dir, "in"+strconv.Itoa(i))
		if err := os.WriteFile(p, in, 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, p)
	}
	for i := 0; i < nOut; i++ {
		args = append(args, filepath.Join(dir, "out"+strconv.Itoa(i)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, tool, append([]string{cmd}, args...)...)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	err := c.Run()
	var exit *exec.ExitError
	if ctx.Err() != nil {
		t.Fatalf("libbpf did not finish %s in a minute", cmd)
	}
	if errors.As(err, &exit) {
		r := libbpfResult{errno: uapi.Errno(exit.ExitCode())}
		if m := libbpfWarning.FindStringSubmatch(stderr.String()); m != nil {
			r.warn = m[1]
		}
		return r
	}
	if err != nil {
		t.Fatal(err)
	}
	var r libbpfResult
	for _, p := range args[len(ins):] {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		r.outs = append(r.outs, b)
	}
	return r
}

// sameAsLibbpf compares outcomes: the same bytes, or the same errno and
// the message libbpf warned.
func sameAsLibbpf(t *testing.T, what string, lib libbpfResult, outs []*BTF, err error) {
	t.Helper()
	if lib.errno != 0 || err != nil {
		var errno uapi.Errno
		if !errors.As(err, &errno) || errno != lib.errno {
			t.Fatalf("%s: libbpf: errno %d (%s); bpfsim: %v", what, lib.errno, lib.warn, err)
		}
		msg := strings.TrimSuffix(err.Error(), ": "+errno.Error())
		if lib.warn != "" && msg != lib.warn {
			t.Fatalf("%s: libbpf warned\n\t%s\nbpfsim said\n\t%s", what, lib.warn, msg)
		}
		return
	}
	for i, b := range outs {
		if got := b.Raw(); !bytes.Equal(got, lib.outs[i]) {
			var want *BTF
			if p, err := Parse(lib.outs[i], b.Base); err == nil {
				want = p
			}
			t.Fatalf("%s: output %d differs from libbpf's (%d bytes, libbpf's %d)\nbpfsim:\n%s\nlibbpf:\n%s", what, i, len(got), len(lib.outs[i]), dumpString(b), dumpString(want))
		}
	}
}

func dumpString(b *BTF) string {
	if b == nil {
		return "(does not parse)"
	}
	var sb strings.Builder
	b.Dump(&sb)
	return sb.String()
}

// randomModule makes a split BTF on base that refers to random base types
// of every kind (a few of kinds distilling refuses, when refusable is
// set), embedding some and pointing to others, through its own
// pointers, structs, typedefs, prototypes, functions and qualifiers.
func randomModule(t *testing.T, rng *rand.Rand, base *BTF, refusable bool) *BTF {
	pick := func() uint32 {
		for {
			id := 1 + uint32(rng.Intn(len(base.Types)))
			switch base.TypeByID(id).Kind() {
			case KindFunc, KindVar, KindDatasec, KindDeclTag:
				if !refusable || rng.Intn(40) != 0 {
					continue
				}
			}
			return id
		}
	}
	s := NewSplit(base)
	bb := builder{t, s}
	n := 3 + rng.Intn(12)
	first := s.TypeCount()
	// own is one of the module's types: any of them behind a pointer,
	// else one made already, so that no type contains itself (the kernel
	// refuses such loops before it relocates, and libbpf's relocation
	// would not end).
	own := func(behindPointer bool) uint32 {
		if behindPointer {
			return first + uint32(rng.Intn(n))
		}
		return first + uint32(rng.Intn(int(s.TypeCount()-first)))
	}
	ref := func(behindPointer bool) uint32 {
		if rng.Intn(4) == 0 && (behindPointer || s.TypeCount() > first) {
			return own(behindPointer)
		}
		return pick()
	}
	any := func() uint32 { return ref(false) }
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("mod_%d_%d", rng.Intn(1000), i)
		switch rng.Intn(7) {
		case 0:
			bb.ref(KindPointer, "", ref(true))
		case 1:
			var ms []member
			for m := rng.Intn(5); m > 0; m-- {
				ms = append(ms, member{fmt.Sprintf("m%d", m), any(), uint32(64 * m)})
			}
			if rng.Intn(3) == 0 {
				name = ""
			}
			bb.composite(KindStruct, name, uint32(8*len(ms)+8), ms...)
		case 2:
			bb.ref(KindTypedef, name, any())
		case 3:
			var ps []member
			for p := rng.Intn(4); p > 0; p-- {
				ps = append(ps, member{"", any(), 0})
			}
			bb.proto(any(), ps...)
		case 4:
			bb.ref(KindConst, "", any())
		case 5:
			bb.array(any(), pick(), uint32(rng.Intn(16)))
		case 6:
			bb.composite(KindUnion, name, 8, member{"u", any(), 0})
		}
	}
	return s
}

// shifted returns base as another build of the kernel might number it:
// n unrelated types first, so every id moves.
func shifted(t *testing.T, base *BTF, n int) *BTF {
	out := &BTF{Strings: append([]byte(nil), base.Strings...)}
	bb := builder{t, out}
	for i := 0; i < n; i++ {
		bb.composite(KindStruct, fmt.Sprintf("another_build_%d", i), 4)
	}
	for i := range base.Types {
		c := base.Types[i].clone()
		for _, f := range c.idFields() {
			if *f != 0 {
				*f += uint32(n)
			}
		}
		out.AddType(c)
	}
	return out
}

// mutated returns base with one type that split's distilled base names
// renamed or resized, or, when rng says so, a duplicate added.
func mutated(t *testing.T, rng *rand.Rand, base, dist *BTF) *BTF {
	out := shifted(t, base, 0)
	if len(dist.Types) == 0 {
		return out
	}
	name := dist.Name(&dist.Types[rng.Intn(len(dist.Types))])
	for i := range out.Types {
		bt := &out.Types[i]
		if out.Name(bt) != name {
			continue
		}
		switch rng.Intn(4) {
		case 0:
			bt.NameOff = builder{t, out}.str(name + "_v2")
		case 1:
			if bt.Kind() != KindForward && bt.Kind() != KindInt {
				bt.SizeType += 8
			}
		case 2:
			out.AddType(bt.clone()) // the same name and size twice
		case 3:
			if bt.Kind() == KindForward {
				bt.Info ^= 1 << 31 // struct <-> union
			}
		}
		break
	}
	return out
}

func TestDistillAndRelocateAreLibbpfs(t *testing.T) {
	tool := libbpfTool(t)
	type kernel struct {
		name string
		btf  *BTF
	}
	var kernels []kernel
	for seed := int64(1); seed <= 3; seed++ {
		b, _ := buildKernel(t, seed, 2, 232)
		kernels = append(kernels, kernel{fmt.Sprintf("synthetic-%d", seed), b})
	}
	if raw, err := os.ReadFile("/sys/kernel/btf/vmlinux"); err == nil {
		b, err := Parse(raw, nil)
		if err != nil {
			t.Fatalf("this machine's vmlinux BTF: %v", err)
		}
		kernels = append(kernels, kernel{"vmlinux", b})
	} else {
		t.Logf("no vmlinux BTF, synthetic kernels only: %v", err)
	}
	counts := map[string]int{}
	outcome := func(op string, err error) string {
		key := op + ": done"
		if err != nil {
			key = op + ": " + regexp.MustCompile(`\d+`).ReplaceAllString(err.Error(), "N")
		}
		return key
	}
	for _, k := range kernels {
		raw := k.btf.Raw()
		n := 60
		if k.name == "vmlinux" {
			n = 12 // each libbpf run reads 5 MB of BTF
		}
		var relocatedOnto *BTF
		if k.name == "vmlinux" {
			relocatedOnto = shifted(t, k.btf, 7)
		}
		for i := 0; i < n; i++ {
			rng := rand.New(rand.NewSource(int64(i)))
			what := fmt.Sprintf("%s/%d", k.name, i)
			mod := randomModule(t, rng, k.btf, true)
			lib := runLibbpf(t, tool, "distill", [][]byte{raw, mod.Raw()}, 2)
			dist, split, err := Distill(mod)
			sameAsLibbpf(t, what+" distill", lib, []*BTF{dist, split}, err)
			counts[outcome("distill", err)]++
			if err != nil {
				continue
			}
			// Onto the kernel it was built for, another build of it, or
			// one whose types changed.
			var target *BTF
			switch {
			case relocatedOnto != nil:
				target = relocatedOnto
				if i%3 == 2 {
					target = k.btf
				}
			case i%3 == 0:
				target = k.btf
			case i%3 == 1:
				other, _ := buildKernel(t, int64(100+i), 3, 232)
				target = other
			default:
				target = mutated(t, rng, k.btf, dist)
			}
			lib = runLibbpf(t, tool, "relocate", [][]byte{dist.Raw(), split.Raw(), target.Raw()}, 1)
			relocated, _, err := Relocate(split, target)
			sameAsLibbpf(t, what+" relocate", lib, []*BTF{relocated}, err)
			counts[outcome("relocate", err)]++
		}
	}
	for k, n := range counts {
		t.Logf("%4d %s", n, k)
	}
}
