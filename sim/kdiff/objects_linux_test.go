//go:build linux

package kdiff

import (
	"errors"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
)

// notXlatedAlike are the test objects compared with the kernel otherwise.
var notXlatedAlike = map[string]string{
	"core.bpf.o":                 "core.bpf.o holds programs built for the kernel to refuse, so it cannot load whole; TestCORERelocationsAreTheKernels (package sim) compares it program by program",
	"timer_refused.bpf.o":        "timer_refused.bpf.o holds programs built for the kernel to refuse, so it cannot load whole; TestTimerRefusalsAreTheKernels (package sim) compares it program by program",
	"dynptr_refused.bpf.o":       "dynptr_refused.bpf.o holds programs built for the kernel to refuse, so it cannot load whole; TestDynptrRefusalsAreTheKernels (package sim) compares it program by program",
	"dynptr_global.bpf.o":        "dynptr_global.bpf.o holds programs built for the kernel to refuse, so it cannot load whole; TestDynptrGlobalFunctionRefusalsAreTheKernels (package sim) compares it program by program",
	"dynptr_kfunc_refused.bpf.o": "dynptr_kfunc_refused.bpf.o holds programs built for the kernel to refuse, so it cannot load whole; TestDynptrKfuncRefusalsAreTheKernels (package sim) compares it program by program",
	"iter_refused.bpf.o":         "iter_refused.bpf.o holds programs built for the kernel to refuse, so it cannot load whole; TestIterRefusalsAreTheKernels (package sim) compares it program by program",
	"module_core.bpf.o":          "module_core.bpf.o reads the types and calls the kfuncs of a module this kernel does not have; TestCORERelocationsFindModuleTypes and TestModuleKfuncs (package sim) load it with a module built for this kernel's BTF",
	"externs.bpf.o":              "externs.bpf.o holds a program built for the kernel to refuse, so it cannot load whole, and its .kconfig values are this kernel's only in a simulated kernel given its config; TestExternsAreTheKernels (package sim) compares it program by program, xlated code included",
	"task.bpf.o":                 "task.bpf.o relocates against bpfsim's own task_struct, whose offsets are not this kernel's by design; TestTaskHelpersAreTheKernels (package sim) compares what it finds",
}

// notXlatedAlikePrograms are single programs of the objects compared
// otherwise.
var notXlatedAlikePrograms = map[string]string{
	"mapiter.bpf.o dump": "dump reads struct bpf_map through CO-RE, and bpfsim's struct bpf_map has a layout of its own by design; TestMapIteratorsAreTheKernels (package sim) compares what it prints",
	"mapiter.bpf.o maps": "maps reads struct bpf_map through CO-RE, and bpfsim's struct bpf_map has a layout of its own by design; TestMapsIteratorIsTheKernels (package sim) compares what it prints",
}

// Every program of bpfsim's clang-built test objects comes out of the
// verifier's rewrites as the kernel's: each object is loaded whole into
// this machine's kernel and into bpfsim (with the kernel's dead code
// rule), and each program's xlated code compared instruction by
// instruction (SameXlated allows only build-dependent constants).
func TestTestdataObjectsXlateAsTheKernel(t *testing.T) {
	objs, err := filepath.Glob("../testdata/*.bpf.o")
	if err != nil || len(objs) == 0 {
		t.Fatalf("no test objects: %v", err)
	}
	for _, obj := range objs {
		t.Run(filepath.Base(obj), func(t *testing.T) {
			if why, ok := notXlatedAlike[filepath.Base(obj)]; ok {
				t.Skip(why)
			}
			k := linuxLikeSim(t)
			spec, err := ebpf.LoadCollectionSpec(obj)
			if err != nil {
				t.Fatal(err)
			}
			kc, err := ebpf.NewCollection(spec)
			if err != nil {
				t.Fatalf("the kernel refused %s: %v", obj, err)
			}
			defer kc.Close()
			spec, err = ebpf.LoadCollectionSpec(obj)
			if err != nil {
				t.Fatal(err)
			}
			sc, err := k.NewCollection(spec)
			if err != nil {
				t.Fatalf("bpfsim refused %s: %v", obj, err)
			}
			defer sc.Close()
			names := make([]string, 0, len(kc.Programs))
			for name := range kc.Programs {
				names = append(names, name)
			}
			sort.Strings(names)
			alike := 0
			for _, name := range names {
				if why, ok := notXlatedAlikePrograms[filepath.Base(obj)+" "+name]; ok {
					t.Logf("%s not compared: %s", name, why)
					continue
				}
				sameProgram(t, k, name, kc.Programs[name], sc.Programs[name])
				alike++
			}
			t.Logf("%d programs alike", alike)
		})
	}
}

// ciliumNotXlatedAlike are the programs of cilium/ebpf's test objects
// that load in both kernels but differ by design.
var ciliumNotXlatedAlike = map[string]string{
	"kfunc-el.elf call_weak_kfunc": "it calls the weak kfunc bpf_cpumask_create where bpf_ksym_exists finds it: this kernel has it, bpfsim does not simulate cpumasks, so the call is live in one and dead code in the other (TestExternsAreTheKernels compares weak kfuncs both kernels have or lack)",
}

// The same for cilium/ebpf's test objects (little-endian builds), one
// program at a time with the maps it uses: every program both load must
// xlate alike. Those bpfsim cannot load yet are named by
// TestCiliumTestdataObjectsLoadOrNameWhatIsMissing in package sim.
func TestCiliumTestdataProgramsXlateAsTheKernel(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/cilium/ebpf").Output()
	if err != nil {
		t.Skipf("skipped: cannot find the cilium/ebpf module: %v", err)
	}
	files, err := filepath.Glob(filepath.Join(strings.TrimSpace(string(out)), "testdata", "*-el.elf"))
	if err != nil || len(files) == 0 {
		t.Skipf("skipped: cilium/ebpf's testdata is not in the module cache (%v)", err)
	}
	alike, notBoth := 0, 0
	for _, f := range files {
		spec, err := ebpf.LoadCollectionSpec(f)
		if err != nil {
			continue // objects cilium/ebpf itself cannot read
		}
		names := make([]string, 0, len(spec.Programs))
		for name := range spec.Programs {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			what := filepath.Base(f) + " " + name
			k := linuxLikeSim(t)
			sc, err := k.NewCollectionWithOptions(spec, sim.CollectionOptions{Programs: []string{name}})
			if err != nil {
				notBoth++
				continue
			}
			one := spec.Copy()
			for n := range one.Programs {
				if n != name {
					delete(one.Programs, n)
				}
			}
			for _, m := range one.Maps {
				m.Pinning = ebpf.PinNone // no bpffs needed
			}
			kc, err := ebpf.NewCollection(one)
			if err != nil {
				t.Logf("%s: the kernel refuses it: %v", what, err)
				sc.Close()
				notBoth++
				continue
			}
			why, differs := ciliumNotXlatedAlike[what]
			switch {
			case differs:
				t.Logf("%s not compared: %s", what, why)
				notBoth++
			case kc.Programs[name] == nil:
				// cilium/ebpf loads some functions only as part of the
				// programs that call them; bpfsim loads them alone.
				notBoth++
			case sameProgram(t, k, what, kc.Programs[name], sc.Programs[name]):
				alike++
			}
			kc.Close()
			sc.Close()
		}
	}
	t.Logf("%d programs xlate alike; %d do not load in both", alike, notBoth)
	if alike < 30 {
		t.Errorf("only %d programs compared", alike)
	}
}

// sameProgram reports whether a program loaded in the kernel (kp) and in
// bpfsim (sp) came out of verification alike: the same xlated code and the
// same number of instructions processed. It fails t where they differ.
func sameProgram(t *testing.T, k *sim.Kernel, what string, kp *ebpf.Program, sp *sim.Program) bool {
	t.Helper()
	if kp == nil || sp == nil {
		t.Errorf("%s: loaded in the kernel: %v, in bpfsim: %v", what, kp != nil, sp != nil)
		return false
	}
	kx, err := KernelXlated(kp)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if _, err := SameXlated(k, kx, sp.Instructions()); err != nil {
		if errors.Is(err, ErrNoKernelSymbols) {
			t.Skip(err)
		}
		t.Errorf("%s: %v", what, err)
		return false
	}
	info, err := kp.Info()
	if err != nil {
		t.Fatal(err)
	}
	kn, ok := info.VerifiedInstructions()
	sn, _ := sp.VerifiedInstructions()
	if ok && int(kn) != sn {
		t.Errorf("%s: the kernel processed %d instructions, bpfsim %d", what, kn, sn)
		return false
	}
	return true
}
