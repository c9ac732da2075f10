package sim_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// Kfunc calls whose offset or id names no kfunc are refused by this
// machine's kernel and by bpfsim alike: errno and whole log.
func TestKfuncCallOffsetsAreTheKernels(t *testing.T) {
	needKernel(t)
	kernelBTF, err := btf.LoadKernelSpec()
	if err != nil {
		t.Skipf("no kernel BTF: %v", err)
	}
	var fn *btf.Func
	if err := kernelBTF.TypeByName("bpf_iter_num_destroy", &fn); err != nil {
		t.Skipf("this kernel has no bpf_iter_num_destroy: %v", err)
	}
	kernelID, err := kernelBTF.TypeID(fn)
	if err != nil {
		t.Fatal(err)
	}
	k, err := sim.NewKernel(nil)
	if err != nil {
		t.Fatal(err)
	}
	simID, ok := k.KfuncID("bpf_iter_num_destroy")
	if !ok {
		t.Fatal("no bpf_iter_num_destroy")
	}
	// A kernel with no kfunc registered yet still has BTF: an id that
	// is no function is refused as such, as the kernel refuses it.
	fresh, err := sim.NewKernel(nil)
	if err != nil {
		t.Fatal(err)
	}
	_, kerr := ebpf.NewProgram(kfuncCallAt(1, 0))
	_, serr := fresh.NewProgram(kfuncCallAt(1, 0))
	if !errors.Is(kerr, unix.EINVAL) || !errors.Is(serr, unix.EINVAL) || !strings.Contains(serr.Error(), "kernel btf_id 1 is not a function") {
		t.Errorf("id 1 on a kernel without kfuncs: kernel %v, bpfsim %v", kerr, serr)
	}
	for _, tc := range KfuncCallOffsetRefusals {
		t.Run(tc.Name, func(t *testing.T) {
			kimm, simm := int32(kernelID), int32(simID)
			if tc.Imm != 0 {
				kimm, simm = tc.Imm, tc.Imm
			}
			kp, kerr := ebpf.NewProgramWithOptions(kfuncCallAt(kimm, tc.Off), ebpf.ProgramOptions{LogLevel: ebpf.LogLevelBranch})
			if kerr == nil {
				kp.Close()
				t.Fatal("the kernel loaded it")
			}
			sp, serr := k.NewProgramWithOptions(kfuncCallAt(simm, tc.Off), sim.ProgramOptions{LogLevel: ebpf.LogLevelBranch})
			if serr == nil {
				sp.Close()
				t.Fatal("bpfsim loaded it")
			}
			if !errors.Is(kerr, tc.Errno) || !errors.Is(serr, tc.Errno) {
				t.Errorf("errnos: kernel %v, bpfsim %v; want %v", kerr, serr, tc.Errno)
			}
			var ve *ebpf.VerifierError
			if !errors.As(kerr, &ve) {
				t.Fatalf("no kernel log: %v", kerr)
			}
			var sv *verifier.Error
			if !errors.As(serr, &sv) {
				t.Fatalf("no bpfsim log: %v", serr)
			}
			// The whole logs: the refusal comes before any instruction
			// is checked.
			klog, slog := strings.Join(ve.Log, "\n"), strings.TrimSpace(sv.Log)
			if !strings.Contains(klog, tc.Msg) || klog != slog {
				t.Errorf("the kernel said\n%s\nbpfsim said\n%s", klog, slog)
			}
		})
	}
}

// A BTF object looks the same in this machine's kernel and in bpfsim:
// vmlinux's is id 1, named, the kernel's; BTF from user space is
// nameless, not the kernel's, of its raw size; BTF the kernel refuses,
// bpfsim refuses with the same errno.
func TestBTFObjectsAreTheKernels(t *testing.T) {
	needKernel(t)
	k, err := sim.NewKernel(nil)
	if err != nil {
		t.Fatal(err)
	}
	kvm, err := btf.NewHandleFromID(1)
	if err != nil {
		t.Skipf("cannot open this kernel's BTF id 1: %v", err)
	}
	defer kvm.Close()
	ki, err := kvm.Info()
	if err != nil {
		t.Fatal(err)
	}
	svm, err := k.NewBTFHandleFromID(1)
	if err != nil {
		t.Fatal(err)
	}
	si, err := svm.Info()
	if err != nil {
		t.Fatal(err)
	}
	if ki.Name != si.Name || ki.IsKernel != si.IsKernel || ki.IsVmlinux() != si.IsVmlinux() {
		t.Errorf("id 1: kernel %+v, bpfsim %+v", ki, si)
	}
	raw := userBTF(t)
	kh, err := btf.NewHandleFromRawBTF(raw)
	if err != nil {
		t.Fatal(err)
	}
	defer kh.Close()
	sh, err := k.NewBTFHandle(raw)
	if err != nil {
		t.Fatal(err)
	}
	defer sh.Close()
	ki, err = kh.Info()
	if err != nil {
		t.Fatal(err)
	}
	si, err = sh.Info()
	if err != nil {
		t.Fatal(err)
	}
	if ki.Name != si.Name || ki.IsKernel != si.IsKernel || ki.IsModule() != si.IsModule() || si.Size != uint32(len(raw)) {
		t.Errorf("user BTF: kernel %+v, bpfsim %+v (%d bytes)", ki, si, len(raw))
	}
	bad := userBTF(t)
	bad[bytes.Index(bad, []byte("counter"))+6] = '-'
	_, kerr := btf.NewHandleFromRawBTF(bad)
	_, serr := k.NewBTFHandle(bad)
	var errno unix.Errno
	if kerr == nil || !errors.As(kerr, &errno) || !errors.Is(serr, errno) {
		t.Errorf("BTF with an invalid name: kernel %v, bpfsim %v", kerr, serr)
	}
}
