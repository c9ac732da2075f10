// Package bpfobj checks the examples' committed BPF objects against their
// sources: each object is built by scripts/gen-bpf.sh, which records the
// SHA-256 of the source it was built from next to it (OBJECT.srcsum), so
// that running an example needs no clang and a source changed without a
// rebuild is caught by a test.
package bpfobj

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"strings"
	"testing"
)

// CheckFresh fails t unless obj's recorded source sum is src's; regen is
// the command that rebuilds it, for the message.
func CheckFresh(t testing.TB, src, obj, regen string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	recorded, err := os.ReadFile(obj + ".srcsum")
	if err != nil {
		t.Fatalf("%s has no recorded source sum: run %s", obj, regen)
	}
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != strings.TrimSpace(string(recorded)) {
		t.Errorf("%s is stale: %s changed since it was built; run %s", obj, src, regen)
	}
}
