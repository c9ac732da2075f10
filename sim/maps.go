package sim

import (
	"sort"
	"sync"
	"sync/atomic"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/arraymap"
	"github.com/bpfsim/bpfsim/hashmap"
	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/maps/bloomfilter"
	"github.com/bpfsim/bpfsim/maps/cpumap"
	"github.com/bpfsim/bpfsim/maps/devmap"
	"github.com/bpfsim/bpfsim/maps/localstorage"
	"github.com/bpfsim/bpfsim/maps/lpmtrie"
	"github.com/bpfsim/bpfsim/maps/queuestack"
	"github.com/bpfsim/bpfsim/maps/ringbuf"
	"github.com/bpfsim/bpfsim/perfarray"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// objects is the kernel's table of BPF objects: map ids (map_idr), and the
// address index the helpers use to turn a program's map pointer back into
// the map.
type objects struct {
	mu        sync.RWMutex
	nextMapID uint32
	maps      map[uint32]*maps.Map // by id
	byAddr    map[uint64]*maps.Map
	// gen counts removals from byAddr, for the CPUs' map caches
	// (mapcache.go).
	gen atomic.Uint64
}

// builtinMapTypes are the map types every simulated kernel has. They are
// registered with RegisterMapType, the call a user makes for a type of
// their own.
var builtinMapTypes = []*maps.Type{
	arraymap.Array,
	arraymap.PercpuArray,
	arraymap.ProgArray,
	hashmap.Hash,
	hashmap.PercpuHash,
	hashmap.LRUHash,
	hashmap.LRUPercpuHash,
	perfarray.PerfEventArray,
	arraymap.ArrayOfMaps,
	hashmap.HashOfMaps,
	lpmtrie.LPMTrie,
	queuestack.Queue,
	queuestack.Stack,
	bloomfilter.BloomFilter,
	devmap.DevMap,
	ringbuf.Ringbuf,
	ringbuf.UserRingbuf,
	devmap.DevMapHash,
	cpumap.CPUMap,
	localstorage.TaskStorage,
}

// RegisterMapType adds a map type to this kernel, so that maps of it can be
// created. Registering a type number twice is EEXIST.
func (k *Kernel) RegisterMapType(t *maps.Type) error { return k.mapTypes.Register(t) }

// The maps.Kernel interface: what map types may use of the kernel.

// Percpu returns the per-CPU allocator.
func (k *Kernel) Percpu() *mem.Percpu { return k.percpu }

// CallRCU runs fn after an RCU grace period.
func (k *Kernel) CallRCU(fn func()) { k.rcu.callRCU(fn) }

// Random returns a pseudo-random number from the kernel's seeded source
// (get_random_u32).
func (k *Kernel) Random() uint32 {
	k.randMu.Lock()
	defer k.randMu.Unlock()
	return k.rand.next()
}

// SynchronizeRCU waits until every deferred free queued so far has run:
// after it, memory that maps and programs released is gone for good.
func (k *Kernel) SynchronizeRCU() { k.rcu.synchronize() }

var _ maps.Kernel = (*Kernel)(nil)

// createMap is the core of BPF_MAP_CREATE. The caller owns the returned
// reference.
func (k *Kernel) createMap(attr maps.Attr) (*maps.Map, error) {
	k.objs.mu.Lock()
	k.objs.nextMapID++
	id := k.objs.nextMapID
	k.objs.mu.Unlock()
	m, err := k.mapTypes.Create(k, attr, id, k.releaseMap)
	if err != nil {
		return nil, err
	}
	k.objs.mu.Lock()
	k.objs.maps[id] = m
	k.objs.byAddr[m.Addr] = m
	k.objs.mu.Unlock()
	return m, nil
}

// releaseMap runs when a map's last reference is dropped: its id goes at
// once, its memory after a grace period (bpf_map_free_id, then
// bpf_map_free_deferred).
//
// Until the free, a program still running may use the map through the
// pointer it holds, so the address index keeps it.
func (k *Kernel) releaseMap(m *maps.Map) {
	k.objs.mu.Lock()
	delete(k.objs.maps, m.ID)
	k.objs.mu.Unlock()
	k.CallRCU(func() {
		k.objs.mu.Lock()
		delete(k.objs.byAddr, m.Addr)
		k.objs.gen.Add(1)
		k.objs.mu.Unlock()
		m.Ops.Free()
	})
}

// mapByAddr finds the map whose object lives at addr: the pointer a map
// helper receives in r1.
func (k *Kernel) mapByAddr(addr uint64) (*maps.Map, bool) {
	k.objs.mu.RLock()
	m, ok := k.objs.byAddr[addr]
	k.objs.mu.RUnlock()
	return m, ok
}

// MapIDs lists the ids of the maps alive in the kernel, like
// `bpftool map list`.
func (k *Kernel) MapIDs() []uint32 {
	k.objs.mu.RLock()
	defer k.objs.mu.RUnlock()
	ids := make([]uint32, 0, len(k.objs.maps))
	for id := range k.objs.maps {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

// mapByID finds a live map.
func (k *Kernel) mapByID(id uint32) (*maps.Map, error) {
	k.objs.mu.RLock()
	m, ok := k.objs.maps[id]
	k.objs.mu.RUnlock()
	if !ok {
		return nil, errors.Wrapf(uapi.ENOENT, "no map with id %d", id)
	}
	return m, nil
}
