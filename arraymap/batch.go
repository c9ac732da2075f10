package arraymap

import "github.com/bpfsim/bpfsim/maps"

// Batch commands of the array types: array_map_ops, percpu_array_map_ops
// and array_of_maps_map_ops take the kernel's generic lookup and update
// batches, which walk the indexes with get_next_key; an array has no
// lookup-and-delete or delete batch (ENOTSUPP), as its elements cannot be
// deleted. An array of maps' lookup batch skips empty slots. Prog arrays
// and the other fd arrays have none.

var (
	_ maps.Batcher = (*array)(nil)
	_ maps.Batcher = (*arrayOfMaps)(nil)
)

// BatchOps: lookup and update batches, for ARRAY and PERCPU_ARRAY.
func (a *array) BatchOps() maps.BatchOps { return maps.BatchLookup | maps.BatchUpdate }

// BatchOps: lookup and update batches.
func (a *arrayOfMaps) BatchOps() maps.BatchOps { return maps.BatchLookup | maps.BatchUpdate }
