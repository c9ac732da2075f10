package sim_test

import (
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// bpf_strncmp compares the program's bytes with a constant string of a
// frozen read-only map as strncmp does: -1, 0 or 1, stopping at a NUL
// both share or after size bytes.
func TestStrncmpComparesWithAConstantString(t *testing.T) {
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		k := newKernel(t, &sim.Options{Runtime: rt})
		m, err := k.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 16, MaxEntries: 1, Flags: uapi.BPF_F_RDONLY_PROG})
		if err != nil {
			t.Fatal(err)
		}
		value := make([]byte, 16)
		copy(value, "bash\x00")
		if err := m.Put(uint32(0), value); err != nil {
			t.Fatal(err)
		}
		if err := m.Freeze(); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			s1   string
			size int32
			want int32
		}{
			{"bash", 5, 0}, {"bas", 5, -1}, {"bat", 5, 1}, {"bax", 2, 0}, {"bash\x00xyz", 8, 0},
		} {
			spec := testSpec(t, ebpf.Syscall, asm.Instructions{
				asm.LoadMem(asm.R4, asm.R1, 0, asm.DWord), asm.StoreMem(asm.RFP, -8, asm.R4, asm.DWord),
				asm.LoadMapValue(asm.R3, m.FD(), 0),
				asm.Mov.Reg(asm.R1, asm.RFP), asm.Add.Imm(asm.R1, -8), asm.Mov.Imm(asm.R2, c.size),
				asm.FnStrncmp.Call(), asm.Return(),
			})
			p, err := k.NewProgram(spec)
			if err != nil {
				t.Fatal(err)
			}
			ctx := make([]byte, 8)
			copy(ctx, c.s1)
			r, err := p.Run(&sim.RunOptions{Context: ctx})
			p.Close()
			if err != nil || int32(r) != c.want {
				t.Errorf("%v: strncmp(%q, %d, \"bash\") = %d (%v), want %d", rt, c.s1, c.size, int32(r), err, c.want)
			}
		}
	}
}
