package main

import (
	"bytes"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// programTypes are the names -type accepts, with the expected attach
// type they load with.
var programTypes = map[string]struct {
	typ    ebpf.ProgramType
	attach ebpf.AttachType
}{
	"raw":                {ebpf.UnspecifiedProgram, ebpf.AttachNone},
	"xdp":                {ebpf.XDP, ebpf.AttachNone},
	"syscall":            {ebpf.Syscall, ebpf.AttachNone},
	"socket_filter":      {ebpf.SocketFilter, ebpf.AttachNone},
	"sched_cls":          {ebpf.SchedCLS, ebpf.AttachNone},
	"sched_act":          {ebpf.SchedACT, ebpf.AttachNone},
	"cgroup_skb/ingress": {ebpf.CGroupSKB, ebpf.AttachCGroupInetIngress},
	"cgroup_skb/egress":  {ebpf.CGroupSKB, ebpf.AttachCGroupInetEgress},
	"sk_lookup":          {ebpf.SkLookup, ebpf.AttachSkLookup},
}

// typeNames lists programTypes' names for messages.
const typeNames = "raw, xdp, syscall, socket_filter, sched_cls, sched_act, cgroup_skb/ingress, cgroup_skb/egress or sk_lookup"

// parseType returns the program type a -type name stands for, and sets
// the expected attach type that goes with it in opts.
func parseType(name string, opts *sim.ProgramOptions) (ebpf.ProgramType, error) {
	t, ok := programTypes[name]
	if !ok {
		return 0, errors.Wrapf(uapi.EINVAL, "unknown program type %q (want %s)", name, typeNames)
	}
	opts.ExpectedAttachType = uint32(t.attach)
	return t.typ, nil
}

// decodeHex reads bytes written as hex digits, with any whitespace between
// them and an optional 0x prefix per group.
func decodeHex(s string) ([]byte, error) {
	var digits strings.Builder
	for _, field := range strings.Fields(s) {
		field = strings.TrimPrefix(strings.TrimPrefix(field, "0x"), "0X")
		digits.WriteString(field)
	}
	b, err := hex.DecodeString(digits.String())
	if err != nil {
		return nil, errors.Wrapf(uapi.EINVAL, "bad hex: %v", err)
	}
	return b, nil
}

// loaded is a program and, for an ELF object, the maps it uses by name.
type loaded struct {
	prog *sim.Program
	maps map[string]*sim.Map
}

// loadFile loads the program in path: an ELF object (section picks the
// program when it holds several), raw bytecode, or hex bytecode.
func loadFile(k *sim.Kernel, path, section string, isHex bool, typ ebpf.ProgramType, popts sim.ProgramOptions) (*loaded, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return loadBytes(k, raw, section, isHex, typ, popts)
}

func loadBytes(k *sim.Kernel, raw []byte, section string, isHex bool, typ ebpf.ProgramType, popts sim.ProgramOptions) (*loaded, error) {
	if bytes.HasPrefix(raw, []byte("\x7fELF")) {
		coll, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(raw))
		if err != nil {
			return nil, errors.Wrap(uapi.EINVAL, err.Error())
		}
		name, err := pickProgram(coll, section)
		if err != nil {
			return nil, err
		}
		c, err := k.NewCollectionWithOptions(coll, sim.CollectionOptions{Programs: []string{name}, ProgramOptions: popts})
		if err != nil {
			return nil, err
		}
		return &loaded{prog: c.Programs[name], maps: c.Maps}, nil
	}
	if isHex {
		var err error
		if raw, err = decodeHex(string(raw)); err != nil {
			return nil, err
		}
	}
	insns, err := insn.Decode(raw)
	if err != nil {
		return nil, err
	}
	if typ == ebpf.Syscall {
		// As libbpf and cilium/ebpf load SEC("syscall"): the kernel
		// takes syscall programs only as sleepable.
		popts.Flags |= uapi.BPF_F_SLEEPABLE
	}
	p, err := k.LoadInsnsWithOptions(typ, "", insns, popts)
	if err != nil {
		return nil, err
	}
	return &loaded{prog: p}, nil
}

// dumpMaps prints every map like `bpftool map dump`, in name order.
func dumpMaps(w io.Writer, ms map[string]*sim.Map, only string) error {
	names := make([]string, 0, len(ms))
	for name := range ms {
		if only == "" || name == only {
			names = append(names, name)
		}
	}
	if only != "" && len(names) == 0 {
		return errors.Wrapf(uapi.ENOENT, "no map %q", only)
	}
	sort.Strings(names)
	for _, name := range names {
		m := ms[name]
		fmt.Fprintf(w, "map %s (id %d, %s, key %d, value %d, max_entries %d):\n", name, m.ID(), uapi.MapType(m.Type()), m.KeySize(), m.ValueSize(), m.MaxEntries())
		if err := m.Dump(w); err != nil {
			return err
		}
	}
	return nil
}

// pickProgram picks one program out of an ELF object: the one whose
// section or name is section, or the only one.
func pickProgram(coll *ebpf.CollectionSpec, section string) (string, error) {
	var names []string
	for name, p := range coll.Programs {
		if section == "" && len(coll.Programs) == 1 {
			return name, nil
		}
		if p.SectionName == section || name == section {
			return name, nil
		}
		names = append(names, fmt.Sprintf("%s (section %s)", name, p.SectionName))
	}
	sort.Strings(names)
	if section == "" {
		return "", errors.Wrapf(uapi.EINVAL, "the object holds several programs, pick one with -section: %s", strings.Join(names, ", "))
	}
	return "", errors.Wrapf(uapi.ENOENT, "no program %q in the object; it has: %s", section, strings.Join(names, ", "))
}

// parseArgs parses flags that may come before or after the positional
// arguments, and returns the positional ones.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return positional, nil
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
}

// loadMaps creates the maps an ELF object defines (only the one named
// only, if set), and no programs.
func loadMaps(k *sim.Kernel, path, only string) (map[string]*sim.Map, error) {
	coll, err := ebpf.LoadCollectionSpec(path)
	if err != nil {
		return nil, errors.Wrap(uapi.EINVAL, err.Error())
	}
	out := map[string]*sim.Map{}
	for name, spec := range coll.Maps {
		if only != "" && name != only {
			continue
		}
		m, err := k.NewMap(spec)
		if err != nil {
			return nil, err
		}
		out[name] = m
	}
	return out, nil
}

// printVerifierLog writes the verifier's log of a load to w.
func printVerifierLog(w io.Writer, l *loaded, err error) {
	var ve *verifier.Error
	switch {
	case errors.As(err, &ve):
		fmt.Fprint(w, ve.Log)
	case err == nil && l != nil:
		fmt.Fprint(w, l.prog.VerifierLog())
	}
}

// logLevelOf maps the -log flag to cilium/ebpf's log level bits.
func logLevelOf(n int) ebpf.LogLevel {
	switch {
	case n >= 2:
		return ebpf.LogLevelInstruction
	case n == 1:
		return ebpf.LogLevelBranch
	}
	return 0
}
