package maglev

// Golden data from Cilium itself.
//
// testdata/cilium.json was written by testdata/gen/main.go, a program that
// runs Cilium's own pkg/maglev (GetLookupTable) and pkg/murmur3 from
// github.com/cilium/cilium v1.20.1. It is kept out of this module (it needs
// all of Cilium); to regenerate, in a scratch directory outside the repo:
//
//	mkdir /tmp/maglevref && cd /tmp/maglevref
//	cp -r <repo>/examples/maglev/maglev/testdata/gen . && cp gen/go.mod.txt go.mod
//	go mod edit -replace github.com/bpfsim/bpfsim=<repo> && go mod tidy
//	go run ./gen > <repo>/examples/maglev/maglev/testdata/cilium.json
//
// The same directory holds bench_test.go, which runs this package's Table
// and Cilium's GetLookupTable side by side (go test -bench . ./gen) and
// checks that they agree.
//
// It holds, per case, the SHA-256 of Cilium's table (ids as little-endian
// u32s) and, for M ≤ 251, the table itself; the case's backends are expanded
// from its parameters by the rule in ciliumBackend, the same as gen's
// backend(), and backends_sha256 checks that both sides expanded the same
// backends.

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"testing"

	"github.com/twmb/murmur3"
)

type ciliumCase struct {
	Name        string   `json:"name"`
	M           uint32   `json:"m"`
	N           int      `json:"n"`
	Family      string   `json:"family"`
	Proto       string   `json:"proto"`
	Weights     string   `json:"weights"`
	Seed        string   `json:"seed"`
	BackendsSHA string   `json:"backends_sha256"`
	TableSHA    string   `json:"table_sha256"`
	Table       []uint32 `json:"table"`
}

type ciliumGolden struct {
	Source string `json:"source"`
	Murmur []struct {
		Len  int    `json:"len"`
		Seed uint32 `json:"seed"`
		H1   string `json:"h1"`
		H2   string `json:"h2"`
	} `json:"murmur"`
	Cases []ciliumCase `json:"cases"`
}

func loadCiliumGolden(t *testing.T) ciliumGolden {
	t.Helper()
	b, err := os.ReadFile("testdata/cilium.json")
	if err != nil {
		t.Fatal(err)
	}
	var g ciliumGolden
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	if len(g.Murmur) == 0 || len(g.Cases) == 0 {
		t.Fatal("testdata/cilium.json holds no data")
	}
	return g
}

// ciliumBackend is backend i of a golden case, by gen's rule. The weight
// Cilium was given is returned too: for "default" we pass 0 on even i
// (meaning DefaultWeight) where Cilium got 100.
func ciliumBackend(c ciliumCase, i int) (b Backend, ciliumWeight uint16) {
	v4 := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
	v6 := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 12: byte(i >> 24), 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)})
	v4in6 := netip.AddrFrom16(v4.As16())
	switch c.Family {
	case "4":
		b.Addr = v4
	case "6":
		b.Addr = v6
	default:
		b.Addr = []netip.Addr{v4, v6, v4in6}[i%3]
	}
	b.Port = uint16(1 + (i*7919)%65535)
	switch c.Proto {
	case "tcp":
		b.Proto = 6
	case "udp":
		b.Proto = 17
	default:
		b.Proto = []uint8{6, 17, 132}[i%3]
	}
	switch c.Weights {
	case "default":
		ciliumWeight = 100
		if i%2 == 1 {
			b.Weight = 100
		}
	case "mixed":
		ciliumWeight = []uint16{1, 10, 50, 100, 200, 1000, 65535}[i%7]
		b.Weight = ciliumWeight
	case "ones":
		ciliumWeight, b.Weight = 1, 1
	case "onetwo":
		ciliumWeight = uint16(1 + i%2)
		b.Weight = ciliumWeight
	default: // "onethree"
		ciliumWeight = uint16(1 + 2*(i%2))
		b.Weight = ciliumWeight
	}
	b.ID = uint32(1 + 13*i)
	return b, ciliumWeight
}

func tableSHA(tbl []uint32) string {
	h := sha256.New()
	var buf [4]byte
	for _, id := range tbl {
		binary.LittleEndian.PutUint32(buf[:], id)
		h.Write(buf[:])
	}
	return hex.EncodeToString(h.Sum(nil))
}

func TestMurmurMatchesCiliumMurmur3(t *testing.T) {
	g := loadCiliumGolden(t)
	for _, m := range g.Murmur {
		data := make([]byte, m.Len)
		for j := range data {
			data[j] = byte(j*31 + m.Len)
		}
		h1, h2 := murmur3.SeedStringSum128(uint64(m.Seed), uint64(m.Seed), string(data))
		if got1, got2 := fmt.Sprintf("%016x", h1), fmt.Sprintf("%016x", h2); got1 != m.H1 || got2 != m.H2 {
			t.Errorf("len %d seed %#x: got %s %s, Cilium %s %s", m.Len, m.Seed, got1, got2, m.H1, m.H2)
		}
	}
}

// TestMurmurSMHasherVerification runs smhasher's VerificationTest for
// MurmurHash3_x64_128 (expected 0x6384BA69): hash the keys {}, {0}, {0,1},
// … {0..254} with seed 256−len, hash the concatenated 16-byte results with
// seed 0 and take the first four bytes, little-endian.
func TestMurmurSMHasherVerification(t *testing.T) {
	key := make([]byte, 256)
	hashes := make([]byte, 0, 256*16)
	for i := range 256 {
		key[i] = byte(i)
		h1, h2 := murmur3.SeedStringSum128(uint64(256-i), uint64(256-i), string(key[:i]))
		hashes = binary.LittleEndian.AppendUint64(hashes, h1)
		hashes = binary.LittleEndian.AppendUint64(hashes, h2)
	}
	h1, _ := murmur3.SeedStringSum128(0, 0, string(hashes))
	if got := uint32(h1); got != 0x6384BA69 {
		t.Fatalf("verification value %#x, want 0x6384ba69", got)
	}
}

func TestTableMatchesCilium(t *testing.T) {
	g := loadCiliumGolden(t)
	t.Logf("%d cases from %s", len(g.Cases), g.Source)
	rng := rand.New(rand.NewPCG(1, 2))
	for _, c := range g.Cases {
		if testing.Short() && c.M > 16381 && c.N > 100 {
			continue
		}
		t.Run(c.Name, func(t *testing.T) {
			bs := make([]Backend, c.N)
			h := sha256.New()
			for i := range bs {
				var w uint16
				bs[i], w = ciliumBackend(c, i)
				proto := protoName(bs[i].Proto)
				fmt.Fprintf(h, "%s %d %s %d %d\n", bs[i].Addr, bs[i].Port, proto, w, bs[i].ID)
			}
			if got := hex.EncodeToString(h.Sum(nil)); got != c.BackendsSHA {
				t.Fatalf("backends expand differently from the generator's: sha256 %s, want %s", got, c.BackendsSHA)
			}
			// The input order must not matter: Table sorts by hash string.
			rng.Shuffle(len(bs), func(i, j int) { bs[i], bs[j] = bs[j], bs[i] })
			seeds, err := ParseSeed(c.Seed)
			if err != nil {
				t.Fatal(err)
			}
			tbl, err := Table(bs, c.M, seeds)
			if err != nil {
				t.Fatal(err)
			}
			if c.Table != nil {
				for i := range c.Table {
					if tbl[i] != c.Table[i] {
						t.Fatalf("slot %d: id %d, Cilium %d\n got %v\nwant %v", i, tbl[i], c.Table[i], tbl, c.Table)
					}
				}
			}
			if got := tableSHA(tbl); got != c.TableSHA {
				t.Fatalf("table sha256 %s, Cilium's %s", got, c.TableSHA)
			}
		})
	}
}
