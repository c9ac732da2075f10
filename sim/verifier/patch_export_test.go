package verifier

import "github.com/bpfsim/bpfsim/sim/insn"

// Rewrite exposes the batch rewrite to the tests, which check it against
// Patch and Remove applied one at a time.
func (p *Prog) Rewrite(remove []bool, patches map[int][]insn.Insn) error {
	return p.rewrite(remove, patches)
}
