package lb

// The object is built next to its source, then moved here, where
// //go:embed can reach it (embed never looks in parent directories).
//go:generate sh -c "../../../scripts/gen-bpf.sh ../bpf/maglev.bpf.c && mv ../bpf/maglev.bpf.o ../bpf/maglev.bpf.o.srcsum ."
