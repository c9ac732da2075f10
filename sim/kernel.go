package sim

import (
	"os"
	"sync"
	"sync/atomic"

	"github.com/cilium/ebpf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/bpffs"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/progpack"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// Options configure a new Kernel. The zero value is usable.
type Options struct {
	// CPUs is the number of possible CPUs (num_possible_cpus); default 2.
	CPUs int
	// Seed seeds bpf_get_prandom_u32 on every CPU: the same seed gives the
	// same numbers.
	Seed uint64
	// Clock is what bpf_ktime_get_ns reads; default a VirtualClock.
	Clock Clock
	// MemoryLimit caps the simulated memory in bytes; default
	// mem.DefaultLimit.
	MemoryLimit uint64
	// BareHelpers starts the kernel with an empty helper table, for
	// harnesses that define their own helper ids (the conformance suite's
	// helper 5 is not bpf_ktime_get_ns).
	BareHelpers bool
	// HardWire chooses how the dead code pass that follows verification
	// decides that a conditional jump always goes one way
	// (opt_hard_wire_dead_code_branches). The default,
	// verifier.HardWireFromPredictions, uses the verifier's record of
	// each jump's outcomes, as proposed for bpf-next in November 2024;
	// verifier.HardWireFromSeen is what released kernels do (6.18
	// included), for comparing xlated code with theirs.
	HardWire verifier.HardWire
	// InlineKfuncs replaces each call of an inlinable kfunc (the dynptr
	// slices and accessors, and kfuncs registered with a body) by the
	// kfunc's body, specialised to what the verifier knew at the call,
	// as seed 003 (bpf-next, November 2024) proposes. By default calls
	// stay calls, as in released kernels (6.18 included): in the kernel
	// inlining saves a native call, but bpfsim's interpreter runs a Go
	// kfunc faster than the dozen BPF instructions of its body (see
	// BenchmarkDynptrSlice), so the option is for seeing and counting
	// what the RFC would make of a program.
	InlineKfuncs bool
	// TailCallCount chooses which tail calls count towards the limit of
	// 33 per invocation: the default, interp.CountAttempts, is the
	// kernel's interpreter (a tail call into an empty slot counts);
	// interp.CountSuccesses is the x86-64 and arm64 JITs (only tail calls
	// that reach a program count), for comparing with a kernel that JITs.
	TailCallCount interp.TailCallCount
	// Runtime is how programs run unless they ask otherwise: the
	// interpreter or the arm64 JIT on the A64 emulator. The default is
	// the interpreter, or what the BPFSIM_RUNTIME environment variable
	// says ("jit" or "interpreter").
	Runtime Runtime
	// ProgPack configures the allocator of JIT images: packs (the
	// default) or one allocation per image, huge or page mappings.
	ProgPack progpack.Options
	// Release is the simulated kernel's release, as uname -r prints it:
	// what a program's LINUX_KERNEL_VERSION extern reads. Default
	// DefaultRelease.
	Release string
	// Config is the simulated kernel's configuration, option names
	// (CONFIG_HZ) to values as a .config writes them ("y", "m", "250",
	// "\"(none)\""), with unset options absent: what a program's
	// .kconfig externs read. Default DefaultConfig(); ParseConfig reads
	// another kernel's, such as /proc/config.gz.
	Config map[string]string
}

// MaxCPUs bounds Options.CPUs, like the kernel's NR_CPUS.
const MaxCPUs = 512

// Kernel is one simulated kernel.
type Kernel struct {
	mem    *mem.Space
	percpu *mem.Percpu
	cpus   []*CPU
	clock  Clock
	trace  *TraceBuffer
	rcu    *rcu

	mu      sync.Mutex // guards helpers
	helpers map[int32]*Helper

	mapTypes maps.Registry
	objs     objects
	fs       *bpffs.FS // the BPF filesystem (pin.go)
	// init is the first process, which the Kernel's own methods act
	// for; nextPID and nextFile number processes and open files.
	init     *Process
	nextPID  atomic.Int64
	tasks    taskTable // the live tasks' pids (taskstorage.go)
	nextFile atomic.Uint64
	// openFiles counts the open file descriptions, for leak checks.
	openFiles atomic.Int64
	// perfEvents counts the perf events not yet freed; nextPerfID numbers
	// them.
	perfEvents atomic.Int64
	nextPerfID atomic.Uint32
	progs      progTable

	randMu sync.Mutex
	rand   prandomState // get_random_u32 for map seeds

	// ksyms is the kernel's text, where the functions of direct calls
	// live (ksyms.go); hardWire is Options.HardWire.
	ksyms    *ksymTable
	hardWire verifier.HardWire
	// drainDynptrs are bpf_user_ringbuf_drain's dynptrs (userringbuf.go).
	drainDynptrs drainDynptrs
	// inlineKfuncs is Options.InlineKfuncs.
	inlineKfuncs bool
	// release and config are uname -r and the .config (kconfig.go).
	release string
	config  map[string]string

	// helperTypes lists the program types that may call a helper
	// offered to some types only (under mu); helperProtoByType holds
	// helperProtoFor's functions, made once per type: a function value
	// built per load would be an allocation per load.
	helperTypes map[int32][]ebpf.ProgramType
	// iterSessions are the open iterator files, by the address of their
	// seq_file (iter.go).
	iterSessions sync.Map
	// helperVariantsMissing lists, for a helper, the types the kernel
	// offers a variant of it that bpfsim does not simulate (under mu).
	helperVariantsMissing map[int32][]ebpf.ProgramType
	// helperTypeProtos are the prototypes of helpers whose variant for a
	// type takes other arguments (under mu).
	helperTypeProtos  map[int32]map[ebpf.ProgramType]*verifier.FuncProto
	helperProtoByType map[ebpf.ProgramType]func(int32) *verifier.FuncProto

	// runtime and progPack are Options.Runtime and Options.ProgPack;
	// jits is the JIT, set up when first needed (jit.go).
	runtime  Runtime
	progPack progpack.Options
	jits     jitState

	// so is the struct_ops and kfunc state (structops.go, kfunc.go).
	so structOpsState
	// traced are the functions fentry and fexit programs attach to
	// (fentry.go).
	traced tracedFuncs
	// tracepoints are the tp_btf programs' tracepoints (tracepoint.go).
	tracepoints tracepoints
	// timers are the map values' bpf_timers (timer.go).
	timers timerTable
	// net is the network configuration bpf_fib_lookup looks at (fib.go).
	net netState
	// modules are the loaded modules' BTF (module.go); btfs the BTF
	// objects, vmlinux's and theirs among them (btfobj.go).
	modules moduleTable
	btfs    btfTable
}

// CPU is one simulated CPU: the machine state the interpreter runs on, its
// stack, its random state and its test-run buffers. A CPU runs one program
// at a time.
type CPU struct {
	ID      int
	mu      sync.Mutex
	machine *interp.Machine
	rnd     prandomState
	run     runBuffers
	// runType is the type of the program a test run is running, for the
	// helpers whose kernel function differs by type (bpf_redirect).
	runType ebpf.ProgramType
	// buffers for the keys and values helpers copy out of a program's
	// memory; the CPU runs one program at a time, and map operations do
	// not keep the slices they are given.
	buf [2][]byte
	// maps caches the maps helpers were given (mapcache.go).
	maps mapCache
	// jit is the CPU's A64 state, once the kernel has a JIT.
	jit *jitCPU
	// helperStack is a page for the variables helpers pass programs by
	// address (foreach.go); helperDepth counts the slots in use.
	helperStack uint64
	helperDepth int
	// heldLock is the bpf_spin_lock word the running program holds, if
	// any (spinlock.go).
	heldLock *uint32
	// task is the task the CPU runs programs in (task.go).
	task cpuTask
	// cookie is the attach cookie of the link the running program ran
	// through (attachcookie.go).
	cookie uint64
}

// scratch returns buffer slot i of at least n bytes.
func (c *CPU) scratch(i, n int) []byte {
	if cap(c.buf[i]) < n {
		c.buf[i] = make([]byte, n)
	}
	return c.buf[i][:n]
}

// NewKernel boots a simulated kernel.
func NewKernel(opts *Options) (*Kernel, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.CPUs == 0 {
		o.CPUs = 2
	}
	if o.CPUs < 0 || o.CPUs > MaxCPUs {
		return nil, errors.Wrapf(uapi.EINVAL, "%d CPUs: want 1 to %d", o.CPUs, MaxCPUs)
	}
	if o.Clock == nil {
		o.Clock = NewVirtualClock()
	}
	k := &Kernel{
		mem:     mem.New(),
		clock:   o.Clock,
		trace:   newTraceBuffer(),
		helpers: make(map[int32]*Helper),
		rcu:     newRCU(o.CPUs),
		objs:    objects{maps: map[uint32]*maps.Map{}, byAddr: map[uint64]*maps.Map{}},
	}
	// The kernel image comes first in the address space, as on arm64.
	var err error
	if k.ksyms, err = newKsyms(k.mem); err != nil {
		return nil, err
	}
	k.hardWire = o.HardWire
	k.release, k.config = DefaultRelease, DefaultConfig()
	if o.Release != "" {
		if err := checkRelease(o.Release); err != nil {
			return nil, err
		}
		k.release = o.Release
	}
	if o.Config != nil {
		k.config = cloneConfig(o.Config)
	}
	k.inlineKfuncs = o.InlineKfuncs
	if o.Runtime > RuntimeJIT {
		return nil, errors.Wrapf(uapi.EINVAL, "unknown runtime %d", o.Runtime)
	}
	k.runtime, k.progPack = o.Runtime, o.ProgPack
	if k.runtime == RuntimeDefault {
		// BPFSIM_RUNTIME picks the runtime of kernels that do not, so
		// a whole test suite can run JITed without a code change.
		switch env := os.Getenv("BPFSIM_RUNTIME"); env {
		case "", "interpreter":
		case "jit":
			k.runtime = RuntimeJIT
		default:
			return nil, errors.Wrapf(uapi.EINVAL, "BPFSIM_RUNTIME=%q: want jit or interpreter", env)
		}
	}
	k.so.btf.seed = k.vmlinuxTypes // corereloc.go
	k.init = k.NewProcess()
	k.fs = bpffs.New()
	k.helperTypes = map[int32][]ebpf.ProgramType{}
	k.helperVariantsMissing = map[int32][]ebpf.ProgramType{}
	k.helperTypeProtos = map[int32]map[ebpf.ProgramType]*verifier.FuncProto{}
	k.helperProtoByType = map[ebpf.ProgramType]func(int32) *verifier.FuncProto{}
	k.percpu = mem.NewPercpu(k.mem, o.CPUs)
	k.rand.seed(o.Seed, -1)
	if o.MemoryLimit != 0 {
		k.mem.SetLimit(o.MemoryLimit)
	}
	for id := 0; id < o.CPUs; id++ {
		cpu, err := k.newCPU(id, o.Seed)
		if err != nil {
			return nil, err
		}
		cpu.machine.TailCallCount = o.TailCallCount
		k.cpus = append(k.cpus, cpu)
	}
	if !o.BareHelpers {
		k.registerBaseHelpers()
		k.registerSKBHelpers()
		k.registerXDPHelpers()
		k.registerXDPBytesHelpers()
		k.registerCheckMTU()
		k.registerSKBMiscHelpers()
		k.registerSKBResize()
		k.registerSKBAdjustRoom()
		k.registerSKBChangeProto()
		k.registerTunnelHelpers()
		k.registerFibLookup()
		k.registerTimeHelpers()
		k.registerTaskHelpers()
		k.registerAttachCookie()
		k.registerTaskStorageHelpers()
		k.registerStringHelpers()
		k.registerDynptrHelpers()
		k.registerFormatHelpers()
		k.registerSeqHelpers()
		k.registerStrtox()
		k.registerSpinLockHelpers()
		k.registerTimerHelpers()
		k.registerVlanHelpers()
		k.registerMapHelpers()
		k.registerPerfHelpers()
		k.registerRingbufHelpers()
		k.registerTailCall()
	}
	for _, t := range builtinMapTypes {
		if err := k.RegisterMapType(t); err != nil {
			return nil, err
		}
	}
	return k, nil
}

func (k *Kernel) newCPU(id int, seed uint64) (*CPU, error) {
	// Each CPU's BPF stack lives in its own vmalloc area with guard pages
	// around it, like a VMAP_STACK task stack: overflowing it faults.
	base, err := k.mem.Vmalloc(interp.StackSize, mem.PermRW, "bpf_stack")
	if err != nil {
		return nil, err
	}
	stack, err := k.mem.Bytes(base, interp.StackSize)
	if err != nil {
		return nil, err
	}
	m, err := interp.NewMachine(id, k.mem.NewTLB(), base, stack)
	if err != nil {
		return nil, err
	}
	cpu := &CPU{ID: id, machine: m}
	if cpu.task.page, err = k.newTaskPage(id); err != nil {
		return nil, err
	}
	m.Data = cpu
	m.TailCall = k.tailCallTarget
	m.PercpuOffset = k.percpu.Offset(id)
	cpu.rnd.seed(seed, id)
	return cpu, nil
}

// Memory returns the kernel's address space.
func (k *Kernel) Memory() *mem.Space { return k.mem }

// NumCPUs returns the number of possible CPUs.
func (k *Kernel) NumCPUs() int { return len(k.cpus) }

// Clock returns the clock bpf_ktime_get_ns reads.
func (k *Kernel) Clock() Clock { return k.clock }

// Trace returns the buffer bpf_trace_printk writes to.
func (k *Kernel) Trace() *TraceBuffer { return k.trace }

func (k *Kernel) cpu(id uint32) (*CPU, error) {
	if int(id) >= len(k.cpus) {
		return nil, errors.Wrapf(uapi.EINVAL, "CPU %d does not exist (the kernel has %d)", id, len(k.cpus))
	}
	return k.cpus[id], nil
}
