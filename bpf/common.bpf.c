/* Shared maps and helpers, prepended by the loader (bpfload.py) to every probe file:
 * bcc rewrites map calls only in the main source, never in an included header. */
#include "common.bpf.h"

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

/* Set by user space once every program of the tool is attached (live.LiveSource.attach). Until
 * then enqueue hooks count nothing: an object enqueued while its free path is not hooked yet
 * would otherwise look pending forever (rcu_pending frees within a grace period). */
BPF_ARRAY(armed, u64, 1);

static __always_inline bool is_armed(void)
{
	u32 zero = 0;
	u64 *a = armed.lookup(&zero);
	return a && *a;
}
