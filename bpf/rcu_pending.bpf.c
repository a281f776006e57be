/* rcu_pending: enqueues (rcu_pending_enqueue), the radix -> linked-list fallback
 * (rcu_pending_enqueue_list), dequeues (rcu_pending_dequeue*), processing runs
 * (__process_finished_items) and each processed object (the pending's process callback), for
 * bcachefs's copy (6.12-6.17) or the core-kernel copy of a patched kernel.
 * -DPENDING_SYM=<symbol> and -DPENDING_FENTRY or -DPENDING_KPROBE; probes/layouts/pending.py
 * adds struct offsets (-DOFF_*) and which extra functions exist (-DHAVE_*).
 *
 * Per object: enqueue time, grace-period cookie source (rcu_state.gp_seq for RCU, the
 * pending's srcu_struct counter for SRCU; a cookie is compared only with its own counter) and
 * bytes (slab slot size, like kvfree_rcu). Kernel code only counts. */
#include "common.bpf.h"
#include "kmem.bpf.h"
#include "rcu_pending.h"

#ifndef TRACK_MAX
#define TRACK_MAX 65536
#endif

struct pinflight {
	u64 ts;
	u64 cookie;    /* the grace-period counter at enqueue */
	u64 ssp;       /* srcu_struct (0: RCU) whose counter the cookie came from */
	u64 bytes;
	u32 flavor;
	u32 cpu;
};

struct proc_run {  /* a running __process_finished_items() */
	u32 flavor;
	u32 objects;
};

BPF_PERCPU_ARRAY(pending_stats, u64, PS_MAX * NFL);
BPF_PERCPU_ARRAY(pending_lat_hist, u64, NFL * HIST_SLOTS);  /* log2(ns) enqueue -> process */
BPF_PERCPU_ARRAY(pending_gp_hist, u64, NFL * HIST_SLOTS);   /* log2(1 + grace periods) */
BPF_PERCPU_ARRAY(pending_run_hist, u64, NFL * HIST_SLOTS);  /* log2(objects) per run */
BPF_HASH(pending_inflight, u64, struct pinflight, TRACK_MAX);
BPF_HASH(pending_by_task, struct task_key, u64, TASK_MAP_SIZE);
BPF_HASH(pending_runs, u64, struct proc_run, 1024);  /* pid_tgid -> running processing */
BPF_HASH(pending_callbacks, u64, u64, 64);           /* process fn address -> enqueues */

static __always_inline void ps_add(u32 stat, u32 flavor, u64 n)
{
	u32 idx = stat * NFL + (flavor & 1);
	u64 *c = pending_stats.lookup(&idx);
	if (c)
		*c += n;
}

static __always_inline void hist_inc(void *map_lookup_result)
{
	u64 *h = map_lookup_result;
	if (h)
		(*h)++;
}

/* The srcu_struct of a struct rcu_pending (0: normal RCU). */
static __always_inline u64 pending_ssp(u64 pending)
{
	return read_u64(pending + OFF_PENDING_SRCU);
}

/* The grace-period counter a cookie of this flavor comes from (unsigned long, low two bits
 * are state: RCU_SEQ_CTR_SHIFT). */
static __always_inline u64 gp_counter(u64 ssp)
{
	if (!ssp)
		return gp_seq_now();
#if defined(OFF_SRCU_SUP) && defined(OFF_SRCU_GP_SEQ)
	return read_u64(read_u64(ssp + OFF_SRCU_SUP) + OFF_SRCU_GP_SEQ);
#else
	return 0;
#endif
}

static __always_inline int on_pending_enqueue(u64 pending, u64 obj)
{
	if (!is_armed())
		return 0;  /* the tool is still attaching: a free path may not be hooked yet */
	u64 ssp = pending_ssp(pending);
	u32 flavor = ssp ? FL_SRCU : FL_RCU;
	bool is_vmalloc = false;
	u64 start;
	u64 bytes = slab_lookup(obj, &is_vmalloc, &start);

	ps_add(PS_ENQ, flavor, 1);
	ps_add(PS_ENQ_BYTES, flavor, bytes);
	if (!bytes)
		ps_add(PS_ENQ_UNSIZED, flavor, 1);

	struct task_key key = current_task_key();
	u64 zero = 0;
	task_add(pending_by_task.lookup_or_try_init(&key, &zero), 1);

	u64 fn = read_u64(pending + OFF_PENDING_PROCESS);
	u64 *seen = pending_callbacks.lookup_or_try_init(&fn, &zero);
	if (seen)
		__sync_fetch_and_add(seen, 1);

	struct pinflight v = {};
	v.ts = bpf_ktime_get_ns();
	v.ssp = ssp;
	v.cookie = gp_counter(ssp);
	v.bytes = bytes;
	v.flavor = flavor;
	v.cpu = bpf_get_smp_processor_id();
	if (!sampled(obj)) {
		ps_add(PS_UNTRACKED, flavor, 1);
		ps_add(PS_UNTRACKED_BYTES, flavor, bytes);
		return 0;
	}
	if (pending_inflight.lookup(&obj))
		ps_add(PS_REPLACED, flavor, 1);
	if (pending_inflight.update(&obj, &v)) {
		ps_add(PS_UNTRACKED, flavor, 1);
		ps_add(PS_UNTRACKED_BYTES, flavor, bytes);
	}
	return 0;
}

#if defined(PENDING_FENTRY)
KFUNC_PROBE_SYM(PENDING_SYM, void *pending, void *obj)
{
	return on_pending_enqueue(to_scalar(pending), to_scalar(obj));
}
#elif defined(PENDING_KPROBE)
int kprobe_rcu_pending_enqueue(struct pt_regs *ctx)
{
	return on_pending_enqueue(PT_REGS_PARM1(ctx), PT_REGS_PARM2(ctx));
}
#endif

/* Extra hooks are kprobes in both modes (one program per function and mode otherwise). */

#ifdef HAVE_ENQUEUE_LIST
/* rcu_pending_enqueue_list(p, seq, head, ptr, flags): the radix tree (or its darray slot)
 * could not be allocated; ptr != NULL in kvfree_rcu() mode. */
int kprobe_pending_enqueue_list(struct pt_regs *ctx)
{
	u64 pending = read_u64(PT_REGS_PARM1(ctx) + OFF_PCPU_PARENT);
	u32 flavor = pending_ssp(pending) ? FL_SRCU : FL_RCU;
	ps_add(PT_REGS_PARM4(ctx) ? PS_KV_LIST : PS_LIST, flavor, 1);
	return 0;
}
#endif

/* rcu_pending_dequeue*() returned an object: it will not be processed. */
int kretprobe_pending_dequeue(struct pt_regs *ctx)
{
	u64 obj = PT_REGS_RC(ctx);
	if (!obj || !sampled(obj))
		return 0;
	struct pinflight *v = pending_inflight.lookup(&obj);
	if (!v) {
		ps_add(PS_DEQ_UNMATCHED, FL_RCU, 1);
		return 0;
	}
	ps_add(PS_DEQ, v->flavor, 1);
	ps_add(PS_DEQ_BYTES, v->flavor, v->bytes);
	pending_inflight.delete(&obj);
	return 0;
}

#ifdef HAVE_PROCESS_FINISHED
int kprobe_pending_process_run(struct pt_regs *ctx)
{
	u64 pending = PT_REGS_PARM1(ctx);
	struct proc_run run = {};
	run.flavor = pending_ssp(pending) ? FL_SRCU : FL_RCU;
	ps_add(PS_RUNS, run.flavor, 1);
	if (read_u64(pending + OFF_PENDING_PROCESS) == RCU_PENDING_KVFREE) {
		ps_add(PS_KV_RUNS, run.flavor, 1);  /* its objects: the kvfree_call_rcu probe */
		return 0;
	}
	u64 id = bpf_get_current_pid_tgid();
	pending_runs.update(&id, &run);
	return 0;
}

int kretprobe_pending_process_run(struct pt_regs *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	struct proc_run *run = pending_runs.lookup(&id);
	if (!run)
		return 0;
	u32 slot = (run->flavor & 1) * HIST_SLOTS + log2_slot(run->objects);
	hist_inc(pending_run_hist.lookup(&slot));
	pending_runs.delete(&id);
	return 0;
}
#endif

/* A process callback (pending, obj): the object's grace period is over. Attached to each
 * known callback (layout.PROCESS_CALLBACKS); the enqueue side records every callback it sees
 * in pending_callbacks, so objects of callbacks not hooked show up as still pending. */
int kprobe_pending_processed(struct pt_regs *ctx)
{
	u64 obj = PT_REGS_PARM2(ctx);
	u64 id = bpf_get_current_pid_tgid();
	struct proc_run *run = pending_runs.lookup(&id);
	if (run)
		run->objects++;
	if (!sampled(obj))
		return 0;
	struct pinflight *v = pending_inflight.lookup(&obj);
	if (!v) {
		ps_add(PS_PROC_UNMATCHED, run ? run->flavor : FL_RCU, 1);
		return 0;
	}
	u32 flavor = v->flavor & 1;
	u64 delta = bpf_ktime_get_ns() - v->ts;
	u64 gps = (gp_counter(v->ssp) - v->cookie) >> 2;  /* unsigned: wrap-safe */
	u32 slot = flavor * HIST_SLOTS + log2_slot(delta);
	hist_inc(pending_lat_hist.lookup(&slot));
	slot = flavor * HIST_SLOTS + log2_slot(gps + 1);
	hist_inc(pending_gp_hist.lookup(&slot));
	ps_add(PS_PROC, flavor, 1);
	ps_add(PS_PROC_BYTES, flavor, v->bytes);
	pending_inflight.delete(&obj);
	return 0;
}
