package kdiff

import (
	"errors"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// wantVerdict loads spec on k and requires what a table of the kernel's
// answers says: accepted when errno is 0, else refused by the verifier
// with errno and the message msg.
func wantVerdict(t *testing.T, k *sim.Kernel, spec *ebpf.ProgramSpec, errno uapi.Errno, msg string) {
	t.Helper()
	p, err := k.NewProgram(spec)
	if errno == 0 {
		if err != nil {
			t.Fatalf("refused: %v", err)
		}
		p.Close()
		return
	}
	var ve *verifier.Error
	if !errors.As(err, &ve) || !errors.Is(err, errno) || VerifierMessage(ve.Log) != msg {
		t.Fatalf("got %v, want %v: %s", err, errno, msg)
	}
}
