package sim_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/splitbtf"
	"github.com/bpfsim/bpfsim/sim/vmlinuxbtf"
)

// moduleBuild is a module's BTF as built for one kernel: split BTF with
// a distilled base, as pahole makes it for a module built out of tree.
type moduleBuild struct {
	spec *sim.ModuleSpec
	// statsID is struct mod_stats' id in the module's BTF as built.
	statsID btf.TypeID
}

// buildModule makes the BTF of module "mod" built for kernel (raw
// vmlinux BTF): struct mod_stats { __u64 hits; __u32 flags at byte 12;
// struct __sk_buff *skb; } (16 bytes before skb's pointer: 24 in all), on
// the kernel's own ints, typedefs and structs, and its kfunc mod_add.
func buildModule(t *testing.T, kernel []byte) moduleBuild {
	t.Helper()
	base, err := splitbtf.Parse(kernel, nil)
	if err != nil {
		t.Fatal(err)
	}
	find := func(kind splitbtf.Kind, name string) uint32 {
		for i := range base.Types {
			if ty := &base.Types[i]; ty.Kind() == kind && base.Name(ty) == name {
				return uint32(i) + 1
			}
		}
		t.Fatalf("the kernel has no %s %s", kind, name)
		return 0
	}
	split := splitbtf.NewSplit(base)
	str := func(s string) uint32 {
		off, err := split.AddStr(s)
		if err != nil {
			t.Fatal(err)
		}
		return off
	}
	skbPtr := split.AddType(splitbtf.Type{Info: splitbtf.Info(splitbtf.KindPointer, false, 0), SizeType: find(splitbtf.KindStruct, "__sk_buff")})
	stats := split.AddType(splitbtf.Type{
		NameOff: str("mod_stats"), Info: splitbtf.Info(splitbtf.KindStruct, false, 3), SizeType: 24,
		Data: []uint32{
			str("hits"), find(splitbtf.KindTypedef, "__u64"), 0,
			str("flags"), find(splitbtf.KindTypedef, "__u32"), 96,
			str("skb"), skbPtr, 128,
		},
	})
	// Its kfunc: __u32 mod_add(__u32 a, __u32 b).
	u32 := find(splitbtf.KindTypedef, "__u32")
	proto := split.AddType(splitbtf.Type{Info: splitbtf.Info(splitbtf.KindFuncProto, false, 2), SizeType: u32,
		Data: []uint32{str("a"), u32, str("b"), u32}})
	split.AddType(splitbtf.Type{NameOff: str("mod_add"), Info: splitbtf.Info(splitbtf.KindFunc, false, 1), SizeType: proto})
	dist, out, err := splitbtf.Distill(split)
	if err != nil {
		t.Fatal(err)
	}
	return moduleBuild{
		spec:    &sim.ModuleSpec{Name: "mod", BTF: out.Raw(), BaseBTF: dist.Raw()},
		statsID: btf.TypeID(stats - split.StartID() + out.StartID()),
	}
}

// buildKernels are the kernels a module may have been built for: the
// one bpfsim's types were taken from (package vmlinuxbtf) and this
// machine's, whose ids differ from the simulated kernel's entirely.
func buildKernels(t *testing.T) map[string][]byte {
	kernels := map[string][]byte{"vmlinuxbtf": vmlinuxbtf.Raw()}
	if raw, err := os.ReadFile("/sys/kernel/btf/vmlinux"); err == nil {
		kernels["this machine's"] = raw
	} else {
		t.Logf("no /sys/kernel/btf/vmlinux, so no module built for this machine's kernel: %v", err)
	}
	return kernels
}

func TestModuleBTFIsRelocatedOntoTheSimulatedKernels(t *testing.T) {
	for name, kernel := range buildKernels(t) {
		t.Run(name, func(t *testing.T) {
			build := buildModule(t, kernel)
			k, err := sim.NewKernel(nil)
			if err != nil {
				t.Fatal(err)
			}
			m, err := k.LoadModule(build.spec)
			if err != nil {
				t.Fatal(err)
			}
			vmlinux, err := k.KernelBTF()
			if err != nil {
				t.Fatal(err)
			}
			id, err := m.RelocateID(build.statsID)
			if err != nil {
				t.Fatal(err)
			}
			spec := m.BTF()
			typ, err := spec.TypeByID(id)
			if err != nil {
				t.Fatal(err)
			}
			stats, ok := typ.(*btf.Struct)
			if !ok || stats.Name != "mod_stats" {
				t.Fatalf("relocated id %d is %v, not struct mod_stats", id, typ)
			}
			// Its members are typedefs (distilling copied them into the
			// module) of the simulated kernel's own ints now.
			for i, want := range []string{"long long unsigned int", "unsigned int"} {
				td, ok := stats.Members[i].Type.(*btf.Typedef)
				if !ok {
					t.Fatalf("member %s is %v, not a typedef", stats.Members[i].Name, stats.Members[i].Type)
				}
				got, err := spec.TypeID(td.Type)
				if err != nil {
					t.Fatal(err)
				}
				kernelID, err := vmlinux.TypeID(mustType(t, vmlinux, want))
				if err != nil {
					t.Fatal(err)
				}
				if got != kernelID {
					t.Errorf("member %s is type %d, the kernel's %s is %d", stats.Members[i].Name, got, want, kernelID)
				}
			}
			ptr := stats.Members[2].Type.(*btf.Pointer)
			if s, ok := ptr.Target.(*btf.Struct); !ok || s.Name != "__sk_buff" || len(s.Members) == 0 {
				t.Errorf("skb points to %v, not the kernel's struct __sk_buff", ptr.Target)
			}
			// /sys/kernel/btf/mod reads back on the kernel's BTF.
			if _, err := btf.LoadSplitSpecFromReader(strings.NewReader(string(m.RawBTF())), vmlinux); err != nil {
				t.Errorf("the module's raw BTF does not read on the kernel's: %v", err)
			}
		})
	}
}

func mustType(t *testing.T, s *btf.Spec, name string) btf.Type {
	t.Helper()
	typ, err := s.AnyTypeByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return typ
}

func TestCORERelocationsFindModuleTypes(t *testing.T) {
	spec, err := ebpf.LoadCollectionSpec("testdata/module_core.bpf.o")
	if err != nil {
		t.Fatal(err)
	}
	for name, kernel := range buildKernels(t) {
		t.Run(name, func(t *testing.T) {
			k, err := sim.NewKernel(nil)
			if err != nil {
				t.Fatal(err)
			}
			run := func(prog string) (uint32, error) {
				p, err := k.NewProgram(spec.Programs[prog])
				if err != nil {
					return 0, err
				}
				defer p.Close()
				res, err := p.Test(&sim.RunOptions{Context: make([]byte, 8)})
				if err != nil {
					t.Fatal(err)
				}
				return uint32(res.R0), nil
			}
			// Without the module: no such type, and the layout's
			// relocations poison the program.
			if got, err := run("mod_loaded"); err != nil || got != 0 {
				t.Fatalf("mod_loaded without the module: %d, %v", got, err)
			}
			if _, err := run("mod_layout"); !errors.Is(err, unix.EINVAL) || !strings.Contains(err.Error(), "CO-RE") {
				t.Fatalf("mod_layout without the module: %v, want a refused CO-RE relocation", err)
			}
			if _, err := k.LoadModule(buildModule(t, kernel).spec); err != nil {
				t.Fatal(err)
			}
			// The kernel's BTF grows after the module loaded (a kfunc
			// registered on first use): the module keeps the BTF it was
			// relocated onto, and relocations still find its types.
			if _, ok := k.KfuncID("bpf_iter_num_new"); !ok {
				t.Fatal("no bpf_iter_num_new")
			}
			if got, err := run("mod_loaded"); err != nil || got != 1 {
				t.Fatalf("mod_loaded with the module: %d, %v", got, err)
			}
			// flags at 12, hits at 0, 24 bytes: the module's layout,
			// not the program's declaration.
			if got, err := run("mod_layout"); err != nil || got != 12<<16|0<<8|24 {
				t.Fatalf("mod_layout with the module: %#x, %v; want %#x", got, err, 12<<16|24)
			}
			// A program relocating against vmlinux's types finds them
			// as before: the module's BTF, which shares them as its
			// base, adds no second candidate.
			core, err := ebpf.LoadCollectionSpec(coreObject)
			if err != nil {
				t.Fatal(err)
			}
			xp, err := k.NewProgram(core.Programs["xdp_core"])
			if err != nil {
				t.Fatalf("xdp_core with a module loaded: %v", err)
			}
			res, err := xp.Test(&sim.RunOptions{Data: corePacket()})
			xp.Close()
			if err != nil || uint32(res.R0) != 2<<24|64<<8|0xab {
				t.Fatalf("xdp_core with a module loaded: %#x, %v", res.R0, err)
			}
			if err := k.UnloadModule("mod"); err != nil {
				t.Fatal(err)
			}
			if got, err := run("mod_loaded"); err != nil || got != 0 {
				t.Fatalf("mod_loaded after unloading: %d, %v", got, err)
			}
		})
	}
}

func TestLoadModuleRefusesWhatTheKernelRefuses(t *testing.T) {
	build := buildModule(t, vmlinuxbtf.Raw())
	// A distilled base naming a struct the simulated kernel lacks.
	dist, err := splitbtf.Parse(build.spec.BaseBTF, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Renamed in place: a longer string table would move the split's
	// strings, which start after it.
	for i := range dist.Types {
		if off := dist.Types[i].NameOff; dist.Name(&dist.Types[i]) == "__sk_buff" {
			copy(dist.Strings[off:], "__sk_bufX")
		}
	}
	missing := *build.spec
	missing.BaseBTF = dist.Raw()
	// Split BTF with a struct named as no C identifier can be.
	badName := *build.spec
	split, err := splitbtf.Parse(build.spec.BTF, dist)
	if err != nil {
		t.Fatal(err)
	}
	for i := range split.Types {
		if split.Name(&split.Types[i]) == "mod_stats" {
			copy(split.Strings[split.Types[i].NameOff-split.StartStr():], "mod-stats")
		}
	}
	badName.BTF = split.Raw()
	// Split BTF whose header is cut.
	cut := *build.spec
	cut.BTF = cut.BTF[:10]
	// In-tree module BTF (no distilled base) with ids the kernel lacks.
	inTree := *build.spec
	inTree.BaseBTF = nil

	for _, tc := range []struct {
		name  string
		spec  *sim.ModuleSpec
		errno unix.Errno
		msg   string
	}{
		{"a type the kernel lacks", &missing, unix.EINVAL, "distilled base BTF type '__sk_bufX'"},
		{"a type the kernel's checks refuse", &badName, unix.EINVAL, "Invalid name"},
		{"malformed BTF", &cut, unix.EINVAL, "shorter than its header"},
		{"no name", &sim.ModuleSpec{BTF: build.spec.BTF}, unix.EINVAL, "name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := sim.NewKernel(nil)
			if err != nil {
				t.Fatal(err)
			}
			_, err = k.LoadModule(tc.spec)
			if !errors.Is(err, tc.errno) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want %v with %q", err, tc.errno, tc.msg)
			}
			if len(k.Modules()) != 0 {
				t.Error("a refused module is loaded")
			}
		})
	}
	t.Run("in-tree BTF of another kernel", func(t *testing.T) {
		k, err := sim.NewKernel(nil)
		if err != nil {
			t.Fatal(err)
		}
		// Its split ids start after the distilled base's few types,
		// among the simulated kernel's own: it reads as garbage or not at
		// all, which is why out-of-tree modules carry a distilled base.
		if _, err := k.LoadModule(&inTree); err == nil {
			t.Log("accepted (its ids happen to name the kernel's types)")
		} else if !errors.Is(err, unix.EINVAL) {
			t.Fatalf("got %v, want EINVAL", err)
		}
	})
	t.Run("twice", func(t *testing.T) {
		k, err := sim.NewKernel(nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := k.LoadModule(build.spec); err != nil {
			t.Fatal(err)
		}
		if _, err := k.LoadModule(build.spec); !errors.Is(err, unix.EEXIST) {
			t.Fatalf("second load: %v, want EEXIST", err)
		}
		if err := k.UnloadModule("mod"); err != nil {
			t.Fatal(err)
		}
		if err := k.UnloadModule("mod"); !errors.Is(err, unix.ENOENT) {
			t.Fatalf("second unload: %v, want ENOENT", err)
		}
	})
}

func TestLoadModuleSpecReadsAKoFilesSections(t *testing.T) {
	objcopy, err := exec.LookPath("objcopy")
	if err != nil {
		t.Skipf("no objcopy to make a module file with: %v", err)
	}
	build := buildModule(t, vmlinuxbtf.Raw())
	dir := t.TempDir()
	for name, data := range map[string][]byte{"btf": build.spec.BTF, "base": build.spec.BaseBTF, "empty": {0}} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ko := filepath.Join(dir, "mod.ko")
	out, err := exec.Command(objcopy, "-I", "binary", "-O", "elf64-x86-64", "--rename-section", ".data=.note.mod",
		"--add-section", ".BTF="+filepath.Join(dir, "btf"),
		"--add-section", ".BTF.base="+filepath.Join(dir, "base"),
		filepath.Join(dir, "empty"), ko).CombinedOutput()
	if err != nil {
		t.Skipf("objcopy cannot make an ELF file here: %v: %s", err, out)
	}
	spec, err := sim.LoadModuleSpec(ko)
	if err != nil {
		t.Fatal(err)
	}
	if spec.Name != "mod" || string(spec.BTF) != string(build.spec.BTF) || string(spec.BaseBTF) != string(build.spec.BaseBTF) {
		t.Fatalf("read %q with %d and %d bytes of BTF", spec.Name, len(spec.BTF), len(spec.BaseBTF))
	}
	k, err := sim.NewKernel(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.LoadModule(spec); err != nil {
		t.Fatal(err)
	}
}
