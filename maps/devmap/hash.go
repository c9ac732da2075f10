package devmap

// BPF_MAP_TYPE_DEVMAP_HASH (kernel/bpf/devmap.c, dev_map_hash_ops): the
// same devices as a devmap, keyed by any u32 (usually the ifindex itself)
// instead of an index, so a sparse set of keys needs no holes. The kernel
// keeps the elements in a hash table of roundup_pow_of_two(max_entries)
// buckets, bucket = key & (n_buckets-1), each a list with the newest
// element at its head; get_next_key walks that layout, and so does this
// type, so walks come out in the kernel's order.
//
// Unlike a devmap slot, which is updated in place, an update here makes a
// new element, as the kernel's does: the value of the element it replaces
// stays readable by programs that looked it up until a grace period has
// passed.

import (
	"encoding/binary"
	"math/bits"
	"sort"
	"sync"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// DevMapHash is the map type, for a kernel's registry.
var DevMapHash = &maps.Type{ID: uapi.MapTypeDevmapHash, Name: "devmap_hash", AllocCheck: allocCheckHash, Alloc: allocHash, MetaEqual: maps.DefaultMetaEqual}

// maxHashEntries bounds max_entries so that rounding it up to a power of
// two cannot overflow (dev_map_alloc_check).
const maxHashEntries = 1 << 31

func allocCheckHash(attr *maps.Attr) error {
	if err := allocCheck(attr); err != nil {
		return err
	}
	if attr.MaxEntries > maxHashEntries {
		return errors.Wrapf(uapi.EINVAL, "a devmap_hash has at most %d entries (got %d)", uint32(maxHashEntries), attr.MaxEntries)
	}
	return nil
}

// hashElem is struct bpf_dtab_netdev of a devmap_hash: its key and its
// struct bpf_devmap_val in simulated memory.
type hashElem struct {
	key  uint32
	val  valueSlot
	prog maps.ProgObject // the program the element holds, if any
}

// dtabHash is struct bpf_dtab for the hash type.
type dtabHash struct {
	m        *maps.Map
	mu       sync.RWMutex // index_lock for writers; readers stand for RCU
	nBuckets uint32
	// buckets holds the non-empty buckets, each list head first;
	// occupied lists their numbers in increasing order, for the walk
	// from one bucket to the next non-empty one.
	buckets  map[uint32][]*hashElem
	occupied []uint32
	items    uint32
	values   *valueSlab
}

func allocHash(k maps.Kernel, m *maps.Map) (maps.Ops, error) {
	m.Flags |= uapi.BPF_F_RDONLY_PROG // as for a devmap: lookups point into the element
	// The map object; the kernel's bucket heads are not in simulated
	// memory, since programs reach the elements only through helpers.
	addr, err := k.Memory().Vmalloc(mem.PageSize, mem.PermRW, m.Type.Name)
	if err != nil {
		return nil, err
	}
	m.Addr = addr
	return &dtabHash{
		m:        m,
		nBuckets: roundupPowOfTwo(m.MaxEntries),
		buckets:  map[uint32][]*hashElem{},
		values:   newValueSlab(k, m.ValueSize, m.Type.Name+"_elems"),
	}, nil
}

// roundupPowOfTwo is the kernel's roundup_pow_of_two for 1 <= n <= 1<<31.
func roundupPowOfTwo(n uint32) uint32 {
	if n <= 1 {
		return 1
	}
	return 1 << bits.Len32(n-1)
}

func (d *dtabHash) bucketOf(key uint32) uint32 { return key & (d.nBuckets - 1) }

// lookup is __dev_map_hash_lookup_elem. The caller holds d.mu.
func (d *dtabHash) lookup(key uint32) (*hashElem, int) {
	for i, e := range d.buckets[d.bucketOf(key)] {
		if e.key == key {
			return e, i
		}
	}
	return nil, -1
}

// LookupElem is dev_map_hash_lookup_elem: the address of the element's
// value, or 0.
func (d *dtabHash) LookupElem(_ int, key []byte) (uint64, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if e, _ := d.lookup(binary.LittleEndian.Uint32(key)); e != nil {
		return e.val.addr, nil
	}
	return 0, nil
}

// UpdateElem is dev_map_hash_update_elem. The checks come in the
// kernel's order: flags and a missing device first, then BPF_NOEXIST on
// an existing key, then the device and program, and only then a full
// map. BPF_EXIST does not require the key to exist. The new element goes
// to the head of its bucket, even when it replaces one.
func (d *dtabHash) UpdateElem(_ int, key, value []byte, flags uint64) error {
	hasFd := len(value) == 8 && int32(binary.LittleEndian.Uint32(value[4:])) > 0
	return d.update(key, value, nil, hasFd, flags)
}

// ProgFdOffset is maps.ProgFdField: 8-byte values hold a program's fd
// after the ifindex.
func (d *dtabHash) ProgFdOffset() (int, bool) { return 4, d.m.ValueSize == 8 }

// UpdateElemWithProg is dev_map_hash_update_elem for a value with a
// program: one loaded for devmaps, which the element then holds.
func (d *dtabHash) UpdateElemWithProg(key, value []byte, prog maps.ProgObject, flags uint64) error {
	return d.update(key, value, prog, true, flags)
}

func (d *dtabHash) update(key, value []byte, prog maps.ProgObject, hasFd bool, flags uint64) error {
	k := binary.LittleEndian.Uint32(key)
	ifindex := binary.LittleEndian.Uint32(value)
	if flags > uapi.BPF_EXIST || ifindex == 0 {
		return errors.Wrapf(uapi.EINVAL, "devmap_hash update flags %#x, ifindex %d", flags, ifindex)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	old, at := d.lookup(k)
	if old != nil && flags&uapi.BPF_NOEXIST != 0 {
		return errors.Wrapf(uapi.EEXIST, "key %d exists", k)
	}
	if err := checkDevice(d.m.Kernel, value, prog, hasFd); err != nil {
		return err
	}
	if old == nil && d.items >= d.m.MaxEntries {
		return errors.Wrapf(uapi.E2BIG, "devmap_hash is full (%d entries)", d.m.MaxEntries)
	}
	slot, err := d.values.alloc()
	if err != nil {
		return err
	}
	v := make([]byte, d.m.ValueSize)
	binary.LittleEndian.PutUint32(v, ifindex)
	if hasFd {
		prog.Get()
		binary.LittleEndian.PutUint32(v[4:], prog.ObjectID())
	} else {
		prog = nil
	}
	mem.StoreBytes(slot.raw, v)
	b := d.bucketOf(k)
	list := d.buckets[b]
	switch {
	case old != nil:
		list = append(list[:at:at], list[at+1:]...)
		d.retire(old)
	case len(list) == 0:
		d.items++
		d.markOccupied(b)
	default:
		d.items++
	}
	d.buckets[b] = append([]*hashElem{{key: k, val: slot, prog: prog}}, list...)
	return nil
}

// checkDevice is __dev_map_alloc_node's refusals: a device the kernel
// does not have, or, for a value with an fd (hasFd), no program loaded
// for devmaps.
func checkDevice(k maps.Kernel, value []byte, prog maps.ProgObject, hasFd bool) error {
	ifindex := binary.LittleEndian.Uint32(value)
	switch {
	case !maps.NetDeviceExists(k, ifindex):
		return errors.Wrapf(uapi.EINVAL, "no device with ifindex %d", ifindex)
	case hasFd && !SlotProgramFits(prog, AttachXDPDevmap):
		return errors.Wrap(uapi.EINVAL, "the fd is no XDP program loaded for devmaps (expected attach type BPF_XDP_DEVMAP)")
	}
	return nil
}

// DeleteElem is dev_map_hash_delete_elem: ENOENT for a missing key.
func (d *dtabHash) DeleteElem(_ int, key []byte) error {
	k := binary.LittleEndian.Uint32(key)
	d.mu.Lock()
	defer d.mu.Unlock()
	old, at := d.lookup(k)
	if old == nil {
		return errors.Wrapf(uapi.ENOENT, "key %d", k)
	}
	b := d.bucketOf(k)
	list := d.buckets[b]
	list = append(list[:at:at], list[at+1:]...)
	if len(list) == 0 {
		delete(d.buckets, b)
		d.unmarkOccupied(b)
	} else {
		d.buckets[b] = list
	}
	d.items--
	d.retire(old)
	return nil
}

// retire frees an element that left the map, and puts its program, after
// a grace period.
func (d *dtabHash) retire(e *hashElem) {
	d.values.freeAfterGracePeriod(e.val)
	if e.prog != nil {
		d.m.Kernel.CallRCU(e.prog.Put)
	}
}

func (d *dtabHash) markOccupied(b uint32) {
	i := sort.Search(len(d.occupied), func(i int) bool { return d.occupied[i] >= b })
	d.occupied = append(d.occupied, 0)
	copy(d.occupied[i+1:], d.occupied[i:])
	d.occupied[i] = b
}

func (d *dtabHash) unmarkOccupied(b uint32) {
	i := sort.Search(len(d.occupied), func(i int) bool { return d.occupied[i] >= b })
	d.occupied = append(d.occupied[:i], d.occupied[i+1:]...)
}

// GetNextKey is dev_map_hash_get_next_key: the element after key in its
// bucket, else the head of the next non-empty bucket; a missing or nil
// key starts from the first bucket.
func (d *dtabHash) GetNextKey(key, next []byte) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	from := uint32(0)
	if key != nil {
		k := binary.LittleEndian.Uint32(key)
		if e, at := d.lookup(k); e != nil {
			list := d.buckets[d.bucketOf(k)]
			if at+1 < len(list) {
				binary.LittleEndian.PutUint32(next, list[at+1].key)
				return nil
			}
			from = d.bucketOf(k) + 1
		}
	}
	i := sort.Search(len(d.occupied), func(i int) bool { return d.occupied[i] >= from })
	if i == len(d.occupied) {
		return errors.Wrap(uapi.ENOENT, "last key")
	}
	binary.LittleEndian.PutUint32(next, d.buckets[d.occupied[i]][0].key)
	return nil
}

// Redirect is dev_hash_map_redirect: as a devmap's, with the key looked
// up in the hash (truncated to 32 bits).
func (d *dtabHash) Redirect(index, flags uint64) uint64 {
	d.mu.RLock()
	e, _ := d.lookup(uint32(index))
	d.mu.RUnlock()
	return XDPRedirect(e != nil, flags, redirectFlagsOfType)
}

// Free releases the elements and the map object.
func (d *dtabHash) Free() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, list := range d.buckets {
		for _, e := range list {
			if e.prog != nil {
				e.prog.Put()
			}
		}
	}
	d.buckets, d.occupied = nil, nil
	d.values.free()
	d.m.Kernel.Memory().Free(d.m.Addr)
}
