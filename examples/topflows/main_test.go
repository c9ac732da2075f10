package main

import (
	"bytes"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/bpfsim/bpfsim/examples/internal/bpfobj"
	"github.com/bpfsim/bpfsim/sim"
)

func TestCommittedObjectIsFresh(t *testing.T) {
	bpfobj.CheckFresh(t, "bpf/topflows.bpf.c", "topflows.bpf.o", "go generate ./examples/topflows")
}

// loadCounter loads the object into a new kernel, unloaded when the test
// ends.
func loadCounter(t *testing.T) (*sim.Kernel, *Counter) {
	t.Helper()
	k, err := sim.NewKernel(nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Load(k)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return k, c
}

// The pinned table lists every source once with the packets and bytes it
// sent, and the totals; each read of the pin is a new walk with the same
// text.
func TestTableCountsEverySource(t *testing.T) {
	k, c := loadCounter(t)
	pkts := Traffic(2000, 3)
	if err := c.Count(pkts); err != nil {
		t.Fatal(err)
	}
	type counts struct{ packets, bytes uint64 }
	want := map[string]counts{}
	var bytesSent uint64
	for _, p := range pkts {
		src := netip.AddrFrom4([4]byte(p[26:30])).String()
		c := want[src]
		c.packets++
		c.bytes += uint64(len(p))
		want[src] = c
		bytesSent += uint64(len(p))
	}
	if err := c.PinTable(k); err != nil {
		t.Fatal(err)
	}
	table, err := Cat(k, PinPath)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(table, "\n"), "\n")
	if len(lines) != len(want)+2 || lines[0] != "packets      bytes  source" {
		t.Fatalf("table:\n%s", table)
	}
	for _, l := range lines[1 : len(lines)-1] {
		var src string
		var got counts
		if _, err := fmt.Sscanf(l, "%d %d %s", &got.packets, &got.bytes, &src); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		if got != want[src] {
			t.Errorf("%s: %+v, want %+v", src, got, want[src])
		}
		delete(want, src)
	}
	if len(want) != 0 {
		t.Errorf("sources missing from the table: %v", want)
	}
	if total := fmt.Sprintf("%d sources, %d packets, %d bytes", len(lines)-2, len(pkts), bytesSent); lines[len(lines)-1] != total {
		t.Errorf("total %q, want %q", lines[len(lines)-1], total)
	}
	again, err := Cat(k, PinPath)
	if err != nil || again != table {
		t.Errorf("a second read: %v\n%s", err, again)
	}
}

func TestListMapsNamesTheTable(t *testing.T) {
	k, c := loadCounter(t)
	list, err := c.ListMaps(k)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(list, "talkers          type  1  key  4  value  16  max_entries 1024\n") {
		t.Errorf("list_maps:\n%s", list)
	}
}

func TestRunPrintsTheTableAndTheMaps(t *testing.T) {
	var out bytes.Buffer
	if err := run(&out, 500, 1); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"$ cat /sys/fs/bpf/topflows", "500 packets", "The kernel's maps"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("output lacks %q:\n%s", s, out.String())
		}
	}
}
