package sim

import (
	"math/rand"
	"slices"
	"testing"
)

// The timer queue hands out armed timers earliest first, ties in the
// order they were started, whatever restarts, cancels and frees came
// before, and keeps its stale entries bounded.
func TestTimerQueueFiresInExpiryOrder(t *testing.T) {
	k := &Kernel{}
	tt := &k.timers
	rnd := rand.New(rand.NewSource(1))
	timers := make([]*bpfTimer, 200)
	for i := range timers {
		timers[i] = &bpfTimer{}
	}
	for round := 0; round < 50; round++ {
		tt.mu.Lock()
		for i := 0; i < 2000; i++ {
			tm := timers[rnd.Intn(len(timers))]
			if rnd.Intn(5) == 0 {
				tt.disarm(tm)
			} else {
				tt.arm(tm, uint64(rnd.Intn(100)), 0)
			}
		}
		// What should fire: the armed timers by (expiry, seq).
		var want []*bpfTimer
		for _, tm := range timers {
			if tm.armed && tm.expires <= 50 {
				want = append(want, tm)
			}
		}
		slices.SortFunc(want, func(a, b *bpfTimer) int {
			if a.expires != b.expires {
				return int(a.expires) - int(b.expires)
			}
			return int(a.seq) - int(b.seq)
		})
		if len(tt.queue) > 4*len(timers)+64 {
			t.Fatalf("round %d: %d queue entries for %d timers", round, len(tt.queue), len(timers))
		}
		tt.mu.Unlock()
		for i, w := range want {
			got, _, _ := k.nextTimer(50)
			if got != w {
				t.Fatalf("round %d: firing %d is not the timer due next", round, i)
			}
		}
		if got, _, _ := k.nextTimer(50); got != nil {
			t.Fatalf("round %d: a timer fired that was not due", round)
		}
		armed := 0
		for _, tm := range timers {
			if tm.armed {
				armed++
			}
		}
		if armed != k.ArmedTimers() {
			t.Fatalf("round %d: %d armed, the count says %d", round, armed, k.ArmedTimers())
		}
	}
}
