//go:build linux

package kdiff

import (
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
)

// Each spin lock program is loaded in this machine's kernel and in bpfsim
// at log level 2: the same verdict, errno and message, and the same whole
// log, where every state line shows the held lock among the references
// and the value pointers keep their ids after the null check. Programs
// both accept run three times in each, and then the values they locked
// and counted in must read back the same (the lock word hidden as 0).
func TestSpinLockRulesAreTheKernels(t *testing.T) {
	k := linuxLikeSim(t)
	kfds, sfds := map[string]int{}, map[string]int{}
	kmaps, smaps := map[string]*ebpf.Map{}, map[string]*sim.Map{}
	for name, spec := range spinLockMaps {
		km, sm := mapsInBoth(t, k, spec)
		kfds[name], sfds[name] = km.FD(), sm.FD()
		kmaps[name], smaps[name] = km, sm
	}
	for _, key := range []uint32{0, 1} {
		if err := kmaps["lockhash"].Put(key, uint64(0)); err != nil {
			t.Fatal(err)
		}
		if err := smaps["lockhash"].Put(key, uint64(0)); err != nil {
			t.Fatal(err)
		}
	}
	runs := 0
	accepted, logsCompared := 0, 0
	for _, c := range spinLockCases {
		t.Run(c.name, func(t *testing.T) {
			kerr, serr, klog, slog := loadBothLogged(t, k, spinLockSpec(t, c, kfds), spinLockSpec(t, c, sfds))
			if errnoOf(kerr) != errnoOf(serr) || verifierMessage(kerr) != verifierMessage(serr) {
				t.Fatalf("verdicts differ\nkernel: %v: %s\nbpfsim: %v: %s", errnoOf(kerr), verifierMessage(kerr), errnoOf(serr), verifierMessage(serr))
			}
			if c.errno != errnoOf(kerr) || c.msg != verifierMessage(kerr) {
				t.Errorf("the kernel answers %v: %s; the table (TestSpinLockVerdicts) says %v: %s",
					errnoOf(kerr), verifierMessage(kerr), c.errno, c.msg)
			}
			if kerr == nil {
				accepted++
				runs += runBothAndCompare(t, c, kfds, sfds, kmaps, smaps)
			}
			if a, b := refLog(klog), refLog(slog); a != b {
				t.Errorf("logs differ\nkernel:\n%s\nbpfsim:\n%s", a, b)
			}
			logsCompared++
		})
	}
	t.Logf("%d of %d programs accepted by both; %d logs compared; %d runs compared", accepted, len(spinLockCases), logsCompared, runs)
}

// runBothAndCompare runs an accepted program three times in the kernel
// and in bpfsim and compares the return values and then the maps with
// locks, key by key. It returns the runs compared.
func runBothAndCompare(t *testing.T, c spinLockCase, kfds, sfds map[string]int, kmaps map[string]*ebpf.Map, smaps map[string]*sim.Map) int {
	t.Helper()
	kp, err := ebpf.NewProgram(spinLockSpec(t, c, kfds))
	if err != nil {
		t.Fatal(err)
	}
	defer kp.Close()
	sp, err := smaps["lockarr"].Kernel().NewProgram(spinLockSpec(t, c, sfds))
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	pkt := make([]byte, 64)
	for i := 0; i < 3; i++ {
		kr, kerr := kp.Run(&ebpf.RunOptions{Data: pkt})
		sr, serr := sp.Run(&sim.RunOptions{Data: pkt})
		if kerr != nil || serr != nil || kr != sr {
			t.Fatalf("run %d: kernel %d, %v; bpfsim %d, %v", i, kr, kerr, sr, serr)
		}
	}
	for _, name := range []string{"lockarr", "lockarr2", "lockhash"} {
		for _, key := range []uint32{0, 1} {
			var kv, sv [8]byte
			kerr := kmaps[name].Lookup(key, &kv)
			serr := smaps[name].Lookup(key, &sv)
			if errnoOf(kerr) != errnoOf(serr) || kv != sv {
				t.Errorf("%s[%d]: kernel % x, %v; bpfsim % x, %v", name, key, kv, kerr, sv, serr)
			}
		}
	}
	return 3
}
