package main

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/splitbtf"
)

// The walk-through relocates the module's distilled types to the
// simulated kernel's own, accounts every packet in the module through its
// kfunc, keeps the module loaded while the program lives, and refuses a
// module the kernel cannot relocate.
func TestWalkThroughRelocatesCallsAndUnloads(t *testing.T) {
	var out strings.Builder
	if err := run(&out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	s := out.String()
	k, err := sim.NewKernel(nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := k.RawKernelBTF()
	if err != nil {
		t.Fatal(err)
	}
	kernel, err := splitbtf.Parse(raw, nil)
	if err != nil {
		t.Fatal(err)
	}
	xdpMD, _ := findByName(kernel, splitbtf.KindStruct, "xdp_md")
	skb, _ := findByName(kernel, splitbtf.KindStruct, "__sk_buff")
	want := []string{
		"[3] STRUCT 'xdp_md' size=24 vlen=0",
		fmt.Sprintf("-> %3d here", xdpMD),
		fmt.Sprintf("-> %3d here", skb),
		fmt.Sprintf("from id 5 -> from id %d", kernel.TypeCount()),
		"proto 1: 98 bytes; proto 6: 1614 bytes; proto 17: 120 bytes;",
		"rmmod flowtab while the program lives: module flowtab is in use by 1 programs: resource temporarily unavailable",
		"after the program is freed: unloaded",
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err == nil {
		want = append(want, "6. a module embedding struct list_head: module flowtab: relocating its BTF: distilled base BTF type 'list_head' [3] is not mapped to base BTF id: invalid argument")
	} else {
		want = append(want, "6. (no second module to show")
	}
	for _, w := range want {
		if !strings.Contains(s, w) {
			t.Errorf("output lacks %q:\n%s", w, s)
		}
	}
}
