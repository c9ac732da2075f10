package sim

import (
	"sort"

	"github.com/cilium/ebpf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Collection is a loaded ELF object: its maps and programs, like
// cilium/ebpf's *ebpf.Collection.
type Collection struct {
	Maps     map[string]*Map
	Programs map[string]*Program
	// Variables are the global variables of the loaded data sections,
	// read and written in their mapped memory (memory.go).
	Variables map[string]*Variable
	// reused are the maps loaded from their pins: their contents are
	// left as they are.
	reused map[string]bool
}

// CollectionOptions choose what NewCollectionWithOptions loads.
type CollectionOptions struct {
	// Programs lists the programs to load, with only the maps they use;
	// empty means everything in the object.
	Programs []string
	// ProgramOptions apply to every program loaded.
	ProgramOptions ProgramOptions
	// Maps say where maps pinned by name live (pin.go).
	Maps MapOptions
}

// NewCollection creates every map of spec (with its initial contents;
// .rodata is frozen), then loads every program with its map references
// resolved by name. Global data sections (.data, .rodata, .bss) are
// one-element arrays, as in the kernel.
func (k *Kernel) NewCollection(spec *ebpf.CollectionSpec) (*Collection, error) {
	return k.NewCollectionWithOptions(spec, CollectionOptions{})
}

// NewCollectionWithOptions is NewCollection that can load a subset of the
// programs, like cilium/ebpf's LoadAndAssign: an object whose other
// programs need something bpfsim lacks still yields the ones asked for.
func (k *Kernel) NewCollectionWithOptions(spec *ebpf.CollectionSpec, opts CollectionOptions) (*Collection, error) {
	return k.init.NewCollectionWithOptions(spec, opts)
}

// NewCollection is Kernel.NewCollection with the maps and programs opened
// as fds of this process.
func (p *Process) NewCollection(spec *ebpf.CollectionSpec) (*Collection, error) {
	return p.NewCollectionWithOptions(spec, CollectionOptions{})
}

// NewCollectionWithOptions is Kernel.NewCollectionWithOptions for this
// process.
func (p *Process) NewCollectionWithOptions(spec *ebpf.CollectionSpec, opts CollectionOptions) (*Collection, error) {
	if spec == nil {
		return nil, errors.Wrap(uapi.EINVAL, "nil CollectionSpec")
	}
	progs := opts.Programs
	if len(progs) == 0 {
		progs = sortedKeys(spec.Programs)
	}
	wantMaps := map[string]bool{}
	for _, name := range progs {
		ps, ok := spec.Programs[name]
		if !ok {
			return nil, errors.Wrapf(uapi.ENOENT, "the object has no program %q", name)
		}
		for _, ref := range mapReferences(ps) {
			wantMaps[ref] = true
		}
	}
	c := &Collection{Maps: map[string]*Map{}, Programs: map[string]*Program{}}
	for _, name := range sortedKeys(spec.Maps) {
		if len(opts.Programs) > 0 && !wantMaps[name] {
			continue
		}
		// The maps a map of maps' contents name come first
		// (mapinmap.go).
		if _, err := p.collectionMap(c, spec, name, opts.Maps, map[string]bool{}); err != nil {
			c.Close()
			return nil, err
		}
	}
	for _, name := range progs {
		ps := spec.Programs[name].Copy()
		for _, ref := range mapReferences(ps) {
			m, ok := c.Maps[ref]
			if !ok {
				c.Close()
				return nil, errors.Wrapf(uapi.EINVAL, "program %s: it loads map %q, which the object does not define", name, ref)
			}
			if err := ps.Instructions.AssociateMap(ref, m); err != nil {
				c.Close()
				return nil, errors.Wrapf(uapi.EINVAL, "program %s: map %s: %v", name, ref, err)
			}
		}
		prog, err := p.NewProgramWithOptions(ps, opts.ProgramOptions) // its errors name the program
		if err != nil {
			c.Close()
			return nil, err
		}
		c.Programs[name] = prog
	}
	if err := c.fillProgArrays(spec, len(opts.Programs) > 0); err != nil {
		c.Close()
		return nil, err
	}
	if err := c.populateStructOps(spec); err != nil { // structops.go
		c.Close()
		return nil, err
	}
	if err := c.newVariables(spec); err != nil { // memory.go
		c.Close()
		return nil, err
	}
	return c, nil
}

// fillProgArrays puts the programs a prog array's contents name in their
// slots. With only some programs loaded (subset), slots naming others stay
// empty.
func (c *Collection) fillProgArrays(spec *ebpf.CollectionSpec, subset bool) error {
	for name, m := range c.Maps {
		ms := spec.Maps[name]
		if ms.Type != ebpf.ProgramArray || c.reused[name] {
			continue
		}
		for _, kv := range ms.Contents {
			value := kv.Value
			if prog, ok := kv.Value.(string); ok {
				p, ok := c.Programs[prog]
				if !ok && subset {
					continue
				}
				if !ok {
					return errors.Wrapf(uapi.ENOENT, "map %s: its contents name program %q, which is not loaded", name, prog)
				}
				value = p
			}
			if err := m.Put(kv.Key, value); err != nil {
				return errors.Wrapf(err, "map %s: filling contents", name)
			}
		}
	}
	return nil
}

// mapReferences lists the map names a program's instructions refer to.
func mapReferences(ps *ebpf.ProgramSpec) []string {
	seen := map[string]bool{}
	var refs []string
	for _, ins := range ps.Instructions {
		if ins.IsLoadFromMap() && ins.Reference() != "" && !seen[ins.Reference()] {
			seen[ins.Reference()] = true
			refs = append(refs, ins.Reference())
		}
	}
	return refs
}

// Close closes every program and map handle of the collection.
func (c *Collection) Close() {
	for _, p := range c.Programs {
		p.Close()
	}
	for _, m := range c.Maps {
		m.Close()
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
