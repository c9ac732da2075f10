package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/bpfsim/bpfsim/sim/kdiff"
)

// kernelSchedule is the traffic of the kernel comparison: packets per
// flow at times after the start, with an idle timeout of kernelTimeout.
var kernelSchedule = []struct {
	flow Flow
	at   []time.Duration
}{
	{NewFlow(17, "10.0.0.1", 1111, "10.0.0.2", 53), []time.Duration{0}},
	{NewFlow(6, "10.0.0.1", 2222, "10.0.0.3", 443), []time.Duration{0, 100, 200, 300, 400, 500, 600, 700, 800}},
	{NewFlow(6, "10.0.0.4", 3333, "10.0.0.3", 443), []time.Duration{0, 0, 0}},
}

// A second: far more than any pause a loaded machine puts between two
// packets of the busy flow, which would expire it early in the kernel.
const kernelTimeout = time.Second

// The object runs in this machine's kernel, in real time, and in bpfsim,
// on its virtual clock: the same flows expire with the same counts, the
// kernel's at least one timeout after their last packet, bpfsim's exactly
// then.
func TestFlowExpiryIsTheKernels(t *testing.T) {
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(object))
	if err != nil {
		t.Fatal(err)
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer coll.Close()
	if err := coll.Maps["config"].Put(uint32(0), uint64(kernelTimeout)); err != nil {
		t.Fatal(err)
	}
	rd, err := ringbuf.NewReader(coll.Maps["expired"])
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	prog := coll.Programs["flow_table"]

	// Both runs follow the schedule in 100 ms steps.
	_, simT := loadTable(t, kernelTimeout)
	start := time.Now()
	for step := time.Duration(0); step <= 2500*time.Millisecond; step += 100 * time.Millisecond {
		for _, s := range kernelSchedule {
			for _, at := range s.at {
				if at*time.Millisecond != step {
					continue
				}
				if _, err := prog.Run(&ebpf.RunOptions{Data: BuildPacket(s.flow, 100)}); err != nil {
					t.Fatal(err)
				}
				if err := simT.Packet(s.flow, 100); err != nil {
					t.Fatal(err)
				}
			}
		}
		time.Sleep(time.Until(start.Add(step + 100*time.Millisecond)))
		if err := simT.Advance(100 * time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}

	kernel := map[Flow]Expiry{}
	rd.SetDeadline(time.Now().Add(time.Second))
	for len(kernel) < len(kernelSchedule) {
		rec, err := rd.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		var e Expiry
		if err := binary.Read(bytes.NewReader(rec.RawSample), binary.LittleEndian, &e); err != nil {
			t.Fatal(err)
		}
		kernel[e.Flow] = e
	}
	bpfsim, err := simT.Expired()
	if err != nil {
		t.Fatal(err)
	}
	if len(kernel) != len(kernelSchedule) || len(bpfsim) != len(kernelSchedule) {
		t.Fatalf("the kernel expired %d flows, bpfsim %d, want %d", len(kernel), len(bpfsim), len(kernelSchedule))
	}
	for _, s := range bpfsim {
		k, ok := kernel[s.Flow]
		switch {
		case !ok:
			t.Errorf("%v: expired in bpfsim, not in the kernel", s.Flow)
		case k.Packets != s.Packets || k.Bytes != s.Bytes:
			t.Errorf("%v: the kernel counted %d packets, %d bytes; bpfsim %d, %d", s.Flow, k.Packets, k.Bytes, s.Packets, s.Bytes)
		case k.ExpiredAt-k.LastSeen < uint64(kernelTimeout):
			t.Errorf("%v: the kernel expired it %v after its last packet, before the timeout", s.Flow, time.Duration(k.ExpiredAt-k.LastSeen))
		case s.ExpiredAt-s.LastSeen != uint64(kernelTimeout):
			t.Errorf("%v: bpfsim expired it %v after its last packet, want exactly %v", s.Flow, time.Duration(s.ExpiredAt-s.LastSeen), kernelTimeout)
		}
	}
}
