package main

import (
	"strings"
	"testing"
)

// The walk-through reaches the right instance from every program, keeps
// each map alive exactly as long as its link and associated programs, and
// leaks nothing (run checks).
func TestWalkThroughReachesEachInstanceAndFreesEverything(t *testing.T) {
	var out strings.Builder
	if err := run(&out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	s := out.String()
	for _, want := range []string{
		"gold.refresh = 1007",
		"bronze.refresh = 2007",
		"gold_tracer(cost 3) -> rl_admit -> gold.admit = 1",
		"bronze_tracer(cost 3) -> rl_admit -> bronze.admit = 0",
		"gold: epoch 1007, admitted 2, refused 1",
		"bronze: epoch 2007, admitted 1, refused 2",
		"re-associating gold_trigger with bronze: program gold_trigger is associated with struct_ops map 1 for good: device or resource busy",
		// two links + two associated programs, and the fd.
		"map gold   id 1: state ready    refcnt 4 usercnt 1 registered true",
		"map gold   id 1: state ready    refcnt 1 usercnt 0 registered false",
		"gold_tracer -> rl_admit = -2",
		"leak check clean (0 maps alive)",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q:\n%s", want, s)
		}
	}
}
