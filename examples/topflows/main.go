// Command topflows counts traffic per source address with an XDP program
// and reads the table back through BPF iterators, on the simulated
// kernel.
//
// An iterator program (bpf/topflows.bpf.c) runs in the kernel once per
// element of a map while user space reads its file, and what it prints
// is what the read returns: formatted text, no lookups from user space.
// Pinned on the BPF filesystem, the iterator is a file anyone can cat.
//
// Read it top to bottom:
//
//  1. load the object (compiled with clang and committed);
//  2. send a deterministic mix of IPv4 packets from a few sources through
//     the XDP program, which counts them in the hash map talkers;
//  3. attach the dump_talkers iterator to talkers, pin it, and read the
//     pin as `cat /sys/fs/bpf/topflows` would;
//  4. list the kernel's maps with the list_maps iterator.
package main

import (
	"bytes"
	_ "embed"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
)

//go:embed topflows.bpf.o
var object []byte

// PinPath is where the table's iterator is pinned.
const PinPath = "/sys/fs/bpf/topflows"

// Counter is the loaded object: the XDP counter, its map, and the two
// iterator programs.
type Counter struct {
	coll *sim.Collection
}

// Load loads the object into k.
func Load(k *sim.Kernel) (*Counter, error) {
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(object))
	if err != nil {
		return nil, err
	}
	coll, err := k.NewCollection(spec)
	if err != nil {
		return nil, err
	}
	return &Counter{coll: coll}, nil
}

// Close unloads the object.
func (c *Counter) Close() { c.coll.Close() }

// Packet is an Ethernet frame carrying an IPv4 header from src, of size
// bytes in all.
func Packet(src netip.Addr, size int) []byte {
	b := make([]byte, max(size, 34))
	binary.BigEndian.PutUint16(b[12:], 0x0800) // ETH_P_IP
	b[14] = 0x45
	binary.BigEndian.PutUint16(b[16:], uint16(len(b)-14))
	b[23] = 17 // UDP
	copy(b[26:30], src.AsSlice())
	copy(b[30:34], []byte{192, 0, 2, 1})
	return b
}

// Traffic is a deterministic mix of n packets from a handful of sources,
// some busier than others, of sizes between 64 and 1500 bytes.
func Traffic(n int, seed uint64) [][]byte {
	rnd := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	sources := []netip.Addr{
		netip.MustParseAddr("10.0.0.7"), netip.MustParseAddr("10.0.0.9"),
		netip.MustParseAddr("10.0.1.20"), netip.MustParseAddr("172.16.3.4"),
		netip.MustParseAddr("192.168.50.100"),
	}
	weights := []int{50, 25, 12, 8, 5}
	pkts := make([][]byte, n)
	for i := range pkts {
		w := rnd.IntN(100)
		s := 0
		for ; w >= weights[s]; s++ {
			w -= weights[s]
		}
		pkts[i] = Packet(sources[s], 64+rnd.IntN(1500-64+1))
	}
	return pkts
}

// Count runs every packet through the XDP program.
func (c *Counter) Count(pkts [][]byte) error {
	prog := c.coll.Programs["count"]
	for _, p := range pkts {
		if _, err := prog.Test(&sim.RunOptions{Data: p}); err != nil {
			return err
		}
	}
	return nil
}

// PinTable attaches the dump_talkers iterator to the table and pins it
// at PinPath; the pin holds the link once this returns.
func (c *Counter) PinTable(k *sim.Kernel) error {
	it, err := k.AttachIter(sim.IterOptions{Program: c.coll.Programs["dump_talkers"], Map: c.coll.Maps["talkers"]})
	if err != nil {
		return err
	}
	defer it.Close()
	return it.Pin(PinPath)
}

// ListMaps reads the list_maps iterator to its end.
func (c *Counter) ListMaps(k *sim.Kernel) (string, error) {
	it, err := k.AttachIter(sim.IterOptions{Program: c.coll.Programs["list_maps"]})
	if err != nil {
		return "", err
	}
	defer it.Close()
	r, err := it.Open()
	if err != nil {
		return "", err
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	return string(b), err
}

// Cat reads a pinned iterator to its end, as cat does.
func Cat(k *sim.Kernel, path string) (string, error) {
	r, err := k.OpenPinnedIter(path)
	if err != nil {
		return "", err
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	return string(b), err
}

func main() {
	packets := flag.Int("packets", 10000, "packets to send")
	seed := flag.Uint64("seed", 1, "seed of the traffic mix")
	flag.Parse()
	if err := run(os.Stdout, *packets, *seed); err != nil {
		fmt.Fprintln(os.Stderr, "topflows:", err)
		os.Exit(1)
	}
}

func run(w io.Writer, packets int, seed uint64) error {
	k, err := sim.NewKernel(nil)
	if err != nil {
		return err
	}
	c, err := Load(k)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Count(Traffic(packets, seed)); err != nil {
		return err
	}
	fmt.Fprintf(w, "%d packets counted by the XDP program in the hash map talkers.\n\n", packets)
	if err := c.PinTable(k); err != nil {
		return err
	}
	table, err := Cat(k, PinPath)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "$ cat %s    # the dump_talkers iterator, run while the file is read\n%s\n", PinPath, table)
	maps, err := c.ListMaps(k)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "The kernel's maps, by the list_maps iterator:\n%s", maps)
	return nil
}
