package maps

// TryGetUser takes a user reference unless the map's last reference is
// already gone (bpf_map_inc_not_zero with the uref): how a map found by
// id is opened while another thread may be dropping it.
func (m *Map) TryGetUser() bool {
	for {
		n := m.refcnt.Load()
		if n <= 0 {
			return false
		}
		if m.refcnt.CompareAndSwap(n, n+1) {
			m.usercnt.Add(1)
			return true
		}
	}
}

// TryGet takes a reference unless the last one is already gone
// (bpf_map_inc_not_zero): how a walk of the maps by id holds one that
// another thread may be dropping.
func (m *Map) TryGet() bool {
	for {
		n := m.refcnt.Load()
		if n <= 0 {
			return false
		}
		if m.refcnt.CompareAndSwap(n, n+1) {
			return true
		}
	}
}
