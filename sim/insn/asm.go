package insn

import (
	"bytes"
	"encoding/binary"

	"github.com/cilium/ebpf/asm"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/uapi"
)

// FromAsm encodes cilium/ebpf instructions, resolving jump and call labels
// the way cilium/ebpf does before a load. in is not modified.
func FromAsm(in asm.Instructions) ([]Insn, error) {
	insns := make(asm.Instructions, len(in))
	copy(insns, in)
	var buf bytes.Buffer
	if err := insns.Marshal(&buf, binary.LittleEndian); err != nil {
		return nil, errors.Wrap(uapi.EINVAL, err.Error())
	}
	return Decode(buf.Bytes())
}
