package sim

//go:generate ../scripts/gen-bpf.sh testdata/progs.bpf.c testdata/maps.bpf.c testdata/mapinmap.bpf.c testdata/core.bpf.c testdata/task.bpf.c testdata/timer.bpf.c testdata/timer_refused.bpf.c testdata/format.bpf.c testdata/dynptr.bpf.c testdata/dynptr_refused.bpf.c testdata/dynptr_kfunc.bpf.c testdata/dynptr_kfunc_refused.bpf.c testdata/dynptr_global.bpf.c testdata/iter.bpf.c testdata/iter_refused.bpf.c testdata/module_core.bpf.c testdata/mapiter.bpf.c testdata/externs.bpf.c
