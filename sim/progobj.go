package sim

import (
	"fmt"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/maps"
)

// Program objects: the kernel's struct bpf_prog as an object with an id
// (prog_idr) and a reference count (bpf_prog_inc, bpf_prog_put;
// kernel/bpf/syscall.c).
//
// A *Program is a user's handle on a loaded program (bpfProg): its open
// file holds one reference, which the close of its last fd drops; every
// other file on the program (opened by id or from a pin), every pin and
// every prog array slot holding it holds another. When the last reference
// goes, the
// id is released at once and the program's used maps are put after an RCU
// grace period (__bpf_prog_put_noref through call_rcu), so that a program
// still running on another simulated CPU, having reached this one by a
// tail call, keeps working with what it uses until it finishes.

// progTable is prog_idr and the count of programs not yet freed.
type progTable struct {
	mu     sync.RWMutex
	nextID uint32
	byID   map[uint32]*Program
	// live counts programs created and not yet freed: loaded, failed
	// loads not yet cleaned up, released ones whose grace period has not
	// ended.
	live atomic.Int64
}

// progObject is the program as the maps that hold it see it
// (maps.ProgObject). It is a separate type so that Get and Put stay off
// the user's *Program.
type progObject struct{ p *Program }

func (o *progObject) Get()             { o.p.get() }
func (o *progObject) Put()             { o.p.put() }
func (o *progObject) ObjectID() uint32 { return o.p.id }

// ExpectedAttachType is maps.AttachTyped.
func (o *progObject) ExpectedAttachType() uint32 { return uint32(o.p.attachType) }

// ProgOwner is what a program-holding map compares (bpf_prog_map_compatible):
// bpfsim always "JITs" (the fix-ups assume jit_requested), has no XDP
// fragments, no sleepable programs and no expected attach types yet.
func (o *progObject) ProgOwner() maps.ProgOwner {
	return maps.ProgOwner{Type: uint32(o.p.typ), Jited: o.p.jit != nil,
		RawContext: !o.p.ctxConverted && convertsCtx(o.p.typ)}
}

var _ maps.ProgObject = (*progObject)(nil)

// newProgram makes the object of a program being loaded, with the
// reference its handle will hold. It gets an id only once loaded
// (publish), as bpf_prog_alloc_id runs after bpf_prog_select_runtime.
func (k *Kernel) newProgram(typ ebpf.ProgramType, name string) *Program {
	p := &Program{bpfProg: &bpfProg{k: k, typ: typ, name: name}}
	p.loader = p
	p.obj.p = p
	p.refcnt.Store(1)
	k.progs.live.Add(1)
	return p
}

// publish gives a loaded program its id and its file descriptor.
func (k *Kernel) publish(p *Program) error {
	t := &k.progs
	t.mu.Lock()
	t.nextID++
	p.id = t.nextID
	if t.byID == nil {
		t.byID = map[uint32]*Program{}
	}
	t.byID[p.id] = p
	t.mu.Unlock()
	if p.proc == nil {
		p.proc = k.init
	}
	// The handle's reference becomes its file's.
	p.file = k.newFile(p, releaseProgFile)
	fd, err := p.proc.fds.install(p.file)
	if err != nil {
		k.openFiles.Add(-1) // never opened; the caller's Close puts
		p.file = nil
		return err
	}
	p.fd = fd
	return nil
}

// releaseProgFile is the close of a program's last fd on one file
// (bpf_prog_release): the file's reference goes.
func releaseProgFile(f *file) {
	f.k.openFiles.Add(-1)
	f.obj.(*Program).put()
}

func (p *Program) get() { p.refcnt.Add(1) }

// tryGet takes a reference unless the last one is already gone
// (bpf_prog_inc_not_zero).
func (p *Program) tryGet() bool {
	for {
		n := p.refcnt.Load()
		if n <= 0 {
			return false
		}
		if p.refcnt.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// put drops a reference (bpf_prog_put); the last one releases the id at
// once and frees the program after a grace period.
func (p *Program) put() {
	switch n := p.refcnt.Add(-1); {
	case n == 0:
		p.loader.release()
	case n < 0:
		panic(fmt.Sprintf("bpf_prog_put: program %d refcount went negative", p.id))
	}
}

// release is __bpf_prog_put_noref: the id goes now; the maps the program
// uses, and the prog arrays' records of it, after a grace period. A
// program that never got an id (a failed load) was never reachable from a
// running program, and is freed at once, as the kernel's load error path
// frees used maps directly.
func (p *Program) release() {
	k := p.k
	if p.id == 0 {
		p.free()
		return
	}
	k.progs.mu.Lock()
	delete(k.progs.byID, p.id)
	k.progs.mu.Unlock()
	k.rcu.callRCUObj(p)
}

func (p *Program) rcuFree() { p.free() }

// free puts the used maps (free_used_maps) and stops tracking the prog
// arrays its poke descriptors name.
func (p *Program) free() {
	p.k.dropProgAux(p.aux)
	p.releaseStructOps() // structops.go
	p.untrackPokes()
	for _, m := range p.usedMaps {
		m.Put()
	}
	p.usedMaps = nil
	if p.kfuncModules != nil {
		p.k.releaseModules(p.kfuncModules) // module.go
		p.kfuncModules = nil
	}
	p.codeOnce.Do(func() {}) // nothing compiles it any more
	if p.code != nil {
		p.code.Release()
	}
	if p.jit != nil {
		// bpf_jit_free: the image's memory goes back, refilled with
		// the break fault instruction.
		p.k.jitRemoveImage(p)
		if err := p.jit.Free(); err != nil {
			panic(fmt.Sprintf("bpfsim: freeing the JIT image of program %s: %v", p.name, err))
		}
		p.jit = nil
	}
	p.k.progs.live.Add(-1)
}

// ID returns the program's id, as bpftool shows it (0 for a program that
// failed to load).
func (p *Program) ID() uint32 { return p.id }

// FD returns the handle's simulated file descriptor, which prog array
// updates take as the value (a *Program is also accepted).
func (p *Program) FD() int { return p.fd }

// Process returns the process whose fd the handle is.
func (p *Program) Process() *Process { return p.proc }

// Refs returns the program's reference count: one for each open file on
// it (the loading handle's, those opened by id or from a pin), each pin,
// and each prog array slot holding it.
func (p *Program) Refs() int64 { return p.refcnt.Load() }

// ProgramIDs lists the ids of the programs loaded in the kernel, like
// `bpftool prog list`: a program whose last reference went is gone from
// the list at once, even if it still runs.
func (k *Kernel) ProgramIDs() []uint32 {
	k.progs.mu.RLock()
	defer k.progs.mu.RUnlock()
	ids := make([]uint32, 0, len(k.progs.byID))
	for id := range k.progs.byID {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

// LivePrograms counts the programs not yet freed: loaded ones, and
// released ones whose grace period has not ended. After SynchronizeRCU,
// with every handle closed and every prog array cleared, it is 0 unless
// something leaks.
func (k *Kernel) LivePrograms() int { return int(k.progs.live.Load()) }
