package main

// The object is built next to its source, then moved here, where
// //go:embed can reach it (embed never looks in parent directories).
//go:generate sh -c "../../scripts/gen-bpf.sh bpf/exitsnoop.bpf.c && mv bpf/exitsnoop.bpf.o bpf/exitsnoop.bpf.o.srcsum ."
