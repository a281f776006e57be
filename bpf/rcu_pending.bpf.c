/* rcu_pending_enqueue(pending, obj): enqueues on an rcu_pending (bcachefs or a patched kernel).
 * -DPENDING_SYM=<symbol> and -DPENDING_FENTRY or -DPENDING_KPROBE. */
#include "common.bpf.h"

BPF_PERCPU_ARRAY(pending_enqueued, u64, 1);
BPF_HASH(pending_by_task, struct task_key, u64, TASK_MAP_SIZE);

static __always_inline int on_rcu_pending_enqueue(void)
{
	u32 zero = 0;

	percpu_inc(pending_enqueued.lookup(&zero));
	struct task_key key = current_task_key();
	u64 zero = 0;

	task_add(pending_by_task.lookup_or_try_init(&key, &zero), 1);
	return 0;
}

#if defined(PENDING_FENTRY)
KFUNC_PROBE_SYM(PENDING_SYM, void *pending, void *obj)
{
	return on_rcu_pending_enqueue();
}
#elif defined(PENDING_KPROBE)
int kprobe_rcu_pending_enqueue(struct pt_regs *ctx)
{
	return on_rcu_pending_enqueue();
}
#endif
