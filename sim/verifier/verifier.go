package verifier

import (
	"fmt"
	"slices"
	"sync"

	"github.com/cilium/ebpf/btf"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Limits of the kernel's verifier (include/linux/bpf.h, bpf_verifier.h).
const (
	// ComplexityLimit is BPF_COMPLEXITY_LIMIT_INSNS: instructions the
	// verifier may process, counting every path.
	ComplexityLimit = 1_000_000
	// jmpSeqLimit is BPF_COMPLEXITY_LIMIT_JMP_SEQ: paths waiting to be
	// explored.
	jmpSeqLimit = 8192
	// maxVarOff is BPF_MAX_VAR_OFF, maxVarSize BPF_MAX_VAR_SIZ.
	maxVarOff  = 1 << 29
	maxVarSize = 1 << 29
	// maxPacketOff is MAX_PACKET_OFF.
	maxPacketOff = 0xffff
)

// Config is what the verifier needs to know besides the instructions:
// the program type, the maps its lddw instructions load and the helpers
// the simulated kernel offers. The verifier models a privileged loader
// (CAP_BPF and CAP_PERFMON, as root): bounded loops, pointer comparisons
// and reads of uninitialised stack are allowed, Spectre mitigations are
// off.
type Config struct {
	Type ProgType
	// Sleepable marks a sleepable program (BPF_F_SLEEPABLE): outside an
	// RCU read section, pointers it reads out of kernel objects are
	// untrusted.
	Sleepable bool
	// TestStateFreq is BPF_F_TEST_STATE_FREQ: a checkpoint at every
	// prune point, as tests of state pruning want.
	TestStateFreq bool
	// Lines is the program's BTF line info, sorted by instruction: the
	// log shows each instruction's source line (verbose_linfo).
	Lines []LineInfo
	// Maps holds the map each map-loading lddw refers to, in instruction
	// order (after the loader resolved fds to maps). A slice, not a map
	// keyed by index: programs of thousands of map loads exist, and
	// building a hash table per load cost more than verifying them.
	Maps []MapRef
	// Helper returns a helper's prototype, or nil if the simulated kernel
	// has no helper with that id for this program type.
	Helper func(id int32) *FuncProto
	// LogLevel is the kernel's log_level: 0 (errors only), 1 (the path
	// that failed, with the instructions) or 2 (every instruction with
	// the full state).
	LogLevel int
	// Limit overrides ComplexityLimit when positive (tests use it).
	Limit int
	// GPLCompatible is set for programs whose license allows GPL-only
	// helpers.
	GPLCompatible bool
	// NumCPUs bounds what get_smp_processor_id returns.
	NumCPUs int
	// FuncInfo is set when the program came with BTF function info
	// (clang objects); without it, subprograms may not use LD_ABS.
	FuncInfo bool
	// FuncBTF returns the BTF func info of the function that starts at
	// instruction start (its name, linkage and prototype), nil for none.
	FuncBTF func(start int) *btf.Func
	// DisablePruning explores every path to its end. Only for testing
	// that pruning never changes a verdict.
	DisablePruning bool
	// Subprogs, when set, are what CheckStructure returned for these
	// instructions: the loader ran it already (the kernel checks
	// functions before it resolves maps).
	Subprogs []Subprog
	// SubprogsOwned lets the verifier write the functions' stack depths
	// into Subprogs rather than into a copy.
	SubprogsOwned bool
	// Kfunc returns the kfunc a BPF_PSEUDO_KFUNC_CALL's imm (a BTF id)
	// and off name, if this program may call it (kfunc.go): off 0 is the
	// kernel's BTF, another the module BTF at that index of the
	// program's fd_array (find_kfunc_desc_btf); nil: no kfuncs, as
	// without CONFIG_DEBUG_INFO_BTF.
	Kfunc func(btfID int32, off int16) (*KfuncProto, error)
}

// MapRef is one map an lddw loads: its address (Value unset) or the
// address Off bytes into its value (BPF_PSEUDO_MAP_VALUE).
type MapRef struct {
	// Insn is the index of the lddw's first half.
	Insn  int
	Map   *maps.Map
	Value bool
	Off   uint32
}

// InsnAux is what verification learned about one instruction (struct
// bpf_insn_aux_data): the fix-up passes use it.
type InsnAux struct {
	// Seen is set when the verifier reached the instruction on some path.
	Seen bool
	// TrueTaken and FalseTaken record, for a conditional jump, whether
	// the verifier ever followed the jump and the fall-through.
	TrueTaken, FalseTaken bool
	// MapPtr is the map of a map helper call; MapPoisoned is set when
	// different maps reach the same call (no map-specific fix-up then).
	MapPtr      *maps.Map
	MapPoisoned bool
	// MapKeyState and MapKey record the index a tail call site is
	// called with (bpf_map_key_store): unseen, one constant (MapKey),
	// or poisoned by several or unknown ones.
	MapKeyState uint8
	MapKey      uint64
	// CtxAccess marks loads and stores through the context pointer, for
	// the program type's context conversion; CtxFieldSize is the size of
	// the field a narrow load reads from.
	CtxAccess    bool
	CtxFieldSize int
	// ProbeMem marks a load from a kernel object (PTR_TO_BTF_ID), which
	// the fix-ups make a BPF_PROBE_MEM load: a fault reads zeros.
	ProbeMem bool
	// Kfunc is the kfunc a kfunc call calls, for its fix-up.
	Kfunc *KfuncProto
	// KfuncFacts is, for a call of an inlinable kfunc, what every path
	// knew of its arguments (inlinekfunc.go).
	KfuncFacts *KfuncFacts
	// KfuncVariant names the kfunc the fix-up calls instead
	// (specialize_kfunc): bpf_dynptr_from_skb_rdonly for the program
	// types that may not write packets.
	KfuncVariant string
	// Loop is, for a bpf_loop call, whether it can be inlined
	// (bpf_loop_inline_state).
	Loop LoopInline
}

// LoopInline is struct bpf_loop_inline_state: a bpf_loop call can be
// inlined when every visit saw flags 0 and the same callback.
type LoopInline struct {
	Initialized, Fit bool
	// Callback is the function it calls, an index in the subprograms.
	Callback int
}

// Result is a successful verification.
type Result struct {
	Aux      []InsnAux
	Subprogs []Subprog
	// Stats as the kernel's log reports them.
	InsnProcessed, TotalStates, PeakStates, MaxStatesPerInsn int
	Log                                                      string
	// MaxCtxOffset is the end of the furthest context access
	// (max_ctx_offset): a test run needs a context at least this long.
	MaxCtxOffset int
	// ReadsUninitStack says that some path reads stack never written,
	// which a privileged program may (allow_uninit_stack): the bytes it
	// reads are whatever the stack held, so its results may depend on the
	// runtime.
	ReadsUninitStack bool
	// SeenDirectWrite says the program writes its packet directly
	// (env->seen_direct_write): a store through a packet pointer, or a
	// writable slice of a packet dynptr.
	SeenDirectWrite bool
	// MaxRdonlyAccess and MaxRdwrAccess are the furthest byte read from a
	// read-only buffer and read or written in a writable one (PTR_TO_BUF:
	// an iterator's key and value), which attaching checks against the
	// map's sizes (prog->aux->max_rdonly_access, max_rdwr_access).
	MaxRdonlyAccess, MaxRdwrAccess int

	bufs *loadBufs // where Aux came from, for AdoptProg (pool.go)
	// noJumps says the program has no jump but exits and no call: the
	// fix-ups then have no branch to hard-wire and no dead code.
	noJumps bool
}

// env is struct bpf_verifier_env.
type env struct {
	cfg *Config
	// btfs are the structs PTR_TO_BTF_ID registers point to
	// (regState.btfIdx); maxRdonly and maxRdwr are
	// Result.MaxRdonlyAccess and MaxRdwrAccess.
	btfs               []*btf.Struct
	maxRdonly, maxRdwr int
	// seenDirectWrite is Result.SeenDirectWrite.
	seenDirectWrite bool
	// logSyms names calls in the log (logSymbols).
	logSyms *insn.Symbols
	// prevLine is the line info the log showed last, its index in
	// cfg.Lines plus one (env->prev_linfo).
	prevLine int
	insns    []insn.Insn
	aux      []InsnAux
	subprogs []Subprog
	log      logBuf
	limit    int

	cur *vstate
	// readsUninit is Result.ReadsUninitStack.
	readsUninit bool
	insnIdx     int
	prevIdx     int
	pending     []pendingState
	explored    [][]stateList
	prune       []bool // prune points
	force       []bool // forced checkpoints
	jmpPoint    []bool // instructions reached other than from the previous one
	// callsCallback marks the calls of helpers that call a callback
	// (bpf_calls_callback).
	callsCallback []bool
	// subAux is per function (globals.go).
	subAux  []subprogAux
	bt      backtrack
	curHist int // the history entry of the current instruction, or -1
	// hist holds the instruction history of every state, as ranges: a
	// path appends after its own end, overwriting what finished paths
	// left (never read again: backtracking only walks the current
	// path's checkpoints).
	hist []histEntry
	free []*vstate
	// maps are the maps registers point to, by regState.mapIdx.
	maps []*maps.Map
	live []uint16
	// scc numbers the loop each instruction lies on, 0 for none
	// (scc.go).
	scc []int32

	idGen                        uint32
	insnProcessed, jmpsProcessed int
	prevInsnProcessed, prevJmps  int
	totalStates, peakStates      int
	// quietChecks counts the checks running whose failure does not end
	// verification (quiet).
	quietChecks int
	// curStates counts the states held (explored, dropped but not yet
	// freed, and backedges), whose high mark is peakStates.
	curStates int
	// visits are the loops being explored, by call chain, and
	// numBackedges the backedges they hold (scc.go).
	visits             map[sccCallchain]*sccVisit
	numBackedges       int
	maxStatesPerInsn   int
	fakeReg            [2]regState
	idmapOld, idmapCur []uint32
	// scratchedRegs and scratchedStack are what the current instruction
	// touched (log.go).
	scratchedRegs  uint16
	scratchedStack uint64
	maxCtxOffset   int
	// nextMapRef is where mapRef looks first in cfg.Maps.
	nextMapRef int
	// hasCalls says checkCFG met a bpf-to-bpf call or a function
	// pointer load, hasPrunePoints that it marked a prune point.
	hasCalls, hasPrunePoints bool
	// scratch holds reusable buffers of checkCFG and computeLiveness.
	scratch struct {
		state []uint8
		stack []int
		use   []uint16
		def   []uint16
		succ  [][2]int
		loops loopScratch
	}
}

type pendingState struct {
	st               *vstate
	insnIdx, prevIdx int
	logPos           int
}

type stateList struct {
	st        *vstate
	hit, miss int
}

// Verify runs the kernel's checks on a program whose map references are
// resolved: the structural checks, the control flow graph, then the
// abstract interpretation of every path (do_check). It returns what the
// fix-up passes need, or an *Error carrying the kernel's errno and log.
func Verify(insns []insn.Insn, cfg *Config) (*Result, error) {
	subs := cfg.Subprogs
	if subs == nil {
		var err error
		if subs, err = CheckStructure(insns); err != nil {
			return nil, err
		}
	} else if !cfg.SubprogsOwned {
		subs = append([]Subprog(nil), subs...) // stack depths get written
	}
	e := envPool.Get().(*env)
	bufs := loadBufsPool.Get().(*loadBufs)
	e.reset(cfg, insns, subs, zeroed(bufs.aux, len(insns)))
	bufs.aux = nil
	defer e.release()
	if cfg.Limit > 0 {
		e.limit = cfg.Limit
	}
	e.log.level = cfg.LogLevel
	if err := e.addKfuncCalls(); err != nil {
		return nil, err
	}
	e.printSubprogs()
	if err := e.checkAbnormalReturn(); err != nil {
		return nil, err
	}
	if err := e.checkOpcodes(); err != nil {
		return nil, err
	}
	if err := e.checkCFG(); err != nil {
		return nil, err
	}
	if e.hasPrunePoints || e.log.level >= 2 {
		// Only state comparisons at prune points (and the log) read
		// liveness: a program without jumps or calls needs none.
		e.live = e.computeLiveness(insns, subs, e.helperArgs)
		e.scc = computeLoops(e.scratch.succ[:len(insns)], e.scc, &e.scratch.loops)
	}
	e.printLiveness()
	if err := e.doCheckMain(); err != nil {
		return nil, err
	}
	if e.log.level == 1 {
		// A successful verification keeps no path at level 1.
		e.log.reset(0)
	}
	if err := e.doCheckSubprogs(); err != nil { // globals.go
		return nil, err
	}
	if err := e.checkMaxStackDepth(); err != nil {
		return nil, err
	}
	e.printStats()
	return &Result{
		Aux:              e.aux,
		Subprogs:         e.subprogs,
		InsnProcessed:    e.insnProcessed,
		TotalStates:      e.totalStates,
		PeakStates:       e.peakStates,
		MaxStatesPerInsn: e.maxStatesPerInsn,
		Log:              e.log.String(),
		MaxCtxOffset:     e.maxCtxOffset,
		ReadsUninitStack: e.readsUninit,
		SeenDirectWrite:  e.seenDirectWrite,
		MaxRdonlyAccess:  e.maxRdonly,
		MaxRdwrAccess:    e.maxRdwr,
		bufs:             bufs,
		noJumps:          !e.hasPrunePoints,
	}, nil
}

// FindMapRef returns the reference of the lddw at insn i in refs, which
// are in instruction order.
func FindMapRef(refs []MapRef, i int) (MapRef, bool) {
	if j, ok := mapRefIndex(refs, i); ok {
		return refs[j], true
	}
	return MapRef{}, false
}

// mapRefIndex is the position of insn i's reference in refs.
func mapRefIndex(refs []MapRef, i int) (int, bool) {
	return slices.BinarySearchFunc(refs, i, func(r MapRef, i int) int { return r.Insn - i })
}

// errorf logs the message and returns it as the verification's error.
func (e *env) errorf(errno uapi.Errno, format string, args ...any) error {
	return e.fail(errno, fmt.Sprintf(format, args...))
}

// fail ends verification with msg; extra lines follow it in the log.
func (e *env) fail(errno uapi.Errno, msg string, extra ...string) error {
	e.log.always(msg)
	for _, l := range extra {
		e.log.always(l)
	}
	if e.log.level > 0 && e.quietChecks == 0 {
		e.printStats()
	}
	return &Error{Errno: errno, Msg: msg, Log: e.log.String()}
}

func (e *env) printStats() {
	if e.log.level == 0 {
		return // before the arguments escape
	}
	e.log.printf("processed %d insns (limit %d) max_states_per_insn %d total_states %d peak_states %d mark_read %d",
		e.insnProcessed, ComplexityLimit, e.maxStatesPerInsn, e.totalStates, e.peakStates, 0)
}

// checkOpcodes is the part of resolve_pseudo_ldimm64 the loader left to
// the verifier: every opcode must be one the kernel knows.
func (e *env) checkOpcodes() error {
	refs := e.cfg.Maps // in instruction order, as the lddw met here
	for i := 0; i < len(e.insns); i++ {
		in := e.insns[i]
		if in.Class() == insn.LDX && ((in.Mode() != insn.MEM && in.Mode() != insn.MEMSX) || in.Imm != 0) {
			return e.errorf(uapi.EINVAL, "BPF_LDX uses reserved fields")
		}
		if in.IsLdImm64() {
			for len(refs) > 0 && refs[0].Insn < i {
				refs = refs[1:]
			}
			isMap := len(refs) > 0 && refs[0].Insn == i
			if in.Src != 0 && !isMap && in.Src != insn.PseudoFunc {
				return e.errorf(uapi.EINVAL, "unrecognized bpf_ld_imm64 insn")
			}
			if isMap {
				// The loader resolved the map (and cleared the
				// source): check_map_prog_compatibility.
				if err := e.checkMapProgCompat(refs[0].Map); err != nil {
					return err
				}
			}
			i++
			continue
		}
		if !opcodeKnown(in.Code) {
			return e.errorf(uapi.EINVAL, "unknown opcode %02x", in.Code)
		}
	}
	return nil
}

// opcodeKnown is bpf_opcode_in_insntable: the opcodes of the ISA (with
// the byte and half-word atomics of load-acquire and store-release, which
// 6.15 added).
func opcodeKnown(code uint8) bool { return knownOpcodes[code] }

var knownOpcodes = func() (t [256]bool) {
	aluOps := []uint8{insn.ADD, insn.SUB, insn.AND, insn.OR, insn.LSH, insn.RSH, insn.XOR, insn.MUL, insn.MOV, insn.ARSH, insn.DIV, insn.MOD}
	for _, cls := range []uint8{insn.ALU, insn.ALU64} {
		for _, op := range aluOps {
			t[cls|op|insn.K], t[cls|op|insn.X] = true, true
		}
		t[cls|insn.NEG] = true
		t[cls|insn.END|insn.ToLE] = true
	}
	t[insn.ALU|insn.END|insn.ToBE] = true
	jmpOps := []uint8{insn.JEQ, insn.JNE, insn.JGT, insn.JLT, insn.JGE, insn.JLE, insn.JSGT, insn.JSLT, insn.JSGE, insn.JSLE, insn.JSET}
	for _, cls := range []uint8{insn.JMP, insn.JMP32} {
		for _, op := range jmpOps {
			t[cls|op|insn.K], t[cls|op|insn.X] = true, true
		}
		t[cls|insn.JA] = true
	}
	t[insn.JMP|insn.CALL], t[insn.JMP|insn.EXIT], t[insn.JMP|insn.JCOND] = true, true, true
	for _, size := range []uint8{insn.B, insn.H, insn.W, insn.DW} {
		t[insn.STX|insn.MEM|size], t[insn.ST|insn.MEM|size], t[insn.LDX|insn.MEM|size] = true, true, true
		t[insn.STX|insn.ATOMIC|size] = true
		if size != insn.DW {
			t[insn.LDX|insn.MEMSX|size] = true
			t[insn.LD|insn.ABS|size], t[insn.LD|insn.IND|size] = true, true
		}
	}
	t[insn.LD|insn.IMM|insn.DW] = true
	return t
}()

// checkAbnormalReturn is check_abnormal_return, for programs without BTF
// function info: LD_ABS and LD_IND may end a subprogram abnormally (a
// failed load returns 0 from it), which needs the BTF to verify.
func (e *env) checkAbnormalReturn() error {
	if e.cfg.FuncInfo {
		return nil
	}
	for _, s := range e.subprogs[1:] {
		for i := s.Start; i < s.End; i++ {
			in := e.insns[i]
			if in.Class() == insn.LD && (in.Mode() == insn.ABS || in.Mode() == insn.IND) {
				return e.errorf(uapi.EINVAL, "LD_ABS is not allowed in subprogs without BTF")
			}
		}
		if e.hasTailCall(s) {
			return e.errorf(uapi.EINVAL, "tail_call is not allowed in subprogs without BTF")
		}
	}
	return nil
}

// maxFreeStates bounds the states a pooled env keeps for reuse.
const maxFreeStates = 256

// envPool keeps verifier environments for reuse: loading many programs
// (a test suite does) would otherwise spend its time allocating states.
var envPool = sync.Pool{New: func() any { return new(env) }}

// reset prepares a pooled env for a program, keeping its buffers.
func (e *env) reset(cfg *Config, insns []insn.Insn, subs []Subprog, aux []InsnAux) {
	n := len(insns)
	*e = env{
		cfg: cfg, insns: insns, subprogs: subs, limit: ComplexityLimit,
		aux:           aux, // handed out with the Result
		prune:         clearBools(e.prune, n),
		force:         clearBools(e.force, n),
		jmpPoint:      clearBools(e.jmpPoint, n),
		callsCallback: clearBools(e.callsCallback, n),
		subAux:        growSubAux(e.subAux, len(subs)),
		live:          e.live[:0],
		scc:           e.scc,
		explored:      e.explored,
		pending:       e.pending[:0],
		hist:          e.hist[:0],
		free:          e.free,
		idmapOld:      e.idmapOld[:0],
		idmapCur:      e.idmapCur[:0],
		scratch:       e.scratch,
		maps:          e.maps[:0],
	}
	// Each instruction's list keeps the capacity an earlier load gave it
	// (release empties them): growing lists is most of what pruning
	// would otherwise allocate.
	if cap(e.explored) < n {
		e.explored = append(e.explored[:cap(e.explored)], make([][]stateList, n-cap(e.explored))...)
	}
	e.explored = e.explored[:n]
}

func growSubAux(b []subprogAux, n int) []subprogAux {
	if cap(b) < n {
		return make([]subprogAux, n)
	}
	b = b[:n]
	clear(b)
	return b
}

func clearBools(b []bool, n int) []bool {
	if cap(b) < n {
		return make([]bool, n, roomFor(n))
	}
	b = b[:n]
	clear(b)
	return b
}

// release returns every state to the free list and the env to the pool.
func (e *env) release() {
	explored := e.explored
	if !e.hasPrunePoints {
		explored = nil // states are kept only at prune points
	}
	for i, l := range explored {
		for _, sl := range l {
			e.free = append(e.free, sl.st)
		}
		clear(l) // no hold on states beyond the free list's bound
		e.explored[i] = l[:0]
	}
	for _, p := range e.pending {
		e.free = append(e.free, p.st)
	}
	if e.cur != nil {
		e.free = append(e.free, e.cur)
	}
	// Keep a bounded number of states, and none that point to others
	// (they would keep them alive).
	if len(e.free) > maxFreeStates {
		clear(e.free[maxFreeStates:])
		e.free = e.free[:maxFreeStates]
	}
	for _, st := range e.free {
		st.parent = nil
	}
	e.cfg, e.insns, e.cur, e.aux, e.subprogs = nil, nil, nil, nil, nil
	clear(e.maps) // kept empty: a pooled env holds no map
	e.log = logBuf{}
	envPool.Put(e)
}
