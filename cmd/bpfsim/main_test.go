package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const progsObject = "../../sim/testdata/progs.bpf.o"

func cli(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	status := realMain(args, strings.NewReader(stdin), &out, &errOut)
	return status, out.String(), errOut.String()
}

// hexInsns spells instructions the way the conformance runner does.
const (
	movR0    = "b7  00  00  00  34  12  00  00  " // r0 = 0x1234
	exitInsn = "95  00  00  00  00  00  00  00  "
	ldxbR0R1 = "71  10  00  00  00  00  00  00  " // r0 = *(u8 *)(r1 + 0)
	addR0R2  = "0f  20  00  00  00  00  00  00  " // r0 += r2
)

func TestPluginProtocol(t *testing.T) {
	for _, c := range []struct {
		name   string
		args   []string
		stdin  string
		status int
		out    string
		errOut string
	}{
		{"program on stdin", []string{"plugin"}, movR0 + exitInsn + "\n", 0, "1234\n", ""},
		{"memory before the plugin options", []string{"05  ", "plugin"}, ldxbR0R1 + addR0R2 + exitInsn + "\n", 0, "6\n", ""},
		{"memory after the command", []string{"plugin", "07"}, ldxbR0R1 + exitInsn, 0, "7\n", ""},
		{"program as an argument", []string{"plugin", "--program", movR0 + exitInsn}, "", 0, "1234\n", ""},
		// call_unwind_fail: helper 5 returns its argument and unwinds on 0.
		{"unwind helper continues on non-zero", []string{"plugin"}, "b7 01 00 00 ff ff ff ff 85 00 00 00 05 00 00 00 b7 00 00 00 02 00 00 00" + exitInsn, 0, "2\n", ""},
		{"unwind helper stops on zero", []string{"plugin"}, "b7 01 00 00 00 00 00 00 85 00 00 00 05 00 00 00 b7 00 00 00 02 00 00 00" + exitInsn, 0, "0\n", ""},
		{"bad hex", []string{"plugin"}, "zz\n", 1, "", "program: bad hex"},
		{"truncated instruction", []string{"plugin"}, "b7 00 00\n", 1, "", "Failed to load code"},
		{"unknown opcode", []string{"plugin"}, "ff 00 00 00 00 00 00 00" + exitInsn, 1, "", "unknown opcode"},
		{"fault", []string{"plugin"}, ldxbR0R1 + exitInsn, 1, "", "memory fault at pc 0"},
		{"unknown option", []string{"plugin", "--frobnicate"}, "", 1, "", "invalid argument: --frobnicate"},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, out, errOut := cli(t, c.stdin, c.args...)
			if status != c.status || out != c.out || !strings.Contains(errOut, c.errOut) {
				t.Errorf("got status %d, stdout %q, stderr %q; want %d, %q, %q", status, out, errOut, c.status, c.out, c.errOut)
			}
		})
	}
}

// flowObject is examples/flowexpiry's object: an XDP program with a timer.
const flowObject = "../../examples/flowexpiry/flowexpiry.bpf.o"

func TestRunAndDump(t *testing.T) {
	dir := t.TempDir()
	raw := filepath.Join(dir, "prog.hex")
	if err := os.WriteFile(raw, []byte(ldxbR0R1+addR0R2+exitInsn), 0o644); err != nil {
		t.Fatal(err)
	}
	// r0 = skb->len (__sk_buff offset 0); and r0 = 3.
	skbLen := filepath.Join(dir, "len.hex")
	if err := os.WriteFile(skbLen, []byte("61 10 00 00 00 00 00 00\n"+exitInsn), 0o644); err != nil {
		t.Fatal(err)
	}
	// r0 = ctx->local_port & 1 of an sk_lookup program, and a lookup
	// for local port 443 as its context.
	lookupPort := filepath.Join(dir, "lookup.hex")
	if err := os.WriteFile(lookupPort, []byte("61 10 3c 00 00 00 00 00\n57 00 00 00 01 00 00 00\n"+exitInsn), 0o644); err != nil {
		t.Fatal(err)
	}
	lookupCtx := filepath.Join(dir, "lookup.ctx")
	ctx := make([]byte, 72)
	ctx[8], ctx[12], ctx[60], ctx[61] = 2, 6, 0xbb, 0x01 // AF_INET, TCP, 443
	if err := os.WriteFile(lookupCtx, ctx, 0o644); err != nil {
		t.Fatal(err)
	}
	three := filepath.Join(dir, "three.hex")
	if err := os.WriteFile(three, []byte("b7 00 00 00 03 00 00 00\n"+exitInsn), 0o644); err != nil {
		t.Fatal(err)
	}
	frame := strings.Repeat("00 ", 12) + "08 00 " + strings.Repeat("45 ", 20)
	// An IPv4/UDP frame for examples/flowexpiry, whose first packet of a
	// flow starts a 30 s timer.
	udpFrame := strings.Repeat("00 ", 12) + "08 00 45 00 00 1c 00 00 00 00 40 11 00 00 0a 00 00 01 0a 00 00 02 13 88 00 35"
	for _, c := range []struct {
		name   string
		args   []string
		status int
		want   []string
	}{
		{"raw program with data", []string{"run", "-hex", raw, "-data-hex", "0a 00"}, 0, []string{"r0 = 0xc (12)", "3 instructions", "data out (2 bytes)"}},
		{"flags after the program", []string{"run", raw, "-hex", "-data-hex", "01"}, 0, []string{"r0 = 0x2 (2)"}},
		{"ELF section", []string{"run", progsObject, "-section", "xdp", "-data-hex", strings.Repeat("01 ", 20)}, 0, []string{"r0 = 0x2", "bpf_trace_printk: sum=16 len=20"}},
		{"ELF program by name", []string{"run", progsObject, "-section", "xdp_sum", "-data-hex", strings.Repeat("01 ", 15)}, 0, []string{"r0 = 0x1"}},
		{"ELF without a section", []string{"run", progsObject}, 1, []string{"pick one with -section: double_it (section syscall), xdp_sum (section xdp)"}},
		{"ELF section that does not exist", []string{"run", progsObject, "-section", "tc"}, 1, []string{`no program "tc"`}},
		{"missing file", []string{"run", filepath.Join(dir, "nope")}, 1, []string{"no such file"}},
		{"unknown type", []string{"run", "-type", "kprobe", raw}, 1, []string{"unknown program type"}},
		{"tc program", []string{"run", "-hex", "-type", "sched_cls", skbLen, "-data-hex", frame}, 0, []string{"r0 = 0x22 (34)"}},
		{"a timer fired by -advance", []string{"run", flowObject, "-data-hex", udpFrame, "-advance", "31s"}, 0,
			[]string{"clock advanced 31s: 1 timer callbacks ran, 0 timers still armed"}},
		{"a timer not yet due", []string{"run", flowObject, "-data-hex", udpFrame, "-advance", "29s"}, 0,
			[]string{"clock advanced 29s: 0 timer callbacks ran, 1 timers still armed"}},
		{"socket filter", []string{"run", "-hex", "-type", "socket_filter", skbLen, "-data-hex", frame}, 0, []string{"r0 = 0x14 (20)"}},
		{"cgroup_skb egress may return 3", []string{"run", "-hex", "-type", "cgroup_skb/egress", three, "-data-hex", frame}, 0, []string{"r0 = 0x3 (3)"}},
		{"sk_lookup with a context", []string{"run", "-hex", "-type", "sk_lookup", lookupPort, "-ctx", lookupCtx}, 0, []string{"r0 = 0x1 (1)", "context out (72 bytes)"}},
		{"cgroup_skb ingress may not", []string{"run", "-hex", "-type", "cgroup_skb/ingress", three, "-data-hex", frame}, 1, []string{"should have been in [0, 1]"}},
		{"XDP packet too short", []string{"run", progsObject, "-section", "xdp", "-data-hex", "01"}, 1, []string{"shorter than an Ethernet header"}},
		{"dump xlated", []string{"dump", "xlated", "-hex", raw}, 0, []string{"   0: (71) r0 = *(u8 *)(r1 +0)\n   1: (0f) r0 += r2\n   2: (95) exit\n"}},
		{"dump jited", []string{"dump", "jited", "-hex", "-type", "raw", "-unverified", raw}, 0, []string{"; function 0: prologue", "mov\tx29, sp", "; 0: (71) r0 = *(u8 *)(r1 +0)\n", "ldrb\tw7, [x0]", "; 1: (0f) r0 += r2\n", "add\tx7, x7, x1", "; epilogue", "ret"}},
		{"dump jited ELF with source lines", []string{"dump", "jited", progsObject, "-section", "xdp"}, 0, []string{"bpf_prog_xdp_sum: image at", "; __u8 *end = (__u8 *)(long)ctx->data_end;\n; 1: (79) r4 = *(u64 *)(r1 +8)\n", "ldr\tx3, [x0,#8]"}},
		{"run JITed", []string{"run", "-jit", "-hex", raw, "-data-hex", "0a 00"}, 0, []string{"r0 = 0xc (12)", "A64 instructions (JIT)", "data out (2 bytes)"}},
		{"dump xlated with kfuncs inlined", []string{"dump", "xlated", "-inline-kfuncs", "../../sim/testdata/dynptr_kfunc.bpf.o", "-section", "slice_bench"}, 0,
			[]string{"; __u8 *p = bpf_dynptr_slice(&dp, i * 2, NULL, 2);\n   6: (bf) r1 = r6\n", "(79) r0 = *(u64 *)(r1 +0)"}},
		{"dump without a program", []string{"dump"}, 2, []string{"usage: bpfsim dump"}},
		{"no command", nil, 2, []string{"usage:"}},
		{"unknown command", []string{"frob"}, 2, []string{`unknown command "frob"`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, out, errOut := cli(t, "", c.args...)
			if status != c.status {
				t.Errorf("status %d, want %d\nstdout: %s\nstderr: %s", status, c.status, out, errOut)
			}
			for _, w := range c.want {
				if !strings.Contains(out+errOut, w) {
					t.Errorf("output lacks %q:\n%s%s", w, out, errOut)
				}
			}
		})
	}
}
