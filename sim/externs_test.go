package sim_test

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

const externsObject = "testdata/externs.bpf.o"

// externsSpec is testdata/externs.bpf.o with only the program name.
func externsSpec(t testing.TB, name string) *ebpf.CollectionSpec {
	t.Helper()
	spec, err := ebpf.LoadCollectionSpec(externsObject)
	if err != nil {
		t.Fatal(err)
	}
	for n := range spec.Programs {
		if n != name {
			delete(spec.Programs, n)
		}
	}
	return spec
}

// ciliumTestdata is the path of an object of cilium/ebpf's testdata.
func ciliumTestdata(t testing.TB, file string) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/cilium/ebpf").Output()
	if err != nil {
		t.Skipf("skipped: cannot find the cilium/ebpf module: %v", err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), "testdata", file)
}

func le64(b []byte) uint64 { return binary.LittleEndian.Uint64(b) }

// ksymAddrs are the three addresses the ksyms program stores in its
// ksym_addrs, read from the object's .bss value.
func ksymAddrs(t testing.TB, bss []byte) [3]uint64 {
	t.Helper()
	var ds *btf.Datasec
	if err := externsSpec(t, "ksyms").Types.TypeByName(".bss", &ds); err != nil {
		t.Fatal(err)
	}
	for _, v := range ds.Vars {
		if v.Type.TypeName() == "ksym_addrs" && int(v.Offset)+24 <= len(bss) {
			b := bss[v.Offset:]
			return [3]uint64{le64(b), le64(b[8:]), le64(b[16:])}
		}
	}
	t.Fatal("no ksym_addrs in .bss")
	return [3]uint64{}
}

// kconfigValues is testdata/externs.bpf.c's struct kconfig_values.
type kconfigValues struct {
	IllegalPointer uint64
	Version        int32
	HZ             int32
	NRCPUs         uint32
	BPFSyscall     uint32
	LogBufShift    int16
	PgtableLevels  uint8
	BPFJIT         uint8
	Is64Bit        uint8
	Hostname       [16]byte
	LocalVersion   [4]byte
	_              [1]byte
}

// runKconfig runs the kconfig program on k and returns what it read.
func runKconfig(t *testing.T, k *sim.Kernel) (kconfigValues, error) {
	t.Helper()
	c, err := k.NewCollection(externsSpec(t, "kconfig"))
	if err != nil {
		return kconfigValues{}, err
	}
	defer c.Close()
	res, err := c.Programs["kconfig"].Test(&sim.RunOptions{Data: make([]byte, 64)})
	if err != nil {
		t.Fatal(err)
	}
	var raw []byte
	if err := c.Maps[".bss"].Lookup(uint32(0), &raw); err != nil {
		t.Fatal(err)
	}
	var v kconfigValues
	if err := binary.Read(bytes.NewReader(raw), binary.LittleEndian, &v); err != nil {
		t.Fatal(err)
	}
	if want := uint64(0); v.BPFSyscall == 1 {
		want = 1
		if res.R0 != want {
			t.Errorf("returned %d with CONFIG_BPF_SYSCALL=y", res.R0)
		}
	}
	return v, nil
}

func TestKconfigExternsReadTheSimulatedKernelsReleaseAndConfig(t *testing.T) {
	v, err := runKconfig(t, newKernel(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	want := kconfigValues{
		IllegalPointer: 0xdead000000000000,
		Version:        6<<16 | 18<<8 | 44, // DefaultRelease
		HZ:             250,
		NRCPUs:         sim.MaxCPUs,
		BPFSyscall:     1, // TRI_YES
		LogBufShift:    17,
		PgtableLevels:  4,
		BPFJIT:         1,
		Is64Bit:        1,
		Hostname:       [16]byte{'(', 'n', 'o', 'n', 'e', ')'},
		LocalVersion:   [4]byte{'-', 'b', 'p', 'f'}, // cut, no NUL
	}
	if v != want {
		t.Errorf("read %+v\nwant %+v", v, want)
	}
	if got := newKernel(t, nil).Release(); got != sim.DefaultRelease {
		t.Errorf("Release() = %q", got)
	}

	// Another kernel's: every encoding from the values as a .config
	// writes them.
	config := sim.DefaultConfig()
	config["CONFIG_HZ"] = "1000"
	config["CONFIG_NR_CPUS"] = "0x40"
	config["CONFIG_BPF_SYSCALL"] = "m"
	config["CONFIG_BPF_JIT"] = "n"
	config["CONFIG_LOG_BUF_SHIFT"] = "-12"
	config["CONFIG_DEFAULT_HOSTNAME"] = `"a-hostname-of-20-chars"`
	config["CONFIG_LOCALVERSION"] = `""`
	config["CONFIG_ILLEGAL_POINTER_VALUE"] = "0"
	v, err = runKconfig(t, newKernel(t, &sim.Options{Release: "5.4.300-1-cloud", Config: config}))
	if err != nil {
		t.Fatal(err)
	}
	want = kconfigValues{
		Version:       5<<16 | 4<<8 | 255, // the patch level capped
		HZ:            1000,
		NRCPUs:        64,
		BPFSyscall:    2, // TRI_MODULE
		LogBufShift:   -12,
		PgtableLevels: 4,
		Is64Bit:       1,
		Hostname:      [16]byte([]byte("a-hostname-of-20-chars")[:16]),
	}
	if v != want {
		t.Errorf("read %+v\nwant %+v", v, want)
	}
}

func TestKconfigValuesThatDoNotFitRefuseTheLoad(t *testing.T) {
	for _, c := range []struct {
		option, value string
		errno         error
	}{
		{"CONFIG_HZ", "", uapi.ENOENT}, // unset
		{"CONFIG_BPF_JIT", "m", uapi.EINVAL},
		{"CONFIG_BPF_JIT", "2", uapi.EINVAL},
		{"CONFIG_PGTABLE_LEVELS", "256", uapi.EINVAL},
		{"CONFIG_LOG_BUF_SHIFT", "40000", uapi.EINVAL},
		{"CONFIG_LOG_BUF_SHIFT", "-32769", uapi.EINVAL},
		{"CONFIG_HZ", "y", uapi.EINVAL},
		{"CONFIG_HZ", `"250"`, uapi.EINVAL},
		{"CONFIG_HZ", "250Hz", uapi.EINVAL},
		{"CONFIG_DEFAULT_HOSTNAME", "12", uapi.EINVAL},
		{"CONFIG_DEFAULT_HOSTNAME", `"unterminated`, uapi.EINVAL},
		{"CONFIG_BPF_SYSCALL", "1", uapi.EINVAL},
	} {
		t.Run(c.option+"="+c.value, func(t *testing.T) {
			config := sim.DefaultConfig()
			if c.value == "" {
				delete(config, c.option)
			} else {
				config[c.option] = c.value
			}
			k := newKernel(t, &sim.Options{Config: config})
			before := k.Objects()
			_, err := runKconfig(t, k)
			if !errors.Is(err, c.errno) || !strings.Contains(err.Error(), c.option) {
				t.Errorf("got %v, want %v naming %s", err, c.errno, c.option)
			}
			if after := k.Objects(); after != before {
				t.Errorf("a refused load left objects: %+v, before %+v", after, before)
			}
		})
	}
}

// The .kconfig map is the program's: made at load, frozen and read-only
// for programs, gone with the program.
func TestKconfigMapLivesWithItsProgram(t *testing.T) {
	k := newKernel(t, nil)
	before := k.Objects()
	c, err := k.NewCollection(externsSpec(t, "kconfig"))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Maps[".kconfig"]; ok {
		t.Error("the collection hands out the .kconfig map; cilium/ebpf does not")
	}
	var kconfig *sim.Map
	for id := uint32(1); id < 100; id++ {
		m, err := k.NewMapFromID(id)
		if err != nil {
			continue
		}
		if m.Name() == ".kconfig" {
			kconfig = m
			break
		}
		m.Close()
	}
	if kconfig == nil {
		t.Fatal("no .kconfig map while its program is loaded")
	}
	if err := kconfig.Update(uint32(0), make([]byte, kconfig.ValueSize()), ebpf.UpdateAny); !errors.Is(err, uapi.EPERM) {
		t.Errorf("an update of the frozen .kconfig map: %v, want EPERM", err)
	}
	kconfig.Close()
	c.Close()
	k.SynchronizeRCU()
	if after := k.Objects(); after != before {
		t.Errorf("left after the program closed: %+v, before %+v", after, before)
	}
}

func TestKsymExternsAreTheSimulatedKernelsFunctions(t *testing.T) {
	k := newKernel(t, nil)
	c, err := k.NewCollection(externsSpec(t, "ksyms"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	res, err := c.Programs["ksyms"].Test(&sim.RunOptions{Data: make([]byte, 64)})
	if err != nil {
		t.Fatal(err)
	}
	if res.R0 != 3 {
		t.Errorf("returned %#b, want the two functions found and the missing weak symbol not", res.R0)
	}
	var raw []byte
	if err := c.Maps[".bss"].Lookup(uint32(0), &raw); err != nil {
		t.Fatal(err)
	}
	addrs := ksymAddrs(t, raw)
	for i, name := range []string{"array_map_lookup_elem", "bpf_get_current_pid_tgid"} {
		s, ok := k.KernelSymbol(name)
		if !ok || addrs[i] != s.Addr || s.Addr == 0 {
			t.Errorf("&%s = %#x; kallsyms: %#x, %v", name, addrs[i], s.Addr, ok)
		}
	}
	if got := addrs[2]; got != 0 {
		t.Errorf("a missing weak symbol's address: %#x", got)
	}

	// A missing symbol that is not weak: cilium/ebpf's ksym.c.
	spec, err := ebpf.LoadCollectionSpec(ciliumTestdata(t, "ksym-el.elf"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = k.NewCollectionWithOptions(spec, sim.CollectionOptions{Programs: []string{"ksym_test"}})
	if !errors.Is(err, uapi.ENOENT) || !strings.Contains(err.Error(), "bpf_init") {
		t.Errorf("a missing strong symbol: %v, want ENOENT naming bpf_init", err)
	}
	c2, err := k.NewCollectionWithOptions(spec, sim.CollectionOptions{Programs: []string{"ksym_missing_test"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if res, err := c2.Programs["ksym_missing_test"].Test(&sim.RunOptions{Data: make([]byte, 64)}); err != nil || res.R0 != 1 {
		t.Errorf("ksym_missing_test: %v, %v; want 1", res.R0, err)
	}
}

func TestWeakKfuncsMissingAreDeadCodeOrRefused(t *testing.T) {
	k := newKernel(t, nil)
	c, err := k.NewCollection(externsSpec(t, "weak_kfuncs"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p := c.Programs["weak_kfuncs"]
	res, err := p.Test(&sim.RunOptions{Data: make([]byte, 64)})
	if err != nil {
		t.Fatal(err)
	}
	if res.R0 != 5 {
		t.Errorf("returned %#b, want the RCU kfuncs found and the missing one not", res.R0)
	}
	if x := p.Xlated(); !strings.Contains(x, "call bpf_rcu_read_lock") || strings.Contains(x, "unknown") || strings.Contains(x, "233685214") {
		t.Errorf("want the RCU kfuncs called and the poisoned call removed:\n%s", x)
	}
	_, err = k.NewCollection(externsSpec(t, "weak_kfunc_called"))
	if !errors.Is(err, uapi.EINVAL) || !strings.Contains(err.Error(), "invalid func unknown#233685214") {
		t.Errorf("a reachable call of a missing weak kfunc: %v", err)
	}
	// cilium/ebpf's kconfig.c, whose externs all exist in bpfsim.
	spec, err := ebpf.LoadCollectionSpec(ciliumTestdata(t, "kconfig-el.elf"))
	if err != nil {
		t.Fatal(err)
	}
	kc, err := k.NewCollection(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	if res, err := kc.Programs["kconfig"].Test(&sim.RunOptions{Data: make([]byte, 64)}); err != nil || res.R0 != 0 {
		t.Errorf("cilium/ebpf's kconfig program: %d, %v; it returns the line of the first check that fails", res.R0, err)
	}
}

func TestParseConfigReadsDotConfigAndProcConfigGz(t *testing.T) {
	text := "#\n# Automatically generated file; DO NOT EDIT.\n#\nCONFIG_HZ=250\n# CONFIG_BPF_JIT_ALWAYS_ON is not set\n" +
		"CONFIG_DEFAULT_HOSTNAME=\"(none)\"\n\nCONFIG_BPF=y\nCONFIG_HZ=1000\n"
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	w.Write([]byte(text))
	w.Close()
	want := map[string]string{"CONFIG_HZ": "250", "CONFIG_DEFAULT_HOSTNAME": `"(none)"`, "CONFIG_BPF": "y"}
	for name, in := range map[string][]byte{"plain": []byte(text), "gzip": gz.Bytes()} {
		got, err := sim.ParseConfig(bytes.NewReader(in))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(got) != len(want) {
			t.Errorf("%s: %v, want %v", name, got, want)
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s: %s = %q, want %q (the first line wins)", name, k, got[k], v)
			}
		}
	}
	for _, bad := range []string{"CONFIG_HZ\n", "CONFIG_HZ=\n", "\x1f\x8bnot gzip"} {
		if _, err := sim.ParseConfig(strings.NewReader(bad)); !errors.Is(err, uapi.EINVAL) {
			t.Errorf("%q: %v, want EINVAL", bad, err)
		}
	}
}

func TestReleasesWithoutAVersionAreRefused(t *testing.T) {
	for _, c := range []struct {
		release string
		ok      bool
	}{
		{"6.18.44-fc-v595", true},
		{"6.1", true},
		{"6.1-rc3", true},
		{"5.4.300", true},
		{"6", false},
		{"v6.18", false},
		{"six.eighteen", false},
	} {
		_, err := sim.NewKernel(&sim.Options{Release: c.release})
		if c.ok != (err == nil) || (err != nil && !errors.Is(err, uapi.EINVAL)) {
			t.Errorf("release %q: %v", c.release, err)
		}
	}
}

// FuzzParseConfig: any input parses or is refused with EINVAL, and what
// parses is the first NAME=VALUE line of each CONFIG_ name.
func FuzzParseConfig(f *testing.F) {
	f.Add("CONFIG_HZ=250\n# CONFIG_X is not set\nCONFIG_S=\"a b\"\n")
	f.Add("CONFIG_A=1\nCONFIG_A=2\n\nCONFIG_B=y")
	f.Add("CONFIG_=\n")
	f.Add("\x1f\x8b\x08\x00")
	f.Fuzz(func(t *testing.T, text string) {
		got, err := sim.ParseConfig(strings.NewReader(text))
		if err != nil {
			if !errors.Is(err, uapi.EINVAL) {
				t.Fatalf("%v, want EINVAL", err)
			}
			return
		}
		if strings.HasPrefix(text, "\x1f\x8b") {
			return // compressed: its lines are not text's
		}
		first := map[string]string{}
		for _, line := range strings.Split(text, "\n") {
			name, value, ok := strings.Cut(line, "=")
			if !strings.HasPrefix(line, "CONFIG_") || !ok {
				continue
			}
			if _, seen := first[name]; !seen {
				first[name] = strings.TrimSuffix(value, "\r")
			}
		}
		for name, value := range got {
			if want, ok := first[name]; !ok || (want != value && want != value+"\r") || value == "" {
				t.Fatalf("%s=%q, from no first line %q", name, value, want)
			}
		}
		if len(got) != len(first) {
			t.Fatalf("parsed %d options of %d", len(got), len(first))
		}
	})
}

// FuzzKconfigValues: any value of any option the kconfig program reads
// either loads, with the program running, or is refused with EINVAL and
// leaves nothing behind.
func FuzzKconfigValues(f *testing.F) {
	options := []string{"CONFIG_HZ", "CONFIG_NR_CPUS", "CONFIG_PGTABLE_LEVELS", "CONFIG_LOG_BUF_SHIFT",
		"CONFIG_ILLEGAL_POINTER_VALUE", "CONFIG_BPF_SYSCALL", "CONFIG_BPF_JIT", "CONFIG_DEFAULT_HOSTNAME", "CONFIG_LOCALVERSION"}
	f.Add(uint8(0), "0x10", "6.18")
	f.Add(uint8(3), "-0", "1.2.3")
	f.Add(uint8(5), "m", "6.18.44-x")
	f.Add(uint8(7), `"\"`, "4.19.999")
	f.Fuzz(func(t *testing.T, option uint8, value, release string) {
		k, err := sim.NewKernel(&sim.Options{Release: release, Config: map[string]string{}})
		if err != nil {
			if !errors.Is(err, uapi.EINVAL) {
				t.Fatalf("release %q: %v", release, err)
			}
			return
		}
		config := sim.DefaultConfig()
		config[options[int(option)%len(options)]] = value
		k, err = sim.NewKernel(&sim.Options{Release: release, Config: config})
		if err != nil {
			t.Fatal(err)
		}
		before := k.Objects()
		c, err := k.NewCollection(externsSpec(t, "kconfig"))
		if err != nil {
			if !errors.Is(err, uapi.EINVAL) {
				t.Fatalf("%s=%q: %v, want EINVAL", options[int(option)%len(options)], value, err)
			}
			if after := k.Objects(); after != before {
				t.Fatalf("a refused load left objects: %+v, before %+v", after, before)
			}
			return
		}
		if _, err := c.Programs["kconfig"].Test(&sim.RunOptions{Data: make([]byte, 64)}); err != nil {
			t.Fatal(err)
		}
		c.Close()
	})
}
