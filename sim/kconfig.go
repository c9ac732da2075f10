package sim

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"io"
	"maps"
	"strconv"
	"strings"

	"github.com/cilium/ebpf/btf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/uapi"
)

// The simulated kernel's release and configuration: what a program's
// .kconfig externs read (extern int CONFIG_HZ __kconfig; and the loader's
// own LINUX_KERNEL_VERSION and LINUX_HAS_SYSCALL_WRAPPER). A loader fills
// them in from the running kernel: cilium/ebpf and libbpf read its
// .config (/boot/config-$(uname -r) or /proc/config.gz) and its version,
// put the values in a read-only array map named .kconfig, and point the
// program's loads at it. bpfsim's loader does the same from Options.Config
// and Options.Release (externs.go).

// DefaultRelease is the simulated kernel's release, as uname -r prints it,
// unless Options.Release says otherwise: the 6.18 stable kernel whose
// behaviour bpfsim was last compared with.
const DefaultRelease = "6.18.44-bpfsim"

// DefaultConfig returns the simulated kernel's configuration, unless
// Options.Config gives another: the options of an arm64 6.18 kernel that
// describe what bpfsim simulates (4 KiB pages, 48-bit virtual addresses
// and four page table levels, 512 possible CPUs, a 250 Hz tick, BPF with
// its JIT and BTF, the program types bpfsim runs), as a .config names
// them. Options it does not list are unset.
func DefaultConfig() map[string]string { return cloneConfig(defaultConfig) }

func cloneConfig(c map[string]string) map[string]string { return maps.Clone(c) }

var defaultConfig = map[string]string{
	"CONFIG_64BIT":                    "y",
	"CONFIG_ARM64":                    "y",
	"CONFIG_CPU_LITTLE_ENDIAN":        "y",
	"CONFIG_ARM64_4K_PAGES":           "y",
	"CONFIG_PAGE_SHIFT":               "12",
	"CONFIG_ARM64_VA_BITS":            "48",
	"CONFIG_PGTABLE_LEVELS":           "4",
	"CONFIG_NR_CPUS":                  "512",
	"CONFIG_SMP":                      "y",
	"CONFIG_HZ":                       "250",
	"CONFIG_HZ_250":                   "y",
	"CONFIG_LOCALVERSION":             `"-bpfsim"`,
	"CONFIG_DEFAULT_HOSTNAME":         `"(none)"`,
	"CONFIG_LOG_BUF_SHIFT":            "17",
	"CONFIG_ILLEGAL_POINTER_VALUE":    "0xdead000000000000",
	"CONFIG_ARCH_HAS_SYSCALL_WRAPPER": "y",
	"CONFIG_KALLSYMS":                 "y",
	"CONFIG_MODULES":                  "y",
	"CONFIG_NET":                      "y",
	"CONFIG_INET":                     "y",
	"CONFIG_IPV6":                     "y",
	"CONFIG_BPF":                      "y",
	"CONFIG_HAVE_EBPF_JIT":            "y",
	"CONFIG_BPF_SYSCALL":              "y",
	"CONFIG_BPF_JIT":                  "y",
	"CONFIG_BPF_EVENTS":               "y",
	"CONFIG_CGROUP_BPF":               "y",
	"CONFIG_NET_CLS_BPF":              "y",
	"CONFIG_NET_ACT_BPF":              "y",
	"CONFIG_KPROBES":                  "y",
	"CONFIG_TRACEPOINTS":              "y",
	"CONFIG_DEBUG_INFO_BTF":           "y",
	"CONFIG_DEBUG_INFO_BTF_MODULES":   "y",
}

// ParseConfig reads a kernel configuration in the format of a .config
// file, plain or gzip-compressed as /proc/config.gz is, with the rules
// libbpf reads it by: lines that do not start with CONFIG_ (comments,
// "# CONFIG_FOO is not set") are skipped, the others must be NAME=VALUE
// with a value, and the first line for a name wins. The result can be
// Options.Config.
func ParseConfig(r io.Reader) (map[string]string, error) {
	br := bufio.NewReader(r)
	if magic, err := br.Peek(2); err == nil && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, errors.Wrapf(uapi.EINVAL, "kernel config: %v", err)
		}
		defer zr.Close()
		br = bufio.NewReader(zr)
	}
	config := map[string]string{}
	s := bufio.NewScanner(br)
	s.Buffer(nil, 1<<20)
	for n := 1; s.Scan(); n++ {
		line := s.Bytes()
		if !bytes.HasPrefix(line, []byte("CONFIG_")) {
			continue
		}
		name, value, ok := bytes.Cut(line, []byte("="))
		if !ok || len(value) == 0 {
			return nil, errors.Wrapf(uapi.EINVAL, "kernel config line %d: %q is not NAME=VALUE", n, line)
		}
		if _, seen := config[string(name)]; !seen {
			config[string(name)] = string(value)
		}
	}
	if err := s.Err(); err != nil {
		return nil, errors.Wrapf(uapi.EINVAL, "kernel config: %v", err)
	}
	return config, nil
}

// Release returns the simulated kernel's release, as uname -r prints it.
func (k *Kernel) Release() string { return k.release }

// Config returns the value of a kernel configuration option as a .config
// writes it ("y", "m", a number, a quoted string), and false for an
// option the configuration leaves unset.
func (k *Kernel) Config(name string) (string, bool) {
	v, ok := k.config[name]
	return v, ok
}

// kernelVersionCode is LINUX_VERSION_CODE for a release such as
// "6.18.44-fc-v595": KERNEL_VERSION of its leading MAJOR.MINOR[.PATCH],
// the patch level capped at 255 as the kernel's macro caps it.
func kernelVersionCode(release string) (uint32, error) {
	var v [3]uint64
	rest := release
	for i := range v {
		end := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' })
		if end < 0 {
			end = len(rest)
		}
		n, err := strconv.ParseUint(rest[:end], 10, 32)
		if err != nil {
			if i == 2 {
				break // no patch level
			}
			return 0, errors.Wrapf(uapi.EINVAL, "release %q does not start with MAJOR.MINOR", release)
		}
		v[i] = n
		if i == 0 && (end == len(rest) || rest[end] != '.') {
			return 0, errors.Wrapf(uapi.EINVAL, "release %q does not start with MAJOR.MINOR", release)
		}
		if end == len(rest) || rest[end] != '.' {
			break
		}
		rest = rest[end+1:]
	}
	return uint32(v[0]<<16 + v[1]<<8 + min(v[2], 255)), nil
}

// kconfigValues fills the value of a .kconfig map: each variable of the
// object's .kconfig section from the simulated kernel's release and
// configuration, encoded for its type as cilium/ebpf encodes it.
func (k *Kernel) kconfigValues(ds *btf.Datasec) ([]byte, error) {
	data := make([]byte, ds.Size)
	for _, vsi := range ds.Vars {
		v, ok := vsi.Type.(*btf.Var)
		if !ok || uint64(vsi.Offset)+uint64(vsi.Size) > uint64(len(data)) {
			return nil, errors.Wrapf(uapi.EINVAL, ".kconfig: a variable outside the section")
		}
		slot := data[vsi.Offset : vsi.Offset+vsi.Size]
		typ := btf.UnderlyingType(v.Type)
		var err error
		switch v.Name {
		case "LINUX_KERNEL_VERSION":
			in, ok := typ.(*btf.Int)
			if !ok || in.Size != 4 {
				return nil, errors.Wrapf(uapi.EINVAL, ".kconfig: %s must be a 32-bit integer, not %s", v.Name, v.Type)
			}
			var code uint32
			if code, err = kernelVersionCode(k.release); err == nil {
				err = putConfigInt(slot, in, uint64(code))
			}
		case "LINUX_HAS_SYSCALL_WRAPPER":
			// cilium/ebpf probes for the wrapped system call symbols;
			// they exist when the architecture wraps its system calls.
			in, ok := typ.(*btf.Int)
			if !ok {
				return nil, errors.Wrapf(uapi.EINVAL, ".kconfig: %s must be an integer, not %s", v.Name, v.Type)
			}
			var wrapped uint64
			if k.config["CONFIG_ARCH_HAS_SYSCALL_WRAPPER"] == "y" {
				wrapped = 1
			}
			err = putConfigInt(slot, in, wrapped)
		default:
			value, ok := k.config[v.Name]
			if !ok {
				return nil, errors.Wrapf(uapi.ENOENT, ".kconfig: the simulated kernel's configuration has no option %s", v.Name)
			}
			err = putConfigValue(slot, typ, value)
		}
		if err != nil {
			return nil, errors.Wrapf(err, ".kconfig: %s", v.Name)
		}
	}
	return data, nil
}

// putConfigValue encodes an option's value into its variable's slot by
// the variable's type: y, n and m into a bool (not m) or an enum
// libbpf_tristate, a quoted string into a char array (cut to the array,
// with no room kept for a NUL, as cilium/ebpf cuts it), a number
// (decimal, 0x hex or 0 octal) into an integer it fits.
func putConfigValue(slot []byte, typ btf.Type, value string) error {
	switch {
	case value == "y" || value == "n" || value == "m":
		tri := map[string]uint64{"n": 0, "y": 1, "m": 2}[value]
		switch t := typ.(type) {
		case *btf.Int:
			if t.Encoding != btf.Bool || t.Size != 1 {
				return errors.Wrapf(uapi.EINVAL, "%q needs a bool or an enum libbpf_tristate, not %s", value, typ)
			}
			if value == "m" {
				return errors.Wrap(uapi.EINVAL, `"m" does not fit a bool`)
			}
			slot[0] = byte(tri)
		case *btf.Enum:
			if t.Name != "libbpf_tristate" || len(slot) != 4 {
				return errors.Wrapf(uapi.EINVAL, "%q needs a bool or an enum libbpf_tristate, not %s", value, typ)
			}
			binary.LittleEndian.PutUint32(slot, uint32(tri))
		default:
			return errors.Wrapf(uapi.EINVAL, "%q needs a bool or an enum libbpf_tristate, not %s", value, typ)
		}
		return nil
	case strings.HasPrefix(value, `"`):
		arr, ok := typ.(*btf.Array)
		var elem *btf.Int
		if ok {
			elem, ok = btf.UnderlyingType(arr.Type).(*btf.Int)
		}
		if !ok || elem.Size != 1 || elem.Encoding == btf.Bool {
			return errors.Wrapf(uapi.EINVAL, "a string needs an array of chars, not %s", typ)
		}
		if len(value) < 2 || !strings.HasSuffix(value, `"`) {
			return errors.Wrapf(uapi.EINVAL, "string %s is not quoted at both ends", value)
		}
		str := strings.Trim(value, `"`)
		copy(slot, str[:min(len(str), int(arr.Nelems))])
		return nil
	default:
		in, ok := typ.(*btf.Int)
		if !ok {
			return errors.Wrapf(uapi.EINVAL, "a number needs an integer, not %s", typ)
		}
		bits := int(in.Size) * 8
		var n uint64
		var err error
		if in.Encoding == btf.Signed {
			var s int64
			s, err = strconv.ParseInt(value, 0, bits)
			n = uint64(s)
		} else {
			n, err = strconv.ParseUint(value, 0, bits)
		}
		if err != nil {
			return errors.Wrapf(uapi.EINVAL, "%s does not fit %s", value, typ)
		}
		return putConfigInt(slot, in, n)
	}
}

// putConfigInt stores n in an integer of in's size, refusing a bool other
// than 0 or 1 and a signed number out of its range.
func putConfigInt(slot []byte, in *btf.Int, n uint64) error {
	if in.Encoding == btf.Bool && n > 1 {
		return errors.Wrapf(uapi.EINVAL, "%d is no bool", n)
	}
	if int(in.Size) > len(slot) {
		return errors.Wrapf(uapi.EINVAL, "an integer of %d bytes in a slot of %d", in.Size, len(slot))
	}
	if in.Encoding == btf.Signed && in.Size < 8 {
		lim := int64(1) << (in.Size*8 - 1)
		if s := int64(n); s >= lim || s < -lim {
			return errors.Wrapf(uapi.EINVAL, "%d does not fit a signed integer of %d bytes", s, in.Size)
		}
	}
	switch in.Size {
	case 1:
		slot[0] = byte(n)
	case 2:
		binary.LittleEndian.PutUint16(slot, uint16(n))
	case 4:
		binary.LittleEndian.PutUint32(slot, uint32(n))
	case 8:
		binary.LittleEndian.PutUint64(slot, n)
	default:
		return errors.Wrapf(uapi.EINVAL, "an integer of %d bytes", in.Size)
	}
	return nil
}

// checkRelease refuses a release LINUX_KERNEL_VERSION could not be made of.
func checkRelease(release string) error {
	_, err := kernelVersionCode(release)
	return err
}
