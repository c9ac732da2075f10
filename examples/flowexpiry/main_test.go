package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/bpfsim/bpfsim/examples/internal/bpfobj"
	"github.com/bpfsim/bpfsim/sim"
)

func TestCommittedObjectIsFresh(t *testing.T) {
	bpfobj.CheckFresh(t, "bpf/flowexpiry.bpf.c", "flowexpiry.bpf.o", "go generate ./examples/flowexpiry")
}

func loadTable(t *testing.T, timeout time.Duration) (*sim.Kernel, *Table) {
	t.Helper()
	k, err := sim.NewKernel(nil)
	if err != nil {
		t.Fatal(err)
	}
	tb, err := Load(k, timeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tb.Close)
	return k, tb
}

// On the virtual clock every flow is forgotten exactly one timeout after
// its last packet, and the flows of the scenario are forgotten at the
// times a reader works out by hand.
func TestFlowsExpireExactlyOneTimeoutAfterTheirLastPacket(t *testing.T) {
	const timeout = 30 * time.Second
	k, tb := loadTable(t, timeout)
	boot := k.Clock().Now()
	type seen struct {
		at      time.Duration
		packets uint64
	}
	got := map[string]seen{}
	err := Play(tb, Scenario(), 2*time.Minute, 100*time.Millisecond, func(_ time.Duration, es []Expiry) {
		for _, e := range es {
			if e.ExpiredAt-e.LastSeen != uint64(timeout) {
				t.Errorf("%v expired %v after its last packet, want %v", e.Flow, time.Duration(e.ExpiredAt-e.LastSeen), timeout)
			}
			got[e.Flow.String()] = seen{time.Duration(e.ExpiredAt - boot), e.Packets}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]seen{
		"udp 10.0.0.7:53211 -> 10.0.0.53:53":   {31 * time.Second, 1},
		"udp 10.0.0.53:53 -> 10.0.0.7:53211":   {31 * time.Second, 1},
		"tcp 10.0.0.7:40122 -> 192.0.2.80:443": {80 * time.Second, 481},
		"tcp 10.0.0.9:51000 -> 10.0.0.10:8080": {110 * time.Second, 5},
	}
	if len(got) != len(want) {
		t.Errorf("expired %v, want %v", got, want)
	}
	for f, w := range want {
		if got[f] != w {
			t.Errorf("%s: expired at %v with %d packets, want %v with %d", f, got[f].at, got[f].packets, w.at, w.packets)
		}
	}
	if flows, err := tb.Flows(); err != nil || len(flows) != 0 {
		t.Errorf("flows left: %v (%v)", flows, err)
	}
}

// A flow that keeps sending more often than the timeout stays, however
// long it lasts: its timer is started again for the time left each time
// it fires.
func TestABusyFlowNeverExpires(t *testing.T) {
	k, tb := loadTable(t, time.Second)
	f := NewFlow(17, "10.1.1.1", 1000, "10.2.2.2", 2000)
	for i := 0; i < 600; i++ {
		if err := tb.Packet(f, 100); err != nil {
			t.Fatal(err)
		}
		if err := tb.Advance(900 * time.Millisecond); err != nil {
			t.Fatal(err)
		}
		if e, err := tb.Expired(); err != nil || len(e) != 0 {
			t.Fatalf("after %d packets: expired %v (%v)", i+1, e, err)
		}
	}
	if got := k.ArmedTimers(); got != 1 {
		t.Errorf("%d timers armed, want 1", got)
	}
	if err := tb.Advance(time.Second); err != nil {
		t.Fatal(err)
	}
	if e, err := tb.Expired(); err != nil || len(e) != 1 || e[0].Packets != 600 {
		t.Errorf("once idle: expired %v (%v), want the flow with 600 packets", e, err)
	}
}

func TestDemoPrintsTheExpiries(t *testing.T) {
	var out bytes.Buffer
	if err := run(&out, 30*time.Second, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"t=  80.0s  expired tcp 10.0.0.7:40122 -> 192.0.2.80:443",
		"481 packets   721500 bytes, seen 2.0s to 50.0s",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("missing %q in:\n%s", want, out.String())
		}
	}
}
