/* kvfree_call_rcu(): every kvfree_rcu()/kfree_rcu() enqueue.
 *
 * -DKVFREE_SYM=<symbol> and one of -DKVFREE_FENTRY / -DKVFREE_KPROBE select the attach kind.
 * 6.1 passes (head, func) and 6.3+ (head, ptr); both have head == NULL for headless calls, so
 * the kind count needs no signature switch. */
#include "common.bpf.h"

enum kvfree_kind {
	KVFREE_KIND_HEAD = 0,      /* kfree_rcu(ptr, rhf): object carries an rcu_head */
	KVFREE_KIND_HEADLESS = 1,  /* kfree_rcu_mightsleep(ptr) */
	KVFREE_KIND_MAX = 2,
};

BPF_PERCPU_ARRAY(kvfree_enqueued, u64, KVFREE_KIND_MAX);
BPF_HASH(kvfree_by_task, struct task_key, u64, TASK_MAP_SIZE);

static __always_inline int on_kvfree_call_rcu(void *head)
{
	u32 kind = head ? KVFREE_KIND_HEAD : KVFREE_KIND_HEADLESS;

	percpu_inc(kvfree_enqueued.lookup(&kind));
	struct task_key key = current_task_key();
	u64 zero = 0;

	task_add(kvfree_by_task.lookup_or_try_init(&key, &zero), 1);
	return 0;
}

#if defined(KVFREE_FENTRY)
KFUNC_PROBE_SYM(KVFREE_SYM, void *head, void *arg2)
{
	return on_kvfree_call_rcu(head);
}
#elif defined(KVFREE_KPROBE)
int kprobe_kvfree_call_rcu(struct pt_regs *ctx)
{
	return on_kvfree_call_rcu((void *)PT_REGS_PARM1(ctx));
}
#endif
