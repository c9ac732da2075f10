package lb

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os/exec"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/kdiff"
)

// kernelLB is the same embedded object loaded into this machine's kernel
// with cilium/ebpf, programmed by the same control plane.
type kernelLB struct {
	*control
	coll *ebpf.Collection
	prog *ebpf.Program
}

func loadKernelLB(t testing.TB, seed uint32) *kernelLB {
	t.Helper()
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel comparison skipped: this machine cannot load BPF programs: %v", err)
	}
	spec, err := Spec()
	if err != nil {
		t.Fatal(err)
	}
	if err := SetHashSeed(spec, seed); err != nil {
		t.Fatal(err)
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		t.Fatalf("the kernel refused the balancer: %v", err)
	}
	t.Cleanup(coll.Close)
	return &kernelLB{
		control: newControl(mapSet{
			services:  coll.Maps["services"],
			outer:     coll.Maps["maglev_outer"],
			backends:  coll.Maps["backends"],
			services6: coll.Maps["services6"],
			outer6:    coll.Maps["maglev_outer6"],
			backends6: coll.Maps["backends6"],
			stats:     coll.Maps["stats"],
			newInner:  func(n int) (innerMap, error) { return ebpf.NewMap(InnerSpec(n)) },
		}),
		coll: coll,
		prog: coll.Programs[ProgramName],
	}
}

func (k *kernelLB) run(pkt []byte) (uint32, []byte, error) {
	out := make([]byte, len(pkt)+64)
	ret, err := k.prog.Run(&ebpf.RunOptions{Data: pkt, DataOut: out})
	if err != nil {
		return 0, nil, err
	}
	return ret, out[:len(pkt)], nil
}

// diffService is a service of the differential test and its backends.
type diffService struct {
	svc      Service
	backends []BackendAddr
	m        int
}

// diffServices: tables of 251 to 16381 slots under one outer map, TCP and
// UDP, two services on one VIP, backends shared between services, one
// service whose backends keep its port; and two IPv6 services in the
// other outer map.
func diffServices() []diffService {
	web := testBackends(1, 3, 8080)
	dns := testBackends(100, 31, 5353)
	big := append(append([]BackendAddr{}, web...), testBackends(200, 40, 8443)...)
	alt := testBackends(300, 7, 0) // the service's port
	return []diffService{
		{webSvc, web, 251},
		{dnsSvc, dns, 4093},
		{Service{VIP: netip.MustParseAddr("192.0.2.20"), Port: 443, Proto: ProtoTCP}, big, 16381},
		{Service{VIP: webSvc.VIP, Port: 8080, Proto: ProtoTCP}, alt, 1021},
		{web6, backendsFor(web6, 500, 3, 8443), 251},
		{dns6, backendsFor(dns6, 600, 33, 0), 4093},
	}
}

// packetGen makes the differential test's packets: mostly service
// traffic (many clients, VLAN tags, IP options, UDP without checksum,
// payloads of 0 to 64 bytes), and traffic for no service, fragments,
// truncated and corrupted frames and random bytes.
type packetGen struct {
	rng      *rand.Rand
	services []diffService
	// kinds counts the packets by what they are, extras what was done
	// to them besides.
	kinds, extras map[string]int
}

func (g *packetGen) next() []byte {
	r := g.rng
	svc := g.services[r.IntN(len(g.services))].svc
	f := Flow{
		Src:     netip.AddrFrom4([4]byte{byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))}),
		Dst:     svc.VIP,
		SrcPort: uint16(r.IntN(65536)),
		DstPort: svc.Port,
		Proto:   svc.Proto,
	}
	kind := "service"
	switch x := r.IntN(100); {
	case x < 8:
		kind = "other address"
		f.Dst = netip.AddrFrom4([4]byte{192, 0, 2, byte(r.IntN(256))})
	case x < 12:
		kind = "other port"
		f.DstPort = uint16(r.IntN(65536))
	case x < 15:
		kind = "other protocol"
		f.Proto = []uint8{1, 47, 50, 132, ProtoTCP + ProtoUDP - f.Proto}[r.IntN(5)]
	}
	if !svc.VIP.Is4() {
		g.extras["IPv6"]++
		f.Src = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 7: byte(r.IntN(256)), 14: byte(r.IntN(256)), 15: byte(r.IntN(256))})
		if kind == "other address" {
			f.Dst = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(r.IntN(256))})
		}
	}
	pkt := BuildPacket(f, r.IntN(65))
	if f.Src.Is4() && r.IntN(8) == 0 {
		pkt = withOptions(pkt, 1+r.IntN(10))
		g.extras["IP options"]++
	}
	if f.Proto == ProtoUDP && r.IntN(6) == 0 {
		ihl := 40
		if f.Src.Is4() {
			ihl = int(pkt[14]&0xf) * 4
		}
		pkt[14+ihl+6], pkt[14+ihl+7] = 0, 0
		g.extras["no UDP checksum"]++
	}
	if r.IntN(8) == 0 {
		tag := []byte{0x81, 0x00, byte(r.IntN(16)), byte(r.IntN(256))}
		if r.IntN(2) == 0 {
			tag[0], tag[1] = 0x88, 0xa8
		}
		pkt = append(append(append([]byte{}, pkt[:12]...), tag...), pkt[12:]...)
		g.extras["VLAN tag"]++
	}
	switch x := r.IntN(100); {
	case x < 4:
		kind = "truncated"
		pkt = pkt[:14+r.IntN(len(pkt)-13)]
	case x < 7:
		kind = "corrupted header byte"
		pkt[12+r.IntN(min(60, len(pkt)-12))] = byte(r.IntN(256))
	case x < 9:
		kind = "fragment or IPv6 extension header"
		l3 := 14
		if et := binary.BigEndian.Uint16(pkt[12:]); et == 0x8100 || et == 0x88a8 {
			l3 = 18
		}
		switch pkt[l3] >> 4 {
		case 4:
			binary.BigEndian.PutUint16(pkt[l3+6:], uint16(r.IntN(0x4000)))
		case 6:
			pkt[l3+6] = []byte{0, 43, 44, 60}[r.IntN(4)]
		}
	case x < 10:
		kind = "random bytes"
		pkt = make([]byte, 14+r.IntN(100))
		for i := range pkt {
			pkt[i] = byte(r.IntN(256))
		}
		if r.IntN(2) == 0 {
			pkt[12], pkt[13] = 0x08, 0x00
		}
	}
	g.kinds[kind]++
	return pkt
}

// The verifiers agree on the program: the kernel's and bpfsim's process
// the same number of instructions.
func TestVerifierProcessesAsManyInstructionsAsKernel(t *testing.T) {
	kern := loadKernelLB(t, testSeed)
	info, err := kern.prog.Info()
	if err != nil {
		t.Fatal(err)
	}
	kn, ok := info.VerifiedInstructions()
	if !ok {
		t.Skip("the kernel does not report verified_insns")
	}
	sn, _ := newTestLB(t, 1).Program().VerifiedInstructions()
	if int(kn) != sn {
		t.Errorf("processed instructions: kernel %d, bpfsim %d", kn, sn)
	}
	t.Logf("both verifiers processed %d instructions", sn)
}

// The kernel compiles the map-in-map lookups as bpfsim shows them: its
// xlated code, as bpftool prints it, passes the same check.
func TestKernelXlatedInlinesOuterLookupAndCallsInnerArray(t *testing.T) {
	kern := loadKernelLB(t, testSeed)
	bpftool, err := exec.LookPath("bpftool")
	if err != nil {
		t.Skip("skipped: bpftool is not installed (Debian package bpftool)")
	}
	info, err := kern.prog.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	x, err := exec.Command(bpftool, "prog", "dump", "xlated", "id", fmt.Sprint(id)).Output()
	if err != nil {
		t.Fatalf("bpftool: %v", err)
	}
	minfo, err := kern.coll.Maps["maglev_outer"].Info()
	if err != nil {
		t.Fatal(err)
	}
	outerID, _ := minfo.ID()
	if err := checkMapInMapCode(string(x), uint32(outerID)); err != nil {
		t.Fatalf("%v in\n%s", err, x)
	}
}

// The balancer in bpfsim and in this machine's kernel, the same object
// with the same seed, the same services (tables of 251 to 16381 slots in
// one outer map) changed at the same moments: every verdict and every
// byte of every packet out agree, and so do the counters.
func TestDatapathMatchesKernel(t *testing.T) {
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		t.Run(rt.String(), func(t *testing.T) { datapathMatchesKernel(t, rt) })
	}
}

func datapathMatchesKernel(t *testing.T, rt sim.Runtime) {
	kern := loadKernelLB(t, testSeed)
	simLB := newTestLBWith(t, 2, rt)
	if simLB.Program().Runtime() != rt {
		t.Fatalf("runtime %v, want %v: %v", simLB.Program().Runtime(), rt, simLB.Program().JITError())
	}
	services := diffServices()
	both := func(what string, f func(c *control) error) {
		t.Helper()
		if err := f(kern.control); err != nil {
			t.Fatalf("kernel: %s: %v", what, err)
		}
		if err := f(simLB.control); err != nil {
			t.Fatalf("bpfsim: %s: %v", what, err)
		}
	}
	for _, s := range services {
		both("set "+s.svc.String(), func(c *control) error { return c.SetService(s.svc, fillTable(s.backends, s.m), s.backends) })
	}
	n := 100_000
	if testing.Short() {
		n = 10_000
	}
	gen := &packetGen{rng: rand.New(rand.NewPCG(6, 18)), services: services, kinds: map[string]int{}, extras: map[string]int{}}
	verdicts := map[uint32]int{}
	mismatches := 0
	for i := range n {
		switch i {
		case n / 4:
			// The web service moves to other backends and a bigger
			// table; the 8080 service goes.
			nb := testBackends(400, 5, 8080)
			both("replace web", func(c *control) error { return c.SetService(webSvc, fillTable(nb, 509), nb) })
			both("delete alt", func(c *control) error { return c.DeleteService(services[3].svc) })
		case n / 2:
			// It comes back with a smaller table; the big service
			// shrinks.
			s := services[3]
			both("re-add alt", func(c *control) error { return c.SetService(s.svc, fillTable(s.backends, 251), s.backends) })
			s = services[2]
			both("shrink big", func(c *control) error { return c.SetService(s.svc, fillTable(s.backends[:20], 2039), s.backends[:20]) })
			// The IPv6 web service grows to other backends.
			nb := backendsFor(web6, 700, 9, 8443)
			both("replace web6", func(c *control) error { return c.SetService(web6, fillTable(nb, 1021), nb) })
		case 3 * n / 4:
			// A backend vanishes under its table (as if another agent
			// deleted it): its slots drop.
			both("lose backends 100 and 601", func(c *control) error {
				if err := c.maps.backends.Delete(u32(100)); err != nil {
					return err
				}
				return c.maps.backends6.Delete(u32(601))
			})
		}
		pkt := gen.next()
		kv, kout, kerr := kern.run(pkt)
		sv, sout, serr := simLB.Run(pkt, i%2)
		if (kerr != nil) != (serr != nil) {
			t.Fatalf("packet %d: kernel error %v, bpfsim error %v\n% x", i, kerr, serr, pkt)
		}
		if kerr != nil {
			verdicts[99]++
			continue
		}
		verdicts[kv]++
		if kv != sv || !bytes.Equal(kout, sout) {
			mismatches++
			if mismatches <= 5 {
				t.Errorf("packet %d: kernel verdict %d, bpfsim %d\n   in % x\nkernel % x\nbpfsim % x", i, kv, sv, pkt, kout, sout)
			}
		}
		if kv == XDPTX && CheckChecksums(pkt) == nil {
			if err := CheckChecksums(kout); err != nil {
				t.Errorf("packet %d: the kernel's output: %v", i, err)
			}
		}
	}
	if mismatches > 0 {
		t.Fatalf("%d of %d packets differ", mismatches, n)
	}
	kstats, err := kern.Stats()
	if err != nil {
		t.Fatal(err)
	}
	sstats, err := simLB.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if kstats != sstats {
		t.Errorf("verdict counters: kernel %v, bpfsim %v", kstats, sstats)
	}
	kcounts, err := kern.BackendCounts()
	if err != nil {
		t.Fatal(err)
	}
	scounts, err := simLB.BackendCounts()
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(kcounts) != fmt.Sprint(scounts) {
		t.Errorf("backend counts differ:\nkernel %v\nbpfsim %v", kcounts, scounts)
	}
	t.Logf("%d packets, all equal: %d XDP_TX, %d XDP_PASS, %d XDP_DROP, %d refused by both test runs\npackets: %v, with %v\ncounters: %v",
		n, verdicts[XDPTX], verdicts[XDPPass], verdicts[XDPDrop], verdicts[99], gen.kinds, gen.extras, kstats)
}
