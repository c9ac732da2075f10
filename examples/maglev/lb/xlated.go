package lb

import (
	"fmt"
	"strings"
)

// MapInMapListing returns the two places of the program's xlated code
// (Program().Xlated(), bpftool's syntax) that show how the kernel compiles
// map-in-map lookups, for the demo to print: the lookup in the hash of
// maps maglev_outer, inlined as a call of __htab_map_lookup_elem and the
// instructions that turn the element into the inner map pointer; and the
// lookup in the inner array, a direct call of array_map_lookup_elem, as
// BPF_F_INNER_MAP arrays of any size cannot be inlined with a constant
// bound. Each comes with the source line before it.
func (lb *LB) MapInMapListing() (string, error) {
	lines := strings.Split(lb.prog.Xlated(), "\n")
	lddw := fmt.Sprintf("r1 = map[id:%d]", lb.Map("maglev_outer").ID())
	outer := -1
	for i := 0; i+4 < len(lines); i++ {
		if strings.HasSuffix(lines[i], lddw) && strings.Contains(lines[i+1], "call __htab_map_lookup_elem#") {
			outer = i
			break
		}
	}
	if outer < 0 {
		return "", fmt.Errorf("no inlined lookup in maglev_outer in the xlated code")
	}
	inner := -1
	for j := outer; j < len(lines); j++ {
		if strings.Contains(lines[j], "call array_map_lookup_elem#") {
			inner = j
			break
		}
	}
	if inner < 0 {
		return "", fmt.Errorf("no call of array_map_lookup_elem after the outer lookup")
	}
	// withSource widens [from, to] to the source line annotating it.
	withSource := func(from, to int) []string {
		for k := from; k > 0 && from-k < 8; k-- {
			if strings.HasPrefix(lines[k-1], "; ") && strings.TrimSpace(lines[k-1]) != ";" {
				from = k - 1
				break
			}
		}
		return lines[from : to+1]
	}
	out := append(withSource(outer, outer+4), "   ...")
	out = append(out, withSource(inner, inner)...)
	return strings.Join(out, "\n") + "\n", nil
}
