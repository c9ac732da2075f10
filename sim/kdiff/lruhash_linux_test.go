//go:build linux

package kdiff

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// The LRU hash maps against this machine's kernel: the same sequence of
// user-space updates, deletes, lookups and lookup-and-deletes, and of
// program lookups and updates (BPF_PROG_TEST_RUN), must leave the same
// keys in both maps after every step, with the same errnos and the same
// program results. Eviction depends on the CPU each operation runs on
// (the common LRU's local lists, the per-CPU LRU's lists), so the test's
// thread is pinned: user space always runs on CPU 0, which is the CPU the
// simulator's user-space operations use, and each program run goes to the
// CPU the sequence chooses, in the kernel by moving the thread there and
// in bpfsim with RunOptions.CPU.

// possibleCPUs is num_possible_cpus() from sysfs.
func possibleCPUs(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/sys/devices/system/cpu/possible")
	if err != nil {
		t.Skipf("skipped: cannot read the possible CPUs: %v", err)
	}
	n := 0
	for _, r := range strings.Split(strings.TrimSpace(string(b)), ",") {
		lo, hi, found := strings.Cut(r, "-")
		a, err1 := strconv.Atoi(lo)
		z := a
		var err2 error
		if found {
			z, err2 = strconv.Atoi(hi)
		}
		if err1 != nil || err2 != nil {
			t.Skipf("skipped: cannot parse the possible CPUs %q", b)
		}
		n += z - a + 1
	}
	return n
}

// pinTo moves the calling thread (locked to its goroutine) to cpu.
func pinTo(t *testing.T, cpu int) {
	t.Helper()
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		t.Skipf("skipped: cannot run on CPU %d: %v", cpu, err)
	}
}

// lruProgram looks up (mode 0) or updates with BPF_ANY (mode 1) the u32
// key in the first four bytes of the packet; the mode is the fifth byte.
// It returns 1 if a lookup found the key, the helper's result for an
// update, and 7 for a short packet.
func lruProgram(fd int) asm.Instructions {
	return asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 0, asm.Word), // data
		asm.LoadMem(asm.R3, asm.R1, 4, asm.Word), // data_end
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 8),
		asm.JGT.Reg(asm.R4, asm.R3, "short"),
		asm.LoadMem(asm.R5, asm.R2, 0, asm.Word),
		asm.StoreMem(asm.RFP, -4, asm.R5, asm.Word),
		asm.LoadMem(asm.R6, asm.R2, 4, asm.Byte),
		asm.Mov.Imm(asm.R7, 0),
		asm.StoreMem(asm.RFP, -16, asm.R7, asm.DWord), // the value
		asm.LoadMapPtr(asm.R1, fd),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.JEq.Imm(asm.R6, 1, "update"),
		asm.FnMapLookupElem.Call(),
		asm.Mov.Imm(asm.R1, 0),
		asm.JEq.Imm(asm.R0, 0, "found"),
		asm.Mov.Imm(asm.R1, 1),
		asm.Mov.Reg(asm.R0, asm.R1).WithSymbol("found"),
		asm.Return(),
		asm.Mov.Reg(asm.R3, asm.RFP).WithSymbol("update"),
		asm.Add.Imm(asm.R3, -16),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnMapUpdateElem.Call(),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 7).WithSymbol("short"),
		asm.Return(),
	}
}

// lruWorld is one side of the comparison.
type lruWorld struct {
	update    func(key uint32, flags ebpf.MapUpdateFlags) error
	del       func(key uint32) error
	lookup    func(key uint32) error
	lookupDel func(key uint32) error
	run       func(cpu int, key uint32, mode byte) (uint32, error)
	keys      func() ([]uint32, error)
}

// lruResult names the errno of err, or "ok".
func lruResult(err error) string {
	if err == nil {
		return "ok"
	}
	for _, e := range []unix.Errno{unix.ENOENT, unix.EEXIST, unix.EINVAL, unix.E2BIG, unix.ENOMEM, unix.EPERM, 524 /* ENOTSUPP */} {
		if errors.Is(err, e) {
			return e.Error()
		}
	}
	return err.Error()
}

func TestLRUHashEvictsLikeTheKernel(t *testing.T) {
	if _, err := OpenKernel(); err != nil {
		t.Skipf("skipped: this machine cannot load BPF programs: %v", err)
	}
	ncpu := possibleCPUs(t)
	if ncpu > sim.MaxCPUs {
		t.Skipf("skipped: %d possible CPUs", ncpu)
	}
	k, err := sim.NewKernel(&sim.Options{CPUs: ncpu, HardWire: verifier.HardWireFromSeen})
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, c := range []struct {
		name       string
		typ        ebpf.MapType
		flags      uint32
		maxEntries uint32
		ops        int
		progCPUs   bool // programs also run on other CPUs
	}{
		{"lru_hash", ebpf.LRUHash, 0, 64, 3000, false},
		{"lru_hash, zero seed, key order", ebpf.LRUHash, uapi.BPF_F_ZERO_SEED, 48, 2000, false},
		{"lru_hash, programs on every CPU", ebpf.LRUHash, 0, 64, 3000, true},
		{"lru_hash, tiny", ebpf.LRUHash, 0, 5, 1500, true},
		{"lru_hash, no common lru", ebpf.LRUHash, uapi.BPF_F_NO_COMMON_LRU, 64, 3000, false},
		{"lru_hash, no common lru, programs on every CPU", ebpf.LRUHash, uapi.BPF_F_NO_COMMON_LRU, 30, 3000, true},
		{"lru_percpu_hash", ebpf.LRUCPUHash, 0, 64, 3000, true},
		{"lru_percpu_hash, no common lru", ebpf.LRUCPUHash, uapi.BPF_F_NO_COMMON_LRU, 40, 3000, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			pinTo(t, 0)
			spec := &ebpf.MapSpec{Type: c.typ, KeySize: 4, ValueSize: 8, MaxEntries: c.maxEntries, Flags: c.flags}
			km, sm := mapsInBoth(t, k, spec)
			if ki, err := km.Info(); err == nil && ki.MaxEntries != sm.MaxEntries() {
				t.Errorf("max_entries: the kernel has %d, bpfsim %d", ki.MaxEntries, sm.MaxEntries())
			}
			percpu := c.typ == ebpf.LRUCPUHash
			value := func() any {
				if percpu {
					return make([]uint64, ncpu)
				}
				return uint64(0)
			}
			kp, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: lruProgram(km.FD())})
			if err != nil {
				t.Fatalf("the kernel refused the program: %v", err)
			}
			defer kp.Close()
			sp, err := k.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: lruProgram(sm.FD())})
			if err != nil {
				t.Fatalf("bpfsim refused the program: %v", err)
			}
			defer sp.Close()
			packet := func(key uint32, mode byte) []byte {
				pkt := make([]byte, 64)
				binary.LittleEndian.PutUint32(pkt, key)
				pkt[4] = mode
				return pkt
			}
			keysOf := func(next func(key, out any) error) ([]uint32, error) {
				var keys []uint32
				var cur any
				var out uint32
				for range 4 * c.maxEntries {
					if err := next(cur, &out); errors.Is(err, ebpf.ErrKeyNotExist) {
						return keys, nil
					} else if err != nil {
						return keys, err
					}
					keys = append(keys, out)
					cur = out
				}
				return keys, fmt.Errorf("more than %d keys", 4*c.maxEntries)
			}
			worlds := [2]lruWorld{{
				update: func(key uint32, flags ebpf.MapUpdateFlags) error {
					v := value()
					if percpu {
						v = make([]uint64, ebpf.MustPossibleCPU())
					}
					return km.Update(key, v, flags)
				},
				del: func(key uint32) error { return km.Delete(key) },
				lookup: func(key uint32) error {
					if percpu {
						var v []uint64
						return km.Lookup(key, &v)
					}
					var v uint64
					return km.Lookup(key, &v)
				},
				lookupDel: func(key uint32) error {
					if percpu {
						var v []uint64
						return km.LookupAndDelete(key, &v)
					}
					var v uint64
					return km.LookupAndDelete(key, &v)
				},
				run: func(cpu int, key uint32, mode byte) (uint32, error) {
					pinTo(t, cpu)
					defer pinTo(t, 0)
					return kp.Run(&ebpf.RunOptions{Data: packet(key, mode)})
				},
				keys: func() ([]uint32, error) { return keysOf(km.NextKey) },
			}, {
				update: func(key uint32, flags ebpf.MapUpdateFlags) error { return sm.Update(key, value(), flags) },
				del:    func(key uint32) error { return sm.Delete(key) },
				lookup: func(key uint32) error {
					if percpu {
						var v []uint64
						return sm.Lookup(key, &v)
					}
					var v uint64
					return sm.Lookup(key, &v)
				},
				lookupDel: func(key uint32) error {
					if percpu {
						var v []uint64
						return sm.LookupAndDelete(key, &v)
					}
					var v uint64
					return sm.LookupAndDelete(key, &v)
				},
				run: func(cpu int, key uint32, mode byte) (uint32, error) {
					return sp.Run(&sim.RunOptions{Data: packet(key, mode), CPU: uint32(cpu)})
				},
				keys: func() ([]uint32, error) { return keysOf(sm.NextKey) },
			}}
			rng := rand.New(rand.NewPCG(uint64(c.maxEntries), uint64(c.flags)+uint64(c.typ)))
			universe := 3 * c.maxEntries
			ordered := c.flags&uapi.BPF_F_ZERO_SEED != 0
			for i := range c.ops {
				key := uint32(rng.IntN(int(universe)))
				cpu := 0
				if c.progCPUs {
					cpu = rng.IntN(ncpu)
				}
				var what string
				var res [2]string
				switch r := rng.IntN(100); {
				case r < 35:
					flags := ebpf.UpdateAny
					if f := rng.IntN(10); f == 0 {
						flags = ebpf.UpdateNoExist
					} else if f == 1 {
						flags = ebpf.UpdateExist
					}
					what = fmt.Sprintf("update %d flags %d", key, flags)
					for w := range worlds {
						res[w] = lruResult(worlds[w].update(key, flags))
					}
				case r < 45:
					what = fmt.Sprintf("delete %d", key)
					for w := range worlds {
						res[w] = lruResult(worlds[w].del(key))
					}
				case r < 52:
					what = fmt.Sprintf("user lookup %d", key)
					for w := range worlds {
						res[w] = lruResult(worlds[w].lookup(key))
					}
				case r < 55:
					what = fmt.Sprintf("lookup and delete %d", key)
					for w := range worlds {
						res[w] = lruResult(worlds[w].lookupDel(key))
					}
				case r < 85:
					what = fmt.Sprintf("program lookup %d on CPU %d", key, cpu)
					for w := range worlds {
						ret, err := worlds[w].run(cpu, key, 0)
						res[w] = fmt.Sprintf("%d %v", ret, err)
					}
				default:
					what = fmt.Sprintf("program update %d on CPU %d", key, cpu)
					for w := range worlds {
						ret, err := worlds[w].run(cpu, key, 1)
						res[w] = fmt.Sprintf("%d %v", ret, err)
					}
				}
				if res[0] != res[1] {
					t.Fatalf("step %d, %s: the kernel gives %s, bpfsim %s", i, what, res[0], res[1])
				}
				var keys [2][]uint32
				for w := range worlds {
					if keys[w], err = worlds[w].keys(); err != nil {
						t.Fatalf("step %d: listing keys: %v", i, err)
					}
					if !ordered {
						slices.Sort(keys[w])
					}
				}
				if !slices.Equal(keys[0], keys[1]) {
					t.Fatalf("step %d, %s: keys differ\nkernel: %v\nbpfsim: %v", i, what, keys[0], keys[1])
				}
				if len(keys[1]) > int(sm.MaxEntries()) {
					t.Fatalf("step %d: %d keys in a map of %d", i, len(keys[1]), sm.MaxEntries())
				}
				total++
			}
		})
	}
	t.Logf("%d steps compared", total)
}

// The verifier inlines an LRU hash lookup with the ref store
// (htab_lru_map_gen_lookup) and sends the other calls to the LRU
// functions; the per-CPU LRU hash is never inlined.
func TestLRUHashCallFixupsMatchKernel(t *testing.T) {
	k := linuxLikeSim(t)
	for _, c := range []struct {
		name string
		spec ebpf.MapSpec
	}{
		{"lru hash", ebpf.MapSpec{Type: ebpf.LRUHash, KeySize: 4, ValueSize: 8, MaxEntries: 5}},
		{"lru hash, odd keys", ebpf.MapSpec{Type: ebpf.LRUHash, KeySize: 6, ValueSize: 20, MaxEntries: 5}},
		{"lru hash, no common lru", ebpf.MapSpec{Type: ebpf.LRUHash, KeySize: 8, ValueSize: 8, MaxEntries: 8, Flags: uapi.BPF_F_NO_COMMON_LRU}},
		{"lru percpu hash", ebpf.MapSpec{Type: ebpf.LRUCPUHash, KeySize: 4, ValueSize: 8, MaxEntries: 5}},
	} {
		t.Run(c.name, func(t *testing.T) {
			km, sm := mapsInBoth(t, k, &c.spec)
			percpu := c.spec.Type == ebpf.LRUCPUHash
			kx := loadInKernel(t, ebpf.SocketFilter, mapCalls(km.FD(), percpu))
			sx := loadInSim(t, k, ebpf.SocketFilter, mapCalls(sm.FD(), percpu))
			sameXlated(t, k, kx, sx)
		})
	}
}

// Creation follows htab_map_alloc_check: the same errno for each refused
// combination, and the same max_entries for one accepted.
func TestLRUHashCreationMatchesKernel(t *testing.T) {
	k := linuxLikeSim(t)
	for _, c := range []struct {
		name string
		spec ebpf.MapSpec
	}{
		{"no prealloc", ebpf.MapSpec{Type: ebpf.LRUHash, KeySize: 4, ValueSize: 8, MaxEntries: 5, Flags: uapi.BPF_F_NO_PREALLOC}},
		{"percpu, no prealloc", ebpf.MapSpec{Type: ebpf.LRUCPUHash, KeySize: 4, ValueSize: 8, MaxEntries: 5, Flags: uapi.BPF_F_NO_PREALLOC}},
		{"no common lru on a plain hash", ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 5, Flags: uapi.BPF_F_NO_COMMON_LRU}},
		{"no common lru and numa node", ebpf.MapSpec{Type: ebpf.LRUHash, KeySize: 4, ValueSize: 8, MaxEntries: 5, Flags: uapi.BPF_F_NO_COMMON_LRU | uapi.BPF_F_NUMA_NODE}},
		{"numa node", ebpf.MapSpec{Type: ebpf.LRUHash, KeySize: 4, ValueSize: 8, MaxEntries: 5, Flags: uapi.BPF_F_NUMA_NODE}},
		{"zero max_entries", ebpf.MapSpec{Type: ebpf.LRUHash, KeySize: 4, ValueSize: 8}},
		{"zero value", ebpf.MapSpec{Type: ebpf.LRUHash, KeySize: 4, MaxEntries: 5}},
		{"inner map flag", ebpf.MapSpec{Type: ebpf.LRUHash, KeySize: 4, ValueSize: 8, MaxEntries: 5, Flags: uapi.BPF_F_INNER_MAP}},
		{"huge per-CPU value", ebpf.MapSpec{Type: ebpf.LRUCPUHash, KeySize: 4, ValueSize: 40000, MaxEntries: 5}},
		{"max_entries rounded to the CPUs", ebpf.MapSpec{Type: ebpf.LRUHash, KeySize: 4, ValueSize: 8, MaxEntries: 7, Flags: uapi.BPF_F_NO_COMMON_LRU}},
		{"max_entries of a common lru kept", ebpf.MapSpec{Type: ebpf.LRUCPUHash, KeySize: 4, ValueSize: 8, MaxEntries: 7}},
	} {
		t.Run(c.name, func(t *testing.T) {
			km, kerr := ebpf.NewMap(&c.spec)
			sm, serr := k.NewMap(&c.spec)
			if kerr == nil {
				defer km.Close()
			}
			if serr == nil {
				defer sm.Close()
			}
			if lruResult(kerr) != lruResult(serr) {
				t.Fatalf("the kernel gives %v, bpfsim %v", kerr, serr)
			}
			if kerr == nil {
				ki, err := km.Info()
				if err != nil {
					t.Fatal(err)
				}
				if ki.MaxEntries != sm.MaxEntries() {
					t.Errorf("max_entries: the kernel has %d, bpfsim %d", ki.MaxEntries, sm.MaxEntries())
				}
			}
		})
	}
}
