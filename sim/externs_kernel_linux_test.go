package sim_test

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/kdiff"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// thisMachinesKernel is a simulated kernel with this machine's release and
// configuration, so that a program's externs read the same values in both,
// and the dead code pass of released kernels, for comparing xlated code.
func thisMachinesKernel(t *testing.T, rt sim.Runtime) *sim.Kernel {
	t.Helper()
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/proc/config.gz")
	if err != nil {
		t.Skipf("kernel-differential test skipped: this kernel publishes no /proc/config.gz, which cilium/ebpf reads its .kconfig from: %v", err)
	}
	defer f.Close()
	config, err := sim.ParseConfig(f)
	if err != nil {
		t.Fatal(err)
	}
	return newKernel(t, &sim.Options{
		Release:  unix.ByteSliceToString(uts.Release[:]),
		Config:   config,
		HardWire: verifier.HardWireFromSeen,
		Runtime:  rt,
	})
}

// The externs of testdata/externs.bpf.o, loaded by cilium/ebpf into this
// machine's kernel and by bpfsim into a simulated kernel with the same
// release and configuration: every .kconfig variable reads the same bytes,
// the same __ksym variables and weak kfuncs exist, the xlated code is the
// same (the dead call of a missing weak kfunc removed alike), the results
// are the same interpreted and JITed, and a reachable call of a missing
// weak kfunc is refused alike.
func TestExternsAreTheKernels(t *testing.T) {
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		k := thisMachinesKernel(t, rt)
		for _, name := range []string{"kconfig", "ksyms", "weak_kfuncs"} {
			t.Run(rt.String()+"/"+name, func(t *testing.T) {
				kc, err := ebpf.NewCollection(externsSpec(t, name))
				if err != nil {
					t.Fatalf("the kernel refused it: %v", err)
				}
				defer kc.Close()
				sc, err := k.NewCollection(externsSpec(t, name))
				if err != nil {
					t.Fatalf("bpfsim refused it: %v", err)
				}
				defer sc.Close()

				kret, err := kc.Programs[name].Run(&ebpf.RunOptions{Data: make([]byte, 64)})
				if err != nil {
					t.Fatal(err)
				}
				sres, err := sc.Programs[name].Test(&sim.RunOptions{Data: make([]byte, 64)})
				if err != nil {
					t.Fatal(err)
				}
				if uint32(sres.R0) != kret {
					t.Errorf("returned %#x, the kernel %#x", sres.R0, kret)
				}

				var kbss, sbss []byte
				if err := kc.Maps[".bss"].Lookup(uint32(0), &kbss); err != nil {
					t.Fatal(err)
				}
				if err := sc.Maps[".bss"].Lookup(uint32(0), &sbss); err != nil {
					t.Fatal(err)
				}
				if name == "kconfig" && !bytes.Equal(sbss, kbss) {
					t.Errorf("the values read differ:\nbpfsim %x\nkernel %x", sbss, kbss)
				}
				if name == "ksyms" {
					// The addresses differ; which are zero must not.
					saddrs, kaddrs := ksymAddrs(t, sbss), ksymAddrs(t, kbss)
					for i := range saddrs {
						if (saddrs[i] == 0) != (kaddrs[i] == 0) {
							t.Errorf("symbol %d: bpfsim %#x, the kernel %#x", i, saddrs[i], kaddrs[i])
						}
					}
					if kaddrs[0] == 0 || kaddrs[2] != 0 {
						t.Errorf("the kernel's addresses %#x: want the first found and the last missing", kaddrs)
					}
				}

				kx, err := kdiff.KernelXlated(kc.Programs[name])
				if err != nil {
					t.Fatal(err)
				}
				if _, err := kdiff.SameXlated(k, kx, sc.Programs[name].Instructions()); errors.Is(err, kdiff.ErrNoKernelSymbols) {
					t.Log(err)
				} else if err != nil {
					t.Error(err)
				}
			})
		}
	}

	// A call of a missing weak kfunc that runs: both verifiers find the
	// poisoned helper id cilium/ebpf put there.
	_, kerr := ebpf.NewCollection(externsSpec(t, "weak_kfunc_called"))
	_, serr := newKernel(t, nil).NewCollection(externsSpec(t, "weak_kfunc_called"))
	const refusal = "invalid func unknown#233685214"
	if kerr == nil || serr == nil || !strings.Contains(kerr.Error(), refusal) || !strings.Contains(serr.Error(), refusal) {
		t.Errorf("a reachable poisoned call: the kernel %v, bpfsim %v; want both to say %s", kerr, serr, refusal)
	}
	// The kernel's errno is EINVAL, which cilium/ebpf replaces by an
	// error of its own when the log ends with this message.
	if !errors.Is(serr, unix.EINVAL) {
		t.Errorf("a reachable poisoned call: bpfsim %v; want EINVAL", serr)
	}

	// A symbol of inline assembly nothing resolves stays the constant
	// the compiler left, in both (cilium/ebpf's loader.c).
	spec, err := ebpf.LoadCollectionSpec(ciliumTestdata(t, "loader-clang-17-el.elf"))
	if err != nil {
		t.Fatal(err)
	}
	kp, err := ebpf.NewProgram(spec.Programs["asm_relocation"])
	if err != nil {
		t.Fatalf("the kernel refused asm_relocation: %v", err)
	}
	defer kp.Close()
	sp, err := newKernel(t, nil).NewProgram(spec.Programs["asm_relocation"])
	if err != nil {
		t.Fatalf("bpfsim refused asm_relocation: %v", err)
	}
	kret, err := kp.Run(&ebpf.RunOptions{Data: make([]byte, 64)})
	if err != nil {
		t.Fatal(err)
	}
	sres, err := sp.Test(&sim.RunOptions{Data: make([]byte, 64)})
	if err != nil {
		t.Fatal(err)
	}
	if uint32(sres.R0) != kret {
		t.Errorf("asm_relocation returned %d, the kernel %d", sres.R0, kret)
	}
}
