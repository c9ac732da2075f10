package main

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
)

func TestBTFDumpPrintsAVmlinuxHeader(t *testing.T) {
	status, out, errOut := cli(t, "", "btf", "dump")
	if status != 0 {
		t.Fatalf("status %d: %s", status, errOut)
	}
	for _, want := range []string{"#ifndef __VMLINUX_H__", "preserve_access_index", "struct __sk_buff {", "struct xdp_md {", "enum bpf_func_id {", "BPF_FUNC_map_lookup_elem = 1,", "struct user_pt_regs {"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in the header", want)
		}
	}
	if status, _, _ := cli(t, "", "btf", "frobnicate"); status != 2 {
		t.Errorf("btf frobnicate: status %d, want 2", status)
	}
}

// A program written against the dumped header, as one is written against
// bpftool's vmlinux.h, loads on the simulated kernel and reads the fields
// it names, through relocations.
func TestProgramBuiltAgainstTheDumpRuns(t *testing.T) {
	clang, err := exec.LookPath("clang")
	if err != nil {
		t.Skip("clang is not installed (scripts/test-deps.sh installs it): nothing to build against the header")
	}
	_, hdr, _ := cli(t, "", "btf", "dump")
	dir := t.TempDir()
	src := `#include "vmlinux.h"
__attribute__((section("tc"), used)) int prog(struct __sk_buff *skb)
{
	if (!__builtin_preserve_enum_value(*(enum bpf_func_id *)BPF_FUNC_map_lookup_elem, 0))
		return -1;
	return skb->mark + skb->len;
}
char LICENSE[] __attribute__((section("license"), used)) = "GPL";
`
	for name, data := range map[string]string{"vmlinux.h": hdr, "prog.c": src} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	obj := filepath.Join(dir, "prog.o")
	if out, err := exec.Command(clang, "-g", "-O2", "-target", "bpf", "-c", filepath.Join(dir, "prog.c"), "-o", obj).CombinedOutput(); err != nil {
		t.Fatalf("clang: %v\n%s", err, out)
	}
	spec, err := ebpf.LoadCollectionSpec(obj)
	if err != nil {
		t.Fatal(err)
	}
	k, err := sim.NewKernel(nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := k.NewProgram(spec.Programs["prog"])
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := make([]byte, sim.SKBContextSize)
	binary.LittleEndian.PutUint32(ctx[8:], 1000) // mark
	res, err := p.Test(&sim.RunOptions{Data: make([]byte, 64), Context: ctx})
	if err != nil {
		t.Fatal(err)
	}
	if res.R0 != 1064 {
		t.Fatalf("returned %d, want mark + len = 1064", res.R0)
	}
}
