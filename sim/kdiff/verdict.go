package kdiff

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"syscall"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/insn"
)

// The verdict corpus. Where the rest of kdiff generates programs the
// kernel accepts and compares what they compute, the verdict corpus
// compares what the verifiers decide: GenerateVerdict builds programs that
// are valid, and programs broken on purpose in one of many ways (classes
// below), each embedded in randomly generated valid code so that no two
// look alike. The kernel's verdict on every program is recorded once in a
// golden file (testdata/verdicts.txt); a test then loads every program on
// bpfsim and compares, on any machine.
//
// Class names are "family/variant". Programs meant to be accepted are in
// family "valid"; many are near misses of an invalid variant (the null
// check done right, the bounds check that proves enough), so that a
// verifier rejecting everything near a pattern loses agreement. Variants
// named "valid/root_*" are programs an unprivileged loader may not load
// but root may (pointer leaks, uninitialised stack reads): the corpus is
// loaded as root. The label is the intent; the kernel's verdict is the
// truth, and both are recorded.

// VerdictProgram is one program of the verdict corpus.
type VerdictProgram struct {
	Seed uint64
	// Class is what the program was built to be: "valid/..." or an
	// invalid class such as "null_check/missing".
	Class string
	Spec  *ebpf.ProgramSpec
	// Maps are the maps the instructions refer to by name; each loader
	// creates them.
	Maps []*ebpf.MapSpec
	// Patch rewrites the encoded program (map fds in place) before it is
	// loaded: for encodings cilium/ebpf's asm cannot express.
	Patch func([]insn.Insn) []insn.Insn
}

// Family is the part of the class before the slash.
func (vp *VerdictProgram) Family() string {
	f, _, _ := strings.Cut(vp.Class, "/")
	return f
}

// IntendedValid reports whether the program was built to be accepted.
func (vp *VerdictProgram) IntendedValid() bool { return vp.Family() == "valid" }

// Verdict is what loading a program gave.
type Verdict struct {
	Accepted bool
	// Errno is the errno of a rejection; 0 when the loader's error had
	// none.
	Errno syscall.Errno
	// Message is the verifier log's last meaningful line (the kernel) or
	// the error's last line (bpfsim).
	Message string
	// MapFailed: the program never reached the loader because a map could
	// not be created or the program not be encoded.
	MapFailed bool
	// LogErrno is the errno of the kernel's second load, the one with a
	// log; ENOSPC when the log did not fit its buffer.
	LogErrno syscall.Errno
}

// String is "accepted" or the errno's name.
func (v Verdict) String() string {
	switch {
	case v.Accepted:
		return "accepted"
	case v.Errno == 0:
		return "rejected"
	}
	return errnoName(int(v.Errno))
}

// ParseVerdictErrno is the inverse of Verdict.String for the verdict
// column of the golden file.
func ParseVerdictErrno(s string) (Verdict, error) {
	switch s {
	case "accepted":
		return Verdict{Accepted: true}, nil
	case "rejected":
		return Verdict{}, nil
	}
	for n := 1; n < 600; n++ {
		if errnoName(n) == s {
			return Verdict{Errno: syscall.Errno(n)}, nil
		}
	}
	if n, err := strconv.Atoi(strings.TrimPrefix(s, "errno ")); err == nil {
		return Verdict{Errno: syscall.Errno(n)}, nil
	}
	return Verdict{}, fmt.Errorf("unknown verdict %q", s)
}

// VerifierMessage returns the error message of a verifier log: its last
// non-empty line that is not one of the lines printed after the error
// (statistics, and the two states of an infinite loop).
func VerifierMessage(log string) string {
	lines := strings.Split(log, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		switch {
		case l == "", strings.HasPrefix(l, "processed "), strings.HasPrefix(l, "verification time"),
			strings.HasPrefix(l, "stack depth"), strings.HasPrefix(l, "cur state:"), strings.HasPrefix(l, "old state:"):
			continue
		}
		return l
	}
	return ""
}

// errnoOf is the errno an error wraps, or 0.
func errnoOf(err error) syscall.Errno {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return 0
}

// Verdict loads vp on bpfsim (sim.Kernel.NewProgram, or LoadInsns for a
// patched program) and returns its verdict. The program never runs.
func (s *Sim) Verdict(vp *VerdictProgram) Verdict {
	var handles []*sim.Map
	defer func() {
		for _, h := range handles {
			h.Close()
		}
	}()
	for _, ms := range vp.Maps {
		h, err := s.K.NewMap(ms)
		if err != nil {
			return Verdict{Errno: errnoOf(err), Message: "creating map " + ms.Name + ": " + err.Error(), MapFailed: true}
		}
		handles = append(handles, h)
	}
	spec := vp.Spec.Copy()
	for i, h := range handles {
		if err := associate(spec.Instructions, vp.Maps[i].Name, h); err != nil {
			return Verdict{Errno: errnoOf(err), Message: err.Error(), MapFailed: true}
		}
	}
	var prog *sim.Program
	var err error
	if vp.Patch == nil {
		prog, err = s.K.NewProgram(spec)
	} else {
		var raw []insn.Insn
		if raw, err = insn.FromAsm(spec.Instructions); err != nil {
			return Verdict{Errno: errnoOf(err), Message: "encoding: " + err.Error(), MapFailed: true}
		}
		prog, err = s.K.LoadInsns(spec.Type, spec.Name, vp.Patch(raw))
	}
	if err != nil {
		msg := strings.TrimSpace(err.Error())
		if i := strings.LastIndex(msg, "\n"); i >= 0 {
			msg = msg[i+1:]
		}
		return Verdict{Errno: errnoOf(err), Message: msg}
	}
	prog.Close()
	return Verdict{Accepted: true}
}

// fakeFD stands for a map when a program is encoded for its fingerprint.
type fakeFD int

func (f fakeFD) FD() int { return int(f) }

// Fingerprint identifies the program: a hash of its encoding (maps as
// their index), its maps and its type. The golden file records it, so a
// change of the generator shows as a stale golden file rather than as
// verdicts compared across different programs.
func (vp *VerdictProgram) Fingerprint() string {
	spec := vp.Spec.Copy()
	h := sha256.New()
	for i, m := range vp.Maps {
		fmt.Fprintf(h, "map %s %v %d %d %d %#x\n", m.Name, m.Type, m.KeySize, m.ValueSize, m.MaxEntries, m.Flags)
		if err := associate(spec.Instructions, m.Name, fakeFD(1000+i)); err != nil {
			fmt.Fprintf(h, "associate: %v\n", err)
		}
	}
	fmt.Fprintf(h, "type %v\n", spec.Type)
	raw, err := insn.FromAsm(spec.Instructions)
	if err != nil {
		fmt.Fprintf(h, "encode: %v\n", err)
	} else {
		if vp.Patch != nil {
			raw = vp.Patch(raw)
		}
		h.Write(insn.Encode(raw))
	}
	return hex.EncodeToString(h.Sum(nil))[:12]
}

// VerdictRecord is one line of the golden file: a program and the
// kernel's verdict on it.
type VerdictRecord struct {
	Seed        uint64
	Class       string
	Fingerprint string
	Kernel      Verdict
}

// WriteVerdictRecords writes the golden file: a header of comment lines,
// then one tab-separated line per program (seed, class, verdict,
// fingerprint, message).
func WriteVerdictRecords(w io.Writer, header []string, recs []VerdictRecord) error {
	bw := bufio.NewWriter(w)
	for _, h := range header {
		fmt.Fprintf(bw, "# %s\n", h)
	}
	fmt.Fprintf(bw, "# seed\tclass\tkernel\tfingerprint\tmessage\n")
	for _, r := range recs {
		msg := strings.ReplaceAll(r.Kernel.Message, "\t", " ")
		fmt.Fprintf(bw, "%d\t%s\t%s\t%s\t%s\n", r.Seed, r.Class, r.Kernel, r.Fingerprint, msg)
	}
	return bw.Flush()
}

// ReadVerdictRecords parses a golden file.
func ReadVerdictRecords(r io.Reader) ([]VerdictRecord, error) {
	var recs []VerdictRecord
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for line := 1; sc.Scan(); line++ {
		t := sc.Text()
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		f := strings.SplitN(t, "\t", 5)
		if len(f) != 5 {
			return nil, fmt.Errorf("line %d: %d fields, want 5", line, len(f))
		}
		seed, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("line %d: %v", line, err)
		}
		v, err := ParseVerdictErrno(f[2])
		if err != nil {
			return nil, fmt.Errorf("line %d: %v", line, err)
		}
		v.Message = f[4]
		recs = append(recs, VerdictRecord{Seed: seed, Class: f[1], Kernel: v, Fingerprint: f[3]})
	}
	return recs, sc.Err()
}

// labelled returns a jump-target instruction: asm has no label of its
// own, so a symbol goes on a harmless instruction.

// LastLogLine is the last line of a kernel verifier log in a load error
// (the reason for a refusal), or "" when the error carries no log.
func LastLogLine(err error) string {
	var ve *ebpf.VerifierError
	if !errors.As(err, &ve) || len(ve.Log) == 0 {
		return ""
	}
	for i := len(ve.Log) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(ve.Log[i]); l != "" && !strings.HasPrefix(l, "processed ") {
			return l
		}
	}
	return ""
}
