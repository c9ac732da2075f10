// Package maglev computes Maglev lookup tables exactly as Cilium's control
// plane does (pkg/maglev/maglev.go, cilium v1.20): the same hash string per
// backend, MurmurHash3_x64_128 with the cluster's Murmur seed, the same
// backend order and the same weighted turn-taking, so a table built here is
// slot for slot the table a Cilium agent with the same configuration writes
// into its cilium_lb{4,6}_maglev inner map. The tests hold golden data made
// by Cilium's own pkg/maglev.
//
// The algorithm is Maglev hashing (Eisenbud et al., NSDI 2016, §3.4): each
// backend has a preference list of the M table slots, a permutation given by
// offset = h1 mod M and skip = h2 mod (M−1) + 1, slot j being
// (offset + j·skip) mod M; M prime makes every such list a full permutation.
// Backends take turns; in its turn a backend claims the first slot of its
// list that is still empty.
//
// Cilium writes every backend's whole permutation out before filling (N×M
// words: 344 MB for M=65521 and N=1000). A backend only ever moves forward
// through its list, so this package keeps, per backend, just its position
// and its skip and steps on demand: the same probes in the same order, hence
// the same table, with O(N) memory besides the table and no O(N×M) work.
package maglev

import (
	"cmp"
	"encoding/base64"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/pkg/errors"
	"github.com/twmb/murmur3"

	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Backend is one backend of a service as far as the table is concerned.
type Backend struct {
	Addr   netip.Addr
	Port   uint16
	Proto  uint8  // IP protocol number: 6 TCP, 17 UDP, 132 SCTP
	Weight uint16 // 0 means the default, DefaultWeight
	ID     uint32 // the id written into the table
}

// Seeds are the three 32-bit seeds Cilium derives from its cluster-wide hash
// seed: Murmur keys the backends' permutations (control plane); Jhash0 and
// Jhash1 key the datapath's jhash of IPv4 and IPv6 flows (hash_init4_seed,
// hash_init6_seed).
type Seeds struct{ Murmur, Jhash0, Jhash1 uint32 }

const (
	// DefaultSeed is Cilium's default --bpf-lb-maglev-hash-seed: base64 of
	// 12 random bytes.
	DefaultSeed = "JLfvgnHc2kaSUFaI"

	// DefaultSize is Cilium's default --bpf-lb-maglev-table-size.
	DefaultSize = 16381

	// DefaultWeight is the weight of a backend whose Weight is 0, Cilium's
	// DefaultBackendWeight.
	DefaultWeight = 100

	// MaxSize bounds M. The datapath keeps the whole table in the single
	// value of an array map, and the kernel refuses an array value larger
	// than KMALLOC_MAX_SIZE (4 MiB on x86-64: 1,048,576 four-byte ids); this
	// is the largest prime below that.
	MaxSize = 1048573

	// sentinel marks an empty slot while filling, as in Cilium. No backend
	// may have it as its ID.
	sentinel = 0xffff_ffff
)

// SupportedSizes are the table sizes Cilium accepts for
// --bpf-lb-maglev-table-size. Table also accepts any other prime up to
// MaxSize, such as the paper's 65537.
var SupportedSizes = []uint32{251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071}

// ParseSeed decodes a Cilium hash seed: base64 (standard alphabet, padded) of
// exactly 12 bytes, read as three big-endian uint32s in the order Murmur,
// Jhash0, Jhash1.
func ParseSeed(b64 string) (Seeds, error) {
	d, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return Seeds{}, errors.Wrapf(uapi.EINVAL, "maglev seed %q is not base64: %v", b64, err)
	}
	if len(d) != 12 {
		return Seeds{}, errors.Wrapf(uapi.EINVAL, "maglev seed %q decodes to %d bytes, want 12", b64, len(d))
	}
	be := func(b []byte) uint32 {
		return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	}
	return Seeds{Murmur: be(d[0:4]), Jhash0: be(d[4:8]), Jhash1: be(d[8:12])}, nil
}

// protoName is Cilium's L4Type string for an IP protocol number, "" when
// Cilium has no backends of that protocol.
func protoName(p uint8) string {
	switch p {
	case 6:
		return "TCP"
	case 17:
		return "UDP"
	case 132:
		return "SCTP"
	}
	return ""
}

// HashString is the string Cilium hashes for a backend and sorts backends
// by: "[" addr ":" port "/" proto ",State:active]", the IPv6 address in
// brackets, e.g. "[10.0.0.1:80/TCP,State:active]" and
// "[[fd00::1]:443/UDP,State:active]". Cilium keeps it frozen so that tables
// agree across nodes and versions. (Cilium adds "/i" after the protocol for
// backends of internal scope and "@cluster" after the address for other
// clusters; Backend has neither.) A protocol Cilium does not know is written
// as its number; Table rejects such backends.
func HashString(b Backend) string {
	var s strings.Builder
	s.Grow(64)
	s.WriteByte('[')
	if b.Addr.Is6() {
		s.WriteByte('[')
		s.WriteString(b.Addr.String())
		s.WriteString("]:")
	} else {
		s.WriteString(b.Addr.String())
		s.WriteByte(':')
	}
	s.WriteString(strconv.FormatUint(uint64(b.Port), 10))
	s.WriteByte('/')
	if name := protoName(b.Proto); name != "" {
		s.WriteString(name)
	} else {
		s.WriteString(strconv.FormatUint(uint64(b.Proto), 10))
	}
	s.WriteString(",State:active]")
	return s.String()
}

// cursor is a backend's place in its permutation: the next slot it would
// claim and its step. Stepping it is the lazy form of Cilium's permutation
// row, p[j] = (p[j−1] + skip) mod M.
type cursor struct {
	next, skip uint32
}

// newCursor starts a backend's permutation, Cilium's getOffsetAndSkip:
// (h1, h2) = MurmurHash3_x64_128(hash string, seed), both 64-bit halves
// seeded with the 32-bit seed as in the smhasher reference.
func newCursor(hashString string, m uint32, seed uint32) cursor {
	h1, h2 := murmur3.SeedStringSum128(uint64(seed), uint64(seed), hashString)
	return cursor{
		next: uint32(h1 % uint64(m)),
		skip: uint32(h2%uint64(m-1)) + 1,
	}
}

// isPrime reports whether m is prime; m ≤ MaxSize, so trial division is
// at most ~500 steps.
func isPrime(m uint32) bool {
	if m < 2 {
		return false
	}
	for d := uint32(2); d*d <= m; d++ {
		if m%d == 0 {
			return false
		}
	}
	return true
}

// Table computes the lookup table of size m for backends: m backend IDs,
// Cilium's GetLookupTable. The order of backends does not matter: like
// Cilium, Table sorts them by HashString first (IDs are node-local, hash
// strings are not).
//
// Errors wrap EINVAL: m not a prime in [2, MaxSize]; no backends; more
// backends than slots (some would get none: Maglev wants M ≫ N); a backend
// with an invalid address, a protocol other than TCP, UDP or SCTP, or the ID
// 0xffffffff (the fill's empty-slot sentinel); two backends with the same ID;
// two backends with the same hash string (same address, port and protocol:
// their order, and so the table, would be arbitrary).
func Table(backends []Backend, m uint32, seeds Seeds) ([]uint32, error) {
	if m < 2 || m > MaxSize || !isPrime(m) {
		return nil, errors.Wrapf(uapi.EINVAL, "maglev table size %d is not a prime in [2, %d]", m, MaxSize)
	}
	n := len(backends)
	if n == 0 {
		return nil, errors.Wrap(uapi.EINVAL, "maglev table without backends")
	}
	if uint64(n) > uint64(m) {
		return nil, errors.Wrapf(uapi.EINVAL, "%d backends do not fit a maglev table of %d slots", n, m)
	}

	type entry struct {
		hash   string
		id     uint32
		weight uint64
	}
	es := make([]entry, n)
	ids := make([]uint32, n)
	for i, b := range backends {
		if !b.Addr.IsValid() {
			return nil, errors.Wrapf(uapi.EINVAL, "maglev backend %d (id %d) has no address", i, b.ID)
		}
		if protoName(b.Proto) == "" {
			return nil, errors.Wrapf(uapi.EINVAL, "maglev backend %d (id %d) has protocol %d, not TCP, UDP or SCTP", i, b.ID, b.Proto)
		}
		if b.ID == sentinel {
			return nil, errors.Wrapf(uapi.EINVAL, "maglev backend %d has id %#x, the empty-slot sentinel", i, b.ID)
		}
		w := uint64(b.Weight)
		if w == 0 {
			w = DefaultWeight
		}
		es[i] = entry{hash: HashString(b), id: b.ID, weight: w}
		ids[i] = b.ID
	}
	slices.Sort(ids)
	for i := 1; i < n; i++ {
		if ids[i] == ids[i-1] {
			return nil, errors.Wrapf(uapi.EINVAL, "two maglev backends have id %d", ids[i])
		}
	}
	slices.SortFunc(es, func(a, b entry) int { return cmp.Compare(a.hash, b.hash) })
	for i := 1; i < n; i++ {
		if es[i].hash == es[i-1].hash {
			return nil, errors.Wrapf(uapi.EINVAL, "two maglev backends are %s", es[i].hash)
		}
	}

	cs := make([]cursor, n)
	weights := make([]uint64, n)
	for i, e := range es {
		cs[i] = newCursor(e.hash, m, seeds.Murmur)
		weights[i] = e.weight
		ids[i] = e.id
	}
	return fill(m, cs, weights, ids), nil
}

// fill runs Cilium's computeLookupTable on backends already in order, with
// their permutations given as cursors (which it advances).
//
// Turn n (0 ≤ n < m) starts at candidate n mod N. When weights are in use
// (sum/N > 1 in integer division: with Cilium's default weight of 100 they
// always are) candidate i is passed over while (n+1)·weight_i <
// ⌊cntr_i⌋, where cntr_i starts at weight_i/N and grows by the weight sum
// each time i takes a slot; so a backend gets turns in proportion to its
// weight. With all weights equal nobody is ever passed over (at turn qN+i
// backend i has taken q slots, and (qN+i+1)·w ≥ w/N + qNw), which is the
// paper's plain round robin. cntr is float64, as in Cilium, so that the
// truncation happens on exactly the same values.
func fill(m uint32, cs []cursor, weights []uint64, ids []uint32) []uint32 {
	n := len(cs)
	var sum uint64
	cntr := make([]float64, n)
	for i, w := range weights {
		sum += w
		cntr[i] = float64(w) / float64(n)
	}
	weighted := sum/uint64(n) > 1

	table := make([]uint32, m)
	for i := range table {
		table[i] = sentinel
	}
	i0 := 0 // turn mod N
	for turn := uint64(0); turn < uint64(m); turn++ {
		i := i0
		if i0++; i0 == n {
			i0 = 0
		}
		if weighted {
			// Some candidate always qualifies: if all were passed over,
			// summing the conditions would give (turn+1)·sum < sum/N +
			// turn·sum.
			for (turn+1)*weights[i] < uint64(cntr[i]) {
				if i++; i == n {
					i = 0
				}
			}
			cntr[i] += float64(sum)
		}
		// The table is not full (turn < m slots are taken) and the
		// permutation covers every slot, so this ends within m steps.
		c := &cs[i]
		slot, skip := c.next, c.skip
		for table[slot] != sentinel {
			if slot += skip; slot >= m {
				slot -= m
			}
		}
		table[slot] = ids[i]
		if slot += skip; slot >= m {
			slot -= m
		}
		c.next = slot
	}
	return table
}
