package ringbuf_test

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/maps/mapstest"
	"github.com/bpfsim/bpfsim/maps/ringbuf"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

func newUserRing(t testing.TB, size uint32) *ringbuf.User {
	t.Helper()
	r := &maps.Registry{}
	if err := r.Register(ringbuf.UserRingbuf); err != nil {
		t.Fatal(err)
	}
	m, err := r.Create(mapstest.NewKernel(1), maps.Attr{Type: uapi.MapTypeUserRingbuf, MaxEntries: size}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Ops.Free)
	return m.Ops.(*ringbuf.User)
}

// user_ring_buffer__reserve's errors: a record the ring cannot hold with
// its header is E2BIG, one it has no room for now ENOSPC.
func TestUserReserveRefusesWhatDoesNotFit(t *testing.T) {
	u := newUserRing(t, 4096)
	if _, err := u.Reserve(4096 - 7); !errors.Is(err, uapi.E2BIG) {
		t.Errorf("a record of the ring's size: %v, want E2BIG", err)
	}
	if _, err := u.Reserve(4096 - 8); err != nil {
		t.Fatalf("a record filling the ring: %v", err)
	}
	if _, err := u.Reserve(0); !errors.Is(err, uapi.ENOSPC) {
		t.Errorf("a record in a full ring: %v, want ENOSPC", err)
	}
}

// A drain inside a drain is EBUSY; a header claiming more than the
// producer wrote is EINVAL; unknown flags are EINVAL.
func TestDrainRefusesWhatTheKernelRefuses(t *testing.T) {
	u := newUserRing(t, 4096)
	pos, err := u.Reserve(8)
	if err != nil {
		t.Fatal(err)
	}
	u.Submit(pos)
	var inner int64
	n, err := u.Drain(0, func(uint64, uint32) (bool, error) {
		inner, _ = u.Drain(0, func(uint64, uint32) (bool, error) { return false, nil })
		return false, nil
	})
	if err != nil || n != 1 || inner != -int64(uapi.EBUSY) {
		t.Errorf("drain %d (%v), the drain inside it %d; want 1 and -EBUSY", n, err, inner)
	}
	if n, _ := u.Drain(8, nil); n != -int64(uapi.EINVAL) {
		t.Errorf("unknown flags: %d, want -EINVAL", n)
	}
	// A record whose header claims 100 bytes where 16 were produced.
	pos, err = u.Reserve(8)
	if err != nil {
		t.Fatal(err)
	}
	var hdr [4]byte
	binary.LittleEndian.PutUint32(hdr[:], 100)
	u.Write(pos-8, hdr[:]) // the header is the 8 bytes before the data
	if n, _ := u.Drain(0, func(uint64, uint32) (bool, error) { return false, nil }); n != -int64(uapi.EINVAL) {
		t.Errorf("a header past the producer: %d, want -EINVAL", n)
	}
}
