package sim

import (
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/hashmap"
	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// The simulated kernel's text. After verification the kernel turns every
// helper call into a direct call of a kernel function: its imm becomes the
// function's address minus that of __bpf_call_base (BPF_CALL_IMM), which
// the interpreter and the JITs add back. Map helpers go further, straight
// to the map type's own function (array_map_lookup_elem, ...), or are
// inlined around one (__htab_map_lookup_elem). The simulated kernel needs
// those functions to have addresses for two things: to run such calls,
// and to name them in xlated dumps, as bpftool does from /proc/kallsyms.
//
// So the kernel maps a text area at the start of the vmalloc region, where
// arm64 maps its kernel image (KIMAGE_VADDR), with __bpf_call_base at its
// first byte and one slot per function after the first page. The
// functions themselves are Go: the area holds no code, and is mapped like
// a device that reads as zero, so it costs no memory. The functions of the
// kernel proper (vmlinux) get their slots at boot in a fixed order, so
// their addresses, and the immediates of calls to them, are the same in
// every simulated kernel; functions that come later (helpers and map types
// a user registers, like a module's) get the next free slot when a program
// first needs them.

const (
	// kernelTextSize is the size of the text area: room for about two
	// thousand functions.
	kernelTextSize = 512 << 10
	// ksymFirst is where the first function goes, past __bpf_call_base:
	// far enough that no call immediate is a small number a disassembler
	// would take for a helper id.
	ksymFirst = mem.PageSize
	// ksymSlot is the space each function takes.
	ksymSlot = 0x100
)

// KernelSymbol is one function of the simulated kernel, as /proc/kallsyms
// lists it.
type KernelSymbol struct {
	Addr uint64
	Name string
}

// ksymKind says what a call of a symbol runs.
type ksymKind int

const (
	ksymCallBase   ksymKind = iota // __bpf_call_base: not called
	ksymHelper                     // the function of a helper (its bpf_func_proto's func)
	ksymMapOp                      // a map type's operation
	ksymElemLookup                 // __htab_map_lookup_elem
)

// ksymSpec says what a function of the text is.
type ksymSpec struct {
	name string
	kind ksymKind
	// helper is the helper id a ksymHelper implements, or the map helper
	// a ksymMapOp stands in for (its struct bpf_map_ops member).
	helper int32
	// types are the map types whose operation a ksymMapOp or
	// ksymElemLookup is.
	types []uapi.MapType
}

func (s *ksymSpec) serves(typ uapi.MapType) bool {
	for _, t := range s.types {
		if t == typ {
			return true
		}
	}
	return false
}

// ksym is one function of the text. Its spec never changes once defined.
type ksym struct {
	KernelSymbol
	spec ksymSpec

	once sync.Once
	fn   *interp.Helper
}

// vmlinux lists the functions of the kernel proper that programs reach,
// in the order of their slots (roughly the kernel's link order).
var vmlinux = []ksymSpec{
	// kernel/bpf/helpers.c
	{name: "bpf_map_lookup_elem", kind: ksymHelper, helper: uapi.FuncMapLookupElem},
	{name: "bpf_map_update_elem", kind: ksymHelper, helper: uapi.FuncMapUpdateElem},
	{name: "bpf_map_delete_elem", kind: ksymHelper, helper: uapi.FuncMapDeleteElem},
	{name: "bpf_map_push_elem", kind: ksymHelper, helper: uapi.FuncMapPushElem},
	{name: "bpf_map_pop_elem", kind: ksymHelper, helper: uapi.FuncMapPopElem},
	{name: "bpf_map_peek_elem", kind: ksymHelper, helper: uapi.FuncMapPeekElem},
	{name: "bpf_map_lookup_percpu_elem", kind: ksymHelper, helper: uapi.FuncMapLookupPercpuElem},
	{name: "bpf_user_rnd_u32", kind: ksymHelper, helper: uapi.FuncGetPrandomU32},
	{name: "bpf_get_smp_processor_id", kind: ksymHelper, helper: uapi.FuncGetSmpProcessorID},
	{name: "bpf_ktime_get_ns", kind: ksymHelper, helper: uapi.FuncKtimeGetNs},
	// kernel/trace/bpf_trace.c
	{name: "bpf_trace_printk", kind: ksymHelper, helper: uapi.FuncTracePrintk},
	// kernel/bpf/hashtab.c
	{name: hashmap.ElemLookupFunc, kind: ksymElemLookup, types: []uapi.MapType{uapi.MapTypeHash, uapi.MapTypePercpuHash, uapi.MapTypeHashOfMaps,
		uapi.MapTypeLRUHash, uapi.MapTypeLRUPercpuHash}},
	{name: "htab_map_lookup_elem", kind: ksymMapOp, helper: uapi.FuncMapLookupElem, types: []uapi.MapType{uapi.MapTypeHash}},
	{name: "htab_map_update_elem", kind: ksymMapOp, helper: uapi.FuncMapUpdateElem, types: []uapi.MapType{uapi.MapTypeHash}},
	{name: "htab_map_delete_elem", kind: ksymMapOp, helper: uapi.FuncMapDeleteElem, types: []uapi.MapType{uapi.MapTypeHash, uapi.MapTypePercpuHash}},
	{name: "htab_percpu_map_lookup_elem", kind: ksymMapOp, helper: uapi.FuncMapLookupElem, types: []uapi.MapType{uapi.MapTypePercpuHash}},
	{name: "htab_percpu_map_lookup_percpu_elem", kind: ksymMapOp, helper: uapi.FuncMapLookupPercpuElem, types: []uapi.MapType{uapi.MapTypePercpuHash}},
	{name: "htab_percpu_map_update_elem", kind: ksymMapOp, helper: uapi.FuncMapUpdateElem, types: []uapi.MapType{uapi.MapTypePercpuHash}},
	// kernel/bpf/arraymap.c
	{name: "array_map_lookup_elem", kind: ksymMapOp, helper: uapi.FuncMapLookupElem, types: []uapi.MapType{uapi.MapTypeArray}},
	{name: "percpu_array_map_lookup_elem", kind: ksymMapOp, helper: uapi.FuncMapLookupElem, types: []uapi.MapType{uapi.MapTypePercpuArray}},
	{name: "percpu_array_map_lookup_percpu_elem", kind: ksymMapOp, helper: uapi.FuncMapLookupPercpuElem, types: []uapi.MapType{uapi.MapTypePercpuArray}},
	{name: "array_map_update_elem", kind: ksymMapOp, helper: uapi.FuncMapUpdateElem, types: []uapi.MapType{uapi.MapTypeArray, uapi.MapTypePercpuArray}},
	{name: "array_map_delete_elem", kind: ksymMapOp, helper: uapi.FuncMapDeleteElem, types: []uapi.MapType{uapi.MapTypeArray, uapi.MapTypePercpuArray}},
	{name: "bpf_for_each_array_elem", kind: ksymMapOp, helper: uapi.FuncForEachMapElem, types: []uapi.MapType{uapi.MapTypeArray, uapi.MapTypePercpuArray}},
	{name: "bpf_for_each_hash_elem", kind: ksymMapOp, helper: uapi.FuncForEachMapElem, types: []uapi.MapType{uapi.MapTypeHash, uapi.MapTypePercpuHash, uapi.MapTypeLRUHash, uapi.MapTypeLRUPercpuHash}},
	// The maps of maps' lookups, which programs reach when their
	// lookup is not inlined (kernel/bpf/arraymap.c, hashtab.c). Last,
	// so that the functions before keep their addresses.
	{name: "queue_stack_map_push_elem", kind: ksymMapOp, helper: uapi.FuncMapPushElem, types: []uapi.MapType{uapi.MapTypeQueue, uapi.MapTypeStack}},
	{name: "queue_map_pop_elem", kind: ksymMapOp, helper: uapi.FuncMapPopElem, types: []uapi.MapType{uapi.MapTypeQueue}},
	{name: "queue_map_peek_elem", kind: ksymMapOp, helper: uapi.FuncMapPeekElem, types: []uapi.MapType{uapi.MapTypeQueue}},
	{name: "stack_map_pop_elem", kind: ksymMapOp, helper: uapi.FuncMapPopElem, types: []uapi.MapType{uapi.MapTypeStack}},
	{name: "stack_map_peek_elem", kind: ksymMapOp, helper: uapi.FuncMapPeekElem, types: []uapi.MapType{uapi.MapTypeStack}},
	{name: "bloom_map_push_elem", kind: ksymMapOp, helper: uapi.FuncMapPushElem, types: []uapi.MapType{uapi.MapTypeBloomFilter}},
	{name: "bloom_map_peek_elem", kind: ksymMapOp, helper: uapi.FuncMapPeekElem, types: []uapi.MapType{uapi.MapTypeBloomFilter}},
	{name: "trie_lookup_elem", kind: ksymMapOp, helper: uapi.FuncMapLookupElem, types: []uapi.MapType{uapi.MapTypeLPMTrie}},
	{name: "trie_update_elem", kind: ksymMapOp, helper: uapi.FuncMapUpdateElem, types: []uapi.MapType{uapi.MapTypeLPMTrie}},
	{name: "trie_delete_elem", kind: ksymMapOp, helper: uapi.FuncMapDeleteElem, types: []uapi.MapType{uapi.MapTypeLPMTrie}},
	{name: "array_of_map_lookup_elem", kind: ksymMapOp, helper: uapi.FuncMapLookupElem, types: []uapi.MapType{uapi.MapTypeArrayOfMaps}},
	{name: "htab_of_map_lookup_elem", kind: ksymMapOp, helper: uapi.FuncMapLookupElem, types: []uapi.MapType{uapi.MapTypeHashOfMaps}},
	// The LRU hashes' operations (kernel/bpf/hashtab.c), after the
	// others for the same reason.
	{name: "htab_lru_map_lookup_elem", kind: ksymMapOp, helper: uapi.FuncMapLookupElem, types: []uapi.MapType{uapi.MapTypeLRUHash}},
	{name: "htab_lru_map_update_elem", kind: ksymMapOp, helper: uapi.FuncMapUpdateElem, types: []uapi.MapType{uapi.MapTypeLRUHash}},
	{name: "htab_lru_map_delete_elem", kind: ksymMapOp, helper: uapi.FuncMapDeleteElem, types: []uapi.MapType{uapi.MapTypeLRUHash, uapi.MapTypeLRUPercpuHash}},
	{name: "htab_lru_percpu_map_lookup_elem", kind: ksymMapOp, helper: uapi.FuncMapLookupElem, types: []uapi.MapType{uapi.MapTypeLRUPercpuHash}},
	{name: "htab_lru_percpu_map_lookup_percpu_elem", kind: ksymMapOp, helper: uapi.FuncMapLookupPercpuElem, types: []uapi.MapType{uapi.MapTypeLRUPercpuHash}},
	{name: "htab_lru_percpu_map_update_elem", kind: ksymMapOp, helper: uapi.FuncMapUpdateElem, types: []uapi.MapType{uapi.MapTypeLRUPercpuHash}},
	// kernel/bpf/devmap.c: bpf_redirect_map's work for a devmap.
	{name: "dev_map_redirect", kind: ksymMapOp, helper: uapi.FuncRedirectMap, types: []uapi.MapType{uapi.MapTypeDevmap}},
	// kernel/bpf/devmap.c, cpumap.c: the other redirect maps' work.
	{name: "dev_hash_map_redirect", kind: ksymMapOp, helper: uapi.FuncRedirectMap, types: []uapi.MapType{uapi.MapTypeDevmapHash}},
	{name: "cpu_map_redirect", kind: ksymMapOp, helper: uapi.FuncRedirectMap, types: []uapi.MapType{uapi.MapTypeCPUMap}},
	// The devmaps' lookups, which programs call directly.
	{name: "dev_map_lookup_elem", kind: ksymMapOp, helper: uapi.FuncMapLookupElem, types: []uapi.MapType{uapi.MapTypeDevmap}},
	{name: "dev_map_hash_lookup_elem", kind: ksymMapOp, helper: uapi.FuncMapLookupElem, types: []uapi.MapType{uapi.MapTypeDevmapHash}},
}

// helperFuncNames names the function behind a helper where it is not the
// helper's own name.
var helperFuncNames = map[int32]string{
	uapi.FuncGetPrandomU32: "bpf_user_rnd_u32",
	uapi.FuncRedirectMap:   "bpf_xdp_redirect_map", // net/core/filter.c
}

// jitInlinedHelpers are the helpers the arm64 JIT emits itself
// (bpf_jit_inlines_helper_call): the verifier leaves their calls alone,
// with the helper id in imm. Until bpfsim has a JIT, the interpreter
// serves such a call by the id.
var jitInlinedHelpers = map[int32]bool{
	uapi.FuncGetSmpProcessorID: true,
	35:                         true, // bpf_get_current_task
	158:                        true, // bpf_get_current_task_btf
}

// mapOpNames are the names of the map operations as members of struct
// bpf_map_ops, by the helper that calls them; a map type a user registers
// gets functions named "<type>_map_<op>".
var mapOpNames = map[int32]string{
	uapi.FuncMapLookupElem:       "lookup_elem",
	uapi.FuncMapUpdateElem:       "update_elem",
	uapi.FuncMapDeleteElem:       "delete_elem",
	uapi.FuncMapLookupPercpuElem: "lookup_percpu_elem",
	uapi.FuncMapPushElem:         "push_elem",
	uapi.FuncMapPopElem:          "pop_elem",
	uapi.FuncMapPeekElem:         "peek_elem",
	uapi.FuncForEachMapElem:      "for_each_callback",
	uapi.FuncRedirectMap:         "redirect",
}

// ksymTable is the kernel's symbol table.
type ksymTable struct {
	mu     sync.RWMutex
	base   uint64 // __bpf_call_base
	next   uint64 // the next free slot
	end    uint64
	byName map[string]*ksym
	byAddr map[uint64]*ksym
}

// newKsyms maps the kernel's text and lays out vmlinux's functions.
func newKsyms(space *mem.Space) (*ksymTable, error) {
	start, err := space.Alloc(kernelTextSize, mem.AllocOptions{
		Region: mem.RegionVmalloc, Perm: mem.PermRX, Name: "kernel_text", Device: textDevice{},
	})
	if err != nil {
		return nil, errors.Wrap(err, "mapping the kernel text")
	}
	t := &ksymTable{
		base:   start,
		next:   start + ksymFirst,
		end:    start + kernelTextSize,
		byName: map[string]*ksym{},
		byAddr: map[uint64]*ksym{},
	}
	if _, err := t.define(ksymSpec{name: "__bpf_call_base", kind: ksymCallBase}, start); err != nil {
		return nil, err
	}
	for i := range vmlinux {
		if _, err := t.define(vmlinux[i], 0); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// textDevice backs the text area: it reads as zero and cannot be written
// (its pages are read-only anyway).
type textDevice struct{}

func (textDevice) Load(uint64, int, bool) (uint64, error) { return 0, nil }
func (textDevice) Store(uint64, int, uint64) error {
	return errors.Wrap(uapi.EFAULT, "kernel text is read-only")
}

// define adds the function spec at addr, or in the next free slot if addr
// is 0. A function already defined with the same meaning is returned as it
// is; a name that means something else is an error.
func (t *ksymTable) define(spec ksymSpec, addr uint64) (*ksym, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if old, ok := t.byName[spec.name]; ok {
		same := old.spec.kind == spec.kind && old.spec.helper == spec.helper
		for _, typ := range spec.types {
			same = same && old.spec.serves(typ)
		}
		if !same {
			return nil, errors.Wrapf(uapi.EEXIST, "kernel symbol %s already names another function", spec.name)
		}
		return old, nil
	}
	if addr == 0 {
		if t.next >= t.end {
			return nil, errors.Wrapf(uapi.ENOMEM, "the kernel text has no room for %s", spec.name)
		}
		addr = t.next
		t.next += ksymSlot
	}
	spec.types = append([]uapi.MapType(nil), spec.types...)
	n := &ksym{KernelSymbol: KernelSymbol{Addr: addr, Name: spec.name}, spec: spec}
	t.byName[n.Name] = n
	t.byAddr[addr] = n
	return n, nil
}

func (t *ksymTable) lookup(name string) (*ksym, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	s, ok := t.byName[name]
	return s, ok
}

// at returns the function a call with this imm reaches.
func (t *ksymTable) at(imm int32) (*ksym, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	s, ok := t.byAddr[t.base+uint64(int64(imm))]
	return s, ok
}

// imm is BPF_CALL_IMM: the call immediate that reaches s.
func (t *ksymTable) imm(s *ksym) int32 { return int32(int64(s.Addr - t.base)) }

// KernelSymbols lists the simulated kernel's functions by address, as
// /proc/kallsyms does.
func (k *Kernel) KernelSymbols() []KernelSymbol {
	k.ksyms.mu.RLock()
	out := make([]KernelSymbol, 0, len(k.ksyms.byAddr))
	for _, s := range k.ksyms.byAddr {
		out = append(out, s.KernelSymbol)
	}
	k.ksyms.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Addr < out[j].Addr })
	return out
}

// KernelSymbol returns the kernel function called name. A call in xlated
// code reaches it when its imm is the function's address minus that of
// __bpf_call_base.
func (k *Kernel) KernelSymbol(name string) (KernelSymbol, bool) {
	s, ok := k.ksyms.lookup(name)
	if !ok {
		return KernelSymbol{}, false
	}
	return s.KernelSymbol, true
}

// callName names the kernel function a direct call reaches, for dumps.
func (k *Kernel) callName(imm int32) string {
	if s, ok := k.ksyms.at(imm); ok && s.spec.kind != ksymCallBase {
		return s.Name
	}
	return ""
}

// resolveCall is the interpreter's view of a fixed-up program's calls: the
// function at __bpf_call_base + imm, or a helper the JIT inlines, by id.
func (k *Kernel) resolveCall(imm int32) (*Helper, error) {
	if s, ok := k.ksyms.at(imm); ok && s.spec.kind != ksymCallBase {
		return k.ksymFunc(s)
	}
	if jitInlinedHelpers[imm] {
		return k.resolveHelper(imm)
	}
	return nil, errors.Wrapf(uapi.EINVAL, "call to __bpf_call_base%+d, where the simulated kernel has no function", imm)
}

// ksymFunc returns what a call of s runs.
func (k *Kernel) ksymFunc(s *ksym) (*Helper, error) {
	if s.spec.kind == ksymHelper {
		// The registered helper itself: its Fn is the function.
		return k.resolveHelper(s.spec.helper)
	}
	if s.spec.kind == ksymKfunc || s.spec.kind == ksymModuleKfunc {
		return k.kfuncHelper(s) // kfunc.go
	}
	s.once.Do(func() { s.fn = k.mapFunc(s) })
	if s.fn == nil {
		return nil, errors.Wrapf(uapi.EINVAL, "kernel function %s cannot be called", s.Name)
	}
	return s.fn, nil
}

// kernelCalls gives the verifier's fix-ups the kernel's functions.
type kernelCalls struct{ k *Kernel }

var _ verifier.KernelCalls = kernelCalls{}

func (c kernelCalls) Helper(id int32) (int32, bool, error) {
	if jitInlinedHelpers[id] {
		return 0, true, nil
	}
	h, err := c.k.resolveHelper(id)
	if err != nil {
		return 0, false, err
	}
	s, err := c.k.helperKsym(id, h)
	if err != nil {
		return 0, false, err
	}
	return c.k.ksyms.imm(s), false, nil
}

// helperKsym returns the kernel function of helper h, id: its bpf_func_proto's
// func, given a slot in the text when first needed.
func (k *Kernel) helperKsym(id int32, h *Helper) (*ksym, error) {
	name := h.Name
	if h.Name == uapi.HelperName(id) && helperFuncNames[id] != "" {
		name = helperFuncNames[id]
	}
	return k.ksyms.define(ksymSpec{name: name, kind: ksymHelper, helper: id}, 0)
}

func (c kernelCalls) MapOp(m *maps.Map, helper int32) (int32, error) {
	op, ok := mapOpNames[helper]
	if !ok {
		return 0, errors.Errorf("%s is not a map operation", uapi.HelperName(helper))
	}
	switch helper {
	case uapi.FuncMapLookupPercpuElem:
		if _, ok := m.Ops.(maps.PercpuValues); !ok {
			return 0, errors.Errorf("%s maps have no %s", m.Type.Name, op)
		}
	case uapi.FuncMapPushElem, uapi.FuncMapPopElem, uapi.FuncMapPeekElem:
		if _, ok := m.Ops.(maps.PushPopPeeker); !ok {
			return 0, errors.Errorf("%s maps have no %s", m.Type.Name, op)
		}
	case uapi.FuncForEachMapElem:
		if _, ok := m.Ops.(maps.ForEacher); !ok {
			return 0, errors.Errorf("%s maps have no %s", m.Type.Name, op)
		}
	case uapi.FuncRedirectMap:
		if _, ok := m.Ops.(maps.Redirector); !ok {
			return 0, errors.Errorf("%s maps have no %s", m.Type.Name, op)
		}
	}
	for i := range vmlinux {
		if s := &vmlinux[i]; s.kind == ksymMapOp && s.helper == helper && s.serves(m.Type.ID) {
			ks, ok := c.k.ksyms.lookup(s.name)
			if !ok {
				return 0, errors.Errorf("kernel function %s is missing", s.name)
			}
			return c.k.ksyms.imm(ks), nil
		}
	}
	// A map type from outside the kernel proper.
	name := fmt.Sprintf("%s_map_%s", strings.ReplaceAll(m.Type.Name, " ", "_"), op)
	s, err := c.k.ksyms.define(ksymSpec{name: name, kind: ksymMapOp, helper: helper,
		types: []uapi.MapType{m.Type.ID}}, 0)
	if err != nil {
		return 0, err
	}
	return c.k.ksyms.imm(s), nil
}

func (c kernelCalls) Func(name string) (int32, error) {
	s, ok := c.k.ksyms.lookup(name)
	if !ok || s.spec.kind == ksymCallBase {
		return 0, errors.Errorf("the simulated kernel has no function %s", name)
	}
	return c.k.ksyms.imm(s), nil
}

// mapFunc builds what a call of a map type's function runs. It gets the
// map pointer in r1 like the op it is in the kernel, not like a helper:
// the generic helper's checks were the verifier's job. It still makes
// sure r1 is a map of the type the function belongs to, so that a wrong
// rewrite shows as an error naming the function rather than as a
// misbehaving map.
func (k *Kernel) mapFunc(s *ksym) *Helper {
	mapOf := func(m *interp.Machine, r1 uint64) (*maps.Map, error) {
		mp, ok := k.progMap(m, r1)
		if !ok || !s.spec.serves(mp.Type.ID) {
			what := "not a map"
			if ok {
				what = "a " + mp.Type.Name + " map"
			}
			return nil, errors.Wrapf(uapi.EFAULT, "pc %d: %s: r1=%#x is %s", m.PC(), s.Name, r1, what)
		}
		return mp, nil
	}
	h := &Helper{ID: s.spec.helper, Name: s.Name}
	switch {
	case s.spec.kind == ksymElemLookup:
		h.Fn = func(m *interp.Machine, r1, r2, _, _, _ uint64) (uint64, error) {
			mp, err := mapOf(m, r1)
			if err != nil {
				return 0, err
			}
			el, ok := mp.Ops.(hashmap.ElemLookuper)
			if !ok {
				return 0, errors.Wrapf(uapi.EFAULT, "pc %d: %s on a %s map", m.PC(), s.Name, mp.Type.Name)
			}
			key, err := readArg(m, r2, mp.KeySize, 0)
			if err != nil {
				return 0, err
			}
			return el.LookupElemAddr(key), nil
		}
	case s.spec.helper == uapi.FuncMapLookupElem:
		h.Fn = func(m *interp.Machine, r1, r2, _, _, _ uint64) (uint64, error) {
			mp, err := mapOf(m, r1)
			if err != nil {
				return 0, err
			}
			key, err := readArg(m, r2, mp.KeySize, 0)
			if err != nil {
				return 0, err
			}
			addr, err := mp.Ops.LookupElem(m.CPU, key)
			if err != nil {
				return 0, nil
			}
			return addr, nil
		}
	case s.spec.helper == uapi.FuncMapUpdateElem:
		h.Fn = func(m *interp.Machine, r1, r2, r3, r4, _ uint64) (uint64, error) {
			mp, err := mapOf(m, r1)
			if err != nil {
				return 0, err
			}
			return mapUpdateElem(m, mp, r2, r3, r4)
		}
	case s.spec.helper == uapi.FuncMapDeleteElem:
		h.Fn = func(m *interp.Machine, r1, r2, _, _, _ uint64) (uint64, error) {
			mp, err := mapOf(m, r1)
			if err != nil {
				return 0, err
			}
			if err := progWrite(mp); err != nil {
				return ret(err), nil
			}
			key, err := readArg(m, r2, mp.KeySize, 0)
			if err != nil {
				return 0, err
			}
			return ret(mp.Ops.DeleteElem(m.CPU, key)), nil
		}
	default:
		// The rarer operations share the helpers' code, after the type
		// check.
		helperFn := map[int32]func(*interp.Machine, uint64, uint64, uint64, uint64, uint64) (uint64, error){
			uapi.FuncMapLookupPercpuElem: k.helperMapLookupPercpuElem,
			uapi.FuncMapPushElem:         k.helperMapPushElem,
			uapi.FuncMapPopElem:          k.helperMapPopElem,
			uapi.FuncMapPeekElem:         k.helperMapPeekElem,
			uapi.FuncForEachMapElem:      k.helperForEachMapElem,
			uapi.FuncRedirectMap:         k.helperRedirectMap,
		}[s.spec.helper]
		if helperFn == nil {
			return nil
		}
		h.Fn = func(m *interp.Machine, r1, r2, r3, r4, r5 uint64) (uint64, error) {
			if _, err := mapOf(m, r1); err != nil {
				return 0, err
			}
			return helperFn(m, r1, r2, r3, r4, r5)
		}
	}
	return h
}
