package main

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/splitbtf"
	"github.com/bpfsim/bpfsim/sim/vmlinuxbtf"
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

// The raw format is bpftool's, for a base BTF (this machine's whole
// vmlinux) and for split BTF on it.
func TestBTFDumpRawIsBpftools(t *testing.T) {
	bpftool, err := exec.LookPath("bpftool")
	if err != nil {
		if _, err2 := os.Stat("/usr/sbin/bpftool"); err2 != nil {
			t.Skipf("bpftool is not installed (scripts/test-deps.sh installs it): %v", err)
		}
		bpftool = "/usr/sbin/bpftool"
	}
	const vmlinux = "/sys/kernel/btf/vmlinux"
	raw, err := os.ReadFile(vmlinux)
	if err != nil {
		t.Skipf("no vmlinux BTF to dump: %v", err)
	}
	base, err := splitbtf.Parse(raw, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A split BTF on it: a struct holding the kernel's int, and a
	// pointer to it.
	split := splitbtf.NewSplit(base)
	name, _ := split.AddStr("mod_counter")
	member, _ := split.AddStr("n")
	intID, _ := findType(base, splitbtf.KindInt, "int")
	st := split.AddType(splitbtf.Type{NameOff: name, Info: splitbtf.Info(splitbtf.KindStruct, false, 1), SizeType: 4, Data: []uint32{member, intID, 0}})
	split.AddType(splitbtf.Type{Info: splitbtf.Info(splitbtf.KindPointer, false, 0), SizeType: st})
	splitFile := filepath.Join(t.TempDir(), "split.btf")
	if err := os.WriteFile(splitFile, split.Raw(), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{vmlinux}, {"-base", vmlinux, splitFile}} {
		status, out, errOut := cli(t, "", append([]string{"btf", "dump"}, args...)...)
		if status != 0 {
			t.Fatalf("%v: status %d: %s", args, status, errOut)
		}
		toolArgs := []string{"btf", "dump", "file", args[len(args)-1], "format", "raw"}
		if len(args) > 1 {
			toolArgs = append([]string{"-B", vmlinux}, toolArgs...)
		}
		want, err := exec.Command(bpftool, toolArgs...).Output()
		if err != nil {
			t.Fatalf("bpftool %v: %v", toolArgs, err)
		}
		if out != string(want) {
			got, exp := strings.Split(out, "\n"), strings.Split(string(want), "\n")
			for i := range min(len(got), len(exp)) {
				if got[i] != exp[i] {
					t.Fatalf("%v: line %d is\n\t%s\nbpftool's is\n\t%s", args, i+1, got[i], exp[i])
				}
			}
			t.Fatalf("%v: %d lines, bpftool's %d", args, len(got), len(exp))
		}
	}
}

func findType(b *splitbtf.BTF, kind splitbtf.Kind, name string) (uint32, bool) {
	for i := range b.Types {
		if ty := &b.Types[i]; ty.Kind() == kind && b.Name(ty) == name {
			return b.StartID() + uint32(i), true
		}
	}
	return 0, false
}

// relocate shows where each distilled type of a module went in the
// simulated kernel's BTF, and refuses a module needing a type it lacks.
func TestBTFRelocateShowsWhereTheDistilledTypesWent(t *testing.T) {
	built, err := splitbtf.Parse(vmlinuxbtf.Raw(), nil)
	if err != nil {
		t.Fatal(err)
	}
	k, err := sim.NewKernel(nil)
	if err != nil {
		t.Fatal(err)
	}
	kernelRaw, err := k.RawKernelBTF()
	if err != nil {
		t.Fatal(err)
	}
	kernel, err := splitbtf.Parse(kernelRaw, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, tc := range []struct {
		name, target string
		want         []string
		status       int
	}{
		{"a kernel struct", "__sk_buff", []string{"[1] STRUCT '__sk_buff' size=192 vlen=0", "-> [%d] STRUCT '__sk_buff' size=192 vlen=34", "split ids 2-2 became %d-%d:", "PTR '(anon)' type_id=%d"}, 0},
		{"a struct the simulated kernel lacks", "made_up", []string{"distilled base BTF type 'made_up' [1] is not mapped to base BTF id"}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := splitbtf.NewBase()
			b.Types = append(b.Types, built.Types...)
			b.Strings = append(b.Strings[:0], built.Strings...)
			target, ok := findType(b, splitbtf.KindStruct, tc.target)
			if !ok {
				off, _ := b.AddStr(tc.target)
				target = b.AddType(splitbtf.Type{NameOff: off, Info: splitbtf.Info(splitbtf.KindStruct, false, 0), SizeType: 8})
			}
			split := splitbtf.NewSplit(b)
			split.AddType(splitbtf.Type{Info: splitbtf.Info(splitbtf.KindPointer, false, 0), SizeType: target})
			dist, out, err := splitbtf.Distill(split)
			if err != nil {
				t.Fatal(err)
			}
			splitFile, distFile := filepath.Join(dir, tc.target+".split"), filepath.Join(dir, tc.target+".dist")
			for f, data := range map[string][]byte{splitFile: out.Raw(), distFile: dist.Raw()} {
				if err := os.WriteFile(f, data, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			status, stdout, stderr := cli(t, "", "btf", "relocate", splitFile, distFile)
			if status != tc.status {
				t.Fatalf("status %d, want %d: %s", status, tc.status, stderr)
			}
			skb, _ := findType(kernel, splitbtf.KindStruct, "__sk_buff")
			first := kernel.TypeCount()
			for _, w := range tc.want {
				switch strings.Count(w, "%d") {
				case 1:
					w = fmt.Sprintf(w, skb)
				case 2:
					w = fmt.Sprintf(w, first, first)
				}
				if !strings.Contains(stdout+stderr, w) {
					t.Errorf("no %q in\n%s%s", w, stdout, stderr)
				}
			}
		})
	}
}

// writeModuleKo writes a module file (.BTF and .BTF.base sections) whose
// BTF has struct mod_stats { __u32 flags; ... } built for the kernel of
// package vmlinuxbtf, or skips when objcopy cannot make one.
func writeModuleKo(t *testing.T) string {
	t.Helper()
	objcopy, err := exec.LookPath("objcopy")
	if err != nil {
		t.Skipf("no objcopy to make a module file with: %v", err)
	}
	built, err := splitbtf.Parse(vmlinuxbtf.Raw(), nil)
	if err != nil {
		t.Fatal(err)
	}
	split := splitbtf.NewSplit(built)
	u64, _ := findType(built, splitbtf.KindTypedef, "__u64")
	u32, _ := findType(built, splitbtf.KindTypedef, "__u32")
	str := func(s string) uint32 {
		off, err := split.AddStr(s)
		if err != nil {
			t.Fatal(err)
		}
		return off
	}
	split.AddType(splitbtf.Type{NameOff: str("mod_stats"), Info: splitbtf.Info(splitbtf.KindStruct, false, 2), SizeType: 16,
		Data: []uint32{str("hits"), u64, 0, str("flags"), u32, 96}})
	dist, out, err := splitbtf.Distill(split)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, data := range map[string][]byte{"btf": out.Raw(), "base": dist.Raw(), "empty": {0}} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ko := filepath.Join(dir, "mod.ko")
	if out, err := exec.Command(objcopy, "-I", "binary", "-O", "elf64-x86-64", "--rename-section", ".data=.note.mod",
		"--add-section", ".BTF="+filepath.Join(dir, "btf"), "--add-section", ".BTF.base="+filepath.Join(dir, "base"),
		filepath.Join(dir, "empty"), ko).CombinedOutput(); err != nil {
		t.Skipf("objcopy cannot make an ELF file here: %v: %s", err, out)
	}
	return ko
}

// -module loads a module's BTF before the program, whose CO-RE
// relocations then find the module's types.
func TestRunWithAModuleFindsItsTypes(t *testing.T) {
	ko := writeModuleKo(t)
	const obj = "../../sim/testdata/module_core.bpf.o"
	ctx := filepath.Join(t.TempDir(), "ctx")
	if err := os.WriteFile(ctx, make([]byte, 8), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-section", "mod_loaded", "-ctx", ctx, obj}, "r0 = 0x0 (0)"},
		{[]string{"-module", ko, "-section", "mod_loaded", "-ctx", ctx, obj}, "r0 = 0x1 (1)"},
		// flags at byte 12, hits at 0, 16 bytes.
		{[]string{"-module", ko, "-section", "mod_layout", "-ctx", ctx, obj}, fmt.Sprintf("r0 = %#x (%d)", 12<<16|16, 12<<16|16)},
	} {
		status, out, errOut := cli(t, "", append([]string{"run"}, tc.args...)...)
		if status != 0 || !strings.Contains(out, tc.want) {
			t.Errorf("run %v: status %d, %q (%s); want %q", tc.args, status, out, errOut, tc.want)
		}
	}
	// The xlated code holds the module's offsets and size.
	status, out, errOut := cli(t, "", "dump", "-module", ko, "-section", "mod_layout", obj)
	for _, want := range []string{"0: (b7) r1 = 12", "2: (b7) r0 = 0", "5: (b7) r1 = 16"} {
		if status != 0 || !strings.Contains(out, want) {
			t.Errorf("dump with the module: status %d, no %q in\n%s%s", status, want, out, errOut)
		}
	}
}

// btf list prints the BTF objects as bpftool does: vmlinux, then each
// -module module.
func TestBTFListIsBpftools(t *testing.T) {
	ko := writeModuleKo(t)
	status, out, errOut := cli(t, "", "btf", "list", "-module", ko)
	if status != 0 {
		t.Fatalf("status %d: %s", status, errOut)
	}
	k, err := sim.NewKernel(nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := k.RawKernelBTF()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || lines[0] != fmt.Sprintf("1: name [vmlinux]  size %dB", len(raw)) || !strings.HasPrefix(lines[1], "2: name [mod]  size ") {
		t.Errorf("btf list:\n%s", out)
	}
	// bpftool's line for this machine's vmlinux has the same shape.
	bpftool, err := exec.LookPath("bpftool")
	if err != nil {
		bpftool = "/usr/sbin/bpftool"
	}
	if kout, err := exec.Command(bpftool, "btf", "list").Output(); err == nil {
		first, _, _ := strings.Cut(string(kout), "\n")
		if !regexp.MustCompile(`^1: name \[vmlinux\]  size \d+B$`).MatchString(first) {
			t.Errorf("bpftool's first line %q has another shape", first)
		}
	} else {
		t.Logf("no bpftool btf list to compare the shape with: %v", err)
	}
}

// distill, then relocate: a module's split BTF built on one kernel, made
// relocatable, loads onto the simulated kernel.
func TestBTFDistillThenRelocate(t *testing.T) {
	built, err := splitbtf.Parse(vmlinuxbtf.Raw(), nil)
	if err != nil {
		t.Fatal(err)
	}
	split := splitbtf.NewSplit(built)
	skb, _ := findType(built, splitbtf.KindStruct, "__sk_buff")
	split.AddType(splitbtf.Type{Info: splitbtf.Info(splitbtf.KindPointer, false, 0), SizeType: skb})
	dir := t.TempDir()
	baseFile, splitFile, prefix := filepath.Join(dir, "vmlinux"), filepath.Join(dir, "mod.split"), filepath.Join(dir, "mod")
	for f, data := range map[string][]byte{baseFile: built.Raw(), splitFile: split.Raw()} {
		if err := os.WriteFile(f, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	status, out, errOut := cli(t, "", "btf", "distill", "-base", baseFile, "-o", prefix, splitFile)
	if status != 0 || !strings.Contains(out, "mod.btf.base: 1 types") {
		t.Fatalf("distill: status %d: %s%s", status, out, errOut)
	}
	status, out, errOut = cli(t, "", "btf", "relocate", prefix+".btf", prefix+".btf.base")
	if status != 0 || !strings.Contains(out, "[1] STRUCT '__sk_buff' size=192 vlen=0") {
		t.Fatalf("relocate: status %d: %s%s", status, out, errOut)
	}
	if status, _, _ := cli(t, "", "btf", "distill", splitFile); status != 2 {
		t.Errorf("distill without -base and -o: status %d, want 2", status)
	}
}
