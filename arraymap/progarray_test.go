package arraymap_test

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/arraymap"
	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/maps/mapstest"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// fakeProg is a program as a prog array sees it: a reference count and an
// owner record.
type fakeProg struct {
	id    uint32
	owner maps.ProgOwner
	refs  atomic.Int64
	// k, if set, makes the last Put free the program after a grace
	// period, as bpf_prog_put does.
	k     maps.Kernel
	freed atomic.Bool
}

func (p *fakeProg) Get() { p.refs.Add(1) }
func (p *fakeProg) Put() {
	if p.refs.Add(-1) == 0 && p.k != nil {
		p.k.CallRCU(func() { p.freed.Store(true) })
	}
}
func (p *fakeProg) ObjectID() uint32          { return p.id }
func (p *fakeProg) ProgOwner() maps.ProgOwner { return p.owner }

func newProgArray(t *testing.T, k *mapstest.Kernel, max uint32) *maps.Map {
	t.Helper()
	var r maps.Registry
	if err := r.Register(arraymap.ProgArray); err != nil {
		t.Fatal(err)
	}
	m, err := r.Create(k, maps.Attr{Type: uapi.MapTypeProgArray, KeySize: 4, ValueSize: 4, MaxEntries: max}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

const xdp = 6

func TestProgArrayCreateChecks(t *testing.T) {
	k := mapstest.NewKernel(2)
	var r maps.Registry
	if err := r.Register(arraymap.ProgArray); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		attr maps.Attr
		want error
	}{
		{"ok", maps.Attr{KeySize: 4, ValueSize: 4, MaxEntries: 4}, nil},
		{"value size 8", maps.Attr{KeySize: 4, ValueSize: 8, MaxEntries: 4}, uapi.EINVAL},
		{"key size 8", maps.Attr{KeySize: 8, ValueSize: 4, MaxEntries: 4}, uapi.EINVAL},
		{"no entries", maps.Attr{KeySize: 4, ValueSize: 4}, uapi.EINVAL},
		{"rdonly prog", maps.Attr{KeySize: 4, ValueSize: 4, MaxEntries: 4, Flags: uapi.BPF_F_RDONLY_PROG}, uapi.EINVAL},
		{"wronly prog", maps.Attr{KeySize: 4, ValueSize: 4, MaxEntries: 4, Flags: uapi.BPF_F_WRONLY_PROG}, uapi.EINVAL},
		{"rdonly for user space", maps.Attr{KeySize: 4, ValueSize: 4, MaxEntries: 4, Flags: uapi.BPF_F_RDONLY}, nil},
		{"mmapable", maps.Attr{KeySize: 4, ValueSize: 4, MaxEntries: 4, Flags: uapi.BPF_F_MMAPABLE}, uapi.EINVAL},
		{"inner map", maps.Attr{KeySize: 4, ValueSize: 4, MaxEntries: 4, Flags: uapi.BPF_F_INNER_MAP}, uapi.EINVAL},
		{"preserve elems", maps.Attr{KeySize: 4, ValueSize: 4, MaxEntries: 4, Flags: uapi.BPF_F_PRESERVE_ELEMS}, uapi.EINVAL},
		{"no prealloc", maps.Attr{KeySize: 4, ValueSize: 4, MaxEntries: 4, Flags: uapi.BPF_F_NO_PREALLOC}, uapi.EINVAL},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.attr.Type = uapi.MapTypeProgArray
			m, err := r.Create(k, c.attr, 1, nil)
			if c.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				m.Put()
				return
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
}

func TestProgArraySlotsHoldReferencesAndReturnIDs(t *testing.T) {
	k := mapstest.NewKernel(2)
	m := newProgArray(t, k, 4)
	fv := m.Ops.(maps.FdValues)
	a, b := &fakeProg{id: 10, owner: maps.ProgOwner{Type: xdp}}, &fakeProg{id: 11, owner: maps.ProgOwner{Type: xdp}}
	if fv.FdKind() != maps.FdProg {
		t.Fatalf("kind %d", fv.FdKind())
	}
	if err := fv.UpdateObject(key(1), a, 0, uapi.BPF_ANY); err != nil {
		t.Fatal(err)
	}
	if id, err := fv.LookupID(key(1)); err != nil || id != 10 || a.refs.Load() != 1 {
		t.Fatalf("id %d, %v, refs %d", id, err, a.refs.Load())
	}
	// Replacing: the old program is put at once (bpf_prog_put; a
	// program defers its own free past a grace period).
	if err := fv.UpdateObject(key(1), b, 0, uapi.BPF_ANY); err != nil {
		t.Fatal(err)
	}
	if a.refs.Load() != 0 || b.refs.Load() != 1 {
		t.Fatalf("replaced program still referenced: %d", a.refs.Load())
	}
	for _, c := range []struct {
		name string
		err  error
	}{
		{"lookup empty slot", func() error { _, err := fv.LookupID(key(0)); return err }()},
		{"lookup past the end", func() error { _, err := fv.LookupID(key(4)); return err }()},
		{"delete empty slot", m.Ops.DeleteElem(0, key(2))},
		{"program-side lookup", func() error { _, err := m.Ops.LookupElem(0, key(1)); return err }()},
	} {
		want := uapi.ENOENT
		if c.name == "program-side lookup" {
			want = uapi.EOPNOTSUPP
		}
		if !errors.Is(c.err, want) {
			t.Errorf("%s: got %v, want %v", c.name, c.err, want)
		}
	}
	if err := m.Ops.DeleteElem(0, key(4)); !errors.Is(err, uapi.E2BIG) {
		t.Errorf("delete past the end: %v", err)
	}
	if err := m.Ops.DeleteElem(0, key(1)); err != nil {
		t.Fatal(err)
	}
	if b.refs.Load() != 0 {
		t.Fatalf("deleted program still referenced: %d", b.refs.Load())
	}
}

func TestProgArrayUpdateChecks(t *testing.T) {
	k := mapstest.NewKernel(2)
	m := newProgArray(t, k, 2)
	fv := m.Ops.(maps.FdValues)
	p := &fakeProg{id: 1, owner: maps.ProgOwner{Type: xdp, Jited: true}}
	for _, c := range []struct {
		name  string
		key   uint32
		obj   maps.Object
		flags uint64
		want  error
	}{
		{"NOEXIST", 0, p, uapi.BPF_NOEXIST, uapi.EINVAL},
		{"EXIST", 0, p, uapi.BPF_EXIST, uapi.EINVAL},
		{"past the end", 2, p, uapi.BPF_ANY, uapi.E2BIG},
		{"not a program", 0, m, uapi.BPF_ANY, uapi.EINVAL},
		{"freplace program", 0, &fakeProg{id: 2, owner: maps.ProgOwner{Type: 28, Jited: true}}, uapi.BPF_ANY, uapi.EINVAL},
		{"first program sets the owner", 0, p, uapi.BPF_ANY, nil},
		{"another type", 1, &fakeProg{id: 3, owner: maps.ProgOwner{Type: 1, Jited: true}}, uapi.BPF_ANY, uapi.EINVAL},
		{"not jited", 1, &fakeProg{id: 4, owner: maps.ProgOwner{Type: xdp}}, uapi.BPF_ANY, uapi.EINVAL},
		{"same owner", 1, &fakeProg{id: 5, owner: maps.ProgOwner{Type: xdp, Jited: true}}, uapi.BPF_ANY, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := fv.UpdateObject(key(c.key), c.obj, 0, c.flags)
			if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
	if p.refs.Load() != 1 {
		t.Fatalf("refs %d: failed updates must not keep references", p.refs.Load())
	}
	// The owner check the kernel runs at program load.
	h := m.Ops.(maps.ProgHolder)
	if h.ProgCompatible(maps.ProgOwner{Type: 1, Jited: true}) || !h.ProgCompatible(maps.ProgOwner{Type: xdp, Jited: true}) {
		t.Fatal("owner check at load disagrees with the owner")
	}
}

func TestProgArrayOwnerSetByLoadCheck(t *testing.T) {
	k := mapstest.NewKernel(2)
	m := newProgArray(t, k, 2)
	if !m.Ops.(maps.ProgHolder).ProgCompatible(maps.ProgOwner{Type: 3, Jited: true}) {
		t.Fatal("first check refused")
	}
	err := m.Ops.(maps.FdValues).UpdateObject(key(0), &fakeProg{id: 1, owner: maps.ProgOwner{Type: xdp, Jited: true}}, 0, uapi.BPF_ANY)
	if !errors.Is(err, uapi.EINVAL) {
		t.Fatalf("a program of another type than the map's user: %v", err)
	}
}

func TestProgArrayReleaseUrefClearsEverySlot(t *testing.T) {
	k := mapstest.NewKernel(2)
	m := newProgArray(t, k, 8)
	fv := m.Ops.(maps.FdValues)
	progs := make([]*fakeProg, 8)
	for i := range progs {
		progs[i] = &fakeProg{id: uint32(i + 1), owner: maps.ProgOwner{Type: xdp}}
		if i%3 == 0 {
			continue // some slots stay empty
		}
		if err := fv.UpdateObject(key(uint32(i)), progs[i], 0, uapi.BPF_ANY); err != nil {
			t.Fatal(err)
		}
	}
	m.Ops.(maps.UrefReleaser).ReleaseUref()
	for i := range progs {
		if _, err := fv.LookupID(key(uint32(i))); !errors.Is(err, uapi.ENOENT) {
			t.Errorf("slot %d not cleared: %v", i, err)
		}
		if p, _ := m.Ops.(maps.TailCallTarget).ProgAt(uint32(i)); p != nil {
			t.Errorf("slot %d still reachable by tail calls", i)
		}
	}
	k.GracePeriod()
	for i, p := range progs {
		if p.refs.Load() != 0 {
			t.Errorf("program %d keeps %d references", i, p.refs.Load())
		}
	}
}

func TestProgArrayFreeClearsSlots(t *testing.T) {
	k := mapstest.NewKernel(2)
	m := newProgArray(t, k, 2)
	p := &fakeProg{id: 1, owner: maps.ProgOwner{Type: xdp}}
	if err := m.Ops.(maps.FdValues).UpdateObject(key(1), p, 0, uapi.BPF_ANY); err != nil {
		t.Fatal(err)
	}
	m.Put()
	k.GracePeriod()
	if p.refs.Load() != 0 {
		t.Fatalf("free left %d references", p.refs.Load())
	}
}

// tracker records the slot changes a prog array reports.
type tracker struct {
	mu      sync.Mutex
	changes []string
}

func (t *tracker) PokeRun(_ *maps.Map, key uint32, old, new maps.ProgObject) {
	t.mu.Lock()
	defer t.mu.Unlock()
	id := func(p maps.ProgObject) uint32 {
		if p == nil {
			return 0
		}
		return p.ObjectID()
	}
	t.changes = append(t.changes, string(rune('0'+key))+":"+string(rune('0'+id(old)))+">"+string(rune('0'+id(new))))
}

func TestProgArrayTellsPokeTrackersOfEveryChange(t *testing.T) {
	k := mapstest.NewKernel(2)
	m := newProgArray(t, k, 4)
	fv := m.Ops.(maps.FdValues)
	tr := &tracker{}
	m.Ops.(arraymap.PokeTracking).PokeTrack(tr)
	m.Ops.(arraymap.PokeTracking).PokeTrack(tr) // once only
	a, b := &fakeProg{id: 1}, &fakeProg{id: 2}
	_ = fv.UpdateObject(key(2), a, 0, uapi.BPF_ANY)
	_ = fv.UpdateObject(key(2), b, 0, uapi.BPF_ANY)
	_ = m.Ops.DeleteElem(0, key(2))
	m.Ops.(arraymap.PokeTracking).PokeUntrack(tr)
	_ = fv.UpdateObject(key(3), a, 0, uapi.BPF_ANY)
	want := []string{"2:0>1", "2:1>2", "2:2>0"}
	if len(tr.changes) != len(want) {
		t.Fatalf("changes %v, want %v", tr.changes, want)
	}
	for i := range want {
		if tr.changes[i] != want[i] {
			t.Fatalf("changes %v, want %v", tr.changes, want)
		}
	}
}

// A tail call running while user space swaps a slot sees the old program
// or the new one; the old one, put at once, is freed only once the
// readers that could see it are done (a program's own free waits for a
// grace period).
func TestProgArraySwapsAreAtomicForReaders(t *testing.T) {
	k := mapstest.NewKernel(2)
	m := newProgArray(t, k, 1)
	fv := m.Ops.(maps.FdValues)
	var progs []*fakeProg
	var stop atomic.Bool
	var wg sync.WaitGroup
	for r := 0; r < 2; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				k.Read(func() {
					p, ok := m.Ops.(maps.TailCallTarget).ProgAt(0)
					if !ok {
						t.Error("index 0 out of bounds")
						return
					}
					// Stay in the section a while, as a tail call
					// running the program would.
					runtime.Gosched()
					if p != nil && p.(*fakeProg).freed.Load() {
						t.Errorf("program %d reached after its free", p.ObjectID())
					}
				})
			}
		}()
	}
	for i := 0; i < 2000; i++ {
		// A new program each time, held by the slot alone: the one
		// it replaces is put at once.
		p := &fakeProg{id: uint32(i + 1), k: k}
		progs = append(progs, p)
		_ = fv.UpdateObject(key(0), p, 0, uapi.BPF_ANY)
		if i%50 == 0 {
			k.GracePeriod()
		}
	}
	stop.Store(true)
	wg.Wait()
	_ = m.Ops.DeleteElem(0, key(0))
	k.GracePeriod()
	for _, p := range progs {
		if p.refs.Load() != 0 || !p.freed.Load() {
			t.Errorf("program %d keeps %d references (freed %v)", p.id, p.refs.Load(), p.freed.Load())
		}
	}
}
