/* An independent count of nolock page allocations for `stress nolock --measure`: a kretprobe
 * (kprobe machinery, not the fentry/fexit trampoline the collector uses) on the same symbol,
 * counting calls and NULL returns. Deliberately nothing else. */
#include "common.bpf.h"

BPF_PERCPU_ARRAY(nolock_indep, u64, 2);

int kretprobe_nolock_count(struct pt_regs *ctx)
{
	u32 key = 0;

	percpu_inc(nolock_indep.lookup(&key));
	if (!PT_REGS_RC(ctx)) {
		key = 1;
		percpu_inc(nolock_indep.lookup(&key));
	}
	return 0;
}
