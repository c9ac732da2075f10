package hashmap

import (
	"encoding/binary"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Batch commands of the hash types (BATCH_OPS in hashtab.c): every hash
// type, the hash of maps included, has all four. Updates and deletes are
// the kernel's generic ones, an element at a time; lookups, and lookups
// that delete, are __htab_map_lookup_and_delete_batch: whole buckets, in
// bucket order, so that a batch never splits a chain and the next batch
// can resume from a bucket number.

const allBatchOps = maps.BatchLookup | maps.BatchLookupAndDelete | maps.BatchUpdate | maps.BatchDelete

var (
	_ maps.BatchLookuper = (*htab)(nil)
	_ maps.BatchLookuper = (*lruHtab)(nil)
	_ maps.BatchLookuper = (*lruPercpuHtab)(nil)
	_ maps.BatchLookuper = (*htabOfMaps)(nil)
	_ maps.Batcher       = (*htab)(nil)
	_ maps.Batcher       = (*lruHtab)(nil)
	_ maps.Batcher       = (*lruPercpuHtab)(nil)
	_ maps.Batcher       = (*htabOfMaps)(nil)
)

// BatchOps: a hash map has every batch command.
func (h *htab) BatchOps() maps.BatchOps { return allBatchOps }

// BatchOps: an LRU hash has every batch command.
func (l *lruHtab) BatchOps() maps.BatchOps { return allBatchOps }

// BatchOps: an LRU per-CPU hash has every batch command.
func (l *lruPercpuHtab) BatchOps() maps.BatchOps { return allBatchOps }

// BatchOps: a hash of maps has every batch command.
func (o *htabOfMaps) BatchOps() maps.BatchOps { return allBatchOps }

// LookupBatch is htab_map_lookup_batch (htab_percpu_map_lookup_batch for
// PERCPU_HASH) and, with del, the _and_delete_ versions.
func (h *htab) LookupBatch(in uint32, keys, values []byte, elemFlags uint64, del bool) (uint32, uint32, error) {
	rec := h.m.Record
	copyValue := func(e *elem, dst []byte) {
		switch {
		case h.percpu:
			h.copyPercpu(e, dst)
		case elemFlags&uapi.BPF_F_LOCK != 0:
			maps.LoadValueLocked(rec, dst, h.value(e))
		default:
			maps.LoadValue(rec, dst, h.value(e))
		}
	}
	return h.lookupBatch(in, keys, values, h.batchValueSize(), del, copyValue, func(e *elem) { h.retire(e, true) })
}

// LookupBatch is htab_lru_map_lookup_batch and its _and_delete_ twin: a
// deleted element's node goes back to the LRU (htab_lru_push_free). The
// walk does not mark elements referenced.
func (l *lruHtab) LookupBatch(in uint32, keys, values []byte, elemFlags uint64, del bool) (uint32, uint32, error) {
	h := l.h
	copyValue := func(e *elem, dst []byte) { maps.LoadValue(h.m.Record, dst, h.value(e)) }
	return h.lookupBatch(in, keys, values, h.batchValueSize(), del, copyValue, func(e *elem) { h.lru.pushFree(e.node) })
}

// LookupBatch is htab_lru_percpu_map_lookup_batch and its _and_delete_
// twin.
func (l *lruPercpuHtab) LookupBatch(in uint32, keys, values []byte, elemFlags uint64, del bool) (uint32, uint32, error) {
	h := l.h
	return h.lookupBatch(in, keys, values, h.batchValueSize(), del, h.copyPercpu, func(e *elem) { h.lru.pushFree(e.node) })
}

// LookupBatch is htab_map_lookup_batch on a hash of maps: each value read
// back is the inner map's id (map_fd_sys_lookup_elem); a deleted element's
// inner map loses the element's reference.
func (o *htabOfMaps) LookupBatch(in uint32, keys, values []byte, elemFlags uint64, del bool) (uint32, uint32, error) {
	h := o.h
	copyID := func(e *elem, dst []byte) {
		var id uint32
		o.mu.Lock()
		if r := o.refs[o.innerAddr(e)]; r != nil {
			id = r.m.ID
		}
		o.mu.Unlock()
		binary.LittleEndian.PutUint32(dst, id)
	}
	release := func(e *elem) {
		addr := o.innerAddr(e)
		h.retire(e, true)
		o.drop(addr)
	}
	return h.lookupBatch(in, keys, values, 4, del, copyID, release)
}

// batchValueSize is the size of one value in a batch's values buffer
// (bpf_map_value_size): every CPU's copy, each rounded up to 8 bytes, for
// the per-CPU types.
func (h *htab) batchValueSize() int {
	if h.percpu {
		return int(h.pcpuSize) * h.ncpu
	}
	return h.valueSize
}

// lookupBatch is __htab_map_lookup_and_delete_batch. Each bucket is
// counted and copied under its lock, whole or not at all; with del its
// elements are unlinked under the same lock and released (free) once it
// is dropped, the last of the chain first, as the kernel's batch_flink
// list hands them back. The walk goes on past empty buckets without
// stopping, so a batch that ends on a full buffer reports ENOENT at once
// if only empty buckets follow.
func (h *htab) lookupBatch(in uint32, keys, values []byte, valueSize int, del bool,
	copyValue func(e *elem, dst []byte), free func(e *elem)) (uint32, uint32, error) {
	if in >= h.nBuckets {
		return 0, in, errors.Wrapf(uapi.ENOENT, "batch cursor %d is past the last of %d buckets", in, h.nBuckets)
	}
	maxCount := uint32(len(keys) / h.keySize)
	var total uint32
	var freed []*elem
	for i := in; i < h.nBuckets; i++ {
		seg := h.segs[i>>segShift].Load()
		if seg == nil {
			i |= segMask // a segment never used holds only empty buckets
			continue
		}
		b := &seg[i&segMask]
		if b.head.Load() == nil {
			continue
		}
		b.mu.Lock()
		var cnt uint32
		for e := b.head.Load(); e != nil; e = e.next.Load() {
			cnt++
		}
		if cnt > maxCount-total {
			b.mu.Unlock()
			if total == 0 {
				return 0, i, errors.Wrapf(uapi.ENOSPC, "bucket %d holds %d elements, more than the batch's %d", i, cnt, maxCount)
			}
			return total, i, nil
		}
		freed = freed[:0]
		var prev *elem
		for e := b.head.Load(); e != nil; {
			next := e.next.Load()
			mem.LoadBytes(keys[int(total)*h.keySize:], h.key(e))
			copyValue(e, values[int(total)*valueSize:int(total+1)*valueSize])
			total++
			if del {
				unlink(b, prev, e)
				freed = append(freed, e)
			} else {
				prev = e
			}
			e = next
		}
		b.mu.Unlock()
		for j := len(freed) - 1; j >= 0; j-- {
			free(freed[j])
		}
	}
	return total, h.nBuckets, errors.Wrap(uapi.ENOENT, "the batch walked past the last bucket")
}
