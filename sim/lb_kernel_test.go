package sim_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/kdiff"
)

// lbKernel is the balancer loaded in this machine's kernel, configured as
// newLBSim configures bpfsim's.
type lbKernel struct {
	coll *ebpf.Collection
	prog *ebpf.Program
}

func newLBKernel(t *testing.T, spec *ebpf.CollectionSpec) *lbKernel {
	t.Helper()
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		t.Fatalf("the kernel refused the balancer: %v", err)
	}
	t.Cleanup(coll.Close)
	installLB(t, func(name string) lbMap { return coll.Maps[name] }, lbBackends, lbServices)
	return &lbKernel{coll: coll, prog: coll.Programs["xdp_lb4"]}
}

func (k *lbKernel) run(t *testing.T, pkt []byte) (uint32, []byte) {
	t.Helper()
	out := make([]byte, len(pkt))
	ret, err := k.prog.Run(&ebpf.RunOptions{Data: pkt, DataOut: out})
	if err != nil {
		t.Fatal(err)
	}
	return ret, out
}

// The balancer runs in bpfsim as in the kernel: the same verdicts, the
// same packets out, the same conntrack entries and statistics, through
// new flows, established ones and a backend's removal.
func TestLBMatchesKernel(t *testing.T) {
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel comparison skipped: this machine cannot load BPF programs: %v", err)
	}
	spec := loadLBSpec(t)
	kern := newLBKernel(t, spec)
	lb := newLBSim(t)

	var packets [][]byte
	for _, c := range lbCases() {
		packets = append(packets, c.bytes())
	}
	for round := range 2 {
		for i := range 40 {
			packets = append(packets, flowTo(webService, uint16(50000+i)).bytes())
			if round == 0 && i%4 == 0 {
				packets = append(packets, flowTo(dnsService, uint16(50000+i)).bytes())
			}
		}
	}
	sent := 0
	send := func(stage string) {
		t.Helper()
		for i, pkt := range packets {
			kret, kout := kern.run(t, pkt)
			sret, sout := lb.run(t, pkt, uint32(i%2))
			if kret != sret || !bytes.Equal(kout, sout) {
				t.Errorf("%s, packet %d: kernel %d, bpfsim %d\npacket % x\nkernel out % x\nbpfsim out % x", stage, i, kret, sret, pkt, kout, sout)
			}
			sent++
		}
	}
	send("new flows")

	// Backend 2 leaves the web service's Maglev table, then goes.
	table := maglevTable([]uint32{1, 3}, lbMaglevM)
	installMaglev(t, kern.coll.Maps["lb4_maglev"], webService.id, table)
	installMaglev(t, lb.coll.Maps["lb4_maglev"], webService.id, table)
	send("backend 2 draining")
	for _, m := range []lbMap{kern.coll.Maps["lb4_backends"], lb.coll.Maps["lb4_backends"]} {
		if err := m.Update(uint32(2), lbBackend{}, ebpf.UpdateAny); err != nil {
			t.Fatal(err)
		}
	}
	send("backend 2 removed")

	kct, sct := kernelConntrack(t, kern.coll.Maps["lb4_ct"]), simConntrack(t, lb.coll.Maps["lb4_ct"])
	if len(kct) == 0 || len(kct) != len(sct) {
		t.Errorf("conntrack: %d entries in the kernel, %d in bpfsim", len(kct), len(sct))
	}
	for key, ke := range kct {
		se, ok := sct[key]
		// The clocks differ: compare what the program computed.
		ke.LastSeen, se.LastSeen = 0, 0
		if !ok || ke != se {
			t.Errorf("conntrack %+v: kernel %+v, bpfsim %+v (found %v)", key, ke, se, ok)
		}
	}
	var total uint64
	for i := range statMax {
		var kper []lbStats
		if err := kern.coll.Maps["lb_stats"].Lookup(uint32(i), &kper); err != nil {
			t.Fatal(err)
		}
		k, s := sumStats(kper), sumStats(lb.stats(t)[i])
		if k != s {
			t.Errorf("stats[%d] summed over CPUs: kernel %+v, bpfsim %+v", i, k, s)
		}
		total += k.Packets
	}
	if total != uint64(sent) {
		t.Errorf("the kernel counted %d packets of %d", total, sent)
	}
	t.Logf("%d packets compared, %d conntrack entries", sent, len(kct))

	logVerifiedInstructions(t, spec, kern.prog, lb.prog)
}

// logVerifiedInstructions reports how many instructions each verifier
// processed; they need not agree (pruning heuristics differ), but a large
// ratio is worth a look.
func logVerifiedInstructions(t *testing.T, spec *ebpf.CollectionSpec, kprog *ebpf.Program, sprog *sim.Program) {
	t.Helper()
	info, err := kprog.Info()
	if err != nil {
		t.Fatal(err)
	}
	kn, ok := info.VerifiedInstructions()
	if !ok {
		t.Log("the kernel does not report verified instructions")
		return
	}
	sn, _ := sprog.VerifiedInstructions()
	t.Logf("verifier: %d instructions, processed %d by the kernel, %d by bpfsim (bpfsim/kernel %.2f)",
		len(spec.Programs["xdp_lb4"].Instructions), kn, sn, float64(sn)/float64(kn))
	t.Logf("kernel: %s", verifierStats(kernelStatsLog(t, spec)))
	t.Logf("bpfsim: %s", verifierStats(simStatsLog(t, spec)))
}

func kernelStatsLog(t *testing.T, spec *ebpf.CollectionSpec) string {
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{Programs: ebpf.ProgramOptions{LogLevel: ebpf.LogLevelStats}})
	if err != nil {
		t.Fatal(err)
	}
	defer coll.Close()
	return coll.Programs["xdp_lb4"].VerifierLog
}

func simStatsLog(t *testing.T, spec *ebpf.CollectionSpec) string {
	coll, err := newKernel(t, nil).NewCollectionWithOptions(spec, sim.CollectionOptions{ProgramOptions: sim.ProgramOptions{LogLevel: ebpf.LogLevelBranch}})
	if err != nil {
		t.Fatal(err)
	}
	defer coll.Close()
	return coll.Programs["xdp_lb4"].VerifierLog()
}

// verifierStats is the "processed N insns ..." line of a verifier log.
func verifierStats(log string) string {
	for _, line := range strings.Split(log, "\n") {
		if strings.HasPrefix(line, "processed ") {
			return line
		}
	}
	return fmt.Sprintf("no statistics in a %d-byte log", len(log))
}

func kernelConntrack(t *testing.T, m *ebpf.Map) map[lbCTKey]lbCTEntry {
	t.Helper()
	entries := map[lbCTKey]lbCTEntry{}
	var k lbCTKey
	var e lbCTEntry
	it := m.Iterate()
	for it.Next(&k, &e) {
		entries[k] = e
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return entries
}

func simConntrack(t *testing.T, m *sim.Map) map[lbCTKey]lbCTEntry {
	t.Helper()
	entries := map[lbCTKey]lbCTEntry{}
	var k lbCTKey
	var e lbCTEntry
	it := m.Iterate()
	for it.Next(&k, &e) {
		entries[k] = e
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return entries
}

func sumStats(perCPU []lbStats) (sum lbStats) {
	for _, s := range perCPU {
		sum.Packets += s.Packets
		sum.Bytes += s.Bytes
	}
	return sum
}
