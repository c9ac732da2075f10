package maps

// Batch operations (BPF_MAP_LOOKUP_BATCH, BPF_MAP_LOOKUP_AND_DELETE_BATCH,
// BPF_MAP_UPDATE_BATCH, BPF_MAP_DELETE_BATCH): which of them a map type
// has is what its map_ops fill in (map_lookup_batch and its three
// siblings); a command the type lacks fails with ENOTSUPP. Most types
// that have one take the kernel's generic versions, which the kernel
// itself runs on top of the element operations (get_next_key, then the
// element's lookup, update or delete, one key at a time). The hash types
// have their own lookups, a bucket at a time: BatchLookuper.

// BatchOps is a set of batch commands.
type BatchOps uint8

const (
	// BatchLookup is map_lookup_batch.
	BatchLookup BatchOps = 1 << iota
	// BatchLookupAndDelete is map_lookup_and_delete_batch.
	BatchLookupAndDelete
	// BatchUpdate is map_update_batch.
	BatchUpdate
	// BatchDelete is map_delete_batch.
	BatchDelete
)

// Batcher is the ability of map types that have batch commands: BatchOps
// says which. The kernel serves them with its generic versions
// (generic_map_lookup_batch, generic_map_update_batch,
// generic_map_delete_batch) unless the type is also a BatchLookuper. A
// type without the ability has none (ENOTSUPP); generic lookups and
// deletes are not offered for lookup-and-delete, which only the hash
// types have.
type Batcher interface {
	BatchOps() BatchOps
}

// BatchLookuper is the ability of map types whose batch lookups are their
// own (htab_map_lookup_batch, htab_map_lookup_and_delete_batch): the hash
// types, which copy whole buckets.
//
// LookupBatch starts at bucket in (the in_batch cursor: 0 for the first
// batch) and copies whole buckets, in order, while they fit: keys has
// room for len(keys)/key_size elements, values for as many of the size
// user space reads (every CPU's copy, each rounded up to 8 bytes, for
// per-CPU types; the inner map's u32 id for a hash of maps). With del it
// also deletes what it copied. elemFlags is 0 or BPF_F_LOCK, already
// checked against the value's record. It returns how many elements it
// copied and the bucket the next batch starts from (out_batch); err is
// ENOENT when the walk passed the last bucket (n then counts what was
// copied on the way), ENOSPC when the first bucket that has elements holds
// more than keys has room for (n is 0; next names that bucket), and
// ENOENT with n 0 when in is past the last bucket (next is then
// meaningless: the kernel does not write it).
type BatchLookuper interface {
	LookupBatch(in uint32, keys, values []byte, elemFlags uint64, del bool) (n, next uint32, err error)
}
