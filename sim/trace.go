package sim

import (
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// TraceRecord is one line a program wrote with bpf_trace_printk.
type TraceRecord struct {
	CPU  int
	Time uint64 // simulated clock, ns since boot
	Msg  string
}

// String renders the record the way /sys/kernel/tracing/trace_pipe does.
func (r TraceRecord) String() string {
	return fmt.Sprintf("%16s-%-7d [%03d] ..... %5d.%06d: bpf_trace_printk: %s",
		"bpfsim", 1, r.CPU, r.Time/1e9, r.Time%1e9/1e3, r.Msg)
}

// TraceBuffer captures what programs print, like the kernel's trace ring
// buffer. It keeps the newest Capacity records. It is safe for concurrent
// use.
type TraceBuffer struct {
	mu       sync.Mutex
	records  []TraceRecord
	capacity int
	sink     io.Writer
}

// DefaultTraceCapacity is how many records a TraceBuffer keeps.
const DefaultTraceCapacity = 4096

func newTraceBuffer() *TraceBuffer { return &TraceBuffer{capacity: DefaultTraceCapacity} }

// SetSink makes every new record also be written, as a trace_pipe line, to
// w (nil to stop).
func (t *TraceBuffer) SetSink(w io.Writer) {
	t.mu.Lock()
	t.sink = w
	t.mu.Unlock()
}

func (t *TraceBuffer) add(r TraceRecord) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.records) == t.capacity {
		copy(t.records, t.records[1:])
		t.records = t.records[:len(t.records)-1]
	}
	t.records = append(t.records, r)
	if t.sink != nil {
		fmt.Fprintln(t.sink, r.String())
	}
}

// Records returns a copy of the buffered records, oldest first.
func (t *TraceBuffer) Records() []TraceRecord {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]TraceRecord(nil), t.records...)
}

// Messages returns just the printed messages, oldest first.
func (t *TraceBuffer) Messages() []string {
	var out []string
	for _, r := range t.Records() {
		out = append(out, r.Msg)
	}
	return out
}

// Reset empties the buffer.
func (t *TraceBuffer) Reset() {
	t.mu.Lock()
	t.records = nil
	t.mu.Unlock()
}

// String renders every record as trace_pipe lines.
func (t *TraceBuffer) String() string {
	var b strings.Builder
	for _, r := range t.Records() {
		b.WriteString(r.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// Limits of the bprintf family (kernel/bpf/helpers.c).
const (
	maxTracePrintkArgs = 3    // MAX_TRACE_PRINTK_VARARGS
	maxBprintfBuf      = 1024 // MAX_BPRINTF_BUF: longest message kept
	maxBprintfString   = 512  // MAX_BPRINTF_BIN_ARGS: room for %s copies
)

// bprintf validates fmt the way bpf_bprintf_prepare does and formats it the
// way the kernel's bstr_printf would. It returns the formatted text and the
// number of bytes vsnprintf would have produced, or an errno. With a nil
// m it only validates: strings and addresses print empty.
func bprintf(m *interp.Machine, format string, args []uint64) (string, int, error) {
	var out strings.Builder
	spec := 0
	for i := 0; i < len(format); i++ {
		c := format[i]
		if c >= 0x80 || (c < 0x20 || c == 0x7f) && !isSpace(c) {
			return "", 0, uapi.EINVAL
		}
		if c != '%' {
			out.WriteByte(c)
			continue
		}
		if i+1 < len(format) && format[i+1] == '%' {
			out.WriteByte('%')
			i++
			continue
		}
		if spec >= len(args) {
			return "", 0, uapi.EINVAL
		}
		arg := args[spec]
		spec++
		start := i
		i++
		// Flags and width: "[0 +-]*[1-9][0-9]*".
		for i < len(format) && strings.IndexByte("0+- ", format[i]) >= 0 {
			i++
		}
		if i < len(format) && format[i] >= '1' && format[i] <= '9' {
			for i < len(format) && format[i] >= '0' && format[i] <= '9' {
				i++
			}
		}
		flags := format[start+1 : i]
		at := func(j int) byte {
			if j < len(format) {
				return format[j]
			}
			return 0
		}
		switch at(i) {
		case 'p':
			next := at(i + 1)
			switch {
			case next == 0 || isSpace(next) || isPunct(next):
				// Plain %p: bpfsim prints addresses unhashed, as a kernel
				// booted with no_hash_pointers does.
				fmt.Fprintf(&out, "%"+flags+"016x", arg)
			case (next == 'k' || next == 'u') && at(i+2) == 's':
				i += 2
				if n := at(i + 1); n != 0 && !isSpace(n) && !isPunct(n) {
					return "", 0, uapi.EINVAL
				}
				fmt.Fprintf(&out, "%"+flags+"s", readCString(m, arg))
			case next == 'K' || next == 'x' || next == 's' || next == 'S' || next == 'B':
				i++
				fmt.Fprintf(&out, "%"+flags+"016x", arg)
			case (next == 'i' || next == 'I') && (at(i+2) == '4' || at(i+2) == '6'):
				i += 2
				// Printed without width or justification: this
				// machine's kernel ignores them here.
				out.WriteString(formatIP(m, arg, next, at(i)))
			default:
				return "", 0, uapi.EINVAL
			}
		case 's':
			if n := at(i + 1); n != 0 && !isSpace(n) && !isPunct(n) {
				return "", 0, uapi.EINVAL
			}
			fmt.Fprintf(&out, "%"+flags+"s", readCString(m, arg))
		case 'c':
			fmt.Fprintf(&out, "%"+flags+"c", rune(byte(arg)))
		default:
			long := false
			if at(i) == 'l' {
				long = true
				i++
			}
			if at(i) == 'l' {
				i++
			}
			verb := at(i)
			if verb != 'i' && verb != 'd' && verb != 'u' && verb != 'x' && verb != 'X' {
				return "", 0, uapi.EINVAL
			}
			signed := verb == 'd' || verb == 'i'
			if !long {
				// The low 32 bits, sign- or zero-extended.
				if signed {
					arg = uint64(int64(int32(arg)))
				} else {
					arg = uint64(uint32(arg))
				}
			}
			if flags == "" {
				// The common case, without fmt's allocations.
				var tmp [24]byte
				switch verb {
				case 'x':
					out.Write(strconv.AppendUint(tmp[:0], arg, 16))
				case 'X':
					out.WriteString(strings.ToUpper(string(strconv.AppendUint(tmp[:0], arg, 16))))
				default:
					if signed {
						out.Write(strconv.AppendInt(tmp[:0], int64(arg), 10))
					} else {
						out.Write(strconv.AppendUint(tmp[:0], arg, 10))
					}
				}
				continue
			}
			var v any = arg
			if signed {
				v = int64(arg)
			}
			goVerb := "d"
			if verb == 'x' || verb == 'X' {
				goVerb = string(verb)
			}
			fmt.Fprintf(&out, "%"+flags+goVerb, v)
		}
	}
	s := out.String()
	return s, len(s), nil
}

// traceMessage is what trace_printk's buffer keeps of a formatted text.
func traceMessage(s string) string {
	if len(s) > maxBprintfBuf-1 {
		return s[:maxBprintfBuf-1]
	}
	return s
}

func isSpace(c byte) bool { return c == ' ' || (c >= '\t' && c <= '\r') }

func isPunct(c byte) bool {
	return c > 0x20 && c < 0x7f && !(c >= '0' && c <= '9') && !(c >= 'a' && c <= 'z') && !(c >= 'A' && c <= 'Z')
}

// readCString copies a NUL-terminated string from simulated memory the way
// strncpy_from_kernel_nofault does: a bad address yields an empty string,
// not a fault.
func readCString(m *interp.Machine, addr uint64) string {
	if m == nil {
		return ""
	}
	var b []byte
	for len(b) < maxBprintfString-1 {
		v, f := m.TLB.Load8(addr + uint64(len(b)))
		if f != nil {
			return ""
		}
		if v == 0 {
			break
		}
		b = append(b, byte(v))
	}
	return string(b)
}

// formatIP renders %pI4, %pi4, %pI6 and %pi6 like lib/vsprintf.c; an
// unreadable address prints as all zeroes, as the kernel's copy does.
func formatIP(m *interp.Machine, addr uint64, kind, family byte) string {
	size := 4
	if family == '6' {
		size = 16
	}
	raw := make([]byte, size)
	if m == nil || m.ReadMem(addr, raw) != nil {
		clear(raw)
	}
	switch {
	case family == '4' && kind == 'I':
		return netip.AddrFrom4([4]byte(raw)).String()
	case family == '4':
		return fmt.Sprintf("%03d.%03d.%03d.%03d", raw[0], raw[1], raw[2], raw[3])
	case kind == 'I':
		var parts []string
		for i := 0; i < 16; i += 2 {
			parts = append(parts, fmt.Sprintf("%02x%02x", raw[i], raw[i+1]))
		}
		return strings.Join(parts, ":")
	}
	return fmt.Sprintf("%x", raw)
}
