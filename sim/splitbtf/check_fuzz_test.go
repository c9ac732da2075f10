package splitbtf

import "testing"

// FuzzCheck reads arbitrary bytes as base BTF and checks them: Parse and
// Check either take them or fail with an errno, and never panic; what
// Check takes encodes back to BTF that Check takes.
func FuzzCheck(f *testing.F) {
	t := &testing.T{}
	k, _ := buildKernel(t, 1, 2, 232)
	f.Add(k.Raw())
	for seed := int64(0); seed < 4; seed++ {
		g := newBTFGen(seed)
		f.Add(g.build().Raw())
	}
	for _, c := range checkCases[:8] {
		b := NewBase()
		c.build(builder{t, b})
		f.Add(b.Raw())
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		b, err := Parse(raw, nil)
		if err != nil {
			mustErrno(t, err)
			return
		}
		if err := b.Check(); err != nil {
			mustErrno(t, err)
			return
		}
		back, err := Parse(b.Raw(), nil)
		if err != nil {
			t.Fatalf("checked BTF does not read back: %v", err)
		}
		if err := back.Check(); err != nil {
			t.Fatalf("checked BTF, encoded again, fails Check: %v", err)
		}
	})
}
