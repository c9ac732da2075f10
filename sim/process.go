package sim

import (
	"github.com/cilium/ebpf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Process is a simulated user-space process: the owner of a file
// descriptor table. Handles on maps, programs and perf events are fds in
// the table of the process that opened them, and a program refers to maps by fds of the process
// that loads it. Closing a process closes its fds, as exiting does, with
// the kernel's consequences: a map whose last user reference goes runs
// its map_release_uref hook (a prog array empties), a perf event array
// drops the events installed through a closed file unless it was made
// with BPF_F_PRESERVE_ELEMS.
//
// A kernel starts with one process, which Kernel.NewMap and the other
// Kernel methods use; NewProcess makes more.
type Process struct {
	k   *Kernel
	pid int
	fds fdTable
}

// NewProcess starts a process with an empty fd table.
func (k *Kernel) NewProcess() *Process {
	p := &Process{k: k, pid: int(k.nextPID.Add(1))}
	// Its main thread is a live task (tasktable.go); a pid taken by
	// AddTask before stays that task's.
	t := processTask(uint32(p.pid))
	if k.tasks.add(t) == nil {
		k.taskStarted(t) // tracepoint.go
	}
	return p
}

// InitProcess returns the process the Kernel's own methods (NewMap,
// NewProgram, ...) act for.
func (k *Kernel) InitProcess() *Process { return k.init }

// PID returns the process id, 1 for the kernel's first process.
func (p *Process) PID() int { return p.pid }

// Kernel returns the kernel the process runs on.
func (p *Process) Kernel() *Kernel { return p.k }

// Close closes every fd of the process, as its exit would. Handles of the
// process fail with EBADF afterwards, and it can open no more.
func (p *Process) Close() error {
	if !p.fds.isClosed() {
		p.fds.closeAll()
		// The main thread exits: its task storage goes.
		_ = p.k.ExitTask(uint32(p.pid))
	}
	return nil
}

// OpenFDs returns how many fds the process has open.
func (p *Process) OpenFDs() int { return p.fds.count() }

// NewMap creates a map from a cilium/ebpf MapSpec; the handle is an fd of
// this process. See Kernel.NewMap.
func (p *Process) NewMap(spec *ebpf.MapSpec) (*Map, error) { return p.k.newMap(p, spec) }

// NewMapFromID opens the map with the given id (BPF_MAP_GET_FD_BY_ID):
// a new file on the map, with its own fd, like cilium/ebpf's
// NewMapFromID.
func (p *Process) NewMapFromID(id uint32) (*Map, error) {
	p.k.objs.mu.Lock()
	m, ok := p.k.objs.maps[id]
	// A map whose last reference is going stays listed until its release
	// runs: it cannot be opened any more (bpf_map_inc_not_zero).
	ok = ok && m.TryGetUser()
	p.k.objs.mu.Unlock()
	if !ok {
		return nil, errors.Wrapf(uapi.ENOENT, "no map with id %d", id)
	}
	return p.installMapFile(m, readWrite)
}

// NewMapFromID opens a map by id in the kernel's first process.
func (k *Kernel) NewMapFromID(id uint32) (*Map, error) { return k.init.NewMapFromID(id) }

// newMapHandle opens a new file on m, for reading and writing, and
// installs an fd for it. It takes over the caller's reference on m, which
// becomes the file's user reference.
func (p *Process) newMapHandle(m *maps.Map) (*Map, error) {
	return p.newMapFile(m, readWrite)
}

// newMapFile is newMapHandle with the file's access mode.
func (p *Process) newMapFile(m *maps.Map, access fileAccess) (*Map, error) {
	m.GetUser()
	m.Put()
	return p.installMapFile(m, access)
}

// installMapFile opens a file with the given access mode, holding the
// caller's user reference on m.
func (p *Process) installMapFile(m *maps.Map, access fileAccess) (*Map, error) {
	f := p.k.newFile(m, releaseMapFile)
	fd, err := p.fds.install(f)
	if err != nil {
		p.k.openFiles.Add(-1) // never opened
		m.PutUser()
		return nil, err
	}
	return &Map{k: p.k, proc: p, m: m, fd: fd, file: f, access: access}, nil
}

// releaseMapFile is the close of a map's last fd on one file (bpf_map_release):
// the type's map_release sees the file, then the file's user reference
// goes.
func releaseMapFile(f *file) {
	f.k.openFiles.Add(-1)
	m := f.obj.(*maps.Map)
	if r, ok := m.Ops.(maps.FileReleaser); ok {
		r.ReleaseFile(f.id)
	}
	m.PutUser()
}

// Clone returns a new handle on the same file, with its own fd in the same
// process (dup), like cilium/ebpf's Map.Clone. The file, and what a perf
// event array keeps for it, lives until every fd on it is closed.
func (h *Map) Clone() (*Map, error) {
	if err := h.check(); err != nil {
		return nil, err
	}
	fd, err := h.proc.fds.install(h.file)
	if err != nil {
		return nil, err
	}
	return &Map{k: h.k, proc: h.proc, m: h.m, fd: fd, file: h.file, access: h.access}, nil
}

// File returns the identity of the open file description behind the
// handle: the same for clones, another for a handle opened by id.
func (h *Map) File() maps.File { return h.file.id }

// Process returns the process whose fd the handle is.
func (h *Map) Process() *Process { return h.proc }

// mapFromFD returns the map an fd of the process refers to.
func (p *Process) mapFromFD(fd int) (*maps.Map, *file, error) {
	f, err := p.fds.get(fd)
	if err != nil {
		return nil, nil, err
	}
	m, ok := f.obj.(*maps.Map)
	if !ok {
		return nil, nil, errors.Wrapf(uapi.EINVAL, "fd %d is not a map", fd)
	}
	return m, f, nil
}

// NewProgramFromID opens the program with the given id
// (BPF_PROG_GET_FD_BY_ID): a new file on the program, holding a reference
// of its own, with its own fd, like cilium/ebpf's NewProgramFromID. An id
// never given, or whose program's last reference has gone, is ENOENT.
func (p *Process) NewProgramFromID(id uint32) (*Program, error) {
	t := &p.k.progs
	t.mu.RLock()
	prog, ok := t.byID[id]
	// The id goes from the table as the last reference goes; one found
	// while that happens cannot be opened (bpf_prog_inc_not_zero).
	ok = ok && prog.tryGet()
	t.mu.RUnlock()
	if !ok {
		return nil, errors.Wrapf(uapi.ENOENT, "no program with id %d", id)
	}
	return p.installProgFile(prog)
}

// NewProgramFromID opens a program by id in the kernel's first process.
func (k *Kernel) NewProgramFromID(id uint32) (*Program, error) { return k.init.NewProgramFromID(id) }

// installProgFile opens a file on prog holding the caller's reference on
// it, and returns a new handle with an fd of this process.
func (p *Process) installProgFile(prog *Program) (*Program, error) {
	h := &Program{bpfProg: prog.bpfProg, proc: p}
	h.file = p.k.newFile(prog.loader, releaseProgFile)
	fd, err := p.fds.install(h.file)
	if err != nil {
		p.k.openFiles.Add(-1) // never opened
		prog.put()
		return nil, err
	}
	h.fd = fd
	return h, nil
}

// NewProgram loads a program whose map references are fds of this
// process. See Kernel.NewProgram.
func (p *Process) NewProgram(spec *ebpf.ProgramSpec) (*Program, error) {
	return p.NewProgramWithOptions(spec, ProgramOptions{})
}

// NewProgramWithOptions is NewProgram with load options.
func (p *Process) NewProgramWithOptions(spec *ebpf.ProgramSpec, opts ProgramOptions) (*Program, error) {
	opts.proc = p
	return p.k.NewProgramWithOptions(spec, opts)
}

// newFile makes an open file description on obj; release runs when its
// last fd closes.
func (k *Kernel) newFile(obj any, release func(*file)) *file {
	k.openFiles.Add(1)
	return &file{k: k, id: maps.File(k.nextFile.Add(1)), obj: obj, release: release}
}

// Objects counts what a kernel holds: the objects a leak check looks at.
type Objects struct {
	// Maps counts the maps not yet freed, including those whose last
	// reference went but whose grace period has not ended.
	Maps int
	// Programs counts the programs not yet freed, including those whose
	// last reference went but whose grace period has not ended.
	Programs int
	// PerfEvents counts the perf events not yet freed.
	PerfEvents int
	// Files counts the open file descriptions, in every process.
	Files int
	// PendingFrees counts the RCU callbacks waiting for a grace period.
	PendingFrees int
	// JITImages counts the JIT images in executable memory.
	JITImages int
}

// Objects returns what the kernel holds now.
func (k *Kernel) Objects() Objects {
	k.objs.mu.RLock()
	n := len(k.objs.byAddr)
	k.objs.mu.RUnlock()
	o := Objects{Maps: n, Programs: int(k.progs.live.Load()), PerfEvents: int(k.perfEvents.Load()), Files: int(k.openFiles.Load()), PendingFrees: k.rcu.pendingCallbacks()}
	if k.jits.ready.Load() {
		o.JITImages = k.jits.jit.Allocator().Stats().Images
	}
	return o
}

// CheckLeaks waits for every deferred free and returns an error naming
// what is still alive: after every process is closed (and every handle of
// the kernel's first process), a kernel that leaks nothing holds no
// object.
func (k *Kernel) CheckLeaks() error {
	k.SynchronizeRCU()
	if o := k.Objects(); o != (Objects{}) {
		return errors.Errorf("leak: %d maps, %d programs, %d perf events, %d open files, %d pending frees, %d JIT images are left", o.Maps, o.Programs, o.PerfEvents, o.Files, o.PendingFrees, o.JITImages)
	}
	return nil
}
