/* kvfree_rcu(): enqueues at kvfree_call_rcu() and the frees that end each object's wait.
 *
 * Defines (set by rcupending_tools/layout.py from the running kernel's kallsyms and BTF):
 *   KVFREE_SYM, and KVFREE_FENTRY or KVFREE_KPROBE     attach kind
 *   KVFREE_ARGS_OFFSET       6.1: kvfree_call_rcu(head, func): ptr = head - func (head != 0)
 *   PAGE_OFFSET_BASE_ADDR, VMEMMAP_BASE_ADDR, VMALLOC_BASE_ADDR   &page_offset_base, ...
 *   PAGE_STRUCT_SIZE, OFF_PAGE_COMPOUND_HEAD, OFF_SLAB_CACHE, OFF_KMEM_CACHE_SIZE
 *   SLAB_BY_PAGE_TYPE (page_type >> 24 == SLAB_TYPE) or SLAB_BY_FLAG (flags bit SLAB_FLAG_BIT),
 *   OFF_PAGE_TYPE / OFF_PAGE_FLAGS
 *   RCU_GP_SEQ_ADDR          &rcu_state.gp_seq (grace periods elapsed)
 *   HAVE_KVFREE_RCU_BULK (+ OFF_BNODE_NR/RECORDS), HAVE_KVFREE_RCU_LIST,
 *   HAVE_KFREE_RCU_WORK_CTX (6.1: kprobes on kmem_cache_free_bulk and vfree),
 *   HAVE_KFREE_RCU_SHEAF (+ OFF_SHEAF_SIZE, OFF_SHEAF_OBJECTS), HAVE_RCU_FREE_SHEAF_NOBARN
 *   TRACK_MAX                per-object tracking cap (objects over it count as untracked)
 *   HAVE_PHASES              fentry/fexit on queue_rcu_work and kfree_rcu_work: batch wait,
 *                            grace period and reclaim phases of krc objects
 *   HAVE_GP_DURATION         fentry on rcu_gp_init/rcu_gp_cleanup: RCU grace-period durations
 *   HAVE_KVFREE_BARRIER, HAVE_SHRINK_SCAN, HAVE_PAGE_REFILL, HAVE_KFREE_NOLOCK, HAVE_DEFER_KFREE
 *                            counters (and barrier durations) of those kernel functions
 *
 * Kernel code only counts: per-CPU counters, per-path log2 histograms, per-task sums. */
#include "common.bpf.h"
#include "kmem.bpf.h"
#include "kvfree_rcu.h"

struct inflight {
	u64 ts;
	u64 gp_seq;
	u64 bytes;
	u32 tgid;
	u16 cpu;
	u16 route;  /* 0: krc batching, 1: sheaf bypass */
};

#ifdef HAVE_PENDING_BACKEND
#define PENDING_BACKEND 1  /* kvfree_rcu() backed by rcu_pending (a patched kernel) */
#else
#define PENDING_BACKEND 0
#endif

/* Per-task context of a running kvfree path: which path, and for kvfree_call_rcu() itself the
 * object and whether synchronize_rcu() ran inside it (the headless inline fallback). */
struct path_ctx {
	u32 path;
	u32 synced;
	u64 ptr;
};

struct task_bytes {
	u64 objects;
	u64 bytes;
	u64 headless;        /* of those, kfree_rcu_mightsleep() objects */
	u64 headless_bytes;
	u64 untracked;       /* of those, not tracked per object: their frees are not seen */
	u64 untracked_bytes;
};

struct freed_sum {  /* tracked objects gone (freed, replaced), by the enqueuing process */
	u64 objects;
	u64 bytes;
};

#ifndef TRACK_MAX
#define TRACK_MAX 65536
#endif

struct kv_counters {
	u64 v[KV_SLOTS];
};

BPF_PERCPU_ARRAY(kv_counters, struct kv_counters, 1);  /* every figure, one read: kv_slot */
BPF_HASH(kv_inflight, u64, struct inflight, TRACK_MAX);
BPF_HASH(kvfree_by_task, struct task_key, struct task_bytes, TASK_MAP_SIZE);
BPF_HASH(kv_freed_by_tgid, u32, struct freed_sum, TASK_MAP_SIZE);
BPF_HASH(kv_ctx, u64, struct path_ctx, 4096);  /* pid_tgid -> running kvfree path */

struct batch_mark {  /* a kfree_rcu batch handed to RCU; its reclaim work running */
	u64 queued;
	u64 started;
};
BPF_TABLE("lru_hash", u64, u64, kv_batch_queued, 1024);  /* rcu_work -> queue time */
BPF_HASH(kv_work, u64, struct batch_mark, 1024);          /* pid_tgid in kfree_rcu_work */
BPF_HASH(kv_barrier_start, u64, u64, 1024);               /* pid_tgid -> call time */
BPF_ARRAY(kv_gp_start, u64, 1);
BPF_ARRAY(kv_pending_gauge, struct gauge, 1);  /* tracked pending now, and its peak */

/* This CPU's counters, opened for a group of updates (NULL: not found, nothing counted). */
static __always_inline struct kv_counters *kc_open(void)
{
	u32 zero = 0;
	struct kv_counters *kc = kv_counters.lookup(&zero);
	if (kc)
		kc->v[KV_BEGIN]++;
	return kc;
}

static __always_inline void kc_close(struct kv_counters *kc)
{
	if (kc)
		kc->v[KV_END]++;
}

static __always_inline void kc_add(struct kv_counters *kc, u32 idx, u64 n)
{
	if (kc && idx < KV_SLOTS)
		kc->v[idx] += n;
}

static __always_inline void stat_add(struct kv_counters *kc, u32 idx, u64 n)
{
	kc_add(kc, KV_STATS + idx, n);
}

static __always_inline void ev_add(struct kv_counters *kc, u32 idx, u64 n)
{
	kc_add(kc, KV_EVENTS + idx, n);
}

/* One event on its own (its own bracket). */
static __always_inline void event(u32 idx, u64 n)
{
	struct kv_counters *kc = kc_open();
	ev_add(kc, idx, n);
	kc_close(kc);
}

static __always_inline void hist_add(struct kv_counters *kc, u32 base, u32 row, u64 value, u64 n)
{
	kc_add(kc, base + (row * HIST_SLOTS + (log2_slot(value) & (HIST_SLOTS - 1))), n);
}

static __always_inline void dur_add_n(struct kv_counters *kc, u32 which, u64 ns, u64 n)
{
	hist_add(kc, KV_DUR, which, ns, n);
}

/* Tracked pending: the global gauge with its peak (compare), and this CPU's net share. */
static __always_inline void pending_add(struct kv_counters *kc, s64 objects, s64 bytes)
{
	u32 zero = 0;
	gauge_add(kv_pending_gauge.lookup(&zero), objects, bytes);
	kc_add(kc, KV_GAUGE, (u64)objects);
	kc_add(kc, KV_GAUGE + 1, (u64)bytes);
}

/* A tracked object of process `tgid` left the tracking map (freed or replaced). */
static __always_inline void gone_by_tgid(u32 tgid, u64 bytes)
{
	struct freed_sum zero = {};
	struct freed_sum *f = kv_freed_by_tgid.lookup_or_try_init(&tgid, &zero);
	if (f) {
		__sync_fetch_and_add(&f->objects, 1);
		__sync_fetch_and_add(&f->bytes, bytes);
	} else {
		count_lost(LOST_TASK_MAP_FULL);
	}
}

/* Counts one kvfree_call_rcu() object; false (nothing counted) until the tool is armed. */
static __always_inline bool on_enqueue(u64 ptr, bool headless)
{
	if (!is_armed()) {
		event(EV_UNARMED, 1);
		return false;
	}
	bool is_vmalloc = false;
	u64 start;
	u64 bytes = slab_lookup(ptr, &is_vmalloc, &start);
	struct task_key key = current_task_key();
	struct inflight val = {};
	val.ts = bpf_ktime_get_ns();
	val.gp_seq = gp_seq_now();
	val.bytes = bytes;
	val.tgid = key.tgid;
	val.cpu = bpf_get_smp_processor_id();

	struct kv_counters *kc = kc_open();
	stat_add(kc, headless ? ST_ENQ_HEADLESS : ST_ENQ_HEAD, 1);
	stat_add(kc, ST_ENQ_BYTES, bytes);
	if (!bytes)
		stat_add(kc, ST_ENQ_UNSIZED, 1);
	if (is_vmalloc)
		stat_add(kc, ST_ENQ_VMALLOC, 1);
	/* untracked: counted, never matched on the free side (object unknown: 6.1 headless
	 * under fentry; outside the sample; the map full) */
	bool tracked = false;
	u32 old_tgid = 0;
	u64 old_bytes = 0;
	bool replaced = false;
	if (ptr && !sampled(ptr)) {
		ev_add(kc, EV_UNSAMPLED, 1);
	} else if (ptr) {
		struct inflight *old = kv_inflight.lookup(&ptr);
		if (old) {  /* its free was never seen: it leaves the map here, as if freed */
			replaced = true;
			old_tgid = old->tgid;
			old_bytes = old->bytes;
			u32 c = old->cpu;
			stat_add(kc, ST_REPLACED, 1);
			stat_add(kc, ST_REPLACED_BYTES, old_bytes);
			if (c < KV_NCPUS) {
				kc_add(kc, KV_GONE + 2 * c, 1);
				kc_add(kc, KV_GONE + 2 * c + 1, old_bytes);
			}
			pending_add(kc, -1, -(s64)old_bytes);
		}
		tracked = kv_inflight.update(&ptr, &val) == 0;
		if (tracked)
			pending_add(kc, 1, bytes);
	}
	if (!tracked) {
		stat_add(kc, ST_UNTRACKED, 1);
		stat_add(kc, ST_UNTRACKED_BYTES, bytes);
	}
	kc_close(kc);

	struct task_bytes zero = {};
	struct task_bytes *t = kvfree_by_task.lookup_or_try_init(&key, &zero);
	if (t) {
		__sync_fetch_and_add(&t->objects, 1);
		__sync_fetch_and_add(&t->bytes, bytes);
		if (headless) {
			__sync_fetch_and_add(&t->headless, 1);
			__sync_fetch_and_add(&t->headless_bytes, bytes);
		}
		if (!tracked) {
			__sync_fetch_and_add(&t->untracked, 1);
			__sync_fetch_and_add(&t->untracked_bytes, bytes);
		}
	} else {
		count_lost(LOST_TASK_MAP_FULL);
	}
	if (replaced)
		gone_by_tgid(old_tgid, old_bytes);
	return true;
}

/* Phases of the krc objects freed by one call (a bulk page, a list kfree): inside
 * kfree_rcu_work the batch's queue time (queue_rcu_work) and start split the wait into batch
 * wait, grace period and reclaim; freed elsewhere (kvfree_rcu_drain_ready from the monitor,
 * the shrinker) the grace period had already ended when the monitor looked: one `ready`
 * duration. Per call, from the mean enqueue time of its objects (exact for one object): the
 * per-record cost stays one addition, so the 512-record bulk loop fits the verifier. */
struct phase_acc {
	u64 n;
	u64 ts_sum;
};

/* Running sums live in a per-CPU map, not on the stack: stack values that differ between a
 * record found and one not found would keep the verifier from merging its paths (2^records). */
BPF_PERCPU_ARRAY(kv_phase_acc, struct phase_acc, 2);  /* 0: bulk records, 1: list kfree */

struct phase_ctx {
	u64 queued;
	u64 started;
	struct phase_acc *acc;
};

static __always_inline void phases_begin(struct phase_ctx *pc, u32 slot)
{
	pc->queued = pc->started = 0;
	pc->acc = kv_phase_acc.lookup(&slot);
	if (pc->acc) {
		pc->acc->n = 0;
		pc->acc->ts_sum = 0;
	}
#ifdef HAVE_PHASES
	u64 id = bpf_get_current_pid_tgid();
	struct batch_mark *m = kv_work.lookup(&id);
	if (m && m->queued && m->started >= m->queued) {
		pc->queued = m->queued;
		pc->started = m->started;
	}
#endif
}

static __always_inline void phases_object(struct phase_ctx *pc, u64 enq_ts)
{
	if (pc->acc) {
		pc->acc->n += 1;
		pc->acc->ts_sum += enq_ts;
	}
}

static __always_inline void phases_end(struct phase_ctx *pc)
{
#ifdef HAVE_PHASES
	if (!pc->acc)
		return;
	u64 n = pc->acc->n;
	if (!n)
		return;
	u64 now = bpf_ktime_get_ns(), mean = pc->acc->ts_sum / n;
	struct kv_counters *kc = kc_open();
	if (pc->queued && pc->queued >= mean) {
		dur_add_n(kc, DUR_BATCH, pc->queued - mean, n);
		dur_add_n(kc, DUR_GP, pc->started - pc->queued, n);
		dur_add_n(kc, DUR_RECLAIM, now > pc->started ? now - pc->started : 0, n);
		ev_add(kc, EV_PHASED, n);
	} else {
		dur_add_n(kc, DUR_READY, now > mean ? now - mean : 0, n);
		ev_add(kc, EV_READY, n);
	}
	kc_close(kc);
#endif
}

/* The object at `ptr` finished waiting on `path`; `count_unmatched`: every object freed here is
 * a kvfree_rcu object, so one we never saw enqueued was queued before we attached. The program
 * that deletes the tracking entry accounts the object (once, whatever runs concurrently). */
static __always_inline void on_free(u64 ptr, u32 path, bool count_unmatched,
				    struct phase_ctx *pc)
{
	if (!sampled(ptr))
		return;  /* never tracked: no lookup */
	struct inflight *v = kv_inflight.lookup(&ptr);

	if (!v) {
		if (count_unmatched) {
			struct kv_counters *kc = kc_open();
			stat_add(kc, ST_UNMATCHED + path, 1);
			kc_close(kc);
		}
		return;
	}
	u64 ts = v->ts, gp = v->gp_seq, bytes = v->bytes;
	u32 tgid = v->tgid, cpu = v->cpu;
	if (kv_inflight.delete(&ptr) != 0)
		return;  /* another program took it first */
	u64 delta = bpf_ktime_get_ns() - ts;
	u64 gps = (gp_seq_now() - gp) >> 2; /* gp_seq: counter << 2 | state */
	if (pc)
		phases_object(pc, ts);
	struct kv_counters *kc = kc_open();
	hist_add(kc, KV_LAT, path, delta, 1);
	hist_add(kc, KV_GPS, path, gps + 1, 1);
	stat_add(kc, ST_FREED + path, 1);
	stat_add(kc, ST_FREED_BYTES + path, bytes);
	if (cpu < KV_NCPUS) {
		kc_add(kc, KV_GONE + 2 * cpu, 1);
		kc_add(kc, KV_GONE + 2 * cpu + 1, bytes);
	}
	pending_add(kc, -1, -(s64)bytes);
	kc_close(kc);
	gone_by_tgid(tgid, bytes);
}

static __always_inline u32 current_ctx(void)
{
	u64 id = bpf_get_current_pid_tgid();
	struct path_ctx *c = kv_ctx.lookup(&id);
	return c ? c->path : NPATH;
}

static __always_inline void ctx_enter(u32 path, u64 ptr)
{
	u64 id = bpf_get_current_pid_tgid();
	struct path_ctx c = {.path = path, .ptr = ptr};
	kv_ctx.update(&id, &c);
}

static __always_inline void ctx_exit(void)
{
	u64 id = bpf_get_current_pid_tgid();
	kv_ctx.delete(&id);
}

static __always_inline u64 object_of(void *head, void *arg2)
{
#ifdef KVFREE_ARGS_OFFSET
	return head ? (u64)head - (u64)arg2 : (u64)arg2;  /* 6.1: (head, offset) */
#else
	return (u64)arg2;
#endif
}

static __always_inline void enqueue_entry(void *head, void *arg2)
{
	u64 ptr = object_of(head, arg2);
	if (on_enqueue(ptr, !head))
		ctx_enter(PATH_INLINE, ptr);
}

/* kvfree_call_rcu() returns: if synchronize_rcu() ran inside it, the object was freed inline. */
static __always_inline void enqueue_exit(void)
{
	u64 id = bpf_get_current_pid_tgid();
	struct path_ctx *c = kv_ctx.lookup(&id);
	if (c && c->path == PATH_INLINE && c->synced)
		on_free(c->ptr, PATH_INLINE, true, NULL);
	kv_ctx.delete(&id);
}

static __always_inline void on_synchronize_rcu(void)
{
	u64 id = bpf_get_current_pid_tgid();
	struct path_ctx *c = kv_ctx.lookup(&id);
	if (c && c->path == PATH_INLINE)
		c->synced = 1;
}

#define BULK_CHUNK 512

/* Records [from, from + BULK_CHUNK) of an array of `n` kvfree_rcu objects freed now. */
static __always_inline void on_bulk_records(u64 records, u64 n, u32 from)
{
	struct phase_ctx pc;
	phases_begin(&pc, 0);
	for (u32 j = 0; j < BULK_CHUNK; j++) {
		u64 i = from + j;
		if (i >= n)
			break;
		on_free(read_u64(records + 8 * i), PATH_BULK, true, &pc);
	}
	phases_end(&pc);
}

#ifdef HAVE_KVFREE_RCU_BULK
/* kvfree_rcu_bulk(krcp, bnode, idx), 6.3+: every record of the bulk page is freed now
 * (kfree_bulk() for slab, a vfree() loop for vmalloc). */
static __always_inline void on_bulk_node(u64 bnode, u32 from)
{
	event(EV_BULK_PAGES, 1);
	on_bulk_records(bnode + OFF_BNODE_RECORDS, read_u64(bnode + OFF_BNODE_NR), from);
}
#endif

/* Channel 3 (kvfree_rcu_list; 6.1: inside kfree_rcu_work) frees each object with kvfree() ->
 * kfree(), whose pointer fentry cannot read (const void *): the kmem:kfree tracepoint sees it.
 * kv_active counts running list paths so every other kfree() in the system returns at once. */
BPF_ARRAY(kv_active, u64, 1);

static __always_inline void list_enter(u32 path)
{
	u32 zero = 0;
	u64 *a = kv_active.lookup(&zero);
	if (a)
		__sync_fetch_and_add(a, 1);
	ctx_enter(path, 0);
}

static __always_inline void list_exit(void)
{
	u32 zero = 0;
	u64 *a = kv_active.lookup(&zero);
	if (a)
		__sync_fetch_and_add(a, -1);
	ctx_exit();
}

TRACEPOINT_PROBE(kmem, kfree)
{
	u32 zero = 0;
	u64 *a = kv_active.lookup(&zero);
	if (!a || !*a)
		return 0;
	u32 c = current_ctx();
	if (c == PATH_LIST || c == PATH_BULK)  /* PATH_BULK: 6.1's kfree_rcu_work */
	{
		struct phase_ctx pc;
		phases_begin(&pc, 1);
		on_free((u64)args->ptr, PATH_LIST, !PENDING_BACKEND, &pc);
		phases_end(&pc);
	}
	return 0;
}

#if defined(HAVE_KFREE_RCU_WORK_CTX) || defined(HAVE_PENDING_BACKEND)
/* 6.1: kfree_rcu_work() frees bulk pages with kfree_bulk()/vfree() and the list with
 * kvfree(); the rcu_pending backend's __process_finished_items() frees each radix node with
 * kfree_bulk() and each list object with kvfree(). fentry cannot read those functions'
 * (const) void pointers: kprobes. */
int kprobe_kmem_cache_free_bulk(struct pt_regs *ctx)
{
	if (current_ctx() == PATH_BULK)
		on_bulk_records(PT_REGS_PARM3(ctx), PT_REGS_PARM2(ctx), 0);
	return 0;
}


int kprobe_vfree(struct pt_regs *ctx)
{
	if (current_ctx() == PATH_BULK)
	{
		struct phase_ctx pc;
		phases_begin(&pc, 1);
		/* rcu_pending keeps vmalloc objects on its lists; krc in bulk pages */
		on_free(PT_REGS_PARM1(ctx), PENDING_BACKEND ? PATH_LIST : PATH_BULK, true, &pc);
		phases_end(&pc);
	}
	return 0;
}
#endif

#ifdef HAVE_PENDING_BACKEND
#define RCU_PENDING_KVFREE 1  /* rcu_pending.process of the kvfree_rcu() pending */

/* __process_finished_items(pending, p, flags) of the kvfree_rcu() rcu_pending: every kfree_bulk(),
 * kvfree() until it returns frees kvfree_rcu objects whose grace period ended. */
int kprobe_pending_process_enter(struct pt_regs *ctx)
{
	if (read_u64(PT_REGS_PARM1(ctx) + OFF_PENDING_PROCESS) == RCU_PENDING_KVFREE)
		list_enter(PATH_BULK);
	return 0;
}

int kretprobe_pending_process_exit(struct pt_regs *ctx)
{
	if (current_ctx() == PATH_BULK)
		list_exit();
	return 0;
}
#endif

#ifdef HAVE_KFREE_RCU_SHEAF
/* rcu_free_sheaf(head): a whole sheaf of objects passed its grace period. */
static __always_inline void on_sheaf(u64 head)
{
	u32 n = 0;
	bpf_probe_read_kernel(&n, sizeof(n), (void *)(head + OFF_SHEAF_SIZE));
	for (u32 i = 0; i < 256; i++) {
		if (i >= n)
			break;
		on_free(read_u64(head + OFF_SHEAF_OBJECTS + 8 * (u64)i), PATH_SHEAF, true, NULL);
	}
}

static __always_inline void on_sheaf_taken(u64 obj)
{
	struct inflight *v = kv_inflight.lookup(&obj);
	struct kv_counters *kc = kc_open();
	stat_add(kc, ST_ENQ_SHEAF, 1);
	if (v) {
		stat_add(kc, ST_ENQ_SHEAF_BYTES, v->bytes);
		v->route = 1;
	}
	kc_close(kc);
}
#endif

#if defined(KVFREE_FENTRY) && defined(KVFREE_ARGS_OFFSET)
/* 6.1: the verifier refuses fentry reads of the rcu_callback_t argument, so the object is the
 * slab object holding the head; a headless object (pointer in that argument) is untracked. */
KFUNC_PROBE_SYM(KVFREE_SYM, void *head)
{
	bool is_vmalloc;
	u64 ptr = 0;

	if (head)
		slab_lookup(to_scalar(head), &is_vmalloc, &ptr);
	if (on_enqueue(ptr, !head))
		ctx_enter(PATH_INLINE, ptr);
	return 0;
}

KRETFUNC_PROBE_SYM(KVFREE_SYM, void *head)
{
	enqueue_exit();
	return 0;
}
#elif defined(KVFREE_FENTRY)
KFUNC_PROBE_SYM(KVFREE_SYM, void *head, void *arg2)
{
	enqueue_entry(head, arg2);
	return 0;
}

KRETFUNC_PROBE_SYM(KVFREE_SYM, void *head, void *arg2)
{
	enqueue_exit();
	return 0;
}
#endif

#if defined(KVFREE_FENTRY)

KFUNC_PROBE(synchronize_rcu)
{
	on_synchronize_rcu();
	return 0;
}

#ifdef HAVE_KVFREE_RCU_BULK
KFUNC_PROBE(kvfree_rcu_bulk, void *krcp, void *bnode, int idx)
{
	on_bulk_node(to_scalar(bnode), 0);
	return 0;
}
#endif

#ifdef HAVE_KVFREE_RCU_LIST
KFUNC_PROBE(kvfree_rcu_list, void *head)
{
	list_enter(PATH_LIST);
	return 0;
}

KRETFUNC_PROBE(kvfree_rcu_list, void *head)
{
	list_exit();
	return 0;
}
#endif

#if defined(HAVE_KFREE_RCU_WORK_CTX) || defined(HAVE_PHASES)
/* kfree_rcu_work(work): a batch's grace period is over and its reclaim starts. */
KFUNC_PROBE(kfree_rcu_work, void *work)
{
#ifdef HAVE_KFREE_RCU_WORK_CTX
	list_enter(PATH_BULK);
#endif
#ifdef HAVE_PHASES
	u64 rwork = to_scalar(work);  /* rcu_work starts with its work_struct */
	u64 *queued = kv_batch_queued.lookup(&rwork);
	struct batch_mark m = {.queued = queued ? *queued : 0, .started = bpf_ktime_get_ns()};
	u64 id = bpf_get_current_pid_tgid();
	kv_work.update(&id, &m);
	kv_batch_queued.delete(&rwork);
	event(EV_RECLAIM_WORK, 1);
#endif
	return 0;
}

KRETFUNC_PROBE(kfree_rcu_work, void *work)
{
#ifdef HAVE_KFREE_RCU_WORK_CTX
	list_exit();
#endif
#ifdef HAVE_PHASES
	u64 id = bpf_get_current_pid_tgid();
	kv_work.delete(&id);
#endif
	return 0;
}
#endif

#ifdef HAVE_PHASES
/* queue_rcu_work(wq, rwork) -> true: a batch (or another user's rcu_work) waits for a grace
 * period; only kfree_rcu_work's own rcu_works are looked up. */
KRETFUNC_PROBE(queue_rcu_work, void *wq, void *rwork, bool ret)
{
	if (ret) {
		u64 key = to_scalar(rwork), now = bpf_ktime_get_ns();
		kv_batch_queued.update(&key, &now);
	}
	return 0;
}
#endif

#ifdef HAVE_GP_DURATION
/* rcu_gp_init() -> true starts a grace period; rcu_gp_cleanup() ends it (one GP kthread). */
KRETFUNC_PROBE(rcu_gp_init, bool ret)
{
	u32 zero = 0;
	u64 *start = kv_gp_start.lookup(&zero);
	if (start && ret)
		*start = bpf_ktime_get_ns();
	return 0;
}

KFUNC_PROBE(rcu_gp_cleanup)
{
	u32 zero = 0;
	u64 *start = kv_gp_start.lookup(&zero);
	if (start && *start) {
		struct kv_counters *kc = kc_open();
		dur_add_n(kc, DUR_RCU_GP, bpf_ktime_get_ns() - *start, 1);
		ev_add(kc, EV_GP, 1);
		kc_close(kc);
		*start = 0;
	}
	return 0;
}
#endif

#ifdef HAVE_KVFREE_BARRIER
KFUNC_PROBE(kvfree_rcu_barrier)
{
	u64 id = bpf_get_current_pid_tgid(), now = bpf_ktime_get_ns();
	kv_barrier_start.update(&id, &now);
	return 0;
}

KRETFUNC_PROBE(kvfree_rcu_barrier)
{
	u64 id = bpf_get_current_pid_tgid();
	u64 *start = kv_barrier_start.lookup(&id);
	struct kv_counters *kc = kc_open();
	if (start) {
		dur_add_n(kc, DUR_BARRIER, bpf_ktime_get_ns() - *start, 1);
		kv_barrier_start.delete(&id);
	}
	ev_add(kc, EV_BARRIER, 1);
	kc_close(kc);
	return 0;
}
#endif

#ifdef HAVE_SHRINK_SCAN
KRETFUNC_PROBE(kfree_rcu_shrink_scan, void *shrink, void *sc, unsigned long ret)
{
	struct kv_counters *kc = kc_open();
	ev_add(kc, EV_SHRINK_SCAN, 1);
	if (ret != ~0UL)  /* SHRINK_STOP */
		ev_add(kc, EV_SHRINK_FREED, ret);
	kc_close(kc);
	return 0;
}
#endif

#ifdef HAVE_PAGE_REFILL
KFUNC_PROBE(fill_page_cache_func, void *work)
{
	event(EV_REFILL, 1);
	return 0;
}
#endif

#ifdef HAVE_KFREE_NOLOCK
/* 7.x kfree_rcu_nolock(): into an rcu_free sheaf, else deferred to irq_work, which then calls
 * kvfree_call_rcu() (counted there as an enqueue). Counted here, not tracked per object. */
KFUNC_PROBE(kfree_call_rcu_nolock, void *head, void *ptr)
{
	event(EV_NOLOCK_ENQ, 1);
	return 0;
}
#endif

#ifdef HAVE_DEFER_KFREE
KFUNC_PROBE(defer_kfree_rcu, void *head)
{
	event(EV_NOLOCK_DEFER, 1);
	return 0;
}
#endif

#ifdef HAVE_KFREE_RCU_SHEAF
#ifdef SHEAF_FREE_FLAGS_ARG
KRETFUNC_PROBE(__kfree_rcu_sheaf, void *s, void *obj, unsigned int free_flags, bool ret)
#else
KRETFUNC_PROBE(__kfree_rcu_sheaf, void *s, void *obj, bool ret)
#endif
{
	if (ret)
		on_sheaf_taken(to_scalar(obj));
	return 0;
}

KFUNC_PROBE(rcu_free_sheaf, void *head)
{
	on_sheaf(to_scalar(head));
	return 0;
}

#ifdef HAVE_RCU_FREE_SHEAF_NOBARN
KFUNC_PROBE(rcu_free_sheaf_nobarn, void *head)
{
	on_sheaf(to_scalar(head));
	return 0;
}
#endif
#endif

#elif defined(KVFREE_KPROBE)
/* kprobe fallback: enqueues and the krc paths; the sheaf path needs fexit. */
int kprobe_kvfree_call_rcu(struct pt_regs *ctx)
{
	enqueue_entry((void *)PT_REGS_PARM1(ctx), (void *)PT_REGS_PARM2(ctx));
	return 0;
}

int kretprobe_kvfree_call_rcu(struct pt_regs *ctx)
{
	enqueue_exit();
	return 0;
}

int kprobe_synchronize_rcu(struct pt_regs *ctx)
{
	on_synchronize_rcu();
	return 0;
}

int kprobe_ctx_bulk(struct pt_regs *ctx)
{
#ifdef HAVE_KVFREE_RCU_BULK
	on_bulk_node(PT_REGS_PARM2(ctx), 0);
#else
	list_enter(PATH_BULK);  /* 6.1: kfree_rcu_work */
#endif
	return 0;
}

int kprobe_kvfree_rcu_list(struct pt_regs *ctx)
{
	list_enter(PATH_LIST);
	return 0;
}

int kretprobe_list_exit(struct pt_regs *ctx)
{
	list_exit();
	return 0;
}
#endif
