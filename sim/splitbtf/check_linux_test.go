//go:build linux

package splitbtf

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// kernelVerdict is the kernel's verdict on raw BTF (BPF_BTF_LOAD): its errno
// (0 when it took the BTF) and its verifier log.
type kernelVerdict struct {
	errno unix.Errno
	log   []string
}

// kernelLoad loads raw into the kernel (and closes it) for its verdict.
func kernelLoad(raw []byte) (kernelVerdict, error) {
	h, err := btf.NewHandleFromRawBTF(raw)
	if err == nil {
		h.Close()
		return kernelVerdict{}, nil
	}
	var v kernelVerdict
	if !errors.As(err, &v.errno) {
		return v, err
	}
	// The log is in the exported field Log of cilium/ebpf's (internal)
	// VerifierError.
	if rv := reflect.ValueOf(err); rv.Kind() == reflect.Pointer && rv.Elem().Kind() == reflect.Struct {
		if f := rv.Elem().FieldByName("Log"); f.IsValid() {
			v.log, _ = f.Interface().([]string)
		}
	}
	return v, nil
}

var kernelBTF struct {
	once sync.Once
	err  error
}

// needKernelBTF skips the test unless this machine's kernel loads BTF
// for this process.
func needKernelBTF(t testing.TB) {
	kernelBTF.once.Do(func() {
		b := NewBase()
		id := b.AddType(Type{Info: Info(KindInt, false, 0), SizeType: 4, Data: []uint32{32}})
		b.AddType(Type{Info: Info(KindPointer, false, 0), SizeType: id})
		v, err := kernelLoad(b.Raw())
		switch {
		case err != nil:
			kernelBTF.err = err
		case v.errno != 0:
			kernelBTF.err = fmt.Errorf("BPF_BTF_LOAD of a valid blob: %v %q", v.errno, v.log)
		}
	})
	if err := kernelBTF.err; err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
			t.Skipf("BPF_BTF_LOAD not permitted (needs CAP_BPF or root): %v", err)
		}
		t.Skipf("this kernel loads no BTF: %v", err)
	}
}

var logID = regexp.MustCompile(`^\[(\d+)\] `)

// sameMessage reports whether Check's error message is the last line of
// the kernel's log: its text (after the type's id) is in that line, and
// the id is that of the type the line (or the one before a member's
// line) logs.
func sameMessage(msg string, log []string) bool {
	if len(log) == 0 {
		return false
	}
	id := ""
	if m := logID.FindStringSubmatch(msg); m != nil {
		id, msg = m[1], msg[len(m[0]):]
	}
	last := log[len(log)-1]
	if !strings.Contains(last, msg) {
		return false
	}
	if id == "" {
		return true
	}
	for i := len(log) - 1; i >= 0; i-- {
		if m := logID.FindStringSubmatch(log[i]); m != nil {
			return m[1] == id
		}
	}
	return false
}

// TestCheckIsTheKernels compares Check with this machine's kernel on
// thousands of blobs: random valid BTF of every kind, and the same with
// one field changed (a name, kind_flag, vlen, reserved info bits, the
// kind, the size or type, a member's or parameter's word) or its framing
// (version, flags, header length, sections). The verdicts and errnos must
// all agree; the log tells how often the messages do.
func TestCheckIsTheKernels(t *testing.T) {
	needKernelBTF(t)
	n := 20000
	if testing.Short() {
		n = 2000
	}
	if s := os.Getenv("BPFSIM_CHECK_BLOBS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	var accepted, refused, parseRefused, msgSame, checkRefused, checkMsgSame, fails int
	byMsg := map[string][2]int{} // kernel message: Check refusals with the same message, all
	for seed := int64(0); seed < int64(n); seed++ {
		g := newBTFGen(seed)
		g.build()
		what := "valid"
		var raw []byte
		switch r := seed % 10; {
		case r == 0:
			raw = g.b.Raw()
		case r == 1:
			raw, what = g.mutateRaw(g.b.Raw())
		default:
			what = g.mutate()
			if r >= 8 {
				what = g.mutateAgain(what)
			}
			raw = g.b.Raw()
		}
		kv, err := kernelLoad(raw)
		if err != nil {
			t.Fatalf("seed %d: BPF_BTF_LOAD: %v", seed, err)
		}
		fromCheck := false
		p, err := Parse(raw, nil)
		if err == nil {
			fromCheck = true
			err = p.Check()
		}
		var errno unix.Errno
		if err != nil && !errors.As(err, &errno) {
			t.Fatalf("seed %d (%s): an error without an errno: %v", seed, what, err)
		}
		if errno != kv.errno {
			fails++
			if fails <= 10 {
				last := ""
				if len(kv.log) > 0 {
					last = kv.log[len(kv.log)-1]
				}
				t.Errorf("seed %d (%s): kernel: %d (%v) %q; bpfsim: %v", seed, what, kv.errno, kv.errno, last, err)
				if p != nil {
					var sb strings.Builder
					p.Dump(&sb)
					t.Logf("%s", sb.String())
				}
			}
			continue
		}
		if err == nil {
			accepted++
			continue
		}
		if what == "valid" {
			t.Errorf("seed %d: the generator made BTF the kernel refuses: %v", seed, err)
		}
		refused++
		msg := strings.TrimSuffix(err.Error(), ": "+errno.Error())
		same := sameMessage(msg, kv.log)
		if same {
			msgSame++
		}
		if !fromCheck {
			parseRefused++
			continue
		}
		checkRefused++
		key := regexp.MustCompile(`:[0-9a-f]+$|\d+`).ReplaceAllString(logID.ReplaceAllString(msg, ""), "N")
		c := byMsg[key]
		c[1]++
		if same {
			checkMsgSame++
			c[0]++
		} else if c[1]-c[0] == 1 {
			t.Logf("message differs, seed %d (%s): kernel %q; bpfsim %q", seed, what, kv.log[max(0, len(kv.log)-2):], msg)
		}
		byMsg[key] = c
	}
	t.Logf("%d blobs: %d accepted, %d refused (%d by Parse, %d by Check); verdict and errno disagree on %d",
		n, accepted, refused, parseRefused, checkRefused, fails)
	t.Logf("messages: the kernel's last log line is Check's on %d of %d Check refusals, %d of all %d refusals",
		checkMsgSame, checkRefused, msgSame, refused)
	if checkMsgSame != checkRefused {
		// Parse's refusals have wordings of their own; Check's are the
		// kernel's.
		t.Errorf("Check's message is not the kernel's on %d of its %d refusals", checkRefused-checkMsgSame, checkRefused)
	}
	keys := make([]string, 0, len(byMsg))
	for k := range byMsg {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		t.Logf("  %4d/%4d  %s", byMsg[k][0], byMsg[k][1], k)
	}
}

// TestCheckCasesAreTheKernels runs the cases of TestCheck through this
// machine's kernel: the same verdicts and errnos, and, where Check refuses
// a blob, the message the kernel's log ends with.
func TestCheckCasesAreTheKernels(t *testing.T) {
	needKernelBTF(t)
	for _, c := range checkCases {
		t.Run(c.name, func(t *testing.T) {
			raw, err := runCheckCase(t, c)
			kv, kerr := kernelLoad(raw)
			if kerr != nil {
				t.Fatal(kerr)
			}
			var errno unix.Errno
			errors.As(err, &errno)
			if errno != kv.errno {
				t.Fatalf("kernel: %v %q; bpfsim: %v", kv.errno, kv.log, err)
			}
			if err == nil || strings.HasPrefix(err.Error(), "unsupported BTF") || strings.Contains(err.Error(), "unknown non-zero") {
				return // Parse's own words
			}
			if msg := strings.TrimSuffix(err.Error(), ": "+errno.Error()); !sameMessage(msg, kv.log) && !strings.Contains(msg, "refers to") {
				t.Errorf("kernel's log ends %q; bpfsim: %q", kv.log[max(0, len(kv.log)-2):], msg)
			}
		})
	}
}

func init() {
	loadBTF = func(tb testing.TB, raw []byte) error {
		needKernelBTF(tb)
		h, err := btf.NewHandleFromRawBTF(raw)
		if err != nil {
			return err
		}
		return h.Close()
	}
}
