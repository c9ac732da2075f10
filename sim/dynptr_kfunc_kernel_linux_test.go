package sim_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/kdiff"
)

// dkCmd and dkRes are struct cmd and struct res of
// testdata/dynptr_kfunc.bpf.c.
type dkCmd struct {
	Op, Off, Len, Start, End, Pad uint32
	Flags, FFlags                 uint64
}

type dkRes struct {
	From, Rdonly, Size int64
	RC                 [4]int64
	Bytes              [16]byte
}

// The operations of testdata/dynptr_kfunc.bpf.c (OP_*).
const (
	dkSlice = iota
	dkSliceBuf
	dkSliceRdwr
	dkRead
	dkWrite
	dkAdjust
	dkClone
	dkData
	dkCopy
	dkMemset
)

// dkTarget runs the object's programs in the kernel or in bpfsim.
type dkTarget struct {
	setCmd    func(c dkCmd) error
	clearRes  func() error
	getRes    func() (dkRes, error)
	run       func(prog string, pkt, out []byte) (uint32, []byte, error)
	typeNames map[string]string
}

// dynptrKfuncCmds are the commands each program runs: every operation at
// offsets in, at the edge of and past the packet, with the flags and
// ranges that reach each errno.
func dynptrKfuncCmds() []dkCmd {
	var out []dkCmd
	offs := []uint32{0, 3, 14, 40, 44, 46, 48, 52, 56, 57, 60, 63, 64, 100, 1 << 31}
	for _, op := range []uint32{dkSlice, dkSliceBuf, dkSliceRdwr, dkData} {
		for _, off := range offs {
			out = append(out, dkCmd{Op: op, Off: off})
		}
	}
	for _, off := range offs {
		for _, flags := range []uint64{0, 1} {
			out = append(out, dkCmd{Op: dkRead, Off: off, Flags: flags})
		}
		for _, l := range []uint32{0, 1, 7} {
			for _, flags := range []uint64{0, 1, 2, 3, 4} {
				out = append(out, dkCmd{Op: dkWrite, Off: off, Len: l, Flags: flags})
			}
		}
	}
	ranges := [][2]uint32{{0, 0}, {0, 64}, {4, 12}, {12, 4}, {0, 65}, {70, 80}, {50, 50}, {2, 60}, {8, 8}}
	for _, op := range []uint32{dkAdjust, dkClone} {
		for _, r := range ranges {
			for _, off := range []uint32{0, 2, 8} {
				out = append(out, dkCmd{Op: op, Start: r[0], End: r[1], Off: off})
			}
		}
	}
	for _, off := range []uint32{0, 8, 60, 64} {
		for _, start := range []uint32{0, 4, 40, 60} {
			for _, l := range []uint32{0, 4, 16, 17, 300} {
				out = append(out, dkCmd{Op: dkCopy, Off: off, Start: start, End: 48 - start, Len: l})
			}
		}
	}
	for _, off := range []uint32{0, 8, 56, 63, 64, 65} {
		for _, l := range []uint32{0, 1, 8, 64, 65} {
			out = append(out, dkCmd{Op: dkMemset, Off: off, Len: l})
		}
	}
	for _, op := range []uint32{dkSlice, dkRead, dkWrite, dkAdjust, dkCopy, dkMemset} {
		out = append(out, dkCmd{Op: op, FFlags: 1, Len: 3, End: 4})
	}
	return out
}

// dynptrKfuncPacket is the packet every run starts from: an Ethernet frame
// of a type no one parses (so an skb test run takes it as it is), its
// bytes counting up.
func dynptrKfuncPacket() []byte {
	pkt := make([]byte, 64)
	for i := range pkt {
		pkt[i] = byte(i)
	}
	pkt[12], pkt[13] = 0x88, 0xb5
	return pkt
}

func runDynptrKfuncs(t *testing.T, tg *dkTarget) string {
	var b strings.Builder
	for _, prog := range []string{"xdp_dynptr", "tc_dynptr", "socket_dynptr"} {
		for _, c := range dynptrKfuncCmds() {
			if prog == "socket_dynptr" && c.Op == dkSliceRdwr {
				continue
			}
			if err := tg.setCmd(c); err != nil {
				t.Fatal(err)
			}
			if err := tg.clearRes(); err != nil {
				t.Fatal(err)
			}
			ret, out, err := tg.run(prog, dynptrKfuncPacket(), make([]byte, 256))
			if err != nil {
				t.Fatalf("%s %+v: %v", prog, c, err)
			}
			r, err := tg.getRes()
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "%s %+v: ret %d res %+v", prog, c, ret, r)
			if !bytes.Equal(out, dynptrKfuncPacket()) {
				fmt.Fprintf(&b, " packet % x", out)
			}
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// Every dynptr kfunc over XDP, tc and socket filter packets gives the
// kernel's results and leaves the kernel's packet, interpreted and JITed,
// the inlinable kfuncs called and inlined (seed 003):
// 1,440 runs of each.
func TestDynptrKfuncsAreTheKernels(t *testing.T) {
	coll := kernelCollection(t, "testdata/dynptr_kfunc.bpf.o")
	want := runDynptrKfuncs(t, &dkTarget{
		setCmd:   func(c dkCmd) error { return coll.Maps["cmds"].Update(uint32(0), c, ebpf.UpdateAny) },
		clearRes: func() error { return coll.Maps["results"].Update(uint32(0), dkRes{}, ebpf.UpdateAny) },
		getRes: func() (r dkRes, err error) {
			err = coll.Maps["results"].Lookup(uint32(0), &r)
			return
		},
		run: func(prog string, pkt, out []byte) (uint32, []byte, error) {
			opts := &ebpf.RunOptions{Data: pkt, DataOut: out}
			ret, err := coll.Programs[prog].Run(opts)
			return ret, opts.DataOut, err
		},
	})
	for _, o := range []sim.Options{{Runtime: sim.RuntimeInterpreter}, {Runtime: sim.RuntimeJIT},
		{Runtime: sim.RuntimeInterpreter, InlineKfuncs: true}, {Runtime: sim.RuntimeJIT, InlineKfuncs: true}} {
		name := o.Runtime.String()
		if o.InlineKfuncs {
			name += "-inlined"
		}
		t.Run(name, func(t *testing.T) {
			sc := simCollection(t, newKernel(t, &o), "testdata/dynptr_kfunc.bpf.o")
			got := runDynptrKfuncs(t, &dkTarget{
				setCmd:   func(c dkCmd) error { return sc.Maps["cmds"].Update(uint32(0), c, ebpf.UpdateAny) },
				clearRes: func() error { return sc.Maps["results"].Update(uint32(0), dkRes{}, ebpf.UpdateAny) },
				getRes: func() (r dkRes, err error) {
					err = sc.Maps["results"].Lookup(uint32(0), &r)
					return
				},
				run: func(prog string, pkt, out []byte) (uint32, []byte, error) {
					opts := &sim.RunOptions{Data: pkt, DataOut: out}
					ret, err := sc.Programs[prog].Run(opts)
					return ret, opts.DataOut, err
				},
			})
			compareLines(t, got, want)
		})
	}
}

// dynptrKfuncRefusals are the programs of
// testdata/dynptr_kfunc_refused.bpf.o and the last line of this machine's
// kernel's log for each ("" for accepted).
var dynptrKfuncRefusals = map[string]string{
	"accepted":                      "",
	"slice_size_not_constant":       "R4 must be a known constant",
	"slice_written":                 "R0 cannot write into rdonly_mem",
	"slice_read_past_its_end":       "R0 min value is outside of the allowed memory range",
	"slice_without_null_check":      "R0 invalid mem access 'rdonly_mem_or_null'",
	"slice_buffer_too_small":        "arg#2 arg#3 memory, len pair leads to invalid memory access", // the buffer runs into the dynptr
	"slice_after_adjust_head":       "R8 invalid mem access 'scalar'",
	"slice_after_skb_write":         "R7 invalid mem access 'scalar'",
	"slice_after_xdp_write":         "", // only an skb write may move the packet
	"from_skb_in_xdp":               "calling kernel function bpf_dynptr_from_skb is not allowed",
	"slice_rdwr_in_socket_filter":   "the prog does not allow writes to packet data",
	"from_xdp_of_the_stack":         "arg#0 expected pointer to ctx, but got fp",
	"from_xdp_into_null":            "arg#2 expected pointer to stack or const struct bpf_dynptr",
	"adjust_of_nothing":             "Expected an initialized dynptr as arg #0",
	"copy_from_nothing":             "Expected an initialized dynptr as arg #2",
	"clone_submitted_original_read": "Expected an initialized dynptr as arg #2",
	"clone_submitted_accepted":      "",
	// Accepted by 6.18: a bpf_dynptr_slice slice has no ref_obj_id, so
	// giving its ring buffer record back does not end it.
	"ringbuf_slice_after_submit": "",
	// Accepted by 6.18: remaking a dynptr ends only bpf_dynptr_data's
	// slices, whose type is plain PTR_TO_MEM.
	"slice_after_dynptr_remade": "",
}

// The kernel gives each program of testdata/dynptr_kfunc_refused.bpf.o the
// verdict, the errno and the message bpfsim gives it.
func TestDynptrKfuncRefusalsAreTheKernels(t *testing.T) {
	checkRefusalsAreTheKernels(t, "testdata/dynptr_kfunc_refused.bpf.o", dynptrKfuncRefusals)
}

// dynptrGlobalRefusals are the programs of testdata/dynptr_global.bpf.o
// and the last line of this machine's kernel's log for each.
var dynptrGlobalRefusals = map[string]string{
	"accepted":                "",
	"ringbuf_passed":          "",
	"global_submits":          "cannot release unowned const bpf_dynptr",
	"global_remakes":          "Dynptr has to be an uninitialized dynptr",
	"caller_passes_uninit":    "Caller passes invalid args into func#1 ('sum4')",
	"caller_passes_map_value": "Caller passes invalid args into func#1 ('sum4')",
}

// Global functions taking a dynptr get the kernel's verdicts and
// messages.
func TestDynptrGlobalFunctionRefusalsAreTheKernels(t *testing.T) {
	checkRefusalsAreTheKernels(t, "testdata/dynptr_global.bpf.o", dynptrGlobalRefusals)
}

// The accepted programs of testdata/dynptr_global.bpf.o return the
// kernel's results and leave its packets, on packets of every length an
// XDP test run takes from 14 to 60 bytes: what the global functions read, slice, write and narrow
// through the caller's dynptr.
func TestDynptrGlobalFunctionsRunAsTheKernels(t *testing.T) {
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	const obj = "testdata/dynptr_global.bpf.o"
	progs := []string{"accepted", "ringbuf_passed"}
	packet := func(n int) []byte {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(i*7 + 3)
		}
		return p
	}
	transcript := func(run func(name string, pkt []byte) (uint32, []byte, error)) string {
		var b strings.Builder
		for _, name := range progs {
			for n := 14; n <= 60; n++ {
				ret, out, err := run(name, packet(n))
				if err != nil {
					t.Fatalf("%s on %d bytes: %v", name, n, err)
				}
				fmt.Fprintf(&b, "%s %d: %#x % x\n", name, n, ret, out)
			}
		}
		return b.String()
	}
	kernel := map[string]*ebpf.Collection{}
	for _, name := range progs {
		c, err := ebpf.NewCollection(loadOneProgram(t, obj, name))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		kernel[name] = c
	}
	want := transcript(func(name string, pkt []byte) (uint32, []byte, error) {
		opts := &ebpf.RunOptions{Data: pkt, DataOut: make([]byte, 128)}
		ret, err := kernel[name].Programs[name].Run(opts)
		return ret, opts.DataOut, err
	})
	for _, o := range []sim.Options{{Runtime: sim.RuntimeInterpreter}, {Runtime: sim.RuntimeJIT},
		{Runtime: sim.RuntimeInterpreter, InlineKfuncs: true}} {
		t.Run(fmt.Sprintf("%v-inline=%v", o.Runtime, o.InlineKfuncs), func(t *testing.T) {
			k := newKernel(t, &o)
			got := transcript(func(name string, pkt []byte) (uint32, []byte, error) {
				c, err := k.NewCollection(loadOneProgram(t, obj, name))
				if err != nil {
					return 0, nil, err
				}
				defer c.Close()
				opts := &sim.RunOptions{Data: pkt, DataOut: make([]byte, 128)}
				ret, err := c.Programs[name].Run(opts)
				return ret, opts.DataOut, err
			})
			if got != want {
				t.Errorf("bpfsim:\n%s\nkernel:\n%s", got, want)
			}
		})
	}
}
