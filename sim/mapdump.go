package sim

import (
	"fmt"
	"io"
	"strings"

	"github.com/bpfsim/bpfsim/maps"
)

// Dump writes the map's elements the way `bpftool map dump` prints them:
// "key: .. value: .." per element (every CPU's value for per-CPU maps),
// then "Found N elements".
func (h *Map) Dump(w io.Writer) error {
	_, percpu := h.percpu()
	n := 0
	it := h.Iterate()
	var key, value []byte
	for it.Next(&key, &value) {
		n++
		if percpu {
			fmt.Fprintf(w, "key:\n%s\n", hexBytes(key))
			stride := int(maps.RoundUp8(h.m.ValueSize))
			sep := " "
			if h.m.ValueSize > 16 {
				sep = "\n"
			}
			for cpu := 0; cpu < h.k.NumCPUs(); cpu++ {
				fmt.Fprintf(w, "value (CPU %02d):%s%s\n", cpu, sep, hexBytes(value[cpu*stride:cpu*stride+int(h.m.ValueSize)]))
			}
			continue
		}
		breakNames := h.m.KeySize > 16 || h.m.ValueSize > 16
		single := h.m.KeySize+h.m.ValueSize <= 24 && !breakNames
		sep, mid := " ", "\n"
		if breakNames {
			sep = "\n"
		}
		if single {
			mid = "  "
		}
		fmt.Fprintf(w, "key:%s%s%svalue:%s%s\n", sep, hexBytes(key), mid, sep, hexBytes(value))
	}
	if err := it.Err(); err != nil {
		return err
	}
	plural := "s"
	if n == 1 {
		plural = ""
	}
	_, err := fmt.Fprintf(w, "Found %d element%s\n", n, plural)
	return err
}

func hexBytes(b []byte) string {
	parts := make([]string, len(b))
	for i, c := range b {
		parts[i] = fmt.Sprintf("%02x", c)
	}
	return strings.Join(parts, " ")
}
