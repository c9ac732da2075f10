// Command kmodule walks through what the kernel does with the BTF of a
// module built outside the kernel tree, "resilient split BTF" (Linux
// 6.11, seed 002), on the simulated kernel.
//
// Read it top to bottom. It
//
//  1. builds a module's BTF as pahole does for an out-of-tree module: split
//     BTF on the vmlinux BTF of the kernel the module is built for (this
//     machine's /sys/kernel/btf/vmlinux when it can be read, else the
//     kernel bpfsim's types were taken from), then distilled
//     (splitbtf.Distill): the module keeps its own types and, in its
//     .BTF.base section, just the name, kind and size of each kernel type
//     it refers to;
//  2. boots a simulated kernel, whose vmlinux BTF numbers its types
//     otherwise, and loads the module: the kernel finds each distilled
//     type in its own BTF and renumbers the module's BTF onto it
//     (btf_relocate), printed type by type;
//  3. registers the module's kfunc, flowtab_account(proto, bytes), and
//     loads an XDP program that calls it by name: the loader puts the
//     module's BTF in the program's fd_array, and the call's offset names
//     it;
//  4. runs packets through the program, which accounts them in the
//     module;
//  5. tries to unload the module while the program lives (it is in use),
//     then after the program is gone;
//  6. loads a second module that embeds a kernel struct the simulated
//     kernel does not have (struct list_head, when the module is built
//     for this machine's kernel): refused, as the kernel refuses it.
package main

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/kfunc"
	"github.com/bpfsim/bpfsim/sim/splitbtf"
	"github.com/bpfsim/bpfsim/sim/vmlinuxbtf"
)

func main() {
	if err := run(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "kmodule:", err)
		os.Exit(1)
	}
}

// buildKernel is the vmlinux BTF the module is built against.
func buildKernel() (name string, raw []byte) {
	if raw, err := os.ReadFile("/sys/kernel/btf/vmlinux"); err == nil {
		return "this machine's kernel", raw
	}
	return "the kernel of package vmlinuxbtf", vmlinuxbtf.Raw()
}

// module is a module's BTF under construction, on a kernel's.
type module struct {
	kernel *splitbtf.BTF
	btf    *splitbtf.BTF
}

func (m *module) str(s string) uint32 {
	off, err := m.btf.AddStr(s)
	if err != nil {
		panic(err) // only a full string section fails, and this is small
	}
	return off
}

// kernelType finds a type of the build kernel by kind and name, as the
// compiler found it in the kernel's headers.
func (m *module) kernelType(kind splitbtf.Kind, name string) (uint32, error) {
	for i := range m.kernel.Types {
		if t := &m.kernel.Types[i]; t.Kind() == kind && m.kernel.Name(t) == name {
			return m.kernel.StartID() + uint32(i), nil
		}
	}
	return 0, fmt.Errorf("the build kernel has no %s %s", kind, name)
}

// buildModule makes module flowtab's BTF: struct flowtab_entry, which
// embeds the kernel's struct xdp_md (so its size must match wherever
// the module loads) and points to a struct __sk_buff, and the kfunc
// __u64 flowtab_account(__u32 proto, __u32 bytes). With embed, the entry
// embeds a struct of that name instead.
func buildModule(kernel *splitbtf.BTF, embed string) (*sim.ModuleSpec, error) {
	m := &module{kernel: kernel, btf: splitbtf.NewSplit(kernel)}
	var ids [4]uint32
	for i, want := range []struct {
		kind splitbtf.Kind
		name string
	}{{splitbtf.KindTypedef, "__u32"}, {splitbtf.KindTypedef, "__u64"}, {splitbtf.KindStruct, embed}, {splitbtf.KindStruct, "__sk_buff"}} {
		id, err := m.kernelType(want.kind, want.name)
		if err != nil {
			return nil, err
		}
		ids[i] = id
	}
	u32, u64, embedded, skb := ids[0], ids[1], ids[2], ids[3]
	size := m.kernel.TypeByID(embedded).SizeType
	skbPtr := m.btf.AddType(splitbtf.Type{Info: splitbtf.Info(splitbtf.KindPointer, false, 0), SizeType: skb})
	m.btf.AddType(splitbtf.Type{
		NameOff: m.str("flowtab_entry"), Info: splitbtf.Info(splitbtf.KindStruct, false, 3), SizeType: size + 16,
		Data: []uint32{
			m.str("ctx"), embedded, 0,
			m.str("last"), skbPtr, size * 8,
			m.str("bytes"), u64, size*8 + 64,
		},
	})
	proto := m.btf.AddType(splitbtf.Type{Info: splitbtf.Info(splitbtf.KindFuncProto, false, 2), SizeType: u64,
		Data: []uint32{m.str("proto"), u32, m.str("bytes"), u32}})
	m.btf.AddType(splitbtf.Type{NameOff: m.str("flowtab_account"), Info: splitbtf.Info(splitbtf.KindFunc, false, 1), SizeType: proto})
	// What pahole's distilled_base does for an out-of-tree module.
	dist, split, err := splitbtf.Distill(m.btf)
	if err != nil {
		return nil, err
	}
	return &sim.ModuleSpec{Name: "flowtab", BTF: split.Raw(), BaseBTF: dist.Raw()}, nil
}

// flowtab is the module's state: bytes accounted per IP protocol.
type flowtab struct {
	mu    sync.Mutex
	bytes map[uint32]uint64
}

// account is flowtab_account: it adds bytes to proto's count and returns
// the count.
func (f *flowtab) account(_ *interp.Machine, proto, bytes, _, _, _ uint64) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bytes[uint32(proto)] += uint64(uint32(bytes))
	return f.bytes[uint32(proto)], nil
}

// program is the XDP program: for an IPv4 frame, flowtab_account(the IP
// protocol, the frame's length); XDP_PASS.
func program() *ebpf.ProgramSpec {
	return &ebpf.ProgramSpec{Name: "flowtab_xdp", Type: ebpf.XDP, License: "GPL", Instructions: asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 0, asm.Word), // data
		asm.LoadMem(asm.R3, asm.R1, 4, asm.Word), // data_end
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 24),
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),       // shorter than Ethernet + 10 IP bytes
		asm.LoadMem(asm.R1, asm.R2, 23, asm.Byte), // the IP protocol
		asm.Sub.Reg(asm.R3, asm.R2),
		asm.Mov.Reg(asm.R2, asm.R3),
		// A kfunc call by name: the loader resolves it.
		asm.Instruction{OpCode: asm.OpCode(asm.JumpClass).SetJumpOp(asm.Call), Src: asm.PseudoKfuncCall, Constant: -1}.WithReference("flowtab_account"),
		asm.Mov.Imm(asm.R0, 2).WithSymbol("pass"), // XDP_PASS
		asm.Return(),
	}}
}

// frame is an Ethernet frame of n bytes carrying IPv4 with protocol proto.
func frame(proto byte, n int) []byte {
	f := make([]byte, n)
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	f[14] = 0x45
	f[23] = proto
	return f
}

func run(w io.Writer) error {
	// 1. The module, built against another kernel's BTF.
	buildName, buildRaw := buildKernel()
	build, err := splitbtf.Parse(buildRaw, nil)
	if err != nil {
		return err
	}
	spec, err := buildModule(build, "xdp_md")
	if err != nil {
		return err
	}
	dist, err := splitbtf.Parse(spec.BaseBTF, nil)
	if err != nil {
		return err
	}
	split, err := splitbtf.Parse(spec.BTF, dist)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "1. module flowtab, built for %s (%d types):\n", buildName, len(build.Types))
	fmt.Fprintf(w, "   .BTF.base, the distilled base: %d bytes, %d types\n", len(spec.BaseBTF), len(dist.Types))
	for id := uint32(1); id < dist.TypeCount(); id++ {
		fmt.Fprintf(w, "     %s\n", dist.DumpType(id))
	}
	fmt.Fprintf(w, "   .BTF, the module's split BTF: %d bytes, types %d-%d\n", len(spec.BTF), split.StartID(), split.TypeCount()-1)

	// 2. The running kernel relocates it onto its own BTF.
	k, err := sim.NewKernel(nil)
	if err != nil {
		return err
	}
	kernelRaw, err := k.RawKernelBTF()
	if err != nil {
		return err
	}
	kernel, err := splitbtf.Parse(kernelRaw, nil)
	if err != nil {
		return err
	}
	m, err := k.LoadModule(spec)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "2. loaded into the simulated kernel (%d types): its BTF relocated\n", len(kernel.Types))
	for id := uint32(1); id < dist.TypeCount(); id++ {
		to, err := m.RelocateID(btfID(id))
		if err != nil {
			return err
		}
		t := dist.TypeByID(id)
		from, _ := findByName(build, t.Kind(), dist.Name(t))
		fmt.Fprintf(w, "   %-30s id %6d in the build kernel -> %3d here\n", fmt.Sprintf("%s '%s'", t.Kind(), dist.Name(t)), from, to)
	}
	first, err := m.RelocateID(btfID(split.StartID()))
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "   the module's own types: from id %d -> from id %d\n", split.StartID(), first)

	// 3. Its kfunc, called by name from an XDP program.
	state := &flowtab{bytes: map[uint32]uint64{}}
	if err := m.RegisterKfunc(&kfunc.Func{Name: "flowtab_account", Fn: state.account, ProgTypes: []ebpf.ProgramType{ebpf.XDP}}); err != nil {
		return err
	}
	p, err := k.NewProgram(program())
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "3. program flowtab_xdp loaded: it calls flowtab_account through the module's BTF\n")

	// 4. Packets.
	for _, pkt := range []struct {
		proto byte
		n     int
	}{{6, 60}, {17, 120}, {6, 1514}, {1, 98}, {6, 40}} {
		res, err := p.Test(&sim.RunOptions{Data: frame(pkt.proto, pkt.n)})
		if err != nil {
			return err
		}
		if res.R0 != 2 {
			return fmt.Errorf("verdict %d, want XDP_PASS", res.R0)
		}
	}
	var protos []uint32
	for proto := range state.bytes {
		protos = append(protos, proto)
	}
	sort.Slice(protos, func(i, j int) bool { return protos[i] < protos[j] })
	fmt.Fprintf(w, "4. after 5 packets, the module counted:")
	for _, proto := range protos {
		fmt.Fprintf(w, " proto %d: %d bytes;", proto, state.bytes[proto])
	}
	fmt.Fprintln(w)

	// 5. Unloading.
	fmt.Fprintf(w, "5. rmmod flowtab while the program lives: %v\n", k.UnloadModule("flowtab"))
	p.Close()
	k.SynchronizeRCU() // the program is freed a grace period after its last reference
	fmt.Fprintf(w, "   after the program is freed: %v\n", errString(k.UnloadModule("flowtab")))

	// 6. A module whose entry embeds struct list_head: the build kernel
	// has it, the simulated one does not simulate kernel lists.
	other, err := buildModule(build, "list_head")
	if err != nil {
		fmt.Fprintf(w, "6. (no second module to show: %v)\n", err)
		return nil
	}
	if _, err := k.LoadModule(other); err == nil {
		return fmt.Errorf("the module embedding struct list_head loaded")
	} else {
		fmt.Fprintf(w, "6. a module embedding struct list_head: %v\n", err)
	}
	return nil
}

func btfID(id uint32) btf.TypeID { return btf.TypeID(id) }

func findByName(b *splitbtf.BTF, kind splitbtf.Kind, name string) (uint32, bool) {
	for i := range b.Types {
		if t := &b.Types[i]; b.Name(t) == name && (t.Kind() == kind || kind == splitbtf.KindEnum && t.Kind() == splitbtf.KindEnum64) {
			return b.StartID() + uint32(i), true
		}
	}
	return 0, false
}

func errString(err error) string {
	if err == nil {
		return "unloaded"
	}
	return err.Error()
}
