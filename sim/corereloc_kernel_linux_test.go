package sim_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/kdiff"
)

// The CO-RE test object in this machine's kernel (cilium/ebpf relocating
// against /sys/kernel/btf/vmlinux) and in bpfsim (relocating against the
// simulated kernel's BTF): every relocation must come out the same, every
// program be accepted or refused alike, and the accepted ones run alike
// and, where bpfsim rewrites the context as the kernel does, be the same
// xlated code.
func TestCORERelocationsAreTheKernels(t *testing.T) {
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	vmlinux, err := btf.LoadKernelSpec()
	if err != nil {
		t.Skipf("kernel-differential test skipped: this kernel has no BTF to relocate against: %v", err)
	}
	spec := loadCoreSpec(t)
	k, err := sim.NewKernel(nil)
	if err != nil {
		t.Fatal(err)
	}
	simBTF, err := k.KernelBTF()
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(spec.Programs))
	for name := range spec.Programs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			if arch, ok := coreArchOf[name]; ok && arch != runtime.GOARCH {
				// The simulated kernel has both register files;
				// a real one only its own.
				t.Skipf("%s reads %s's registers; this kernel is %s's", name, arch, runtime.GOARCH)
			}
			ps := spec.Programs[name]
			if kf, sf := coreFixups(t, ps, vmlinux), coreFixups(t, ps, simBTF); kf != sf {
				t.Errorf("fixups differ:\nkernel: %s\nbpfsim: %s", kf, sf)
			}
			kprog, kerr := ebpf.NewProgram(ps.Copy())
			sprog, serr := k.NewProgram(ps)
			if (kerr == nil) != (serr == nil) {
				t.Fatalf("kernel: %v; bpfsim: %v", kerr, serr)
			}
			if kerr != nil {
				const poisoned = "invalid func unknown#195896080"
				if !strings.Contains(fmt.Sprintf("%+v", kerr), poisoned) || !strings.Contains(serr.Error(), poisoned) {
					t.Errorf("refused for other reasons than the poisoned call:\nkernel: %+v\nbpfsim: %v", kerr, serr)
				}
				return
			}
			defer kprog.Close()
			defer sprog.Close()
			compareCoreRuns(t, kprog, sprog)
			if name == "tc_core" {
				return // bpfsim does not rewrite __sk_buff accesses (README)
			}
			kx, err := kdiff.KernelXlated(kprog)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := kdiff.SameXlated(k, kx, sprog.Instructions()); err != nil {
				t.Error(err)
			}
		})
	}
}

// coreArchOf names the architecture whose registers a kprobe reads.
var coreArchOf = map[string]string{"kprobe_x86": "amd64", "kprobe_arm64": "arm64"}

// coreFixups lists what each CO-RE relocation of ps becomes against target.
func coreFixups(t *testing.T, ps *ebpf.ProgramSpec, target *btf.Spec) string {
	t.Helper()
	var relos []*btf.CORERelocation
	for _, ins := range ps.Instructions {
		if r := btf.CORERelocationMetadata(&ins); r != nil {
			relos = append(relos, r)
		}
	}
	local, err := btf.NewBuilder(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	fixups, err := btf.CORERelocate(relos, []*btf.Spec{target}, binary.LittleEndian, local.Add)
	if err != nil {
		return "error: " + err.Error()
	}
	var b strings.Builder
	for i, f := range fixups {
		fmt.Fprintf(&b, "%s %s; ", relos[i], f.String())
	}
	return b.String()
}

// compareCoreRuns runs an XDP or tc program once in each kernel on the
// same packet (and, for tc, a zero context) and compares return values,
// packets and contexts. Kprobes cannot be test-run in the kernel.
func compareCoreRuns(t *testing.T, kprog *ebpf.Program, sprog *sim.Program) {
	t.Helper()
	if sprog.Type() != ebpf.XDP && sprog.Type() != ebpf.SchedCLS {
		return
	}
	kout, sout := make([]byte, 128), make([]byte, 128)
	kopts := ebpf.RunOptions{Data: corePacket(), DataOut: kout}
	sopts := sim.RunOptions{Data: corePacket(), DataOut: sout}
	kctx, sctx := make([]byte, skbCtxSize), make([]byte, skbCtxSize)
	if sprog.Type() == ebpf.SchedCLS {
		kopts.Context, kopts.ContextOut = make([]byte, skbCtxSize), kctx
		sopts.Context, sopts.ContextOut = make([]byte, skbCtxSize), sctx
	}
	kret, err := kprog.Run(&kopts)
	if err != nil {
		t.Fatalf("kernel run: %v", err)
	}
	res, err := sprog.Test(&sopts)
	if err != nil {
		t.Fatalf("bpfsim run: %v", err)
	}
	if kret != uint32(res.R0) {
		t.Errorf("returned %#x in the kernel, %#x in bpfsim", kret, uint32(res.R0))
	}
	if !bytes.Equal(kout, sout) {
		t.Errorf("output packets differ:\nkernel % x\nbpfsim % x", kout, sout)
	}
	if !bytes.Equal(kctx, sctx) {
		t.Errorf("output contexts differ:\nkernel % x\nbpfsim % x", kctx, sctx)
	}
}
