package kdiff_test

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim/kdiff"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

func TestMapGeneratorIsDeterministic(t *testing.T) {
	o := kdiff.DefaultMapGenOptions
	a, b := kdiff.Generate(7, o), kdiff.Generate(7, o)
	if kdiff.Listing(a.Spec) != kdiff.Listing(b.Spec) || !bytes.Equal(a.Packet, b.Packet) ||
		fmt.Sprint(a.Before, a.After, a.Runs) != fmt.Sprint(b.Before, b.After, b.Runs) || len(a.Maps) != len(b.Maps) {
		t.Fatal("the same seed gave two programs")
	}
	for i := range a.Maps {
		if fmt.Sprintf("%+v", *a.Maps[i]) != fmt.Sprintf("%+v", *b.Maps[i]) {
			t.Fatal("the same seed gave two map sets")
		}
	}
	// Maps off is the interpreter corpus, whatever the map options.
	plain, withMaps := kdiff.DefaultGenOptions, kdiff.DefaultGenOptions
	withMaps.Maps.UserOps, withMaps.Maps.Runs = 5, 3 // Count 0: still off
	if kdiff.Listing(kdiff.Generate(3, plain).Spec) != kdiff.Listing(kdiff.Generate(3, withMaps).Spec) {
		t.Fatal("map options with Count 0 changed the generated program")
	}
}

// The map acceptance corpus: generated programs using array, percpu array,
// hash and percpu hash maps must give the same return values, output
// packets, errnos of every user-space map operation and final map contents
// in the kernel and on bpfsim.
const (
	mapPrograms    = 1200
	minMapAccepted = 1000
)

// mapStats counts what the corpus exercised, so the log shows how strong
// the comparison is.
type mapStats struct {
	accepted, mapErrs, runs, runsOffCPU0, ranThrough int
	xlatedCompared                                   int
	xlatedHidden                                     error // why the xlated code could not be compared
	rejected                                         map[string]int
	progEvents                                       map[string]int // helper outcomes inside programs
	userEvents                                       map[string]int // user-space operation outcomes
	orderedWalks, orderedHashWalks, setWalks         int
	nextKeysCompared, percpuValues                   int
}

func errnoLabel(n int) string {
	switch n {
	case 0:
		return "ok"
	case int(syscall.ENOENT):
		return "ENOENT"
	case int(syscall.EEXIST):
		return "EEXIST"
	case int(syscall.E2BIG):
		return "E2BIG"
	case int(syscall.EINVAL):
		return "EINVAL"
	case int(uapi.ENOTSUPP):
		return "ENOTSUPP"
	}
	return fmt.Sprintf("errno %d", n)
}

func typeLabel(t ebpf.MapType) string {
	return map[ebpf.MapType]string{ebpf.Array: "array", ebpf.PerCPUArray: "percpu_array",
		ebpf.Hash: "hash", ebpf.PerCPUHash: "percpu_hash"}[t]
}

func updateLabel(flags int64) string {
	switch flags {
	case 0:
		return "BPF_ANY"
	case 1:
		return "BPF_NOEXIST"
	case 2:
		return "BPF_EXIST"
	}
	return fmt.Sprintf("flags %#x", uint64(flags))
}

func (st *mapStats) countUser(p *kdiff.Program, o kdiff.Outcome) {
	count := func(ops []kdiff.MapOp, res []kdiff.OpResult) {
		for i, op := range ops {
			if i >= len(res) {
				return
			}
			label := op.Kind.String()
			if op.Kind == kdiff.MapUpdate {
				label += " " + updateLabel(int64(op.Flags))
			}
			if op.Kind == kdiff.MapNextKey && res[i].Key != nil {
				st.nextKeysCompared++
			}
			st.userEvents[fmt.Sprintf("%-22s %s", label, errnoLabel(kdiff.Errno(res[i].Err)))]++
		}
	}
	count(p.Before, o.Before)
	count(p.After, o.After)
	for i, d := range o.Maps {
		switch {
		case d.Ordered && len(d.Keys) > 1:
			st.orderedWalks++
			if t := p.Maps[i].Type; t == ebpf.Hash || t == ebpf.PerCPUHash {
				st.orderedHashWalks++
			}
		case len(d.Keys) > 1:
			st.setWalks++
		}
		if kdiff.IsPercpu(p.Maps[i]) {
			st.percpuValues += len(d.Keys)
		}
	}
}

func (st *mapStats) countProg(p *kdiff.Program, events []kdiff.HelperEvent) {
	for _, e := range events {
		typ := "?"
		if e.Map >= 0 && e.Map < len(p.Maps) {
			typ = typeLabel(p.Maps[e.Map].Type)
		}
		var label string
		switch e.Helper {
		case uapi.FuncMapLookupElem:
			label = "lookup hit"
			if e.Ret == 0 {
				label = "lookup miss"
			}
		case uapi.FuncMapUpdateElem:
			label = "update " + updateLabel(e.Flags) + " " + errnoLabel(e.Errno())
		default:
			label = "delete " + errnoLabel(e.Errno())
		}
		st.progEvents[fmt.Sprintf("%-12s %s", typ, label)]++
	}
}

func (st *mapStats) log(t *testing.T) {
	t.Logf("%d map programs generated, %d accepted by the kernel and compared (%d test runs, %d on a CPU other than 0, "+
		"%d runs reached the epilogue); the kernel's xlated code compared for %d",
		mapPrograms, st.accepted, st.runs, st.runsOffCPU0, st.ranThrough, st.xlatedCompared)
	t.Logf("final contents: %d get_next_key walks of 2 keys or more compared in order (%d of BPF_F_ZERO_SEED hashes, "+
		"the rest arrays), %d of randomly seeded hashes as sets; %d per-CPU values compared on every CPU; "+
		"%d user-space get_next_key results compared key for key",
		st.orderedWalks, st.orderedHashWalks, st.setWalks, st.percpuValues, st.nextKeysCompared)
	if st.xlatedHidden != nil {
		t.Logf("the kernel's xlated code was not compared: %v", st.xlatedHidden)
	}
	logHistogram(t, "kernel rejected", st.rejected)
	logHistogram(t, "in programs", st.progEvents)
	logHistogram(t, "from user space", st.userEvents)
}

func logHistogram(t *testing.T, prefix string, h map[string]int) {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if len(keys) == 0 {
		t.Logf("%s: none", prefix)
		return
	}
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "\n  %6d  %s", h[k], k)
	}
	t.Logf("%s:%s", prefix, b.String())
}

func TestMapsMatchKernel(t *testing.T) {
	k, err := kdiff.OpenKernel()
	if err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	// Test runs are pinned to CPUs so that a program's per-CPU accesses
	// go to a known copy on both sides (see Kernel.runMaps).
	pinnable := k.PinnableCPUs()
	if pinnable == 0 {
		t.Skip("kernel-differential map test skipped: this process may not run on CPU 0, so test runs cannot be pinned")
	}
	s, err := kdiff.NewSimCPUs(k.PossibleCPUs())
	if err != nil {
		t.Fatal(err)
	}
	opts := kdiff.DefaultMapGenOptions
	opts.Maps.CPUs = min(pinnable, 4)
	st := &mapStats{rejected: map[string]int{}, progEvents: map[string]int{}, userEvents: map[string]int{}}
	var kernelRewrites []uint64
	failures := 0
	fail := func(format string, args ...any) {
		t.Errorf(format, args...)
		failures++
	}
	for seed := uint64(0); seed < mapPrograms && failures < 10; seed++ {
		p := kdiff.Generate(seed, opts)
		ko := k.Run(p)
		if ko.MapErr != nil {
			st.mapErrs++
			if d := kdiff.Diff(ko, s.Run(p)); d != "" {
				fail("seed %d: %s", seed, d)
			}
			continue
		}
		if ko.Rejected != nil {
			st.rejected[lastLine(ko.Rejected.Error())]++
			// The user-space operations still compare, without the
			// program.
			q := *p
			q.Spec = nil
			ko = k.Run(&q)
			st.countUser(&q, ko)
			if d := kdiff.Diff(ko, s.Run(&q)); d != "" {
				fail("seed %d (program rejected, user-space operations only): %s", seed, d)
			}
			continue
		}
		st.accepted++
		st.countUser(p, ko)
		for _, r := range ko.Runs {
			st.runs++
			if r.CPU != 0 {
				st.runsOffCPU0++
			}
			if !bytes.Equal(r.Packet, p.Packet) {
				st.ranThrough++
			}
		}
		so := s.Run(p)
		// Count what the helpers returned inside the program; the
		// instrumented copy must behave as the program does.
		oo, events, err := s.RunObserved(p)
		if err != nil {
			t.Fatalf("seed %d: instrumenting: %v", seed, err)
		}
		if d := kdiff.Diff(so, oo); d != "" {
			t.Fatalf("seed %d: the instrumented copy of the program runs differently on bpfsim: %s", seed, d)
		}
		st.countProg(p, events)

		// The kernel's own xlated code, its map calls and inlined lookups
		// translated back to helper calls, must run the same on bpfsim.
		var xo kdiff.Outcome
		switch {
		case errors.Is(ko.XlatedErr, kdiff.ErrNoKernelSymbols):
			st.xlatedHidden = ko.XlatedErr
		case ko.XlatedErr != nil:
			fail("seed %d: the kernel's xlated program: %v", seed, ko.XlatedErr)
		default:
			st.xlatedCompared++
			xo = s.RunXlated(p, ko.Xlated)
			if d := kdiff.Diff(ko, xo); d != "" {
				fail("seed %d: the kernel's xlated code runs differently on bpfsim: %s", seed, d)
			}
		}
		d := kdiff.Diff(ko, so)
		if d == "" {
			continue
		}
		if ko.XlatedErr == nil && kdiff.Diff(ko, xo) == "" {
			kernelRewrites = append(kernelRewrites, seed)
			t.Logf("seed %d: the kernel's verifier rewrote the program into one that computes something else; "+
				"bpfsim running the kernel's xlated code agrees with the kernel (%s)", seed, d)
			continue
		}
		fail("seed %d: %s\n%s", seed, d, describe(p))
	}
	st.log(t)
	if len(kernelRewrites) > st.accepted/100 {
		t.Errorf("%d programs blamed on kernel rewrites (seeds %v): too many to be kernel bugs", len(kernelRewrites), kernelRewrites)
	}
	if st.ranThrough < st.runs*99/100 {
		t.Errorf("only %d of %d runs reached the epilogue: the comparison is weak", st.ranThrough, st.runs)
	}
	if st.accepted < minMapAccepted && failures == 0 {
		t.Errorf("only %d map programs accepted by the kernel, want at least %d", st.accepted, minMapAccepted)
	}
}

// describe renders a failing program: its maps, operations and listing.
func describe(p *kdiff.Program) string {
	var b strings.Builder
	for i, m := range p.Maps {
		fmt.Fprintf(&b, "map m%d: %s key %d value %d max_entries %d flags %#x\n", i, m.Type, m.KeySize, m.ValueSize, m.MaxEntries, m.Flags)
	}
	for i, op := range p.Before {
		fmt.Fprintf(&b, "before #%d: %s\n", i, op)
	}
	fmt.Fprintf(&b, "runs on CPUs %v\n", p.Runs)
	for i, op := range p.After {
		fmt.Fprintf(&b, "after #%d: %s\n", i, op)
	}
	if p.Spec != nil {
		b.WriteString(kdiff.Listing(p.Spec))
	}
	return b.String()
}

// Diff must see a difference in every part of a map program's outcome.
// (Runs on bpfsim alone, so it needs no kernel.)
func TestDiffSeesMapDifferences(t *testing.T) {
	s, err := kdiff.NewSim()
	if err != nil {
		t.Fatal(err)
	}
	var p *kdiff.Program
	for seed := uint64(0); p == nil; seed++ {
		q := kdiff.Generate(seed, kdiff.DefaultMapGenOptions)
		if len(q.Runs) > 1 && len(q.After) > 0 {
			p = q
		}
	}
	base := s.Run(p)
	if d := kdiff.Diff(base, s.Run(p)); d != "" {
		t.Fatalf("two bpfsim runs of seed %d differ: %s", p.Seed, d)
	}
	nonEmpty := -1
	for i, d := range base.Maps {
		if len(d.Keys) > 0 {
			nonEmpty = i
		}
	}
	if nonEmpty < 0 {
		t.Fatalf("seed %d leaves every map empty", p.Seed)
	}
	for _, c := range []struct {
		what   string
		mutate func(o *kdiff.Outcome)
	}{
		{"the errno of a user-space operation", func(o *kdiff.Outcome) { o.Before[0].Err = syscall.EBUSY }},
		{"an operation after the run", func(o *kdiff.Outcome) { o.After[len(o.After)-1].Err = syscall.EBUSY }},
		{"a value in the final contents", func(o *kdiff.Outcome) { o.Maps[nonEmpty].Values[0][0] ^= 1 }},
		{"a key missing from the final contents", func(o *kdiff.Outcome) {
			o.Maps[nonEmpty].Keys, o.Maps[nonEmpty].Values = o.Maps[nonEmpty].Keys[1:], o.Maps[nonEmpty].Values[1:]
		}},
		{"the packet of a later run", func(o *kdiff.Outcome) { o.Runs[len(o.Runs)-1].Packet[3] ^= 1 }},
		{"the return value of a later run", func(o *kdiff.Outcome) { o.Runs[len(o.Runs)-1].Retval ^= 1 }},
	} {
		o := s.Run(p)
		c.mutate(&o)
		if kdiff.Diff(base, o) == "" {
			t.Errorf("Diff does not see a change of %s", c.what)
		}
	}
}

// The instrumented copy RunObserved runs computes what the program does,
// and records its map helper calls. (bpfsim alone.)
func TestObservedRunMatchesRun(t *testing.T) {
	s, err := kdiff.NewSim()
	if err != nil {
		t.Fatal(err)
	}
	events := 0
	for seed := uint64(0); seed < 50; seed++ {
		p := kdiff.Generate(seed, kdiff.DefaultMapGenOptions)
		o, ev, err := s.RunObserved(p)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if d := kdiff.Diff(s.Run(p), o); d != "" {
			t.Fatalf("seed %d: the instrumented copy runs differently: %s", seed, d)
		}
		for _, e := range ev {
			if e.Map < 0 {
				t.Fatalf("seed %d: a helper call on an unknown map: %+v", seed, e)
			}
		}
		events += len(ev)
	}
	if events < 50 {
		t.Fatalf("only %d map helper calls observed in 50 programs", events)
	}
}
