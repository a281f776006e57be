/* The any-context page allocator: try_alloc_pages_noprof (6.15), alloc_pages_nolock_noprof
 * (6.16+, gfp argument from 6.18) and alloc_frozen_pages_nolock_noprof (6.18+, which the
 * wrapper calls and kmalloc_nolock()'s slab refill calls directly).
 *
 * Counting rule (exactly once): the program on NOLOCK_SYM (the public function) counts every
 * call of it. On 6.18+ a second program on NOLOCK_INNER_SYM (alloc_frozen_pages_nolock_noprof)
 * counts the calls that do NOT come from the wrapper: a call whose stack holds a return address
 * inside the wrapper (NOLOCK_WRAPPER_START..END) is the wrapper's and is skipped there. The
 * compiler may also inline the inner function into the wrapper (Debian 7.3 does): then the
 * inner program sees only the direct calls, and the rule still counts each allocation once.
 *
 * -DNOLOCK_SYM=<symbol>, -DNOLOCK_GFP_ARG when the first argument is gfp_t (6.18+), one of
 * -DNOLOCK_FENTRY (fexit: arguments and return together), -DNOLOCK_KPROBE (kretprobe only:
 * the return value and stack; no arguments) or -DNOLOCK_TRACEPOINT (kmem:mm_page_alloc
 * stand-in), and, when kallsyms has them, -DNOLOCK_PREEMPT_COUNT_ADDR / -DNOLOCK_PCPU_OFF_ADDR
 * with -DNOLOCK_NMI_MASK / -DNOLOCK_HARDIRQ_MASK (the per-CPU preempt count and its layout,
 * for the context: task, softirq, hard IRQ, NMI; the low 32 bits are read). */
#include "common.bpf.h"
#include "nolock.h"

#define NOLOCK_FRAMES 12

struct nolock_key {
	u32 order;
	s32 nid;
	u32 gfp;
	u32 ctx;
};

struct nolock_val {
	u64 attempts;
	u64 failures;
};

struct nolock_stack {
	u64 ip[NOLOCK_FRAMES];
};

BPF_PERCPU_ARRAY(nolock_stats, u64, NOLOCK_STAT_MAX);
BPF_HASH(nolock_by_key, struct nolock_key, struct nolock_val, 1024);
BPF_HASH(nolock_by_stack, struct nolock_stack, struct nolock_val, 2048);

#ifdef NOLOCK_MEMCG_CAUSE
/* fexit of __memcg_kmem_charge_page() (fentry kind only): a failed charge leaves the cgroup
 * id of the memcg it tried (current->active_memcg, as set by bpf_map_memcg_enter() for arena
 * pages; 0 when none was set: the task's own memcg) in this CPU's slot, with bit 63 set. The
 * nolock call's fexit on the same CPU takes it: that failure's cause. */
BPF_PERCPU_ARRAY(nolock_charge_fail, u64, 1);
BPF_HASH(nolock_memcg_fail, u64, u64, 256); /* cgroup id -> failures */

static __always_inline u64 active_memcg_cgroup_id(void)
{
	void *task = (void *)bpf_get_current_task();
	void *memcg = 0, *cgrp = 0, *kn = 0;
	u64 id = 0;

	bpf_probe_read_kernel(&memcg, sizeof(memcg), task + OFF_TASK_ACTIVE_MEMCG);
	if (!memcg)
		return 0;
	bpf_probe_read_kernel(&cgrp, sizeof(cgrp), memcg + OFF_MEMCG_CSS_CGROUP);
	if (!cgrp)
		return 0;
	bpf_probe_read_kernel(&kn, sizeof(kn), cgrp + OFF_CGROUP_KN);
	if (!kn)
		return 0;
	bpf_probe_read_kernel(&id, sizeof(id), kn + OFF_KERNFS_NODE_ID);
	return id;
}

KRETFUNC_PROBE(__memcg_kmem_charge_page, void *page, unsigned int gfp, int order, int ret)
{
	u32 zero = 0;
	u64 *slot;

	if (ret == 0)
		return 0;
	slot = nolock_charge_fail.lookup(&zero);
	if (slot)
		*slot = active_memcg_cgroup_id() | (1ULL << 63);
	return 0;
}

static __always_inline void nolock_take_cause(int failed)
{
	u32 zero = 0;
	u64 *slot = nolock_charge_fail.lookup(&zero);

	if (!slot || !*slot)
		return;
	if (failed) {
		u64 id = *slot & ~(1ULL << 63), one = 1;
		u32 key = NOLOCK_MEMCG_FAILURES;
		percpu_inc(nolock_stats.lookup(&key));
		u64 *n = nolock_memcg_fail.lookup(&id);
		if (n)
			__sync_fetch_and_add(n, 1);
		else
			nolock_memcg_fail.update(&id, &one);
	}
	*slot = 0;
}
#else
static __always_inline void nolock_take_cause(int failed) {}
#endif

static __always_inline u32 nolock_context(void)
{
#if defined(NOLOCK_PREEMPT_COUNT_ADDR) && defined(NOLOCK_PCPU_OFF_ADDR) && \
	defined(NOLOCK_NMI_MASK) && defined(NOLOCK_HARDIRQ_MASK)
	u64 off = 0;
	u32 pc = 0;
	u64 cpu = bpf_get_smp_processor_id();

	if (bpf_probe_read_kernel(&off, sizeof(off), (void *)(NOLOCK_PCPU_OFF_ADDR + cpu * 8)))
		return NOLOCK_CTX_UNKNOWN;
	if (bpf_probe_read_kernel(&pc, sizeof(pc), (void *)(NOLOCK_PREEMPT_COUNT_ADDR + off)))
		return NOLOCK_CTX_UNKNOWN;
	if (pc & NOLOCK_NMI_MASK) /* the layout differs by version: layout.preempt_masks */
		return NOLOCK_CTX_NMI;
	if (pc & NOLOCK_HARDIRQ_MASK)
		return NOLOCK_CTX_HARDIRQ;
	if (pc & 0x00000100) /* SOFTIRQ_OFFSET: serving a softirq (not just bh disabled) */
		return NOLOCK_CTX_SOFTIRQ;
	return NOLOCK_CTX_TASK;
#else
	return NOLOCK_CTX_UNKNOWN;
#endif
}

static __always_inline void nolock_add(struct nolock_val *v, int failed)
{
	__sync_fetch_and_add(&v->attempts, 1);
	if (failed)
		__sync_fetch_and_add(&v->failures, 1);
}

static __always_inline int from_wrapper(struct nolock_stack *st)
{
#if defined(NOLOCK_WRAPPER_START) && defined(NOLOCK_WRAPPER_END)
#pragma unroll
	for (int i = 0; i < NOLOCK_FRAMES; i++) {
		if (st->ip[i] >= NOLOCK_WRAPPER_START && st->ip[i] < NOLOCK_WRAPPER_END)
			return 1;
	}
#endif
	return 0;
}

static __always_inline int on_nolock_return(void *ctx, void *page, u32 order, s32 nid, u32 gfp,
					    int inner)
{
	u32 key = NOLOCK_ATTEMPTS;
	int failed = page == 0;
	struct nolock_stack st = {};
	int have_stack = bpf_get_stack(ctx, &st.ip, sizeof(st.ip), 0) > 0;

	if (inner && have_stack && from_wrapper(&st))
		return 0; /* the wrapper's own program counts this call when it returns */

	percpu_inc(nolock_stats.lookup(&key));
	nolock_take_cause(failed);
	if (failed) {
		key = NOLOCK_FAILURES;
		percpu_inc(nolock_stats.lookup(&key));
	} else if (order < 32) {
		key = NOLOCK_PAGES;
		u64 *pages = nolock_stats.lookup(&key);
		if (pages)
			*pages += 1ULL << order;
	}

	struct nolock_key k = {};
	k.order = order;
	k.nid = nid;
	k.gfp = gfp;
	k.ctx = nolock_context();
	struct nolock_val zero = {};
	struct nolock_val *v = nolock_by_key.lookup_or_try_init(&k, &zero);
	if (v)
		nolock_add(v, failed);
	else
		count_lost(LOST_NOLOCK_KEY_MAP_FULL);

	if (!have_stack) {
		count_lost(LOST_NOLOCK_NO_STACK);
		return 0;
	}
	struct nolock_val *s = nolock_by_stack.lookup_or_try_init(&st, &zero);
	if (s)
		nolock_add(s, failed);
	else
		count_lost(LOST_NOLOCK_STACK_MAP_FULL);
	return 0;
}

#if defined(NOLOCK_FENTRY)
#if defined(NOLOCK_GFP_ARG)
KRETFUNC_PROBE_SYM(NOLOCK_SYM, unsigned int gfp, int nid, unsigned int order, void *page)
{
	return on_nolock_return(ctx, page, order, nid, gfp, 0);
}
#ifdef NOLOCK_INNER_SYM
KRETFUNC_PROBE_SYM(NOLOCK_INNER_SYM, unsigned int gfp, int nid, unsigned int order, void *page)
{
	return on_nolock_return(ctx, page, order, nid, gfp, 1);
}
#endif
#else
KRETFUNC_PROBE_SYM(NOLOCK_SYM, int nid, unsigned int order, void *page)
{
	return on_nolock_return(ctx, page, order, nid, NOLOCK_NO_ARG, 0);
}
#endif
#elif defined(NOLOCK_KPROBE)
int kretprobe_nolock(struct pt_regs *ctx)
{
	return on_nolock_return(ctx, (void *)PT_REGS_RC(ctx), NOLOCK_NO_ARG, NOLOCK_NO_ARG,
				NOLOCK_NO_ARG, 0);
}

int kretprobe_nolock_inner(struct pt_regs *ctx)
{
	return on_nolock_return(ctx, (void *)PT_REGS_RC(ctx), NOLOCK_NO_ARG, NOLOCK_NO_ARG,
				NOLOCK_NO_ARG, 1);
}
#elif defined(NOLOCK_TRACEPOINT)
/* Stand-in: nolock allocations pass a gfp mask without any reclaim bit
 * (__GFP_DIRECT_RECLAIM|__GFP_KSWAPD_RECLAIM = 0xc00). Other such callers look alike.
 * No nid or gfp argument here: the tracepoint shows the allocator's mask, not the caller's. */
TRACEPOINT_PROBE(kmem, mm_page_alloc)
{
	if (args->gfp_flags & 0xc00)
		return 0;
	return on_nolock_return(args, args->pfn == (unsigned long)-1 ? (void *)0 : (void *)1,
				args->order, NOLOCK_NO_ARG, NOLOCK_NO_ARG, 0);
}
#endif
