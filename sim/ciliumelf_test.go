package sim_test

import (
	"encoding/binary"
	"errors"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// unsupported are the phrases with which bpfsim names a feature it lacks.
var unsupported = []string{"not supported", "not simulated", "is big-endian", "little-endian"}

// kernelRefuses are the programs of cilium/ebpf's testdata built for the
// kernel to refuse: errors.c's relocations against types no kernel has,
// whose instructions cilium/ebpf poisons, as bpfsim does.
var kernelRefuses = map[string]string{
	"errors-el.elf/poisoned_single": "invalid func unknown#195896080",
	"errors-el.elf/poisoned_double": "frame pointer is read only",
	// fentry/target and fexit/target name a BPF program the user must
	// give as AttachTarget; without it the kernel's BTF has no "target"
	// function either (cilium/ebpf's ENOENT).
	// An sk_lookup program returning a .rodata constant of -1, which a
	// user sets to a verdict before loading
	// (TestSkLookupVerdictFromFrozenRodata).
	"constants-el.elf/freeze_rodata": "should have been in [0, 1]",
	// A call of a weak kfunc the kernel lacks, reachable: cilium/ebpf
	// poisons it with a helper id no kernel has.
	"errors-el.elf/poisoned_kfunc": "invalid func unknown#233685214",
	// Maps whose legacy definitions carry non-zero trailing fields,
	// which cilium/ebpf refuses to create unless the caller reads them
	// (TestIPRoute2MapsLoadOnceTheirExtraFieldsAreRead).
	"invalid_map-el.elf/":                "extra map definition bytes are not zero",
	"invalid_map-eb.elf/":                "extra map definition bytes are not zero",
	"iproute2_map_compat-el.elf/":        "extra map definition bytes are not zero",
	"iproute2_map_compat-eb.elf/":        "extra map definition bytes are not zero",
	"fentry_fexit-el.elf/trace_on_entry": "no traced function target",
	"fentry_fexit-el.elf/trace_on_exit":  "no traced function target",
}

// Every ELF object in cilium/ebpf's testdata loads, program by program,
// fails as it fails in the kernel (kernelRefuses),
// or fails with an error that names what bpfsim does not simulate. Objects
// cilium/ebpf itself cannot read, and objects whose programs reference
// symbols they do not define (built to be linked), are invalid by design.
func TestCiliumTestdataObjectsLoadOrNameWhatIsMissing(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/cilium/ebpf").Output()
	if err != nil {
		t.Skipf("skipped: cannot find the cilium/ebpf module: %v", err)
	}
	files, err := filepath.Glob(filepath.Join(strings.TrimSpace(string(out)), "testdata", "*.elf"))
	if err != nil || len(files) == 0 {
		t.Skipf("skipped: cilium/ebpf's testdata is not in the module cache (%v)", err)
	}
	loaded, named, invalid := 0, 0, 0
	for _, f := range files {
		base := filepath.Base(f)
		spec, err := ebpf.LoadCollectionSpec(f)
		if err != nil {
			invalid++
			t.Logf("%-30s invalid object (cilium/ebpf: %v)", base, firstLine(err))
			continue
		}
		targets := sortedNames(spec.Programs)
		if len(targets) == 0 {
			targets = []string{""} // maps only
		}
		for _, name := range targets {
			k := newKernel(t, nil)
			var opts sim.CollectionOptions
			if name != "" {
				opts.Programs = []string{name}
			}
			c, err := k.NewCollectionWithOptions(spec, opts)
			refusal, refused := kernelRefuses[base+"/"+name]
			switch {
			case err == nil && refused:
				c.Close()
				t.Errorf("%s %s loads; the kernel refuses it: %s", base, name, refusal)
			case refused:
				if !strings.Contains(err.Error(), refusal) {
					t.Errorf("%s %s: %v; the kernel refuses it with %s", base, name, err, refusal)
				}
				t.Logf("%-30s %-24s refused, as in the kernel: %v", base, name, err)
			case err == nil:
				loaded++
				c.Close()
				t.Logf("%-30s %-24s loads", base, name)
			case strings.Contains(err.Error(), "unsatisfied program reference"):
				invalid++
				t.Logf("%-30s %-24s invalid object: %v", base, name, err)
			case containsAny(err.Error(), unsupported):
				named++
				t.Logf("%-30s %-24s %v", base, name, err)
			default:
				t.Errorf("%s %s: an error that names no missing feature: %v", base, name, err)
			}
		}
	}
	t.Logf("%d programs or map sets load, %d fail naming a missing feature, %d are invalid objects", loaded, named, invalid)
	if loaded < 40 {
		t.Errorf("only %d programs loaded", loaded)
	}
}

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

func firstLine(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

func sortedNames[V any](m map[string]V) []string {
	var names []string
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// iproute2's struct bpf_elf_map has fields past cilium/ebpf's map
// definition (id, pinning, inner_id, inner_idx): a caller that reads them
// out of MapSpec.Extra, and pins the map as iproute2's PIN_GLOBAL_NS asks,
// creates the map as with cilium/ebpf (its TestIPRoute2Compat); the
// caller's reader is not moved by a refusal.
func TestIPRoute2MapsLoadOnceTheirExtraFieldsAreRead(t *testing.T) {
	spec, err := ebpf.LoadCollectionSpec(ciliumTestdata(t, "iproute2_map_compat-el.elf"))
	if err != nil {
		t.Fatal(err)
	}
	k := pinKernel(t)
	ms := spec.Maps["hash_map"]
	if _, err := k.NewCollection(spec); !errors.Is(err, uapi.EINVAL) {
		t.Fatalf("with the fields unread: %v, want EINVAL", err)
	}
	var fields [4]uint32 // id, pinning, inner_id, inner_idx
	if err := binary.Read(ms.Extra, spec.ByteOrder, &fields); err != nil {
		t.Fatal(err)
	}
	if fields != [4]uint32{0, 2, 0, 0} {
		t.Fatalf("iproute2's fields: %v, want pinning 2 (PIN_GLOBAL_NS) alone", fields)
	}
	ms.Pinning = ebpf.PinByName
	c, err := k.NewCollectionWithOptions(spec, sim.CollectionOptions{Maps: sim.MapOptions{PinPath: pinDir}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if m := c.Maps["hash_map"]; m == nil || !m.IsPinned() {
		t.Errorf("hash_map: %v, want it created and pinned", m)
	}
}

// cilium/ebpf's constants.c: an sk_lookup program whose verdict is a
// .rodata constant, set before loading, loads because .rodata is frozen
// before the verifier reads it (its return must be in [0, 1]).
func TestSkLookupVerdictFromFrozenRodata(t *testing.T) {
	spec, err := ebpf.LoadCollectionSpec(ciliumTestdata(t, "constants-el.elf"))
	if err != nil {
		t.Fatal(err)
	}
	if err := spec.Variables["ret"].Set(uint32(1)); err != nil {
		t.Fatal(err)
	}
	c, err := newKernel(t, nil).NewCollection(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	res, err := c.Programs["freeze_rodata"].Test(&sim.RunOptions{Context: skLookupCtx(2, 6, []byte{1, 2, 3, 4}, []byte{5, 6, 7, 8}, 1, 2)})
	if err != nil || res.R0 != 1 {
		t.Errorf("a run: %v, %v; want SK_PASS", res, err)
	}
}
