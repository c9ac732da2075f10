//go:build linux

package kdiff

import (
	"runtime"
	"syscall"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/bpfsim/bpfsim/sim/insn"
)

// Verdict loads vp in the running kernel and returns its verdict:
// accepted, or the errno with the last meaningful line of the verifier log.
// The program never runs.
//
// Programs that cilium/ebpf can encode load through
// ebpf.NewProgramWithOptions, as every other kdiff test loads them. A
// program with a Patch holds encodings cilium/ebpf refuses or rewrites
// (an ALU instruction's offset, a broken lddw), so it loads through a raw
// BPF_PROG_LOAD of the patched bytes.
//
// A rejected program is loaded a second time, raw, with a log. Level 1
// (BPF_LOG_LEVEL1) prints the failing path and the error; a program that
// ran the verifier to its instruction limit makes that a trace of a
// million instructions, which costs the kernel seconds to print, so when
// the first load took long the second uses BPF_LOG_STATS alone, which
// prints the error (every verbose() line) without the trace. The errno of
// the verdict is the first load's: the second one's is ENOSPC when the log
// did not fit the buffer.
func (k *Kernel) Verdict(vp *VerdictProgram) Verdict {
	var ms []*ebpf.Map
	defer func() {
		for _, m := range ms {
			m.Close()
		}
	}()
	for _, spec := range vp.Maps {
		m, err := ebpf.NewMap(spec)
		if err != nil {
			return Verdict{Errno: errnoOf(err), Message: "creating map " + spec.Name + ": " + err.Error(), MapFailed: true}
		}
		ms = append(ms, m)
	}
	spec := vp.Spec.Copy()
	for i, m := range ms {
		if err := associate(spec.Instructions, vp.Maps[i].Name, m); err != nil {
			return Verdict{Errno: errnoOf(err), Message: err.Error(), MapFailed: true}
		}
	}
	raw, err := insn.FromAsm(spec.Instructions)
	if err != nil {
		return Verdict{Errno: errnoOf(err), Message: "encoding: " + err.Error(), MapFailed: true}
	}
	if vp.Patch != nil {
		raw = vp.Patch(raw)
	}
	code := insn.Encode(raw)

	start := time.Now()
	var errno syscall.Errno
	if vp.Patch == nil {
		prog, err := ebpf.NewProgramWithOptions(spec, ebpf.ProgramOptions{LogDisabled: true})
		if err == nil {
			prog.Close()
			return Verdict{Accepted: true}
		}
		// Zero when cilium/ebpf refused the program itself: then the
		// kernel is asked directly.
		errno = errnoOf(err)
	}
	if errno == 0 {
		fd, e := progLoad(spec.Type, code, 0, nil)
		if e == 0 {
			unix.Close(fd)
			return Verdict{Accepted: true}
		}
		errno = e
	}
	level := uint32(logLevel1)
	if time.Since(start) > slowVerification {
		level = logStats
	}
	buf := make([]byte, verdictLogSize)
	fd, logErrno := progLoad(spec.Type, code, level, buf)
	if logErrno == 0 {
		// Accepted the second time: say so rather than pick a verdict.
		unix.Close(fd)
		return Verdict{Errno: errno, Message: "(the kernel accepted the program when loaded again with a log)"}
	}
	return Verdict{Errno: errno, Message: VerifierMessage(unix.ByteSliceToString(buf)), LogErrno: logErrno}
}

// Log levels of BPF_PROG_LOAD (include/linux/bpf_verifier.h).
const (
	logLevel1 = 1 // BPF_LOG_LEVEL1: the instructions of the failing path
	logStats  = 4 // BPF_LOG_STATS: messages and statistics only
)

// slowVerification is how long a first load may take before the second
// one drops the instruction trace.
const slowVerification = 20 * time.Millisecond

// verdictLogSize is the log buffer of the second load: plenty for the
// failing path of a generated program; the kernel's log rotates, so a
// longer one keeps its end, the line wanted.
const verdictLogSize = 1 << 20

// progLoadAttr is the BPF_PROG_LOAD part of union bpf_attr, up to
// log_true_size; the kernel accepts a shorter attr than its own.
type progLoadAttr struct {
	progType           uint32
	insnCnt            uint32
	insns              uint64
	license            uint64
	logLevel           uint32
	logSize            uint32
	logBuf             uint64
	kernVersion        uint32
	progFlags          uint32
	progName           [16]byte
	progIfindex        uint32
	expectedAttachType uint32
	progBTFFd          uint32
	funcInfoRecSize    uint32
	funcInfo           uint64
	funcInfoCnt        uint32
	lineInfoRecSize    uint32
	lineInfo           uint64
	lineInfoCnt        uint32
	attachBTFID        uint32
	attachProgFd       uint32
	coreReloCnt        uint32
	fdArray            uint64
	coreRelos          uint64
	coreReloRecSize    uint32
	logTrueSize        uint32
}

const bpfProgLoad = 5 // BPF_PROG_LOAD

// progLoad is a raw BPF_PROG_LOAD of code as a program of type typ; it
// returns the program's fd or the errno. With a log level, the verifier
// log goes to logBuf.
func progLoad(typ ebpf.ProgramType, code []byte, logLevel uint32, logBuf []byte) (int, syscall.Errno) {
	license := []byte("GPL\x00")
	attr := progLoadAttr{
		progType: uint32(typ),
		insnCnt:  uint32(len(code) / insn.Size),
		license:  uint64(uintptr(unsafe.Pointer(&license[0]))),
	}
	copy(attr.progName[:], "kdiff_verdict")
	if len(code) > 0 {
		attr.insns = uint64(uintptr(unsafe.Pointer(&code[0])))
	}
	if logLevel != 0 && len(logBuf) > 0 {
		attr.logLevel = logLevel
		attr.logSize = uint32(len(logBuf))
		attr.logBuf = uint64(uintptr(unsafe.Pointer(&logBuf[0])))
	}
	for {
		fd, _, errno := unix.Syscall(unix.SYS_BPF, bpfProgLoad, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
		runtime.KeepAlive(code)
		runtime.KeepAlive(license)
		runtime.KeepAlive(logBuf)
		// A signal during verification makes the kernel give up with
		// EAGAIN; cilium/ebpf retries too.
		if errno == unix.EAGAIN || errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return -1, errno
		}
		return int(fd), 0
	}
}
