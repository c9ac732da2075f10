package main

import (
	"bytes"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// programTypes are the names -type accepts.
var programTypes = map[string]ebpf.ProgramType{
	"raw":     ebpf.UnspecifiedProgram,
	"xdp":     ebpf.XDP,
	"syscall": ebpf.Syscall,
}

func parseType(name string) (ebpf.ProgramType, error) {
	t, ok := programTypes[name]
	if !ok {
		return 0, errors.Wrapf(uapi.EINVAL, "unknown program type %q (want raw, xdp or syscall)", name)
	}
	return t, nil
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

// loadFile loads the program in path: an ELF object (section picks the
// program when it holds several), raw bytecode, or hex bytecode.
func loadFile(k *sim.Kernel, path, section string, isHex bool, typ ebpf.ProgramType) (*sim.Program, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return loadBytes(k, raw, section, isHex, typ)
}

func loadBytes(k *sim.Kernel, raw []byte, section string, isHex bool, typ ebpf.ProgramType) (*sim.Program, error) {
	if bytes.HasPrefix(raw, []byte("\x7fELF")) {
		spec, err := loadELFProgram(raw, section)
		if err != nil {
			return nil, err
		}
		return k.NewProgram(spec)
	}
	if isHex {
		if raw, err := decodeHex(string(raw)); err != nil {
			return nil, err
		} else {
			return k.LoadBytecode(typ, "", raw)
		}
	}
	return k.LoadBytecode(typ, "", raw)
}

// loadELFProgram picks one program out of an ELF object: the one whose
// section or name is section, or the only one.
func loadELFProgram(raw []byte, section string) (*ebpf.ProgramSpec, error) {
	coll, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(raw))
	if err != nil {
		return nil, errors.Wrap(uapi.EINVAL, err.Error())
	}
	var names []string
	for name, p := range coll.Programs {
		if section == "" && len(coll.Programs) == 1 {
			return p, nil
		}
		if p.SectionName == section || name == section {
			return p, nil
		}
		names = append(names, fmt.Sprintf("%s (section %s)", name, p.SectionName))
	}
	sort.Strings(names)
	if section == "" {
		return nil, errors.Wrapf(uapi.EINVAL, "the object holds several programs, pick one with -section: %s", strings.Join(names, ", "))
	}
	return nil, errors.Wrapf(uapi.ENOENT, "no program %q in the object; it has: %s", section, strings.Join(names, ", "))
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
