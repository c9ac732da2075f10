// Package lpmtrie simulates BPF_MAP_TYPE_LPM_TRIE (kernel/bpf/lpm_trie.c):
// a longest-prefix-match map, for IP routes and CIDR rules.
//
// A key is struct bpf_lpm_trie_key_u8: a 32-bit prefix length, then the
// data (the address), key_size-4 bytes of it, most significant bit first.
// A lookup finds the stored prefix that matches the most leading bits of
// the key, up to the key's own prefix length; updates and deletes address
// one exact prefix.
//
// The trie is the kernel's: a binary trie in which a node may skip bits,
// with intermediate nodes (flagged, holding no value) where two prefixes
// part; the same insertions and deletions give the same shape, so
// get_next_key walks the same post-order, more specific prefixes first.
// Each node lives in simulated memory, laid out as struct lpm_trie_node
// (its value after the data), because a program's lookup returns the
// address of the value; a removed node is reused only after an RCU grace
// period. Writers take a lock; lookups walk the trie without one.
package lpmtrie

import (
	"encoding/binary"
	"sync"
	"sync/atomic"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Sizes of lpm_trie.c.
const (
	// NodeHeader is sizeof(struct lpm_trie_node): rcu_head, child[2],
	// prefixlen, flags; the data follows, then the value.
	NodeHeader = 40
	// DataSizeMax is LPM_DATA_SIZE_MAX, the longest address.
	DataSizeMax = 256
	keySizeMin  = 4 + 1
	keySizeMax  = 4 + DataSizeMax
	// valueSizeMax is LPM_VAL_SIZE_MAX: a node fits in KMALLOC_MAX_SIZE.
	valueSizeMax = 4<<20 - DataSizeMax - NodeHeader
	createFlags  = uapi.BPF_F_NO_PREALLOC | uapi.BPF_F_NUMA_NODE | uapi.BPF_F_ACCESS_MASK
)

// LPMTrie is the map type, for a kernel's registry.
var LPMTrie = &maps.Type{
	ID:         uapi.MapTypeLPMTrie,
	Name:       "lpm_trie",
	AllocCheck: allocCheck,
	Alloc:      alloc,
	MetaEqual:  maps.DefaultMetaEqual,
}

// allocCheck is trie_alloc's check of the attributes: the trie allocates
// its nodes one by one, so it needs BPF_F_NO_PREALLOC.
func allocCheck(attr *maps.Attr) error {
	switch {
	case attr.MaxEntries == 0:
		return errors.Wrap(uapi.EINVAL, "an LPM trie needs max_entries > 0")
	case attr.Flags&uapi.BPF_F_NO_PREALLOC == 0:
		return errors.Wrap(uapi.EINVAL, "an LPM trie needs BPF_F_NO_PREALLOC")
	case attr.Flags&^createFlags != 0:
		return errors.Wrapf(uapi.EINVAL, "LPM trie map_flags %#x include unsupported flags", attr.Flags)
	case attr.KeySize < keySizeMin || attr.KeySize > keySizeMax:
		return errors.Wrapf(uapi.EINVAL, "an LPM trie key is a 4-byte prefix length and 1 to %d bytes of data (key_size %d)", DataSizeMax, attr.KeySize)
	case attr.ValueSize < 1 || attr.ValueSize > valueSizeMax:
		return errors.Wrapf(uapi.EINVAL, "LPM trie value_size %d is not within 1 to %d", attr.ValueSize, valueSizeMax)
	}
	return nil
}

// node is struct lpm_trie_node. prefixlen and data never change once the
// node is linked; flags can gain the intermediate bit.
type node struct {
	child     [2]atomic.Pointer[node]
	prefixlen uint32
	im        atomic.Bool // LPM_TREE_NODE_FLAG_IM
	data      []byte      // Go copy of the address, for the walks
	slot      slot        // the node's simulated memory
}

// trie is struct lpm_trie.
type trie struct {
	m        *maps.Map
	k        maps.Kernel
	dataSize uint32
	maxBits  uint32 // max_prefixlen
	nodeSize uint64

	mu       sync.Mutex // the kernel's trie->lock: writers
	root     atomic.Pointer[node]
	nEntries uint32
	slab     slab
}

func alloc(k maps.Kernel, m *maps.Map) (maps.Ops, error) {
	t := &trie{m: m, k: k, dataSize: m.KeySize - 4}
	t.maxBits = t.dataSize * 8
	t.nodeSize = uint64(maps.RoundUp8(NodeHeader + t.dataSize + m.ValueSize))
	// The map object itself: struct lpm_trie, for the address programs
	// hold. Nodes come from the slab as they are needed.
	addr, err := k.Memory().Vmalloc(mem.PageSize, mem.PermRW, "lpm_trie")
	if err != nil {
		return nil, err
	}
	m.Addr = addr
	t.slab = slab{space: k.Memory(), size: t.nodeSize}
	return t, nil
}

// extractBit is extract_bit: bit index of data, most significant first.
func extractBit(data []byte, index uint32) int {
	return int(data[index/8]>>(7-index%8)) & 1
}

// match is longest_prefix_match: how many leading bits of n's data and
// key's agree, counting no further than either prefix length.
func (t *trie) match(n *node, prefixlen uint32, data []byte) uint32 {
	limit := min(n.prefixlen, prefixlen)
	var bits uint32
	for i := uint32(0); i < t.dataSize && bits < limit; i++ {
		x := n.data[i] ^ data[i]
		if x == 0 {
			bits += 8
			continue
		}
		for x&0x80 == 0 {
			bits++
			x <<= 1
		}
		break
	}
	return min(bits, limit)
}

// splitKey returns a key's prefix length and data.
func (t *trie) splitKey(key []byte) (uint32, []byte) {
	return binary.LittleEndian.Uint32(key), key[4 : 4+t.dataSize]
}

// find is trie_lookup_elem's walk: the most specific stored prefix
// matching key, or nil (also for a key longer than the trie's prefixes).
func (t *trie) find(key []byte) *node {
	prefixlen, data := t.splitKey(key)
	if prefixlen > t.maxBits {
		return nil
	}
	var found *node
	for n := t.root.Load(); n != nil; {
		matched := t.match(n, prefixlen, data)
		if matched == t.maxBits {
			return n
		}
		if matched < n.prefixlen {
			break
		}
		if !n.im.Load() {
			found = n
		}
		n = n.child[extractBit(data, n.prefixlen)].Load()
	}
	return found
}

// LookupElem is trie_lookup_elem: the address of the best match's value.
func (t *trie) LookupElem(_ int, key []byte) (uint64, error) {
	if n := t.find(key); n != nil {
		return n.slot.addr + NodeHeader + uint64(t.dataSize), nil
	}
	return 0, nil
}

// newNode takes a node from the slab and writes its header, data and
// value (nil for an intermediate node) into simulated memory.
func (t *trie) newNode(prefixlen uint32, data, value []byte) (*node, error) {
	s, err := t.slab.get()
	if err != nil {
		return nil, err
	}
	n := &node{prefixlen: prefixlen, data: append([]byte(nil), data...), slot: s}
	clear(s.b[:NodeHeader])
	binary.LittleEndian.PutUint32(s.b[32:], prefixlen)
	mem.StoreBytes(s.b[NodeHeader:NodeHeader+uint64(t.dataSize)], data)
	if value != nil {
		off := NodeHeader + uint64(t.dataSize)
		mem.StoreBytes(s.b[off:off+uint64(t.m.ValueSize)], value)
	} else {
		n.im.Store(true)
		binary.LittleEndian.PutUint32(s.b[36:], 1)
	}
	return n, nil
}

// free returns n's memory after a grace period: a program may still read
// its value.
func (t *trie) free(n *node) {
	s := n.slot
	t.k.CallRCU(func() { t.slab.put(s) })
}

// checkAdd is trie_check_add_elem: room for one more entry.
func (t *trie) checkAdd(flags uint64) error {
	if flags == uapi.BPF_EXIST {
		return errors.Wrap(uapi.ENOENT, "BPF_EXIST: the prefix is not in the trie")
	}
	if t.nEntries == t.m.MaxEntries {
		return errors.Wrapf(uapi.ENOSPC, "the trie holds max_entries %d prefixes", t.m.MaxEntries)
	}
	t.nEntries++
	return nil
}

// UpdateElem is trie_update_elem: it adds the prefix, replacing its node
// if the prefix is there (or an intermediate node stands where it goes),
// else inserting it as a leaf, above the node it covers, or beside the
// node it parts from, under a new intermediate node.
func (t *trie) UpdateElem(_ int, key, value []byte, flags uint64) error {
	if flags > uapi.BPF_EXIST {
		return errors.Wrapf(uapi.EINVAL, "unknown update flags %#x", flags)
	}
	prefixlen, data := t.splitKey(key)
	if prefixlen > t.maxBits {
		return errors.Wrapf(uapi.EINVAL, "prefix length %d exceeds the trie's %d bits", prefixlen, t.maxBits)
	}
	nn, err := t.newNode(prefixlen, data, value)
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	undo := func(err error) error { t.free(nn); return err }

	slot := &t.root
	var n *node
	var matched uint32
	for n = slot.Load(); n != nil; n = slot.Load() {
		matched = t.match(n, prefixlen, data)
		if n.prefixlen != matched || n.prefixlen == prefixlen {
			break
		}
		slot = &n.child[extractBit(data, n.prefixlen)]
	}
	switch {
	case n == nil:
		if err := t.checkAdd(flags); err != nil {
			return undo(err)
		}
		slot.Store(nn)
		return nil
	case n.prefixlen == matched:
		// The very prefix: replace the node, keeping its children.
		if !n.im.Load() {
			if flags == uapi.BPF_NOEXIST {
				return undo(errors.Wrap(uapi.EEXIST, "BPF_NOEXIST: the prefix is in the trie"))
			}
		} else if err := t.checkAdd(flags); err != nil {
			return undo(err)
		}
		nn.child[0].Store(n.child[0].Load())
		nn.child[1].Store(n.child[1].Load())
		slot.Store(nn)
		t.free(n)
		return nil
	}
	if err := t.checkAdd(flags); err != nil {
		return undo(err)
	}
	if matched == prefixlen {
		// The new prefix covers n: it goes above it.
		nn.child[extractBit(n.data, matched)].Store(n)
		slot.Store(nn)
		return nil
	}
	im, err := t.newNode(matched, n.data, nil)
	if err != nil {
		t.nEntries--
		return undo(err)
	}
	if extractBit(data, matched) == 1 {
		im.child[0].Store(n)
		im.child[1].Store(nn)
	} else {
		im.child[0].Store(nn)
		im.child[1].Store(n)
	}
	slot.Store(im)
	return nil
}

// DeleteElem is trie_delete_elem: the exact prefix goes. A node with two
// children becomes intermediate; a leaf under an intermediate parent
// takes the parent with it, its sibling moving up; otherwise the node's
// only child, if any, takes its place.
func (t *trie) DeleteElem(_ int, key []byte) error {
	prefixlen, data := t.splitKey(key)
	if prefixlen > t.maxBits {
		return errors.Wrapf(uapi.EINVAL, "prefix length %d exceeds the trie's %d bits", prefixlen, t.maxBits)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	trim, trim2 := &t.root, &t.root
	var parent, n *node
	var matched uint32
	for n = trim.Load(); n != nil; n = trim.Load() {
		matched = t.match(n, prefixlen, data)
		if n.prefixlen != matched || n.prefixlen == prefixlen {
			break
		}
		parent, trim2 = n, trim
		trim = &n.child[extractBit(data, n.prefixlen)]
	}
	if n == nil || n.prefixlen != prefixlen || n.prefixlen != matched || n.im.Load() {
		return errors.Wrap(uapi.ENOENT, "the prefix is not in the trie")
	}
	t.nEntries--
	c0, c1 := n.child[0].Load(), n.child[1].Load()
	switch {
	case c0 != nil && c1 != nil:
		n.im.Store(true)
		binary.LittleEndian.PutUint32(n.slot.b[36:], 1)
		return nil
	case parent != nil && parent.im.Load() && c0 == nil && c1 == nil:
		if parent.child[0].Load() == n {
			trim2.Store(parent.child[1].Load())
		} else {
			trim2.Store(parent.child[0].Load())
		}
		t.free(parent)
	case c0 != nil:
		trim.Store(c0)
	default:
		trim.Store(c1) // nil for a leaf
	}
	t.free(n)
	return nil
}

// GetNextKey is trie_get_next_key: keys in post-order, more specific
// prefixes before the ones that cover them, the 0 side first. A key not
// in the trie (or of an invalid length) yields the first.
func (t *trie) GetNextKey(key, next []byte) error {
	root := t.root.Load()
	if root == nil {
		return errors.Wrap(uapi.ENOENT, "the trie is empty")
	}
	searchRoot := root
	var nextNode *node
	if key != nil {
		prefixlen, data := t.splitKey(key)
		if prefixlen <= t.maxBits {
			var stack []*node
			var n *node
			var matched uint32
			for n = root; n != nil; {
				stack = append(stack, n)
				matched = t.match(n, prefixlen, data)
				if n.prefixlen != matched || n.prefixlen == prefixlen {
					break
				}
				n = n.child[extractBit(data, n.prefixlen)].Load()
			}
			if n != nil && n.prefixlen == matched && !n.im.Load() {
				searchRoot = nil
				for i := len(stack) - 1; i > 0; i-- {
					p := stack[i-1]
					if p.child[0].Load() == stack[i] {
						if r := p.child[1].Load(); r != nil {
							searchRoot = r
							break
						}
					}
					if !p.im.Load() {
						nextNode = p
						break
					}
				}
				if searchRoot == nil && nextNode == nil {
					return errors.Wrap(uapi.ENOENT, "the key is the last in the trie")
				}
			}
		}
	}
	if nextNode == nil {
		// The leftmost node that is not intermediate, deepest first.
		for n := searchRoot; n != nil; {
			if n.im.Load() {
				n = n.child[0].Load()
				continue
			}
			nextNode = n
			if n = n.child[0].Load(); n == nil {
				n = nextNode.child[1].Load()
			}
		}
	}
	binary.LittleEndian.PutUint32(next, nextNode.prefixlen)
	copy(next[4:], nextNode.data)
	return nil
}

// Free releases the nodes and the map object.
func (t *trie) Free() {
	t.slab.free()
	t.k.Memory().Free(t.m.Addr)
}

// slot is one node's simulated memory.
type slot struct {
	addr uint64
	b    []byte
}

// slab hands out node-sized slots of simulated memory, in areas of a few
// pages, and takes freed ones back for reuse.
type slab struct {
	mu    sync.Mutex
	space *mem.Space
	size  uint64
	areas []uint64
	spare []slot
}

func (s *slab) get() (slot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := len(s.spare); n > 0 {
		sl := s.spare[n-1]
		s.spare = s.spare[:n-1]
		return sl, nil
	}
	area := max(4*mem.PageSize, s.size*16)
	addr, err := s.space.Vmalloc(area, mem.PermRW, "lpm_trie_node")
	if err != nil {
		return slot{}, errors.Wrap(uapi.ENOMEM, err.Error())
	}
	b, err := s.space.Bytes(addr, area)
	if err != nil {
		return slot{}, err
	}
	s.areas = append(s.areas, addr)
	for off := area/s.size*s.size - s.size; ; off -= s.size {
		s.spare = append(s.spare, slot{addr: addr + off, b: b[off : off+s.size : off+s.size]})
		if off == 0 {
			break
		}
	}
	sl := s.spare[len(s.spare)-1]
	s.spare = s.spare[:len(s.spare)-1]
	return sl, nil
}

func (s *slab) put(sl slot) {
	s.mu.Lock()
	s.spare = append(s.spare, sl)
	s.mu.Unlock()
}

func (s *slab) free() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.areas {
		s.space.Free(a)
	}
	s.areas, s.spare = nil, nil
}
