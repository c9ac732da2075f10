package mem

// Simulated memory is shared by every simulated CPU, each a goroutine, and
// by the kernel's own Go code (map updates from user space). A BPF program
// may legitimately read a word another CPU updates atomically; on arm64 and
// x86 an aligned plain access is single-copy atomic, so nothing tears. The
// Go race detector does not know that, so in race-enabled builds every
// access to simulated memory goes through sync/atomic (access_race.go),
// which models that hardware guarantee; other builds use plain Go
// accesses (access_norace.go), which compile to the same single moves.
//
// Load8..Load64 and Store8..Store64 read and write little-endian values at
// offset off of a page; LoadBytes and StoreBytes copy between Go memory
// and a slice of simulated memory (from Space.Bytes); Fill sets simulated
// memory to one byte value. Executors and map types use these for every
// access to simulated memory.
