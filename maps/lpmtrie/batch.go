package lpmtrie

import "github.com/bpfsim/bpfsim/maps"

var _ maps.Batcher = (*trie)(nil)

// BatchOps: trie_map_ops takes the kernel's generic lookup, update and
// delete batches (a lookup batch walks the keys in get_next_key's
// post-order); a trie has no lookup-and-delete batch.
func (t *trie) BatchOps() maps.BatchOps {
	return maps.BatchLookup | maps.BatchUpdate | maps.BatchDelete
}
