//go:build linux

package kdiff

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/arraymap"
	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Comparing the verifier's rewrites with this machine's kernel: the same
// program loaded in both must come out as the same instructions. What may
// differ is only what depends on the kernel's build: map addresses,
// offsetof(struct bpf_array, value) and the addresses of kernel functions,
// so calls are compared by the name of the function they reach.

// KernelXlated returns the instructions the kernel runs for p, after its
// verifier's rewrites, exactly as the kernel holds them.
func KernelXlated(p *ebpf.Program) ([]insn.Insn, error) { return xlated(p) }

// SameXlated compares the kernel's xlated code with bpfsim's, instruction
// by instruction, and returns the kernel's offsetof(struct bpf_array,
// value) if an inlined array lookup showed it. The error names the first
// difference and lists both programs; it wraps ErrNoKernelSymbols when
// the kernel hides the functions calls reach.
func SameXlated(k *sim.Kernel, kernel, simulated []insn.Insn) (valueOffset int32, err error) {
	differ := func(i int, why string) error {
		return errors.Errorf("insn %d: %s\nkernel:\n%s\nbpfsim:\n%s", i, why, insn.Dump(kernel, nil), insn.Dump(simulated, nil))
	}
	if len(kernel) != len(simulated) {
		return 0, differ(min(len(kernel), len(simulated)), fmt.Sprintf("the kernel has %d instructions, bpfsim %d", len(kernel), len(simulated)))
	}
	for i := 0; i < len(kernel); i++ {
		kin, sin := kernel[i], simulated[i]
		switch {
		case kin.IsLdImm64() && kin.Src == insn.PseudoFunc:
			// A callback's address: its offset and function index.
			if kin != sin || i+1 >= len(kernel) || kernel[i+1] != simulated[i+1] {
				return 0, differ(i, "the callback's lddw differs")
			}
			i++
		case kin.IsLdImm64():
			// The kernel shows a map by id, bpfsim holds its address.
			if kin.Code != sin.Code || kin.Dst != sin.Dst {
				return 0, differ(i, "lddw differs")
			}
			i++
		case kin.Code == insn.JMP|insn.CALL && kin.Src == 0:
			kname, err := kernelCallName(kin.Imm)
			if err != nil {
				return 0, err
			}
			sname := simCallName(k, sin.Imm)
			if sname == "" && jitInlined[sin.Imm] && sin.Code == kin.Code && sin.Src == 0 && kname == uapi.HelperName(sin.Imm) {
				// bpfsim's arm64 JIT inlines the call, so its
				// verifier leaves the helper's id where this
				// machine's kernel calls the helper.
				continue
			}
			if sin.Code != kin.Code || sin.Src != 0 || sname != kname {
				return 0, differ(i, fmt.Sprintf("the kernel calls %s, bpfsim %q", kname, sname))
			}
		case kin.Code == insn.JMP|insn.CALL && kin.Src == insn.PseudoKfuncCall:
			// A kfunc call: its imm is the function's address, both
			// named from the symbols.
			kname, err := kernelCallName(kin.Imm)
			if err != nil {
				return 0, err
			}
			if sname := simCallName(k, sin.Imm); sin.Code != kin.Code || sin.Src != kin.Src || sname != kname {
				return 0, differ(i, fmt.Sprintf("the kernel calls kfunc %s, bpfsim %q", kname, sname))
			}
		case sin.Code == insn.ALU64|insn.ADD|insn.K && sin.Dst == insn.R1 && sin.Imm == arraymap.ValueOffset:
			if kin.Code != sin.Code || kin.Dst != sin.Dst {
				return 0, differ(i, "the array's value offset is not added the same way")
			}
			valueOffset = kin.Imm
		case kin != sin:
			return 0, differ(i, fmt.Sprintf("kernel %s, bpfsim %s", insn.Format(kernel, i, nil), insn.Format(simulated, i, nil)))
		}
	}
	return valueOffset, nil
}

// jitInlined are the helpers arm64's JIT emits itself
// (bpf_jit_inlines_helper_call) and an x86-64 kernel of 6.18 calls.
var jitInlined = map[int32]bool{35: true, 158: true} // bpf_get_current_task, _btf

// allKallsyms names every kernel function by address, with
// __bpf_call_base, which call immediates count from.
var allKallsyms struct {
	once  sync.Once
	base  uint64
	names map[uint64]string
	err   error
}

// kernelCallName names the kernel function a call's imm reaches ("" for
// none); the error wraps ErrNoKernelSymbols when /proc/kallsyms shows no
// addresses to this process (kernel.kptr_restrict).
func kernelCallName(imm int32) (string, error) {
	allKallsyms.once.Do(readKallsyms)
	if allKallsyms.err != nil {
		return "", errors.Wrap(ErrNoKernelSymbols, allKallsyms.err.Error())
	}
	if allKallsyms.base == 0 {
		return "", ErrNoKernelSymbols
	}
	return allKallsyms.names[allKallsyms.base+uint64(int64(imm))], nil
}

// readKallsyms reads the kernel's own functions (not modules') from
// /proc/kallsyms.
func readKallsyms() {
	f, err := os.Open("/proc/kallsyms")
	if err != nil {
		allKallsyms.err = err
		return
	}
	defer f.Close()
	allKallsyms.names = map[uint64]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 3 { // module symbols have a fourth field
			continue
		}
		addr, err := strconv.ParseUint(fields[0], 16, 64)
		if err != nil || addr == 0 {
			continue
		}
		if fields[2] == "__bpf_call_base" {
			allKallsyms.base = addr
		}
		allKallsyms.names[addr] = fields[2]
	}
	allKallsyms.err = sc.Err()
}

// simCallName names the function a bpfsim call reaches.
func simCallName(k *sim.Kernel, imm int32) string {
	base, _ := k.KernelSymbol("__bpf_call_base")
	for _, s := range k.KernelSymbols() {
		if s.Addr == base.Addr+uint64(int64(imm)) {
			return s.Name
		}
	}
	return ""
}
