package sim

import (
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/bpffs"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// Iterator programs (kernel/bpf/bpf_iter.c, kernel/bpf/map_iter.c, the
// seq_file iterators of kernel/bpf/hashtab.c and arraymap.c): a tracing
// program of attach type BPF_TRACE_ITER, loaded against a target
// (SEC("iter/bpf_map_elem")), attached through a link that names what it
// walks (a map), and run once per object each time user space reads the
// iterator's file: what it prints with bpf_seq_printf and bpf_seq_write is
// what read(2) returns. After the last object the program runs once more
// with NULL for the object, so that it can print a summary.
//
// bpfsim has two targets. bpf_map_elem walks every element of a hash, LRU
// hash, array or their per-CPU variants, the key read-only, the value
// writable in place (a per-CPU map's values are a copy of every possible
// CPU's, each rounded up to 8 bytes). bpf_map walks every live map by id.
// The read follows bpf_seq_read: a buffer of eight pages; an object whose
// output does not fit is shown again by the next read, or, when it alone
// overflows the buffer, fails the read with E2BIG; a program that returns
// 1 asks for its object again (EAGAIN when nothing was read before it).
// Each open file is a session, with its own session_id and seq_num. A
// link pinned on the BPF filesystem is read by opening the pin.

const (
	// iterBufSize is the seq_file buffer of bpf_seq_read: PAGE_SIZE << 3.
	iterBufSize = 8 * mem.PageSize
	// maxIterObjects is MAX_ITER_OBJECTS, the objects one read visits
	// at most.
	maxIterObjects = 1000000

	funcSeqPrintf = 126
	funcSeqWrite  = 127
)

// iterFuncPrefix is BPF_ITER_FUNC_PREFIX: the kernel's BTF has a function
// bpf_iter_<target> whose arguments are the target's context.
const iterFuncPrefix = "bpf_iter_"

// iterTarget is a struct bpf_iter_reg: a kind of object iterator
// programs walk.
type iterTarget struct {
	name string
	ctx  *verifier.BTFCtxType
	// noted are the kernel objects among ctx's arguments that the
	// target's ctx_arg_info does not describe: btf_ctx_access logs a
	// line for each load of them, naming the struct's BTF id.
	noted []int
	// walksMap: the link names a map whose elements it walks
	// (bpf_iter_attach_map).
	walksMap bool
}

// iterBTF are the kernel types of iterators, shared by every kernel: the
// verifier walks them, and vmlinuxTypes copies them into the kernel's BTF.
var iterBTF = sync.OnceValue(func() *iterTypeSet {
	return newIterTypes(&btf.Enum{Name: "bpf_map_type", Size: 4}, taskStruct)
})

type iterTypeSet struct {
	seqFile, meta, bpfMap, mapElemCtx, mapCtx, taskCtx *btf.Struct
	mapElemFunc, mapFunc, taskFunc                     *btf.Func
}

// newIterTypes builds struct seq_file (opaque: bpfsim simulates none of
// its fields), struct bpf_iter_meta, bpfsim's struct bpf_map (maps'
// header.go) and the targets' contexts and functions. mapType is enum
// bpf_map_type, task struct task_struct.
func newIterTypes(mapType, task btf.Type) *iterTypeSet {
	u32 := &btf.Int{Name: "unsigned int", Size: 4}
	u64 := &btf.Int{Name: "long long unsigned int", Size: 8}
	char := &btf.Int{Name: "char", Size: 1, Encoding: btf.Char}
	i32 := &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
	void := &btf.Pointer{Target: &btf.Void{}}
	seq := &btf.Struct{Name: "seq_file"}
	meta := &btf.Struct{Name: "bpf_iter_meta", Size: 24, Members: []btf.Member{
		{Name: "seq", Type: &btf.Pointer{Target: seq}},
		{Name: "session_id", Type: u64, Offset: 64},
		{Name: "seq_num", Type: u64, Offset: 128},
	}}
	bpfMap := &btf.Struct{Name: "bpf_map", Size: maps.HeaderSize}
	at := func(off int) btf.Bits { return btf.Bits(off * 8) }
	bpfMap.Members = []btf.Member{
		{Name: "ops", Type: void, Offset: at(maps.HeaderOps)},
		{Name: "inner_map_meta", Type: &btf.Pointer{Target: bpfMap}, Offset: at(maps.HeaderInnerMapMeta)},
		{Name: "map_type", Type: mapType, Offset: at(maps.HeaderMapType)},
		{Name: "key_size", Type: u32, Offset: at(maps.HeaderKeySize)},
		{Name: "value_size", Type: u32, Offset: at(maps.HeaderValueSize)},
		{Name: "max_entries", Type: u32, Offset: at(maps.HeaderMaxEntries)},
		{Name: "map_extra", Type: u64, Offset: at(maps.HeaderMapExtra)},
		{Name: "map_flags", Type: u32, Offset: at(maps.HeaderMapFlags)},
		{Name: "id", Type: u32, Offset: at(maps.HeaderID)},
		{Name: "name", Type: &btf.Array{Index: i32, Type: char, Nelems: maps.HeaderNameLen}, Offset: at(maps.HeaderName)},
	}
	metaPtr, mapPtr := &btf.Pointer{Target: meta}, &btf.Pointer{Target: bpfMap}
	ctx := &btf.Struct{Name: "bpf_iter__bpf_map_elem", Size: 32, Members: []btf.Member{
		{Name: "meta", Type: metaPtr},
		{Name: "map", Type: mapPtr, Offset: 64},
		{Name: "key", Type: void, Offset: 128},
		{Name: "value", Type: void, Offset: 192},
	}}
	fn := &btf.Func{Name: iterFuncPrefix + "bpf_map_elem", Linkage: btf.GlobalFunc, Type: &btf.FuncProto{
		Return: i32,
		Params: []btf.FuncParam{{Name: "meta", Type: metaPtr}, {Name: "map", Type: mapPtr}, {Name: "key", Type: void}, {Name: "value", Type: void}},
	}}
	mapCtx := &btf.Struct{Name: "bpf_iter__bpf_map", Size: 16, Members: []btf.Member{
		{Name: "meta", Type: metaPtr},
		{Name: "map", Type: mapPtr, Offset: 64},
	}}
	mapFn := &btf.Func{Name: iterFuncPrefix + "bpf_map", Linkage: btf.GlobalFunc, Type: &btf.FuncProto{
		Return: i32,
		Params: []btf.FuncParam{{Name: "meta", Type: metaPtr}, {Name: "map", Type: mapPtr}},
	}}
	taskPtr := &btf.Pointer{Target: task}
	taskCtx := &btf.Struct{Name: "bpf_iter__task", Size: 16, Members: []btf.Member{
		{Name: "meta", Type: metaPtr},
		{Name: "task", Type: taskPtr, Offset: 64},
	}}
	taskFn := &btf.Func{Name: iterFuncPrefix + "task", Linkage: btf.GlobalFunc, Type: &btf.FuncProto{
		Return: i32,
		Params: []btf.FuncParam{{Name: "meta", Type: metaPtr}, {Name: "task", Type: taskPtr}},
	}}
	return &iterTypeSet{seqFile: seq, meta: meta, bpfMap: bpfMap, mapElemCtx: ctx, mapElemFunc: fn, mapCtx: mapCtx, mapFunc: mapFn,
		taskCtx: taskCtx, taskFunc: taskFn}
}

// iterTypes returns fresh copies of the iterator types for the kernel's
// BTF, whose other types are vmlinux (for its enum bpf_map_type).
func iterTypes(vmlinux []btf.Type) []btf.Type {
	var mapType btf.Type = &btf.Int{Name: "unsigned int", Size: 4}
	var task btf.Type = taskStruct
	for _, t := range vmlinux {
		if e, ok := t.(*btf.Enum); ok && e.Name == "bpf_map_type" {
			mapType = e
		}
		if st, ok := t.(*btf.Struct); ok && st.Name == "task_struct" {
			task = st
		}
	}
	t := newIterTypes(mapType, task)
	return []btf.Type{t.mapElemCtx, t.mapElemFunc, t.mapCtx, t.mapFunc, t.taskCtx, t.taskFunc}
}

// iterTargets are the targets bpfsim simulates, by name.
var iterTargets = sync.OnceValue(func() map[string]*iterTarget {
	t := iterBTF()
	return map[string]*iterTarget{
		"bpf_map": {name: "bpf_map", noted: []int{0}, ctx: &verifier.BTFCtxType{
			Func: t.mapFunc.Name,
			Iter: true,
			Args: []verifier.BTFCtxArg{
				{Kind: verifier.CtxBTFID, Struct: t.meta, Trusted: true},
				// PTR_TO_BTF_ID_OR_NULL | PTR_TRUSTED: NULL at the end.
				{Kind: verifier.CtxBTFID, Struct: t.bpfMap, Trusted: true, MaybeNull: true},
			},
		}},
		// task_iter.c's task target: every thread of every process, by
		// pid; NULL at the end.
		"task": {name: "task", noted: []int{0}, ctx: &verifier.BTFCtxType{
			Func: t.taskFunc.Name,
			Iter: true,
			Args: []verifier.BTFCtxArg{
				{Kind: verifier.CtxBTFID, Struct: t.meta, Trusted: true},
				{Kind: verifier.CtxBTFID, Struct: taskStruct, Trusted: true, MaybeNull: true},
			},
		}},
		"bpf_map_elem": {name: "bpf_map_elem", walksMap: true, noted: []int{0, 1}, ctx: &verifier.BTFCtxType{
			Func: t.mapElemFunc.Name,
			Iter: true,
			Args: []verifier.BTFCtxArg{
				{Kind: verifier.CtxBTFID, Struct: t.meta, Trusted: true},
				{Kind: verifier.CtxBTFID, Struct: t.bpfMap, Trusted: true},
				// key: PTR_TO_BUF | PTR_MAYBE_NULL | MEM_RDONLY;
				// value: PTR_TO_BUF | PTR_MAYBE_NULL.
				{Kind: verifier.CtxBuf, MaybeNull: true, ReadOnly: true},
				{Kind: verifier.CtxBuf, MaybeNull: true},
			},
		}},
	}
})

// iterAttachOf finds the target of an iterator program spec
// (SEC("iter/<target>"): cilium/ebpf's AttachTo) and sets the load's
// attach_btf_id to its bpf_iter_<target> function in the kernel's BTF.
func (k *Kernel) iterAttachOf(spec *ebpf.ProgramSpec, opts *ProgramOptions) error {
	if spec.Type != ebpf.Tracing || opts.AttachBTFID != 0 {
		return nil
	}
	if spec.AttachType == ebpf.AttachTraceFEntry || spec.AttachType == ebpf.AttachTraceFExit {
		// fentry.go
		if spec.AttachTarget != nil {
			return errors.Wrapf(uapi.ENOTSUPP, "program %s: %s programs of BPF programs (AttachTarget) are not simulated by bpfsim yet", spec.Name, spec.AttachType)
		}
		f, ok := k.TracedFunc(spec.AttachTo)
		if !ok {
			return errors.Wrapf(uapi.ENOENT, "program %s: attach %s: no traced function %s in the simulated kernel (Kernel.RegisterTracedFunc)", spec.Name, spec.AttachType, spec.AttachTo)
		}
		opts.AttachBTFID = uint32(f.id)
		return nil
	}
	if spec.AttachType == ebpf.AttachTraceRawTp {
		if spec.AttachTarget != nil {
			return errors.Wrapf(uapi.EINVAL, "program %s: only fentry and fexit programs attach to BPF programs", spec.Name)
		}
		return k.tracepointAttachOf(spec, opts) // tracepoint.go
	}
	if spec.AttachType != ebpf.AttachTraceIter {
		return errors.Wrapf(uapi.ENOTSUPP, "program %s: tracing programs of attach type %s are not simulated by bpfsim yet (iterators, tp_btf, fentry and fexit only)", spec.Name, spec.AttachType)
	}
	id, err := k.iterFuncID(spec.AttachTo)
	if err != nil {
		return errors.Wrapf(err, "program %s", spec.Name)
	}
	opts.AttachBTFID = uint32(id)
	return nil
}

// iterFuncID is the id of bpf_iter_<target> in the kernel's BTF.
func (k *Kernel) iterFuncID(target string) (btf.TypeID, error) {
	spec, err := k.so.btf.Spec()
	if err != nil {
		return 0, err
	}
	var fn *btf.Func
	if err := spec.TypeByName(iterFuncPrefix+target, &fn); err != nil {
		return 0, errors.Wrapf(uapi.ENOENT, "iterator target %q: no function %s%s in the kernel's BTF (bpfsim simulates bpf_map, bpf_map_elem and task)", target, iterFuncPrefix, target)
	}
	return spec.TypeID(fn)
}

// prepareIterLoad is bpf_check_attach_target for an iterator: the
// attach_btf_id must name a bpf_iter_<target> function of a registered
// target.
func (k *Kernel) prepareIterLoad(p *Program, opts ProgramOptions) error {
	if p.typ != ebpf.Tracing {
		return nil
	}
	vErr := func(errno uapi.Errno, msg string, a ...any) error {
		return p.attachRefusal(opts, errno, fmt.Sprintf(msg, a...))
	}
	fentry := p.attachType == ebpf.AttachTraceFEntry || p.attachType == ebpf.AttachTraceFExit
	rawTp := p.attachType == ebpf.AttachTraceRawTp
	if p.attachType != ebpf.AttachTraceIter && !fentry && !rawTp {
		return errors.Wrapf(uapi.ENOTSUPP, "tracing programs of attach type %s are not simulated by bpfsim yet (iterators, tp_btf, fentry and fexit only)", p.attachType)
	}
	if opts.AttachBTFID == 0 {
		return vErr(uapi.EINVAL, "Tracing programs must provide btf_id")
	}
	if rawTp {
		return k.prepareTracepointLoad(p, opts.AttachBTFID, vErr) // tracepoint.go
	}
	fn, err := k.attachFunc(opts.AttachBTFID, vErr)
	if err != nil {
		return err
	}
	if fentry {
		return k.prepareTracingLoad(p, btf.TypeID(opts.AttachBTFID), fn, vErr) // fentry.go
	}
	name, ok := strings.CutPrefix(fn.Name, iterFuncPrefix)
	t := iterTargets()[name]
	if !ok || t == nil {
		// bpf_iter_prog_supported: EINVAL, with nothing in the log.
		return errors.Wrapf(uapi.EINVAL, "%s is no iterator target bpfsim simulates (bpf_map, bpf_map_elem, task)", fn.Name)
	}
	p.iter = t
	ctx, err := k.iterCtx(t)
	if err != nil {
		return err
	}
	p.btfCtx = ctx
	return nil
}

// iterCtx is t's context with the notes btf_ctx_access logs, which name
// BTF ids of this kernel's BTF.
func (k *Kernel) iterCtx(t *iterTarget) (*verifier.BTFCtxType, error) {
	spec, err := k.so.btf.Spec()
	if err != nil {
		return nil, err
	}
	ctx := *t.ctx
	ctx.Args = slices.Clone(t.ctx.Args)
	for _, i := range t.noted {
		a := &ctx.Args[i]
		var st *btf.Struct
		if err := spec.TypeByName(a.Struct.Name, &st); err != nil {
			return nil, err
		}
		id, err := spec.TypeID(st)
		if err != nil {
			return nil, err
		}
		a.Note = ctxArgNote(ctx.Func, i, id, a.Struct.Name)
	}
	return &ctx, nil
}

// attachFunc is bpf_check_attach_target's finding of a tracing program's
// function: the FUNC with BTF id id in the kernel's BTF.
func (k *Kernel) attachFunc(id uint32, vErr func(uapi.Errno, string, ...any) error) (*btf.Func, error) {
	spec, err := k.so.btf.Spec()
	if err != nil {
		return nil, err
	}
	typ, err := spec.TypeByID(btf.TypeID(id))
	if err != nil {
		return nil, vErr(uapi.EINVAL, "attach_btf_id %d is invalid", id)
	}
	fn, ok := typ.(*btf.Func)
	if !ok {
		return nil, vErr(uapi.EINVAL, "attach_btf_id %d is not a function", id)
	}
	return fn, nil
}

// IterOptions are what an iterator link walks, as cilium/ebpf's
// link.IterOptions.
type IterOptions struct {
	// Program is an iterator program (SEC("iter/<target>")).
	Program *Program
	// Map is the map a bpf_map_elem iterator walks; other targets ignore
	// it, as the kernel does.
	Map *Map
}

// Iter is a handle on an iterator link (BPF_LINK_TYPE_ITER), an fd of
// its process like cilium/ebpf's *link.Iter: Open starts a walk, Pin
// puts the link on the BPF filesystem.
type Iter struct {
	k          *Kernel
	proc       *Process
	fd         int
	l          *iterLink
	closed     atomic.Bool
	pinnedPath string
}

// iterLink is struct bpf_iter_link: the program and what it walks, alive
// while its fd or a pin holds it.
type iterLink struct {
	k    *Kernel
	prog *Program
	refs atomic.Int64
	// m is the map a bpf_map_elem link walks (nil for other targets);
	// percpu marks a per-CPU one, whose values are copied.
	m      *maps.Map
	percpu bool
}

// AttachIter creates an iterator link for the program's process
// (bpf_iter_link_attach). For bpf_map_elem, map_iter.c's
// bpf_iter_attach_map: the map must be a hash, LRU hash or array, or a
// per-CPU one (EINVAL), at least as large as what the program reads of
// its keys and values (EACCES), and the link holds it.
func (k *Kernel) AttachIter(opts IterOptions) (*Iter, error) {
	p := opts.Program
	if p == nil || !p.isOpen() {
		return nil, errors.Wrap(uapi.EBADF, "no iterator program")
	}
	if p.typ != ebpf.Tracing || p.iter == nil {
		return nil, errors.Wrapf(uapi.EINVAL, "program %s is not an iterator program", p.name)
	}
	proc := p.proc
	if proc == nil {
		proc = k.init
	}
	l := &iterLink{k: k, prog: p}
	if p.iter.walksMap {
		if err := l.attachMap(opts.Map); err != nil {
			return nil, err
		}
	}
	p.get()
	if l.m != nil {
		l.m.GetUser()
	}
	l.refs.Store(1) // the fd's
	it := &Iter{k: k, proc: proc, l: l}
	f := k.newFile(it, func(f *file) {
		f.k.openFiles.Add(-1)
		f.obj.(*Iter).l.put()
	})
	fd, err := proc.fds.install(f)
	if err != nil {
		k.openFiles.Add(-1)
		l.put()
		return nil, err
	}
	it.fd = fd
	return it, nil
}

// attachMap is bpf_iter_attach_map's checks of h.
func (l *iterLink) attachMap(h *Map) error {
	p := l.prog
	if h == nil {
		return errors.Wrapf(uapi.EBADF, "iterator %s needs a map", p.iter.name)
	}
	if err := h.check(); err != nil {
		return err
	}
	m := h.m
	switch m.Attr.Type {
	case uapi.MapTypePercpuHash, uapi.MapTypeLRUPercpuHash, uapi.MapTypePercpuArray:
		l.percpu = true
	case uapi.MapTypeHash, uapi.MapTypeLRUHash, uapi.MapTypeArray:
	default:
		return errors.Wrapf(uapi.EINVAL, "iterator %s cannot walk a %s map", p.iter.name, m.Type.Name)
	}
	valueSize := m.ValueSize
	if l.percpu {
		valueSize = maps.RoundUp8(m.ValueSize) * uint32(l.k.NumCPUs())
	}
	if p.maxRdonly > int(m.KeySize) || p.maxRdwr > int(valueSize) {
		return errors.Wrapf(uapi.EACCES, "program %s reads %d bytes of keys and %d of values; map %s has %d and %d",
			p.name, p.maxRdonly, p.maxRdwr, m.Name, m.KeySize, valueSize)
	}
	if _, ok := m.Ops.(maps.SeqWalker); !ok {
		return errors.Wrapf(uapi.EINVAL, "map %s cannot be walked", m.Name)
	}
	l.m = m
	return nil
}

func (l *iterLink) get() { l.refs.Add(1) }

// put drops a reference; the last one releases the link's map and
// program (bpf_iter_detach_map, bpf_link_free).
func (l *iterLink) put() {
	if l.refs.Add(-1) != 0 {
		return
	}
	if l.m != nil {
		l.m.PutUser()
	}
	l.prog.put()
}

// FD returns the link's fd.
func (it *Iter) FD() int { return it.fd }

// Close closes the link's fd; walks already open go on, and a pin keeps
// the link.
func (it *Iter) Close() error {
	if !it.closed.CompareAndSwap(false, true) {
		return nil
	}
	if err := it.proc.fds.close(it.fd); err != nil && !it.proc.fds.isClosed() {
		return err
	}
	return nil
}

// Pin puts the link on the BPF filesystem at fileName (BPF_OBJ_PIN), as
// cilium/ebpf's Link.Pin: the pin holds the link, and opening the file
// (Kernel.OpenPinnedIter, `cat` in the kernel) starts a walk.
func (it *Iter) Pin(fileName string) error {
	if it.closed.Load() {
		return errors.Wrap(uapi.EBADF, "link is closed")
	}
	return pinAt(it.k.fs, &it.pinnedPath, fileName, bpffs.Link, it.l, it.l.get, it.l.put)
}

// Unpin removes the pin this handle made (unlink); a pin already gone is
// no error.
func (it *Iter) Unpin() error { return unpinAt(it.k.fs, &it.pinnedPath) }

// IsPinned reports whether the handle pinned the link.
func (it *Iter) IsPinned() bool { return it.pinnedPath != "" }

// OpenPinnedIter opens the iterator link pinned at fileName and starts a
// walk, as open(2) and read(2) of the file do (bpffs's iter_open): ENOENT
// for no pin, EACCES for a directory, EINVAL for a map, program or
// other link, which bpfsim's files cannot be read as.
func (k *Kernel) OpenPinnedIter(fileName string) (io.ReadCloser, error) {
	var l *iterLink
	err := k.fs.Get(fileName, func(kind bpffs.Kind, obj any) error {
		il, ok := obj.(*iterLink)
		if kind != bpffs.Link || !ok {
			return errors.Wrapf(uapi.EINVAL, "%s is a pinned %s, not an iterator link", fileName, kind)
		}
		// The pin's reference keeps the link while the entry is there.
		l = il
		l.get()
		return nil
	})
	if err != nil {
		return nil, err
	}
	defer l.put()
	return l.open()
}

// sessionID is the kernel's session_id counter: every opened iterator
// file takes the next number.
var sessionID atomic.Uint64

// Open starts a walk (bpf_iter_new_fd, BPF_ITER_CREATE): reading it runs
// the program over the objects. The reader holds the program, and the
// map a bpf_map_elem link walks, until it is closed.
func (it *Iter) Open() (io.ReadCloser, error) {
	if it.closed.Load() {
		return nil, errors.Wrap(uapi.EBADF, "link is closed")
	}
	return it.l.open()
}

// open is prepare_seq_file: a session on the link.
func (it *iterLink) open() (io.ReadCloser, error) {
	k := it.k
	code, err := it.prog.interpCode()
	if err != nil {
		return nil, err
	}
	s := &iterSession{l: it, code: code, id: sessionID.Add(1), buf: make([]byte, iterBufSize)}
	size := uint64(iterValues)
	if it.m != nil {
		src := &mapElemSource{s: s, walker: it.m.Ops.(maps.SeqWalker)}
		// Room for a per-CPU map's values.
		src.valueLen = uint64(maps.RoundUp8(it.m.ValueSize)) * uint64(k.NumCPUs())
		size += src.valueLen
		s.src = src
	} else if it.prog.iter.name == "task" {
		s.src = &taskSource{s: s}
	} else {
		s.src = &mapsSource{s: s}
	}
	// One area for what the program is handed: the context, the meta,
	// the seq_file, and what the target copies.
	if s.area, err = k.mem.Vmalloc(size, mem.PermRW, "bpf_iter_priv_data"); err != nil {
		return nil, err
	}
	it.prog.get()
	if it.m != nil {
		it.m.GetUser()
	}
	k.iterSessions.Store(s.area+iterSeq, s)
	return s, nil
}

// Offsets in a session's area of simulated memory.
const (
	iterCtx    = 0   // struct bpf_iter__<target>: 4 slots at most
	iterMeta   = 32  // struct bpf_iter_meta
	iterSeq    = 64  // struct seq_file (bpfsim's has no fields)
	iterIndex  = 72  // an array's u32 index
	iterHeader = 80  // a copy of a struct bpf_map
	iterValues = 144 // a per-CPU map's values
)

// iterSession is an open iterator file: struct seq_file with its
// struct bpf_iter_priv_data.
type iterSession struct {
	l    *iterLink
	code *interp.Program
	id   uint64
	area uint64
	src  iterSource

	mu sync.Mutex
	// buf, count and from are the seq_file's buffer, its fill and where
	// the next read copies from.
	buf         []byte
	count, from int
	// pos is where the next read starts (bucket_id and skip_elems, an
	// index, a map id).
	pos      maps.SeqPos
	seqNum   uint64
	doneStop bool
	closed   bool
	// err is an error of the walk that is not an errno of read(2): a
	// program that faulted.
	err error
}

// iterSource is a target's walk, its struct bpf_iter_seq_info.
type iterSource interface {
	// find is the seq_file's start at pos, and its next at the
	// position after the last object's: the object there or after it,
	// and its position; ok is false at the walk's end.
	find(pos maps.SeqPos) (obj iterObj, at maps.SeqPos, ok bool)
	// args fills the context's slots after meta for obj, nil at the
	// walk's end.
	args(obj *iterObj, slots []uint64) error
	// put drops what find took for obj.
	put(obj *iterObj)
}

// iterObj is an object of a walk: a map's element (a key and a value in
// simulated memory, key 0 for an array's, whose index is idx), or a map.
type iterObj struct {
	key, value uint64
	idx        uint32
	m          *maps.Map
}

// overflowed is seq_has_overflowed.
func (s *iterSession) overflowed() bool { return s.count == len(s.buf) }

// show runs the program on obj (nil: the walk's end, in stop) and
// reports whether it asked for the object again.
func (s *iterSession) show(obj *iterObj) (again bool, err error) {
	k := s.l.k
	var b [64]byte
	le := binary.LittleEndian
	slots := make([]uint64, 3)
	if err := s.src.args(obj, slots); err != nil {
		return false, err
	}
	le.PutUint64(b[iterCtx:], s.area+iterMeta)
	for i, v := range slots {
		le.PutUint64(b[iterCtx+8+8*i:], v)
	}
	le.PutUint64(b[iterMeta:], s.area+iterSeq)
	le.PutUint64(b[iterMeta+8:], s.id)
	le.PutUint64(b[iterMeta+16:], s.seqNum)
	if err := k.mem.Write(s.area, b[:]); err != nil {
		return false, err
	}
	r0, err := k.runIter(s.l.prog, s.code, s.area+iterCtx)
	if err != nil {
		return false, err
	}
	// bpf_iter_run_prog: 0 moves on, anything else retries (EAGAIN).
	return r0 != 0, nil
}

// mapElemSource is the bpf_map_elem target's walk of a map (hashtab.c's
// and arraymap.c's bpf_iter_seq_info): the map, its element's key (an
// array's index copied into the session) and value (a per-CPU map's
// copied, every possible CPU's).
type mapElemSource struct {
	s        *iterSession
	walker   maps.SeqWalker
	valueLen uint64
}

func (w *mapElemSource) find(pos maps.SeqPos) (iterObj, maps.SeqPos, bool) {
	key, idx, value, at, ok := w.walker.SeqFind(0, pos)
	return iterObj{key: key, value: value, idx: idx}, at, ok
}

func (w *mapElemSource) args(obj *iterObj, slots []uint64) error {
	s := w.s
	slots[0] = s.l.m.Addr
	if obj == nil {
		return nil
	}
	key, value := obj.key, obj.value
	if key == 0 {
		key = s.area + iterIndex
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], obj.idx)
		if err := s.l.k.mem.Write(key, b[:]); err != nil {
			return err
		}
	}
	if s.l.percpu {
		var err error
		if value, err = w.copyPercpu(value); err != nil {
			return err
		}
	}
	slots[1], slots[2] = key, value
	return nil
}

func (w *mapElemSource) put(*iterObj) {}

// copyPercpu copies every possible CPU's copy of the value whose CPU 0
// copy is at value into the session's buffer, each rounded up to 8
// bytes, as bpf_iter's percpu_value_buf.
func (w *mapElemSource) copyPercpu(value uint64) (uint64, error) {
	s := w.s
	k := s.l.k
	size := uint64(s.l.m.ValueSize)
	step := uint64(maps.RoundUp8(s.l.m.ValueSize))
	base := value - k.percpu.Offset(0)
	out := make([]byte, w.valueLen)
	for cpu := 0; cpu < k.NumCPUs(); cpu++ {
		if err := k.mem.Read(base+k.percpu.Offset(cpu), out[uint64(cpu)*step:uint64(cpu)*step+size]); err != nil {
			return 0, err
		}
	}
	addr := s.area + iterValues
	return addr, k.mem.Write(addr, out)
}

// mapsSource is the bpf_map target's walk (map_iter.c): every map alive,
// by id, each held while the program sees it (bpf_map_get_curr_or_next).
// The program sees the map's struct bpf_map: at the map's address for
// the types whose object starts with one (maps.Type.Header), a copy in
// the session for the others.
type mapsSource struct{ s *iterSession }

func (w *mapsSource) find(pos maps.SeqPos) (iterObj, maps.SeqPos, bool) {
	k := w.s.l.k
	from := uint64(pos.Bucket) + uint64(pos.Skip)
	for {
		var best *maps.Map
		k.objs.mu.RLock()
		for id, m := range k.objs.maps {
			if uint64(id) >= from && (best == nil || id < best.ID) {
				best = m
			}
		}
		k.objs.mu.RUnlock()
		if best == nil {
			return iterObj{}, maps.SeqPos{Bucket: ^uint32(0)}, false
		}
		if best.TryGet() {
			return iterObj{m: best}, maps.SeqPos{Bucket: best.ID}, true
		}
		from = uint64(best.ID) + 1 // on its way out: the next one
	}
}

func (w *mapsSource) args(obj *iterObj, slots []uint64) error {
	if obj == nil {
		return nil
	}
	m := obj.m
	if m.Type.Header {
		slots[0] = m.Addr
		return nil
	}
	slots[0] = w.s.area + iterHeader
	return w.s.l.k.mem.Write(slots[0], m.Header())
}

func (w *mapsSource) put(obj *iterObj) { obj.m.Put() }

// taskSource is the task target's walk (task_iter.c with
// BPF_TASK_ITER_ALL): every live task, by pid, each at its own
// task_struct (tasktable.go).
type taskSource struct{ s *iterSession }

func (w *taskSource) find(pos maps.SeqPos) (iterObj, maps.SeqPos, bool) {
	k := w.s.l.k
	from := uint64(pos.Bucket) + uint64(pos.Skip)
	for {
		pid, ok := k.tasks.next(from)
		if !ok {
			return iterObj{}, maps.SeqPos{Bucket: ^uint32(0)}, false
		}
		addr, err := k.taskPage(pid, 0)
		if err == nil && addr != 0 {
			return iterObj{key: addr}, maps.SeqPos{Bucket: pid}, true
		}
		from = uint64(pid) + 1 // exited meanwhile: the next one
	}
}

func (w *taskSource) args(obj *iterObj, slots []uint64) error {
	if obj != nil {
		slots[0] = obj.key
	}
	return nil
}

func (w *taskSource) put(*iterObj) {}

// runIter runs an iterator program on CPU 0 with ctx in r1, under RCU.
func (k *Kernel) runIter(p *Program, code *interp.Program, ctx uint64) (uint64, error) {
	c, err := k.cpu(0)
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.machine
	m.MaxInsns, m.Packet = DefaultMaxInsns, interp.Packet{}
	c.runType = p.typ
	k.rcu.readLock(c.ID)
	var r0 uint64
	if p.jit != nil {
		r0, err = k.runJIT(c, p, ctx, 0)
	} else {
		r0, err = m.Run(code, ctx, 0)
	}
	c.releaseSpinLock()
	k.rcu.readUnlock(c.ID)
	if err != nil {
		return 0, errors.Wrapf(err, "program %s", p.name)
	}
	return r0, nil
}

// Read is bpf_seq_read.
func (s *iterSession) Read(out []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, errors.Wrap(uapi.EBADF, "iterator is closed")
	}
	if s.err != nil {
		return 0, s.err
	}
	n, err := s.read(out)
	if err != nil {
		var errno uapi.Errno
		if !errors.As(err, &errno) {
			s.err = err
		}
		return 0, err
	}
	if n == 0 && len(out) > 0 {
		return 0, io.EOF
	}
	return n, nil
}

// find is the seq_file's start at s.pos, and next's after moving it on:
// the object there or after it, s.pos following it.
func (s *iterSession) find() (iterObj, bool) {
	obj, at, ok := s.src.find(s.pos)
	s.pos = at
	return obj, ok
}

// showPut shows obj and drops what finding it took.
func (s *iterSession) showPut(obj *iterObj) (bool, error) {
	defer s.src.put(obj)
	return s.show(obj)
}

// read is one bpf_seq_read.
func (s *iterSession) read(out []byte) (int, error) {
	size := len(out)
	if s.count > 0 {
		n := copy(out, s.buf[s.from:s.from+min(s.count, size)])
		s.count -= n
		s.from += n
		return n, nil
	}
	s.from = 0
	obj, ok := s.find()
	if ok {
		again, err := s.showPut(&obj)
		if err != nil {
			return 0, err
		}
		if again || s.overflowed() {
			s.count = 0
			return 0, refusal(again, "first object")
		}
		for objs := 1; ; objs++ {
			offs := s.count
			s.pos = s.pos.Next()
			if obj, ok = s.find(); !ok {
				break
			}
			s.seqNum++
			if s.count >= size {
				s.src.put(&obj)
				break
			}
			if objs >= maxIterObjects {
				s.src.put(&obj)
				if offs == 0 {
					return 0, errors.Wrap(uapi.EAGAIN, "too many objects in one read")
				}
				break
			}
			again, err := s.showPut(&obj)
			if err != nil {
				return 0, err
			}
			if again || s.overflowed() {
				s.count = offs
				if offs == 0 {
					return 0, refusal(again, "object")
				}
				break
			}
		}
	}
	if !ok {
		// The walk's end: the program runs once with no object,
		// unless it already did.
		offs := s.count
		if !s.doneStop {
			if _, err := s.show(nil); err != nil {
				return 0, err
			}
		}
		if !s.overflowed() {
			s.doneStop = true
		} else {
			s.count = offs
			if offs == 0 {
				return 0, errors.Wrap(uapi.E2BIG, "the iterator program's last output overflows its buffer")
			}
		}
	}
	n := copy(out, s.buf[:min(s.count, size)])
	s.count -= n
	s.from = n
	return n, nil
}

// refusal is the error of a read whose first object asked to be shown
// again (EAGAIN) or overflowed the buffer alone (E2BIG).
func refusal(again bool, what string) error {
	if again {
		return errors.Wrapf(uapi.EAGAIN, "the iterator program asked for its %s again", what)
	}
	return errors.Wrapf(uapi.E2BIG, "the %s's output overflows the iterator's buffer alone", what)
}

// Close ends the walk, dropping its program and map.
func (s *iterSession) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	k := s.l.k
	k.iterSessions.Delete(s.area + iterSeq)
	_ = k.mem.Free(s.area)
	if s.l.m != nil {
		s.l.m.PutUser()
	}
	s.l.prog.put()
	return nil
}

// seqFile returns the session whose seq_file is at addr.
func (k *Kernel) seqFile(addr uint64) (*iterSession, error) {
	v, ok := k.iterSessions.Load(addr)
	if !ok {
		return nil, errors.Wrapf(uapi.EFAULT, "%#x is no seq_file", addr)
	}
	return v.(*iterSession), nil
}

// The seq_file helpers (kernel/trace/bpf_trace.c), offered to iterator
// programs only: bpf_seq_printf formats as bpf_snprintf does (its format
// is checked when it runs, not by the verifier) and bpf_seq_write copies
// bytes; both return -EOVERFLOW once the buffer has overflowed, which
// makes the read show the object again.
var (
	seqPrintfProto = &verifier.FuncProto{GPLOnly: true,
		Args: [5]verifier.ArgType{verifier.ArgPtrToBTFID, verifier.ArgPtrToMem, verifier.ArgConstSize,
			verifier.ArgPtrToMemOrNull, verifier.ArgConstSizeOrZero},
		ArgStruct: [5]string{"seq_file"}}
	seqWriteProto = &verifier.FuncProto{GPLOnly: true,
		Args:      [5]verifier.ArgType{verifier.ArgPtrToBTFID, verifier.ArgPtrToMem, verifier.ArgConstSizeOrZero},
		ArgStruct: [5]string{"seq_file"}}
)

func (k *Kernel) registerSeqHelpers() {
	for _, h := range []*Helper{
		{ID: funcSeqPrintf, Proto: seqPrintfProto, Fn: k.helperSeqPrintf},
		{ID: funcSeqWrite, Proto: seqWriteProto, Fn: k.helperSeqWrite},
	} {
		if err := k.RegisterHelper(h); err != nil {
			panic(err) // the table has unique ids
		}
		k.helperTypes[h.ID] = []ebpf.ProgramType{ebpf.Tracing}
	}
}

// helperSeqPrintf is bpf_seq_printf(m, fmt, fmt_size, data, data_len).
func (k *Kernel) helperSeqPrintf(m *interp.Machine, seq, fmtAddr, fmtSize, args, dataLen uint64) (uint64, error) {
	s, err := k.seqFile(seq)
	if err != nil {
		return 0, err
	}
	argv, e, err := formatArgs(m, args, dataLen)
	if err != nil || e != 0 {
		return errnoRet(e), err
	}
	format, e, err := readFormat(m, fmtAddr, fmtSize)
	if err != nil || e != 0 {
		return errnoRet(e), err
	}
	text, _, err := bprintf(m, format, argv)
	if err != nil {
		return errnoRet(err.(uapi.Errno)), nil
	}
	return s.write([]byte(text)), nil
}

// helperSeqWrite is bpf_seq_write(m, data, len).
func (k *Kernel) helperSeqWrite(m *interp.Machine, seq, data, n, _, _ uint64) (uint64, error) {
	s, err := k.seqFile(seq)
	if err != nil {
		return 0, err
	}
	if err := checkHelperSize(m, n); err != nil {
		return 0, err
	}
	b := make([]byte, uint32(n))
	if err := m.ReadMem(data, b); err != nil {
		return 0, err
	}
	return s.write(b), nil
}

// write appends b to the buffer as seq_bprintf and seq_write do: whole,
// with a byte to spare, or not at all, the buffer then marked overflowed.
// It returns the helper's result.
func (s *iterSession) write(b []byte) uint64 {
	if s.count < len(s.buf) && s.count+len(b) < len(s.buf) {
		s.count += copy(s.buf[s.count:], b)
		return 0
	}
	s.count = len(s.buf)
	return errnoRet(uapi.EOVERFLOW)
}
