/* try_alloc_pages_noprof / alloc_pages_nolock_noprof: attempts and failures (NULL return).
 * -DNOLOCK_SYM=<symbol>, -DNOLOCK_GFP_ARG when the first argument is gfp_t (6.18+), and one of
 * -DNOLOCK_FENTRY (fexit: arguments and return together), -DNOLOCK_KPROBE (kretprobe only:
 * the return value is what is counted), -DNOLOCK_TRACEPOINT (kmem:mm_page_alloc stand-in). */
#include "common.bpf.h"

enum nolock_stat {
	NOLOCK_ATTEMPTS = 0,
	NOLOCK_FAILURES = 1,
	NOLOCK_STAT_MAX = 2,
};

BPF_PERCPU_ARRAY(nolock_stats, u64, NOLOCK_STAT_MAX);

static __always_inline int on_nolock_return(void *page)
{
	u32 key = NOLOCK_ATTEMPTS;

	percpu_inc(nolock_stats.lookup(&key));
	if (!page) {
		key = NOLOCK_FAILURES;
		percpu_inc(nolock_stats.lookup(&key));
	}
	return 0;
}

#if defined(NOLOCK_FENTRY)
#if defined(NOLOCK_GFP_ARG)
KRETFUNC_PROBE_SYM(NOLOCK_SYM, unsigned int gfp, int nid, unsigned int order, void *page)
#else
KRETFUNC_PROBE_SYM(NOLOCK_SYM, int nid, unsigned int order, void *page)
#endif
{
	return on_nolock_return(page);
}
#elif defined(NOLOCK_KPROBE)
int kretprobe_nolock(struct pt_regs *ctx)
{
	return on_nolock_return((void *)PT_REGS_RC(ctx));
}
#elif defined(NOLOCK_TRACEPOINT)
/* Stand-in: nolock allocations pass a gfp mask without any reclaim bit
 * (__GFP_DIRECT_RECLAIM|__GFP_KSWAPD_RECLAIM = 0xc00). Other such callers look alike. */
TRACEPOINT_PROBE(kmem, mm_page_alloc)
{
	if (args->gfp_flags & 0xc00)
		return 0;
	return on_nolock_return(args->pfn == (unsigned long)-1 ? (void *)0 : (void *)1);
}
#endif
