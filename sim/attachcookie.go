package sim

import (
	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// bpf_get_attach_cookie (kernel/trace/bpf_trace.c): the number a program
// was attached with, which tells apart the attachments of one program
// (one handler for many functions or tracepoints). A tracing link takes
// it (TracingOptions.Cookie, as cilium/ebpf's link.TracingOptions), and
// each run through that link reads it; a test run reads 0, having no
// attachment. Offered where the kernel offers it: kprobe, tracepoint and
// raw tracepoint programs, and tracing programs other than iterators
// (tracing_prog_func_proto: those with a trampoline, and tp_btf).

const funcGetAttachCookie = 174

var attachCookieProto = &verifier.FuncProto{Ret: verifier.RetInteger, Args: [5]verifier.ArgType{verifier.ArgPtrToCtx}}

func (k *Kernel) registerAttachCookie() {
	h := &Helper{ID: funcGetAttachCookie, Proto: attachCookieProto, Fn: func(m *interp.Machine, _, _, _, _, _ uint64) (uint64, error) {
		return k.cpuOf(m).cookie, nil
	}}
	if err := k.RegisterHelper(h); err != nil {
		panic(err) // registered once, at boot
	}
	k.helperTypes[funcGetAttachCookie] = []ebpf.ProgramType{ebpf.Kprobe, ebpf.TracePoint, ebpf.RawTracepoint, ebpf.Tracing}
}

// attached is a program attached through a link, with the link's cookie.
type attached struct {
	l      *TracingLink
	p      *Program
	cookie uint64
}

// runAttached runs the attached programs on c, each with its cookie,
// stopping at the first error.
func (k *Kernel) runAttached(c *CPU, progs []attached, ctx, budget uint64) error {
	defer func() { c.cookie = 0 }()
	for _, a := range progs {
		c.cookie = a.cookie
		if _, err := k.runWithCtx(c, a.p, ctx, budget); err != nil {
			return err
		}
	}
	return nil
}
