package interp

import (
	"os/exec"
	"regexp"
	"testing"
)

// TestDispatchLoopInlinesMemoryAccesses guards the interpreter's speed
// against the Go compiler's limit on big functions: once a function has
// more than about 5,000 nodes, the compiler inlines only the smallest
// callees into it. The dispatch loop is close to that limit; past it, the
// TLB lookups of loads and stores become calls, the values live across
// them are spilled on every instruction, and the loop runs 15-25% slower
// with no test failing. This test asks the compiler what it inlined.
func TestDispatchLoopInlinesMemoryAccesses(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("the go command is not on PATH: %v", err)
	}
	out, err := exec.Command(gobin, "build", "-gcflags=-m", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build -gcflags=-m: %v\n%s", err, out)
	}
	for _, callee := range []string{`mem\.\(\*TLB\)\.ReadPage`, `mem\.\(\*TLB\)\.WritePage`, `div32`} {
		re := regexp.MustCompile(`run\.go:\d+:\d+: inlining call to ` + callee)
		if !re.Match(out) {
			t.Errorf("the dispatch loop (run.go) no longer inlines %s: it has grown past the compiler's big-function limit; move rare cases out of it", callee)
		}
	}
}
