package verifier

import (
	"slices"
	"testing"
)

// TestComputeLoopsNumbersCyclesOnly checks computeLoops on small graphs:
// instructions on a cycle get its number, the ones before, after and
// between cycles none; loops are numbered as the search completes them,
// an inner one first.
func TestComputeLoopsNumbersCyclesOnly(t *testing.T) {
	none := [2]int{-1, -1}
	next := func(i int) [2]int { return [2]int{i + 1, -1} }
	for _, c := range []struct {
		name string
		succ [][2]int
		want []int32
	}{
		{"straight line", [][2]int{next(0), next(1), none}, []int32{0, 0, 0}},
		{"a loop in the middle", [][2]int{next(0), next(1), {3, 1}, none}, []int32{0, 1, 1, 0}},
		{"a jump to itself", [][2]int{next(0), {1, 2}, none}, []int32{0, 1, 0}},
		{"a diamond is no loop", [][2]int{{1, 2}, {3, -1}, {3, -1}, none}, []int32{0, 0, 0, 0}},
		// The second loop completes first: it is found inside the first's search.
		{"two loops in a row", [][2]int{{1, -1}, {0, 2}, next(2), {2, 4}, none}, []int32{2, 2, 1, 1, 0}},
		{"nested loops are one", [][2]int{next(0), next(1), {1, 3}, {0, 4}, none}, []int32{1, 1, 1, 1, 0}},
		{"loops apart", [][2]int{next(0), {0, 2}, next(2), next(3), {3, 5}, none}, []int32{2, 2, 0, 1, 1, 0}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := computeLoops(c.succ, nil, &loopScratch{}); !slices.Equal(got, c.want) {
				t.Errorf("got %v, want %v", got, c.want)
			}
		})
	}
}
