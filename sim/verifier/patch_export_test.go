package verifier

import "github.com/bpfsim/bpfsim/sim/insn"

// Rewrite exposes the batch rewrite to the tests, which check it against
// Patch and Remove applied one at a time.
func (p *Prog) Rewrite(remove []bool, patches map[int][]insn.Insn) error {
	return p.rewrite(remove, patches)
}

// RemoveDeadCodeThenNops runs the two passes one after the other, as the
// kernel does; Fixup runs them as one rewrite.
func RemoveDeadCodeThenNops(p *Prog) error {
	if err := removeDeadCode(p); err != nil {
		return err
	}
	return removeNops(p)
}

// RemoveDeadCodeAndNops is the single rewrite.
func RemoveDeadCodeAndNops(p *Prog) (bool, error) {
	remove, ok := deadCodeAndNops(p)
	if !ok || remove == nil {
		return ok, nil
	}
	return true, p.rewrite(remove, nil)
}

// FixupPassByPass runs Fixup's passes as the kernel does, each rewriting
// the program in turn; Fixup rewrites once.
func FixupPassByPass(p *Prog, cfg *FixupConfig) error {
	hardWireDeadCodeBranches(p, cfg.HardWire)
	if err := RemoveDeadCodeThenNops(p); err != nil {
		return err
	}
	return doMiscFixups(p, nil, cfg)
}
