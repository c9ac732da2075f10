//go:build linux

package sim_test

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/pkg/errors"
	"golang.org/x/sys/unix"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Object lifetime scenarios are played in two worlds, bpfsim and this
// machine's kernel, through the same user-space moves: fds on maps
// (created, duplicated, opened again by id, closed), perf events,
// programs, updates of maps whose values are fds, test runs on a chosen
// CPU, and the lists of map and program ids. A scenario names its handles
// ("A", "A'", "B"...) and its objects by the handle that created them, so
// that what one world observes can be written down in names and compared
// with what the other observes.

// lifeWorld is a kernel, simulated or real, as lifetime scenarios drive it.
// Operations on a handle the scenario already closed are the scenario's
// own bug and fail the test.
type lifeWorld interface {
	newMap(h string, spec *ebpf.MapSpec) error
	// dup makes handle h a dup of from: another fd on the same file.
	dup(h, from string) error
	// openByID makes handle h a new file on the object obj, found by its id.
	openByID(h, obj string) error
	closeMap(h string) error
	newPerfEvent(h string, cpu int) error
	closePerfEvent(h string) error
	// load loads a program whose map references are the fds fd gives.
	load(h string, typ ebpf.ProgramType, insns func(fd func(h string) int) asm.Instructions) error
	closeProg(h string) error
	// update stores the object of handle value (a map, program or perf
	// event) under key of the map, through handle via.
	update(via string, key uint32, value string) error
	updateU64(via string, key uint32, v uint64) error
	del(via string, key uint32) error
	// lookupObj returns the name of the object whose id key of a map of
	// fds holds.
	lookupObj(via string, key uint32) (string, error)
	// run test-runs the program on cpu (raw tracepoints; other types run
	// wherever the kernel runs them) and returns its 32-bit result.
	run(prog string, cpu int) (int32, error)
	// listed reports whether obj's id is in the kernel's id list.
	listed(obj string) bool
	isOpen(h string) bool
	// settle lets deferred frees run: bpfsim ends an RCU grace period;
	// the kernel's deferred work has no user-space trigger, and scenarios
	// poll for it instead (lifeScenario.play).
	settle()
	// closeAll closes every handle still open.
	closeAll()
}

// lifeBook is the bookkeeping both worlds share: which object each handle
// is on, object ids, open handles.
type lifeBook struct {
	objOf  map[string]string // handle -> object
	ids    map[string]uint32 // object -> id
	isProg map[string]bool   // object -> is a program
	open   map[string]bool   // handle -> open
	order  []string          // handles, in creation order
}

func newLifeBook() lifeBook {
	return lifeBook{objOf: map[string]string{}, ids: map[string]uint32{}, isProg: map[string]bool{}, open: map[string]bool{}}
}

func (b *lifeBook) add(h, obj string) error {
	if _, dup := b.objOf[h]; dup {
		return fmt.Errorf("scenario bug: handle %q made twice", h)
	}
	b.objOf[h] = obj
	b.open[h] = true
	b.order = append(b.order, h)
	return nil
}

func (b *lifeBook) mustOpen(h string) error {
	if !b.open[h] {
		return fmt.Errorf("scenario bug: handle %q is not open", h)
	}
	return nil
}

func (b *lifeBook) isOpen(h string) bool { return b.open[h] }

// objByID names the object with id among the prog or map objects.
func (b *lifeBook) objByID(id uint32, prog bool) string {
	for obj, x := range b.ids {
		if x == id && b.isProg[obj] == prog {
			return obj
		}
	}
	return fmt.Sprintf("id#%d(not ours)", id)
}

// scenarioBug marks errors that come from a scenario using a handle wrongly,
// not from either kernel.
func scenarioBug(err error) bool { return err != nil && strings.HasPrefix(err.Error(), "scenario bug") }

// simLife is bpfsim: a fresh kernel per scenario and one process in it.
type simLife struct {
	lifeBook
	k      *sim.Kernel
	p      *sim.Process
	maps   map[string]*sim.Map
	progs  map[string]*sim.Program
	events map[string]*sim.PerfEvent
}

func newSimLife() (*simLife, error) {
	k, err := sim.NewKernel(&sim.Options{CPUs: 2, TailCallCount: kernelLikeOptions().TailCallCount})
	if err != nil {
		return nil, err
	}
	return &simLife{lifeBook: newLifeBook(), k: k, p: k.NewProcess(),
		maps: map[string]*sim.Map{}, progs: map[string]*sim.Program{}, events: map[string]*sim.PerfEvent{}}, nil
}

func (w *simLife) newMap(h string, spec *ebpf.MapSpec) error {
	m, err := w.p.NewMap(spec)
	if err != nil {
		return err
	}
	w.maps[h], w.ids[h] = m, m.ID()
	return w.add(h, h)
}

func (w *simLife) dup(h, from string) error {
	if err := w.mustOpen(from); err != nil {
		return err
	}
	m, err := w.maps[from].Clone()
	if err != nil {
		return err
	}
	w.maps[h] = m
	return w.add(h, w.objOf[from])
}

func (w *simLife) openByID(h, obj string) error {
	m, err := w.p.NewMapFromID(w.ids[obj])
	if err != nil {
		return err
	}
	w.maps[h] = m
	return w.add(h, obj)
}

func (w *simLife) closeMap(h string) error {
	if err := w.mustOpen(h); err != nil {
		return err
	}
	w.open[h] = false
	return w.maps[h].Close()
}

func (w *simLife) newPerfEvent(h string, cpu int) error {
	e, err := w.p.NewPerfEvent(cpu, 1)
	if err != nil {
		return err
	}
	w.events[h] = e
	return w.add(h, h)
}

func (w *simLife) closePerfEvent(h string) error {
	if err := w.mustOpen(h); err != nil {
		return err
	}
	w.open[h] = false
	return w.events[h].Close()
}

func (w *simLife) fd(h string) int {
	switch {
	case w.maps[h] != nil:
		return w.maps[h].FD()
	case w.progs[h] != nil:
		return w.progs[h].FD()
	case w.events[h] != nil:
		return w.events[h].FD()
	}
	return -1
}

func (w *simLife) load(h string, typ ebpf.ProgramType, insns func(func(string) int) asm.Instructions) error {
	p, err := w.p.NewProgram(&ebpf.ProgramSpec{Name: "life", Type: typ, License: "GPL", Instructions: insns(w.fd)})
	if err != nil {
		return err
	}
	w.progs[h], w.ids[h], w.isProg[h] = p, p.ID(), true
	return w.add(h, h)
}

func (w *simLife) closeProg(h string) error {
	if err := w.mustOpen(h); err != nil {
		return err
	}
	w.open[h] = false
	return w.progs[h].Close()
}

func (w *simLife) update(via string, key uint32, value string) error {
	if err := w.mustOpen(via); err != nil {
		return err
	}
	if err := w.mustOpen(value); err != nil {
		return err
	}
	return w.maps[via].Update(key, uint32(w.fd(value)), ebpf.UpdateAny)
}

func (w *simLife) updateU64(via string, key uint32, v uint64) error {
	if err := w.mustOpen(via); err != nil {
		return err
	}
	return w.maps[via].Update(key, v, ebpf.UpdateAny)
}

func (w *simLife) del(via string, key uint32) error {
	if err := w.mustOpen(via); err != nil {
		return err
	}
	return w.maps[via].Delete(key)
}

func (w *simLife) lookupObj(via string, key uint32) (string, error) {
	if err := w.mustOpen(via); err != nil {
		return "", err
	}
	var id uint32
	if err := w.maps[via].Lookup(key, &id); err != nil {
		return "", err
	}
	return w.objByID(id, w.maps[via].Type() == ebpf.ProgramArray), nil
}

func (w *simLife) run(prog string, cpu int) (int32, error) {
	if err := w.mustOpen(prog); err != nil {
		return 0, err
	}
	p := w.progs[prog]
	opts := &sim.RunOptions{CPU: uint32(cpu)}
	if p.Type() == ebpf.RawTracepoint {
		opts.Context = make([]byte, 8)
	} else {
		opts.Data = make([]byte, 64)
	}
	ret, err := p.Run(opts)
	return int32(ret), err
}

func (w *simLife) listed(obj string) bool {
	ids := w.k.MapIDs()
	if w.isProg[obj] {
		ids = w.k.ProgramIDs()
	}
	for _, id := range ids {
		if id == w.ids[obj] {
			return true
		}
	}
	return false
}

func (w *simLife) settle() { w.k.SynchronizeRCU() }

func (w *simLife) closeAll() {
	for _, h := range w.order {
		if !w.open[h] {
			continue
		}
		w.open[h] = false
		switch {
		case w.maps[h] != nil:
			w.maps[h].Close()
		case w.progs[h] != nil:
			w.progs[h].Close()
		case w.events[h] != nil:
			w.events[h].Close()
		}
	}
}

// kernLife is this machine's kernel: cilium/ebpf handles, raw dup and
// close on their fds, perf events opened as cilium/ebpf's perf reader
// opens them.
type kernLife struct {
	lifeBook
	maps   map[string]*ebpf.Map
	progs  map[string]*ebpf.Program
	events map[string]int
	rings  [][]byte
}

func newKernLife() *kernLife {
	return &kernLife{lifeBook: newLifeBook(), maps: map[string]*ebpf.Map{}, progs: map[string]*ebpf.Program{}, events: map[string]int{}}
}

func mapID(m *ebpf.Map) (uint32, error) {
	info, err := m.Info()
	if err != nil {
		return 0, err
	}
	id, ok := info.ID()
	if !ok {
		return 0, errors.New("no map id")
	}
	return uint32(id), nil
}

func (w *kernLife) newMap(h string, spec *ebpf.MapSpec) error {
	m, err := ebpf.NewMap(spec)
	if err != nil {
		return err
	}
	id, err := mapID(m)
	if err != nil {
		m.Close()
		return err
	}
	w.maps[h], w.ids[h] = m, id
	return w.add(h, h)
}

// dup is dup(2) on the fd, wrapped for cilium/ebpf's map operations
// (NewMapFromFD takes the fd over without duplicating it again).
func (w *kernLife) dup(h, from string) error {
	if err := w.mustOpen(from); err != nil {
		return err
	}
	fd, err := unix.Dup(w.maps[from].FD())
	if err != nil {
		return err
	}
	m, err := ebpf.NewMapFromFD(fd)
	if err != nil {
		unix.Close(fd)
		return err
	}
	w.maps[h] = m
	return w.add(h, w.objOf[from])
}

func (w *kernLife) openByID(h, obj string) error {
	m, err := ebpf.NewMapFromID(ebpf.MapID(w.ids[obj]))
	if err != nil {
		return err
	}
	w.maps[h] = m
	return w.add(h, obj)
}

// closeMap is close(2) on the handle's fd.
func (w *kernLife) closeMap(h string) error {
	if err := w.mustOpen(h); err != nil {
		return err
	}
	w.open[h] = false
	return w.maps[h].Close()
}

// newPerfEvent opens a BPF output event on cpu as cilium/ebpf's perf
// reader does, and maps its ring (one data page), without which
// bpf_perf_event_output has nowhere to write (ENOSPC).
func (w *kernLife) newPerfEvent(h string, cpu int) error {
	attr := unix.PerfEventAttr{
		Type:        unix.PERF_TYPE_SOFTWARE,
		Config:      unix.PERF_COUNT_SW_BPF_OUTPUT,
		Sample_type: unix.PERF_SAMPLE_RAW,
		Bits:        unix.PerfBitWatermark,
		Wakeup:      1,
	}
	attr.Size = uint32(unsafe.Sizeof(attr))
	fd, err := unix.PerfEventOpen(&attr, -1, cpu, -1, unix.PERF_FLAG_FD_CLOEXEC)
	if err != nil {
		return err
	}
	ring, err := unix.Mmap(fd, 0, 2*os.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return err
	}
	w.rings = append(w.rings, ring)
	w.events[h] = fd
	return w.add(h, h)
}

func (w *kernLife) closePerfEvent(h string) error {
	if err := w.mustOpen(h); err != nil {
		return err
	}
	w.open[h] = false
	return unix.Close(w.events[h])
}

func (w *kernLife) fd(h string) int {
	if m := w.maps[h]; m != nil {
		return m.FD()
	}
	if p := w.progs[h]; p != nil {
		return p.FD()
	}
	if fd, ok := w.events[h]; ok {
		return fd
	}
	return -1
}

func (w *kernLife) load(h string, typ ebpf.ProgramType, insns func(func(string) int) asm.Instructions) error {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "life", Type: typ, License: "GPL", Instructions: insns(w.fd)})
	if err != nil {
		return err
	}
	info, err := p.Info()
	if err != nil {
		p.Close()
		return err
	}
	id, _ := info.ID()
	w.progs[h], w.ids[h], w.isProg[h] = p, uint32(id), true
	return w.add(h, h)
}

func (w *kernLife) closeProg(h string) error {
	if err := w.mustOpen(h); err != nil {
		return err
	}
	w.open[h] = false
	return w.progs[h].Close()
}

func (w *kernLife) update(via string, key uint32, value string) error {
	if err := w.mustOpen(via); err != nil {
		return err
	}
	if err := w.mustOpen(value); err != nil {
		return err
	}
	return w.maps[via].Update(key, uint32(w.fd(value)), ebpf.UpdateAny)
}

func (w *kernLife) updateU64(via string, key uint32, v uint64) error {
	if err := w.mustOpen(via); err != nil {
		return err
	}
	return w.maps[via].Update(key, v, ebpf.UpdateAny)
}

func (w *kernLife) del(via string, key uint32) error {
	if err := w.mustOpen(via); err != nil {
		return err
	}
	return w.maps[via].Delete(key)
}

func (w *kernLife) lookupObj(via string, key uint32) (string, error) {
	if err := w.mustOpen(via); err != nil {
		return "", err
	}
	var id uint32
	if err := w.maps[via].Lookup(key, &id); err != nil {
		return "", err
	}
	return w.objByID(id, w.maps[via].Type() == ebpf.ProgramArray), nil
}

// bpfFTestRunOnCPU is BPF_F_TEST_RUN_ON_CPU: the kernel runs a raw
// tracepoint test on the CPU the attr names (through an IPI if it is not
// the caller's), which bpf_perf_event_output needs to find its event on
// the CPU it runs on.
const bpfFTestRunOnCPU = 1

func (w *kernLife) run(prog string, cpu int) (int32, error) {
	if err := w.mustOpen(prog); err != nil {
		return 0, err
	}
	p := w.progs[prog]
	opts := &ebpf.RunOptions{}
	if p.Type() == ebpf.RawTracepoint {
		opts.Context = make([]byte, 8)
		opts.CPU, opts.Flags = uint32(cpu), bpfFTestRunOnCPU
	} else {
		opts.Data = make([]byte, 64)
	}
	ret, err := p.Run(opts)
	return int32(ret), err
}

// listed walks the id list from just below the object's id: the object is
// listed if the next id there is its own (BPF_MAP_GET_NEXT_ID,
// BPF_PROG_GET_NEXT_ID). Other processes on this machine make their own
// objects; only this scenario's are looked at.
func (w *kernLife) listed(obj string) bool {
	id := w.ids[obj]
	if w.isProg[obj] {
		next, err := ebpf.ProgramGetNextID(ebpf.ProgramID(id - 1))
		return err == nil && uint32(next) == id
	}
	next, err := ebpf.MapGetNextID(ebpf.MapID(id - 1))
	return err == nil && uint32(next) == id
}

func (w *kernLife) settle() {}

func (w *kernLife) closeAll() {
	for _, h := range w.order {
		if !w.open[h] {
			continue
		}
		w.open[h] = false
		switch {
		case w.maps[h] != nil:
			w.maps[h].Close()
		case w.progs[h] != nil:
			w.progs[h].Close()
		default:
			if fd, ok := w.events[h]; ok {
				unix.Close(fd)
			}
		}
	}
	for _, r := range w.rings {
		unix.Munmap(r)
	}
	w.rings = nil
}

// lifeStep is one user-space move of a scenario. An eventual step is one
// whose consequences the kernel may carry out after the syscall returns
// (in a workqueue, or after an RCU grace period): bpfsim ends a grace
// period before observing, and the kernel is observed until it agrees
// or settleTimeout passes.
type lifeStep struct {
	name       string
	do         func(w lifeWorld) error
	eventually bool
}

// lifeScenario is a list of steps and what is observed after each: the
// programs' results, ids listed, slots read back.
type lifeScenario struct {
	name    string
	steps   []lifeStep
	observe func(w lifeWorld) string
}

// settleTimeout bounds the wait for the kernel's deferred work. On an idle
// machine it takes microseconds to milliseconds, but with every CPU busy
// (fuzzers, a parallel go test) the kernel's workqueues have been seen to
// need more than 3 s. The wait ends as soon as the observation agrees, so
// a generous bound costs only a run that is failing anyway.
const settleTimeout = 20 * time.Second

// play runs the scenario and returns one record per step: the step's
// errno and the observation after it. want, the other world's records,
// says what an eventual step waits for; nil observes at once.
func (s *lifeScenario) play(w lifeWorld, want []string) ([]string, error) {
	defer w.closeAll()
	var out []string
	for i, st := range s.steps {
		err := st.do(w)
		if scenarioBug(err) {
			return out, errors.Wrapf(err, "step %d %s", i, st.name)
		}
		rec := fmt.Sprintf("%s: errno %d", st.name, tcErrno(err))
		if st.eventually {
			w.settle()
		}
		obs := rec + " | " + s.observe(w)
		if st.eventually && i < len(want) {
			for deadline := time.Now().Add(settleTimeout); obs != want[i] && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond)
				obs = rec + " | " + s.observe(w)
			}
		}
		out = append(out, obs)
	}
	return out, nil
}

// lifeErr is a result or an errno, for observations.
func lifeErr(v any, err error) string {
	if err != nil {
		return fmt.Sprintf("errno %d", tcErrno(err))
	}
	return fmt.Sprint(v)
}

// listedObjs names the objects of objs listed in w's id lists.
func listedObjs(w lifeWorld, objs ...string) string {
	var l []string
	for _, o := range objs {
		if w.listed(o) {
			l = append(l, o)
		}
	}
	sort.Strings(l)
	return "listed [" + strings.Join(l, " ") + "]"
}

// enoent is -ENOENT as a helper returns it.
var enoent = -int32(uapi.ENOENT)
