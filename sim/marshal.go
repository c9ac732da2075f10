package sim

import (
	"bytes"
	"encoding"
	"encoding/binary"
	"reflect"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/uapi"
)

// marshal encodes a Go value as size bytes the way cilium/ebpf does for
// map keys and values: a []byte of that length, an
// encoding.BinaryMarshaler, or a fixed-size value encoded little-endian
// (the simulated kernel's byte order).
func marshal(v any, size int) ([]byte, error) {
	var b []byte
	switch x := v.(type) {
	case nil:
		if size != 0 {
			return nil, errors.Wrapf(uapi.EINVAL, "nil where %d bytes are needed", size)
		}
		return nil, nil
	case []byte:
		b = x
	case uint32:
		b = binary.LittleEndian.AppendUint32(make([]byte, 0, 4), x)
	case uint64:
		b = binary.LittleEndian.AppendUint64(make([]byte, 0, 8), x)
	case encoding.BinaryMarshaler:
		var err error
		if b, err = x.MarshalBinary(); err != nil {
			return nil, errors.Wrapf(uapi.EINVAL, "marshaling %T: %v", v, err)
		}
	default:
		if binary.Size(v) < 0 {
			return nil, errors.Wrapf(uapi.EINVAL, "%T has no fixed size", v)
		}
		var buf bytes.Buffer
		if err := binary.Write(&buf, binary.LittleEndian, v); err != nil {
			return nil, errors.Wrapf(uapi.EINVAL, "marshaling %T: %v", v, err)
		}
		b = buf.Bytes()
	}
	if len(b) != size {
		return nil, errors.Wrapf(uapi.EINVAL, "%T is %d bytes, want %d", v, len(b), size)
	}
	return b, nil
}

// unmarshal decodes b into v: a []byte of the same length, a *[]byte, an
// encoding.BinaryUnmarshaler, or a pointer to a fixed-size value.
func unmarshal(b []byte, v any) error {
	switch x := v.(type) {
	case nil:
		return nil
	case []byte:
		if len(x) != len(b) {
			return errors.Wrapf(uapi.EINVAL, "[]byte of %d bytes for a %d-byte value", len(x), len(b))
		}
		copy(x, b)
		return nil
	case *[]byte:
		*x = append((*x)[:0], b...)
		return nil
	case *uint32:
		if len(b) != 4 {
			return errors.Wrapf(uapi.EINVAL, "*uint32 for a %d-byte value", len(b))
		}
		*x = binary.LittleEndian.Uint32(b)
		return nil
	case *uint64:
		if len(b) != 8 {
			return errors.Wrapf(uapi.EINVAL, "*uint64 for a %d-byte value", len(b))
		}
		*x = binary.LittleEndian.Uint64(b)
		return nil
	case encoding.BinaryUnmarshaler:
		if err := x.UnmarshalBinary(b); err != nil {
			return errors.Wrapf(uapi.EINVAL, "unmarshaling %T: %v", v, err)
		}
		return nil
	}
	if rv := reflect.ValueOf(v); rv.Kind() != reflect.Pointer || rv.IsNil() {
		return errors.Wrapf(uapi.EINVAL, "cannot unmarshal into %T: need a pointer", v)
	}
	if n := binary.Size(v); n != len(b) {
		return errors.Wrapf(uapi.EINVAL, "%T is %d bytes, the value %d", v, n, len(b))
	}
	if err := binary.Read(bytes.NewReader(b), binary.LittleEndian, v); err != nil {
		return errors.Wrapf(uapi.EINVAL, "unmarshaling %T: %v", v, err)
	}
	return nil
}

// marshalPercpu encodes a per-CPU value: a slice with one element per CPU,
// each padded to 8 bytes, as user space passes them to the kernel. A
// []byte already in that layout passes through.
func marshalPercpu(v any, valueSize, cpus int) ([]byte, error) {
	stride := (valueSize + 7) &^ 7
	if b, ok := v.([]byte); ok {
		if len(b) != stride*cpus {
			return nil, errors.Wrapf(uapi.EINVAL, "per-CPU value of %d bytes, want %d", len(b), stride*cpus)
		}
		return b, nil
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Slice || rv.Len() != cpus {
		return nil, errors.Wrapf(uapi.EINVAL, "a per-CPU value must be a slice of %d elements, got %T", cpus, v)
	}
	out := make([]byte, stride*cpus)
	for i := 0; i < cpus; i++ {
		b, err := marshal(rv.Index(i).Interface(), valueSize)
		if err != nil {
			return nil, errors.Wrapf(err, "CPU %d", i)
		}
		copy(out[i*stride:], b)
	}
	return out, nil
}

// unmarshalPercpu decodes every CPU's copy into v: a pointer to a slice
// (resized to one element per CPU) or a slice of exactly that length.
func unmarshalPercpu(b []byte, v any, valueSize, cpus int) error {
	stride := (valueSize + 7) &^ 7
	if out, ok := v.(*[]byte); ok {
		*out = append((*out)[:0], b...)
		return nil
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Pointer && rv.Elem().Kind() == reflect.Slice {
		s := rv.Elem()
		if s.Len() != cpus {
			s.Set(reflect.MakeSlice(s.Type(), cpus, cpus))
		}
		rv = s
	}
	if rv.Kind() != reflect.Slice || rv.Len() != cpus {
		return errors.Wrapf(uapi.EINVAL, "a per-CPU value needs a slice of %d elements or a pointer to a slice, got %T", cpus, v)
	}
	for i := 0; i < cpus; i++ {
		elem := rv.Index(i)
		if elem.Kind() != reflect.Pointer {
			elem = elem.Addr()
		}
		if err := unmarshal(b[i*stride:i*stride+valueSize], elem.Interface()); err != nil {
			return errors.Wrapf(err, "CPU %d", i)
		}
	}
	return nil
}
