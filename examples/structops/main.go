// Command structops walks through struct_ops and BPF_PROG_ASSOC_STRUCT_OPS
// (seed 004) on a simulated subsystem in the spirit of sched_ext's
// scx_layered: a tiny rate limiter whose policy BPF programs implement.
//
// Read it top to bottom. It
//
//  1. registers the subsystem: struct rate_ops { int (*admit)(int cost);
//     int (*refresh)(int epoch); int burst; } and two kfuncs,
//     rl_admit(cost, aux__prog) and rl_refresh(epoch, aux__prog), which
//     find "their" instance through the calling program's association;
//  2. loads TWO instances at once, "gold" (burst 8) and "bronze" (burst
//     2), each a BPF_F_LINK struct_ops map with its own admit and refresh
//     programs, attached through struct_ops links;
//  3. loads, per instance, a syscall program that triggers a refresh (as
//     scx_layered's user-space trigger refreshes layers) and a tracing
//     program that calls rl_admit (as scx_layered's GPU tracing program
//     does), and associates each with its instance with
//     BPF_PROG_ASSOC_STRUCT_OPS;
//  4. runs them: each program reaches the right instance, although the
//     programs are the same bytecode;
//  5. tears everything down in an order that shows who keeps a map alive,
//     printing associations and reference counts as they change, and ends
//     with a leak check.
package main

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/kfunc"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/structops"
)

func main() {
	if err := run(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "structops:", err)
		os.Exit(1)
	}
}

var (
	intT     = &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
	voidPtrT = &btf.Pointer{Target: &btf.Void{}}
	// struct rate_ops: the subsystem's operations.
	rateOps = &btf.Struct{Name: "rate_ops", Size: 24, Members: []btf.Member{
		{Name: "admit", Type: &btf.Pointer{Target: &btf.FuncProto{Return: intT, Params: []btf.FuncParam{{Name: "cost", Type: intT}}}}},
		{Name: "refresh", Type: &btf.Pointer{Target: &btf.FuncProto{Return: intT, Params: []btf.FuncParam{{Name: "epoch", Type: intT}}}}, Offset: 64},
		{Name: "burst", Type: intT, Offset: 128},
	}}
)

const (
	memberAdmit   = 0
	memberRefresh = 1
)

// limiter is the simulated subsystem: the instances registered with it
// and what each has done.
type limiter struct {
	k  *sim.Kernel
	mu sync.Mutex
	// live are the registered instances, by their kdata.
	live  map[*structops.Map]*instanceStats
	names map[*structops.Map]string
}

type instanceStats struct {
	admitted, refused int
	epoch             int64
}

func (l *limiter) stats(m *structops.Map) *instanceStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.live[m]
}

// register declares struct rate_ops and its kfuncs on the kernel.
func (l *limiter) register() (*structops.Desc, error) {
	return l.k.RegisterStructOps(&structops.Type{
		Struct: rateOps,
		// The subsystem takes burst from user space (init_member).
		InitMember: func(m structops.Member, kdata, udata []byte) (bool, error) {
			if m.Name != "burst" {
				return false, nil
			}
			if int32(binary.LittleEndian.Uint32(udata[m.Offset:])) <= 0 {
				return false, fmt.Errorf("burst must be positive")
			}
			copy(kdata[m.Offset:m.Offset+4], udata[m.Offset:])
			return true, nil
		},
		// Every instance must implement admit (validate).
		Validate: func(m *structops.Map) error {
			if m.Program(memberAdmit) == nil {
				return fmt.Errorf("rate_ops.admit is required")
			}
			return nil
		},
		Reg: func(m *structops.Map, _ *structops.Link) error {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.live[m] = &instanceStats{}
			return nil
		},
		Unreg: func(m *structops.Map, _ *structops.Link) {
			l.mu.Lock()
			defer l.mu.Unlock()
			delete(l.live, m)
		},
		Kfuncs: []*kfunc.Func{
			{
				// int rl_admit(int cost, void *aux__prog): the
				// instance's admit decides; the subsystem counts.
				Name:  "rl_admit",
				Proto: &btf.FuncProto{Return: intT, Params: []btf.FuncParam{{Name: "cost", Type: intT}, {Name: "aux__prog", Type: voidPtrT}}},
				Fn: func(m *interp.Machine, cost, aux, _, _, _ uint64) (uint64, error) {
					inst := l.k.AssocStructOpsMap(aux)
					st := l.stats(inst)
					if inst == nil || st == nil {
						return noInstance, nil // no instance, or not registered
					}
					ok, err := inst.CallFrom(m, memberAdmit, cost)
					if err != nil {
						return 0, err
					}
					l.mu.Lock()
					if ok != 0 {
						st.admitted++
					} else {
						st.refused++
					}
					l.mu.Unlock()
					return ok, nil
				},
			},
			{
				// int rl_refresh(int epoch, void *aux__prog).
				Name:  "rl_refresh",
				Proto: &btf.FuncProto{Return: intT, Params: []btf.FuncParam{{Name: "epoch", Type: intT}, {Name: "aux__prog", Type: voidPtrT}}},
				Fn: func(m *interp.Machine, epoch, aux, _, _, _ uint64) (uint64, error) {
					inst := l.k.AssocStructOpsMap(aux)
					st := l.stats(inst)
					if inst == nil || st == nil {
						return noInstance, nil
					}
					r, err := inst.CallFrom(m, memberRefresh, epoch)
					if err != nil {
						return 0, err
					}
					l.mu.Lock()
					st.epoch = int64(int32(r))
					l.mu.Unlock()
					return r, nil
				},
			},
		},
	})
}

// admitProg implements admit: a request costing more than burst is
// refused (burst is baked into each instance's program, as a
// scheduler's BPF code is specialised per layer).
func admitProg(burst int32) asm.Instructions {
	return asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord), // cost
		asm.Mov.Imm(asm.R0, 0),
		asm.JSGT.Imm(asm.R2, burst, "refuse"),
		asm.Mov.Imm(asm.R0, 1),
		asm.Return().WithSymbol("refuse"),
	}
}

// refreshProg implements refresh: the new epoch, tagged with the
// instance's tier.
func refreshProg(tier int32) asm.Instructions {
	return asm.Instructions{
		asm.LoadMem(asm.R0, asm.R1, 0, asm.DWord),
		asm.Add.Imm(asm.R0, tier*1000),
		asm.Return(),
	}
}

// world is everything the walk-through loaded.
type world struct {
	k        *sim.Kernel
	lim      *limiter
	desc     *structops.Desc
	maps     map[string]*sim.Map
	links    map[string]*sim.StructOpsLink
	ops      map[string][]*sim.Program // the struct_ops programs
	triggers map[string]*sim.Program   // syscall: refresh
	tracers  map[string]*sim.Program   // raw tracepoint: admit
}

func run(w io.Writer) error {
	k, err := sim.NewKernel(nil)
	if err != nil {
		return err
	}
	lim := &limiter{k: k, live: map[*structops.Map]*instanceStats{}, names: map[*structops.Map]string{}}
	desc, err := lim.register()
	if err != nil {
		return err
	}
	admitID, _ := k.KfuncID("rl_admit")
	refreshID, _ := k.KfuncID("rl_refresh")
	fmt.Fprintf(w, "1. registered struct_ops %s (BTF id %d, value %s id %d, %d bytes); kfuncs rl_admit #%d, rl_refresh #%d\n",
		desc.Type.Name(), desc.TypeID, desc.Value.Name, desc.ValueTypeID, desc.ValueSize(), admitID, refreshID)

	wd := &world{k: k, lim: lim, desc: desc, maps: map[string]*sim.Map{}, links: map[string]*sim.StructOpsLink{},
		ops: map[string][]*sim.Program{}, triggers: map[string]*sim.Program{}, tracers: map[string]*sim.Program{}}
	p := k.InitProcess()

	// 2. Two instances, each with its own programs and burst.
	for _, inst := range []struct {
		name  string
		burst int32
		tier  int32
	}{{"gold", 8, 1}, {"bronze", 2, 2}} {
		admit, err := p.NewProgram(&ebpf.ProgramSpec{Name: inst.name + "_admit", Type: ebpf.StructOps, AttachTo: "rate_ops:admit", License: "GPL", Instructions: admitProg(inst.burst)})
		if err != nil {
			return err
		}
		refresh, err := p.NewProgram(&ebpf.ProgramSpec{Name: inst.name + "_refresh", Type: ebpf.StructOps, AttachTo: "rate_ops:refresh", License: "GPL", Instructions: refreshProg(inst.tier)})
		if err != nil {
			return err
		}
		m, err := p.NewMap(&ebpf.MapSpec{Name: inst.name, Type: ebpf.StructOpsMap, KeySize: 4, MaxEntries: 1, Value: rateOps, Flags: uapi.BPF_F_LINK})
		if err != nil {
			return err
		}
		value := make([]byte, desc.ValueSize())
		data := value[structops.DataOffset:]
		binary.LittleEndian.PutUint64(data[0:], uint64(admit.FD()))
		binary.LittleEndian.PutUint64(data[8:], uint64(refresh.FD()))
		binary.LittleEndian.PutUint32(data[16:], uint32(inst.burst))
		if err := m.Put(uint32(0), value); err != nil {
			return err
		}
		l, err := k.AttachStructOps(m)
		if err != nil {
			return err
		}
		lim.names[m.StructOps()] = inst.name
		wd.maps[inst.name], wd.links[inst.name] = m, l
		wd.ops[inst.name] = []*sim.Program{admit, refresh}
	}
	fmt.Fprintln(w, "2. two instances updated (state ready) and attached through links (reg):")
	wd.show(w)

	// 3. The same trigger and tracer bytecode, loaded once per instance
	// and associated with it.
	trigger := asm.Instructions{
		asm.LoadMem(asm.R1, asm.R1, 0, asm.Word), // epoch, from the syscall context
		asm.Mov.Imm(asm.R2, 0),                   // aux__prog: the verifier fills it in
		asm.Instruction{OpCode: asm.OpCode(asm.JumpClass).SetJumpOp(asm.Call), Src: asm.PseudoKfuncCall, Constant: int64(refreshID)},
		asm.Return(),
	}
	tracer := asm.Instructions{
		asm.LoadMem(asm.R1, asm.R1, 0, asm.DWord), // the request's cost: the tracepoint's first argument
		asm.Instruction{OpCode: asm.OpCode(asm.JumpClass).SetJumpOp(asm.Call), Src: asm.PseudoKfuncCall, Constant: int64(admitID)},
		asm.Return(),
	}
	for _, name := range []string{"gold", "bronze"} {
		t, err := p.NewProgram(&ebpf.ProgramSpec{Name: name + "_trigger", Type: ebpf.Syscall, Flags: uapi.BPF_F_SLEEPABLE, License: "GPL", Instructions: trigger})
		if err != nil {
			return err
		}
		tr, err := p.NewProgram(&ebpf.ProgramSpec{Name: name + "_tracer", Type: ebpf.RawTracepoint, License: "GPL", Instructions: tracer})
		if err != nil {
			return err
		}
		for _, prog := range []*sim.Program{t, tr} {
			// Twice: the second call changes nothing (one reference
			// per program).
			for i := 0; i < 2; i++ {
				if err := prog.AssocStructOps(wd.maps[name]); err != nil {
					return err
				}
			}
		}
		wd.triggers[name], wd.tracers[name] = t, tr
	}
	err = wd.triggers["gold"].AssocStructOps(wd.maps["bronze"])
	fmt.Fprintf(w, "3. trigger and tracer programs associated (each twice); re-associating gold_trigger with bronze: %v\n", err)
	wd.show(w)

	// 4. Run: each program reaches its own instance.
	for _, name := range []string{"gold", "bronze"} {
		res, err := wd.triggers[name].Test(&sim.RunOptions{Context: uint32(7)})
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "4. %s_trigger(epoch 7) -> rl_refresh -> %s.refresh = %d\n", name, name, int32(res.R0))
		for _, cost := range []uint64{1, 3, 9} {
			ctx := make([]byte, 8)
			binary.LittleEndian.PutUint64(ctx, cost)
			res, err := wd.tracers[name].Test(&sim.RunOptions{Context: ctx})
			if err != nil {
				return err
			}
			fmt.Fprintf(w, "   %s_tracer(cost %d) -> rl_admit -> %s.admit = %d\n", name, cost, name, int32(res.R0))
		}
	}
	for _, name := range []string{"gold", "bronze"} {
		st := lim.stats(wd.maps[name].StructOps())
		fmt.Fprintf(w, "   %s: epoch %d, admitted %d, refused %d\n", name, st.epoch, st.admitted, st.refused)
	}

	// 5. Tear down, watching who keeps the maps alive.
	for _, name := range []string{"gold", "bronze"} {
		wd.maps[name].Close()
		for _, prog := range wd.ops[name] {
			prog.Close()
		}
	}
	k.SynchronizeRCU()
	fmt.Fprintln(w, "5. map fds and struct_ops program fds closed: links and associated programs keep the maps")
	wd.show(w)
	for _, name := range []string{"gold", "bronze"} {
		wd.links[name].Close()
	}
	k.SynchronizeRCU()
	res, err := wd.tracers["gold"].Test(&sim.RunOptions{Context: make([]byte, 8)})
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "   links closed (unreg): gold_tracer -> rl_admit = %d (the instance is unregistered, the map still associated)\n", int32(res.R0))
	wd.show(w)
	for _, name := range []string{"gold", "bronze"} {
		wd.triggers[name].Close()
	}
	k.SynchronizeRCU()
	fmt.Fprintln(w, "   triggers closed: each map is held by its tracer alone")
	wd.show(w)
	for _, name := range []string{"gold", "bronze"} {
		wd.tracers[name].Close()
	}
	if err := k.CheckLeaks(); err != nil {
		return err
	}
	fmt.Fprintf(w, "   tracers closed: maps freed; leak check clean (%d maps alive)\n", len(k.MapIDs()))
	return nil
}

// show prints each map's state and references and each program's
// association.
func (wd *world) show(w io.Writer) {
	names := make([]string, 0, len(wd.maps))
	for n := range wd.maps {
		names = append(names, n)
	}
	sort.Strings(names)
	ids := map[uint32]bool{}
	for _, id := range wd.k.MapIDs() {
		ids[id] = true
	}
	for _, n := range names {
		m := wd.maps[n]
		if !ids[m.ID()] {
			fmt.Fprintf(w, "   map %-6s id %d: freed\n", n, m.ID())
			continue
		}
		refcnt, usercnt := m.Refs()
		fmt.Fprintf(w, "   map %-6s id %d: state %-8s refcnt %d usercnt %d registered %v\n", n, m.ID(), m.StructOps().State(), refcnt, usercnt, wd.lim.stats(m.StructOps()) != nil)
	}
	for _, n := range names {
		for _, prog := range append(append([]*sim.Program{}, wd.ops[n]...), wd.triggers[n], wd.tracers[n]) {
			if prog == nil || prog.Refs() == 0 {
				continue
			}
			a, ok := prog.StructOpsAssoc()
			switch {
			case !ok:
				fmt.Fprintf(w, "   prog %-15s: no association\n", prog.Name())
			case a.Poisoned:
				fmt.Fprintf(w, "   prog %-15s: poisoned\n", prog.Name())
			default:
				fmt.Fprintf(w, "   prog %-15s: associated with map id %d\n", prog.Name(), a.MapID)
			}
		}
	}
}

// noInstance is what the kfuncs return without a registered instance:
// -ENOENT as an int.
var noInstance = uint64(0xfffffffe) // -ENOENT as a 32-bit int
