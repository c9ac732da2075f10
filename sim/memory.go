package sim

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"runtime"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Memory is a map's memory mapped into the process (mmap of a
// BPF_F_MMAPABLE array), like cilium/ebpf's Memory: reads and writes go
// straight to the values programs see, without the map syscalls.
type Memory struct {
	b  []byte
	ro bool
}

// Memory maps the map's values, like cilium/ebpf's Map.Memory: writable
// unless the map is frozen or programs may only read it (then read-only,
// as cilium/ebpf falls back to), and once per handle. A writable mapping
// keeps the map from being frozen (EBUSY) until the Memory is garbage
// collected, as an mmap lasts until it is unmapped. A map created without
// BPF_F_MMAPABLE is ebpf.ErrNotSupported (and EINVAL).
func (h *Map) Memory() (*Memory, error) {
	if err := h.check(); err != nil {
		return nil, err
	}
	if h.memory != nil {
		return h.memory, nil
	}
	mm, ok := h.m.Ops.(maps.Mmaper)
	if !ok || h.m.Flags&uapi.BPF_F_MMAPABLE == 0 {
		return nil, fmt.Errorf("map %s was not created with BPF_F_MMAPABLE: %w: %w", h.m.Name, ebpf.ErrNotSupported, uapi.EINVAL)
	}
	// Mapping needs a file open for both reading and writing:
	// cilium/ebpf's read-write mmap of a read-only file is EACCES and its
	// read-only retry EINVAL (a shared mapping of a file that cannot be
	// written is not VM_SHARED, which bpf_map_mmap requires); a
	// write-only file cannot be mapped at all (EACCES).
	switch {
	case h.access == writeOnly:
		return nil, errors.Wrapf(uapi.EACCES, "map %s: the handle's file is write-only", h.m.Name)
	case h.access == readOnly:
		return nil, errors.Wrapf(uapi.EINVAL, "map %s: the handle's file is read-only", h.m.Name)
	}
	b, err := mm.MmapBytes()
	if err != nil {
		return nil, err
	}
	m := &Memory{b: b}
	unmap, err := h.m.MapWritable()
	switch {
	case errors.Is(err, uapi.EPERM), errors.Is(err, uapi.EACCES):
		m.ro = true
	case err != nil:
		return nil, err
	default:
		runtime.AddCleanup(m, func(unmap func()) { unmap() }, unmap)
	}
	h.memory = m
	return m, nil
}

// Size is the size of the mapping: whole pages.
func (m *Memory) Size() uint32 { return uint32(len(m.b)) }

// ReadOnly reports whether the mapping may not be written.
func (m *Memory) ReadOnly() bool { return m.ro }

// ReadAt copies the mapping at off into p, as io.ReaderAt; an offset
// outside the mapping is EINVAL.
func (m *Memory) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= int64(len(m.b)) {
		return 0, errors.Wrapf(uapi.EINVAL, "read offset %d out of range", off)
	}
	n := mem.LoadBytes(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// WriteAt copies p into the mapping at off, as io.WriterAt; a read-only
// mapping is ebpf.ErrReadOnly.
func (m *Memory) WriteAt(p []byte, off int64) (int, error) {
	if m.ro {
		return 0, ebpf.ErrReadOnly
	}
	if off < 0 || off >= int64(len(m.b)) {
		return 0, errors.Wrapf(uapi.EINVAL, "write offset %d out of range", off)
	}
	n := min(len(p), len(m.b)-int(off))
	mem.StoreBytes(m.b[off:off+int64(n)], p[:n])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Variable is a global variable of a loaded collection, like
// cilium/ebpf's Variable: read and written in its data section's mapped
// memory.
type Variable struct {
	name         string
	offset, size uint32
	t            *btf.Var
	mm           *Memory
}

// isDataSection is cilium/ebpf's test for the global data sections, which
// it creates mappable.
func isDataSection(name string) bool {
	return name == ".bss" || strings.HasPrefix(name, ".data") || strings.HasPrefix(name, ".rodata")
}

// newVariables makes the collection's variables whose sections it loaded.
func (c *Collection) newVariables(spec *ebpf.CollectionSpec) error {
	for name, vs := range spec.Variables {
		h, ok := c.Maps[vs.SectionName]
		if !ok {
			continue
		}
		mm, err := h.Memory()
		if err != nil {
			return errors.Wrapf(err, "variable %s", name)
		}
		if uint64(vs.Offset)+uint64(vs.Size()) > uint64(mm.Size()) {
			return errors.Wrapf(uapi.EINVAL, "variable %s: offset %d(+%d) is out of bounds", name, vs.Offset, vs.Size())
		}
		if c.Variables == nil {
			c.Variables = map[string]*Variable{}
		}
		c.Variables[name] = &Variable{name: vs.Name, offset: vs.Offset, size: vs.Size(), t: vs.Type, mm: mm}
	}
	return nil
}

// Size returns the size of the variable.
func (v *Variable) Size() uint32 { return v.size }

// ReadOnly reports whether the variable cannot be set: it is in a
// frozen section (.rodata).
func (v *Variable) ReadOnly() bool { return v.mm.ReadOnly() }

// Type returns the variable's BTF, nil if the object had none.
func (v *Variable) Type() *btf.Var { return v.t }

func (v *Variable) String() string { return fmt.Sprintf("%s (type=%v)", v.name, v.t) }

// Set writes in, which must encode (little-endian, as encoding/binary
// does, or as raw bytes) to exactly the variable's size.
func (v *Variable) Set(in any) error {
	if v.ReadOnly() {
		return fmt.Errorf("variable %s: %w", v.name, ebpf.ErrReadOnly)
	}
	var b []byte
	switch x := in.(type) {
	case []byte:
		b = x
	default:
		var err error
		if b, err = binary.Append(nil, binary.LittleEndian, in); err != nil {
			return errors.Wrapf(uapi.EINVAL, "variable %s: encoding %T: %v", v.name, in, err)
		}
	}
	if len(b) != int(v.size) {
		return errors.Wrapf(uapi.EINVAL, "variable %s: %T encodes to %d bytes, the variable has %d", v.name, in, len(b), v.size)
	}
	_, err := v.mm.WriteAt(b, int64(v.offset))
	return err
}

// Get decodes the variable into out, a pointer to a value of the
// variable's size (or a []byte of that length).
func (v *Variable) Get(out any) error {
	b := make([]byte, v.size)
	if _, err := v.mm.ReadAt(b, int64(v.offset)); err != nil {
		return errors.Wrapf(err, "variable %s", v.name)
	}
	if p, ok := out.([]byte); ok {
		if len(p) != len(b) {
			return errors.Wrapf(uapi.EINVAL, "variable %s: a %d-byte buffer for %d bytes", v.name, len(p), len(b))
		}
		copy(p, b)
		return nil
	}
	if n := binary.Size(out); n != int(v.size) {
		return errors.Wrapf(uapi.EINVAL, "variable %s: %T holds %d bytes, the variable has %d", v.name, out, n, v.size)
	}
	return binary.Read(bytes.NewReader(b), binary.LittleEndian, out)
}
