package jit_arm64

// Translation is everything an Image keeps of a translation, for tests
// that compare the JIT's ways of making it.
type Translation struct {
	Words                       []uint32
	Offsets, Entries, Epilogues []int
	Callers                     [][2]int // return address index, BPF instruction
	Direct                      [][5]int // insn, bypass, target, out, stub
}

// TranslatePasses translates in for an image at address image with the
// kernel's passes (multiPass) or the patching pass Compile uses.
func TranslatePasses(in *Input, image uint64, multiPass bool) (*Translation, error) {
	var c jitCtx
	if err := translate(&c, in, func(int) (uint64, error) { return image, nil }, multiPass); err != nil {
		return nil, err
	}
	t := &Translation{Words: c.words, Entries: c.entries, Epilogues: c.epilogues}
	for _, o := range c.offsets {
		t.Offsets = append(t.Offsets, int(o))
	}
	for _, s := range c.callers {
		t.Callers = append(t.Callers, [2]int{s.word, s.bpf})
	}
	for _, d := range c.direct {
		t.Direct = append(t.Direct, [5]int{d.insn, d.bypass, d.target, d.out, d.stub})
	}
	return t, nil
}
