package structops

import (
	"sync"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Link is a struct_ops link (struct bpf_struct_ops_link): it registers a
// BPF_F_LINK map's instance with its subsystem for as long as it lives,
// holding a reference on the map, and can switch to another instance of
// the same type in one step.
type Link struct {
	mu sync.Mutex
	sm *Map // nil once detached
}

// validToReg is bpf_struct_ops_valid_to_reg: a BPF_F_LINK struct_ops map,
// updated and ready.
func validToReg(m *maps.Map) (*Map, error) {
	sm, ok := m.Ops.(*Map)
	if !ok {
		return nil, errors.Wrapf(uapi.EINVAL, "map %d is not a struct_ops map", m.ID)
	}
	if m.Flags&uapi.BPF_F_LINK == 0 {
		return nil, errors.Wrapf(uapi.EINVAL, "struct_ops map %d was not made with BPF_F_LINK", m.ID)
	}
	if sm.State() != StateReady {
		return nil, errors.Wrapf(uapi.EINVAL, "struct_ops map %d is %s, not ready", m.ID, sm.State())
	}
	return sm, nil
}

// NewLink is bpf_struct_ops_link_create: it registers m's instance. On
// success the link owns the caller's reference on m; on error the caller
// keeps it.
func NewLink(m *maps.Map) (*Link, error) {
	sm, err := validToReg(m)
	if err != nil {
		return nil, err
	}
	l := &Link{}
	if err := sm.desc.Type.Reg(sm, l); err != nil {
		return nil, withErrno(err, uapi.EINVAL)
	}
	l.sm = sm
	return l, nil
}

// Map returns the instance the link registers, nil once detached.
func (l *Link) Map() *Map {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sm
}

// Update is bpf_struct_ops_map_link_update: the subsystem switches from
// the current instance to m's (its update callback), and the link's
// reference moves to m. If old is not nil it must be the current map
// (EPERM otherwise), as BPF_F_REPLACE asks.
func (l *Link) Update(m, old *maps.Map) error {
	sm, err := validToReg(m)
	if err != nil {
		return err
	}
	if sm.desc.Type.Update == nil {
		return errors.Wrapf(uapi.EOPNOTSUPP, "struct_ops %s cannot be updated in place", sm.desc.Type.Name())
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	cur := l.sm
	switch {
	case cur == nil:
		return errors.Wrap(uapi.ENOLINK, "the link is detached")
	case old != nil && old != cur.m:
		return errors.Wrapf(uapi.EPERM, "the link uses map %d, not %d", cur.m.ID, old.ID)
	case sm.desc != cur.desc:
		return errors.Wrapf(uapi.EINVAL, "map %d is a %s, the link's a %s", m.ID, sm.desc.Type.Name(), cur.desc.Type.Name())
	}
	if err := sm.desc.Type.Update(sm, cur, l); err != nil {
		return withErrno(err, uapi.EINVAL)
	}
	m.Get()
	l.sm = sm
	cur.m.Put()
	return nil
}

// Detach unregisters the instance and drops the link's reference on its
// map (bpf_struct_ops_map_link_detach); the link stays, detached. It is
// also the release of the link's last reference
// (bpf_struct_ops_map_link_dealloc). Detaching twice does nothing.
func (l *Link) Detach() {
	l.mu.Lock()
	sm := l.sm
	l.sm = nil
	l.mu.Unlock()
	if sm == nil {
		return
	}
	sm.desc.Type.Unreg(sm, l)
	sm.m.Put()
}
