package kdiff_test

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bpfsim/bpfsim/sim/kdiff"
)

// The verdict corpus (verdict.go): the kernel's verdict on every program is
// in testdata/verdicts.txt, regenerated with
//
//	go test ./sim/kdiff -run TestVerdicts -update-verdicts
//
// and TestVerdicts/bpfsim holds bpfsim's verifier to it on any machine.
var (
	updateVerdicts = flag.Bool("update-verdicts", false, "regenerate "+verdictGolden+" with this machine's kernel")
	showVerdict    = flag.Int64("verdict-seed", -1, "TestVerdictShow: print this seed's program and both verdicts")
)

const verdictGolden = "testdata/verdicts.txt"

// What the verifier must reach on the corpus.
const (
	minVerdictCorpus           = 5000 // programs
	minKernelRejectedPercent   = 25.0 // of the corpus, so that rejecting is tested
	minVerdictAgreementPercent = 97.0 // same accept/reject as the kernel
	maxUnsafeAccepts           = 0    // programs the kernel rejects for memory safety that bpfsim loads
	shortVerdictCorpus         = 500  // the first seeds, with -short
	// maxKernelDriftPercent is how many kernel verdicts (accepted or not)
	// may differ from the golden file before the file must be
	// regenerated; changed messages alone are only reported.
	maxKernelDriftPercent = 0.5
)

func verdictCorpus(t *testing.T) []*kdiff.VerdictProgram {
	n := kdiff.VerdictCorpusSize
	if testing.Short() {
		n = shortVerdictCorpus
	}
	progs := make([]*kdiff.VerdictProgram, n)
	for i := range progs {
		progs[i] = kdiff.GenerateVerdict(uint64(i))
	}
	return progs
}

func TestVerdictGeneratorIsDeterministic(t *testing.T) {
	for _, seed := range []uint64{0, 1, 77, 4242} {
		a, b := kdiff.GenerateVerdict(seed), kdiff.GenerateVerdict(seed)
		if a.Class != b.Class || a.Fingerprint() != b.Fingerprint() {
			t.Fatalf("seed %d gave two programs: %s %s, %s %s", seed, a.Class, a.Fingerprint(), b.Class, b.Fingerprint())
		}
	}
	seen := map[string]uint64{}
	for seed := uint64(0); seed < 300; seed++ {
		fp := kdiff.GenerateVerdict(seed).Fingerprint()
		if prev, ok := seen[fp]; ok {
			t.Fatalf("seeds %d and %d gave the same program", prev, seed)
		}
		seen[fp] = seed
	}
}

func TestVerdicts(t *testing.T) {
	progs := verdictCorpus(t)
	if *updateVerdicts {
		if testing.Short() {
			t.Fatal("-update-verdicts regenerates the whole corpus: run it without -short")
		}
		writeVerdictGolden(t, progs)
	}
	golden := readVerdictGolden(t, progs)
	t.Run("kernel", func(t *testing.T) {
		if *updateVerdicts {
			t.Skip("the golden file was just written from this kernel")
		}
		kernelStillAgrees(t, progs, golden)
	})
	t.Run("bpfsim", func(t *testing.T) { bpfsimAgrees(t, progs, golden) })
}

func kernelRelease() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

func writeVerdictGolden(t *testing.T, progs []*kdiff.VerdictProgram) {
	k, err := kdiff.OpenKernel()
	if err != nil {
		t.Fatalf("-update-verdicts needs a kernel that loads BPF programs: %v", err)
	}
	start := time.Now()
	recs := make([]kdiff.VerdictRecord, len(progs))
	for i, v := range kernelVerdicts(k, progs) {
		p := progs[i]
		if v.MapFailed {
			t.Fatalf("seed %d (%s): the program never reached the verifier: %s", p.Seed, p.Class, v.Message)
		}
		if !v.Accepted && v.LogErrno != v.Errno && v.LogErrno != syscall.ENOSPC {
			t.Logf("seed %d: loaded again with a log, the kernel said %v, not %v", p.Seed, v.LogErrno, v.Errno)
		}
		recs[i] = kdiff.VerdictRecord{Seed: p.Seed, Class: p.Class, Fingerprint: p.Fingerprint(), Kernel: v}
	}
	var buf bytes.Buffer
	header := []string{
		fmt.Sprintf("The kernel's verdicts on the verdict corpus: kdiff.GenerateVerdict, seeds 0 to %d.", len(progs)-1),
		"Regenerate: go test ./sim/kdiff -run TestVerdicts -update-verdicts",
		fmt.Sprintf("Kernel: Linux %s, programs loaded as root.", kernelRelease()),
		"Columns: seed, class (family/variant@site), the kernel's verdict (accepted or the errno),",
		"the program's fingerprint, the verifier log's last message.",
	}
	if err := kdiff.WriteVerdictRecords(&buf, header, recs); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(verdictGolden, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s: %d kernel verdicts in %v", verdictGolden, len(recs), time.Since(start).Round(time.Millisecond))
}

// kernelVerdicts loads the programs in the kernel, on every CPU at once:
// the verifier's time is most of the test's.
func kernelVerdicts(k *kdiff.Kernel, progs []*kdiff.VerdictProgram) []kdiff.Verdict {
	out := make([]kdiff.Verdict, len(progs))
	next := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < runtime.NumCPU(); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				out[i] = k.Verdict(progs[i])
			}
		}()
	}
	for i := range progs {
		next <- i
	}
	close(next)
	wg.Wait()
	return out
}

// readVerdictGolden reads the golden file and checks it describes the
// programs the generator makes today.
func readVerdictGolden(t *testing.T, progs []*kdiff.VerdictProgram) []kdiff.VerdictRecord {
	f, err := os.Open(verdictGolden)
	if err != nil {
		t.Fatalf("%v: generate it with go test ./sim/kdiff -run TestVerdicts -update-verdicts", err)
	}
	defer f.Close()
	recs, err := kdiff.ReadVerdictRecords(f)
	if err != nil {
		t.Fatalf("%s: %v", verdictGolden, err)
	}
	if len(recs) < len(progs) {
		t.Fatalf("%s has %d programs, the corpus %d: regenerate it (-update-verdicts)", verdictGolden, len(recs), len(progs))
	}
	recs = recs[:len(progs)]
	var stale []string
	for i, p := range progs {
		r := recs[i]
		if r.Seed != p.Seed || r.Class != p.Class || r.Fingerprint != p.Fingerprint() {
			stale = append(stale, fmt.Sprint(p.Seed))
		}
	}
	if n := len(stale); n > 0 {
		if n > 10 {
			stale = append(stale[:10], "...")
		}
		t.Fatalf("%s is stale: %d programs differ from what GenerateVerdict makes now (seeds %s); "+
			"regenerate it on a machine that loads BPF programs (-update-verdicts)", verdictGolden, n, strings.Join(stale, " "))
	}
	return recs
}

// kernelStillAgrees loads the corpus in this machine's kernel, when it
// can, and reports where the verdicts drifted from the golden file.
func kernelStillAgrees(t *testing.T, progs []*kdiff.VerdictProgram, golden []kdiff.VerdictRecord) {
	k, err := kdiff.OpenKernel()
	if err != nil {
		t.Skipf("not comparing with this machine's kernel: it cannot load BPF programs here: %v", err)
	}
	start := time.Now()
	verdictDrift, errnoDrift, messageDrift := 0, 0, 0
	for i, v := range kernelVerdicts(k, progs) {
		p, g := progs[i], golden[i].Kernel
		switch {
		case v.Accepted != g.Accepted:
			verdictDrift++
			t.Logf("seed %d (%s): the golden file says %s %q, this kernel %s %q", p.Seed, p.Class, g, g.Message, v, v.Message)
		case v.Errno != g.Errno:
			errnoDrift++
			t.Logf("seed %d (%s): errno was %s, is %s (%q)", p.Seed, p.Class, g, v, v.Message)
		case v.Message != g.Message:
			messageDrift++
			if messageDrift <= 10 {
				t.Logf("seed %d (%s): message was %q, is %q", p.Seed, p.Class, g.Message, v.Message)
			}
		}
	}
	t.Logf("this kernel (Linux %s) on %d programs in %v: %d verdicts, %d errnos and %d messages differ from %s",
		kernelRelease(), len(progs), time.Since(start).Round(time.Millisecond), verdictDrift, errnoDrift, messageDrift, verdictGolden)
	if float64(verdictDrift) > float64(len(progs))*maxKernelDriftPercent/100 {
		t.Errorf("%d kernel verdicts changed: regenerate %s (-update-verdicts) and look at what the kernel changed", verdictDrift, verdictGolden)
	}
}

// verdictStats is the comparison of bpfsim's verdicts with the kernel's.
type verdictStats struct {
	n                    int
	kAccSAcc, kAccSRej   int // kernel accepted; bpfsim accepted / rejected
	kRejSAcc, kRejSRej   int // kernel rejected; bpfsim accepted / rejected
	sameErrno, sameMsg   int // among programs both rejected
	unsafe               []string
	simMapFailed         int
	families             map[string]*familyStats
	disagreements        map[string]*disagreement
	errnoDiffs, msgDiffs map[string]*disagreement // among programs both reject
	intendedInvalid      int
	intendedButAccepted  map[string]int // intended-invalid classes the kernel accepted
	intendedButRejected  map[string]int // intended-valid classes the kernel rejected
	kernelRejectedErrnos map[string]int
}

type familyStats struct{ n, kernelRejected, agree int }

type disagreement struct {
	count          int
	seed           uint64
	kernel, bpfsim kdiff.Verdict
}

func bpfsimAgrees(t *testing.T, progs []*kdiff.VerdictProgram, golden []kdiff.VerdictRecord) {
	s, err := kdiff.NewSim()
	if err != nil {
		t.Fatal(err)
	}
	st := &verdictStats{families: map[string]*familyStats{}, disagreements: map[string]*disagreement{},
		errnoDiffs: map[string]*disagreement{}, msgDiffs: map[string]*disagreement{},
		intendedButAccepted: map[string]int{}, intendedButRejected: map[string]int{}, kernelRejectedErrnos: map[string]int{}}
	start := time.Now()
	for i, p := range progs {
		st.add(p, golden[i].Kernel, s.Verdict(p))
	}
	st.report(t, time.Since(start))
	if !testing.Short() && st.n < minVerdictCorpus {
		t.Errorf("the corpus has %d programs, want at least %d", st.n, minVerdictCorpus)
	}
	if rej := pct(st.kRejSAcc+st.kRejSRej, st.n); rej < minKernelRejectedPercent {
		t.Errorf("the kernel rejects %.1f%% of the corpus, want at least %.0f%%: the corpus tests too little rejection", rej, minKernelRejectedPercent)
	}
	if len(st.unsafe) > maxUnsafeAccepts {
		ex := st.unsafe
		if len(ex) > 10 {
			ex = append(ex[:10:10], "...")
		}
		t.Errorf("bpfsim loads %d programs the kernel rejects as unsafe, want %d: %s", len(st.unsafe), maxUnsafeAccepts, strings.Join(ex, "; "))
	}
	if agree := pct(st.kAccSAcc+st.kRejSRej, st.n); agree < minVerdictAgreementPercent {
		t.Errorf("bpfsim agrees with the kernel on %.2f%% of the corpus, want at least %.0f%%", agree, minVerdictAgreementPercent)
	}
}

func pct(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return 100 * float64(a) / float64(b)
}

func baseClass(class string) string {
	c, _, _ := strings.Cut(class, "@")
	return c
}

func (st *verdictStats) add(p *kdiff.VerdictProgram, k, s kdiff.Verdict) {
	st.n++
	fam := st.families[p.Family()]
	if fam == nil {
		fam = &familyStats{}
		st.families[p.Family()] = fam
	}
	fam.n++
	if !p.IntendedValid() {
		st.intendedInvalid++
		if k.Accepted {
			st.intendedButAccepted[baseClass(p.Class)]++
		}
	} else if !k.Accepted {
		st.intendedButRejected[baseClass(p.Class)]++
	}
	if !k.Accepted {
		fam.kernelRejected++
		st.kernelRejectedErrnos[k.String()]++
	}
	if s.MapFailed {
		st.simMapFailed++
	}
	sAcc := s.Accepted
	switch {
	case k.Accepted && sAcc:
		st.kAccSAcc++
	case k.Accepted:
		st.kAccSRej++
	case sAcc:
		st.kRejSAcc++
	default:
		st.kRejSRej++
		if s.Errno == k.Errno {
			st.sameErrno++
		} else {
			note(st.errnoDiffs, baseClass(p.Class), p.Seed, k, s)
		}
		if k.Message != "" && strings.HasSuffix(s.Message, k.Message) {
			st.sameMsg++
		} else {
			note(st.msgDiffs, baseClass(p.Class), p.Seed, k, s)
		}
	}
	if k.Accepted == sAcc {
		fam.agree++
		return
	}
	// The kernel's EACCES is the verifier refusing an unsafe access; its
	// EINVAL is that too in the memory-safety families.
	unsafe := !k.Accepted && (k.Errno == syscall.EACCES || kdiff.IsSafetyFamily(p.Family()))
	if unsafe {
		st.unsafe = append(st.unsafe, fmt.Sprintf("seed %d %s (kernel: %s)", p.Seed, p.Class, k.Message))
	}
	key := baseClass(p.Class)
	if k.Accepted {
		key = "over-strict " + key
	} else if unsafe {
		key = "UNSAFE " + key
	} else {
		key = "lenient " + key
	}
	note(st.disagreements, key, p.Seed, k, s)
}

// note counts a difference of class key, keeping the first as the example.
func note(m map[string]*disagreement, key string, seed uint64, k, s kdiff.Verdict) {
	d := m[key]
	if d == nil {
		d = &disagreement{seed: seed, kernel: k, bpfsim: s}
		m[key] = d
	}
	d.count++
}

func (st *verdictStats) report(t *testing.T, took time.Duration) {
	kRej := st.kRejSAcc + st.kRejSRej
	t.Logf("%d programs (%d built to be rejected, %.1f%%), loaded on bpfsim in %v",
		st.n, st.intendedInvalid, pct(st.intendedInvalid, st.n), took.Round(time.Millisecond))
	t.Logf("confusion matrix:          bpfsim accepts  bpfsim rejects")
	t.Logf("  kernel accepts %6d      %6d          %6d", st.kAccSAcc+st.kAccSRej, st.kAccSAcc, st.kAccSRej)
	t.Logf("  kernel rejects %6d      %6d          %6d", kRej, st.kRejSAcc, st.kRejSRej)
	t.Logf("agreement %.2f%% (want >= %.0f%%); kernel rejects %.1f%% (want >= %.0f%%); unsafe accepts %d (want <= %d)",
		pct(st.kAccSAcc+st.kRejSRej, st.n), minVerdictAgreementPercent, pct(kRej, st.n), minKernelRejectedPercent, len(st.unsafe), maxUnsafeAccepts)
	t.Logf("among the %d programs both reject: same errno %d (%.1f%%), same message %d (%.1f%%); bpfsim failed to create maps for %d",
		st.kRejSRej, st.sameErrno, pct(st.sameErrno, st.kRejSRej), st.sameMsg, pct(st.sameMsg, st.kRejSRej), st.simMapFailed)
	t.Logf("kernel errnos: %s", countsString(st.kernelRejectedErrnos))
	if len(st.intendedButAccepted)+len(st.intendedButRejected) > 0 {
		t.Logf("labels the kernel overruled: built to be rejected but accepted %s; built to be accepted but rejected %s",
			countsString(st.intendedButAccepted), countsString(st.intendedButRejected))
	}
	var fams []string
	for f := range st.families {
		fams = append(fams, f)
	}
	sort.Strings(fams)
	t.Logf("%-20s %6s %16s %16s", "family", "progs", "kernel rejects", "bpfsim agrees")
	for _, f := range fams {
		fs := st.families[f]
		t.Logf("%-20s %6d %8d %6.1f%% %8d %6.1f%%", f, fs.n, fs.kernelRejected, pct(fs.kernelRejected, fs.n), fs.agree, pct(fs.agree, fs.n))
	}
	logDifferences(t, "disagreements (class: count, example seed, kernel vs bpfsim)", st.disagreements, 25)
	logDifferences(t, "errnos differ where both reject", st.errnoDiffs, 10)
	logDifferences(t, "messages differ where both reject", st.msgDiffs, 15)
}

// logDifferences logs the most frequent classes of a kind of difference.
func logDifferences(t *testing.T, title string, m map[string]*disagreement, top int) {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := m[keys[i]], m[keys[j]]
		if a.count != b.count {
			return a.count > b.count
		}
		return keys[i] < keys[j]
	})
	if len(keys) > 0 {
		t.Logf("%s:", title)
	}
	for i, k := range keys {
		if i == top {
			t.Logf("  ... and %d more classes", len(keys)-i)
			break
		}
		d := m[k]
		t.Logf("  %-50s %5d  seed %-5d kernel %s %q | bpfsim %s %q", k, d.count, d.seed, d.kernel, d.kernel.Message, d.bpfsim, d.bpfsim.Message)
	}
}

func countsString(m map[string]int) string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// TestVerdictShow prints one program of the corpus with its verdicts:
// go test ./sim/kdiff -run TestVerdictShow -verdict-seed 123 -v
func TestVerdictShow(t *testing.T) {
	if *showVerdict < 0 {
		t.Skip("pass -verdict-seed N to print program N of the verdict corpus")
	}
	p := kdiff.GenerateVerdict(uint64(*showVerdict))
	t.Logf("seed %d: %s, fingerprint %s, %d maps\n%s", p.Seed, p.Class, p.Fingerprint(), len(p.Maps), kdiff.Listing(p.Spec))
	if p.Patch != nil {
		t.Logf("(the program is patched after encoding: the listing above is before the patch)")
	}
	s, err := kdiff.NewSim()
	if err != nil {
		t.Fatal(err)
	}
	v := s.Verdict(p)
	t.Logf("bpfsim: %s %q", v, v.Message)
	if k, err := kdiff.OpenKernel(); err == nil {
		v := k.Verdict(p)
		t.Logf("kernel: %s %q", v, v.Message)
	}
}
