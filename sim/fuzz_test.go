package sim_test

import (
	"bytes"
	"errors"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/kdiff"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// FuzzLoadAndRun loads arbitrary bytecode as a raw, XDP or syscall program
// on one long-lived kernel and runs it on arbitrary input. Loading may fail
// with the kernel's errnos; a raw program (unverified) may fault, but a
// program the verifier accepted must never fault: that is the verifier's
// promise. Nothing may panic or corrupt the kernel for the next input. The
// corpus is kept under testdata/fuzz/FuzzLoadAndRun.
func FuzzLoadAndRun(f *testing.F) {
	for seed := uint64(0); seed < 6; seed++ {
		p := kdiff.Generate(seed, kdiff.DefaultGenOptions)
		if code, err := insn.FromAsm(p.Spec.Instructions); err == nil {
			f.Add(uint8(1), insn.Encode(code), p.Packet)
		}
	}
	f.Add(uint8(0), insn.Encode([]insn.Insn{{Code: 0x71, Dst: 0, Src: 1}, {Code: 0x95}}), []byte{7})
	f.Add(uint8(2), insn.Encode([]insn.Insn{{Code: 0x79, Dst: 0, Src: 1}, {Code: 0x95}}), make([]byte, 8))

	k, err := sim.NewKernel(&sim.Options{CPUs: 1, MemoryLimit: 64 << 20})
	if err != nil {
		f.Fatal(err)
	}
	// Programs with maps: their maps live in the kernel for the whole
	// run, so mutated programs keep valid fds to them.
	for seed := uint64(0); seed < 6; seed++ {
		p := kdiff.Generate(seed, kdiff.DefaultMapGenOptions)
		if p.Spec == nil {
			continue
		}
		spec := p.Spec.Copy()
		for _, ms := range p.Maps {
			m, err := k.NewMap(ms)
			if err != nil {
				f.Fatal(err)
			}
			if err := spec.Instructions.AssociateMap(ms.Name, m); err != nil && !errors.Is(err, asm.ErrUnreferencedSymbol) {
				f.Fatal(err)
			}
		}
		if code, err := insn.FromAsm(spec.Instructions); err == nil {
			f.Add(uint8(1), insn.Encode(code), p.Packet)
		}
	}
	// A ring buffer program: reserve, fill, submit or discard, so that
	// mutations explore the verifier's reference tracking and the
	// helpers' handling of records.
	rb, err := k.NewMap(&ebpf.MapSpec{Type: ebpf.RingBuf, MaxEntries: 4096})
	if err != nil {
		f.Fatal(err)
	}
	ring := asm.Instructions{
		asm.Mov.Reg(asm.R7, asm.R1),
		asm.LoadMapPtr(asm.R1, rb.FD()),
		asm.Mov.Imm(asm.R2, 16),
		asm.Mov.Imm(asm.R3, 0),
		asm.FnRingbufReserve.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.Mov.Reg(asm.R6, asm.R0),
		asm.LoadMem(asm.R2, asm.R7, 0, asm.Word),
		asm.StoreMem(asm.R6, 0, asm.R2, asm.DWord),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, 0),
		asm.JEq.Imm(asm.R2, 1, "discard"),
		asm.FnRingbufSubmit.Call(),
		asm.Ja.Label("out"),
		asm.FnRingbufDiscard.Call().WithSymbol("discard"),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	}
	if code, err := insn.FromAsm(ring); err == nil {
		f.Add(uint8(1), insn.Encode(code), make([]byte, 14))
		f.Add(uint8(0), insn.Encode(code), make([]byte, 14))
	} else {
		f.Fatal(err)
	}
	// A value's bpf_spin_lock taken, the value bumped and the lock
	// released: mutations explore the verifier's lock rules, and a
	// verified mutant that left a lock held would hang the next run.
	locked, err := k.NewMap(lockedPair)
	if err != nil {
		f.Fatal(err)
	}
	if code, err := insn.FromAsm(lockedBump(locked, true)); err == nil {
		f.Add(uint8(1), insn.Encode(code), make([]byte, 14))
	} else {
		f.Fatal(err)
	}
	// Walks of a hash and an array (bpf_for_each_map_elem) calling back
	// into the program: without BTF func info the verifier refuses them,
	// so they run unverified, and mutations explore the helper and the
	// callback calls with bad maps, callbacks and flags.
	for _, spec := range []*ebpf.MapSpec{
		{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 8},
		{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 4},
	} {
		m, err := k.NewMap(spec)
		if err != nil {
			f.Fatal(err)
		}
		for i := uint32(0); i < 3; i++ {
			if err := m.Update(i, uint64(i)*7, 0); err != nil {
				f.Fatal(err)
			}
		}
		walk := asm.Instructions{
			asm.Mov.Imm(asm.R6, 0),
			asm.StoreMem(asm.RFP, -8, asm.R6, asm.DWord),
			asm.LoadMapPtr(asm.R1, m.FD()),
			asm.Instruction{OpCode: asm.LoadImmOp(asm.DWord), Src: asm.PseudoFunc, Dst: asm.R2, Constant: -1}.WithReference("cb"),
			asm.Mov.Reg(asm.R3, asm.RFP),
			asm.Add.Imm(asm.R3, -8),
			asm.Mov.Imm(asm.R4, 0),
			asm.FnForEachMapElem.Call(),
			asm.LoadMem(asm.R1, asm.RFP, -8, asm.DWord),
			asm.Add.Reg(asm.R0, asm.R1),
			asm.Return(),
			asm.LoadMem(asm.R0, asm.R3, 0, asm.DWord).WithSymbol("cb"),
			asm.LoadMem(asm.R5, asm.R4, 0, asm.DWord),
			asm.Add.Reg(asm.R5, asm.R0),
			asm.StoreMem(asm.R4, 0, asm.R5, asm.DWord),
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		}
		code, err := insn.FromAsm(walk)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(0), insn.Encode(code), make([]byte, 14))
	}
	// Packet rewrites: an XDP program that moves its head, metadata and
	// tail, and a tc program that reads, writes and re-checksums its
	// packet, so that mutations reach the helpers' bounds.
	xdpMoves := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.Mov.Imm(asm.R2, -20),
		asm.BuiltinFunc(44).Call(), // bpf_xdp_adjust_head
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, -8),
		asm.BuiltinFunc(54).Call(), // bpf_xdp_adjust_meta
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, 6),
		asm.BuiltinFunc(65).Call(), // bpf_xdp_adjust_tail
		asm.Mov.Imm(asm.R0, 2),
		asm.Return(),
	}
	tcRewrite := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.Mov.Imm(asm.R2, 26),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -8),
		asm.Mov.Imm(asm.R4, 4),
		asm.BuiltinFunc(26).Call(), // bpf_skb_load_bytes
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, 30),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -8),
		asm.Mov.Imm(asm.R4, 4),
		asm.Mov.Imm(asm.R5, 0),
		asm.BuiltinFunc(9).Call(), // bpf_skb_store_bytes
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, 24),
		asm.Mov.Imm(asm.R3, 1),
		asm.Mov.Imm(asm.R4, 2),
		asm.Mov.Imm(asm.R5, 4),
		asm.BuiltinFunc(10).Call(), // bpf_l3_csum_replace
		asm.Return(),
	}
	// VLAN tags pushed and popped: the frame grows and shrinks.
	tcVlan := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.Mov.Imm(asm.R2, 0x0081),
		asm.Mov.Imm(asm.R3, 5),
		asm.BuiltinFunc(18).Call(), // bpf_skb_vlan_push
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, 0x0081),
		asm.Mov.Imm(asm.R3, 9),
		asm.BuiltinFunc(18).Call(),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.BuiltinFunc(19).Call(), // bpf_skb_vlan_pop
		asm.Return(),
	}
	for i, insns := range []asm.Instructions{xdpMoves, tcRewrite, tcVlan} {
		code, err := insn.FromAsm(insns)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(min(1+2*i, 3)), insn.Encode(code), make([]byte, 60))
	}
	// An open-coded iterator's loop whose values index the stack,
	// checked: mutations explore the iterator's rules (made before use,
	// destroyed on every path, the value checked and read-only) and the
	// loop's convergence; a verified mutant must not fault.
	iterLoop := asm.Instructions{
		asm.Mov.Imm(asm.R6, 0),
		asm.Mov.Reg(asm.R1, asm.RFP),
		asm.Add.Imm(asm.R1, -8),
		asm.Mov.Imm(asm.R2, 0),
		asm.Mov.Imm(asm.R3, 12),
		kfuncCall(f, k, "bpf_iter_num_new"),
		asm.Mov.Reg(asm.R1, asm.RFP).WithSymbol("next"),
		asm.Add.Imm(asm.R1, -8),
		kfuncCall(f, k, "bpf_iter_num_next"),
		asm.JEq.Imm(asm.R0, 0, "done"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.Word),
		asm.JGT.Imm(asm.R1, 5, "next"),
		asm.LSh.Imm(asm.R1, 3),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -64),
		asm.Add.Reg(asm.R2, asm.R1),
		asm.StoreMem(asm.R2, 0, asm.R6, asm.DWord),
		asm.Add.Imm(asm.R6, 1),
		asm.Ja.Label("next"),
		asm.Mov.Reg(asm.R1, asm.RFP).WithSymbol("done"),
		asm.Add.Imm(asm.R1, -8),
		kfuncCall(f, k, "bpf_iter_num_destroy"),
		asm.Mov.Reg(asm.R0, asm.R6),
		asm.Return(),
	}
	if code, err := insn.FromAsm(iterLoop); err == nil {
		f.Add(uint8(1), insn.Encode(code), make([]byte, 14))
	} else {
		f.Fatal(err)
	}
	// An sk_lookup program reading its lookup, narrow loads included,
	// whose rewrites mutations explore (its data is the context).
	skLookup := asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 8, asm.Word),
		asm.LoadMem(asm.R3, asm.R1, 10, asm.Half),
		asm.LoadMem(asm.R4, asm.R1, 21, asm.Byte),
		asm.LoadMem(asm.R5, asm.R1, 36, asm.Word),
		asm.Add.Reg(asm.R2, asm.R3),
		asm.Add.Reg(asm.R2, asm.R4),
		asm.Add.Reg(asm.R2, asm.R5),
		asm.Mov.Reg(asm.R0, asm.R2),
		asm.And.Imm(asm.R0, 1),
		asm.Return(),
	}
	if code, err := insn.FromAsm(skLookup); err == nil {
		f.Add(uint8(skLookupSel), insn.Encode(code), skLookupCtx(10, 6, make([]byte, 16), make([]byte, 16), 80, 443))
	} else {
		f.Fatal(err)
	}
	types := []ebpf.ProgramType{ebpf.UnspecifiedProgram, ebpf.XDP, ebpf.Syscall, ebpf.SchedCLS, ebpf.CGroupSKB}
	f.Fuzz(func(t *testing.T, typ uint8, code, data []byte) {
		pt := types[int(typ)%len(types)]
		if typ == skLookupSel {
			// One selector of its own, so that the corpus's inputs
			// keep the types they were found for.
			pt = ebpf.SkLookup
		}
		var load sim.ProgramOptions
		switch pt {
		case ebpf.Syscall:
			load.Flags = uapi.BPF_F_SLEEPABLE
		case ebpf.SkLookup:
			load.ExpectedAttachType = uint32(ebpf.AttachSkLookup)
		}
		prog, err := k.LoadBytecodeWithOptions(pt, "fuzz", code, load)
		if err != nil {
			if !isVerifierErrno(err) {
				t.Fatalf("load failed without one of the verifier's errnos: %v", err)
			}
			return
		}
		opts := &sim.RunOptions{Data: data, MaxInsns: 20000}
		if pt == ebpf.Syscall || pt == ebpf.SkLookup {
			opts = &sim.RunOptions{Context: data, MaxInsns: 20000}
		}
		res, err := prog.Test(opts)
		if err != nil {
			var f *mem.Fault
			if errors.As(err, &f) && pt != ebpf.UnspecifiedProgram {
				t.Fatalf("a program the verifier accepted faulted: %v\n%s", err, prog.Xlated())
			}
			// An unverified program may also hand a helper a bad pointer
			// (EFAULT from the helper, as in the kernel).
			badHelperArg := pt == ebpf.UnspecifiedProgram && errors.Is(err, uapi.EFAULT)
			// A lookup the test run refuses, as the kernel's.
			badLookup := pt == ebpf.SkLookup && (errors.Is(err, uapi.ERANGE) || errors.Is(err, uapi.EAFNOSUPPORT))
			if !errors.As(err, &f) && !errors.Is(err, uapi.EINVAL) && !errors.Is(err, uapi.E2BIG) && !badHelperArg && !badLookup {
				t.Fatalf("run failed with an unexpected error: %v", err)
			}
			return
		}
		// XDP and tc programs may move their packet's bounds.
		if pt != ebpf.Syscall && pt != ebpf.XDP && pt != ebpf.SchedCLS && pt != ebpf.SkLookup && len(res.Data) != len(data) {
			t.Fatalf("%d bytes in, %d out", len(data), len(res.Data))
		}
	})
}

// skLookupSel is FuzzLoadAndRun's selector of sk_lookup programs.
const skLookupSel = 0xfe

// isVerifierErrno says whether a refused load carries one of the
// verifier's errnos: EFAULT for too many pending branches, as the kernel;
// EBADF for a bad map fd; ENOTSUPP for direct value access to a longer
// array; EPROTO for a kfunc call into a module BTF without fd_array.
func isVerifierErrno(err error) bool {
	for _, e := range []uapi.Errno{uapi.EINVAL, uapi.E2BIG, uapi.EACCES, uapi.EFAULT, uapi.EBADF, uapi.ENOTSUPP, uapi.EPROTO} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// FuzzNewMap creates maps from arbitrary attributes and runs user-space
// operations on them: every failure must carry an errno, and nothing may
// panic or leave a half-created map behind.
func FuzzNewMap(f *testing.F) {
	f.Add(uint32(ebpf.Array), uint32(4), uint32(8), uint32(4), uint32(0), "arr", []byte{1, 0, 0, 0, 9})
	f.Add(uint32(ebpf.Hash), uint32(5), uint32(3), uint32(2), uint32(uapi.BPF_F_NO_PREALLOC), "h", []byte{1, 2, 3, 4, 5, 6, 7, 8})
	f.Add(uint32(ebpf.PerCPUHash), uint32(4), uint32(12), uint32(1), uint32(0), "p", []byte{})
	f.Add(uint32(ebpf.PerCPUArray), uint32(4), uint32(4), uint32(1), uint32(uapi.BPF_F_RDONLY), ".rodata", []byte{0, 0, 0, 0})
	k, err := sim.NewKernel(&sim.Options{CPUs: 2, MemoryLimit: 64 << 20})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, typ, keySize, valueSize, maxEntries, flags uint32, name string, ops []byte) {
		spec := &ebpf.MapSpec{Name: name, Type: ebpf.MapType(typ), KeySize: keySize, ValueSize: valueSize, MaxEntries: maxEntries, Flags: flags}
		before := len(k.MapIDs())
		m, err := k.NewMap(spec)
		if err != nil {
			var e uapi.Errno
			if !errors.As(err, &e) {
				t.Fatalf("NewMap failed without an errno: %v", err)
			}
			if len(k.MapIDs()) != before {
				t.Fatalf("a failed NewMap left a map behind")
			}
			return
		}
		defer m.Close()
		key := make([]byte, keySize)
		value := make([]byte, valueSize)
		if _, percpu := map[ebpf.MapType]bool{ebpf.PerCPUArray: true, ebpf.PerCPUHash: true}[spec.Type]; percpu {
			value = make([]byte, ((valueSize+7)&^7)*2)
		}
		for i := 0; i+1 < len(ops); i += 2 {
			if len(key) > 0 {
				key[0] = ops[i+1]
			}
			var err error
			switch ops[i] % 5 {
			case 0:
				err = m.Update(key, value, ebpf.MapUpdateFlags(ops[i+1]%4))
			case 1:
				err = m.Lookup(key, &value)
			case 2:
				err = m.Delete(key)
			case 3:
				_, err = m.NextKeyBytes(key)
			case 4:
				err = m.LookupAndDelete(key, &value)
			}
			var e uapi.Errno
			if err != nil && !errors.As(err, &e) {
				t.Fatalf("operation %d failed without an errno: %v", ops[i]%5, err)
			}
		}
	})
}

// FuzzLoadELF feeds mutated ELF objects through cilium/ebpf's reader and
// then the simulated kernel's collection loader, and runs what loads. Any
// CollectionSpec cilium/ebpf accepts must load or fail with an errno,
// without a panic.
func FuzzLoadELF(f *testing.F) {
	for _, obj := range []string{"testdata/progs.bpf.o", "testdata/maps.bpf.o", "testdata/core.bpf.o", "testdata/timer.bpf.o", "testdata/dynptr.bpf.o", "testdata/dynptr_kfunc.bpf.o"} {
		b, err := os.ReadFile(obj)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, []byte("0123456789abcdefghij"))
	}
	k, err := sim.NewKernel(&sim.Options{CPUs: 1, MemoryLimit: 64 << 20})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, obj, data []byte) {
		spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(obj))
		if err != nil {
			return // not an object cilium/ebpf can read
		}
		c, err := k.NewCollection(spec)
		if err != nil {
			var e uapi.Errno
			if !errors.As(err, &e) {
				t.Fatalf("NewCollection failed without an errno: %v", err)
			}
			return
		}
		defer c.Close()
		for _, p := range c.Programs {
			opts := &sim.RunOptions{Data: data, MaxInsns: 10000}
			if p.Type() == ebpf.Syscall {
				opts = &sim.RunOptions{Context: data, MaxInsns: 10000}
			}
			_, _ = p.Run(opts)
		}
	})
}
