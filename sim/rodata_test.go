package sim_test

import (
	"errors"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim/uapi"
)

// A frozen read-only global (.rodata as loaders leave it) is a constant to
// the verifier: a branch on it is decided, the other side is neither
// checked nor kept. While user space may still write the map, or programs
// may, the value is unknown and both sides are checked.
func TestFrozenReadOnlyGlobalsAreConstantsToTheVerifier(t *testing.T) {
	for _, c := range []struct {
		name   string
		flags  uint32
		freeze bool
		want   error // nil: accepted, with the dead side gone
	}{
		{"frozen, read-only for programs", uapi.BPF_F_RDONLY_PROG, true, nil},
		{"not frozen", uapi.BPF_F_RDONLY_PROG, false, uapi.EACCES},
		{"frozen, writable by programs", 0, true, uapi.EACCES},
	} {
		t.Run(c.name, func(t *testing.T) {
			k := newKernel(t, nil)
			m := newMap(t, k, &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1, Flags: c.flags})
			if err := m.Put(uint32(0), uint32(7)); err != nil {
				t.Fatal(err)
			}
			if c.freeze {
				if err := m.Freeze(); err != nil {
					t.Fatal(err)
				}
			}
			insns := asm.Instructions{
				asm.LoadMapValue(asm.R1, m.FD(), 0),
				asm.LoadMem(asm.R2, asm.R1, 0, asm.Word),
				asm.JEq.Imm(asm.R2, 7, "ok"),
				asm.Mov.Reg(asm.R0, asm.R5), // R5 !read_ok: refused if checked
				asm.Return(),
				asm.Mov.Imm(asm.R0, 0).WithSymbol("ok"),
				asm.Return(),
			}
			p, err := k.NewProgram(testSpec(t, ebpf.RawTracepoint, insns))
			if c.want != nil {
				if !errors.Is(err, c.want) {
					t.Fatalf("got %v, want %v", err, c.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			// lddw (2 slots), the load, the branch hard-wired away, and
			// the taken side.
			if n := len(p.Instructions()); n != 5 {
				t.Fatalf("%d instructions left, want 5:\n%s", n, p.Xlated())
			}
		})
	}
}
