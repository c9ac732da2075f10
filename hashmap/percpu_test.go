package hashmap_test

import (
	"bytes"
	"testing"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

func percpuValues(t *testing.T, m *maps.Map, key []byte, cpus int) [][]byte {
	t.Helper()
	size := int(maps.RoundUp8(m.ValueSize))
	buf := make([]byte, size*cpus)
	wantErrno(t, m.Ops.(maps.PercpuValues).LookupPercpu(key, buf), 0, "LookupPercpu")
	out := make([][]byte, cpus)
	for c := range out {
		out[c] = buf[c*size : (c+1)*size]
	}
	return out
}

func TestPercpuProgramUpdateWritesOnlyItsCPUsCopy(t *testing.T) {
	for _, c := range configs[2:] {
		t.Run(c.name, func(t *testing.T) {
			const cpus = 4
			k := newKernel(cpus)
			m := newConfigMap(t, k, c, 4, 12, 8, 0)
			key := key32(5)
			v2 := []byte("cpu two here")
			wantErrno(t, m.Ops.UpdateElem(2, key, v2, uapi.BPF_NOEXIST), 0, "new key from CPU 2")
			got := percpuValues(t, m, key, cpus)
			for cpu, v := range got {
				want := make([]byte, 16)
				if cpu == 2 {
					want = padded(v2)
				}
				if !bytes.Equal(v, want) {
					t.Errorf("after CPU 2 created the key, CPU %d's copy = % x, want % x", cpu, v, want)
				}
			}
			addr2, _ := m.Ops.LookupElem(2, key)
			v1 := []byte("cpu one now.")
			wantErrno(t, m.Ops.UpdateElem(1, key, v1, uapi.BPF_EXIST), 0, "CPU 1 updates")
			if a, _ := m.Ops.LookupElem(2, key); a != addr2 {
				t.Errorf("an update moved CPU 2's copy from %#x to %#x; per-CPU updates are in place", addr2, a)
			}
			got = percpuValues(t, m, key, cpus)
			for cpu, want := range [][]byte{make([]byte, 16), padded(v1), padded(v2), make([]byte, 16)} {
				if !bytes.Equal(got[cpu], want) {
					t.Errorf("CPU %d's copy = % x, want % x", cpu, got[cpu], want)
				}
			}
			for cpu := 0; cpu < cpus; cpu++ {
				a, err := m.Ops.LookupElem(cpu, key)
				if err != nil {
					t.Fatal(err)
				}
				if v := read(t, k, a, 12); !bytes.Equal(v, got[cpu][:12]) {
					t.Errorf("program view of CPU %d's copy = % x, user view % x", cpu, v, got[cpu][:12])
				}
			}
			if k.PendingCallbacks() != 0 {
				t.Error("an in-place per-CPU update queued an RCU callback")
			}
		})
	}
}

func TestPercpuUserUpdateWritesEveryCPUAndPadsToEightBytes(t *testing.T) {
	for _, c := range configs[2:] {
		t.Run(c.name, func(t *testing.T) {
			const cpus = 3
			k := newKernel(cpus)
			m := newConfigMap(t, k, c, 4, 5, 8, 0)
			pv := m.Ops.(maps.PercpuValues)
			in := []byte("aaaaa...bbbbb...ccccc...") // 5 bytes and 3 of padding per CPU
			wantErrno(t, pv.UpdatePercpu(key32(1), in, uapi.BPF_ANY), 0, "UpdatePercpu")
			got := percpuValues(t, m, key32(1), cpus)
			for cpu, want := range []string{"aaaaa", "bbbbb", "ccccc"} {
				if !bytes.Equal(got[cpu], append([]byte(want), 0, 0, 0)) {
					t.Errorf("CPU %d's copy = %q, want %q and zero padding", cpu, got[cpu], want)
				}
			}
			wantErrno(t, pv.UpdatePercpu(key32(1), in, uapi.BPF_NOEXIST), uapi.EEXIST, "NOEXIST")
			wantErrno(t, pv.UpdatePercpu(key32(2), in, uapi.BPF_EXIST), uapi.ENOENT, "EXIST")
			wantErrno(t, pv.UpdatePercpu(key32(1), in, uapi.BPF_F_LOCK), uapi.EINVAL, "BPF_F_LOCK")
			wantErrno(t, pv.UpdatePercpu(key32(1), in[:8], uapi.BPF_ANY), uapi.EINVAL, "short values buffer")
			wantErrno(t, pv.LookupPercpu(key32(2), make([]byte, 24)), uapi.ENOENT, "LookupPercpu of a missing key")
		})
	}
}

func TestLookupPercpuElemReadsAnotherCPUsCopy(t *testing.T) {
	k := newKernel(4)
	m := newMap(t, k, maps.Attr{Type: uapi.MapTypePercpuHash, KeySize: 4, ValueSize: 8, MaxEntries: 4})
	pv := m.Ops.(maps.PercpuValues)
	wantErrno(t, m.Ops.UpdateElem(3, key32(1), val(8, 33), uapi.BPF_ANY), 0, "update on CPU 3")
	addr, err := pv.LookupPercpuElem(key32(1), 3)
	if err != nil || addr == 0 {
		t.Fatalf("LookupPercpuElem(CPU 3) = %#x, %v", addr, err)
	}
	if own, _ := m.Ops.LookupElem(3, key32(1)); own != addr {
		t.Errorf("LookupPercpuElem(CPU 3) = %#x, CPU 3's own lookup %#x", addr, own)
	}
	if got := read(t, k, addr, 8); !bytes.Equal(got, val(8, 33)) {
		t.Errorf("CPU 3's copy = % x", got)
	}
	for _, cpu := range []int{-1, 4, 1 << 20} {
		if a, err := pv.LookupPercpuElem(key32(1), cpu); a != 0 || err != nil {
			t.Errorf("LookupPercpuElem(CPU %d) = %#x, %v; want NULL", cpu, a, err)
		}
	}
	if a, err := pv.LookupPercpuElem(key32(2), 0); a != 0 || err != nil {
		t.Errorf("LookupPercpuElem of a missing key = %#x, %v", a, err)
	}
}

func TestPercpuCopiesOfAReusedElementStartAtZero(t *testing.T) {
	const cpus = 2
	k := newKernel(cpus)
	m := newMap(t, k, maps.Attr{Type: uapi.MapTypePercpuHash, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	pv := m.Ops.(maps.PercpuValues)
	wantErrno(t, pv.UpdatePercpu(key32(1), bytes.Repeat([]byte{0xaa}, 16), uapi.BPF_ANY), 0, "update")
	wantErrno(t, m.Ops.DeleteElem(0, key32(1)), 0, "delete")
	k.GracePeriod()
	wantErrno(t, m.Ops.UpdateElem(0, key32(2), val(8, 5), uapi.BPF_ANY), 0, "new key in the reused element")
	got := percpuValues(t, m, key32(2), cpus)
	if !bytes.Equal(got[0], val(8, 5)) || !bytes.Equal(got[1], make([]byte, 8)) {
		t.Errorf("copies = % x, want 5 on CPU 0 and zero on CPU 1", got)
	}
}

func TestPlainHashIgnoresTheCPU(t *testing.T) {
	k := newKernel(4)
	m := newMap(t, k, maps.Attr{Type: uapi.MapTypeHash, KeySize: 4, ValueSize: 8, MaxEntries: 4})
	wantErrno(t, m.Ops.UpdateElem(3, key32(1), val(8, 9), uapi.BPF_ANY), 0, "update on CPU 3")
	a0, _ := m.Ops.LookupElem(0, key32(1))
	a2, _ := m.Ops.LookupElem(2, key32(1))
	if a0 == 0 || a0 != a2 {
		t.Errorf("lookups on CPUs 0 and 2 = %#x, %#x; want one shared value", a0, a2)
	}
}
