package verifier

import (
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/bpfsim/bpfsim/sim/insn"
)

// logBuf is the verifier log (struct bpf_verifier_log). Messages go to it
// only when the log level asks for them, but the error of a failed
// verification is always kept.
//
// An instruction's line is held back until the next output: if that is
// the state the instruction changed, it goes on the same line after a
// "; ", aligned as the kernel aligns it.
type logBuf struct {
	level   int
	b       strings.Builder
	pending string // an instruction line not yet ended
}

func (l *logBuf) flush() {
	if l.pending != "" {
		l.b.WriteString(l.pending)
		l.b.WriteByte('\n')
		l.pending = ""
	}
}

func (l *logBuf) printf(format string, args ...any) {
	if l.level == 0 {
		return
	}
	l.flush()
	fmt.Fprintf(&l.b, format, args...)
	l.b.WriteByte('\n')
}

func (l *logBuf) always(msg string) {
	l.flush()
	l.b.WriteString(msg)
	l.b.WriteByte('\n')
}

// sourceLine is the BTF line info the loader found (cilium/ebpf's
// *btf.Line).
type sourceLine interface {
	FileName() string
	Line() string
	LineNumber() uint32
}

// verboseLinfo is verbose_linfo: before an instruction, the source line
// it belongs to, when the log has not just shown it: "; <line> @
// <file>:<number>", the line's leading blanks and the file's directories
// left out.
func (e *env) verboseLinfo(idx int) {
	lines := e.cfg.Lines
	i := sort.Search(len(lines), func(i int) bool { return lines[i].Insn > idx }) - 1
	if i < 0 {
		return
	}
	sl, ok := lines[i].Line.(sourceLine)
	if !ok {
		return
	}
	if i+1 == e.prevLine {
		return
	}
	// Records of one line (columns apart) print once: the kernel skips
	// a record whose file and line are the last printed's.
	if e.prevLine > 0 {
		if p, ok := lines[e.prevLine-1].Line.(sourceLine); ok && p.LineNumber() == sl.LineNumber() && p.FileName() == sl.FileName() {
			return
		}
	}
	e.prevLine = i + 1
	e.log.printf("; %s @ %s:%d", strings.TrimLeft(sl.Line(), " \t"), path.Base(sl.FileName()), sl.LineNumber())
}

// insnLine holds an instruction's line back (see logBuf).
func (l *logBuf) insnLine(s string) {
	if l.level == 0 {
		return
	}
	l.flush()
	l.pending = s
}

// stateLine prints the state an instruction left: after its line when it
// is still pending (vlog_alignment), else on a line of its own.
func (l *logBuf) stateLine(idx int, state string) {
	if l.level == 0 {
		return
	}
	if l.pending == "" {
		fmt.Fprintf(&l.b, "%d:%s\n", idx, state)
		return
	}
	n := len(l.pending) + 1
	width := (max(n+4, 40)+7)/8*8 - n - 1
	l.b.WriteString(l.pending)
	l.b.WriteString(strings.Repeat(" ", width))
	l.b.WriteString(";")
	l.b.WriteString(state)
	l.b.WriteByte('\n')
	l.pending = ""
}

// pos is where the log ends, counting a held-back instruction line as
// written (the kernel writes it at once).
func (l *logBuf) pos() int {
	if l.pending != "" {
		return l.b.Len() + len(l.pending) + 1
	}
	return l.b.Len()
}

// reset truncates the log to pos, as the kernel does when it drops a
// finished path at log level 1.
func (l *logBuf) reset(pos int) {
	l.flush()
	if l.level >= 2 || pos >= l.b.Len() {
		return
	}
	s := l.b.String()[:pos]
	l.b.Reset()
	l.b.WriteString(s)
}

func (l *logBuf) String() string {
	l.flush()
	return l.b.String()
}

// Scratch marks: which registers and stack slots the current instruction
// touched, so that the log shows only those after it (as the kernel's
// mark_reg_scratched does).

func (e *env) scratchReg(r uint8) {
	if r < 16 {
		e.scratchedRegs |= 1 << r
	}
}

func (e *env) scratchSlot(spi int) { e.scratchedStack |= 1 << uint(spi&63) }

func (e *env) scratchAll() { e.scratchedRegs, e.scratchedStack = ^uint16(0), ^uint64(0) }

// printInsnState is print_insn_state for what the last instruction
// scratched.
func (e *env) printInsnState(idx int) {
	if e.log.level == 0 || (e.scratchedRegs == 0 && e.scratchedStack == 0) {
		return
	}
	f := e.cur.cur()
	e.log.stateLine(idx, e.cur.frameLine(f, f.formatMasked(e, e.scratchedRegs, e.scratchedStack)))
	e.scratchedRegs, e.scratchedStack = 0, 0
}

// printSubprogs prints the functions add_subprog_and_kfunc found, at log
// level 2: the log's first lines, before any check of the instructions.
func (e *env) printSubprogs() {
	if e.log.level < 2 {
		return
	}
	for i, s := range e.subprogs {
		e.log.printf("func#%d @%d", i, s.Start)
	}
}

// printLiveness prints the "Live regs before insn" table of log level 2
// (compute_live_registers, Linux 6.15).
func (e *env) printLiveness() {
	if e.log.level < 2 {
		return
	}
	e.log.printf("Live regs before insn:")
	for i := 0; i < len(e.insns); i++ {
		var regs [10]byte
		for r := range regs {
			regs[r] = '.'
			if e.live[i]&(1<<r) != 0 {
				regs[r] = byte('0' + r)
			}
		}
		// The loop the instruction lies on, if any, then its index.
		scc := "    "
		if e.scc[i] != 0 {
			scc = fmt.Sprintf("%3d ", e.scc[i])
		}
		e.log.printf("%s%3d: %s %s", scc, i, regs[:], insn.Format(e.insns, i, e.logSymbols()))
		if e.insns[i].IsLdImm64() {
			i++
		}
	}
}
