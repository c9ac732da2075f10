module github.com/bpfsim/bpfsim

go 1.26.0

require (
	github.com/cilium/ebpf v0.22.0
	github.com/pkg/errors v0.9.1
	github.com/twmb/murmur3 v1.2.2
	golang.org/x/arch v0.32.0
)

require (
	github.com/dustin/go-humanize v1.1.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
)
