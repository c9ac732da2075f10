package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/cilium/ebpf/btf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/splitbtf"
	"github.com/bpfsim/bpfsim/sim/vmlinuxbtf"
)

const btfUsage = `usage:
  bpfsim btf dump [-format c|raw] [-base BASE] [FILE]
      the simulated kernel's BTF (default: as a vmlinux.h), or a raw BTF
      FILE (default: bpftool's raw format), split on BASE if given
  bpfsim btf relocate [-base VMLINUX] MODULE.ko | SPLIT DISTILLED
      a module's split BTF relocated as the kernel does at module load:
      onto the simulated kernel's BTF, or onto VMLINUX (a raw BTF file)
  bpfsim btf list [-module MODULE.ko]...
      the kernel's BTF objects, as bpftool btf list prints them
  bpfsim btf distill -base VMLINUX -o PREFIX SPLIT
      distill SPLIT's base, as pahole does for an out-of-tree module
      (libbpf's btf__distill_base): writes PREFIX.btf, the new split BTF,
      and PREFIX.btf.base, the distilled base
`

// cmdBTF is `bpfsim btf`: dump prints BTF as bpftool btf dump does (a C
// header from the simulated kernel's, a vmlinux.h that programs built on
// it relocate against exactly; or the raw format); relocate shows what the
// kernel makes of an out-of-tree module's BTF (package splitbtf).
func cmdBTF(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, btfUsage)
		return 2
	}
	switch args[0] {
	case "dump":
		return btfDump(args[1:], stdout, stderr)
	case "relocate":
		return btfRelocate(args[1:], stdout, stderr)
	case "list":
		return btfList(args[1:], stdout, stderr)
	case "distill":
		return btfDistill(args[1:], stdout, stderr)
	}
	fmt.Fprint(stderr, btfUsage)
	return 2
}

// btfFlagSet makes the flags of a `bpfsim btf` subcommand, whose usage
// is btfUsage.
func btfFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, btfUsage); fs.PrintDefaults() }
	return fs
}

// exitStatus reports err, if any, as the CLI reports errors, and returns
// the exit status.
func exitStatus(stderr io.Writer, err error) int {
	if err != nil {
		fmt.Fprintf(stderr, "bpfsim: %v\n", err)
		return 1
	}
	return 0
}

func btfDump(args []string, stdout, stderr io.Writer) int {
	fs := btfFlagSet("btf dump", stderr)
	format := fs.String("format", "", "c or raw (default c for the kernel's BTF, raw for a FILE)")
	baseFile := fs.String("base", "", "the raw BTF FILE is split on")
	positional, err := parseArgs(fs, args)
	if err != nil {
		return 2
	}
	if len(positional) > 1 || (*format != "" && *format != "c" && *format != "raw") || (*baseFile != "" && len(positional) == 0) {
		fs.Usage()
		return 2
	}
	err = func() error {
		var raw, baseRaw []byte
		var err error
		if len(positional) == 0 {
			k, err := sim.NewKernel(nil)
			if err != nil {
				return err
			}
			if *format != "raw" {
				spec, err := k.KernelBTF()
				if err != nil {
					return err
				}
				fmt.Fprintf(stdout, "/* The types of bpfsim's simulated kernel (bpfsim btf dump). */\n\n")
				return vmlinuxbtf.WriteHeader(stdout, spec)
			}
			if raw, err = k.RawKernelBTF(); err != nil {
				return err
			}
		} else if raw, err = os.ReadFile(positional[0]); err != nil {
			return err
		}
		if *baseFile != "" {
			if baseRaw, err = os.ReadFile(*baseFile); err != nil {
				return err
			}
		}
		if *format == "c" {
			var spec *btf.Spec
			if baseRaw == nil {
				spec, err = btf.LoadSpecFromReader(bytes.NewReader(raw))
			} else if base, err2 := btf.LoadSpecFromReader(bytes.NewReader(baseRaw)); err2 != nil {
				err = err2
			} else {
				spec, err = btf.LoadSplitSpecFromReader(bytes.NewReader(raw), base)
			}
			if err != nil {
				return err
			}
			return vmlinuxbtf.WriteHeader(stdout, spec)
		}
		var base *splitbtf.BTF
		if baseRaw != nil {
			if base, err = splitbtf.Parse(baseRaw, nil); err != nil {
				return fmt.Errorf("%s: %w", *baseFile, err)
			}
		}
		b, err := splitbtf.Parse(raw, base)
		if err != nil {
			return err
		}
		return b.Dump(stdout)
	}()
	return exitStatus(stderr, err)
}

func btfRelocate(args []string, stdout, stderr io.Writer) int {
	fs := btfFlagSet("btf relocate", stderr)
	baseFile := fs.String("base", "", "relocate onto this raw vmlinux BTF, not the simulated kernel's")
	positional, err := parseArgs(fs, args)
	if err != nil {
		return 2
	}
	if len(positional) < 1 || len(positional) > 2 {
		fs.Usage()
		return 2
	}
	return exitStatus(stderr, relocateModule(stdout, positional, *baseFile))
}

// relocateModule relocates a module's BTF (a .ko, or split and distilled
// raw BTF files) and prints where each distilled type went, then the
// relocated types.
func relocateModule(w io.Writer, files []string, baseFile string) error {
	var spec *sim.ModuleSpec
	var err error
	if len(files) == 1 {
		if spec, err = sim.LoadModuleSpec(files[0]); err != nil {
			return err
		}
		if len(spec.BaseBTF) == 0 {
			return fmt.Errorf("%s has no .BTF.base section: built with its kernel, it needs no relocation", files[0])
		}
	} else {
		spec = &sim.ModuleSpec{}
		if spec.BTF, err = os.ReadFile(files[0]); err != nil {
			return err
		}
		if spec.BaseBTF, err = os.ReadFile(files[1]); err != nil {
			return err
		}
	}
	var vmlinux []byte
	onto := "the simulated kernel's BTF"
	if baseFile != "" {
		onto = baseFile
		if vmlinux, err = os.ReadFile(baseFile); err != nil {
			return err
		}
	} else {
		k, err := sim.NewKernel(nil)
		if err != nil {
			return err
		}
		if vmlinux, err = k.RawKernelBTF(); err != nil {
			return err
		}
	}
	base, err := splitbtf.Parse(vmlinux, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", onto, err)
	}
	dist, err := splitbtf.Parse(spec.BaseBTF, nil)
	if err != nil {
		return fmt.Errorf("distilled base: %w", err)
	}
	split, err := splitbtf.Parse(spec.BTF, dist)
	if err != nil {
		return fmt.Errorf("split BTF: %w", err)
	}
	relocated, idMap, err := splitbtf.Relocate(split, base)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "; %d distilled types found in %s (%d types):\n", len(dist.Types), onto, len(base.Types))
	for id := uint32(1); id < dist.TypeCount(); id++ {
		fmt.Fprintf(w, ";   %s\n;     -> %s\n", dist.DumpType(id), firstLine(base.DumpType(idMap[id])))
	}
	fmt.Fprintf(w, "; split ids %d-%d became %d-%d:\n", split.StartID(), split.TypeCount()-1, relocated.StartID(), relocated.TypeCount()-1)
	return relocated.Dump(w)
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// moduleFiles are the -module flags: kernel module files whose BTF is
// loaded into the simulated kernel before a program.
type moduleFiles []string

func (m *moduleFiles) String() string { return strings.Join(*m, ",") }

func (m *moduleFiles) Set(path string) error {
	*m = append(*m, path)
	return nil
}

// load loads each module's BTF, as modprobe would before the program.
func (m moduleFiles) load(k *sim.Kernel) error {
	for _, path := range m {
		spec, err := sim.LoadModuleSpec(path)
		if err != nil {
			return err
		}
		if _, err := k.LoadModule(spec); err != nil {
			return err
		}
	}
	return nil
}

// btfList is `bpfsim btf list`: the BTF objects of a simulated kernel
// with the -module modules loaded, as `bpftool btf list` prints them.
func btfList(args []string, stdout, stderr io.Writer) int {
	fs := btfFlagSet("btf list", stderr)
	var modules moduleFiles
	fs.Var(&modules, "module", "load this kernel module's BTF first; repeatable")
	positional, err := parseArgs(fs, args)
	if err != nil {
		return 2
	}
	if len(positional) != 0 {
		fs.Usage()
		return 2
	}
	err = func() error {
		k, err := sim.NewKernel(nil)
		if err != nil {
			return err
		}
		if err := modules.load(k); err != nil {
			return err
		}
		for _, id := range k.BTFIDs() {
			h, err := k.NewBTFHandleFromID(id)
			if err != nil {
				return err
			}
			info, err := h.Info()
			h.Close()
			if err != nil {
				return err
			}
			name := "<anon>"
			switch {
			case info.IsKernel:
				name = "[" + info.Name + "]"
			case info.Name != "":
				name = info.Name
			}
			fmt.Fprintf(stdout, "%d: name %s  size %dB\n", info.ID, name, info.Size)
		}
		return nil
	}()
	return exitStatus(stderr, err)
}

// btfDistill is `bpfsim btf distill`: a module's split BTF, built on the
// vmlinux BTF in -base, made relocatable (splitbtf.Distill).
func btfDistill(args []string, stdout, stderr io.Writer) int {
	fs := btfFlagSet("btf distill", stderr)
	baseFile := fs.String("base", "", "the raw vmlinux BTF SPLIT is built on")
	prefix := fs.String("o", "", "write PREFIX.btf and PREFIX.btf.base")
	positional, err := parseArgs(fs, args)
	if err != nil {
		return 2
	}
	if len(positional) != 1 || *baseFile == "" || *prefix == "" {
		fs.Usage()
		return 2
	}
	err = func() error {
		baseRaw, err := os.ReadFile(*baseFile)
		if err != nil {
			return err
		}
		splitRaw, err := os.ReadFile(positional[0])
		if err != nil {
			return err
		}
		base, err := splitbtf.Parse(baseRaw, nil)
		if err != nil {
			return fmt.Errorf("%s: %w", *baseFile, err)
		}
		split, err := splitbtf.Parse(splitRaw, base)
		if err != nil {
			return fmt.Errorf("%s: %w", positional[0], err)
		}
		dist, out, err := splitbtf.Distill(split)
		if err != nil {
			return err
		}
		if err := os.WriteFile(*prefix+".btf", out.Raw(), 0o644); err != nil {
			return err
		}
		if err := os.WriteFile(*prefix+".btf.base", dist.Raw(), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s.btf.base: %d types, %d bytes\n", *prefix, len(dist.Types), len(dist.Raw()))
		fmt.Fprintf(stdout, "%s.btf: %d types (%d of them copied from the base), %d bytes\n", *prefix, len(out.Types), len(out.Types)-len(split.Types), len(out.Raw()))
		return nil
	}()
	return exitStatus(stderr, err)
}
