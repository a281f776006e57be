/* Shared declarations for rcupending-tools BPF programs (compiled by bcc).
 * Kernel code only counts; names, labels and units live in Python. */
#ifndef RCUPENDING_COMMON_BPF_H
#define RCUPENDING_COMMON_BPF_H

#include <uapi/linux/ptrace.h>
#include <linux/sched.h>

#ifndef TASK_MAP_SIZE
#define TASK_MAP_SIZE 4096
#endif

/* Index of the per-CPU `lost` counters (read by rcupending_tools/pipeline/collector.py). */
enum lost_reason {
	LOST_TASK_MAP_FULL = 0,
	LOST_NOLOCK_KEY_MAP_FULL = 1,   /* nolock by order/nid/gfp/context: map full */
	LOST_NOLOCK_STACK_MAP_FULL = 2, /* nolock by call stack: map full */
	LOST_NOLOCK_NO_STACK = 3,       /* nolock: bpf_get_stack() failed */
	LOST_VMALLOC_MAP_FULL = 4,      /* kvfree: a vmalloc object's bytes not kept (counts unsized) */
	LOST_PENDING_TGID_MAP_FULL = 5, /* kvfree: a process's pending slot not made (counts in other) */
	LOST_MAX = 8,
};

/* fentry on a symbol passed in by -D: indirection so the macro argument expands first. */
#define KFUNC_PROBE_SYM(sym, ...) KFUNC_PROBE(sym, __VA_ARGS__)
#define KRETFUNC_PROBE_SYM(sym, ...) KRETFUNC_PROBE(sym, __VA_ARGS__)

struct task_key {
	u32 tgid;
	char comm[TASK_COMM_LEN];
};

/* A level (objects, bytes) with its high-water mark since attach. The
 * peak is taken from the value this add produced; concurrent adds on other CPUs can make it
 * miss a peak by their in-flight share, never invent one that did not exist. */
struct gauge {
	s64 objects;
	s64 bytes;
	s64 peak_objects;
	s64 peak_bytes;
};

static __always_inline void gauge_add(struct gauge *g, s64 objects, s64 bytes)
{
	if (!g)
		return;
	s64 o = __sync_fetch_and_add(&g->objects, objects) + objects;
	s64 b = __sync_fetch_and_add(&g->bytes, bytes) + bytes;
	if (o > g->peak_objects)
		g->peak_objects = o;
	if (b > g->peak_bytes)
		g->peak_bytes = b;
}

#endif
