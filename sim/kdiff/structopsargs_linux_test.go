package kdiff

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/structops"
)

// tcpCAWritable are the tcp_sock fields bpf_tcp_ca_btf_struct_access
// lets congestion control programs write (net/ipv4/bpf_tcp_ca.c).
var tcpCAWritable = []string{"snd_cwnd", "snd_cwnd_cnt", "snd_cwnd_stamp", "snd_ssthresh", "ecn_flags", "app_limited"}

// tcpCongestionOps registers tcp_congestion_ops in a simulated kernel
// with this machine's BTF of it, as net/ipv4/bpf_tcp_ca.c registers it:
// struct sock arguments promoted to struct tcp_sock, stores into a few
// tcp_sock fields and into icsk_ca_priv allowed, get_info refused.
func tcpCongestionOps(t *testing.T, k *sim.Kernel) {
	t.Helper()
	ks, err := btf.LoadKernelSpec()
	if err != nil {
		t.Skipf("skipped: no kernel BTF: %v", err)
	}
	var ops, tcpSock, icsk *btf.Struct
	for name, p := range map[string]**btf.Struct{"tcp_congestion_ops": &ops, "tcp_sock": &tcpSock, "inet_connection_sock": &icsk} {
		if err := ks.TypeByName(name, p); err != nil {
			t.Skipf("skipped: this kernel's BTF has no struct %s: %v", name, err)
		}
	}
	ends := map[int]int{} // writable field offset -> its end
	for _, name := range tcpCAWritable {
		off, size, err := memberSpan(tcpSock, name)
		if err != nil {
			t.Fatal(err)
		}
		ends[off] = off + size
	}
	if off, size, err := memberSpan(tcpSock, "inet_conn.icsk_ca_priv"); err == nil {
		ends[off] = off + size
	} else {
		t.Fatal(err)
	}
	_, err = k.RegisterStructOps(&structops.Type{
		Struct: ops,
		CheckMember: func(m structops.Member, _ structops.ProgInfo) error {
			if m.Name == "get_info" {
				return uapi.ENOTSUPP
			}
			return nil
		},
		PromoteArg: func(_ structops.Member, _ int, s *btf.Struct) *btf.Struct {
			if s.Name == "sock" {
				return tcpSock
			}
			return s
		},
		StructWrite: func(s *btf.Struct, off, size int) error {
			if s.Name != "tcp_sock" {
				return errors.New("only read is supported")
			}
			end, ok := ends[off]
			if !ok {
				return fmt.Errorf("no write support to tcp_sock at off %d", off)
			}
			if off+size > end {
				return fmt.Errorf("write access at off %d with size %d beyond the member of tcp_sock ended at %d", off, size, end)
			}
			return nil
		},
		Reg:   func(*structops.Map, *structops.Link) error { return nil },
		Unreg: func(*structops.Map, *structops.Link) {},
	})
	if err != nil {
		t.Fatal(err)
	}
}

// memberSpan finds a member by its dotted path in s: its offset and size.
func memberSpan(s *btf.Struct, path string) (off, size int, err error) {
	var typ btf.Type = s
	for _, name := range strings.Split(path, ".") {
		st, ok := btf.UnderlyingType(typ).(*btf.Struct)
		if !ok {
			return 0, 0, fmt.Errorf("%s: %s is not a struct", path, typ)
		}
		found := false
		for _, m := range st.Members {
			if m.Name == name {
				off += int(m.Offset.Bytes())
				typ, found = m.Type, true
				break
			}
		}
		if !found {
			return 0, 0, fmt.Errorf("%s: no member %s in %s", path, name, st.Name)
		}
	}
	n, err := btf.Sizeof(typ)
	return off, n, err
}

// tcpSockOffset is the offset of a tcp_sock member, for the programs.
func tcpSockOffset(t *testing.T, path string) int16 {
	t.Helper()
	ks, err := btf.LoadKernelSpec()
	if err != nil {
		t.Skipf("skipped: no kernel BTF: %v", err)
	}
	var s *btf.Struct
	if err := ks.TypeByName("tcp_sock", &s); err != nil {
		t.Skipf("skipped: %v", err)
	}
	off, _, err := memberSpan(s, path)
	if err != nil {
		t.Fatal(err)
	}
	return int16(off)
}

type structOpsArgCase struct {
	name, member string
	insns        func(off func(string) int16) asm.Instructions
}

var structOpsArgCases = []structOpsArgCase{
	{"field read through the promoted argument", "ssthresh", func(off func(string) int16) asm.Instructions {
		return asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord),
			asm.LoadMem(asm.R0, asm.R2, off("snd_cwnd"), asm.Word),
			asm.Return(),
		}
	}},
	{"field read at a moved pointer", "ssthresh", func(off func(string) int16) asm.Instructions {
		return asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord),
			asm.Add.Imm(asm.R2, 8),
			asm.LoadMem(asm.R0, asm.R2, off("snd_cwnd")-8, asm.Word),
			asm.Return(),
		}
	}},
	{"NULL test of a trusted argument", "ssthresh", func(off func(string) int16) asm.Instructions {
		return asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord),
			asm.Mov.Imm(asm.R0, 0),
			asm.JEq.Imm(asm.R2, 0, "out"),
			asm.LoadMem(asm.R0, asm.R2, off("srtt_us"), asm.Word),
			asm.Return().WithSymbol("out"),
		}
	}},
	{"scalar arguments, narrow and whole", "cong_avoid", func(func(string) int16) asm.Instructions {
		return asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 8, asm.Word),
			asm.LoadMem(asm.R3, asm.R1, 16, asm.DWord),
			asm.Return(),
		}
	}},
	{"second struct argument", "cong_control", func(func(string) int16) asm.Instructions {
		return asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 24, asm.DWord),
			asm.LoadMem(asm.R3, asm.R2, 0, asm.DWord),
			asm.Return(),
		}
	}},
	{"pointer member read whole", "ssthresh", func(func(string) int16) asm.Instructions {
		return asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord),
			asm.LoadMem(asm.R3, asm.R2, 40, asm.DWord),
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		}
	}},
	{"pointer member read in part", "ssthresh", func(func(string) int16) asm.Instructions {
		return asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord),
			asm.LoadMem(asm.R3, asm.R2, 40, asm.DWord),
			asm.LoadMem(asm.R0, asm.R3, 0, asm.Word),
			asm.Return(),
		}
	}},
	{"allowed store", "ssthresh", func(off func(string) int16) asm.Instructions {
		return asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord),
			asm.Mov.Imm(asm.R3, 10),
			asm.StoreMem(asm.R2, off("snd_cwnd"), asm.R3, asm.Word),
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		}
	}},
	{"store past a writable member", "ssthresh", func(off func(string) int16) asm.Instructions {
		return asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord),
			asm.Mov.Imm(asm.R3, 10),
			asm.StoreMem(asm.R2, off("snd_cwnd"), asm.R3, asm.DWord),
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		}
	}},
	{"store to a read-only member", "ssthresh", func(func(string) int16) asm.Instructions {
		return asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord),
			asm.Mov.Imm(asm.R3, 1),
			asm.StoreMem(asm.R2, 0, asm.R3, asm.Word),
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		}
	}},
	{"store through a walked pointer", "ssthresh", func(func(string) int16) asm.Instructions {
		return asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord),
			asm.LoadMem(asm.R3, asm.R2, 40, asm.DWord),
			asm.Mov.Imm(asm.R4, 1),
			asm.StoreMem(asm.R3, 8, asm.R4, asm.DWord),
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		}
	}},
	{"pointer argument read narrow", "ssthresh", func(func(string) int16) asm.Instructions {
		return asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 0, asm.Word),
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		}
	}},
	{"argument past the last", "ssthresh", func(func(string) int16) asm.Instructions {
		return asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 8, asm.DWord),
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		}
	}},
	{"slot read off its start", "cong_avoid", func(func(string) int16) asm.Instructions {
		return asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 12, asm.Word),
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		}
	}},
	{"context store", "ssthresh", func(func(string) int16) asm.Instructions {
		return asm.Instructions{
			asm.Mov.Imm(asm.R3, 1),
			asm.StoreMem(asm.R1, 0, asm.R3, asm.DWord),
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		}
	}},
	{"negative offset", "ssthresh", func(func(string) int16) asm.Instructions {
		return asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord),
			asm.LoadMem(asm.R0, asm.R2, -8, asm.Word),
			asm.Return(),
		}
	}},
	{"variable offset", "cong_avoid", func(func(string) int16) asm.Instructions {
		return asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord),
			asm.LoadMem(asm.R3, asm.R1, 8, asm.Word),
			asm.And.Imm(asm.R3, 8),
			asm.Add.Reg(asm.R2, asm.R3),
			asm.LoadMem(asm.R0, asm.R2, 0, asm.Word),
			asm.Return(),
		}
	}},
	{"read past the struct", "ssthresh", func(func(string) int16) asm.Instructions {
		return asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord),
			asm.LoadMem(asm.R0, asm.R2, 8000, asm.Word),
			asm.Return(),
		}
	}},
	{"member not implementable", "get_info", func(func(string) int16) asm.Instructions {
		return asm.Instructions{
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		}
	}},
	{"argument passed on in a register copy", "pkts_acked", func(off func(string) int16) asm.Instructions {
		return asm.Instructions{
			asm.LoadMem(asm.R6, asm.R1, 0, asm.DWord),
			asm.LoadMem(asm.R7, asm.R1, 8, asm.DWord),
			asm.LoadMem(asm.R2, asm.R7, 0, asm.Word),
			asm.LoadMem(asm.R3, asm.R6, off("snd_cwnd"), asm.Word),
			asm.Return(),
		}
	}},
}

var btfIDNote = regexp.MustCompile(`has btf_id \d+ type`)

// sameVerdictAndLog loads spec at log level 2 in this machine's kernel
// and in bpfsim: the verdicts, errnos and messages must be the same, and
// the whole logs but for the btf ids of the structs the arguments point
// to, which are each kernel's own.
func sameVerdictAndLog(t *testing.T, k *sim.Kernel, spec *ebpf.ProgramSpec) {
	t.Helper()
	kerr, serr, klog, slog := loadBothLogged(t, k, spec.Copy(), spec.Copy())
	if errnoOf(kerr) != errnoOf(serr) || verifierMessage(kerr) != verifierMessage(serr) {
		t.Fatalf("verdicts differ\nkernel: %v: %s\nbpfsim: %v: %s", errnoOf(kerr), verifierMessage(kerr), errnoOf(serr), verifierMessage(serr))
	}
	a := btfIDNote.ReplaceAllString(refLog(klog), "has btf_id ID type")
	b := btfIDNote.ReplaceAllString(refLog(slog), "has btf_id ID type")
	if a != b {
		t.Errorf("logs differ\nkernel:\n%s\nbpfsim:\n%s", a, b)
	}
	t.Logf("%v %s", errnoOf(kerr), verifierMessage(kerr))
}

// struct_ops programs of tcp_congestion_ops loaded at log level 2 in this
// machine's kernel and in bpfsim, where the type is registered with this
// kernel's BTF of it: the arguments typed as btf_ctx_access types them
// (trusted pointers to kernel objects, struct sock promoted to struct
// tcp_sock, numbers), reads walked through the structs, the stores the
// type allows, and every refusal: the same verdicts, errnos and whole
// logs (the btf ids in them are each kernel's own).
func TestStructOpsArgumentsAreTheKernels(t *testing.T) {
	k := linuxLikeSim(t)
	tcpCongestionOps(t, k)
	off := func(path string) int16 { return tcpSockOffset(t, path) }
	for _, c := range structOpsArgCases {
		t.Run(c.name, func(t *testing.T) {
			spec := &ebpf.ProgramSpec{Name: "ca", Type: ebpf.StructOps, AttachTo: "tcp_congestion_ops:" + c.member, License: "GPL", Instructions: c.insns(off)}
			sameVerdictAndLog(t, k, spec)
		})
	}
}
