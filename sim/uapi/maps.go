package uapi

// MapType is enum bpf_map_type.
type MapType uint32

// Map types.
const (
	MapTypeUnspec         MapType = 0
	MapTypeHash           MapType = 1
	MapTypeArray          MapType = 2
	MapTypeProgArray      MapType = 3
	MapTypePerfEventArray MapType = 4
	MapTypePercpuHash     MapType = 5
	MapTypePercpuArray    MapType = 6
	MapTypeStackTrace     MapType = 7
	MapTypeCgroupArray    MapType = 8
	MapTypeLRUHash        MapType = 9
	MapTypeLRUPercpuHash  MapType = 10
	MapTypeLPMTrie        MapType = 11
	MapTypeArrayOfMaps    MapType = 12
	MapTypeHashOfMaps     MapType = 13
	MapTypeDevmap         MapType = 14
	MapTypeCPUMap         MapType = 16
	MapTypeQueue          MapType = 22
	MapTypeStack          MapType = 23
	MapTypeDevmapHash     MapType = 25
	MapTypeStructOps      MapType = 26
	MapTypeRingbuf        MapType = 27
	MapTypeTaskStorage    MapType = 29
	MapTypeBloomFilter    MapType = 30
	MapTypeUserRingbuf    MapType = 31
)

var mapTypeNames = map[MapType]string{
	0: "unspec", 1: "hash", 2: "array", 3: "prog_array", 4: "perf_event_array",
	5: "percpu_hash", 6: "percpu_array", 7: "stack_trace", 8: "cgroup_array",
	9: "lru_hash", 10: "lru_percpu_hash", 11: "lpm_trie", 12: "array_of_maps",
	13: "hash_of_maps", 14: "devmap", 15: "sockmap", 16: "cpumap", 17: "xskmap",
	18: "sockhash", 19: "cgroup_storage", 20: "reuseport_sockarray",
	21: "percpu_cgroup_storage", 22: "queue", 23: "stack", 24: "sk_storage",
	25: "devmap_hash", 26: "struct_ops", 27: "ringbuf", 28: "inode_storage",
	29: "task_storage", 30: "bloom_filter", 31: "user_ringbuf", 32: "cgrp_storage",
	33: "arena", 34: "insn_array", 35: "rhash",
}

// String returns the name bpftool uses for the type.
func (t MapType) String() string {
	if n, ok := mapTypeNames[t]; ok {
		return n
	}
	return "unknown"
}

// Map creation flags (map_flags of BPF_MAP_CREATE).
const (
	BPF_F_NO_PREALLOC    = 1 << 0
	BPF_F_NO_COMMON_LRU  = 1 << 1
	BPF_F_NUMA_NODE      = 1 << 2
	BPF_F_RDONLY         = 1 << 3
	BPF_F_WRONLY         = 1 << 4
	BPF_F_STACK_BUILD_ID = 1 << 5
	BPF_F_ZERO_SEED      = 1 << 6
	BPF_F_RDONLY_PROG    = 1 << 7
	BPF_F_WRONLY_PROG    = 1 << 8
	BPF_F_CLONE          = 1 << 9

	// BPF_LOCAL_STORAGE_GET_F_CREATE is bpf_*_storage_get's flag that makes
	// a value for an owner without one.
	BPF_LOCAL_STORAGE_GET_F_CREATE = 1
	BPF_F_MMAPABLE                 = 1 << 10
	BPF_F_PRESERVE_ELEMS           = 1 << 11
	BPF_F_INNER_MAP                = 1 << 12

	// BPF_F_ACCESS_MASK is the kernel's mask of the access flags.
	BPF_F_ACCESS_MASK = BPF_F_RDONLY | BPF_F_RDONLY_PROG | BPF_F_WRONLY | BPF_F_WRONLY_PROG
)

// BPF_OBJ_GET's file_flags beside BPF_F_RDONLY and BPF_F_WRONLY: the path
// is relative to path_fd (an absolute one ignores it, as openat does).
const BPF_F_PATH_FD = 1 << 14

// Element update flags.
const (
	BPF_ANY     = 0
	BPF_NOEXIST = 1
	BPF_EXIST   = 2
	BPF_F_LOCK  = 4
)

// Helper ids for map helpers.
const (
	FuncMapPushElem = 87
	FuncMapPopElem  = 88
	FuncMapPeekElem = 89
)
