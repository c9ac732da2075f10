// Command gen writes the golden data of
// github.com/bpfsim/bpfsim/examples/maglev/maglev (testdata/cilium.json):
// Maglev tables computed by Cilium's own pkg/maglev (cilium v1.20.1) and
// MurmurHash3_x64_128 values from Cilium's pkg/murmur3.
//
// Run it in a throwaway module outside the repository:
//
//	mkdir /tmp/maglevref && cp -r <repo>/examples/maglev/maglev/testdata/gen /tmp/maglevref/
//	cd /tmp/maglevref && cp gen/go.mod.txt go.mod
//	go mod edit -replace github.com/bpfsim/bpfsim=<repo> && go mod tidy
//	go run ./gen > <repo>/examples/maglev/maglev/testdata/cilium.json
//
// bench_test.go beside it compares the speed of both implementations
// (go test -bench . ./gen) and checks their tables agree.
//
// The backends of each case are expanded from its parameters by the rule in
// backend() below; maglev_cilium_test.go expands them by the same rule and
// checks the expansion with backends_sha256.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"

	"github.com/cilium/hive/cell"

	cmtypes "github.com/cilium/cilium/pkg/clustermesh/types"
	"github.com/cilium/cilium/pkg/loadbalancer"
	"github.com/cilium/cilium/pkg/maglev"
	"github.com/cilium/cilium/pkg/murmur3"
)

type Case struct {
	Name        string   `json:"name"`
	M           uint32   `json:"m"`
	N           int      `json:"n"`
	Family      string   `json:"family"`  // "4", "6", "mixed"
	Proto       string   `json:"proto"`   // "tcp", "udp", "mixed"
	Weights     string   `json:"weights"` // "default", "mixed", "ones", "onetwo", "onethree"
	Seed        string   `json:"seed"`
	BackendsSHA string   `json:"backends_sha256"`
	TableSHA    string   `json:"table_sha256"`
	Table       []uint32 `json:"table,omitempty"`
}

type Murmur struct {
	Len  int    `json:"len"`
	Seed uint32 `json:"seed"`
	H1   string `json:"h1"`
	H2   string `json:"h2"`
}

type Golden struct {
	Source string   `json:"source"`
	Murmur []Murmur `json:"murmur"`
	Cases  []Case   `json:"cases"`
}

var (
	families = []string{"4", "6", "mixed"}
	protos   = []string{"tcp", "udp", "mixed"}
	weights  = []string{"default", "mixed", "ones", "onetwo", "onethree"}
	seeds    = []string{maglev.DefaultHashSeed, "AAAAAAAAAAAAAAAA", "3q2+796tvu/erb7v"}
)

// backend i of a case: address, port, protocol, weight (as Cilium gets
// it) and id.
func backend(c Case, i int) (netip.Addr, uint16, loadbalancer.L4Type, uint16, uint32) {
	v4 := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
	v6 := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 12: byte(i >> 24), 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)})
	v4in6 := netip.AddrFrom16(v4.As16())
	var addr netip.Addr
	switch c.Family {
	case "4":
		addr = v4
	case "6":
		addr = v6
	default:
		addr = []netip.Addr{v4, v6, v4in6}[i%3]
	}
	port := uint16(1 + (i*7919)%65535)
	var proto loadbalancer.L4Type
	switch c.Proto {
	case "tcp":
		proto = loadbalancer.TCP
	case "udp":
		proto = loadbalancer.UDP
	default:
		proto = []loadbalancer.L4Type{loadbalancer.TCP, loadbalancer.UDP, loadbalancer.SCTP}[i%3]
	}
	var w uint16
	switch c.Weights {
	case "default":
		w = 100
	case "mixed":
		w = []uint16{1, 10, 50, 100, 200, 1000, 65535}[i%7]
	case "ones":
		w = 1
	case "onetwo": // average weight 1: Cilium ignores the weights
		w = uint16(1 + i%2)
	default: // "onethree", average 2: Cilium uses them
		w = uint16(1 + 2*(i%2))
	}
	return addr, port, proto, w, uint32(1 + 13*i)
}

// table runs Cilium's GetLookupTable with table size m and hash seed seed.
func table(m uint32, seed string, infos []maglev.BackendInfo) []loadbalancer.BackendID {
	cfg, err := maglev.UserConfig{TableSize: maglev.DefaultTableSize, HashSeed: seed}.ToConfig()
	if err != nil {
		panic(err)
	}
	cfg.TableSize = uint(m) // any prime, past the flag's check
	lc := &cell.DefaultLifecycle{}
	ml := maglev.New(cfg, lc)
	log := slog.New(slog.DiscardHandler)
	if err := lc.Start(log, context.Background()); err != nil {
		panic(err)
	}
	defer lc.Stop(log, context.Background())
	return ml.GetLookupTable(slices.Values(infos))
}

func run(c Case) Case {
	infos := make([]maglev.BackendInfo, c.N)
	bh := sha256.New()
	for i := range infos {
		addr, port, proto, w, id := backend(c, i)
		fmt.Fprintf(bh, "%s %d %s %d %d\n", addr, port, proto, w, id)
		infos[i] = maglev.BackendInfo{
			ID:     loadbalancer.BackendID(id),
			Addr:   loadbalancer.NewL3n4Addr(proto, cmtypes.AddrClusterFrom(addr, 0), port, loadbalancer.ScopeExternal),
			Weight: w,
		}
	}
	c.BackendsSHA = hex.EncodeToString(bh.Sum(nil))
	tbl := table(c.M, c.Seed, infos)
	if len(tbl) != int(c.M) {
		panic("table length")
	}
	th := sha256.New()
	var buf [4]byte
	for _, id := range tbl {
		binary.LittleEndian.PutUint32(buf[:], uint32(id))
		th.Write(buf[:])
	}
	c.TableSHA = hex.EncodeToString(th.Sum(nil))
	if c.M <= 251 {
		c.Table = make([]uint32, len(tbl))
		for i, id := range tbl {
			c.Table[i] = uint32(id)
		}
	}
	return c
}

func main() {
	g := Golden{Source: "github.com/cilium/cilium v1.20.1 pkg/maglev GetLookupTable and pkg/murmur3 Hash128"}
	for _, seed := range []uint32{0, 1, 0x24b7ef9c, 0xffffffff} {
		for n := 0; n <= 100; n++ {
			data := make([]byte, n)
			for j := range data {
				data[j] = byte(j*31 + n)
			}
			h1, h2 := murmur3.Hash128(data, seed)
			g.Murmur = append(g.Murmur, Murmur{Len: n, Seed: seed, H1: fmt.Sprintf("%016x", h1), H2: fmt.Sprintf("%016x", h2)})
		}
	}
	sizes := []uint32{2, 3, 7, 13, 101, 251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 65537, 131071}
	for mi, m := range sizes {
		for ni, n := range []int{1, 3, 10, 100, 1000} {
			if uint32(n) > m {
				continue
			}
			for wi, w := range weights {
				c := Case{M: m, N: n, Weights: w,
					Family: families[(mi+ni+wi)%3],
					Proto:  protos[(mi+2*ni+wi)%3],
					Seed:   seeds[(mi+ni+2*wi)%3]}
				g.Cases = append(g.Cases, c)
			}
		}
	}
	// Every family, protocol, seed and weight scheme together, M=1021, N=10.
	for _, f := range families {
		for _, p := range protos {
			for _, s := range seeds {
				for _, w := range weights {
					g.Cases = append(g.Cases, Case{M: 1021, N: 10, Family: f, Proto: p, Seed: s, Weights: w})
				}
			}
		}
	}
	for i := range g.Cases {
		c := &g.Cases[i]
		c.Name = fmt.Sprintf("M=%d/N=%d/%s/%s/weights=%s/seed=%s", c.M, c.N, "v"+c.Family, c.Proto, c.Weights, c.Seed)
		*c = run(*c)
		fmt.Fprintln(os.Stderr, c.Name)
	}
	// One murmur value or case a line, so that diffs stay readable.
	line := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			panic(err)
		}
		return string(b)
	}
	fmt.Printf("{\"source\": %s,\n\"murmur\": [\n", line(g.Source))
	for i, m := range g.Murmur {
		fmt.Print(line(m))
		if i < len(g.Murmur)-1 {
			fmt.Print(",")
		}
		fmt.Println()
	}
	fmt.Print("],\n\"cases\": [\n")
	for i, c := range g.Cases {
		fmt.Print(line(c))
		if i < len(g.Cases)-1 {
			fmt.Print(",")
		}
		fmt.Println()
	}
	fmt.Println("]}")
}
