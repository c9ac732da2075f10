package sim

// prandomState is the kernel's per-CPU generator behind
// bpf_get_prandom_u32: the four-component Tausworthe generator of
// lib/random32.c (L'Ecuyer's LFSR113). bpfsim seeds it from the kernel's
// seed and the CPU number instead of from get_random_bytes, so a simulated
// kernel's random numbers repeat run after run.
type prandomState struct{ s1, s2, s3, s4 uint32 }

func tausworthe(s uint32, a, b uint, c uint32, d uint) uint32 {
	return (s&c)<<d ^ ((s<<a)^s)>>b
}

func (st *prandomState) next() uint32 {
	st.s1 = tausworthe(st.s1, 6, 13, 4294967294, 18)
	st.s2 = tausworthe(st.s2, 2, 27, 4294967288, 2)
	st.s3 = tausworthe(st.s3, 13, 21, 4294967280, 7)
	st.s4 = tausworthe(st.s4, 3, 12, 4294967168, 13)
	return st.s1 ^ st.s2 ^ st.s3 ^ st.s4
}

// seed sets up the state the way prandom_seed_full_state does: each
// component must exceed a minimum for the generator to be full-period, and
// ten warm-up rounds mix the seed in.
func (st *prandomState) seed(seed uint64, cpu int) {
	x := seed ^ uint64(cpu+1)*0x9e3779b97f4a7c15
	var words [4]uint32
	for i := range words {
		x = splitmix64(x)
		words[i] = uint32(x)
	}
	minimum := func(v, m uint32) uint32 {
		if v < m {
			return v + m
		}
		return v
	}
	st.s1 = minimum(words[0], 2)
	st.s2 = minimum(words[1], 8)
	st.s3 = minimum(words[2], 16)
	st.s4 = minimum(words[3], 128)
	for i := 0; i < 10; i++ {
		st.next()
	}
}

// splitmix64 stretches one 64-bit seed into a sequence of well-mixed words.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}
