package main

import (
	"encoding/hex"
	"io"
	"strings"
	"testing"

	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/kdiff"
)

// FuzzPlugin feeds arbitrary bytecode and memory through the conformance
// plugin, the CLI's widest entry point: parsing, loading, running. Any
// outcome but a panic is acceptable. Its corpus is kept under
// testdata/fuzz/FuzzPlugin.
func FuzzPlugin(f *testing.F) {
	f.Add(mustHex(movR0+exitInsn), []byte{})
	f.Add(mustHex(ldxbR0R1+addR0R2+exitInsn), []byte{1, 2, 3})
	f.Add(mustHex("b7 01 00 00 00 00 00 00 85 00 00 00 05 00 00 00"+exitInsn), []byte{})
	for seed := uint64(0); seed < 8; seed++ {
		p := kdiff.Generate(seed, kdiff.DefaultGenOptions)
		code, err := insn.FromAsm(p.Spec.Instructions)
		if err == nil {
			f.Add(insn.Encode(code), p.Packet)
		}
	}
	f.Fuzz(func(t *testing.T, code, memory []byte) {
		args := []string{"plugin", "--max-insns", "20000"}
		if len(memory) > 0 {
			args = []string{spaced(memory), "plugin", "--max-insns", "20000"}
		}
		status := realMain(args, strings.NewReader(spaced(code)+"\n"), io.Discard, io.Discard)
		if status != 0 && status != 1 {
			t.Fatalf("status %d", status)
		}
		// The same bytes as an XDP program with the memory as packet.
		realMain([]string{spaced(memory), "plugin", "--xdp", "--max-insns", "20000", "--program", spaced(code)},
			strings.NewReader(""), io.Discard, io.Discard)
	})
}

func spaced(b []byte) string {
	var s strings.Builder
	for _, c := range b {
		s.WriteString(hex.EncodeToString([]byte{c}))
		s.WriteString("  ")
	}
	return s.String()
}

func mustHex(s string) []byte {
	b, err := decodeHex(s)
	if err != nil {
		panic(err)
	}
	return b
}
