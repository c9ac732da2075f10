package sim_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/kdiff"
)

// dynptrCmd is struct cmd of testdata/dynptr.bpf.c: the packet's first
// 80 bytes, before the 64 bytes of the pattern bpf_dynptr_write writes.
type dynptrCmd struct {
	Key, Size    uint32
	Flags        uint64
	Moff, Steps  uint32
	Woff, Wlen   uint32
	Wflags       uint64
	Roff, Rlen   uint32
	Rflags       uint64
	Doff, Soff   uint32
	Dstoff, Slen uint32
	Sflags       uint64
}

// The steps of testdata/dynptr.bpf.c (STEP_*).
const (
	dpZero     = 1 << 0 // write size zero bytes at 0 first
	dpWrite    = 1 << 1 // bpf_dynptr_write(dp, woff, src, wlen, wflags)
	dpData     = 1 << 2 // bpf_dynptr_data(dp, doff, 8): read the 8 bytes, write dynptrDataMark
	dpData0    = 1 << 3 // bpf_dynptr_data(dp, doff, 0)
	dpRead     = 1 << 4 // bpf_dynptr_read(stack or value, rlen, dp, roff, rflags)
	dpSrcValue = 1 << 5 // the write's source is the vals value at soff
	dpDstValue = 1 << 6 // the read's destination is the vals value at dstoff
	dpSliceSrc = 1 << 7 // after dpData, bpf_dynptr_write(dp, woff, slice, slen, 0)
	dpDiscard  = 1 << 8 // discard the ring buffer dynptr, not submit it
	dpRingbuf  = 1 << 9 // layout: a ring buffer dynptr, not a local one
)

// dynptrResult is struct result of testdata/dynptr.bpf.c.
type dynptrResult struct {
	RC      [8]int64
	Read    [64]byte
	Pattern [64]byte
	Zeros   [64]byte
}

// The rc names, in struct result's order (RC_*), and RC_NOT_RUN.
var dynptrRCNames = [8]string{"make", "zero", "write", "data", "data_old", "data0", "slice_write", "read"}

const dynptrNotRun = 0x7eadbeef

// dynptrBigSize is the size of big's value (BIG_SIZE): past the largest
// dynptr, 0xffffff bytes.
const dynptrBigSize = 0x1000001

// dynptrCase is one run of a program of testdata/dynptr.bpf.o.
type dynptrCase struct {
	name string
	prog string // local, local_big, ringbuf or layout
	cmd  dynptrCmd
}

// dynptrCases drives every helper through its successes and errors:
//   - bpf_dynptr_from_mem over an array's value (the only memory the
//     kernel takes): sizes 0 to 64, at offsets, over either key; flags
//     (EINVAL, also in the upper 32 bits); over a 0x1000001-byte value,
//     0xffffff bytes (the largest) and more (E2BIG, checked before the
//     flags);
//   - bpf_ringbuf_reserve_dynptr: records of 0 to 40 bytes, submitted
//     or discarded with or without flags; flags (EINVAL, checked before
//     the size), sizes past 0xffffff (E2BIG), past the ring (EINVAL,
//     not bpf_ringbuf_reserve's EAGAIN), and the largest record the
//     ring holds;
//   - on each, bpf_dynptr_write, bpf_dynptr_read and bpf_dynptr_data in
//     range, at the end, past it (E2BIG, and NULL), at offsets that
//     wrap, with flags (EINVAL, before or after the range check), on a
//     NULL dynptr (the one a failed from_mem or reserve leaves:
//     EINVAL, NULL); zero lengths; what a failed read leaves in its
//     destination; writes through the slice, seen by later reads and in
//     the map and the record;
//   - overlapping copies within one dynptr: a write whose source is in
//     the dynptr's own memory (the map value, or a slice of the ring
//     record), a read whose destination is, forwards, backwards and
//     onto itself;
//   - the dynptr's 16 bytes (data, size word with the type, offset) as
//     the program reads them once the verifier no longer holds them a
//     dynptr: a local one's, a NULL one's, and a ring buffer one's after
//     its submit or discard, reserved or not.
var dynptrCases = []dynptrCase{
	// Local dynptrs over vals[key] at moff.
	{"from_mem 16 bytes, read them", "local", dynptrCmd{Size: 16, Steps: dpRead, Rlen: 16}},
	{"from_mem of key 1 at 32, read 32", "local", dynptrCmd{Key: 1, Moff: 32, Size: 32, Steps: dpRead, Rlen: 32}},
	{"from_mem flags 1: EINVAL, a NULL dynptr everywhere", "local", dynptrCmd{Size: 16, Flags: 1, Steps: dpWrite | dpData | dpData0 | dpRead, Wlen: 8, Rlen: 8}},
	{"from_mem flags 1<<32: EINVAL", "local", dynptrCmd{Size: 16, Flags: 1 << 32, Steps: dpRead, Rlen: 8}},
	{"from_mem 0 bytes: write, data0, read of 0 at 0", "local", dynptrCmd{Size: 0, Steps: dpWrite | dpData | dpData0 | dpRead}},
	{"a 0-byte dynptr: read 1 byte: E2BIG", "local", dynptrCmd{Size: 0, Steps: dpRead, Rlen: 1}},
	{"a 0-byte dynptr: data0 and read 0 bytes at 1", "local", dynptrCmd{Size: 0, Steps: dpData0 | dpRead, Doff: 1, Roff: 1}},
	{"from_mem 64 at 64: write 8 at 56, read 64", "local", dynptrCmd{Moff: 64, Size: 64, Steps: dpWrite | dpRead, Woff: 56, Wlen: 8, Rlen: 64}},
	{"write 8 at 60 of 64: E2BIG, nothing written", "local", dynptrCmd{Size: 64, Steps: dpWrite | dpRead, Woff: 60, Wlen: 8, Rlen: 64}},
	{"write 64 into 32: E2BIG", "local", dynptrCmd{Size: 32, Steps: dpWrite | dpRead, Wlen: 64, Rlen: 32}},
	{"write 0 bytes at the end: 0", "local", dynptrCmd{Size: 32, Steps: dpWrite, Woff: 32}},
	{"write 0 bytes past the end: E2BIG", "local", dynptrCmd{Size: 32, Steps: dpWrite, Woff: 33}},
	{"write at 0xfffffff8 (wraps with the length): E2BIG", "local", dynptrCmd{Size: 32, Steps: dpWrite, Woff: 0xfffffff8, Wlen: 16}},
	{"write flags 1 in range: EINVAL, nothing written", "local", dynptrCmd{Size: 32, Steps: dpWrite | dpRead, Wlen: 8, Wflags: 1, Rlen: 16}},
	{"write flags 1 past the end: E2BIG first", "local", dynptrCmd{Size: 32, Steps: dpWrite, Woff: 30, Wlen: 8, Wflags: 1}},
	{"read flags 1 in range: EINVAL, the destination", "local", dynptrCmd{Size: 32, Steps: dpRead, Rlen: 16, Rflags: 1}},
	{"read flags 1 past the end: EINVAL first", "local", dynptrCmd{Size: 32, Steps: dpRead, Roff: 30, Rlen: 16, Rflags: 1}},
	{"read 16 at 56 of 64: E2BIG, the destination", "local", dynptrCmd{Size: 64, Steps: dpRead, Roff: 56, Rlen: 16}},
	{"read 64 of 32: E2BIG", "local", dynptrCmd{Size: 32, Steps: dpRead, Rlen: 64}},
	{"read 1 at 0xffffffff: E2BIG", "local", dynptrCmd{Size: 32, Steps: dpRead, Roff: 0xffffffff, Rlen: 1}},
	{"read 0 at the end: 0", "local", dynptrCmd{Size: 32, Steps: dpRead, Roff: 32}},
	{"read the last byte", "local", dynptrCmd{Size: 32, Steps: dpRead, Roff: 31, Rlen: 1}},
	{"data at 0: the slice's bytes, the mark in the value", "local", dynptrCmd{Moff: 16, Size: 32, Steps: dpData | dpRead, Rlen: 32}},
	{"data at size-8: a slice", "local", dynptrCmd{Moff: 16, Size: 32, Steps: dpData, Doff: 24}},
	{"data at size-7: NULL", "local", dynptrCmd{Moff: 16, Size: 32, Steps: dpData | dpData0, Doff: 25}},
	{"data 8 of a 4-byte dynptr: NULL", "local", dynptrCmd{Size: 4, Steps: dpData | dpData0}},
	{"data at 0xffffffff: NULL", "local", dynptrCmd{Size: 32, Steps: dpData | dpData0, Doff: 0xffffffff}},
	{"data0 at the end: a slice", "local", dynptrCmd{Size: 32, Steps: dpData0, Doff: 32}},
	{"data0 past the end: NULL", "local", dynptrCmd{Size: 32, Steps: dpData0, Doff: 33}},
	{"write, data, read: the read sees both", "local", dynptrCmd{Key: 1, Size: 64, Steps: dpWrite | dpData | dpRead, Woff: 4, Wlen: 16, Doff: 24, Rlen: 40}},
	{"write from the slice into the same dynptr, overlapping", "local", dynptrCmd{Size: 64, Steps: dpData | dpSliceSrc | dpRead, Doff: 8, Woff: 12, Slen: 8, Rlen: 32}},
	{"write from the value onto itself, forwards", "local", dynptrCmd{Size: 64, Steps: dpWrite | dpSrcValue | dpRead, Soff: 0, Woff: 8, Wlen: 32, Rlen: 48}},
	{"write from the value onto itself, backwards", "local", dynptrCmd{Size: 64, Steps: dpWrite | dpSrcValue | dpRead, Soff: 8, Woff: 0, Wlen: 32, Rlen: 48}},
	{"write from the value onto the same bytes", "local", dynptrCmd{Moff: 8, Size: 32, Steps: dpWrite | dpSrcValue, Soff: 8, Woff: 0, Wlen: 32}},
	{"read into the value, forwards", "local", dynptrCmd{Moff: 16, Size: 48, Steps: dpRead | dpDstValue, Roff: 0, Rlen: 32, Dstoff: 24}},
	{"read into the value, backwards", "local", dynptrCmd{Moff: 16, Size: 48, Steps: dpRead | dpDstValue, Roff: 0, Rlen: 32, Dstoff: 8}},
	{"read into the value onto the same bytes", "local", dynptrCmd{Moff: 16, Size: 48, Steps: dpRead | dpDstValue, Roff: 4, Rlen: 32, Dstoff: 20}},
	{"read past the end into the value: E2BIG, the value", "local", dynptrCmd{Size: 16, Steps: dpRead | dpDstValue, Roff: 8, Rlen: 16, Dstoff: 32}},
	{"a NULL dynptr's read into the value: EINVAL, the value", "local", dynptrCmd{Size: 16, Flags: 2, Steps: dpRead | dpDstValue, Rlen: 16, Dstoff: 32}},

	// Local dynptrs over big's value (its earlier runs' writes stay).
	{"big: from_mem 0xffffff bytes, write 8 at 0xfffff0, read the last 16", "local_big", dynptrCmd{Size: 0xffffff, Steps: dpWrite | dpRead, Woff: 0xfffff0, Wlen: 8, Roff: 0xffffef, Rlen: 16}},
	{"big: read 16 at 0xfffff0 of 0xffffff: E2BIG", "local_big", dynptrCmd{Size: 0xffffff, Steps: dpRead, Roff: 0xfffff0, Rlen: 16}},
	{"big: data and data0 at 0xfffff7: slices", "local_big", dynptrCmd{Size: 0xffffff, Steps: dpData | dpData0, Doff: 0xfffff7}},
	{"big: data at 0xfffff8: NULL", "local_big", dynptrCmd{Size: 0xffffff, Steps: dpData, Doff: 0xfffff8}},
	{"big: read the slice's mark back", "local_big", dynptrCmd{Size: 0xffffff, Steps: dpRead, Roff: 0xffffe7, Rlen: 24}},
	{"big: from_mem 0x1000000 bytes: E2BIG, a NULL dynptr", "local_big", dynptrCmd{Size: 0x1000000, Steps: dpWrite | dpData | dpData0 | dpRead, Wlen: 8, Rlen: 8}},
	{"big: from_mem 0x1000001 bytes (all of the value): E2BIG", "local_big", dynptrCmd{Size: dynptrBigSize, Steps: dpRead, Rlen: 8}},
	{"big: from_mem 0x1000000 bytes with flags 1: E2BIG first", "local_big", dynptrCmd{Size: 0x1000000, Flags: 1}},
	{"big: from_mem 0xffffff bytes with flags 1: EINVAL", "local_big", dynptrCmd{Size: 0xffffff, Flags: 1}},

	// Ring buffer dynptrs (a 64 KiB ring), submitted or discarded.
	{"reserve 16, write 8 at 4, submit", "ringbuf", dynptrCmd{Size: 16, Steps: dpZero | dpWrite, Woff: 4, Wlen: 8}},
	{"reserve 16, write, discard: no record", "ringbuf", dynptrCmd{Size: 16, Steps: dpZero | dpWrite | dpDiscard, Wlen: 16}},
	{"reserve 0: an empty record", "ringbuf", dynptrCmd{Size: 0, Steps: dpZero | dpData0 | dpRead}},
	{"reserve 0, write 1: E2BIG", "ringbuf", dynptrCmd{Size: 0, Steps: dpWrite, Wlen: 1}},
	{"reserve flags 1: EINVAL, a NULL dynptr everywhere, submit", "ringbuf", dynptrCmd{Size: 24, Flags: 1, Steps: dpZero | dpWrite | dpData | dpData0 | dpRead, Wlen: 8, Rlen: 8}},
	{"reserve flags 1<<32: EINVAL, discard", "ringbuf", dynptrCmd{Size: 24, Flags: 1 << 32, Steps: dpDiscard}},
	{"reserve 0x1000000: E2BIG, discard", "ringbuf", dynptrCmd{Size: 0x1000000, Steps: dpWrite | dpRead | dpDiscard, Wlen: 8, Rlen: 8}},
	{"reserve 0xffffffff: E2BIG, submit", "ringbuf", dynptrCmd{Size: 0xffffffff}},
	{"reserve 0x1000000 with flags 2: EINVAL first", "ringbuf", dynptrCmd{Size: 0x1000000, Flags: 2}},
	{"reserve 0xffffff (past the ring): EINVAL, a NULL dynptr", "ringbuf", dynptrCmd{Size: 0xffffff, Steps: dpData | dpRead, Rlen: 8}},
	{"reserve the ring's size: EINVAL", "ringbuf", dynptrCmd{Size: 0x10000, Steps: dpDiscard}},
	{"reserve 0xfff1 (with its header, past the ring): EINVAL", "ringbuf", dynptrCmd{Size: 0xfff1}},
	{"reserve 0xfff0 (the largest record), write at its end, read it, discard", "ringbuf", dynptrCmd{Size: 0xfff0, Steps: dpWrite | dpRead | dpDiscard, Woff: 0xffe8, Wlen: 8, Roff: 0xffe8, Rlen: 8}},
	{"reserve 0xfff0, read 16 at 0xffe8: E2BIG, discard", "ringbuf", dynptrCmd{Size: 0xfff0, Steps: dpRead | dpDiscard, Roff: 0xffe8, Rlen: 16}},
	{"reserve 16 after the largest records", "ringbuf", dynptrCmd{Size: 16, Steps: dpZero | dpWrite, Wlen: 16}},
	{"reserve 16, data at 8: the mark in the record", "ringbuf", dynptrCmd{Size: 16, Steps: dpZero | dpData | dpRead, Doff: 8, Rlen: 16}},
	{"reserve 16, data at 9: NULL", "ringbuf", dynptrCmd{Size: 16, Steps: dpZero | dpData | dpData0, Doff: 9}},
	{"reserve 40, write 16 at 32: E2BIG; read 40; submit with BPF_RB_NO_WAKEUP", "ringbuf", dynptrCmd{Size: 40, Steps: dpZero | dpWrite | dpRead, Woff: 32, Wlen: 16, Rlen: 40, Sflags: 1}},
	{"reserve 40, write 8 at 32, read 40, submit with BPF_RB_FORCE_WAKEUP", "ringbuf", dynptrCmd{Size: 40, Steps: dpZero | dpWrite | dpRead, Woff: 32, Wlen: 8, Rlen: 40, Sflags: 2}},
	{"submit with unknown flags 0x80", "ringbuf", dynptrCmd{Size: 8, Steps: dpZero | dpWrite, Wlen: 8, Sflags: 0x80}},
	{"discard with flags 3", "ringbuf", dynptrCmd{Size: 8, Steps: dpZero | dpWrite | dpDiscard, Wlen: 8, Sflags: 3}},
	{"reserve 24, read 8 at 20: E2BIG, read flags 2: EINVAL", "ringbuf", dynptrCmd{Size: 24, Steps: dpZero | dpRead, Roff: 20, Rlen: 8, Rflags: 2}},
	{"reserve 24, read 8 at 20: E2BIG", "ringbuf", dynptrCmd{Size: 24, Steps: dpZero | dpRead, Roff: 20, Rlen: 8}},
	{"reserve 24, write flags 1: EINVAL", "ringbuf", dynptrCmd{Size: 24, Steps: dpZero | dpWrite, Wlen: 8, Wflags: 1}},
	{"reserve 32, write 28 at 4, the slice at 0 written at 4, overlapping", "ringbuf", dynptrCmd{Size: 32, Steps: dpZero | dpWrite | dpData | dpSliceSrc | dpRead, Wlen: 28, Woff: 4, Slen: 8, Rlen: 32}},
	{"reserve 32, the value written in, read into the value", "ringbuf", dynptrCmd{Key: 1, Size: 32, Steps: dpZero | dpWrite | dpSrcValue | dpRead | dpDstValue, Soff: 16, Wlen: 32, Roff: 8, Rlen: 16, Dstoff: 0}},

	// The dynptr's bytes once the verifier lets the program read them.
	{"layout: from_mem 20 at 8", "layout", dynptrCmd{Moff: 8, Size: 20}},
	{"layout: from_mem 0 at 64 of key 1", "layout", dynptrCmd{Key: 1, Moff: 64, Size: 0}},
	{"layout: from_mem 64", "layout", dynptrCmd{Size: 64}},
	{"layout: from_mem flags 1: all zero", "layout", dynptrCmd{Moff: 8, Size: 20, Flags: 1}},
	{"layout: reserve 0, submit: all zero", "layout", dynptrCmd{Size: 0, Steps: dpRingbuf}},
	{"layout: reserve 20, discard: all zero", "layout", dynptrCmd{Size: 20, Steps: dpRingbuf | dpDiscard}},
	{"layout: reserve flags 1, discard: all zero", "layout", dynptrCmd{Size: 20, Flags: 1, Steps: dpRingbuf | dpDiscard}},
	{"layout: reserve 64 with flags 4, submit: all zero", "layout", dynptrCmd{Size: 64, Flags: 4, Steps: dpRingbuf}},
}

// dynptrTarget runs testdata/dynptr.bpf.o somewhere: in bpfsim or in the
// kernel.
type dynptrTarget struct {
	run     func(prog string, pkt []byte) (uint32, error)
	put     func(key uint32, v [128]byte) error
	lookup  func(key uint32) ([128]byte, error)
	result  func() (dynptrResult, error)
	records func() ([][]byte, error)
}

// dynptrValue is vals[key] as each run begins: key<<7 | offset.
func dynptrValue(key uint32) (v [128]byte) {
	for i := range v {
		v[i] = byte(key<<7) | byte(i)
	}
	return v
}

// dynptrPacket is c and the 64 bytes of the pattern, 0xc0 on.
func dynptrPacket(c dynptrCmd) []byte {
	var b bytes.Buffer
	if err := binary.Write(&b, binary.LittleEndian, c); err != nil {
		panic(err)
	}
	for i := 0; i < 64; i++ {
		b.WriteByte(0xc0 + byte(i))
	}
	return b.Bytes()
}

// runDynptrCases runs dynptrCases on tg and returns what each saw, a
// line each: the return value, each call's result, the read's
// destination, the values that changed, the records read (length:bytes).
func runDynptrCases(t *testing.T, tg dynptrTarget) []string {
	t.Helper()
	var lines []string
	for _, tc := range dynptrCases {
		for key := uint32(0); key < 2; key++ {
			if err := tg.put(key, dynptrValue(key)); err != nil {
				t.Fatalf("%s: put vals[%d]: %v", tc.name, key, err)
			}
		}
		ret, err := tg.run(tc.prog, dynptrPacket(tc.cmd))
		if err != nil {
			t.Fatalf("%s: run: %v", tc.name, err)
		}
		res, err := tg.result()
		if err != nil {
			t.Fatalf("%s: out: %v", tc.name, err)
		}
		var b strings.Builder
		fmt.Fprintf(&b, "%s: ret=%d", tc.name, ret)
		if tc.prog == "layout" {
			b.WriteString(dynptrLayout(res.RC))
		} else {
			for i, rc := range res.RC {
				if rc != dynptrNotRun {
					fmt.Fprintf(&b, " %s=%s", dynptrRCNames[i], dynptrRC(i, rc))
				}
			}
			if tc.cmd.Steps&dpRead != 0 && res.RC[7] != dynptrNotRun {
				fmt.Fprintf(&b, " dst=%x", res.Read)
			}
		}
		for key := uint32(0); key < 2; key++ {
			v, err := tg.lookup(key)
			if err != nil {
				t.Fatalf("%s: lookup vals[%d]: %v", tc.name, key, err)
			}
			if v != dynptrValue(key) {
				fmt.Fprintf(&b, " vals[%d]=%x", key, v)
			}
		}
		recs, err := tg.records()
		if err != nil {
			t.Fatalf("%s: records: %v", tc.name, err)
		}
		if len(recs) > 0 || tc.prog == "ringbuf" {
			fmt.Fprintf(&b, " records=[")
			for i, r := range recs {
				if i > 0 {
					b.WriteString(" ")
				}
				if len(r) > 64 {
					fmt.Fprintf(&b, "%d:%x...", len(r), r[:64])
				} else {
					fmt.Fprintf(&b, "%d:%x", len(r), r)
				}
			}
			b.WriteString("]")
		}
		lines = append(lines, b.String())
	}
	return lines
}

// dynptrLayout prints the layout program's results: the helper's, then
// the dynptr's bytes: its data pointer (from the memory it was made over,
// addresses differing), its size word (with the type), its offset.
func dynptrLayout(rc [8]int64) string {
	data := "0"
	switch {
	case rc[1] != 0 && rc[2] != 0:
		data = fmt.Sprintf("the memory%+d", rc[1]-rc[2])
	case rc[1] != 0:
		data = "not 0"
	}
	return fmt.Sprintf(" make=%s data=%s size=%#x offset=%#x", dynptrRC(0, rc[0]), data, rc[3], rc[4])
}

// dynptrRC prints rc i: errnos by name, data_old in hex.
func dynptrRC(i int, rc int64) string {
	if dynptrRCNames[i] == "data_old" {
		return fmt.Sprintf("%#x", uint64(rc))
	}
	names := map[int64]string{-7: "E2BIG", -11: "EAGAIN", -22: "EINVAL", -14: "EFAULT", -1: "EPERM", -12: "ENOMEM"}
	if n, ok := names[rc]; ok {
		return fmt.Sprintf("%d(%s)", rc, n)
	}
	return fmt.Sprint(rc)
}

// dynptrMap is what the targets use of a map: cilium/ebpf's *ebpf.Map
// and bpfsim's *sim.Map both have it.
type dynptrMap interface {
	Put(key, value any) error
	Lookup(key, value any) error
}

// newDynptrTarget is the dynptrTarget over maps, running programs with
// run and reading the ring with read (os.ErrDeadlineExceeded when no
// record is ready).
func newDynptrTarget[M dynptrMap](maps map[string]M, run func(string, []byte) (uint32, error), read func() ([]byte, error)) dynptrTarget {
	return dynptrTarget{
		run: run,
		put: func(key uint32, v [128]byte) error { return maps["vals"].Put(key, v) },
		lookup: func(key uint32) (v [128]byte, err error) {
			err = maps["vals"].Lookup(key, &v)
			return v, err
		},
		result: func() (r dynptrResult, err error) {
			err = maps["out"].Lookup(uint32(0), &r)
			return r, err
		},
		records: func() ([][]byte, error) {
			var out [][]byte
			for {
				rec, err := read()
				if errors.Is(err, os.ErrDeadlineExceeded) {
					return out, nil
				}
				if err != nil {
					return out, err
				}
				out = append(out, rec)
			}
		},
	}
}

// simDynptrTarget loads testdata/dynptr.bpf.o into a bpfsim kernel.
func simDynptrTarget(t *testing.T, opts *sim.Options) dynptrTarget {
	t.Helper()
	k := newKernel(t, opts)
	spec, err := ebpf.LoadCollectionSpec("testdata/dynptr.bpf.o")
	if err != nil {
		t.Fatal(err)
	}
	coll, err := k.NewCollection(spec)
	if err != nil {
		t.Fatalf("bpfsim refused testdata/dynptr.bpf.o: %v", err)
	}
	t.Cleanup(func() { coll.Close() })
	rd, err := sim.NewRingbufReader(coll.Maps["rb"])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rd.Close() })
	return newDynptrTarget(coll.Maps, func(name string, pkt []byte) (uint32, error) {
		return coll.Programs[name].Run(&sim.RunOptions{Data: pkt})
	}, func() ([]byte, error) {
		rec, err := rd.Read()
		return rec.RawSample, err
	})
}

// The same programs, on the same packets, must give the same helper
// results, leave the same map values and send the same ring buffer
// records in the kernel and in bpfsim, with either runtime: see
// dynptrCases for what the packets cover.
func TestDynptrHelpersAreTheKernels(t *testing.T) {
	coll := kernelCollection(t, "testdata/dynptr.bpf.o")
	rd, err := ringbuf.NewReader(coll.Maps["rb"])
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	want := runDynptrCases(t, newDynptrTarget(coll.Maps, func(name string, pkt []byte) (uint32, error) {
		return coll.Programs[name].Run(&ebpf.RunOptions{Data: pkt})
	}, func() ([]byte, error) {
		rd.SetDeadline(time.Now())
		rec, err := rd.Read()
		return rec.RawSample, err
	}))
	t.Logf("kernel:\n%s", strings.Join(want, "\n"))
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		t.Run(rt.String(), func(t *testing.T) {
			got := runDynptrCases(t, simDynptrTarget(t, &sim.Options{Runtime: rt}))
			for i := range want {
				if got[i] != want[i] {
					t.Errorf("case %d:\nbpfsim: %s\nkernel: %s", i, got[i], want[i])
				}
			}
		})
	}
}

// dynptrRefusals are the programs of testdata/dynptr_refused.bpf.o and the
// kernel verifier's verdict on each: "" for accepted, else the last line
// of its log.
var dynptrRefusals = map[string]string{
	"accepted": "",
	// The dynptr's stack slots.
	"nonconst_offset":      "Dynptr has to be an uninitialized dynptr", // after "dynptr has to be at a constant offset"
	"misaligned_offset":    "Dynptr has to be an uninitialized dynptr", // after "cannot pass in dynptr at an offset=-28"
	"read_nonconst_offset": "Expected an initialized dynptr as arg #2", // after "dynptr has to be at a constant offset"
	"read_inside_a_dynptr": "Expected an initialized dynptr as arg #2",
	"read_uninit":          "Expected an initialized dynptr as arg #2",
	"write_uninit":         "Expected an initialized dynptr as arg #0",
	"data_uninit":          "Expected an initialized dynptr as arg #0",
	"submit_uninit":        "arg 1 is an unacquired reference",
	// References.
	"reserve_over_reserved":       "cannot overwrite referenced dynptr",
	"from_mem_over_reserved":      "cannot overwrite referenced dynptr",
	"ringbuf_leak":                "BPF_EXIT instruction in main prog would lead to reference leak", // after "Unreleased reference id=2 alloc_insn=6"
	"failed_reserve_not_released": "BPF_EXIT instruction in main prog would lead to reference leak",
	"submit_local":                "arg 1 is an unacquired reference",
	"discard_local":               "arg 1 is an unacquired reference",
	"submit_twice":                "arg 1 is an unacquired reference",
	"read_after_submit":           "Expected an initialized dynptr as arg #2",
	// Loads and stores of the dynptr's own bytes.
	"load_local_dynptr":          "invalid read from stack off -16+0 size 8",
	"load_ringbuf_dynptr":        "invalid read from stack off -4+0 size 4",
	"copy_a_dynptr":              "invalid read from stack off -16+0 size 8",
	"store_into_local_then_read": "Expected an initialized dynptr as arg #2",
	"store_into_ringbuf_dynptr":  "cannot overwrite referenced dynptr",
	// Slices from bpf_dynptr_data.
	"data_without_null_check":      "R0 invalid mem access 'mem_or_null'",
	"slice_after_submit":           "R6 invalid mem access 'scalar'",
	"slice_after_discard":          "R6 invalid mem access 'scalar'",
	"slice_after_from_mem_again":   "R8 invalid mem access 'scalar'",
	"slice_after_store_into_local": "R0 invalid mem access 'scalar'",
	"data_nonconst_len":            "R3 is not a known constant'",                         // sic: the kernel's stray quote
	"slice_write_beyond":           "R0 min value is outside of the allowed memory range", // after "invalid access to memory, mem_size=8 off=8 size=1"
	"slice_read_beyond":            "R0 min value is outside of the allowed memory range", // after "invalid access to memory, mem_size=8 off=4 size=8"
	// What may hold a dynptr, and what a dynptr may be made over.
	"dynptr_in_a_map_value":      "R4 type=map_value expected=fp, dynptr_ptr",
	"read_a_map_value_as_dynptr": "R3 type=map_value expected=fp, dynptr_ptr",
	"from_mem_over_the_dynptr":   "potential write to dynptr at off=-16 disallowed",
	"read_into_the_dynptr":       "potential write to dynptr at off=-16 disallowed",
	"from_mem_of_stack":          "Unsupported reg type fp for bpf_dynptr_from_mem data",
	"from_mem_of_packet":         "helper access to the packet is not allowed",
	"from_mem_of_ringbuf_record": "Unsupported reg type ringbuf_mem for bpf_dynptr_from_mem data",
	"from_mem_of_rodata":         "write into map forbidden, value_size=64 off=0 size=16",
	"from_mem_past_the_value":    "R1 min value is outside of the allowed memory range", // after "invalid access to map value, value_size=64 off=0 size=65"
	"from_mem_unbounded_size":    "R2 unbounded memory access, use 'var &= const' or 'if (var < const)'",
	"read_into_rodata":           "write into map forbidden, value_size=64 off=0 size=8",
	"write_from_packet":          "helper access to the packet is not allowed",
	"reserve_from_an_array":      "cannot pass map_type 2 into func bpf_ringbuf_reserve_dynptr#198",
}

// The kernel gives each program of testdata/dynptr_refused.bpf.o the
// verdict, the errno and the message bpfsim gives it; the kernel's
// message is the one dynptrRefusals records.
func TestDynptrRefusalsAreTheKernels(t *testing.T) {
	checkRefusalsAreTheKernels(t, "testdata/dynptr_refused.bpf.o", dynptrRefusals)
}

// checkRefusalsAreTheKernels loads each program of the object on its own
// in this machine's kernel and in bpfsim: want names every program and
// the last line of the kernel's log for it ("" for accepted). The verdicts,
// the errnos and that line must agree.
func checkRefusalsAreTheKernels(t *testing.T, obj string, want map[string]string) {
	t.Helper()
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	spec, err := ebpf.LoadCollectionSpec(obj)
	if err != nil {
		t.Fatal(err)
	}
	for name := range spec.Programs {
		if _, ok := want[name]; !ok {
			t.Errorf("program %s of %s has no expected message", name, obj)
		}
	}
	k := newKernel(t, nil)
	for name, msg := range want {
		t.Run(name, func(t *testing.T) {
			kc, kErr := ebpf.NewCollection(loadOneProgram(t, obj, name))
			if kErr == nil {
				kc.Close()
			}
			if got := kdiff.LastLogLine(kErr); got != msg {
				t.Errorf("the kernel's message is %q, the test expects %q (%v)", got, msg, kErr)
			}
			sc, sErr := k.NewCollection(loadOneProgram(t, obj, name))
			if sErr == nil {
				sc.Close()
			}
			switch {
			case (kErr == nil) != (sErr == nil):
				t.Fatalf("kernel: %v\nbpfsim: %v", kErr, sErr)
			case kErr != nil && kdiff.LastLogLine(kErr) == "":
				t.Fatalf("the kernel's refusal has no log: %v", kErr)
			case kErr != nil && !strings.Contains(sErr.Error(), kdiff.LastLogLine(kErr)):
				t.Fatalf("kernel's message %q not in bpfsim's: %v", kdiff.LastLogLine(kErr), sErr)
			case kErr != nil && !errors.Is(sErr, errnoOf(kErr)):
				t.Fatalf("kernel's errno %v, bpfsim's error: %v", errnoOf(kErr), sErr)
			}
		})
	}
}
