package sim_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// ipv4Packet is an Ethernet frame to the loopback device's (all-zero)
// address carrying 46 bytes of IPv4.
func ipv4Packet() []byte { return testPackets()[0].data }

// loadField is a program returning one __sk_buff load.
func loadField(off int16, size asm.Size) asm.Instructions {
	return asm.Instructions{asm.LoadMem(asm.R0, asm.R1, off, size), asm.Return()}
}

func TestSKBFieldValuesFollowTheKernelTestRun(t *testing.T) {
	k := newKernel(t, nil)
	pkt := ipv4Packet() // 60 bytes
	ctx := testContext()
	for _, c := range []struct {
		name  string
		typ   ebpf.ProgramType
		off   int16
		ctx   []byte
		want  uint32
		size  asm.Size
		after asm.Instructions // applied to r0 before returning
	}{
		{"socket filter len excludes the Ethernet header", ebpf.SocketFilter, 0, nil, 46, asm.Word, nil},
		{"tc len includes the Ethernet header", ebpf.SchedCLS, 0, nil, 60, asm.Word, nil},
		{"pkt_type of a frame to the device's address is PACKET_HOST", ebpf.SchedCLS, 4, nil, 0, asm.Word, nil},
		{"protocol is ETH_P_IP in network byte order", ebpf.SocketFilter, 16, nil, 0x0008, asm.Word, nil},
		{"ifindex is the loopback device", ebpf.SchedCLS, 40, nil, 1, asm.Word, nil},
		{"ingress_ifindex is 0 without a context", ebpf.SchedCLS, 36, nil, 0, asm.Word, nil},
		{"ingress_ifindex comes from the context", ebpf.SchedCLS, 36, ctx, 7, asm.Word, nil},
		{"mark comes from the context", ebpf.SocketFilter, 8, ctx, 0x80000001, asm.Word, nil},
		{"priority comes from the context", ebpf.SchedCLS, 32, ctx, 0xfffe0102, asm.Word, nil},
		{"cb comes from the context", ebpf.SocketFilter, 52, ctx, 0xb2aba49d, asm.Word, nil},
		{"wire_len is 0 without a context", ebpf.SchedCLS, 160, nil, 0, asm.Word, nil},
		{"wire_len comes from the context", ebpf.SchedCLS, 160, ctx, 1500, asm.Word, nil},
		{"gso_segs comes from the context", ebpf.SchedCLS, 164, ctx, 0x8003, asm.Word, nil},
		{"gso_size keeps the low 16 bits of the context's", ebpf.SchedCLS, 176, ctx, 0x2345, asm.Word, nil},
		{"tstamp comes from the context", ebpf.SchedCLS, 152, ctx, 0x55667788, asm.DWord, nil},
		{"hwtstamp comes from the context", ebpf.SchedCLS, 184, ctx, 0x55443322, asm.DWord, asm.Instructions{asm.RSh.Imm(asm.R0, 8)}},
		{"hash, napi_id, vlan fields read 0", ebpf.SocketFilter, 68, ctx, 0, asm.Word, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			insns := append(asm.Instructions{asm.LoadMem(asm.R0, asm.R1, c.off, c.size)}, c.after...)
			p := load(t, k, c.typ, append(insns, asm.Return()))
			got, err := p.Run(&sim.RunOptions{Data: pkt, Context: c.ctx})
			if err != nil || got != c.want {
				t.Errorf("got %#x, %v; want %#x", got, err, c.want)
			}
		})
	}
}

func TestSKBPacketTypeAndProtocolComeFromTheEthernetHeader(t *testing.T) {
	k := newKernel(t, nil)
	progs := map[string]*sim.Program{
		"pkt_type": load(t, k, ebpf.SchedCLS, loadField(4, asm.Word)),
		"protocol": load(t, k, ebpf.SchedCLS, loadField(16, asm.Word)),
	}
	for _, c := range []struct {
		name     string
		pkt      []byte
		pktType  uint32
		protocol uint32
	}{
		{"unicast to the device: host", testPackets()[0].data, 0, 0x0008},
		{"broadcast: multicast on loopback", testPackets()[2].data, 2, 0x0608},
		{"unicast to another address: otherhost", testPackets()[3].data, 3, 0x0100}, // ETH_P_802_3
		{"length field with LLC payload: ETH_P_802_2", testPackets()[4].data, 0, 0x0400},
		{"length field, one payload byte: ETH_P_802_2", testPackets()[5].data, 0, 0x0400},
	} {
		t.Run(c.name, func(t *testing.T) {
			for field, want := range map[string]uint32{"pkt_type": c.pktType, "protocol": c.protocol} {
				got, err := progs[field].Run(&sim.RunOptions{Data: c.pkt})
				if err != nil || got != want {
					t.Errorf("%s = %#x, %v; want %#x", field, got, err, want)
				}
			}
		})
	}
}

func TestSKBNarrowLoadsFollowTheKernelsRewrite(t *testing.T) {
	k := newKernel(t, nil)
	ctx := testContext() // mark 0x80000001
	for _, c := range []struct {
		name string
		load asm.Instruction
		want uint64
	}{
		{"byte 3 of mark", asm.LoadMem(asm.R0, asm.R1, 11, asm.Byte), 0x80},
		{"upper half of mark", asm.LoadMem(asm.R0, asm.R1, 10, asm.Half), 0x8000},
		{"byte 1 of protocol", asm.LoadMem(asm.R0, asm.R1, 17, asm.Byte), 0x00},
		{"byte 0 of protocol", asm.LoadMem(asm.R0, asm.R1, 16, asm.Byte), 0x08},
		// protocol is a 2-byte sk_buff field: a 2-byte load anywhere in
		// the __sk_buff word reads all of it.
		{"upper half of protocol reads protocol", asm.LoadMem(asm.R0, asm.R1, 18, asm.Half), 0x0008},
		{"sign-extended byte of mark", asm.LoadMemSX(asm.R0, asm.R1, 11, asm.Byte), 0xffffffffffffff80},
		{"sign-extended mark", asm.LoadMemSX(asm.R0, asm.R1, 8, asm.Word), 0xffffffff80000001},
		{"8 bytes of cb", asm.LoadMem(asm.R0, asm.R1, 56, asm.DWord), 0xeae3dcd5cec7c0b9},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := load(t, k, ebpf.SchedCLS, asm.Instructions{c.load, asm.Return()})
			res, err := p.Test(&sim.RunOptions{Data: ipv4Packet(), Context: ctx})
			if err != nil || res.R0 != c.want {
				t.Errorf("got %#x, %v; want %#x", res.R0, err, c.want)
			}
		})
	}
}

func TestSKBAccessesTheVerifierRefusesFault(t *testing.T) {
	k := newKernel(t, nil)
	store := func(off int16, size asm.Size) asm.Instructions {
		return asm.Instructions{asm.Mov.Imm(asm.R2, 1), asm.StoreMem(asm.R1, off, asm.R2, size), asm.Mov.Imm(asm.R0, 0), asm.Return()}
	}
	for _, c := range []struct {
		name  string
		typ   ebpf.ProgramType
		insns asm.Instructions
		want  string
	}{
		{"socket filters cannot store mark", ebpf.SocketFilter, store(8, asm.Word), "off=8 size=4"},
		{"socket filters cannot read data", ebpf.SocketFilter, loadField(76, asm.Word), "off=76 size=4"},
		{"socket filters cannot read tc_classid", ebpf.SocketFilter, loadField(72, asm.Word), "off=72 size=4"},
		{"socket filters cannot read wire_len", ebpf.SocketFilter, loadField(160, asm.Word), "off=160 size=4"},
		{"nobody reads family", ebpf.SchedCLS, loadField(88, asm.Word), "off=88 size=4"},
		{"tc cannot store len", ebpf.SchedCLS, store(0, asm.Word), "off=0 size=4"},
		{"tc cannot store part of mark", ebpf.SchedCLS, store(8, asm.Half), "off=8 size=2"},
		{"tc cannot load 8 bytes of mark", ebpf.SchedCLS, loadField(8, asm.DWord), "off=8 size=8"},
		{"tc cannot load half of data", ebpf.SchedCLS, loadField(76, asm.Half), "off=76 size=2"},
		{"tc cannot load half of tstamp", ebpf.SchedCLS, loadField(152, asm.Word), "off=152 size=4"},
		{"tc cannot store hwtstamp", ebpf.SchedCLS, store(184, asm.DWord), "off=184 size=8"},
		{"loads must be aligned", ebpf.SchedCLS, loadField(10, asm.Word), "off=10 size=4"},
		{"cb accesses stay in cb", ebpf.SchedCLS, loadField(64, asm.DWord), "off=64 size=8"},
		{"tstamp_type is one byte", ebpf.SchedCLS, loadField(180, asm.Half), "off=180 size=2"},
		{"past the end", ebpf.SchedCLS, loadField(192, asm.Word), "off=192 size=4"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := refused(t, k, c.typ, c.insns, "invalid bpf_context access "+c.want)
			_, err := p.Run(&sim.RunOptions{Data: ipv4Packet()})
			if err == nil || !strings.Contains(err.Error(), "invalid bpf_context access "+c.want) {
				t.Errorf("got %v, want invalid bpf_context access %s", err, c.want)
			}
		})
	}
}

func TestSKBWritableFields(t *testing.T) {
	k := newKernel(t, nil)
	for _, c := range []struct {
		name string
		typ  ebpf.ProgramType
		off  int16
		val  int64
		size asm.Size
		want uint64
	}{
		{"tc stores mark", ebpf.SchedCLS, 8, 0x1_2345_6789, asm.Word, 0x23456789},
		{"tc stores priority", ebpf.SchedACT, 32, 7, asm.Word, 7},
		{"tc_index keeps 16 bits", ebpf.SchedCLS, 44, 0x12345, asm.Word, 0x2345},
		{"tc_classid keeps 16 bits", ebpf.SchedCLS, 72, 0xabcde, asm.Word, 0xbcde},
		{"queue_mapping keeps 16 bits", ebpf.SchedCLS, 12, 0xfffe, asm.Word, 0xfffe},
		{"queue_mapping ignores NO_QUEUE_MAPPING", ebpf.SchedCLS, 12, 0xffff, asm.Word, 0},
		{"queue_mapping ignores larger values", ebpf.SchedCLS, 12, 0x10001, asm.Word, 0},
		{"tc stores tstamp", ebpf.SchedCLS, 152, -2, asm.DWord, 0xfffffffffffffffe},
		{"socket filters store cb bytes", ebpf.SocketFilter, 49, 0x1ff, asm.Byte, 0xff00},
		{"socket filters store 8 bytes of cb", ebpf.SocketFilter, 56, -3, asm.DWord, 0xfffffffffffffffd},
	} {
		t.Run(c.name, func(t *testing.T) {
			field := c.off &^ 3
			loadSize := asm.Word
			if c.size == asm.DWord {
				field, loadSize = c.off, asm.DWord
			}
			p := load(t, k, c.typ, asm.Instructions{
				asm.LoadImm(asm.R2, c.val, asm.DWord),
				asm.StoreMem(asm.R1, c.off, asm.R2, c.size),
				asm.LoadMem(asm.R0, asm.R1, field, loadSize),
				asm.Return(),
			})
			res, err := p.Test(&sim.RunOptions{Data: ipv4Packet()})
			if err != nil || res.R0 != c.want {
				t.Errorf("got %#x, %v; want %#x", res.R0, err, c.want)
			}
		})
	}
}

func TestSKBContextOutReturnsWhatTheKernelWritesBack(t *testing.T) {
	k := newKernel(t, nil)
	p := load(t, k, ebpf.SchedCLS, asm.Instructions{
		asm.StoreImm(asm.R1, 8, 0x42, asm.Word),  // mark
		asm.StoreImm(asm.R1, 44, 0x43, asm.Word), // tc_index: not written back
		asm.StoreImm(asm.R1, 48, 0x44, asm.Byte), // cb[0]
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
	})
	le := binary.LittleEndian
	t.Run("with an input", func(t *testing.T) {
		out := make([]byte, sim.SKBContextSize)
		if _, err := p.Run(&sim.RunOptions{Data: ipv4Packet(), Context: testContext(), ContextOut: out}); err != nil {
			t.Fatal(err)
		}
		want := testContext()
		le.PutUint32(want[8:], 0x42)
		want[48] = 0x44
		if !bytes.Equal(out, want) {
			t.Errorf("context out\n% x\nwant\n% x", out, want)
		}
	})
	t.Run("output only", func(t *testing.T) {
		out := make([]byte, sim.SKBContextSize)
		if _, err := p.Run(&sim.RunOptions{Data: ipv4Packet(), ContextOut: out}); err != nil {
			t.Fatal(err)
		}
		want := make([]byte, sim.SKBContextSize)
		le.PutUint32(want[8:], 0x42)
		le.PutUint32(want[40:], 1)   // ifindex
		le.PutUint32(want[160:], 60) // wire_len: the packet's length
		want[48] = 0x44
		if !bytes.Equal(out, want) {
			t.Errorf("context out\n% x\nwant\n% x", out, want)
		}
	})
	t.Run("none", func(t *testing.T) {
		res, err := p.Test(&sim.RunOptions{Data: ipv4Packet()})
		if err != nil || res.Context != nil {
			t.Errorf("context %x, %v; want none", res.Context, err)
		}
	})
}

func TestSKBInputRules(t *testing.T) {
	k := newKernel(t, nil)
	p := load(t, k, ebpf.SchedCLS, loadField(0, asm.Word))
	with := func(off int, v uint32) []byte {
		c := testContext()
		binary.LittleEndian.PutUint32(c[off:], v)
		return c
	}
	for _, c := range []struct {
		name string
		data []byte
		ctx  []byte
		want error
	}{
		{"13-byte packet", make([]byte, 13), nil, uapi.EINVAL},
		{"Ethernet header alone", make([]byte, 14), nil, nil},
		{"IPv4 frame cut in its IP header", append(append(make([]byte, 12), 0x08, 0x00), make([]byte, 19)...), nil, uapi.EINVAL},
		{"IPv4 frame with its IP header", append(append(make([]byte, 12), 0x08, 0x00), make([]byte, 20)...), nil, nil},
		{"IPv6 frame cut in its IP header", append(append(make([]byte, 12), 0x86, 0xdd), make([]byte, 39)...), nil, uapi.EINVAL},
		{"IPv6 frame with its IP header", append(append(make([]byte, 12), 0x86, 0xdd), make([]byte, 40)...), nil, nil},
		{"15-byte packet", make([]byte, 15), nil, nil},
		{"largest packet", make([]byte, sim.SKBMaxData), nil, nil},
		{"packet too large", make([]byte, sim.SKBMaxData+1), nil, uapi.EINVAL},
		{"len may not be set", ipv4Packet(), with(0, 1), uapi.EINVAL},
		{"queue_mapping may not be set", ipv4Packet(), with(12, 1), uapi.EINVAL},
		{"tc_index may not be set", ipv4Packet(), with(44, 1), uapi.EINVAL},
		{"hash may not be set", ipv4Packet(), with(68, 1), uapi.EINVAL},
		{"sk may not be set", ipv4Packet(), with(168, 1), uapi.EINVAL},
		{"tstamp_type may not be set", ipv4Packet(), with(180, 1), uapi.EINVAL},
		{"ifindex 1 is the loopback device", ipv4Packet(), with(40, 1), nil},
		{"other devices are not simulated", ipv4Packet(), with(40, 2), errors.New("no such device")},
		{"wire_len below len", ipv4Packet(), with(160, 59), uapi.EINVAL},
		{"wire_len equal to len", ipv4Packet(), with(160, 60), nil},
		{"wire_len above GSO_LEGACY_MAX_SIZE", ipv4Packet(), with(160, 65537), uapi.EINVAL},
		{"gso_segs above GSO_MAX_SEGS", ipv4Packet(), with(164, 65536), uapi.EINVAL},
		{"short context", ipv4Packet(), testContext()[:12], nil},
		{"long context with a zero tail", ipv4Packet(), append(testContext(), 0, 0), nil},
		{"long context with a non-zero tail", ipv4Packet(), append(testContext(), 0, 1), uapi.E2BIG},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := p.Run(&sim.RunOptions{Data: c.data, Context: c.ctx})
			switch want := c.want.(type) {
			case nil:
				if err != nil {
					t.Errorf("got %v, want success", err)
				}
			case uapi.Errno:
				if !errors.Is(err, want) {
					t.Errorf("got %v, want %v", err, want)
				}
			default:
				if err == nil || !strings.Contains(err.Error(), want.Error()) {
					t.Errorf("got %v, want %v", err, want)
				}
			}
		})
	}
}

func TestSKBOutputPacket(t *testing.T) {
	k := newKernel(t, nil)
	pkt := ipv4Packet()
	t.Run("socket filters get the Ethernet header back zeroed", func(t *testing.T) {
		p := load(t, k, ebpf.SocketFilter, asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()})
		res, err := p.Test(&sim.RunOptions{Data: pkt})
		if err != nil {
			t.Fatal(err)
		}
		want := append(make([]byte, 14), pkt[14:]...)
		if !bytes.Equal(res.Data, want) {
			t.Errorf("output % x\nwant % x", res.Data, want)
		}
	})
	t.Run("tc programs write the packet through data", func(t *testing.T) {
		// Unverified: the stores skip the bounds checks the verifier
		// would ask for; what is tested is where the pointers point.
		p := loadUnverified(t, k, ebpf.SchedCLS, asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 76, asm.Word),
			asm.StoreImm(asm.R2, 0, 0xaa, asm.Byte),
			asm.LoadMem(asm.R3, asm.R1, 80, asm.Word),
			asm.Sub.Reg(asm.R3, asm.R2),
			asm.LoadMem(asm.R2, asm.R1, 140, asm.Word), // data_meta == data
			asm.StoreImm(asm.R2, 1, 0xbb, asm.Byte),
			asm.Mov.Reg(asm.R0, asm.R3),
			asm.Return(),
		})
		out := make([]byte, len(pkt))
		ret, err := p.Run(&sim.RunOptions{Data: pkt, DataOut: out})
		if err != nil || ret != uint32(len(pkt)) {
			t.Fatalf("data_end - data = %d, %v; want %d", ret, err, len(pkt))
		}
		want := append([]byte{0xaa, 0xbb}, pkt[2:]...)
		if !bytes.Equal(out, want) {
			t.Errorf("output % x\nwant % x", out, want)
		}
	})
}

func TestLegacyPacketAccess(t *testing.T) {
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		t.Run(rt.String(), func(t *testing.T) { legacyPacketAccess(t, rt) })
	}
}

func legacyPacketAccess(t *testing.T, rt sim.Runtime) {
	k := newKernel(t, &sim.Options{Runtime: rt})
	pkt := ipv4Packet() // IPv4 from offset 14: 45 00 00 2e ...
	ldabs := func(k int32, size asm.Size) asm.Instructions {
		return asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1), asm.LoadAbs(k, size), asm.Add.Imm(asm.R0, 1), asm.Return()}
	}
	ldindVia := func(r asm.Register, x int64, k int32, size asm.Size) asm.Instructions {
		return asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1), asm.LoadImm(r, x, asm.DWord),
			asm.LoadInd(asm.R0, r, k, size), asm.Add.Imm(asm.R0, 1), asm.Return()}
	}
	ldind := func(x int64, k int32, size asm.Size) asm.Instructions { return ldindVia(asm.R7, x, k, size) }
	for _, c := range []struct {
		name  string
		typ   ebpf.ProgramType
		insns asm.Instructions
		want  uint32
	}{
		{"tc: word at 12 is the Ethernet type and IP version", ebpf.SchedCLS, ldabs(12, asm.Word), 0x08004500 + 1},
		{"socket filter: offset 0 is the IP header", ebpf.SocketFilter, ldabs(0, asm.Half), 0x4500 + 1},
		{"socket filter: last byte", ebpf.SocketFilter, ldabs(45, asm.Byte), uint32(pkt[59]) + 1},
		{"socket filter: past the end returns 0", ebpf.SocketFilter, ldabs(44, asm.Word), 0},
		{"tc: past the end returns 0", ebpf.SchedCLS, ldabs(60, asm.Byte), 0},
		{"negative offsets miss", ebpf.SchedCLS, ldabs(-1, asm.Byte), 0},
		{"SKF_NET_OFF addresses the network header", ebpf.SchedCLS, ldabs(interp.SKFNetOff, asm.Byte), 0x45 + 1},
		{"SKF_LL_OFF reaches a socket filter's Ethernet header", ebpf.SocketFilter, ldabs(interp.SKFLLOff+12, asm.Half), 0x0800 + 1},
		{"below SKF_LL_OFF misses", ebpf.SocketFilter, ldabs(interp.SKFLLOff-1, asm.Byte), 0},
		{"ld_ind adds the register", ebpf.SchedCLS, ldind(10, 4, asm.Half), 0x4500 + 1},
		{"ld_ind truncates the offset to 32 bits", ebpf.SchedCLS, ldind(0x1_0000_000e, 0, asm.Byte), 0x45 + 1},
		{"ld_ind with a negative sum misses", ebpf.SocketFilter, ldind(-20, 4, asm.Byte), 0},
		// r2 is x1, where the JIT passes the offset: an immediate that
		// takes a register to add must not go through x1.
		{"ld_ind through r2 with an immediate no add can hold", ebpf.SchedCLS, ldindVia(asm.R2, 14-0x12345, 0x12345, asm.Byte), 0x45 + 1},
		{"ld_ind through r2 with a small immediate", ebpf.SchedCLS, ldindVia(asm.R2, 10, 4, asm.Half), 0x4500 + 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := load(t, k, c.typ, c.insns)
			if p.Runtime() != rt {
				t.Fatalf("runtime %v (%v)", p.Runtime(), p.JITError())
			}
			got, err := p.Run(&sim.RunOptions{Data: pkt})
			if err != nil || got != c.want {
				t.Errorf("got %#x, %v; want %#x", got, err, c.want)
			}
		})
	}
}

func TestLegacyPacketAccessIsRefusedOutsideSKBPrograms(t *testing.T) {
	k := newKernel(t, nil)
	for _, typ := range []ebpf.ProgramType{ebpf.XDP, ebpf.Kprobe, ebpf.TracePoint, ebpf.RawTracepoint, ebpf.Syscall, ebpf.UnspecifiedProgram} {
		_, err := k.NewProgram(testSpec(t, typ, asm.Instructions{
			asm.Mov.Reg(asm.R6, asm.R1), asm.LoadInd(asm.R0, asm.R1, 0, asm.Byte), asm.Return(),
		}))
		if !errors.Is(err, uapi.EINVAL) || !strings.Contains(err.Error(), "BPF_LD_[ABS|IND] instructions not allowed for this program type") {
			t.Errorf("%s: got %v", typ, err)
		}
	}
}

func TestTracingProgramsRunOnARawContext(t *testing.T) {
	k := newKernel(t, nil)
	// r0 = *(u64 *)(ctx + 8) + *(u64 *)(ctx + 16): a tracepoint's first
	// 8 bytes (the common fields) are out of the program's reach.
	sum := asm.Instructions{
		asm.LoadMem(asm.R0, asm.R1, 8, asm.DWord),
		asm.LoadMem(asm.R2, asm.R1, 16, asm.DWord),
		asm.Add.Reg(asm.R0, asm.R2),
		asm.Return(),
	}
	args := binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(make([]byte, 8), 40), 2)
	for _, typ := range []ebpf.ProgramType{ebpf.Kprobe, ebpf.TracePoint, ebpf.RawTracepoint} {
		t.Run(typ.String(), func(t *testing.T) {
			p := load(t, k, typ, sum)
			out := make([]byte, len(args))
			ret, err := p.Run(&sim.RunOptions{Context: args, ContextOut: out})
			if err != nil || ret != 42 || !bytes.Equal(out, args) {
				t.Errorf("got %d, %v, context out % x; want 42 and the input back", ret, err, out)
			}
		})
	}
	for _, c := range []struct {
		name  string
		typ   ebpf.ProgramType
		insns asm.Instructions
		opts  sim.RunOptions
		want  error
	}{
		{"the context is read-only", ebpf.Kprobe, asm.Instructions{asm.StoreImm(asm.R1, 0, 1, asm.Word), asm.Mov.Imm(asm.R0, 0), asm.Return()},
			sim.RunOptions{Context: args}, uapi.EFAULT},
		{"no context means r1 = NULL", ebpf.TracePoint, asm.Instructions{asm.Mov.Reg(asm.R0, asm.R1), asm.Return()},
			sim.RunOptions{}, nil},
		{"tracing programs take no data", ebpf.Kprobe, sum, sim.RunOptions{Context: args, Data: []byte{1}}, uapi.EINVAL},
		{"kprobes may repeat", ebpf.Kprobe, sum, sim.RunOptions{Context: args, Repeat: 3}, nil},
		{"raw tracepoints run once", ebpf.RawTracepoint, sum, sim.RunOptions{Context: args, Repeat: 2}, uapi.EINVAL},
		{"raw tracepoints take at most 12 arguments", ebpf.RawTracepoint, sum, sim.RunOptions{Context: make([]byte, 13*8)}, uapi.EINVAL},
	} {
		t.Run(c.name, func(t *testing.T) {
			var p *sim.Program
			if c.want == uapi.EFAULT {
				// The verifier refuses the store; run anyway, it faults.
				p = refused(t, k, c.typ, c.insns, "invalid bpf_context access off=0 size=4")
			} else {
				p = load(t, k, c.typ, c.insns)
			}
			_, err := p.Run(&c.opts)
			if (c.want == nil && err != nil) || (c.want != nil && !errors.Is(err, c.want)) {
				t.Errorf("got %v, want %v", err, c.want)
			}
		})
	}
}

// TestCgroupSKBProgramsSeeTheirSocketAndReadThePacket covers what sets
// cgroup_skb programs apart from the other skb types: the socket's family
// and addresses (the test run's socket takes the packet's), data starting
// after the Ethernet header, a packet they may read and not write, and
// return codes 0 and 1 (2 and 3 too on egress).
func TestCgroupSKBProgramsSeeTheirSocketAndReadThePacket(t *testing.T) {
	k := newKernel(t, nil)
	pkts := testPackets()
	ipv4, ipv6, arp := pkts[0].data, pkts[1].data, pkts[2].data
	le := binary.LittleEndian
	// Each program stores one load into cb[0] and returns 1.
	field := func(off int16, size asm.Size) asm.Instructions {
		return asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, off, size),
			asm.StoreMem(asm.R1, 48, asm.R2, asm.Word),
			asm.Mov.Imm(asm.R0, 1),
			asm.Return(),
		}
	}
	for _, c := range []struct {
		name  string
		insns asm.Instructions
		pkt   []byte
		want  uint32
	}{
		{"family of an IPv4 packet is AF_INET", field(88, asm.Word), ipv4, 2},
		{"family of an IPv6 packet is AF_INET6", field(88, asm.Word), ipv6, 10},
		{"family of an ARP packet is AF_UNSPEC", field(88, asm.Word), arp, 0},
		{"remote_ip4 is the destination", field(92, asm.Word), ipv4, le.Uint32([]byte{10, 0, 0, 2})},
		{"local_ip4 is the source", field(96, asm.Word), ipv4, le.Uint32([]byte{10, 0, 0, 1})},
		{"remote_ip6[3] is the destination's last word", field(112, asm.Word), ipv6, le.Uint32(ipv6[14+8+28 : 14+8+32])},
		{"local_ip6[0] is the source's first word", field(116, asm.Word), ipv6, le.Uint32(ipv6[14+8 : 14+12])},
		{"remote_ip4 of an IPv6 packet is 0", field(92, asm.Word), ipv6, 0},
		{"ports are 0: the socket has none", field(132, asm.Word), ipv4, 0},
		{"len excludes the Ethernet header", field(0, asm.Word), ipv4, uint32(len(ipv4) - 14)},
		{"data starts at the IP header", asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 76, asm.Word),
			asm.LoadMem(asm.R3, asm.R1, 80, asm.Word),
			asm.Mov.Imm(asm.R0, 1),
			asm.Mov.Reg(asm.R4, asm.R2),
			asm.Add.Imm(asm.R4, 1),
			asm.JGT.Reg(asm.R4, asm.R3, "out"),
			asm.LoadMem(asm.R4, asm.R2, 0, asm.Byte),
			asm.StoreMem(asm.R1, 48, asm.R4, asm.Word),
			asm.Return().WithSymbol("out"),
		}, ipv4, 0x45},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := load(t, k, ebpf.CGroupSKB, c.insns)
			defer p.Close()
			res, err := p.Test(&sim.RunOptions{Data: c.pkt, ContextOut: make([]byte, sim.SKBContextSize)})
			if err != nil {
				t.Fatal(err)
			}
			if got := le.Uint32(res.Context[48:]); got != c.want || res.R0 != 1 {
				t.Errorf("cb[0] = %#x, r0 = %d; want %#x and 1", got, res.R0, c.want)
			}
		})
	}

	refused := []struct {
		name   string
		attach ebpf.AttachType
		insns  asm.Instructions
		errno  error
		msg    string
	}{
		{"a packet write", ebpf.AttachCGroupInetIngress, asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 76, asm.Word),
			asm.LoadMem(asm.R3, asm.R1, 80, asm.Word),
			asm.Mov.Imm(asm.R0, 1),
			asm.Mov.Reg(asm.R4, asm.R2),
			asm.Add.Imm(asm.R4, 1),
			asm.JGT.Reg(asm.R4, asm.R3, "out"),
			asm.StoreImm(asm.R2, 0, 0, asm.Byte),
			asm.Return().WithSymbol("out"),
		}, uapi.EACCES, "cannot write into packet"},
		{"tc_classid", ebpf.AttachCGroupInetIngress, field(72, asm.Word), uapi.EACCES, "invalid bpf_context access off=72 size=4"},
		{"a store to tc_index", ebpf.AttachCGroupInetIngress, asm.Instructions{
			asm.StoreImm(asm.R1, 44, 1, asm.Word), asm.Mov.Imm(asm.R0, 1), asm.Return(),
		}, uapi.EACCES, "invalid bpf_context access off=44 size=4"},
		{"returning 2 on ingress", ebpf.AttachCGroupInetIngress, asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()},
			uapi.EINVAL, "At program exit the register R0 has smin=2 smax=2 should have been in [0, 1]"},
		{"returning 4 on egress", ebpf.AttachCGroupInetEgress, asm.Instructions{asm.Mov.Imm(asm.R0, 4), asm.Return()},
			uapi.EINVAL, "At program exit the register R0 has smin=4 smax=4 should have been in [0, 3]"},
		{"returning a pointer", ebpf.AttachCGroupInetEgress, asm.Instructions{asm.Mov.Reg(asm.R0, asm.R1), asm.Return()},
			uapi.EINVAL, "At program exit the register R0 is not a known value (ctx)"},
		{"another attach type", ebpf.AttachCGroupInetSockCreate, asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()},
			uapi.EINVAL, "want BPF_CGROUP_INET_INGRESS or BPF_CGROUP_INET_EGRESS"},
	}
	for _, c := range refused {
		t.Run("refused: "+c.name, func(t *testing.T) {
			_, err := k.NewProgram(&ebpf.ProgramSpec{Type: ebpf.CGroupSKB, AttachType: c.attach, License: "GPL", Instructions: c.insns})
			if !errors.Is(err, c.errno) || !strings.Contains(fmt.Sprint(err), c.msg) {
				t.Errorf("load: %v; want %v with %q", err, c.errno, c.msg)
			}
		})
	}

	p, err := k.NewProgram(&ebpf.ProgramSpec{Type: ebpf.CGroupSKB, AttachType: ebpf.AttachCGroupInetEgress, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 3), asm.Return()}})
	if err != nil {
		t.Fatalf("an egress program returning 3: %v", err)
	}
	defer p.Close()
	if r, err := p.Run(&sim.RunOptions{Data: ipv4}); r != 3 || err != nil {
		t.Errorf("the egress program returned %d, %v; want 3", r, err)
	}
}

// ipv4HeaderSum is the ones'-complement sum of an IPv4 header's 16-bit
// words: 0xffff when its checksum is right.
func ipv4HeaderSum(h []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(h); i += 2 {
		s += uint32(h[i])<<8 | uint32(h[i+1])
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// TestTCProgramRewritesAddressAndFixesChecksumWithHelpers is a NAT's
// rewrite: bpf_skb_load_bytes reads the destination address,
// bpf_skb_store_bytes writes a new one, and bpf_l3_csum_replace updates
// the header checksum, which must then be right again.
func TestTCProgramRewritesAddressAndFixesChecksumWithHelpers(t *testing.T) {
	k := newKernel(t, nil)
	ip := []byte{0x45, 0, 0, 20, 0x12, 0x34, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2}
	c := ^ipv4HeaderSum(ip)
	ip[10], ip[11] = byte(c>>8), byte(c)
	pkt := ethFrame([6]byte{}, 0x0800, append(ip, seq(8, 1)...))
	const daddr = 14 + 16
	newAddr := []byte{192, 168, 7, 9}
	p := load(t, k, ebpf.SchedCLS, asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		// fp-4 = the old address, fp-8 = the new one.
		asm.Mov.Imm(asm.R2, daddr),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -4),
		asm.Mov.Imm(asm.R4, 4),
		fnLoadBytes.Call(),
		asm.JNE.Imm(asm.R0, 0, "fail"),
		asm.StoreImm(asm.RFP, -8, int64(binary.LittleEndian.Uint32(newAddr)), asm.Word),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, daddr),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -8),
		asm.Mov.Imm(asm.R4, 4),
		asm.Mov.Imm(asm.R5, 0),
		fnStoreBytes.Call(),
		asm.JNE.Imm(asm.R0, 0, "fail"),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, 14+10),
		asm.LoadMem(asm.R3, asm.RFP, -4, asm.Word),
		asm.LoadMem(asm.R4, asm.RFP, -8, asm.Word),
		asm.Mov.Imm(asm.R5, 4),
		fnL3CsumReplace.Call(),
		asm.Return().WithSymbol("fail"),
	})
	defer p.Close()
	res, err := p.Test(&sim.RunOptions{Data: pkt})
	if err != nil {
		t.Fatal(err)
	}
	if res.R0 != 0 {
		t.Fatalf("a helper failed: %d", int64(res.R0))
	}
	out := res.Data[14 : 14+20]
	if !bytes.Equal(out[16:20], newAddr) {
		t.Errorf("destination % x, want % x", out[16:20], newAddr)
	}
	if s := ipv4HeaderSum(out); s != 0xffff {
		t.Errorf("the header's checksum is wrong after the rewrite: its words sum to %#x", s)
	}
}

// TestXDPProgramEncapsulatesWithAdjustHead makes room for a 4-byte header
// before the packet, writes it, puts 4 bytes of metadata before that and
// trims 2 bytes off the end: the output is metadata, header, packet less
// its last 2 bytes.
func TestXDPProgramEncapsulatesWithAdjustHead(t *testing.T) {
	k := newKernel(t, nil)
	pkt := testPackets()[0].data
	p := load(t, k, ebpf.XDP, asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.Mov.Imm(asm.R2, -4),
		asm.BuiltinFunc(44).Call(), // bpf_xdp_adjust_head
		asm.JNE.Imm(asm.R0, 0, "fail"),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, -4),
		asm.BuiltinFunc(54).Call(), // bpf_xdp_adjust_meta
		asm.JNE.Imm(asm.R0, 0, "fail"),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, -2),
		asm.BuiltinFunc(65).Call(), // bpf_xdp_adjust_tail
		asm.JNE.Imm(asm.R0, 0, "fail"),
		asm.LoadMem(asm.R2, asm.R6, 0, asm.Word), // data
		asm.LoadMem(asm.R3, asm.R6, 4, asm.Word), // data_end
		asm.LoadMem(asm.R4, asm.R6, 8, asm.Word), // data_meta
		asm.Mov.Reg(asm.R5, asm.R2),
		asm.Add.Imm(asm.R5, 4),
		asm.JGT.Reg(asm.R5, asm.R3, "fail"),
		asm.StoreImm(asm.R2, 0, 0x04030201, asm.Word),
		asm.Mov.Reg(asm.R5, asm.R4),
		asm.Add.Imm(asm.R5, 4),
		asm.JGT.Reg(asm.R5, asm.R2, "fail"),
		asm.StoreImm(asm.R4, 0, 0x0d0c0b0a, asm.Word),
		asm.Mov.Imm(asm.R0, 2), // XDP_PASS
		asm.Return(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("fail"),
		asm.Return(),
	})
	defer p.Close()
	res, err := p.Test(&sim.RunOptions{Data: pkt})
	if err != nil {
		t.Fatal(err)
	}
	want := append([]byte{0x0a, 0x0b, 0x0c, 0x0d, 1, 2, 3, 4}, pkt[:len(pkt)-2]...)
	if res.R0 != 2 || !bytes.Equal(res.Data, want) {
		t.Errorf("r0 = %d, output % x; want 2 and % x", res.R0, res.Data, want)
	}
}

// TestTimeHelpersFollowTheClock reads the boot clock, the coarse clock,
// jiffies and the NUMA node from a program on a virtual clock, before and
// after moving it.
func TestTimeHelpersFollowTheClock(t *testing.T) {
	clock := sim.NewVirtualClock()
	k := newKernel(t, &sim.Options{Clock: clock})
	read := func(fn asm.BuiltinFunc) uint64 {
		p := load(t, k, ebpf.XDP, asm.Instructions{fn.Call(), asm.Return()})
		defer p.Close()
		r, err := p.Test(&sim.RunOptions{Data: make([]byte, 14)})
		if err != nil {
			t.Fatal(err)
		}
		return r.R0
	}
	clock.Set(10*uint64(time.Second) + 5_000_001)
	const initialJiffies = 1<<32 - 300*250
	for _, c := range []struct {
		fn   asm.BuiltinFunc
		want uint64
	}{
		{asm.FnKtimeGetBootNs, 10_005_000_001},
		{asm.FnKtimeGetCoarseNs, 10_004_000_000}, // whole 4 ms ticks
		{asm.FnJiffies64, initialJiffies + 2501},
		{asm.FnGetNumaNodeId, 0},
	} {
		if got := read(c.fn); got != c.want {
			t.Errorf("%v = %d, want %d", c.fn, got, c.want)
		}
	}
	clock.Advance(4 * time.Millisecond)
	if got := read(asm.FnJiffies64); got != initialJiffies+2502 {
		t.Errorf("jiffies after a tick: %d, want %d", got, initialJiffies+2502)
	}
}
