package hashmap_test

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// entry is the value every test writer stores: the key it belongs to and a
// generation. A lookup that ever sees another key's number, or poison,
// found a wrong or freed element.
func entry(key uint32, gen uint64) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(key))
	return binary.LittleEndian.AppendUint64(b, gen)
}

// Programs on four CPUs look up, update, delete and write into values
// while user space walks, looks up and deletes, and grace periods come
// and go. Every value a program finds must belong to its key; at the end
// the map must be whole: each key once, the count right.
func TestConcurrentProgramsAndUserSpaceStayConsistent(t *testing.T) {
	for _, c := range configs {
		t.Run(c.name, func(t *testing.T) {
			const cpus, keys = 4, 64
			iters := 20000
			if testing.Short() {
				iters = 2000
			}
			k := newKernel(cpus)
			m := newConfigMap(t, k, c, 4, 16, keys, 0)
			var stop atomic.Bool
			var failed atomic.Value
			fail := func(err error) { failed.CompareAndSwap(nil, err) }

			var gp sync.WaitGroup
			gp.Add(1)
			go func() { // the RCU machinery
				defer gp.Done()
				for !stop.Load() {
					k.GracePeriod()
					runtime.Gosched()
				}
			}()

			var wg sync.WaitGroup
			for cpu := 0; cpu < cpus; cpu++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(uint64(cpu), 99))
					for i := 0; i < iters; i++ {
						k.Read(func() { programOp(k, m, cpu, rng, uint64(i), keys, fail) })
					}
				}()
			}
			wg.Add(1)
			go func() { // user space
				defer wg.Done()
				rng := rand.New(rand.NewPCG(42, 42))
				next := make([]byte, 4)
				size := 16
				if c.percpu {
					size = 16 * cpus
				}
				out := make([]byte, size)
				for i := 0; i < iters/4; i++ {
					key := key32(uint32(rng.IntN(keys)))
					switch rng.IntN(3) {
					case 0: // a walk step
						if err := m.Ops.GetNextKey(key, next); err != nil && !errors.Is(err, uapi.ENOENT) {
							fail(err)
						} else if err == nil && binary.LittleEndian.Uint32(next) >= keys {
							fail(errors.New("GetNextKey returned a key never added"))
						}
					case 1:
						err := m.Ops.(maps.LookupAndDeleter).LookupAndDeleteElem(0, key, out, 0)
						if err != nil && !errors.Is(err, uapi.ENOENT) {
							fail(err)
						}
					case 2: // a syscall lookup the kernel does not protect
						if addr, err := m.Ops.LookupElem(0, key); err != nil {
							fail(err)
						} else if addr != 0 {
							_ = k.Memory().Read(addr, out[:16])
						}
					}
				}
			}()
			wg.Wait()
			stop.Store(true)
			gp.Wait()
			k.GracePeriod()
			if err, _ := failed.Load().(error); err != nil {
				t.Fatal(err)
			}
			checkWhole(t, k, m, c, keys)
		})
	}
}

// programOp is one map operation of a program on cpu.
func programOp(k *fakeKernel, m *maps.Map, cpu int, rng *rand.Rand, gen uint64, keys int, fail func(error)) {
	id := uint32(rng.IntN(keys))
	key := key32(id)
	switch op := rng.IntN(10); {
	case op < 5:
		addr, err := m.Ops.LookupElem(cpu, key)
		if err != nil {
			fail(err)
			return
		}
		if addr == 0 {
			return
		}
		var v [16]byte
		if err := k.Memory().Read(addr, v[:]); err != nil {
			fail(err)
			return
		}
		got := binary.LittleEndian.Uint64(v[:])
		_, percpu := m.Ops.(maps.PercpuValues)
		// A per-CPU copy is zero until this CPU writes it.
		if got != uint64(id) && !(percpu && got == 0) {
			fail(errors.New("a lookup found a value of another key or of a freed element"))
			return
		}
		// A program writes into the value it found, as counters do.
		if err := k.Memory().Write(addr+8, binary.LittleEndian.AppendUint64(nil, gen)); err != nil {
			fail(err)
		}
	case op < 8:
		if err := m.Ops.UpdateElem(cpu, key, entry(id, gen), uapi.BPF_ANY); err != nil {
			fail(err)
		}
	default:
		if err := m.Ops.DeleteElem(cpu, key); err != nil && !errors.Is(err, uapi.ENOENT) {
			fail(err)
		}
	}
}

// checkWhole checks a quiet map: each key once with its own value, and
// exactly keys free slots once everything is deleted.
func checkWhole(t *testing.T, k *fakeKernel, m *maps.Map, c mapConfig, keys int) {
	t.Helper()
	seen := map[uint32]bool{}
	for _, key := range walk(t, m) {
		id := binary.LittleEndian.Uint32(key)
		if seen[id] || id >= uint32(keys) {
			t.Fatalf("walk yields key %d twice or out of range", id)
		}
		seen[id] = true
		if v := lookupValue(t, k, m, key); v == nil {
			t.Fatalf("walked key %d has no value", id)
		} else if got := binary.LittleEndian.Uint64(v); got != uint64(id) && !(c.percpu && got == 0) {
			t.Fatalf("key %d holds the value of key %d", id, got)
		}
		wantErrno(t, m.Ops.DeleteElem(0, key), 0, "delete")
	}
	k.GracePeriod()
	for i := 0; i < keys; i++ {
		wantErrno(t, update(t, k, m, key32(uint32(1000+i)), entry(uint32(i), 0), uapi.BPF_NOEXIST), 0, "refill")
	}
	wantErrno(t, update(t, k, m, key32(5000), entry(0, 0), uapi.BPF_NOEXIST), uapi.E2BIG, "one key too many")
}
