//go:build linux

package sim_test

import (
	"fmt"
	"math/rand"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Kernel-differential tests of object lifetimes: who holds a map, a
// program or a perf event, and what programs observe as the holders go.
// Each scenario is played in bpfsim and in this machine's kernel through
// the same moves (lifetime_world_linux_test.go), and the records of every
// step must be equal.

// compareLife plays s in bpfsim, checks bpfsim leaks nothing once the
// scenario closed everything, plays s in the kernel and returns the
// records that differ.
func compareLife(t *testing.T, s *lifeScenario) (steps int, diffs []string) {
	t.Helper()
	sw, err := newSimLife()
	if err != nil {
		t.Fatal(err)
	}
	sout, err := s.play(sw, nil)
	if err != nil {
		t.Fatalf("%s: bpfsim: %v", s.name, err)
	}
	if err := sw.k.CheckLeaks(); err != nil {
		diffs = append(diffs, fmt.Sprintf("%s: bpfsim after the scenario: %v", s.name, err))
	}
	kout, err := s.play(newKernLife(), sout)
	if err != nil {
		t.Fatalf("%s: kernel: %v", s.name, err)
	}
	for i := range max(len(sout), len(kout)) {
		var k, b string
		if i < len(kout) {
			k = kout[i]
		}
		if i < len(sout) {
			b = sout[i]
		}
		if k != b {
			diffs = append(diffs, fmt.Sprintf("%s step %d:\n  kernel %s\n  bpfsim %s", s.name, i, k, b))
		}
	}
	return len(kout), diffs
}

// runCorpus compares every scenario and reports the disagreements, at
// most a few in full.
func runCorpus(t *testing.T, scenarios []*lifeScenario) {
	t.Helper()
	steps, bad := 0, 0
	var shown []string
	for _, s := range scenarios {
		n, diffs := compareLife(t, s)
		steps += n
		if len(diffs) > 0 {
			bad++
			if len(shown) < 8 {
				shown = append(shown, diffs...)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d scenarios disagree; first differences:\n%s", bad, len(scenarios), strings.Join(shown, "\n"))
	}
	t.Logf("%d scenarios, %d steps compared, %d agree", len(scenarios), steps, len(scenarios)-bad)
}

// permutations returns every order of xs.
func permutations(xs []string) [][]string {
	if len(xs) <= 1 {
		return [][]string{append([]string(nil), xs...)}
	}
	var out [][]string
	for i := range xs {
		rest := append(append([]string(nil), xs[:i]...), xs[i+1:]...)
		for _, p := range permutations(rest) {
			out = append(out, append([]string{xs[i]}, p...))
		}
	}
	return out
}

func step(name string, do func(w lifeWorld) error) lifeStep {
	return lifeStep{name: name, do: do}
}

func eventualStep(name string, do func(w lifeWorld) error) lifeStep {
	return lifeStep{name: name, do: do, eventually: true}
}

// perfScenario is seed 001's BPF_F_PRESERVE_ELEMS: a perf event array
// with an event per CPU, installed through chosen fds among A (the
// creating fd), A' (its dup), B (opened by id) and B' (B's dup); the fds
// closed in the given order while two raw tracepoint programs hold the
// map (in some, after the first close, a slot filled again through the fd
// closed last); then the map opened again by id (C), an event installed through C,
// C closed; then the programs closed. After each step each program writes
// to its slot from each CPU: 0 where the slot holds the CPU's own event,
// -EOPNOTSUPP where it holds another CPU's, -ENOENT where it is empty.
func perfScenario(flags uint32, install [2]string, order []string, closeEvents bool, reinstall int) *lifeScenario {
	s := &lifeScenario{name: fmt.Sprintf("perf flags %#x install %v close %v events closed %v reinstall %d", flags, install, order, closeEvents, reinstall)}
	add := func(st lifeStep) { s.steps = append(s.steps, st) }
	add(step("create A", func(w lifeWorld) error {
		return w.newMap("A", &ebpf.MapSpec{Type: ebpf.PerfEventArray, KeySize: 4, ValueSize: 4, MaxEntries: 2, Flags: flags})
	}))
	add(step("dup A as A'", func(w lifeWorld) error { return w.dup("A'", "A") }))
	add(step("open A by id as B", func(w lifeWorld) error { return w.openByID("B", "A") }))
	add(step("dup B as B'", func(w lifeWorld) error { return w.dup("B'", "B") }))
	for cpu := range 2 {
		ev := fmt.Sprintf("e%d", cpu)
		add(step("open "+ev, func(w lifeWorld) error { return w.newPerfEvent(ev, cpu) }))
		add(step(fmt.Sprintf("install %s in slot %d through %s", ev, cpu, install[cpu]), func(w lifeWorld) error {
			return w.update(install[cpu], uint32(cpu), ev)
		}))
	}
	for slot := range 2 {
		name := fmt.Sprintf("out%d", slot)
		add(step("load "+name, func(w lifeWorld) error {
			return w.load(name, ebpf.RawTracepoint, func(fd func(string) int) asm.Instructions {
				return outputTo(fd("A"), int32(slot)).Instructions
			})
		}))
	}
	if closeEvents {
		// The slots hold the events' files: their own fds do not matter.
		add(step("close e0 and e1", func(w lifeWorld) error {
			if err := w.closePerfEvent("e0"); err != nil {
				return err
			}
			return w.closePerfEvent("e1")
		}))
	}
	for i, h := range order {
		add(step("close "+h, func(w lifeWorld) error { return w.closeMap(h) }))
		if i == 0 && reinstall >= 0 && !closeEvents {
			// A slot filled again belongs to the file of its last
			// update: here the fd closed last.
			via, ev := order[len(order)-1], fmt.Sprintf("e%d", reinstall)
			add(step(fmt.Sprintf("install %s in slot %d again through %s", ev, reinstall, via), func(w lifeWorld) error {
				return w.update(via, uint32(reinstall), ev)
			}))
		}
	}
	// Every user fd is closed; the programs still hold the map, which can
	// be opened again by id and filled again.
	add(step("open A by id as C", func(w lifeWorld) error { return w.openByID("C", "A") }))
	if !closeEvents {
		add(step("install e0 in slot 0 through C", func(w lifeWorld) error { return w.update("C", 0, "e0") }))
	}
	add(step("close C", func(w lifeWorld) error { return w.closeMap("C") }))
	add(eventualStep("close out0 and out1", func(w lifeWorld) error {
		if err := w.closeProg("out0"); err != nil {
			return err
		}
		return w.closeProg("out1")
	}))
	s.observe = func(w lifeWorld) string {
		var b strings.Builder
		for slot := range 2 {
			prog := fmt.Sprintf("out%d", slot)
			if !w.isOpen(prog) {
				continue
			}
			for cpu := range 2 {
				fmt.Fprintf(&b, "slot %d from cpu %d: %s; ", slot, cpu, lifeErr(w.run(prog, cpu)))
			}
		}
		b.WriteString(listedObjs(w, "A"))
		return b.String()
	}
	return s
}

// TestPerfEventArrayFileOwnershipMatchesKernel plays every order of
// closing A, A', B and B', for every choice of the fds the two events are
// installed through, with and without BPF_F_PRESERVE_ELEMS, with the
// events' own fds open or closed: 768 scenarios.
func TestPerfEventArrayFileOwnershipMatchesKernel(t *testing.T) {
	needKernel(t)
	fds := []string{"A", "A'", "B", "B'"}
	var corpus []*lifeScenario
	n := 0
	for _, flags := range []uint32{0, uapi.BPF_F_PRESERVE_ELEMS} {
		for _, i0 := range fds {
			for _, i1 := range fds {
				for _, order := range permutations(fds) {
					// Half the scenarios close the events' fds; of
					// the others, some fill a slot again after the
					// first close.
					corpus = append(corpus, perfScenario(flags, [2]string{i0, i1}, order, n%2 == 1, n%6/2-1))
					n++
				}
			}
		}
	}
	if testing.Short() {
		corpus = corpus[:len(corpus)/8]
	}
	runCorpus(t, corpus)
}

// progArrayGen builds random prog array scenarios: a prog array PA with
// three slots, an XDP program P that tail calls through slots 0 and 1
// (returning 1 if both fall through), programs T and T2 (returning 2 and
// 3) to put there, and in slot 2 a sentinel program whose own fd is
// closed. Random moves dup PA's fds, open it by id, close fds, fill and
// empty slots (P too can go into a slot of its own array: a cycle), close
// T, T2 and at times P. Observed after each move:
// P's result, which objects' ids are listed, and the slots as user space
// reads them back.
//
// The kernel clears a prog array whose last user reference went in a
// workqueue (prog_array_map_clear), after close(2) has returned; the
// sentinel, held only by its slot, shows when the clear is done: its id
// goes with it. A scenario that opens PA by id after that arms a new
// sentinel, so that a later clear is visible too (else a pending clear
// could empty a slot filled after the reopen, and the kernel's record
// would depend on its workqueue's timing).
type progArrayGen struct {
	r        *rand.Rand
	s        *lifeScenario
	handles  []string // open PA handles
	n        int      // handles made
	sentries []string
	tOpen    map[string]bool
	pOpen    bool
	paGone   bool
}

func (g *progArrayGen) add(st lifeStep) { g.s.steps = append(g.s.steps, st) }

func (g *progArrayGen) newHandle(prefix string) string {
	g.n++
	return fmt.Sprintf("%s%d", prefix, g.n)
}

func (g *progArrayGen) pick() string { return g.handles[g.r.Intn(len(g.handles))] }

func (g *progArrayGen) dropHandle(h string) {
	for i, x := range g.handles {
		if x == h {
			g.handles = append(g.handles[:i], g.handles[i+1:]...)
			return
		}
	}
}

// armSentinel loads a program, puts it in slot 2 through via and closes
// its fd.
func (g *progArrayGen) armSentinel(via string) {
	sn := fmt.Sprintf("S%d", len(g.sentries)+1)
	g.sentries = append(g.sentries, sn)
	g.add(step("load "+sn, func(w lifeWorld) error {
		return w.load(sn, ebpf.XDP, func(func(string) int) asm.Instructions { return retProg(9) })
	}))
	g.add(step("put "+sn+" in slot 2 through "+via, func(w lifeWorld) error { return w.update(via, 2, sn) }))
	g.add(step("close "+sn, func(w lifeWorld) error { return w.closeProg(sn) }))
}

func genProgArrayScenario(r *rand.Rand, i int) *lifeScenario {
	g := &progArrayGen{r: r, s: &lifeScenario{name: fmt.Sprintf("prog array scenario %d", i)},
		tOpen: map[string]bool{"T": true, "T2": true}, pOpen: true}
	g.add(step("create PA", func(w lifeWorld) error { return w.newMap("PA", progArraySpec(3)) }))
	g.handles = []string{"PA"}
	g.add(step("load T", func(w lifeWorld) error {
		return w.load("T", ebpf.XDP, func(func(string) int) asm.Instructions { return retProg(2) })
	}))
	g.add(step("load T2", func(w lifeWorld) error {
		return w.load("T2", ebpf.XDP, func(func(string) int) asm.Instructions { return retProg(3) })
	}))
	g.add(step("load P", func(w lifeWorld) error {
		return w.load("P", ebpf.XDP, func(fd func(string) int) asm.Instructions {
			return asm.Instructions{
				asm.Mov.Reg(asm.R6, asm.R1),
				asm.LoadMapPtr(asm.R2, fd("PA")),
				asm.Mov.Imm(asm.R3, 0),
				asm.FnTailCall.Call(),
				asm.Mov.Reg(asm.R1, asm.R6),
				asm.LoadMapPtr(asm.R2, fd("PA")),
				asm.Mov.Imm(asm.R3, 1),
				asm.FnTailCall.Call(),
				asm.Mov.Imm(asm.R0, 1),
				asm.Return(),
			}
		})
	}))
	g.armSentinel("PA")
	g.add(step("put T in slot 0 through PA", func(w lifeWorld) error { return w.update("PA", 0, "T") }))
	for n := 6 + r.Intn(8); n > 0; n-- {
		if g.paGone {
			g.add(step("open PA by id after its free", func(w lifeWorld) error { return w.openByID(g.newHandle("R"), "PA") }))
			break
		}
		switch op := r.Intn(10); {
		case op < 2 && len(g.handles) > 0:
			from, h := g.pick(), g.newHandle("D")
			g.handles = append(g.handles, h)
			g.add(step("dup "+from+" as "+h, func(w lifeWorld) error { return w.dup(h, from) }))
		case op < 3:
			h := g.newHandle("R")
			rearm := len(g.handles) == 0
			g.handles = append(g.handles, h)
			g.add(step("open PA by id as "+h, func(w lifeWorld) error { return w.openByID(h, "PA") }))
			if rearm {
				g.armSentinel(h)
			}
		case op < 5 && len(g.handles) > 0:
			h := g.pick()
			g.dropHandle(h)
			g.add(eventualStep("close "+h, func(w lifeWorld) error { return w.closeMap(h) }))
			if len(g.handles) == 0 && !g.pOpen {
				g.paGone = true
			}
		case op < 7 && len(g.handles) > 0:
			var open []string
			for _, t := range []string{"T", "T2"} {
				if g.tOpen[t] {
					open = append(open, t)
				}
			}
			if g.pOpen && r.Intn(4) == 0 {
				// P in a slot of the array it tail calls through: a
				// cycle only the uref clear breaks.
				open = []string{"P"}
			}
			if len(open) == 0 {
				continue
			}
			via, slot, t := g.pick(), uint32(r.Intn(2)), open[r.Intn(len(open))]
			g.add(step(fmt.Sprintf("put %s in slot %d through %s", t, slot, via), func(w lifeWorld) error { return w.update(via, slot, t) }))
		case op < 8 && len(g.handles) > 0:
			via, slot := g.pick(), uint32(r.Intn(2))
			g.add(step(fmt.Sprintf("delete slot %d through %s", slot, via), func(w lifeWorld) error { return w.del(via, slot) }))
		case op < 9:
			t := []string{"T", "T2"}[r.Intn(2)]
			if !g.tOpen[t] {
				continue
			}
			g.tOpen[t] = false
			g.add(step("close "+t, func(w lifeWorld) error { return w.closeProg(t) }))
		case g.pOpen && r.Intn(3) == 0:
			g.pOpen = false
			g.add(eventualStep("close P", func(w lifeWorld) error { return w.closeProg("P") }))
			if len(g.handles) == 0 {
				g.paGone = true
			}
		}
	}
	g.add(eventualStep("close everything", func(w lifeWorld) error { w.closeAll(); return nil }))
	objs := append([]string{"PA", "P", "T", "T2"}, g.sentries...)
	g.s.observe = func(w lifeWorld) string {
		var b strings.Builder
		if w.isOpen("P") {
			fmt.Fprintf(&b, "P: %s; ", lifeErr(w.run("P", 0)))
		}
		for _, h := range g.allHandles() {
			if w.isOpen(h) {
				for slot := range uint32(3) {
					fmt.Fprintf(&b, "slot %d: %s; ", slot, lifeErr(w.lookupObj(h, slot)))
				}
				break
			}
		}
		b.WriteString(listedObjs(w, objs...))
		return b.String()
	}
	return g.s
}

// allHandles lists every PA handle name the scenario may have made.
func (g *progArrayGen) allHandles() []string {
	hs := []string{"PA"}
	for i := 1; i <= g.n; i++ {
		hs = append(hs, fmt.Sprintf("D%d", i), fmt.Sprintf("R%d", i))
	}
	return hs
}

// TestProgArrayUrefAndProgramLifetimesMatchKernel plays 300 random prog
// array scenarios (see progArrayGen): the tail call works while any user
// fd on the array is open, falls through once the last one closed (and
// works again once the array, still held by P, is opened by id and
// filled); a program whose fd is closed runs and stays listed while a
// slot holds it, and its id goes when the slot lets it go.
func TestProgArrayUrefAndProgramLifetimesMatchKernel(t *testing.T) {
	needKernel(t)
	r := rand.New(rand.NewSource(2024))
	n := 300
	if testing.Short() {
		n = 40
	}
	var corpus []*lifeScenario
	kinds := map[string]int{}
	for i := range n {
		s := genProgArrayScenario(r, i)
		corpus = append(corpus, s)
		seen := map[string]bool{}
		for _, st := range s.steps {
			switch {
			case strings.HasPrefix(st.name, "put S2"):
				seen["reopened and refilled after a clear"] = true
			case strings.HasPrefix(st.name, "put P in"):
				seen["P in its own array"] = true
			case st.name == "close P":
				seen["P closed"] = true
			case st.name == "open PA by id after its free":
				seen["PA freed before the end"] = true
			}
		}
		for k := range seen {
			kinds[k]++
		}
	}
	t.Logf("scenarios with: %v", kinds)
	runCorpus(t, corpus)
}

// innerArraySpec is the inner maps' and templates' spec: one u64.
func innerArraySpec() *ebpf.MapSpec {
	return &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1}
}

// innerReader returns an XDP program returning inner[0] of the map in
// outer[key]: 100 if the outer slot is empty.
func innerReader(outerFD int, key int32) asm.Instructions {
	return asm.Instructions{
		asm.StoreImm(asm.R10, -4, int64(key), asm.Word),
		asm.StoreImm(asm.R10, -8, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, outerFD),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "none"),
		asm.Mov.Reg(asm.R1, asm.R0),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, -8),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "none"),
		asm.LoadMem(asm.R0, asm.R0, 0, asm.DWord),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 100).WithSymbol("none"),
		asm.Return(),
	}
}

// innerGen builds random map-in-map scenarios: an outer map O (array or
// hash of maps), inner arrays I1 and I2 holding one value each, and XDP
// programs Q0 and Q1 returning the value of the inner map in O[0] and
// O[1]. Random moves dup and open by id the three maps' fds, close them,
// put inner maps in O's slots and take them out, change inner values
// through any open fd, and at times close Q0 or Q1. Observed after each
// move: what Q0 and Q1 return, which ids are listed, O's slots read back
// as inner map names.
type innerGen struct {
	r       *rand.Rand
	s       *lifeScenario
	n       int
	handles map[string][]string // object -> its open handles
	qOpen   map[string]bool
}

func (g *innerGen) add(st lifeStep) { g.s.steps = append(g.s.steps, st) }

func (g *innerGen) openObjs() []string {
	var objs []string
	for _, o := range []string{"O", "I1", "I2"} {
		if len(g.handles[o]) > 0 {
			objs = append(objs, o)
		}
	}
	return objs
}

func (g *innerGen) pick(obj string) string { hs := g.handles[obj]; return hs[g.r.Intn(len(hs))] }

func genInnerScenario(r *rand.Rand, i int, outer ebpf.MapType, flags uint32) *lifeScenario {
	g := &innerGen{r: r, s: &lifeScenario{name: fmt.Sprintf("%s flags %#x scenario %d", outer, flags, i)},
		handles: map[string][]string{"O": {"O"}, "I1": {"I1"}, "I2": {"I2"}}, qOpen: map[string]bool{"Q0": true, "Q1": true}}
	maxEntries := uint32(2)
	if outer == ebpf.HashOfMaps {
		maxEntries = 4
	}
	g.add(step("create O", func(w lifeWorld) error {
		return w.newMap("O", &ebpf.MapSpec{Type: outer, KeySize: 4, ValueSize: 4, MaxEntries: maxEntries, Flags: flags, InnerMap: innerArraySpec()})
	}))
	for j, in := range []string{"I1", "I2"} {
		g.add(step("create "+in, func(w lifeWorld) error {
			if err := w.newMap(in, innerArraySpec()); err != nil {
				return err
			}
			return w.updateU64(in, 0, uint64(11*(j+1)))
		}))
	}
	for _, q := range []string{"Q0", "Q1"} {
		key := int32(q[1] - '0')
		g.add(step("load "+q, func(w lifeWorld) error {
			return w.load(q, ebpf.XDP, func(fd func(string) int) asm.Instructions { return innerReader(fd("O"), key) })
		}))
	}
	g.add(step("put I1 in O[0] through O and I1", func(w lifeWorld) error { return w.update("O", 0, "I1") }))
	for n := 8 + r.Intn(8); n > 0; n-- {
		objs := g.openObjs()
		switch op := r.Intn(12); {
		case op < 2 && len(objs) > 0:
			obj := objs[r.Intn(len(objs))]
			from := g.pick(obj)
			g.n++
			h := fmt.Sprintf("%s.d%d", obj, g.n)
			g.handles[obj] = append(g.handles[obj], h)
			g.add(step("dup "+from+" as "+h, func(w lifeWorld) error { return w.dup(h, from) }))
		case op < 3:
			obj := []string{"O", "I1", "I2"}[r.Intn(3)]
			g.n++
			h := fmt.Sprintf("%s.r%d", obj, g.n)
			g.add(step("open "+obj+" by id as "+h, func(w lifeWorld) error {
				err := w.openByID(h, obj)
				if err == nil {
					return nil
				}
				return err
			}))
			// Whether the open works is the kernels' answer; the
			// generator only uses handles known to be open, so it
			// does not count this one.
			g.handles[obj+"?"] = append(g.handles[obj+"?"], h)
		case op < 6 && len(objs) > 0:
			obj := objs[r.Intn(len(objs))]
			h := g.pick(obj)
			hs := g.handles[obj]
			for k, x := range hs {
				if x == h {
					g.handles[obj] = append(hs[:k:k], hs[k+1:]...)
					break
				}
			}
			// The outer map's free, when this is its last reference,
			// runs in a workqueue and puts the inner maps there; and an
			// inner map's last reference may be one such put still
			// pending (seen under the race detector's slower runs), so
			// every close is observed once the kernel has caught up.
			g.add(eventualStep("close "+h, func(w lifeWorld) error { return w.closeMap(h) }))
		case op < 8 && len(g.handles["O"]) > 0:
			var ins []string
			for _, o := range []string{"I1", "I2"} {
				if len(g.handles[o]) > 0 {
					ins = append(ins, o)
				}
			}
			if len(ins) == 0 {
				continue
			}
			via, key := g.pick("O"), uint32(r.Intn(2))
			in := g.pick(ins[r.Intn(len(ins))])
			// A replaced inner map is put by the kernel as the update
			// returns, or later when an element's free is deferred.
			g.add(eventualStep(fmt.Sprintf("put %s in O[%d] through %s", in, key, via), func(w lifeWorld) error { return w.update(via, key, in) }))
		case op < 9 && len(g.handles["O"]) > 0:
			via, key := g.pick("O"), uint32(r.Intn(2))
			g.add(eventualStep(fmt.Sprintf("delete O[%d] through %s", key, via), func(w lifeWorld) error { return w.del(via, key) }))
		case op < 11 && (len(g.handles["I1"]) > 0 || len(g.handles["I2"]) > 0):
			in := "I1"
			if len(g.handles[in]) == 0 || (len(g.handles["I2"]) > 0 && r.Intn(2) == 0) {
				in = "I2"
			}
			via, v := g.pick(in), uint64(30+n)
			g.add(step(fmt.Sprintf("set %s[0] = %d through %s", in, v, via), func(w lifeWorld) error { return w.updateU64(via, 0, v) }))
		case op == 11 && r.Intn(2) == 0:
			q := []string{"Q0", "Q1"}[r.Intn(2)]
			if !g.qOpen[q] {
				continue
			}
			g.qOpen[q] = false
			// The program's maps are put after a grace period.
			g.add(eventualStep("close "+q, func(w lifeWorld) error { return w.closeProg(q) }))
		}
	}
	g.add(eventualStep("close everything", func(w lifeWorld) error { w.closeAll(); return nil }))
	g.s.observe = func(w lifeWorld) string {
		var b strings.Builder
		for _, q := range []string{"Q0", "Q1"} {
			if w.isOpen(q) {
				fmt.Fprintf(&b, "%s: %s; ", q, lifeErr(w.run(q, 0)))
			}
		}
		for _, h := range g.outerHandles() {
			if w.isOpen(h) {
				for key := range uint32(2) {
					fmt.Fprintf(&b, "O[%d]: %s; ", key, lifeErr(w.lookupObj(h, key)))
				}
				break
			}
		}
		b.WriteString(listedObjs(w, "O", "I1", "I2", "Q0", "Q1"))
		return b.String()
	}
	return g.s
}

// outerHandles lists every handle name on O the scenario may have made.
func (g *innerGen) outerHandles() []string {
	hs := []string{"O"}
	for i := 1; i <= g.n; i++ {
		hs = append(hs, fmt.Sprintf("O.d%d", i), fmt.Sprintf("O.r%d", i))
	}
	return hs
}

// TestInnerMapLifetimesMatchKernel plays 300 random map-in-map scenarios
// for each outer type (see innerGen): an inner map whose fds are all
// closed keeps working through its outer map, and its id goes once no
// slot, fd or outer map holds it.
func TestInnerMapLifetimesMatchKernel(t *testing.T) {
	needKernel(t)
	for _, c := range []struct {
		outer ebpf.MapType
		flags uint32
	}{
		{ebpf.ArrayOfMaps, 0},
		{ebpf.HashOfMaps, 0},
		// Elements allocated on update and freed on delete, rather than
		// preallocated: the inner map is put when its element goes.
		{ebpf.HashOfMaps, uapi.BPF_F_NO_PREALLOC},
	} {
		t.Run(fmt.Sprintf("%s flags %#x", c.outer, c.flags), func(t *testing.T) {
			// Most of the time goes in the kernel's grace periods after
			// each update of an outer map: the outer types in parallel.
			t.Parallel()
			r := rand.New(rand.NewSource(77))
			n := 300
			if testing.Short() {
				n = 40
			}
			var corpus []*lifeScenario
			for i := range n {
				corpus = append(corpus, genInnerScenario(r, i, c.outer, c.flags))
			}
			runCorpus(t, corpus)
		})
	}
}

// TestProgArrayIsNoInnerMapMatchesKernel compares the errnos of using a
// prog array, and other maps, where a map of maps wants an inner map. A
// prog array has no map_meta_equal (its owner program type is a runtime
// binding the verifier cannot check through an outer map), so the kernel
// refuses it as a template with ENOTSUPP (524, which leaks to user space)
// and as a value with the template's map_meta_equal's EINVAL: a prog
// array can never be held only by an outer map, where its last user
// reference could not clear it.
func TestProgArrayIsNoInnerMapMatchesKernel(t *testing.T) {
	needKernel(t)
	withInner := func(typ ebpf.MapType, inner *ebpf.MapSpec) *ebpf.MapSpec {
		return &ebpf.MapSpec{Type: typ, KeySize: 4, ValueSize: 4, MaxEntries: 2, InnerMap: inner}
	}
	perfSpec := &ebpf.MapSpec{Type: ebpf.PerfEventArray, KeySize: 4, ValueSize: 4, MaxEntries: 2}
	s := &lifeScenario{name: "inner map kinds", observe: func(lifeWorld) string { return "" }}
	for _, c := range []struct {
		h    string
		spec *ebpf.MapSpec
	}{
		{"AoM(prog array)", withInner(ebpf.ArrayOfMaps, progArraySpec(2))},
		{"HoM(prog array)", withInner(ebpf.HashOfMaps, progArraySpec(2))},
		{"AoM(perf event array)", withInner(ebpf.ArrayOfMaps, perfSpec)},
		{"AoM(AoM(array))", withInner(ebpf.ArrayOfMaps, withInner(ebpf.ArrayOfMaps, innerArraySpec()))},
		{"AoM(array)", withInner(ebpf.ArrayOfMaps, innerArraySpec())},
		{"HoM(array)", withInner(ebpf.HashOfMaps, innerArraySpec())},
		{"PA", progArraySpec(2)},
		{"PE", perfSpec},
		{"array", innerArraySpec()},
	} {
		s.steps = append(s.steps, step("create "+c.h, func(w lifeWorld) error { return w.newMap(c.h, c.spec) }))
	}
	for _, outer := range []string{"AoM(array)", "HoM(array)"} {
		for _, v := range []string{"PA", "PE", "array"} {
			s.steps = append(s.steps, step("put "+v+" in "+outer, func(w lifeWorld) error { return w.update(outer, 0, v) }))
		}
	}
	s.steps = append(s.steps, eventualStep("close everything", func(w lifeWorld) error { w.closeAll(); return nil }))
	runCorpus(t, []*lifeScenario{s})
	sw, err := newSimLife()
	if err != nil {
		t.Fatal(err)
	}
	out, _ := s.play(sw, nil)
	for _, rec := range out {
		t.Log(rec)
	}
}

// innerPerfScenario is a perf event array E as the inner map of an array
// of maps O: its events installed through E, its dup E' or F (opened by
// id), its fds closed in the given order while only O holds it, then O[0]
// deleted. The slots go with the files that filled them unless E has
// BPF_F_PRESERVE_ELEMS, whatever holds the map.
func innerPerfScenario(flags uint32, install [2]string, order []string) *lifeScenario {
	s := &lifeScenario{name: fmt.Sprintf("inner perf flags %#x install %v close %v", flags, install, order)}
	add := func(st lifeStep) { s.steps = append(s.steps, st) }
	perf := &ebpf.MapSpec{Type: ebpf.PerfEventArray, KeySize: 4, ValueSize: 4, MaxEntries: 2, Flags: flags}
	add(step("create O", func(w lifeWorld) error {
		return w.newMap("O", &ebpf.MapSpec{Type: ebpf.ArrayOfMaps, KeySize: 4, ValueSize: 4, MaxEntries: 1, InnerMap: perf})
	}))
	add(step("create E", func(w lifeWorld) error { return w.newMap("E", perf) }))
	add(step("dup E as E'", func(w lifeWorld) error { return w.dup("E'", "E") }))
	add(step("open E by id as F", func(w lifeWorld) error { return w.openByID("F", "E") }))
	for cpu := range 2 {
		ev := fmt.Sprintf("e%d", cpu)
		add(step("open "+ev, func(w lifeWorld) error { return w.newPerfEvent(ev, cpu) }))
		add(step(fmt.Sprintf("install %s in slot %d through %s", ev, cpu, install[cpu]), func(w lifeWorld) error {
			return w.update(install[cpu], uint32(cpu), ev)
		}))
	}
	for slot := range 2 {
		name := fmt.Sprintf("w%d", slot)
		add(step("load "+name, func(w lifeWorld) error {
			return w.load(name, ebpf.RawTracepoint, func(fd func(string) int) asm.Instructions { return innerOutputTo(fd("O"), int32(slot)) })
		}))
	}
	add(step("put E in O[0]", func(w lifeWorld) error { return w.update("O", 0, "E") }))
	for _, h := range order {
		add(step("close "+h, func(w lifeWorld) error { return w.closeMap(h) }))
	}
	add(step("delete O[0]", func(w lifeWorld) error { return w.del("O", 0) }))
	add(eventualStep("close everything", func(w lifeWorld) error { w.closeAll(); return nil }))
	s.observe = func(w lifeWorld) string {
		var b strings.Builder
		for slot := range 2 {
			prog := fmt.Sprintf("w%d", slot)
			if !w.isOpen(prog) {
				continue
			}
			for cpu := range 2 {
				fmt.Fprintf(&b, "slot %d from cpu %d: %s; ", slot, cpu, lifeErr(w.run(prog, cpu)))
			}
		}
		b.WriteString(listedObjs(w, "O", "E"))
		return b.String()
	}
	return s
}

// TestInnerPerfEventArrayMatchesKernel plays every order of closing an
// inner perf event array's fds, for every choice of the fds its events
// are installed through, with and without BPF_F_PRESERVE_ELEMS: 108
// scenarios. An outer map's reference keeps the array, not its events.
func TestInnerPerfEventArrayMatchesKernel(t *testing.T) {
	needKernel(t)
	fds := []string{"E", "E'", "F"}
	var corpus []*lifeScenario
	for _, flags := range []uint32{0, uapi.BPF_F_PRESERVE_ELEMS} {
		for _, i0 := range fds {
			for _, i1 := range fds {
				for _, order := range permutations(fds) {
					corpus = append(corpus, innerPerfScenario(flags, [2]string{i0, i1}, order))
				}
			}
		}
	}
	runCorpus(t, corpus)
}
