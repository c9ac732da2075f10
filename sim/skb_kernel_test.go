package sim_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"syscall"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/kdiff"
)

// Kernel-differential tests of the __sk_buff context and legacy packet
// access: the same programs run in this machine's kernel (through
// cilium/ebpf's Program.Run) and in bpfsim, on the same packets and
// contexts, must give the same verdicts, return values, output packets and
// output contexts.

// skbRun is one test-run input.
type skbRun struct {
	name   string
	data   []byte
	ctx    []byte // nil: no context input
	ctxOut bool
	repeat uint32
}

// skbOutcome is what one run gave.
type skbOutcome struct {
	errno  syscall.Errno // of a failed run, or 0
	err    error
	retval uint32
	data   []byte
	ctx    []byte
}

func (o skbOutcome) String() string {
	if o.err != nil {
		return fmt.Sprintf("error %d (%v)", o.errno, o.err)
	}
	return fmt.Sprintf("retval %#x", o.retval)
}

// describe says how two outcomes of one run differ.
func describe(ko, so skbOutcome) string {
	if ko.err != nil || so.err != nil || ko.retval != so.retval {
		return fmt.Sprintf("kernel %v, bpfsim %v", ko, so)
	}
	var d []string
	if !bytes.Equal(ko.data, so.data) {
		d = append(d, fmt.Sprintf("output packet: kernel % x, bpfsim % x", ko.data, so.data))
	}
	for i := 0; i < max(len(ko.ctx), len(so.ctx)); i += 4 {
		k, s := window4(ko.ctx, i), window4(so.ctx, i)
		if !bytes.Equal(k, s) {
			d = append(d, fmt.Sprintf("context[%d:%d]: kernel % x, bpfsim % x", i, i+4, k, s))
		}
	}
	return strings.Join(d, "; ")
}

func window4(b []byte, i int) []byte {
	if i >= len(b) {
		return nil
	}
	return b[i:min(i+4, len(b))]
}

func errnoOf(err error) syscall.Errno {
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return 0
}

// kernelSKB loads insns in the kernel and runs them on every input. A
// rejected program gives the load error and no outcomes.
func kernelSKB(typ ebpf.ProgramType, insns asm.Instructions, runs []skbRun) (error, []skbOutcome) {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: typ, License: "GPL", Instructions: insns})
	if err != nil {
		return err, nil
	}
	defer prog.Close()
	var outs []skbOutcome
	for _, r := range runs {
		opts := &ebpf.RunOptions{Data: r.data, DataOut: make([]byte, len(r.data)+64), Repeat: r.repeat}
		if r.ctx != nil {
			opts.Context = r.ctx
		}
		var ctxOut []byte
		if r.ctxOut {
			ctxOut = make([]byte, sim.SKBContextSize)
			opts.ContextOut = ctxOut
		}
		ret, err := prog.Run(opts)
		o := skbOutcome{errno: errnoOf(err), err: err}
		if err == nil {
			o.retval, o.data, o.ctx = ret, opts.DataOut, ctxOut
		}
		outs = append(outs, o)
	}
	return nil, outs
}

// simSKB does the same on bpfsim.
func simSKB(k *sim.Kernel, typ ebpf.ProgramType, insns asm.Instructions, runs []skbRun) (error, []skbOutcome) {
	prog, err := k.NewProgram(&ebpf.ProgramSpec{Type: typ, License: "GPL", Instructions: insns})
	if err != nil {
		return err, nil
	}
	defer prog.Close()
	var outs []skbOutcome
	for _, r := range runs {
		// An output buffer as kernelSKB's: 64 bytes of room to grow.
		opts := &sim.RunOptions{Data: r.data, DataOut: make([]byte, len(r.data)+64), Repeat: r.repeat}
		if r.ctx != nil {
			opts.Context = r.ctx
		}
		if r.ctxOut {
			opts.ContextOut = make([]byte, sim.SKBContextSize)
		}
		res, err := prog.Test(opts)
		o := skbOutcome{errno: errnoOf(err), err: err}
		if err == nil {
			o.retval, o.data = uint32(res.R0), res.Data
			if r.ctxOut {
				o.ctx = res.Context
			}
		}
		outs = append(outs, o)
	}
	return nil, outs
}

// ctxAccessMessage finds the verifier's "invalid bpf_context access"
// line in a load error.
func ctxAccessMessage(err error) string {
	s := fmt.Sprintf("%+v", err)
	i := strings.Index(s, "invalid bpf_context access")
	if i < 0 {
		return ""
	}
	s = s[i:]
	if j := strings.IndexAny(s, "\n:"); j >= 0 {
		s = s[:j]
	}
	return strings.TrimSpace(s)
}

// skbDiff compares a kernel and a bpfsim result for the same program.
// bpfsim has no verifier pass over context accesses: a program the kernel
// refuses for one must fail in bpfsim when the access runs, with the
// verifier's message.
func skbDiff(runs []skbRun, valid []bool, kErr error, kOuts []skbOutcome, sErr error, sOuts []skbOutcome) []string {
	if kErr != nil {
		msg := ctxAccessMessage(kErr)
		if sErr != nil {
			return nil // both refuse at load
		}
		if msg == "" {
			return []string{fmt.Sprintf("the kernel refuses the program (%v), bpfsim loads it", kErr)}
		}
		var d []string
		for i, o := range sOuts {
			if !valid[i] {
				continue // the input itself is refused
			}
			if o.err == nil || !strings.Contains(o.err.Error(), msg) {
				d = append(d, fmt.Sprintf("%s: the kernel refuses the program with %q, bpfsim gives %v", runs[i].name, msg, o))
			}
		}
		return d
	}
	if sErr != nil {
		return []string{fmt.Sprintf("the kernel loads the program, bpfsim refuses it: %v", sErr)}
	}
	var d []string
	for i := range kOuts {
		ko, so := kOuts[i], sOuts[i]
		same := ko.errno == so.errno && (ko.err == nil) == (so.err == nil) &&
			ko.retval == so.retval && bytes.Equal(ko.data, so.data) && bytes.Equal(ko.ctx, so.ctx)
		if !same {
			d = append(d, fmt.Sprintf("%s: %s", runs[i].name, describe(ko, so)))
		}
	}
	return d
}

func ethFrame(dst [6]byte, typ uint16, payload []byte) []byte {
	b := append(dst[:], 0x02, 0x11, 0x22, 0x33, 0x44, 0x55, byte(typ>>8), byte(typ))
	return append(b, payload...)
}

func seq(n int, start byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = start + byte(i*7)
	}
	return b
}

// testPackets are inputs of every kind the kernel's eth_type_trans tells
// apart.
func testPackets() []skbRun {
	host := [6]byte{}
	ipv4 := append([]byte{0x45, 0x00, 0x00, 0x2e, 0x12, 0x34, 0x40, 0x00, 0x40, 0x06, 0xab, 0xcd,
		10, 0, 0, 1, 10, 0, 0, 2}, seq(26, 0x80)...) // IPv4 + TCP header + payload
	ipv6 := append([]byte{0x60, 0, 0, 0, 0, 12, 17, 64}, seq(44, 0xf0)...)
	arp := append([]byte{0, 1, 8, 0, 6, 4, 0, 1}, seq(20, 0x33)...)
	return []skbRun{
		{name: "IPv4/TCP to the host", data: ethFrame(host, 0x0800, ipv4)},
		{name: "IPv6/UDP multicast", data: ethFrame([6]byte{0x33, 0x33, 0, 0, 0, 1}, 0x86dd, ipv6)},
		{name: "ARP broadcast", data: ethFrame([6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 0x0806, arp)},
		{name: "raw 802.3 to another host", data: ethFrame([6]byte{2, 0, 0, 0, 0, 1}, 0x0010, append([]byte{0xff, 0xff}, seq(14, 1)...))},
		{name: "802.2 LLC", data: ethFrame(host, 0x0020, append([]byte{0x42, 0x42, 0x03}, seq(29, 9)...))},
		{name: "802.3 with one payload byte", data: ethFrame(host, 0x0005, []byte{0xff})},
		{name: "Ethernet header only", data: ethFrame(host, 0x0800, nil)},
		{name: "13 bytes", data: seq(13, 0)},
	}
}

// testContext is an __sk_buff input setting every field the kernel takes.
func testContext() []byte {
	c := make([]byte, sim.SKBContextSize)
	le := binary.LittleEndian
	le.PutUint32(c[8:], 0x80000001)           // mark
	le.PutUint32(c[32:], 0xfffe0102)          // priority
	le.PutUint32(c[36:], 7)                   // ingress_ifindex
	le.PutUint32(c[40:], 1)                   // ifindex
	copy(c[48:68], seq(20, 0x81))             // cb
	le.PutUint64(c[152:], 0x1122334455667788) // tstamp
	le.PutUint32(c[160:], 1500)               // wire_len
	le.PutUint32(c[164:], 0x8003)             // gso_segs
	le.PutUint32(c[176:], 0x12345)            // gso_size
	le.PutUint64(c[184:], 0x8877665544332211) // hwtstamp
	return c
}

// skbRuns crosses the packets with three context set-ups: none, an
// output only, and a full input.
func skbRuns() []skbRun {
	var runs []skbRun
	for _, p := range testPackets() {
		runs = append(runs, p)
		out := p
		out.name, out.ctxOut = p.name+", context out", true
		runs = append(runs, out)
		in := out
		in.name, in.ctx = p.name+", context in", testContext()
		runs = append(runs, in)
	}
	return runs
}

var skbTypes = []ebpf.ProgramType{ebpf.SocketFilter, ebpf.SchedCLS, ebpf.SchedACT, ebpf.CGroupSKB}

// forType adapts a program to typ: a cgroup_skb program may return only
// 0 or 1 (on ingress), so every exit keeps R0's lowest bit; what the
// program read is still seen in the output context.
func forType(typ ebpf.ProgramType, insns asm.Instructions) asm.Instructions {
	if typ != ebpf.CGroupSKB {
		return insns
	}
	var out asm.Instructions
	for _, in := range insns {
		if in.OpCode.JumpOp() == asm.Exit {
			clamp := asm.And.Imm(asm.R0, 1)
			if sym := in.Symbol(); sym != "" {
				clamp = clamp.WithSymbol(sym)
				in = in.WithSymbol("")
			}
			out = append(out, clamp)
		}
		out = append(out, in)
	}
	return out
}

type skbProg struct {
	name  string
	insns asm.Instructions
	runs  []skbRun
}

// loadProgs load every __sk_buff offset with every size, zero- and
// sign-extending, and store the value in cb[0..1] too, so the output
// context shows all 64 bits. Loads of data, data_end and data_meta return
// their distance from data instead of an address.
func loadProgs(runs []skbRun) []skbProg {
	var progs []skbProg
	for off := int16(0); off < sim.SKBContextSize; off++ {
		for _, size := range []asm.Size{asm.Byte, asm.Half, asm.Word, asm.DWord} {
			if int(off)%size.Sizeof() != 0 {
				continue
			}
			for _, sx := range []bool{false, true} {
				if sx && size == asm.DWord {
					continue
				}
				ld := asm.LoadMem(asm.R2, asm.R1, off, size)
				if sx {
					ld = asm.LoadMemSX(asm.R2, asm.R1, off, size)
				}
				insns := asm.Instructions{ld}
				if (off >= 76 && off < 84) || (off >= 140 && off < 144) {
					insns = append(insns, asm.LoadMem(asm.R3, asm.R1, 76, asm.Word), asm.Sub.Reg(asm.R2, asm.R3))
				}
				insns = append(insns, asm.StoreMem(asm.R1, 48, asm.R2, asm.DWord), asm.Mov.Reg(asm.R0, asm.R2), asm.Return())
				progs = append(progs, skbProg{fmt.Sprintf("load off=%d size=%d sx=%v", off, size.Sizeof(), sx), insns, runs})
			}
		}
	}
	return progs
}

// storeProgs store to every offset with every size, from a register and
// from an immediate, then read the field back where a tc program can.
func storeProgs(runs []skbRun) []skbProg {
	var progs []skbProg
	for off := int16(0); off < sim.SKBContextSize; off++ {
		for _, size := range []asm.Size{asm.Byte, asm.Half, asm.Word, asm.DWord} {
			if int(off)%size.Sizeof() != 0 {
				continue
			}
			for _, v := range []int64{0x1234, -0x0123456789abcdf0, 0xfffe, 0xffff} {
				progs = append(progs, skbProg{fmt.Sprintf("store off=%d size=%d value=%#x", off, size.Sizeof(), v), asm.Instructions{
					asm.LoadImm(asm.R2, v, asm.DWord),
					asm.StoreMem(asm.R1, off, asm.R2, size),
					asm.Mov.Imm(asm.R0, 0),
					asm.Return(),
				}, runs})
			}
			if size != asm.DWord {
				progs = append(progs, skbProg{fmt.Sprintf("store off=%d size=%d imm", off, size.Sizeof()), asm.Instructions{
					asm.StoreImm(asm.R1, off, 0x5678, size),
					asm.Mov.Imm(asm.R0, 0),
					asm.Return(),
				}, runs})
			}
		}
	}
	// Fields the output context does not show: store, then load.
	for _, off := range []int16{8, 12, 32, 44, 72} {
		for _, v := range []int64{0x1234, -0x0123456789abcdf0, 0xfffe, 0xffff, 0x10000} {
			progs = append(progs, skbProg{fmt.Sprintf("store and load off=%d value=%#x", off, v), asm.Instructions{
				asm.LoadImm(asm.R2, v, asm.DWord),
				asm.StoreMem(asm.R1, off, asm.R2, asm.Word),
				asm.LoadMem(asm.R0, asm.R1, off, asm.Word),
				asm.Return(),
			}, runs})
		}
	}
	return progs
}

// ldAbsProgs use LD_ABS and LD_IND at offsets around every packet's
// bounds and in the SKF_NET_OFF and SKF_LL_OFF ranges; a miss returns 0,
// a hit the value plus 0x1000.
func ldAbsProgs(runs []skbRun) []skbProg {
	var offs []int32
	for k := int32(0); k <= 72; k++ {
		offs = append(offs, k)
	}
	offs = append(offs, 1000, math.MaxInt32, math.MinInt32, -1, -14, -0x1000,
		interp.SKFLLOff-1, interp.SKFNetOff-1)
	for _, k := range []int32{0, 2, 6, 9, 12, 13, 14, 20, 40, 60} {
		offs = append(offs, interp.SKFNetOff+k, interp.SKFLLOff+k)
	}
	var progs []skbProg
	for _, size := range []asm.Size{asm.Byte, asm.Half, asm.Word} {
		for _, k := range offs {
			progs = append(progs, skbProg{fmt.Sprintf("ld_abs size=%d k=%d", size.Sizeof(), k), asm.Instructions{
				asm.Mov.Reg(asm.R6, asm.R1),
				asm.LoadAbs(k, size),
				asm.Add.Imm(asm.R0, 0x1000),
				asm.Return(),
			}, runs})
		}
		for _, c := range []struct {
			x   int64
			imm int32
		}{{10, 4}, {-20, 0}, {-20, 34}, {0x100000005, 0}, {interp.SKFNetOff, 2}, {interp.SKFLLOff, 12}, {math.MaxInt32, 1}, {-1, 1}, {40, -38}} {
			progs = append(progs, skbProg{fmt.Sprintf("ld_ind size=%d x=%#x imm=%d", size.Sizeof(), c.x, c.imm), asm.Instructions{
				asm.Mov.Reg(asm.R6, asm.R1),
				asm.LoadImm(asm.R7, c.x, asm.DWord),
				asm.LoadInd(asm.R0, asm.R7, c.imm, size),
				asm.Add.Imm(asm.R0, 0x1000),
				asm.Return(),
			}, runs})
		}
	}
	return progs
}

// otherProgs: packet writes through data/data_end, repeated runs, and a
// miss inside a bpf-to-bpf callee.
func otherProgs(runs []skbRun) []skbProg {
	var repeated []skbRun
	for _, r := range runs {
		r.repeat = 5
		repeated = append(repeated, r)
	}
	callee := &btf.Func{Name: "sub", Linkage: btf.StaticFunc, Type: &btf.FuncProto{Return: &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}}}
	main := &btf.Func{Name: "main", Linkage: btf.GlobalFunc, Type: &btf.FuncProto{Return: &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}}}
	return []skbProg{
		{"write the packet through data", asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 76, asm.Word),
			asm.LoadMem(asm.R3, asm.R1, 80, asm.Word),
			asm.Mov.Imm(asm.R0, -1),
			asm.Mov.Reg(asm.R4, asm.R2),
			asm.Add.Imm(asm.R4, 16),
			asm.JGT.Reg(asm.R4, asm.R3, "out"),
			asm.StoreImm(asm.R2, 0, 0xaa, asm.Byte),
			asm.StoreImm(asm.R2, 14, 0x77, asm.Half),
			asm.LoadMem(asm.R0, asm.R2, 12, asm.Word),
			asm.Return().WithSymbol("out"),
		}, runs},
		{"count runs in cb", asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 52, asm.Word),
			asm.Add.Imm(asm.R2, 1),
			asm.StoreMem(asm.R1, 52, asm.R2, asm.Word),
			asm.Mov.Reg(asm.R0, asm.R2),
			asm.Return(),
		}, repeated},
		{"count runs in cb and mark", asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 48, asm.Word),
			asm.Add.Imm(asm.R2, 1),
			asm.StoreMem(asm.R1, 48, asm.R2, asm.Word),
			asm.LoadMem(asm.R3, asm.R1, 8, asm.Word),
			asm.Add.Imm(asm.R3, 3),
			asm.StoreMem(asm.R1, 8, asm.R3, asm.Word),
			asm.Mov.Reg(asm.R0, asm.R2),
			asm.Return(),
		}, repeated},
		{"ld_abs miss in a callee returns 0 to the caller", asm.Instructions{
			btf.WithFuncMetadata(asm.Mov.Reg(asm.R6, asm.R1), main),
			asm.Call.Label("sub"),
			asm.Add.Imm(asm.R0, 7),
			asm.Return(),
			btf.WithFuncMetadata(asm.Mov.Reg(asm.R6, asm.R1), callee).WithSymbol("sub"),
			asm.LoadAbs(5000, asm.Byte),
			asm.Mov.Imm(asm.R0, 99),
			asm.Return(),
		}, runs},
	}
}

// sizeRuns probe the input size limits with a trivial program.
func sizeRuns() []skbRun {
	ctx := testContext()
	big := append(make([]byte, sim.SKBContextSize), 0, 0, 0, 0)
	bigBad := append(make([]byte, sim.SKBContextSize), 0, 0, 1, 0)
	pkt := testPackets()[0].data
	runs := []skbRun{
		{name: "largest packet", data: make([]byte, sim.SKBMaxData)},
		{name: "packet one byte too large", data: make([]byte, sim.SKBMaxData+1)},
		{name: "long zero-padded context", data: pkt, ctx: big, ctxOut: true},
		{name: "long context with a non-zero tail", data: pkt, ctx: bigBad, ctxOut: true},
		{name: "short context", data: pkt, ctx: ctx[:40], ctxOut: true},
		{name: "short context, no output", data: pkt, ctx: ctx[:12]},
	}
	for _, c := range []struct {
		off int
		v   uint32
	}{{0, 1}, {4, 1}, {12, 1}, {16, 1}, {28, 1}, {40, 0}, {44, 1}, {68, 1}, {72, 1}, {88, 1}, {140, 1}, {144, 1},
		{160, 20}, {160, 65536}, {160, 65537}, {164, 65535}, {164, 65536}, {168, 1}, {172, 1}, {180, 1}, {181, 1}} {
		c2 := append([]byte(nil), ctx...)
		binary.LittleEndian.PutUint32(c2[c.off:], c.v)
		runs = append(runs, skbRun{name: fmt.Sprintf("context with %d at %d", c.v, c.off), data: pkt, ctx: c2, ctxOut: true})
	}
	return runs
}

func TestSKBContextMatchesKernel(t *testing.T) {
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	k := newKernel(t, nil)
	runs := skbRuns()
	groups := []struct {
		name  string
		progs []skbProg
	}{
		{"loads", loadProgs(runs)},
		{"stores", storeProgs(runs)},
		{"legacy packet access", ldAbsProgs(runs)},
		{"others", otherProgs(runs)},
		{"input limits", []skbProg{{"return len", asm.Instructions{asm.LoadMem(asm.R0, asm.R1, 0, asm.Word), asm.Return()}, sizeRuns()}}},
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			compared, refused, failures := 0, 0, 0
			for _, typ := range skbTypes {
				valid := map[string]bool{}
				for _, p := range g.progs {
					if _, ok := valid[p.runs[0].name+fmt.Sprint(len(p.runs))]; !ok {
						_, outs := kernelSKB(typ, asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}, p.runs)
						for i, o := range outs {
							valid[fmt.Sprint(i, p.runs[i].name)] = o.err == nil
						}
						valid[p.runs[0].name+fmt.Sprint(len(p.runs))] = true
					}
					var ok []bool
					for i, r := range p.runs {
						ok = append(ok, valid[fmt.Sprint(i, r.name)])
					}
					if strings.HasPrefix(p.name, "load off=168 size=8") {
						continue // __sk_buff->sk: not simulated
					}
					insns := forType(typ, p.insns)
					kErr, kOuts := kernelSKB(typ, insns, p.runs)
					sErr, sOuts := simSKB(k, typ, insns, p.runs)
					if kErr != nil {
						if testing.Verbose() {
							t.Logf("%s, %s: the kernel refuses the program: %s", typ, p.name, kErr)
						}
						refused++
					} else {
						compared += len(kOuts)
					}
					for _, d := range skbDiff(p.runs, ok, kErr, kOuts, sErr, sOuts) {
						failures++
						if failures <= 30 {
							t.Errorf("%s, %s: %s", typ, p.name, d)
						}
					}
				}
			}
			t.Logf("%d runs compared, %d programs refused by both", compared, refused)
		})
	}
}

func TestLegacyPacketAccessRefusedOutsideSKBProgramsLikeKernel(t *testing.T) {
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	k := newKernel(t, nil)
	const msg = "BPF_LD_[ABS|IND] instructions not allowed for this program type"
	insns := asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1), asm.LoadAbs(0, asm.Byte), asm.Return()}
	for _, typ := range []ebpf.ProgramType{ebpf.XDP, ebpf.Kprobe, ebpf.TracePoint, ebpf.RawTracepoint, ebpf.Syscall} {
		spec := &ebpf.ProgramSpec{Type: typ, License: "GPL", Instructions: insns}
		if typ == ebpf.Syscall {
			spec.Flags = 1 << 4 // BPF_F_SLEEPABLE, which syscall programs need
		}
		kp, kErr := ebpf.NewProgram(spec)
		if kErr == nil {
			kp.Close()
			t.Errorf("%s: the kernel loads the program", typ)
			continue
		}
		if !strings.Contains(fmt.Sprintf("%+v", kErr), msg) {
			t.Errorf("%s: the kernel refuses the program for another reason: %v", typ, kErr)
		}
		_, sErr := k.NewProgram(spec)
		if errnoOf(sErr) != errnoOf(kErr) || sErr == nil || !strings.Contains(sErr.Error(), msg) {
			t.Errorf("%s: kernel %v; bpfsim %v", typ, errnoOf(kErr), sErr)
		}
	}
}

func TestRawTracepointRunMatchesKernel(t *testing.T) {
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	k := newKernel(t, nil)
	// r0 = args[0] * 3 + args[1], and the top half of args[1] if it is
	// odd.
	insns := asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord),
		asm.LoadMem(asm.R3, asm.R1, 8, asm.DWord),
		asm.Mul.Imm(asm.R2, 3),
		asm.Add.Reg(asm.R2, asm.R3),
		asm.Mov.Reg(asm.R0, asm.R2),
		asm.JSet.Imm(asm.R3, 1, "odd"),
		asm.Return(),
		asm.RSh.Imm(asm.R0, 32).WithSymbol("odd"),
		asm.Return(),
	}
	spec := &ebpf.ProgramSpec{Type: ebpf.RawTracepoint, License: "GPL", Instructions: insns}
	kp, err := ebpf.NewProgram(spec)
	if err != nil {
		t.Fatalf("the kernel refuses the program: %v", err)
	}
	defer kp.Close()
	sp, err := k.NewProgram(spec)
	if err != nil {
		t.Fatal(err)
	}
	args := func(vs ...uint64) []byte {
		var b []byte
		for _, v := range vs {
			b = binary.LittleEndian.AppendUint64(b, v)
		}
		return b
	}
	for _, c := range []struct {
		name   string
		ctx    []byte
		data   []byte
		repeat uint32
	}{
		{"two arguments", args(5, 0x100), nil, 0},
		{"odd second argument", args(5, 0x1234567800000001), nil, 0},
		{"twelve arguments", args(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12), nil, 0},
		{"thirteen arguments", args(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13), nil, 0},
		{"data", args(1, 2), []byte{1}, 0},
		{"repeat", args(1, 2), nil, 2},
	} {
		kr, kErr := kp.Run(&ebpf.RunOptions{Context: c.ctx, Data: c.data, Repeat: c.repeat})
		sr, sErr := sp.Run(&sim.RunOptions{Context: c.ctx, Data: c.data, Repeat: c.repeat})
		if kr != sr || errnoOf(kErr) != errnoOf(sErr) || (kErr == nil) != (sErr == nil) {
			t.Errorf("%s: kernel %#x, %v; bpfsim %#x, %v", c.name, kr, kErr, sr, sErr)
		}
	}
}

// TestCgroupSKBReturnCodesMatchKernel loads cgroup_skb programs whose R0
// at exit is a constant, a bounded or unknown number, a pointer or unset,
// for ingress, egress and an attach type cgroup_skb cannot have: the
// kernel's verdicts, errnos and messages (check_return_code), and for the
// programs both accept, the return value of a test run.
func TestCgroupSKBReturnCodesMatchKernel(t *testing.T) {
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	k := newKernel(t, nil)
	ret := func(body ...asm.Instruction) asm.Instructions { return append(body, asm.Return()) }
	lenR0 := asm.LoadMem(asm.R0, asm.R1, 0, asm.Word) // skb->len: 40 for the packet below
	progs := []struct {
		name  string
		insns asm.Instructions
	}{
		{"0", ret(asm.Mov.Imm(asm.R0, 0))},
		{"1", ret(asm.Mov.Imm(asm.R0, 1))},
		{"2", ret(asm.Mov.Imm(asm.R0, 2))},
		{"3", ret(asm.Mov.Imm(asm.R0, 3))},
		{"4", ret(asm.Mov.Imm(asm.R0, 4))},
		{"-1", ret(asm.Mov.Imm(asm.R0, -1))},
		{"len & 1", ret(lenR0, asm.And.Imm(asm.R0, 1))},
		{"len & 3", ret(lenR0, asm.And.Imm(asm.R0, 3))},
		{"len & 7", ret(lenR0, asm.And.Imm(asm.R0, 7))},
		{"len", ret(lenR0)},
		{"32-bit len & 1", ret(lenR0, asm.And.Imm32(asm.R0, 1))},
		{"len >> 31 (0 on the way)", ret(lenR0, asm.RSh.Imm(asm.R0, 31))},
		{"1 on one branch, 5 on the other", asm.Instructions{
			lenR0,
			asm.JEq.Imm(asm.R0, 40, "one"),
			asm.Mov.Imm(asm.R0, 5),
			asm.Return(),
			asm.Mov.Imm(asm.R0, 1).WithSymbol("one"),
			asm.Return(),
		}},
		{"the context pointer", ret(asm.Mov.Reg(asm.R0, asm.R1))},
		{"R0 never set", ret()},
	}
	pkt := testPackets()[0].data
	for _, at := range []ebpf.AttachType{ebpf.AttachCGroupInetIngress, ebpf.AttachCGroupInetEgress, ebpf.AttachCGroupInetSockCreate} {
		for _, p := range progs {
			spec := &ebpf.ProgramSpec{Type: ebpf.CGroupSKB, AttachType: at, License: "GPL", Instructions: p.insns}
			loadAndRunBoth(t, k, fmt.Sprintf("%s, R0 = %s", at, p.name), spec, pkt)
		}
	}
}

// loadAndRunBoth loads spec in the kernel and in bpfsim: both must accept
// it, or refuse it with the same errno and the kernel's last log line;
// what both accept runs once on pkt, with the same return value. It says
// whether the program ran.
func loadAndRunBoth(t *testing.T, k *sim.Kernel, name string, spec *ebpf.ProgramSpec, pkt []byte) bool {
	t.Helper()
	kp, kErr := ebpf.NewProgram(spec)
	if kp != nil {
		defer kp.Close()
	}
	sp, sErr := k.NewProgram(spec)
	if sp != nil {
		defer sp.Close()
	}
	if (kErr == nil) != (sErr == nil) || errnoOf(kErr) != errnoOf(sErr) || !strings.Contains(fmt.Sprint(sErr), kdiff.LastLogLine(kErr)) {
		t.Errorf("%s: kernel %v; bpfsim %v", name, kErr, sErr)
		return false
	}
	if kErr != nil {
		return false
	}
	kr, kRunErr := kp.Run(&ebpf.RunOptions{Data: pkt})
	sr, sRunErr := sp.Run(&sim.RunOptions{Data: pkt})
	if kr != sr || (kRunErr == nil) != (sRunErr == nil) {
		t.Errorf("%s: the kernel's run returns %#x (%v), bpfsim's %#x (%v)", name, kr, kRunErr, sr, sRunErr)
	}
	return true
}
