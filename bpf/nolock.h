/* nolock family: the indexes of bpf/nolock.bpf.c's counters (nolock_stats rows: nolock_stat)
 * and contexts; the one definition, read by rcupending_tools/families/nolock.py. */
#ifndef RCUPENDING_NOLOCK_H
#define RCUPENDING_NOLOCK_H

enum nolock_stat {
	NOLOCK_ATTEMPTS = 0,
	NOLOCK_FAILURES = 1,
	NOLOCK_PAGES = 2, /* pages obtained: sum of 1 << order over successes */
	NOLOCK_MEMCG_FAILURES = 3, /* failures whose memcg charge failed (NOLOCK_MEMCG_CAUSE) */
	NOLOCK_STAT_MAX = 4,
};

/* The context of a call (from the per-CPU preempt count). */
enum nolock_ctx {
	NOLOCK_CTX_TASK = 0,
	NOLOCK_CTX_SOFTIRQ = 1,
	NOLOCK_CTX_HARDIRQ = 2,
	NOLOCK_CTX_NMI = 3,
	NOLOCK_CTX_UNKNOWN = 4,
};

#define NOLOCK_NO_ARG 0x7fffffff /* order/nid/gfp the mechanism cannot see */

#endif
