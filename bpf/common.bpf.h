/* Shared helpers for rcupending-tools BPF programs (compiled by bcc).
 * Kernel code only counts; names, labels and units live in Python. */
#ifndef RCUPENDING_COMMON_BPF_H
#define RCUPENDING_COMMON_BPF_H

#include <uapi/linux/ptrace.h>
#include <linux/sched.h>

#ifndef TASK_MAP_SIZE
#define TASK_MAP_SIZE 4096
#endif

/* Index of the per-CPU `lost` counters (keep in sync with collector.LOST_REASONS). */
enum lost_reason {
	LOST_TASK_MAP_FULL = 0,
	LOST_MAX = 8,
};

/* fentry on a symbol passed in by -D: indirection so the macro argument expands first. */
#define KFUNC_PROBE_SYM(sym, ...) KFUNC_PROBE(sym, __VA_ARGS__)
#define KRETFUNC_PROBE_SYM(sym, ...) KRETFUNC_PROBE(sym, __VA_ARGS__)

struct task_key {
	u32 tgid;
	char comm[TASK_COMM_LEN];
};

BPF_PERCPU_ARRAY(lost, u64, LOST_MAX);

static __always_inline void count_lost(u32 reason)
{
	u64 *c = lost.lookup(&reason);
	if (c)
		(*c)++;
}

static __always_inline void percpu_inc(u64 *slot)
{
	if (slot)
		(*slot)++;
}

static __always_inline struct task_key current_task_key(void)
{
	struct task_key key = {};
	key.tgid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(&key.comm, sizeof(key.comm));
	return key;
}

/* Add `n` to a per-task counter found by map.lookup_or_try_init() (NULL: the map is full).
 * bcc rewrites map calls only outside macros, so callers do the lookup themselves. */
static __always_inline void task_add(u64 *counter, u64 n)
{
	if (counter)
		__sync_fetch_and_add(counter, n);
	else
		count_lost(LOST_TASK_MAP_FULL);
}

#endif
