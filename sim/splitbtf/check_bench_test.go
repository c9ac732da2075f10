package splitbtf

import (
	"os"
	"testing"
)

// loadBTF is BPF_BTF_LOAD of raw into this machine's kernel (the handle
// closed again), where the tests can make it: see check_linux_test.go.
var loadBTF func(tb testing.TB, raw []byte) error

// BenchmarkCheck checks this machine's vmlinux BTF, parsed once, as the
// kernel verifies BTF at BPF_BTF_LOAD; and, in the same run, has the
// kernel do it ("kernel").
func BenchmarkCheck(b *testing.B) {
	raw, err := os.ReadFile("/sys/kernel/btf/vmlinux")
	if err != nil {
		b.Skipf("no vmlinux BTF to check: %v", err)
	}
	vmlinux, err := Parse(raw, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("vmlinux: %d bytes, %d types", len(raw), len(vmlinux.Types))
	b.Run("bpfsim", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := vmlinux.Check(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("kernel", func(b *testing.B) {
		if loadBTF == nil {
			b.Skip("no BPF_BTF_LOAD here")
		}
		if err := loadBTF(b, raw); err != nil {
			b.Skipf("the kernel does not load vmlinux's BTF for this process: %v", err)
		}
		for b.Loop() {
			if err := loadBTF(b, raw); err != nil {
				b.Fatal(err)
			}
		}
	})
}
