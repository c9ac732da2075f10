package sim_test

import (
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/kdiff"
)

// bpf_fib_lookup from XDP and tc programs, in a network namespace of this
// machine's kernel set up with iproute2 and in bpfsim set up alike: the
// same results and the same parameters back (devices, metrics, gateways,
// source addresses, MTUs, MAC addresses).
func TestFibLookupIsTheKernels(t *testing.T) {
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("kernel-differential test skipped: iproute2's ip is not installed")
	}
	k := fibSimHost(t)
	cases, names := fibCases()
	done := make(chan struct{})
	go func() {
		defer close(done)
		// The thread joins a namespace of its own and is never given
		// back: it ends with this goroutine, and the namespace with it.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			t.Errorf("unshare: %v", err)
			return
		}
		for _, c := range fibHostScript {
			if out, err := exec.Command("ip", strings.Fields(c)...).CombinedOutput(); err != nil {
				t.Errorf("ip %s: %v: %s", c, err, out)
				return
			}
		}
		for _, f := range []string{"/proc/sys/net/ipv4/conf/d1/forwarding", "/proc/sys/net/ipv6/conf/d1/forwarding"} {
			if err := os.WriteFile(f, []byte("1"), 0); err != nil {
				t.Errorf("%s: %v", f, err)
				return
			}
		}
		compared := 0
		for _, typ := range []ebpf.ProgramType{ebpf.XDP, ebpf.SchedCLS} {
			base := int16(0)
			if typ != ebpf.XDP {
				base = 14 // after an Ethernet header of a non-IP frame
			}
			for _, plen := range []int32{64, 60} {
				spec := &ebpf.ProgramSpec{Type: typ, License: "GPL", Instructions: fibProgramFor(typ, base, plen)}
				kp, err := ebpf.NewProgram(spec)
				if err != nil {
					t.Errorf("kernel: %v", err)
					return
				}
				sp, err := k.NewProgram(spec)
				if err != nil {
					kp.Close()
					t.Errorf("bpfsim: %v", err)
					return
				}
				for i, c := range cases {
					pkt := append(make([]byte, base), c...)
					kOut, sOut := make([]byte, len(pkt)), make([]byte, len(pkt))
					kr, kErr := kp.Run(&ebpf.RunOptions{Data: pkt, DataOut: kOut})
					sr, sErr := sp.Run(&sim.RunOptions{Data: pkt, DataOut: sOut})
					if kErr != nil || sErr != nil {
						t.Errorf("%s plen %d, %s: kernel %v, bpfsim %v", typ, plen, names[i], kErr, sErr)
						continue
					}
					if kr != sr || string(kOut) != string(sOut) {
						t.Errorf("%s plen %d, %s: kernel %d %x\nbpfsim %d %x", typ, plen, names[i], int32(kr), kOut[base:], int32(sr), sOut[base:])
					}
					compared++
				}
				kp.Close()
				sp.Close()
			}
		}
		t.Logf("%d lookups compared", compared)
	}()
	<-done
}
