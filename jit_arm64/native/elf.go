package native

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
)

// Segment is one PT_LOAD segment of a static executable: Data is mapped at
// Vaddr, followed by Memsz-len(Data) zero bytes (the .bss part).
type Segment struct {
	Vaddr uint64
	Data  []byte
	Memsz uint64 // at least len(Data)
	Flags elf.ProgFlag
}

const (
	ehdrSize = 64 // sizeof(Elf64_Ehdr)
	phdrSize = 56 // sizeof(Elf64_Phdr)
	// segAlign is the p_align of every segment: 64 KiB covers every page
	// size an aarch64 kernel (or qemu's linux-user target) may use.
	segAlign = 0x10000
)

// WriteELF returns a static aarch64 Linux executable (ET_EXEC, no
// interpreter, no sections) that starts at entry and maps segs. The first
// segment's contents start at file offset HeaderSize(len(segs)) and must
// be mapped at an address congruent to it modulo 64 KiB (segments go
// into the file in order, each at the next 16-byte boundary, so every
// later segment's Vaddr must likewise be congruent to its offset). Layout
// reports the offsets to choose addresses with.
func WriteELF(entry uint64, segs []Segment) ([]byte, error) {
	offs := Layout(segs)
	var buf bytes.Buffer
	hdr := elf.Header64{
		Type:      uint16(elf.ET_EXEC),
		Machine:   uint16(elf.EM_AARCH64),
		Version:   uint32(elf.EV_CURRENT),
		Entry:     entry,
		Phoff:     ehdrSize,
		Ehsize:    ehdrSize,
		Phentsize: phdrSize,
		Phnum:     uint16(len(segs)),
	}
	copy(hdr.Ident[:], elf.ELFMAG)
	hdr.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	hdr.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	hdr.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	hdr.Ident[elf.EI_OSABI] = byte(elf.ELFOSABI_NONE)
	if err := binary.Write(&buf, binary.LittleEndian, &hdr); err != nil {
		return nil, err
	}
	for i, s := range segs {
		if s.Memsz < uint64(len(s.Data)) {
			return nil, fmt.Errorf("native: segment %d: memsz %d below its %d bytes of contents", i, s.Memsz, len(s.Data))
		}
		if s.Vaddr%segAlign != offs[i]%segAlign {
			return nil, fmt.Errorf("native: segment %d at %#x is not congruent to its file offset %#x modulo %#x", i, s.Vaddr, offs[i], segAlign)
		}
		ph := elf.Prog64{
			Type:   uint32(elf.PT_LOAD),
			Flags:  uint32(s.Flags),
			Off:    offs[i],
			Vaddr:  s.Vaddr,
			Paddr:  s.Vaddr,
			Filesz: uint64(len(s.Data)),
			Memsz:  s.Memsz,
			Align:  segAlign,
		}
		if err := binary.Write(&buf, binary.LittleEndian, &ph); err != nil {
			return nil, err
		}
	}
	for i, s := range segs {
		buf.Write(make([]byte, int(offs[i])-buf.Len()))
		buf.Write(s.Data)
	}
	return buf.Bytes(), nil
}

// HeaderSize is the file offset of the first segment's contents: the ELF
// header and n program headers, rounded up to 16 bytes.
func HeaderSize(n int) uint64 { return roundUp(ehdrSize+uint64(n)*phdrSize, 16) }

// Layout returns the file offset of each segment's contents.
func Layout(segs []Segment) []uint64 {
	offs := make([]uint64, len(segs))
	off := HeaderSize(len(segs))
	for i, s := range segs {
		offs[i] = off
		off = roundUp(off+uint64(len(s.Data)), 16)
	}
	return offs
}

func roundUp(v, a uint64) uint64 { return (v + a - 1) &^ (a - 1) }
