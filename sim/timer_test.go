package sim_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// timerElem is struct elem of testdata/timer.bpf.c.
type timerElem struct {
	Fired, Rearm, Period uint64
	Timer                [2]uint64
	LastKey, CancelRC    uint64
}

// timerCommand is struct command of testdata/timer.bpf.c.
type timerCommand struct {
	Op, Key      uint32
	Nsecs, Flags uint64
	Rearm        uint64
}

const (
	timerOpInit = iota
	timerOpInitBadClock
	timerOpSetCallback
	timerOpStart
	timerOpCancel
	timerOpAdd
	timerOpDelete
)

// timerTarget runs testdata/timer.bpf.o somewhere: in bpfsim or in the
// kernel.
type timerTarget interface {
	// run runs the program for map ("arr" or "htab") on c and returns its
	// helper's return value.
	run(t *testing.T, mapName string, c timerCommand) int32
	// wait lets d of the target's time pass, the timers due firing.
	wait(t *testing.T, d time.Duration)
	// put writes a value from user space.
	put(t *testing.T, mapName string, key uint32, v timerElem)
	// elems returns the maps' values, by map and key, as user space reads
	// them.
	elems(t *testing.T) map[string]map[uint32]timerElem
}

// timerStep is one step of timerScenario: a command, or a wait, or a put.
type timerStep struct {
	name    string
	mapName string
	cmd     timerCommand
	wait    time.Duration
	put     *timerElem
}

const timerMs = uint64(time.Millisecond)

// timerScenario drives every helper through its errors and its uses on
// an array's and a hash's values: init and its clock ids, callbacks,
// starts relative and absolute, cancels of armed and idle timers, a
// callback that re-arms and cancels itself, and the end of a timer with
// its element (a hash delete, an array update from user space).
var timerScenario = []timerStep{
	{name: "cancel before init", mapName: "arr", cmd: timerCommand{Op: timerOpCancel, Key: 1}},
	{name: "start before init", mapName: "arr", cmd: timerCommand{Op: timerOpStart, Key: 1, Nsecs: timerMs}},
	{name: "set_callback before init", mapName: "arr", cmd: timerCommand{Op: timerOpSetCallback, Key: 1}},
	{name: "init with CLOCK_THREAD_CPUTIME_ID", mapName: "arr", cmd: timerCommand{Op: timerOpInitBadClock, Key: 1}},
	{name: "init with flags past the clocks", mapName: "arr", cmd: timerCommand{Op: timerOpInit, Key: 1, Flags: 16}},
	{name: "init", mapName: "arr", cmd: timerCommand{Op: timerOpInit, Key: 1, Flags: 1, Nsecs: timerMs, Rearm: 2}},
	{name: "init again", mapName: "arr", cmd: timerCommand{Op: timerOpInit, Key: 1, Flags: 1, Nsecs: timerMs, Rearm: 2}},
	{name: "start without a callback", mapName: "arr", cmd: timerCommand{Op: timerOpStart, Key: 1, Nsecs: timerMs}},
	{name: "set_callback", mapName: "arr", cmd: timerCommand{Op: timerOpSetCallback, Key: 1}},
	{name: "start with unknown flags", mapName: "arr", cmd: timerCommand{Op: timerOpStart, Key: 1, Nsecs: timerMs, Flags: 4}},
	{name: "cancel an idle timer", mapName: "arr", cmd: timerCommand{Op: timerOpCancel, Key: 1}},
	{name: "start after a cancel", mapName: "arr", cmd: timerCommand{Op: timerOpStart, Key: 1, Nsecs: timerMs}},
	{name: "set_callback again", mapName: "arr", cmd: timerCommand{Op: timerOpSetCallback, Key: 1}},
	{name: "start", mapName: "arr", cmd: timerCommand{Op: timerOpStart, Key: 1, Nsecs: timerMs}},
	{name: "the callback fires and re-arms twice", wait: 200 * time.Millisecond},
	{name: "add a hash element", mapName: "htab", cmd: timerCommand{Op: timerOpAdd, Key: 2}},
	{name: "init in the hash", mapName: "htab", cmd: timerCommand{Op: timerOpInit, Key: 2, Flags: 7}},
	{name: "set_callback in the hash", mapName: "htab", cmd: timerCommand{Op: timerOpSetCallback, Key: 2}},
	{name: "start for an hour", mapName: "htab", cmd: timerCommand{Op: timerOpStart, Key: 2, Nsecs: 3600 * 1000 * timerMs}},
	{name: "cancel an armed timer", mapName: "htab", cmd: timerCommand{Op: timerOpCancel, Key: 2}},
	{name: "set_callback after the cancel", mapName: "htab", cmd: timerCommand{Op: timerOpSetCallback, Key: 2}},
	{name: "start at an absolute time long past", mapName: "htab", cmd: timerCommand{Op: timerOpStart, Key: 2, Nsecs: 1, Flags: 1}},
	{name: "the past timer fires", wait: 200 * time.Millisecond},
	{name: "start again", mapName: "htab", cmd: timerCommand{Op: timerOpStart, Key: 2, Nsecs: 20 * timerMs}},
	{name: "delete the element", mapName: "htab", cmd: timerCommand{Op: timerOpDelete, Key: 2}},
	{name: "a deleted element's timer never fires", wait: 200 * time.Millisecond},
	{name: "add the key again", mapName: "htab", cmd: timerCommand{Op: timerOpAdd, Key: 2}},
	{name: "the new element's timer is not initialised", mapName: "htab", cmd: timerCommand{Op: timerOpStart, Key: 2, Nsecs: timerMs}},
	{name: "init in another array element", mapName: "arr", cmd: timerCommand{Op: timerOpInit, Key: 3, Flags: 0}},
	{name: "set_callback there", mapName: "arr", cmd: timerCommand{Op: timerOpSetCallback, Key: 3}},
	{name: "start there", mapName: "arr", cmd: timerCommand{Op: timerOpStart, Key: 3, Nsecs: 20 * timerMs}},
	{name: "user space updates the element", mapName: "arr", put: &timerElem{Fired: 100, Timer: [2]uint64{7, 7}}},
	{name: "the updated element's timer never fires", wait: 200 * time.Millisecond},
	{name: "the updated element's timer is not initialised", mapName: "arr", cmd: timerCommand{Op: timerOpStart, Key: 3, Nsecs: timerMs}},
}

// timerPutKey is the key timerScenario's put writes.
const timerPutKey = 3

// runTimerScenario runs timerScenario on tg and returns what it saw: each
// step's return value, then the maps' values.
func runTimerScenario(t *testing.T, tg timerTarget) string {
	var b strings.Builder
	for _, s := range timerScenario {
		switch {
		case s.wait != 0:
			tg.wait(t, s.wait)
			fmt.Fprintf(&b, "%s: %v\n", s.name, tg.elems(t))
		case s.put != nil:
			tg.put(t, s.mapName, timerPutKey, *s.put)
			fmt.Fprintf(&b, "%s\n", s.name)
		default:
			fmt.Fprintf(&b, "%s: %d\n", s.name, tg.run(t, s.mapName, s.cmd))
		}
	}
	return b.String()
}

// timerMap is what timerMaps uses of a map: cilium/ebpf's *ebpf.Map and
// bpfsim's *sim.Map both have it.
type timerMap[I timerIter] interface {
	Put(key, value any) error
	Lookup(key, value any) error
	Iterate() I
}

type timerIter interface {
	Next(key, value any) bool
	Err() error
}

// timerMaps is the part of timerTarget that goes through the maps, for
// either runtime; runProg runs a program of the object by name.
type timerMaps[I timerIter, M timerMap[I]] struct {
	maps    map[string]M
	runProg func(name string) error
}

func (s *timerMaps[I, M]) run(t *testing.T, mapName string, c timerCommand) int32 {
	t.Helper()
	if err := s.maps["cmd"].Put(uint32(0), c); err != nil {
		t.Fatal(err)
	}
	if err := s.runProg(map[string]string{"arr": "timer_array", "htab": "timer_hash"}[mapName]); err != nil {
		t.Fatal(err)
	}
	var rc int32
	if err := s.maps["results"].Lookup(uint32(0), &rc); err != nil {
		t.Fatal(err)
	}
	return rc
}

func (s *timerMaps[I, M]) put(t *testing.T, mapName string, key uint32, v timerElem) {
	t.Helper()
	if err := s.maps[mapName].Put(key, v); err != nil {
		t.Fatal(err)
	}
}

func (s *timerMaps[I, M]) elems(t *testing.T) map[string]map[uint32]timerElem {
	t.Helper()
	out := map[string]map[uint32]timerElem{}
	for _, name := range []string{"arr", "htab"} {
		out[name] = map[uint32]timerElem{}
		var key uint32
		var v timerElem
		it := s.maps[name].Iterate()
		for it.Next(&key, &v) {
			if v != (timerElem{}) {
				out[name][key] = v
			}
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// simTimers is timerTarget for bpfsim: a wait advances the virtual clock.
type simTimers struct {
	*timerMaps[*sim.MapIterator, *sim.Map]
	k    *sim.Kernel
	coll *sim.Collection
}

func newSimTimers(t testing.TB, opts *sim.Options) *simTimers {
	k := newKernel(t, opts)
	spec, err := ebpf.LoadCollectionSpec("testdata/timer.bpf.o")
	if err != nil {
		t.Fatal(err)
	}
	coll, err := k.NewCollection(spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { coll.Close() })
	run := func(name string) error {
		_, err := coll.Programs[name].Test(&sim.RunOptions{Data: make([]byte, 64)})
		return err
	}
	return &simTimers{&timerMaps[*sim.MapIterator, *sim.Map]{coll.Maps, run}, k, coll}
}

func (s *simTimers) wait(t *testing.T, d time.Duration) {
	t.Helper()
	if _, err := s.k.AdvanceClock(d); err != nil {
		t.Fatal(err)
	}
}

func TestTimerScenarioRunsAsItShould(t *testing.T) {
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		t.Run(rt.String(), func(t *testing.T) {
			got := runTimerScenario(t, newSimTimers(t, &sim.Options{Runtime: rt}))
			// The figures a reader can check by hand; the kernel
			// comparison checks the rest.
			for _, want := range []string{
				"cancel before init: -22\n",
				"init again: -16\n",
				"set_callback: 0\n",
				"cancel an armed timer: 1\n",
				"cancel an idle timer: 0\n",
				"the callback fires and re-arms twice: map[arr:map[1:{3 0 1000000 [0 0] 1 18446744073709551581}] htab:map[]]\n",
				"the new element's timer is not initialised: -22\n",
				"the updated element's timer is not initialised: -22\n",
			} {
				if !strings.Contains(got, want) {
					t.Errorf("missing %q in:\n%s", want, got)
				}
			}
		})
	}
}

// A timer fires on the virtual clock at its expiry, not before, and its
// callback reads that time.
func TestTimerFiresAtItsExpiryOnTheVirtualClock(t *testing.T) {
	s := newSimTimers(t, nil)
	for _, c := range []timerCommand{
		{Op: timerOpInit, Key: 0, Flags: 1},
		{Op: timerOpSetCallback, Key: 0},
		{Op: timerOpStart, Key: 0, Nsecs: 5 * timerMs},
	} {
		if rc := s.run(t, "arr", c); rc != 0 {
			t.Fatalf("op %d: %d", c.Op, rc)
		}
	}
	start := s.k.Clock().Now()
	if n, err := s.k.AdvanceClock(4 * time.Millisecond); n != 0 || err != nil {
		t.Fatalf("after 4 ms: %d callbacks, %v", n, err)
	}
	if got := s.k.ArmedTimers(); got != 1 {
		t.Fatalf("%d timers armed, want 1", got)
	}
	if n, err := s.k.AdvanceClock(time.Millisecond); n != 1 || err != nil {
		t.Fatalf("after 5 ms: %d callbacks, %v", n, err)
	}
	if got, want := s.k.Clock().Now(), start+5*timerMs; got != want {
		t.Errorf("clock at %d, want %d", got, want)
	}
	if s.k.ArmedTimers() != 0 {
		t.Errorf("a timer is still armed")
	}
}

// The verifier's timer rules, with the kernel's messages.
func TestVerifierChecksTimerUse(t *testing.T) {
	k := newKernel(t, nil)
	value := slStruct("v", 24, slMember("a", slU64, 0), slMember("t", &btf.Struct{Name: "bpf_timer", Size: 16}, 8))
	withTimer, err := k.NewMap(&ebpf.MapSpec{Name: "with_timer", Type: ebpf.Array, KeySize: 4, ValueSize: 24, MaxEntries: 1, Key: slU32, Value: value})
	if err != nil {
		t.Fatal(err)
	}
	defer withTimer.Close()
	plain, err := k.NewMap(&ebpf.MapSpec{Name: "plain", Type: ebpf.Array, KeySize: 4, ValueSize: 24, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	lookup := func(m *sim.Map) asm.Instructions {
		return asm.Instructions{
			asm.StoreImm(asm.R10, -4, 0, asm.Word),
			asm.Mov.Reg(asm.R2, asm.R10),
			asm.Add.Imm(asm.R2, -4),
			asm.LoadMapPtr(asm.R1, m.FD()),
			asm.FnMapLookupElem.Call(),
			asm.JNE.Imm(asm.R0, 0, "found"),
			asm.Return(),
			asm.Mov.Reg(asm.R6, asm.R0).WithSymbol("found"),
		}
	}
	tail := asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}
	for _, tc := range []struct {
		name  string
		prog  asm.Instructions
		msg   string
		errno error
	}{
		{"a timer at the wrong offset", append(append(lookup(withTimer), asm.Mov.Reg(asm.R1, asm.R6), asm.Add.Imm(asm.R1, 0),
			asm.Instruction{OpCode: asm.OpCode(asm.JumpClass).SetJumpOp(asm.Call), Constant: uapi.FuncTimerCancel}), tail...),
			"off 0 doesn't point to 'struct bpf_timer' that is at 8", uapi.EINVAL},
		{"a map without a timer", append(append(lookup(plain), asm.Mov.Reg(asm.R1, asm.R6), asm.Add.Imm(asm.R1, 8),
			asm.Instruction{OpCode: asm.OpCode(asm.JumpClass).SetJumpOp(asm.Call), Constant: uapi.FuncTimerCancel}), tail...),
			"map 'plain' has to have BTF in order to use bpf_timer", uapi.EINVAL},
		{"a load from the timer", append(append(lookup(withTimer), asm.LoadMem(asm.R1, asm.R6, 8, asm.DWord)), tail...),
			"bpf_timer cannot be accessed directly by load/store", uapi.EACCES},
		{"init with another map", append(append(lookup(withTimer), asm.Mov.Reg(asm.R1, asm.R6), asm.Add.Imm(asm.R1, 8),
			asm.LoadMapPtr(asm.R2, plain.FD()), asm.Mov.Imm(asm.R3, 1),
			asm.Instruction{OpCode: asm.OpCode(asm.JumpClass).SetJumpOp(asm.Call), Constant: uapi.FuncTimerInit}), tail...),
			"timer pointer in R1 map_uid=0 doesn't match map pointer in R2 map_uid=0", uapi.EINVAL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := k.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, Instructions: tc.prog, License: "GPL"})
			if !errors.Is(err, tc.errno) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("load: %v, want %v with %q", err, tc.errno, tc.msg)
			}
		})
	}
}

// When the last user reference to a map goes, its timers are cancelled
// (map_release_uref): a callback's program may hold the map, a cycle only
// user space can break.
func TestClosingTheMapsLastUserReferenceCancelsItsTimers(t *testing.T) {
	s := newSimTimers(t, nil)
	for _, c := range []timerCommand{
		{Op: timerOpInit, Key: 0, Flags: 1},
		{Op: timerOpSetCallback, Key: 0},
		{Op: timerOpStart, Key: 0, Nsecs: timerMs},
	} {
		if rc := s.run(t, "arr", c); rc != 0 {
			t.Fatalf("op %d: %d", c.Op, rc)
		}
	}
	if got := s.k.ArmedTimers(); got != 1 {
		t.Fatalf("%d timers armed, want 1", got)
	}
	// The programs still hold the map; user space no longer does.
	if err := s.coll.Maps["arr"].Close(); err != nil {
		t.Fatal(err)
	}
	if got := s.k.ArmedTimers(); got != 0 {
		t.Errorf("%d timers armed after the close, want 0", got)
	}
	if n, err := s.k.AdvanceClock(time.Second); n != 0 || err != nil {
		t.Errorf("%d callbacks ran (%v), want none", n, err)
	}
	// Nor can the programs make new ones.
	if rc := s.run(t, "arr", timerCommand{Op: timerOpInit, Key: 1, Flags: 1}); rc != -1 {
		t.Errorf("init without user references: %d, want -EPERM", rc)
	}
}

// BenchmarkTimerFiring measures a timer's round trip: a program run that
// starts it, and the clock advanced past its expiry, which runs the
// callback.
func BenchmarkTimerFiring(b *testing.B) {
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		b.Run(rt.String(), func(b *testing.B) {
			s := newSimTimers(b, &sim.Options{Runtime: rt})
			prog := s.coll.Programs["timer_array"]
			data := make([]byte, 64)
			for _, c := range []timerCommand{{Op: timerOpInit, Key: 0, Flags: 1}, {Op: timerOpSetCallback, Key: 0}, {Op: timerOpStart, Key: 0, Nsecs: timerMs}} {
				if err := s.coll.Maps["cmd"].Put(uint32(0), c); err != nil {
					b.Fatal(err)
				}
				if _, err := prog.Test(&sim.RunOptions{Data: data}); err != nil {
					b.Fatal(err)
				}
			}
			if n, err := s.k.AdvanceClock(time.Millisecond); n != 1 || err != nil {
				b.Fatalf("%d callbacks, %v", n, err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := prog.Test(&sim.RunOptions{Data: data}); err != nil {
					b.Fatal(err)
				}
				if n, err := s.k.AdvanceClock(time.Millisecond); n != 1 || err != nil {
					b.Fatalf("%d callbacks, %v", n, err)
				}
			}
		})
	}
}

// timerRefusals are the programs of testdata/timer_refused.bpf.o and the
// verifier's verdict on each: "" for accepted, else the message.
var timerRefusals = map[string]string{
	"accepted":              "",
	"callback_returns_one":  "At async callback return the register R0 has smin=1 smax=1 should have been in [0, 0]",
	"init_with_another_map": "timer pointer in R1 map_uid=0 doesn't match map pointer in R2 map_uid=0",
	// Inner maps of one template are told apart by the outer lookup
	// they came from (map_uid).
	"init_with_its_inner_map":     "",
	"init_with_another_inner_map": "timer pointer in R1 map_uid=1 doesn't match map pointer in R2 map_uid=2",
	"timer_written_directly":      "bpf_timer cannot be accessed directly by load/store",
	"tracing_uses_a_timer_map":    "tracing progs cannot use bpf_timer yet",
}

// loadOneProgram returns spec with only the program name left in it.
func loadOneProgram(t *testing.T, path, name string) *ebpf.CollectionSpec {
	t.Helper()
	spec, err := ebpf.LoadCollectionSpec(path)
	if err != nil {
		t.Fatal(err)
	}
	for n := range spec.Programs {
		if n != name {
			delete(spec.Programs, n)
		}
	}
	return spec
}

func TestVerifierRefusesTimerMisuseInCompiledPrograms(t *testing.T) {
	checkRefusals(t, "testdata/timer_refused.bpf.o", timerRefusals)
}

// With a wall clock, a timer fires by itself once its time has come.
func TestTimerFiresByItselfOnAWallClock(t *testing.T) {
	s := newSimTimers(t, &sim.Options{Clock: sim.NewWallClock()})
	for _, c := range []timerCommand{
		{Op: timerOpInit, Key: 0, Flags: 1},
		{Op: timerOpSetCallback, Key: 0},
		{Op: timerOpStart, Key: 0, Nsecs: 5 * timerMs},
	} {
		if rc := s.run(t, "arr", c); rc != 0 {
			t.Fatalf("op %d: %d", c.Op, rc)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var e timerElem
		if err := s.coll.Maps["arr"].Lookup(uint32(0), &e); err != nil {
			t.Fatal(err)
		}
		if e.Fired == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the timer did not fire in 10 s: %+v", e)
		}
		time.Sleep(time.Millisecond)
	}
	if err := s.k.TimerError(); err != nil {
		t.Fatal(err)
	}
}
