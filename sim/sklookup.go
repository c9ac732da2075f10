package sim

import (
	"encoding/binary"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// sk_lookup programs (BPF_PROG_TYPE_SK_LOOKUP, net/core/filter.c): they
// run when a connection or datagram looks for a socket, and pass it
// (SK_PASS) or drop it (SK_DROP), reading struct bpf_sk_lookup: the
// address family, the protocol, the remote and local addresses and
// ports. The verifier rewrites their loads into loads from the kernel's
// struct bpf_sk_lookup_kern (verifier/sklookup.go), which a test run
// builds from the context it is given, as bpf_prog_test_run_sk_lookup
// does: for IPv4 the IPv6 addresses read 0 (their pointers are NULL), and
// the other way round.
//
// Missing: sockets: the context's sk (PTR_TO_SOCKET_OR_NULL) is refused at
// load, and bpf_sk_assign and bpf_sk_release with it; a test run selects
// no socket, so its context comes back with a cookie of 0.

// prepareSkLookup is bpf_prog_test_run_sk_lookup's set-up: a context and
// no data; no socket in it, nothing past local_port, a port that fits 16
// bits, and an IP family.
func (k *Kernel) prepareSkLookup(cpu *CPU, data, ctx []byte) (*runEnv, error) {
	if len(data) != 0 {
		return nil, errors.Wrap(uapi.EINVAL, "sk_lookup test runs take a context and no data")
	}
	if ctx == nil {
		return nil, errors.Wrap(uapi.EINVAL, "sk_lookup test runs need a struct bpf_sk_lookup context")
	}
	// bpf_ctx_init: a shorter context is zero-filled, a longer one may
	// only have zeros past the struct.
	user := make([]byte, verifier.SkLookupSize)
	copy(user, ctx)
	for _, b := range ctx[min(len(ctx), len(user)):] {
		if b != 0 {
			return nil, errors.Wrap(uapi.E2BIG, "context bytes past struct bpf_sk_lookup are not zero")
		}
	}
	le := binary.LittleEndian
	if le.Uint64(user[0:]) != 0 {
		return nil, errors.Wrap(uapi.EINVAL, "a test run's context may not name a socket")
	}
	for _, b := range user[64:] {
		if b != 0 {
			return nil, errors.Wrap(uapi.EINVAL, "a test run's context must be zero past local_port (ingress_ifindex)")
		}
	}
	localPort := le.Uint32(user[60:])
	if localPort > 0xffff {
		return nil, errors.Wrapf(uapi.ERANGE, "local_port %d does not fit 16 bits", localPort)
	}
	// struct bpf_sk_lookup_kern, then the two struct in6_addr its IPv6
	// pointers point to.
	kern := make([]byte, verifier.SkLookupKernSize+32)
	family := uint16(le.Uint32(user[8:]))
	le.PutUint16(kern[verifier.SkLookupKernFamily:], family)
	le.PutUint16(kern[verifier.SkLookupKernProtocol:], uint16(le.Uint32(user[12:])))
	copy(kern[verifier.SkLookupKernSport:], user[36:38])
	le.PutUint16(kern[verifier.SkLookupKernDport:], uint16(localPort))
	switch family {
	case afInet:
		copy(kern[verifier.SkLookupKernV4Saddr:], user[16:20])
		copy(kern[verifier.SkLookupKernV4Daddr:], user[40:44])
	case afInet6:
		copy(kern[verifier.SkLookupKernSize:], user[20:36])
		copy(kern[verifier.SkLookupKernSize+16:], user[44:60])
	default:
		return nil, errors.Wrapf(uapi.EAFNOSUPPORT, "address family %d: want AF_INET or AF_INET6", family)
	}
	addr, buf, err := cpu.run.raw.load(k.mem, kern)
	if err != nil {
		return nil, err
	}
	if family == afInet6 {
		le.PutUint64(buf[verifier.SkLookupKernV6Saddr:], addr+verifier.SkLookupKernSize)
		le.PutUint64(buf[verifier.SkLookupKernV6Daddr:], addr+verifier.SkLookupKernSize+16)
	}
	return &runEnv{r1: addr, output: func() ([]byte, []byte, error) {
		// The context comes back with the cookie of the socket
		// selected: none.
		out := append([]byte(nil), user...)
		clear(out[0:8])
		return nil, out, nil
	}}, nil
}
