/* An independent count of nolock page allocations for `stress nolock --measure`: kretprobes
 * (kprobe machinery, not the fentry/fexit trampolines the collector uses) on the same
 * symbols, counting calls and NULL returns. The inner function's calls that return into the
 * wrapper (the kretprobe's restored return address, PT_REGS_IP, is inside
 * NOLOCK_WRAPPER_START..END) are the wrapper's and are counted there. */
#include "common.bpf.h"

BPF_PERCPU_ARRAY(nolock_indep, u64, 2);

static __always_inline int count(struct pt_regs *ctx)
{
	u32 key = 0;

	percpu_inc(nolock_indep.lookup(&key));
	if (!PT_REGS_RC(ctx)) {
		key = 1;
		percpu_inc(nolock_indep.lookup(&key));
	}
	return 0;
}

int kretprobe_nolock_count(struct pt_regs *ctx)
{
	return count(ctx);
}

int kretprobe_nolock_count_inner(struct pt_regs *ctx)
{
#if defined(NOLOCK_WRAPPER_START) && defined(NOLOCK_WRAPPER_END)
	u64 ret = PT_REGS_IP(ctx);

	if (ret >= NOLOCK_WRAPPER_START && ret < NOLOCK_WRAPPER_END)
		return 0;
#endif
	return count(ctx);
}
