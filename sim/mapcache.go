package sim

import (
	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/interp"
)

// mapCache is a CPU's memory of the maps its programs passed to helpers
// lately, by address. The kernel's helpers take the struct bpf_map pointer
// as it is; bpfsim must find the Go object behind the address, and the
// shared index (objects.byAddr) is behind a lock that every map helper
// call would otherwise take (two atomic read-modify-writes, a tenth of a
// load balancer's packet). A map's address is never reused, and an entry
// can only go stale when a map leaves the index after its grace period,
// which bumps objects.gen: the cache starts over whenever gen moved.
type mapCache struct {
	gen  uint64
	next int
	addr [mapCacheSize]uint64
	m    [mapCacheSize]*maps.Map
}

const mapCacheSize = 8

// progMap is mapByAddr for a program running on m's CPU.
func (k *Kernel) progMap(m *interp.Machine, addr uint64) (*maps.Map, bool) {
	cpu, ok := m.Data.(*CPU)
	if !ok {
		return k.mapByAddr(addr)
	}
	c := &cpu.maps
	if g := k.objs.gen.Load(); g != c.gen {
		*c = mapCache{gen: g}
	}
	for i := range c.addr {
		if c.addr[i] == addr && c.m[i] != nil {
			return c.m[i], true
		}
	}
	mp, ok := k.mapByAddr(addr)
	if ok {
		c.addr[c.next], c.m[c.next] = addr, mp
		c.next = (c.next + 1) % mapCacheSize
	}
	return mp, ok
}
