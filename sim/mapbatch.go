package sim

import (
	"encoding"
	"encoding/binary"
	"reflect"

	"github.com/cilium/ebpf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Batch operations on maps: BPF_MAP_LOOKUP_BATCH,
// BPF_MAP_LOOKUP_AND_DELETE_BATCH, BPF_MAP_UPDATE_BATCH and
// BPF_MAP_DELETE_BATCH (bpf_map_do_batch in kernel/bpf/syscall.c), with
// cilium/ebpf's API.
//
// The syscall checks the file's access mode first (EPERM), then whether
// the map's type has the command at all (ENOTSUPP: maps.Batcher), then
// the command's own rules: elem_flags may hold only BPF_F_LOCK, and that
// only for values with a bpf_spin_lock (EINVAL); a count of 0 does nothing
// and succeeds. The hash types' lookups also refuse any flags (EINVAL);
// the generic commands ignore them. Updates take no BPF_NOEXIST or
// BPF_EXIST: elem_flags are the update's flags.
//
// Lookups come in two kinds. The hash types copy whole buckets
// (maps.BatchLookuper), and their cursor is a bucket number: a batch
// stops before the first bucket that does not fit, and fails with ENOSPC
// if that is its first one. Other types take the kernel's generic walk
// (generic_map_lookup_batch): get_next_key from the cursor's key, then a
// lookup of each key found, skipping keys that have gone (an array of
// maps' empty slots); the cursor is the last key visited. Either way the
// last batch says ENOENT, with the count of what it copied; what a batch
// copies it copies in the order get_next_key would walk.
//
// Updates and deletes are the generic ones: an element at a time, stopping
// at the first that fails, whose error is returned with the count of the
// elements done before it.

// MapBatchCursor is where a batch lookup resumes, as cilium/ebpf's: a
// bucket number for the hash types, the last key visited for the others.
// The zero value starts at the beginning; it belongs to the first map it
// is used with.
type MapBatchCursor struct {
	m      *Map
	opaque []byte
}

// BatchLookup copies many elements at once into keysOut and valuesOut,
// slices of equal length (per-CPU maps: valuesOut holds one value per
// possible CPU for each key, key after key). It returns how many it
// copied; at the end of the map the error is ErrKeyNotExist (ENOENT),
// with the count of what this last batch copied. Pass the same cursor to
// go on. A hash map whose next bucket holds more elements than the
// slices fails with ENOSPC. Errors other than ENOENT return 0, as
// cilium/ebpf's do.
func (h *Map) BatchLookup(cursor *MapBatchCursor, keysOut, valuesOut any, opts *ebpf.BatchOptions) (int, error) {
	n, err := h.batchLookup(cursor, keysOut, valuesOut, opts, false)
	if err != nil {
		return n, errors.WithMessage(err, "map batch lookup")
	}
	return n, nil
}

// BatchLookupAndDelete is BatchLookup that also deletes what it copies:
// only the hash types have it (ENOTSUPP otherwise).
func (h *Map) BatchLookupAndDelete(cursor *MapBatchCursor, keysOut, valuesOut any, opts *ebpf.BatchOptions) (int, error) {
	n, err := h.batchLookup(cursor, keysOut, valuesOut, opts, true)
	if err != nil {
		return n, errors.WithMessage(err, "map batch lookup and delete")
	}
	return n, nil
}

// BatchUpdate sets the values of many keys at once, as Update with
// ebpf.UpdateAny (or ebpf.UpdateLock in opts.ElemFlags) would one by
// one; keys and values are slices of equal length (per-CPU maps: one
// value per possible CPU for each key). The values of a map of maps are
// fds or *Map handles. It returns how many elements it updated: on an
// element's failure, those before it, with that element's error. As
// with cilium/ebpf on the kernel, an error that stops the command before
// its first element (access mode, ENOTSUPP, flags) returns the count
// asked for, which the kernel left untouched.
func (h *Map) BatchUpdate(keys, values any, opts *ebpf.BatchOptions) (int, error) {
	n, err := h.batchUpdate(keys, values, opts)
	if err != nil {
		return n, errors.WithMessage(err, "batch update")
	}
	return n, nil
}

// BatchDelete deletes many keys at once, stopping at the first that fails
// (ErrKeyNotExist for a missing key). Counts as for BatchUpdate.
func (h *Map) BatchDelete(keys any, opts *ebpf.BatchOptions) (int, error) {
	n, err := h.batchDelete(keys, opts)
	if err != nil {
		return n, errors.WithMessage(err, "batch delete")
	}
	return n, nil
}

// batchOpts returns opts' elem_flags and flags.
func batchOpts(opts *ebpf.BatchOptions) (elemFlags, flags uint64) {
	if opts == nil {
		return 0, 0
	}
	return opts.ElemFlags, opts.Flags
}

// checkBatch is bpf_map_do_batch's checks before the command runs: the
// file's access mode (has_read, has_write), then the command's presence
// in the type's ops; then the elem_flags every command checks.
func (h *Map) checkBatch(op maps.BatchOps, read, write bool, elemFlags uint64) error {
	if read {
		if err := h.canRead(); err != nil {
			return err
		}
	}
	if write {
		if err := h.canWrite(); err != nil {
			return err
		}
	}
	if b, ok := h.m.Ops.(maps.Batcher); !ok || b.BatchOps()&op == 0 {
		return mapError{errors.Wrapf(uapi.ENOTSUPP, "%s maps have no such batch command", h.m.Attr.Type)}
	}
	if elemFlags&^uapi.BPF_F_LOCK != 0 {
		return errors.Wrapf(uapi.EINVAL, "unknown batch elem_flags %#x", elemFlags)
	}
	return h.checkLockFlag(elemFlags)
}

// batchValueSize is bpf_map_value_size: the bytes of one value user space
// reads or writes, every CPU's copy rounded up to 8 bytes for per-CPU maps,
// a u32 (an fd in, an id out) for maps whose values are objects.
func (h *Map) batchValueSize() int {
	if _, ok := h.percpu(); ok {
		return int(maps.RoundUp8(h.m.ValueSize)) * h.k.NumCPUs()
	}
	if _, ok := h.fdValues(); ok {
		return 4
	}
	return int(h.m.ValueSize)
}

// batchShape returns the number of keys in keys and checks that values
// (unless nil) has one value per key, or one per key and CPU for per-CPU
// maps.
func (h *Map) batchShape(keys, values any, withValues bool) (int, error) {
	n, err := sliceLen(keys)
	if err != nil {
		return 0, errors.WithMessage(err, "keys")
	}
	if !withValues {
		return n, nil
	}
	want := n
	if _, ok := h.percpu(); ok {
		want = n * h.k.NumCPUs()
		if b, ok := values.([]byte); ok && len(b) == n*h.batchValueSize() && h.m.ValueSize != 1 {
			return n, nil // the values already laid out as the kernel takes them
		}
	}
	got, err := sliceLen(values)
	if err != nil {
		return 0, errors.WithMessage(err, "values")
	}
	if got != want {
		return 0, errors.Wrapf(uapi.EINVAL, "%d keys need %d values, got %d", n, want, got)
	}
	return n, nil
}

func sliceLen(s any) (int, error) {
	v := reflect.ValueOf(s)
	if v.Kind() != reflect.Slice {
		return 0, errors.Wrapf(uapi.EINVAL, "%T is not a slice", s)
	}
	return v.Len(), nil
}

func (h *Map) batchLookup(cursor *MapBatchCursor, keysOut, valuesOut any, opts *ebpf.BatchOptions, del bool) (int, error) {
	if cursor == nil {
		return 0, errors.Wrap(uapi.EINVAL, "a batch lookup needs a cursor")
	}
	count, err := h.batchShape(keysOut, valuesOut, true)
	if err != nil {
		return 0, err
	}
	if count > 0 {
		if err := h.checkBatchOut(keysOut, valuesOut); err != nil {
			return 0, err
		}
	}
	var in []byte
	switch {
	case cursor.opaque == nil:
		// The generic walk's cursor is a key, the hashes' a u32.
		cursor.opaque = make([]byte, max(int(h.m.KeySize), 4))
		cursor.m = h
	case cursor.m != h:
		return 0, errors.Wrap(uapi.EINVAL, "a cursor may not be reused across maps")
	default:
		in = cursor.opaque
	}
	op := maps.BatchLookup
	if del {
		op = maps.BatchLookupAndDelete
	}
	elemFlags, flags := batchOpts(opts)
	if err := h.checkBatch(op, true, del, elemFlags); err != nil {
		return 0, err
	}
	bl, own := h.m.Ops.(maps.BatchLookuper)
	if own && flags != 0 {
		return 0, errors.Wrapf(uapi.EINVAL, "unknown batch flags %#x", flags)
	}
	if count == 0 {
		return 0, nil
	}
	keySize, valueSize := int(h.m.KeySize), h.batchValueSize()
	if keySize == 0 {
		// Only a type registered from outside could claim a batch
		// lookup without keys; there is nothing to walk by.
		return 0, errors.Wrap(uapi.EINVAL, "a batch lookup needs keys")
	}
	keys, values := make([]byte, count*keySize), make([]byte, count*valueSize)
	var n int
	if own {
		var start uint32
		if in != nil {
			start = binary.LittleEndian.Uint32(in)
		}
		var got, next uint32
		got, next, err = bl.LookupBatch(start, keys, values, elemFlags, del)
		n = int(got)
		if err == nil || errors.Is(err, uapi.ENOENT) || errors.Is(err, uapi.ENOSPC) {
			binary.LittleEndian.PutUint32(cursor.opaque, next)
		}
	} else {
		n, err = h.genericLookupBatch(in, cursor.opaque, keys, values, elemFlags)
	}
	if del && n > 0 {
		h.waitForPrograms()
	}
	if err != nil && !errors.Is(err, uapi.ENOENT) {
		return 0, mapErr(err)
	}
	if uerr := unmarshalBatch(keys[:n*keySize], keysOut, keySize, keySize); uerr != nil {
		return 0, uerr
	}
	if uerr := h.unmarshalBatchValues(values[:n*valueSize], valuesOut); uerr != nil {
		return 0, uerr
	}
	return n, mapErr(err)
}

// checkBatchOut refuses, before the map is touched, output slices whose
// elements cannot hold a key or a value (those that unmarshal themselves
// are taken on trust): a lookup that deletes must not fail after the
// deletes.
func (h *Map) checkBatchOut(keysOut, valuesOut any) error {
	if err := checkElemSize(keysOut, int(h.m.KeySize)); err != nil {
		return errors.WithMessage(err, "keys")
	}
	size := h.batchValueSize()
	if _, ok := h.percpu(); ok {
		if _, raw := valuesOut.([]byte); raw && h.m.ValueSize != 1 {
			return nil
		}
		size = int(h.m.ValueSize)
	}
	return errors.WithMessage(checkElemSize(valuesOut, size), "values")
}

// checkElemSize checks that the elements of slice, or what they point to,
// are size bytes.
func checkElemSize(slice any, size int) error {
	t := reflect.TypeOf(slice).Elem()
	if !plainElems(t) {
		return nil
	}
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n := binary.Size(reflect.New(t).Interface()); n != size {
		return errors.Wrapf(uapi.EINVAL, "elements of %T are %d bytes, not %d", slice, n, size)
	}
	return nil
}

// genericLookupBatch is generic_map_lookup_batch: from the key in in (nil:
// from the start), get_next_key and a lookup of each key found, until
// keys is full or the walk ends (ENOENT). A key gone between the two
// steps is skipped (6.14's "skip non exist keys"). out gets the last key
// visited, if anything was copied.
func (h *Map) genericLookupBatch(in, out, keys, values []byte, elemFlags uint64) (int, error) {
	keySize, valueSize := int(h.m.KeySize), h.batchValueSize()
	maxCount := len(keys) / keySize
	var prev []byte
	if in != nil {
		prev = append([]byte(nil), in[:keySize]...)
	}
	cp := 0
	var err error
	for cp < maxCount {
		next := keys[cp*keySize : (cp+1)*keySize]
		if err = h.m.Ops.GetNextKey(prev, next); err != nil {
			break
		}
		var v []byte
		v, err = h.lookupBytesFlags(next, elemFlags)
		if errors.Is(err, uapi.ENOENT) {
			prev = append(prev[:0], next...)
			continue
		}
		if err != nil {
			return 0, err
		}
		copy(values[cp*valueSize:], v)
		prev = append(prev[:0], next...)
		cp++
	}
	if cp > 0 {
		copy(out, prev)
	}
	return cp, err
}

func (h *Map) batchUpdate(keys, values any, opts *ebpf.BatchOptions) (int, error) {
	count, err := h.batchShape(keys, values, true)
	if err != nil {
		return 0, err
	}
	keySize := int(h.m.KeySize)
	kb, err := marshalBatch(keys, count, keySize, keySize)
	if err != nil {
		return 0, errors.WithMessage(err, "keys")
	}
	vals, err := h.batchValues(values, count)
	if err != nil {
		return 0, errors.WithMessage(err, "values")
	}
	elemFlags, _ := batchOpts(opts)
	if err := h.checkBatch(maps.BatchUpdate, false, true, elemFlags); err != nil {
		return count, mapErr(err)
	}
	for i := 0; i < count; i++ {
		if err := h.Update(kb[i*keySize:(i+1)*keySize], vals(i), ebpf.MapUpdateFlags(elemFlags)); err != nil {
			return i, err
		}
	}
	return count, nil
}

// batchValues returns the values of an update batch one by one: bytes as
// the kernel reads them, or for maps of objects the handles given.
func (h *Map) batchValues(values any, count int) (func(i int) any, error) {
	if _, ok := h.fdValues(); ok {
		rv := reflect.ValueOf(values)
		if rv.Len() > 0 && rv.Index(0).Kind() == reflect.Pointer {
			// *Map, *Program, *PerfEvent: updateFd resolves each.
			return func(i int) any { return rv.Index(i).Interface() }, nil
		}
	}
	size, stride := int(h.m.ValueSize), h.batchValueSize()
	if _, ok := h.percpu(); ok {
		ncpu := h.k.NumCPUs()
		stride /= ncpu
		if b, ok := values.([]byte); ok && len(b) == count*stride*ncpu && size != 1 {
			return func(i int) any { return b[i*stride*ncpu : (i+1)*stride*ncpu] }, nil
		}
		vb, err := marshalBatch(values, count*ncpu, size, stride)
		if err != nil {
			return nil, err
		}
		return func(i int) any { return vb[i*stride*ncpu : (i+1)*stride*ncpu] }, nil
	}
	if _, ok := h.fdValues(); ok {
		size = 4
	}
	vb, err := marshalBatch(values, count, size, stride)
	if err != nil {
		return nil, err
	}
	return func(i int) any { return vb[i*stride : (i+1)*stride] }, nil
}

func (h *Map) batchDelete(keys any, opts *ebpf.BatchOptions) (int, error) {
	count, err := h.batchShape(keys, nil, false)
	if err != nil {
		return 0, err
	}
	keySize := int(h.m.KeySize)
	kb, err := marshalBatch(keys, count, keySize, keySize)
	if err != nil {
		return 0, errors.WithMessage(err, "keys")
	}
	elemFlags, _ := batchOpts(opts)
	if err := h.checkBatch(maps.BatchDelete, false, true, elemFlags); err != nil {
		return count, mapErr(err)
	}
	if count > 0 {
		defer h.waitForPrograms()
	}
	for i := 0; i < count; i++ {
		if err := h.m.Ops.DeleteElem(0, kb[i*keySize:(i+1)*keySize]); err != nil {
			return i, mapErr(err)
		}
	}
	return count, nil
}

// unmarshalBatchValues decodes the values a lookup batch copied: for
// per-CPU maps, each key's copies into that key's run of possibleCPUs
// elements.
func (h *Map) unmarshalBatchValues(buf []byte, out any) error {
	stride := h.batchValueSize()
	if _, ok := h.percpu(); ok {
		ncpu := h.k.NumCPUs()
		if b, ok := out.([]byte); ok && h.m.ValueSize != 1 {
			copy(b, buf) // laid out as the kernel writes it (batchShape)
			return nil
		}
		return unmarshalBatch(buf, out, int(h.m.ValueSize), stride/ncpu)
	}
	return unmarshalBatch(buf, out, stride, stride)
}

// marshalBatch encodes the first n elements of slice, each size bytes,
// one every stride bytes (the rest zero): a slice of fixed-size values,
// or of values marshal takes.
func marshalBatch(slice any, n, size, stride int) ([]byte, error) {
	out := make([]byte, n*stride)
	rv := reflect.ValueOf(slice)
	if rv.Kind() != reflect.Slice || rv.Len() < n {
		return nil, errors.Wrapf(uapi.EINVAL, "%T is not a slice of %d elements", slice, n)
	}
	if size == stride && rv.Len() == n && plainElems(rv.Type().Elem()) && binary.Size(slice) == n*size {
		if _, err := binary.Encode(out, binary.LittleEndian, slice); err == nil {
			return out, nil
		}
	}
	for i := 0; i < n; i++ {
		b, err := marshal(rv.Index(i).Interface(), size)
		if err != nil {
			return nil, errors.WithMessagef(err, "element %d", i)
		}
		copy(out[i*stride:], b)
	}
	return out, nil
}

// plainElems says whether elements of type t are encoded as their bytes,
// with no marshaler of their own: then a whole slice of them is encoded
// or decoded at once.
func plainElems(t reflect.Type) bool {
	var (
		m = reflect.TypeFor[encoding.BinaryMarshaler]()
		u = reflect.TypeFor[encoding.BinaryUnmarshaler]()
	)
	return !t.Implements(m) && !t.Implements(u) && !reflect.PointerTo(t).Implements(m) && !reflect.PointerTo(t).Implements(u)
}

// unmarshalBatch decodes buf, elements of size bytes one every stride
// bytes, into the first elements of out, a slice of values unmarshal
// fills (fixed-size values, encoding.BinaryUnmarshaler). The elements of
// out past those are left as they were, as the kernel leaves the part of
// user space's buffer it did not fill.
func unmarshalBatch(buf []byte, out any, size, stride int) error {
	n := len(buf) / stride
	rv := reflect.ValueOf(out)
	if rv.Kind() != reflect.Slice || rv.Len() < n {
		return errors.Wrapf(uapi.EINVAL, "%T is not a slice of at least %d elements", out, n)
	}
	if n == 0 {
		return nil
	}
	if size == stride && plainElems(rv.Type().Elem()) {
		head := rv.Slice(0, n).Interface()
		if binary.Size(head) == len(buf) {
			if _, err := binary.Decode(buf, binary.LittleEndian, head); err == nil {
				return nil
			}
		}
	}
	for i := 0; i < n; i++ {
		elem := rv.Index(i)
		if elem.Kind() != reflect.Pointer {
			elem = elem.Addr()
		} else if elem.IsNil() {
			return errors.Wrapf(uapi.EINVAL, "element %d is a nil %s", i, elem.Type())
		}
		if err := unmarshal(buf[i*stride:i*stride+size], elem.Interface()); err != nil {
			return errors.WithMessagef(err, "element %d", i)
		}
	}
	return nil
}
