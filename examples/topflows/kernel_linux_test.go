package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/bpfsim/bpfsim/sim/kdiff"
)

// The same object, the same traffic and the same pinned iterator in this
// machine's kernel (a private BPF filesystem): the table reads the same.
func TestTableReadsAsTheKernels(t *testing.T) {
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	kdir, done, err := kdiff.KernelBPFFS(t.TempDir())
	if err != nil {
		t.Skipf("kernel-differential test skipped: %v", err)
	}
	defer func() {
		if err := done(); err != nil {
			t.Error(err)
		}
	}()
	pkts := Traffic(3000, 7)
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(object))
	if err != nil {
		t.Fatal(err)
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer coll.Close()
	for _, p := range pkts {
		if _, err := coll.Programs["count"].Run(&ebpf.RunOptions{Data: p}); err != nil {
			t.Fatal(err)
		}
	}
	it, err := link.AttachIter(link.IterOptions{Program: coll.Programs["dump_talkers"], Map: coll.Maps["talkers"]})
	if err != nil {
		t.Fatal(err)
	}
	pin := filepath.Join(kdir, "topflows")
	if err := it.Pin(pin); err != nil {
		t.Fatal(err)
	}
	defer it.Unpin()
	it.Close()

	k, c := loadCounter(t)
	if err := c.Count(pkts); err != nil {
		t.Fatal(err)
	}
	if err := c.PinTable(k); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ { // the totals start over each walk
		want, err := os.ReadFile(pin)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Cat(k, PinPath)
		if err != nil {
			t.Fatal(err)
		}
		if got != string(want) {
			t.Errorf("walk %d: bpfsim's table\n%s\nthe kernel's\n%s", i, got, want)
		}
	}
}
