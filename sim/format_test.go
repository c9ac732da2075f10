package sim_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
)

// formatResult is struct result of testdata/format.bpf.c.
type formatResult struct {
	Ret int64
	Out [64]byte
}

func (r formatResult) String() string {
	out := r.Out[:]
	if i := bytes.IndexByte(out, 0); i >= 0 {
		out = out[:i]
	}
	return fmt.Sprintf("%d %q", r.Ret, out)
}

const formatResults = 13

// formatResultsOf reads the results of testdata/format.bpf.o's run.
func formatResultsOf(t *testing.T, lookup func(key uint32, r *formatResult) error) []string {
	t.Helper()
	var out []string
	for i := uint32(0); i < formatResults; i++ {
		var r formatResult
		if err := lookup(i, &r); err != nil {
			t.Fatal(err)
		}
		out = append(out, r.String())
	}
	return out
}

func runFormatInSim(t *testing.T, k *sim.Kernel) []string {
	t.Helper()
	spec, err := ebpf.LoadCollectionSpec("testdata/format.bpf.o")
	if err != nil {
		t.Fatal(err)
	}
	coll, err := k.NewCollection(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer coll.Close()
	if _, err := coll.Programs["format"].Test(&sim.RunOptions{Data: make([]byte, 64)}); err != nil {
		t.Fatal(err)
	}
	return formatResultsOf(t, func(key uint32, r *formatResult) error { return coll.Maps["results"].Lookup(key, r) })
}

func TestSnprintfAndTraceVprintkFormat(t *testing.T) {
	k := newKernel(t, nil)
	got := runFormatInSim(t, k)
	for i, want := range []string{
		`19 "-5 7 beef BEEF -1|"`,
		`53 "-1234567890123 18446744073709551615 deadbeefcafe -2|"`,
		`30 "[hello] [   hello] [hello   ]"`,
		`27 "truncat"`,
		`66 "192.0.2.1 192.000.002.001 2001:0db8:0000:0000:0000:0000:0000:00"`,
		`25 "000000ab|42   |+7| 7|z|%"`,
		`15 "bad pointer []"`,
		`33 "20010db8000000000000000000000001"`,
		`17 ""`,
		`15 ""`,
		`22 ""`,
		`39 ""`,
		`24 "[192.0.2.1] [192.0.2.1]"`,
	} {
		if got[i] != want {
			t.Errorf("result %d: %s, want %s", i, got[i], want)
		}
	}
	msgs := strings.Join(k.Trace().Messages(), "\n")
	for _, want := range []string{"five: 1 2 3 4 5", "twelve 123456789101112", "a string hello and an address 192.0.2.1"} {
		if !strings.Contains(msgs, want) {
			t.Errorf("trace buffer lacks %q:\n%s", want, msgs)
		}
	}
}

// bpf_snprintf's verifier check of its format: a conversion it does not
// know, or more conversions than arguments, is refused at load.
func TestSnprintfFormatIsCheckedAtLoad(t *testing.T) {
	for _, tc := range []struct {
		format string
		nargs  int
		ok     bool
	}{
		{"%d %s", 2, true},
		{"%d %s", 1, false},
		{"%q", 1, false},
		{"%pK", 1, true},
		{"%pZ", 1, false},
		{"%llld", 1, false},
		{"no conversion", 0, true},
		{"100%%", 0, true},
	} {
		err := sim.CheckFormatForTest(tc.format, tc.nargs)
		if (err == nil) != tc.ok {
			t.Errorf("%q with %d arguments: %v, want ok=%v", tc.format, tc.nargs, err, tc.ok)
		}
	}
}
