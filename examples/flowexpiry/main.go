// Command flowexpiry runs a flow table that forgets idle flows by itself,
// with bpf_timer, on the simulated kernel and its virtual clock.
//
// The XDP program (bpf/flowexpiry.bpf.c) counts the packets and bytes of
// each TCP or UDP flow in a hash map. Each flow's value holds a struct
// bpf_timer, started for the idle timeout when the flow is first seen.
// When it fires, the callback checks when the flow was last seen: idle for
// the whole timeout, the flow is reported through a ring buffer and
// deleted; otherwise the timer is started again for the time left.
//
// In the kernel such a test takes as long as its timeouts. Here the clock
// is virtual: Kernel.AdvanceClock moves it, and each timer fires at its
// exact expiry, so a 30-second timeout is tested in microseconds and the
// same run always gives the same result.
//
// Read it top to bottom:
//
//  1. load the object (compiled with clang and committed) and set the
//     timeout;
//  2. play a small traffic scenario second by second: a DNS query and its
//     answer, a long download, a chatty health check;
//  3. print each expiry as it happens, then the flows still in the table.
package main

import (
	"bytes"
	_ "embed"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sort"
	"time"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
)

//go:embed flowexpiry.bpf.o
var object []byte

// Flow is struct flow of bpf/flowexpiry.bpf.c: addresses and ports in
// network order.
type Flow struct {
	Saddr, Daddr [4]byte
	Sport, Dport uint16 // network order
	Proto        uint8
	_            [3]byte
}

func (f Flow) String() string {
	proto := map[uint8]string{6: "tcp", 17: "udp"}[f.Proto]
	return fmt.Sprintf("%s %s:%d -> %s:%d", proto, netip.AddrFrom4(f.Saddr), swap16(f.Sport), netip.AddrFrom4(f.Daddr), swap16(f.Dport))
}

func swap16(v uint16) uint16 { return v>>8 | v<<8 }

// State is struct flow_state, without its timer.
type State struct {
	Packets, Bytes      uint64
	FirstSeen, LastSeen uint64
	Timer               [2]uint64
}

// Expiry is struct expiry: a flow the table forgot.
type Expiry struct {
	Flow                Flow
	Packets, Bytes      uint64
	FirstSeen, LastSeen uint64
	ExpiredAt           uint64
}

// Table is the loaded program and its maps.
type Table struct {
	k      *sim.Kernel
	coll   *sim.Collection
	prog   *sim.Program
	reader *sim.RingbufReader
}

// Load loads the flow table into k with the given idle timeout.
func Load(k *sim.Kernel, timeout time.Duration) (*Table, error) {
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(object))
	if err != nil {
		return nil, err
	}
	coll, err := k.NewCollection(spec)
	if err != nil {
		return nil, err
	}
	if err := coll.Maps["config"].Put(uint32(0), uint64(timeout)); err != nil {
		coll.Close()
		return nil, err
	}
	r, err := sim.NewRingbufReader(coll.Maps["expired"])
	if err != nil {
		coll.Close()
		return nil, err
	}
	return &Table{k: k, coll: coll, prog: coll.Programs["flow_table"], reader: r}, nil
}

// Close releases the table.
func (t *Table) Close() {
	t.reader.Close()
	t.coll.Close()
}

// Packet runs the program on one packet of flow f, of size bytes.
func (t *Table) Packet(f Flow, size int) error {
	_, err := t.prog.Test(&sim.RunOptions{Data: BuildPacket(f, size)})
	return err
}

// Advance lets d of virtual time pass: the timers due fire.
func (t *Table) Advance(d time.Duration) error {
	_, err := t.k.AdvanceClock(d)
	return err
}

// Expired returns the expiries reported since the last call.
func (t *Table) Expired() ([]Expiry, error) { return sim.ReadRecords[Expiry](t.reader) }

// Flows returns the flows in the table.
func (t *Table) Flows() (map[Flow]State, error) {
	out := map[Flow]State{}
	var f Flow
	var s State
	it := t.coll.Maps["flows"].Iterate()
	for it.Next(&f, &s) {
		out[f] = s
	}
	return out, it.Err()
}

// BuildPacket returns an Ethernet/IPv4 packet of flow f, size bytes long
// (at least the headers).
func BuildPacket(f Flow, size int) []byte {
	size = max(size, 14+20+8)
	p := make([]byte, size)
	binary.BigEndian.PutUint16(p[12:], 0x0800)
	ip := p[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(size-14))
	ip[8] = 64
	ip[9] = f.Proto
	copy(ip[12:], f.Saddr[:])
	copy(ip[16:], f.Daddr[:])
	l4 := ip[20:]
	binary.LittleEndian.PutUint16(l4[0:], f.Sport)
	binary.LittleEndian.PutUint16(l4[2:], f.Dport)
	return p
}

// NewFlow makes a flow from its addresses and ports in host order.
func NewFlow(proto uint8, src string, sport uint16, dst string, dport uint16) Flow {
	return Flow{Saddr: netip.MustParseAddr(src).As4(), Daddr: netip.MustParseAddr(dst).As4(),
		Sport: swap16(sport), Dport: swap16(dport), Proto: proto}
}

// Send is a flow's traffic in a scenario: a packet of Size bytes every
// Every, from From to Until (seconds of the scenario).
type Send struct {
	Flow        Flow
	Size        int
	From, Until time.Duration
	Every       time.Duration
}

// Scenario is the demo's traffic.
func Scenario() []Send {
	const tcp, udp = 6, 17
	return []Send{
		{Flow: NewFlow(udp, "10.0.0.7", 53211, "10.0.0.53", 53), Size: 74, From: 1 * time.Second, Until: 1 * time.Second, Every: time.Second},
		{Flow: NewFlow(udp, "10.0.0.53", 53, "10.0.0.7", 53211), Size: 90, From: 1 * time.Second, Until: 1 * time.Second, Every: time.Second},
		{Flow: NewFlow(tcp, "10.0.0.7", 40122, "192.0.2.80", 443), Size: 1500, From: 2 * time.Second, Until: 50 * time.Second, Every: 100 * time.Millisecond},
		{Flow: NewFlow(tcp, "10.0.0.9", 51000, "10.0.0.10", 8080), Size: 120, From: 0, Until: 90 * time.Second, Every: 20 * time.Second},
	}
}

// Play runs sends on t for the given span of virtual time, in steps of
// step, and calls report with the expiries of each step.
func Play(t *Table, sends []Send, span, step time.Duration, report func(at time.Duration, e []Expiry)) error {
	for at := time.Duration(0); at < span; at += step {
		for _, s := range sends {
			if at < s.From || at > s.Until || (at-s.From)%s.Every != 0 {
				continue
			}
			if err := t.Packet(s.Flow, s.Size); err != nil {
				return err
			}
		}
		if err := t.Advance(step); err != nil {
			return err
		}
		e, err := t.Expired()
		if err != nil {
			return err
		}
		report(at+step, e)
	}
	return nil
}

func main() {
	timeout := flag.Duration("timeout", 30*time.Second, "idle timeout")
	span := flag.Duration("for", 2*time.Minute, "virtual time to simulate")
	flag.Parse()
	if err := run(os.Stdout, *timeout, *span); err != nil {
		fmt.Fprintln(os.Stderr, "flowexpiry:", err)
		os.Exit(1)
	}
}

func run(w io.Writer, timeout, span time.Duration) error {
	k, err := sim.NewKernel(nil)
	if err != nil {
		return err
	}
	t, err := Load(k, timeout)
	if err != nil {
		return err
	}
	defer t.Close()
	boot := k.Clock().Now()
	secs := func(ns uint64) float64 { return float64(ns-boot) / 1e9 }
	fmt.Fprintf(w, "idle timeout %v; %v of traffic on a virtual clock\n\n", timeout, span)
	start := time.Now()
	err = Play(t, Scenario(), span, 100*time.Millisecond, func(_ time.Duration, es []Expiry) {
		for _, e := range es {
			fmt.Fprintf(w, "t=%6.1fs  expired %-42s %5d packets %8d bytes, seen %.1fs to %.1fs\n",
				secs(e.ExpiredAt), e.Flow, e.Packets, e.Bytes, secs(e.FirstSeen), secs(e.LastSeen))
		}
	})
	if err != nil {
		return err
	}
	flows, err := t.Flows()
	if err != nil {
		return err
	}
	keys := make([]Flow, 0, len(flows))
	for f := range flows {
		keys = append(keys, f)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
	fmt.Fprintf(w, "\nstill in the table at t=%.1fs:\n", secs(k.Clock().Now()))
	for _, f := range keys {
		s := flows[f]
		fmt.Fprintf(w, "           %-42s %5d packets %8d bytes, last seen %.1fs\n", f, s.Packets, s.Bytes, secs(s.LastSeen))
	}
	fmt.Fprintf(w, "\n%v of virtual time took %v\n", span, time.Since(start).Round(time.Millisecond))
	return nil
}
