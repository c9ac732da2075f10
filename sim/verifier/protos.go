package verifier

import (
	"github.com/cilium/ebpf/btf"

	"github.com/bpfsim/bpfsim/sim/uapi"
)

// ArgType is enum bpf_arg_type: what a helper expects in a register.
type ArgType uint8

const (
	ArgDontCare      ArgType = iota // unused argument
	ArgAnything                     // any initialised value
	ArgConstMapPtr                  // a map (CONST_PTR_TO_MAP)
	ArgPtrToMapKey                  // key_size readable bytes
	ArgPtrToMapValue                // value_size readable bytes
	// ArgPtrToUninitMapValue is value_size bytes the helper writes
	// (ARG_PTR_TO_MAP_VALUE | MEM_UNINIT | MEM_WRITE).
	ArgPtrToUninitMapValue
	// ArgPtrToMem is readable memory whose size is the next argument
	// (ARG_PTR_TO_MEM | MEM_RDONLY).
	ArgPtrToMem
	// ArgPtrToUninitMem is memory the helper fills, sized by the next
	// argument (ARG_PTR_TO_UNINIT_MEM).
	ArgPtrToUninitMem
	ArgConstSize       // a size known to be 1 or more and bounded
	ArgConstSizeOrZero // a bounded size, possibly 0
	ArgPtrToCtx        // the program's context
	// ArgConstAllocSizeOrZero is the size of the memory a helper returns:
	// a known constant (ARG_CONST_ALLOC_SIZE_OR_ZERO).
	ArgConstAllocSizeOrZero
	// ArgPtrToRingbufMemRelease is a ring buffer record the helper gives
	// back: the pointer bpf_ringbuf_reserve returned, unmoved
	// (ARG_PTR_TO_RINGBUF_MEM | OBJ_RELEASE).
	ArgPtrToRingbufMemRelease
	// ArgPtrToFunc is a callback: a function's address (ARG_PTR_TO_FUNC).
	ArgPtrToFunc
	// ArgPtrToStackOrNull is a stack pointer or NULL, passed on as is
	// (ARG_PTR_TO_STACK | PTR_MAYBE_NULL).
	ArgPtrToStackOrNull
	// ArgPtrToMemOrNull is ArgPtrToMem, or NULL with a size of 0
	// (ARG_PTR_TO_MEM | PTR_MAYBE_NULL | MEM_RDONLY).
	ArgPtrToMemOrNull
	// ArgPtrToSpinLock is the struct bpf_spin_lock of a map value
	// (ARG_PTR_TO_SPIN_LOCK).
	ArgPtrToSpinLock
	// ArgPtrToConstStr is a NUL-terminated string the verifier can read:
	// in the value of a read-only, frozen map, at a constant offset
	// (ARG_PTR_TO_CONST_STR).
	ArgPtrToConstStr
	// ArgPtrToUninitMemOrNull is ArgPtrToUninitMem, or NULL with a size
	// of 0 (ARG_PTR_TO_MEM_OR_NULL | MEM_WRITE).
	ArgPtrToUninitMemOrNull
	// ArgPtrToU32InOut is a u32 the helper reads and writes: 4 bytes,
	// initialised and aligned (ARG_PTR_TO_FIXED_SIZE_MEM | MEM_WRITE |
	// MEM_ALIGNED with arg_size 4).
	ArgPtrToU32InOut
	// ArgPtrToU64Out is a 64-bit result the helper writes: 8 aligned
	// bytes, uninitialised before (ARG_PTR_TO_FIXED_SIZE_MEM |
	// MEM_UNINIT | MEM_WRITE | MEM_ALIGNED with arg_size 8).
	ArgPtrToU64Out
	// ArgPtrToTimer is the struct bpf_timer of a map value
	// (ARG_PTR_TO_TIMER).
	ArgPtrToTimer
	// ArgPtrToDynptr is a struct bpf_dynptr on the stack
	// (ARG_PTR_TO_DYNPTR); FuncProto.Dynptr says which and what the
	// helper does with it.
	ArgPtrToDynptr
	// ArgPtrToBTFID is a kernel object of the struct FuncProto.ArgStruct
	// names (ARG_PTR_TO_BTF_ID), not NULL.
	ArgPtrToBTFID
	// ArgPtrToMapValueOrNull is ArgPtrToMapValue or NULL
	// (ARG_PTR_TO_MAP_VALUE_OR_NULL): a local storage's initial value.
	ArgPtrToMapValueOrNull
	// ArgPtrToBTFIDOrNull is ArgPtrToBTFID or NULL
	// (ARG_PTR_TO_BTF_ID_OR_NULL).
	ArgPtrToBTFIDOrNull
)

// RetType is enum bpf_return_type.
type RetType uint8

const (
	RetInteger             RetType = iota // a number
	RetVoid                               // nothing: R0 is left uninitialised
	RetPtrToMapValueOrNull                // a value of the map argument, or NULL
	// RetPtrToRingbufMemOrNull is a new ring buffer record of the size
	// argument's bytes, or NULL (RET_PTR_TO_RINGBUF_MEM_OR_NULL).
	RetPtrToRingbufMemOrNull
	// RetPtrToDynptrMemOrNull is memory of the size argument's bytes in
	// the dynptr argument's data, or NULL (RET_PTR_TO_DYNPTR_MEM_OR_NULL):
	// a slice, which ends with its dynptr.
	RetPtrToDynptrMemOrNull
	// RetPtrToBTFIDTrusted is a kernel object of FuncProto.RetStruct the
	// kernel vouches for (RET_PTR_TO_BTF_ID_TRUSTED).
	RetPtrToBTFIDTrusted
)

// FuncProto is struct bpf_func_proto without the function: the types the
// verifier checks a helper call against.
type FuncProto struct {
	Ret  RetType
	Args [5]ArgType
	// PktAccess lets packet pointers be passed for memory arguments.
	PktAccess bool
	// GPLOnly helpers may only be called by GPL-compatible programs.
	GPLOnly bool
	// ChangesPktData helpers may move or rewrite the packet
	// (bpf_helper_changes_pkt_data): every packet pointer is invalid
	// after the call.
	ChangesPktData bool
	// CheckFormat is, for a helper that formats (bpf_snprintf), the
	// check of its format, the constant string of its ArgPtrToConstStr
	// argument, for the arguments its last argument's constant byte
	// count holds (check_bpf_snprintf_call's bpf_bprintf_prepare).
	CheckFormat func(format string, nargs int) error
	// Dynptr describes the ArgPtrToDynptr arguments.
	Dynptr [5]DynptrArg
	// ArgStruct names the struct of the ArgPtrToBTFID arguments
	// (arg*_btf_id).
	ArgStruct [5]string
	// RetStruct is the struct a RetPtrToBTFIDTrusted points to
	// (ret_btf_id).
	RetStruct *btf.Struct
}

// HelperProtos are the prototypes of the kernel's helpers that bpfsim
// implements, as the kernel declares them.
var HelperProtos = map[int32]*FuncProto{
	uapi.FuncMapLookupElem: {
		Ret: RetPtrToMapValueOrNull, PktAccess: true,
		Args: [5]ArgType{ArgConstMapPtr, ArgPtrToMapKey},
	},
	uapi.FuncMapUpdateElem: {
		PktAccess: true,
		Args:      [5]ArgType{ArgConstMapPtr, ArgPtrToMapKey, ArgPtrToMapValue, ArgAnything},
	},
	uapi.FuncMapDeleteElem: {
		PktAccess: true,
		Args:      [5]ArgType{ArgConstMapPtr, ArgPtrToMapKey},
	},
	uapi.FuncMapPushElem: {
		PktAccess: true,
		Args:      [5]ArgType{ArgConstMapPtr, ArgPtrToMapValue, ArgAnything},
	},
	uapi.FuncMapPopElem: {
		Args: [5]ArgType{ArgConstMapPtr, ArgPtrToUninitMapValue},
	},
	uapi.FuncMapPeekElem: {
		Args: [5]ArgType{ArgConstMapPtr, ArgPtrToUninitMapValue},
	},
	uapi.FuncMapLookupPercpuElem: {
		Ret: RetPtrToMapValueOrNull, PktAccess: true,
		Args: [5]ArgType{ArgConstMapPtr, ArgPtrToMapKey, ArgAnything},
	},
	// bpf_tail_call(ctx, prog_array, index): the fix-ups replace the
	// call; it returns only when the tail call fails.
	uapi.FuncTailCall: {
		Ret:  RetVoid,
		Args: [5]ArgType{ArgPtrToCtx, ArgConstMapPtr, ArgAnything},
	},
	uapi.FuncKtimeGetNs:        {},
	uapi.FuncGetPrandomU32:     {},
	uapi.FuncGetSmpProcessorID: {},
	uapi.FuncTracePrintk: {
		GPLOnly: true,
		Args:    [5]ArgType{ArgPtrToMem, ArgConstSize},
	},
	// bpf_perf_event_output_proto (kernel/trace/bpf_trace.c) and its
	// packet twins bpf_xdp_event_output_proto and bpf_skb_event_output_
	// proto (net/core/filter.c) share these types, none with pkt_access.
	uapi.FuncPerfEventOutput: {
		GPLOnly: true,
		Args:    [5]ArgType{ArgPtrToCtx, ArgConstMapPtr, ArgAnything, ArgPtrToMem, ArgConstSizeOrZero},
	},
	uapi.FuncPerfEventRead: {
		GPLOnly: true,
		Args:    [5]ArgType{ArgConstMapPtr, ArgAnything},
	},
	uapi.FuncPerfEventReadValue: {
		GPLOnly: true,
		Args:    [5]ArgType{ArgConstMapPtr, ArgAnything, ArgPtrToUninitMem, ArgConstSize},
	},
	// bpf_ringbuf_output_proto and bpf_ringbuf_query_proto
	// (kernel/bpf/ringbuf.c).
	uapi.FuncRingbufOutput: {
		Args: [5]ArgType{ArgConstMapPtr, ArgPtrToMem, ArgConstSizeOrZero, ArgAnything},
	},
	uapi.FuncRingbufQuery: {
		Args: [5]ArgType{ArgConstMapPtr, ArgAnything},
	},
	// bpf_ringbuf_reserve_proto, bpf_ringbuf_submit_proto and
	// bpf_ringbuf_discard_proto: reserve acquires a reference
	// (isAcquireFunction), submit and discard release it.
	uapi.FuncRingbufReserve: {
		Ret:  RetPtrToRingbufMemOrNull,
		Args: [5]ArgType{ArgConstMapPtr, ArgConstAllocSizeOrZero, ArgAnything},
	},
	uapi.FuncRingbufSubmit: {
		Ret:  RetVoid,
		Args: [5]ArgType{ArgPtrToRingbufMemRelease, ArgAnything},
	},
	uapi.FuncRingbufDiscard: {
		Ret:  RetVoid,
		Args: [5]ArgType{ArgPtrToRingbufMemRelease, ArgAnything},
	},
}

// bpf_loop_proto (kernel/bpf/bpf_iter.c): bpf_loop(nr_loops, callback_fn,
// callback_ctx, flags) calls callback_fn(index, callback_ctx) until it
// returns 1 or nr_loops times, and returns the calls made.
var loopProto = &FuncProto{
	Args: [5]ArgType{ArgAnything, ArgPtrToFunc, ArgPtrToStackOrNull, ArgAnything},
}

// bpf_for_each_map_elem_proto (kernel/bpf/bpf_iter.c):
// bpf_for_each_map_elem(map, callback_fn, callback_ctx, flags) calls
// callback_fn(map, key, value, callback_ctx) for each element until it
// returns 1, and returns the calls made.
var forEachMapElemProto = &FuncProto{
	Args: [5]ArgType{ArgConstMapPtr, ArgPtrToFunc, ArgPtrToStackOrNull, ArgAnything},
}

// The timer helpers' protos (kernel/bpf/helpers.c). bpf_timer_set_callback
// has a third argument the verifier's fix-up supplies, the program's aux.
var (
	timerInitProto        = &FuncProto{GPLOnly: true, Args: [5]ArgType{ArgPtrToTimer, ArgConstMapPtr, ArgAnything}}
	timerSetCallbackProto = &FuncProto{GPLOnly: true, Args: [5]ArgType{ArgPtrToTimer, ArgPtrToFunc}}
	timerStartProto       = &FuncProto{GPLOnly: true, Args: [5]ArgType{ArgPtrToTimer, ArgAnything, ArgAnything}}
	timerCancelProto      = &FuncProto{GPLOnly: true, Args: [5]ArgType{ArgPtrToTimer}}
)

func init() {
	HelperProtos[uapi.FuncTimerInit] = timerInitProto
	HelperProtos[uapi.FuncTimerSetCallback] = timerSetCallbackProto
	HelperProtos[uapi.FuncTimerStart] = timerStartProto
	HelperProtos[uapi.FuncTimerCancel] = timerCancelProto
	HelperProtos[uapi.FuncLoop] = loopProto
	for id, p := range dynptrProtos {
		HelperProtos[id] = p
	}
	HelperProtos[uapi.FuncForEachMapElem] = forEachMapElemProto
}

// isSyncCallbackCalling is is_sync_callback_calling_function for the
// helpers bpfsim has: they call a callback before they return.
func isSyncCallbackCalling(id int32) bool {
	return id == uapi.FuncLoop || id == uapi.FuncForEachMapElem || id == uapi.FuncUserRingbufDrain
}

// isAcquireFunction is is_acquire_function: the helpers whose result is
// a reference the program must release.
func isAcquireFunction(id int32) bool { return id == uapi.FuncRingbufReserve }

// UncheckedProto is the prototype bpfsim assumes for a helper registered
// without one: its arguments are not checked (the helper must validate
// what it is given, and faults on bad memory), its result is a scalar.
var UncheckedProto = &FuncProto{}

// The dynptr helpers' protos (kernel/bpf/helpers.c, kernel/bpf/ringbuf.c).
var dynptrProtos = map[int32]*FuncProto{
	// bpf_dynptr_from_mem(data, size, flags, ptr): a local dynptr over
	// memory the program may write.
	uapi.FuncDynptrFromMem: {
		Args:   [5]ArgType{ArgPtrToUninitMem, ArgConstSizeOrZero, ArgAnything, ArgPtrToDynptr},
		Dynptr: [5]DynptrArg{3: {Type: uapi.DynptrTypeLocal, Uninit: true}},
	},
	// bpf_ringbuf_reserve_dynptr(ringbuf, size, flags, ptr): a record,
	// its reference acquired even when the reservation fails.
	uapi.FuncRingbufReserveDynptr: {
		Args:   [5]ArgType{ArgConstMapPtr, ArgAnything, ArgAnything, ArgPtrToDynptr},
		Dynptr: [5]DynptrArg{3: {Type: uapi.DynptrTypeRingbuf, Uninit: true}},
	},
	uapi.FuncRingbufSubmitDynptr: {
		Ret:    RetVoid,
		Args:   [5]ArgType{ArgPtrToDynptr, ArgAnything},
		Dynptr: [5]DynptrArg{0: {Type: uapi.DynptrTypeRingbuf, Release: true}},
	},
	uapi.FuncRingbufDiscardDynptr: {
		Ret:    RetVoid,
		Args:   [5]ArgType{ArgPtrToDynptr, ArgAnything},
		Dynptr: [5]DynptrArg{0: {Type: uapi.DynptrTypeRingbuf, Release: true}},
	},
	// bpf_dynptr_read(dst, len, src, offset, flags).
	uapi.FuncDynptrRead: {
		Args:   [5]ArgType{ArgPtrToUninitMem, ArgConstSizeOrZero, ArgPtrToDynptr, ArgAnything, ArgAnything},
		Dynptr: [5]DynptrArg{2: {Rdonly: true}},
	},
	// bpf_dynptr_write(dst, offset, src, len, flags).
	uapi.FuncDynptrWrite: {
		Args:   [5]ArgType{ArgPtrToDynptr, ArgAnything, ArgPtrToMem, ArgConstSizeOrZero, ArgAnything},
		Dynptr: [5]DynptrArg{0: {Rdonly: true}},
	},
	// bpf_user_ringbuf_drain(map, callback_fn, callback_ctx, flags):
	// the callback gets each record in a dynptr, and callback_ctx.
	uapi.FuncUserRingbufDrain: {
		Args: [5]ArgType{ArgConstMapPtr, ArgPtrToFunc, ArgPtrToStackOrNull, ArgAnything},
	},
	// bpf_dynptr_data(ptr, offset, len): len bytes of the dynptr's data
	// at offset, or NULL.
	uapi.FuncDynptrData: {
		Ret:    RetPtrToDynptrMemOrNull,
		Args:   [5]ArgType{ArgPtrToDynptr, ArgAnything, ArgConstAllocSizeOrZero},
		Dynptr: [5]DynptrArg{0: {Rdonly: true}},
	},
}
