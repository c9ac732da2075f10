package verifier

import (
	"slices"
	"testing"
)

// TestComputeLoopsFindsCyclesOnly checks computeLoops on small graphs:
// instructions on a cycle are marked, the ones before, after and between
// cycles are not.
func TestComputeLoopsFindsCyclesOnly(t *testing.T) {
	none := [2]int{-1, -1}
	next := func(i int) [2]int { return [2]int{i + 1, -1} }
	for _, c := range []struct {
		name string
		succ [][2]int
		want []bool
	}{
		{"straight line", [][2]int{next(0), next(1), none}, []bool{false, false, false}},
		{"a loop in the middle", [][2]int{next(0), next(1), {3, 1}, none}, []bool{false, true, true, false}},
		{"a jump to itself", [][2]int{next(0), {1, 2}, none}, []bool{false, true, false}},
		{"a diamond is no loop", [][2]int{{1, 2}, {3, -1}, {3, -1}, none}, []bool{false, false, false, false}},
		{"two loops in a row", [][2]int{{1, -1}, {0, 2}, next(2), {2, 4}, none}, []bool{true, true, true, true, false}},
		{"nested loops", [][2]int{next(0), next(1), {1, 3}, {0, 4}, none}, []bool{true, true, true, true, false}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := computeLoops(c.succ, nil, &loopScratch{}); !slices.Equal(got, c.want) {
				t.Errorf("got %v, want %v", got, c.want)
			}
		})
	}
}
