/* kvfree_rcu(): enqueues at kvfree_call_rcu() and the frees that end each object's wait.
 *
 * Defines (set by rcupending_tools/layout.py from the running kernel's kallsyms and BTF):
 *   KVFREE_SYM, and KVFREE_FENTRY or KVFREE_KPROBE     attach kind
 *   KVFREE_ARGS_OFFSET       6.1: kvfree_call_rcu(head, func): ptr = head - func (head != 0)
 *   PAGE_OFFSET_BASE_ADDR, VMEMMAP_BASE_ADDR, VMALLOC_BASE_ADDR   &page_offset_base, ...
 *   PAGE_STRUCT_SIZE, OFF_PAGE_COMPOUND_HEAD, OFF_SLAB_CACHE, OFF_KMEM_CACHE_SIZE
 *   SLAB_BY_PAGE_TYPE (page_type >> 24 == SLAB_TYPE) or SLAB_BY_FLAG (flags bit SLAB_FLAG_BIT),
 *   OFF_PAGE_TYPE / OFF_PAGE_FLAGS
 *   RCU_GP_SEQ_ADDR          &rcu_state.gp_seq_polled (grace periods, normal or expedited)
 *   HAVE_KVFREE_RCU_BULK (+ OFF_BNODE_NR/RECORDS; BULK_BY_KPROBE: read by a kprobe in fentry
 *                            mode), HAVE_KVFREE_RCU_LIST,
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

#define LOAD(x) (*(volatile typeof(x) *)&(x))  /* a fresh load: no value carried by clang */

#define SLAB_FREE_NOLOCK 0x01  /* mm/slab.h, 7.x: __kfree_rcu_sheaf()'s free_flags */

struct inflight {
	u64 ts;
	u64 gp_seq;
	u64 bytes;
	u32 tgid;
	u16 cpu;
	u16 flags;  /* INF_*; above INF_SHIFT the log2 of its weight in kv_pending_tgid */
};

struct kv_cfg {
	u64 window_end;   /* ktime ns: every object followed until then (0 once passed) */
	u64 sample_mask;  /* then 1 in sample_mask + 1 (address hash) */
	u64 nwatch;
	u64 look_all;     /* look every free up: objects of the window may still be in the map
			   * (cleared by user space once ST_WINDOW_GONE = ST_WINDOW_TRACKED) */
	u64 early_seen;   /* user space only: frees from before attach seen at its last read */
	u64 window_cap;   /* user space only: the latest window_end it may push the window to */
	u32 watch[KV_WATCH_MAX];  /* tgids always followed and counted apart (a stress) */
};

#ifdef HAVE_PENDING_BACKEND
#define PENDING_BACKEND 1  /* kvfree_rcu() backed by rcu_pending (a patched kernel) */
#else
#define PENDING_BACKEND 0
#endif

/* Per-task context of a running kvfree path: which path, and for a headless kvfree_call_rcu()
 * the object (its size and CPU) that an inline synchronize_rcu() + kvfree() would free. */
struct path_ctx {
	u32 path;
	u32 synced;
	u64 ptr;
	u64 bytes;
	u32 cpu;
	u32 tracked;
	u64 sp0;  /* list paths: the stack pointer of the path's own kvfree() calls (0: none yet) */
};

struct task_bytes {  /* the followed objects of one process (tgid, comm), tracked or not */
	u64 objects;
	u64 bytes;
	u64 headless;        /* of those, kfree_rcu_mightsleep() objects */
	u64 headless_bytes;
	u64 sampled;         /* of those, followed only as the sample's (not window, not watched) */
	u64 sampled_bytes;
	u64 untracked;       /* of those, not in the tracking map (it was full) */
	u64 untracked_bytes;
};

#ifndef TRACK_MAX
#define TRACK_MAX 65536
#endif

struct kv_counters {
	u64 v[KV_SLOTS];
};

BPF_PERCPU_ARRAY(kv_counters, struct kv_counters, 1);  /* every figure, one read: kv_slot */
BPF_ARRAY(kv_cfg, struct kv_cfg, 1);          /* set by user space (families/kvfree.py) */
BPF_ARRAY(kv_bases, struct kbases, 1);        /* the kernel's base addresses, read once */
BPF_HASH(kv_inflight, u64, struct inflight, TRACK_MAX);
BPF_HASH(kvfree_by_task, struct task_key, struct task_bytes, TASK_MAP_SIZE);
/* Per enqueuing process, its weighted objects and bytes still in kv_inflight: a snapshot's
 * per-process pending split without reading the tracking map. Slots are never deleted (a
 * program may hold one while another empties it), so a full map sends new processes to the
 * KV_TGID_OTHER slot. */
struct tgid_pending {
	s64 objects;
	s64 bytes;
};
BPF_HASH(kv_pending_tgid, u32, struct tgid_pending, TASK_MAP_SIZE);
BPF_TABLE("lru_hash", u64, struct path_ctx, kv_ctx, 4096);  /* pid_tgid -> kvfree path */
/* A queued vmalloc object's bytes, found at its enqueue by a walk of the vmap tree and taken
 * back by its free (vfree() has the area, but a walk per record would not fit the bulk loop). */
BPF_HASH(kv_vmbytes, u64, u64, 16384);

struct batch_mark {  /* a kfree_rcu batch handed to RCU; its reclaim work running */
	u64 queued;
	u64 started;
};
BPF_TABLE("lru_hash", u64, u64, kv_batch_queued, 1024);  /* rcu_work -> queue time */
BPF_HASH(kv_work, u64, struct batch_mark, 1024);          /* pid_tgid in kfree_rcu_work */
BPF_HASH(kv_barrier_start, u64, u64, 1024);               /* pid_tgid -> call time */
BPF_ARRAY(kv_gp_start, u64, 1);
#ifdef PENDING_PEAK
BPF_ARRAY(kv_pending_gauge, struct gauge, 1);  /* pending now and its peak: a global atomic */
#endif

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

/* One count of a kv_stat on its own (its own bracket). */
static __always_inline void event_stat(u32 idx)
{
	struct kv_counters *kc = kc_open();
	stat_add(kc, idx, 1);
	kc_close(kc);
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

/* Pending: this CPU's net share of the gauge (every object), and with PENDING_PEAK (compare)
 * a global gauge with its high-water mark. */
static __always_inline void pending_add(struct kv_counters *kc, s64 objects, s64 bytes)
{
#ifdef PENDING_PEAK
	u32 zero = 0;
	gauge_add(kv_pending_gauge.lookup(&zero), objects, bytes);
#endif
	kc_add(kc, KV_GAUGE, (u64)objects);
	kc_add(kc, KV_GAUGE + 1, (u64)bytes);
}

static __always_inline struct kv_cfg *cfg_get(void)
{
	u32 zero = 0;
	return kv_cfg.lookup(&zero);
}

/* The kernel's base addresses: read once by the first program that needs them. */
static __always_inline struct kbases *bases_get(void)
{
	u32 zero = 0;
	struct kbases *b = kv_bases.lookup(&zero);
	if (b && !b->page_offset)
		kbases_read(b);
	return b;
}

static __always_inline u64 object_size(u64 ptr, u32 *kind, u64 *start)
{
	struct kbases *b = bases_get();
	*kind = MEM_UNSIZED;
	*start = ptr;
	return b ? object_lookup(b, ptr, kind, start) : 0;
}

/* The last object_size() of an enqueue on this CPU. Live objects on one page share its slab or
 * folio, and a page changes owner only once its objects are freed; a kvfree_rcu object is freed
 * after a grace period (polled, normal, expedited or synchronize_rcu()'s), and each advances
 * gp_seq_polled. So while gp_seq_polled has not moved, the lookup holds for objects on the same
 * page: one kernel read (the counter) instead of two or three (the page, its cache). */
struct size_memo {
	u64 page;
	u64 gp;
	u64 bytes;
	u32 kind;
};
/* Only kvfree_call_rcu()'s entry program uses it (MEMO_KVFREE): it reads the counter before
 * its object is queued, so that object's free moves the counter after the read. An exit
 * program (7.x's kfree_rcu_nolock() seen at __kfree_rcu_sheaf()'s exit, MEMO_NONE) reads it
 * after the object is queued, and may run in an NMI that interrupted the entry program. */
enum { MEMO_KVFREE, MEMO_NONE };
BPF_PERCPU_ARRAY(kv_size_memo, struct size_memo, 1);

static __always_inline u64 object_size_memo(u64 ptr, u32 *kind, u32 slot)
{
	u64 start, gp = 0;
	struct size_memo *m = NULL;
#ifdef RCU_GP_SEQ_POLLED  /* rcu_state.gp_seq moves only with normal grace periods */
	if (slot == MEMO_KVFREE) {
		gp = gp_seq_now();
		m = kv_size_memo.lookup(&slot);
	}
#endif
	if (m && gp && m->gp == gp && m->page == ptr >> 12) {
		*kind = m->kind;
		return m->bytes;
	}
	u64 bytes = object_size(ptr, kind, &start);
	if (m && bytes) {  /* slab or large: sized from the page */
		m->page = ptr >> 12;
		m->gp = gp;
		m->bytes = bytes;
		m->kind = *kind;
	}
	return bytes;
}

/* A vmalloc object enqueued: its bytes, kept for its free (0, unsized, if they cannot be). */
static __always_inline u64 vmalloc_enqueued(u64 ptr)
{
	u64 bytes = vmalloc_bytes(ptr);
	if (bytes && kv_vmbytes.update(&ptr, &bytes)) {
		count_lost(LOST_VMALLOC_MAP_FULL);
		return 0;
	}
	return bytes;
}

static __always_inline bool in_sample(u64 ptr, u64 mask)
{
	return ((((ptr >> 4) * 0x9E3779B97F4A7C15ULL) >> 40) & mask) == 0;
}

static __always_inline bool is_watched(struct kv_cfg *cfg, u64 n, u32 tgid)
{
	for (u32 i = 0; i < KV_WATCH_MAX; i++)
		if (i < n && cfg->watch[i] == tgid)
			return true;
	return false;
}

/* The kv_pending_tgid slot a followed object of `tgid` counts in: its process's (made on first
 * use), else the overflow slot; *flags says which (INF_PENDING, INF_OTHER), for its free. */
static __always_inline struct tgid_pending *tgid_slot(u32 tgid, u16 *flags)
{
	struct tgid_pending zero = {};
	struct tgid_pending *p = kv_pending_tgid.lookup_or_try_init(&tgid, &zero);
	if (p) {
		*flags |= INF_PENDING;
		return p;
	}
	count_lost(LOST_PENDING_TGID_MAP_FULL);
	u32 other = KV_TGID_OTHER;
	p = kv_pending_tgid.lookup(&other);
	if (p)
		*flags |= INF_PENDING | INF_OTHER;
	return p;
}

static __always_inline void tgid_add(struct tgid_pending *p, s64 objects, s64 bytes)
{
	if (p) {
		__sync_fetch_and_add(&p->objects, objects);
		__sync_fetch_and_add(&p->bytes, bytes);
	}
}

/* A record leaves kv_inflight (`gone`: 0/1): what its enqueue added to its slot, by its own
 * flags (slot, weight), not by the sample now. Branch-free but the slot's NULL check. */
static __always_inline void tgid_take(u32 tgid, u64 flags, u64 bytes, u64 gone)
{
	u32 key = tgid | (u32)-((flags / INF_OTHER) & 1);  /* INF_OTHER: KV_TGID_OTHER */
	u64 w = (1ULL << ((flags >> INF_SHIFT) & 63)) & -((flags / INF_PENDING) & 1 & gone);
	tgid_add(kv_pending_tgid.lookup(&key), -(s64)w, -(s64)(w * bytes));
}

/* Counts one enqueued object (kvfree_call_rcu(); 7.x also kfree_call_rcu_nolock() straight to
 * a sheaf), of `bytes` when the caller knows them (else looked up). Counters for every object;
 * per object (the tracking map, the per-task records) only those of the window, the sample or
 * a watched process. False (nothing counted) until the tool is armed; *out: the context an
 * inline free of a headless object needs; `memo`: MEMO_KVFREE from kvfree_call_rcu()'s entry. */
static __always_inline bool on_enqueue(u64 ptr, bool headless, u64 bytes, u32 kind,
				       struct path_ctx *out, u32 memo)
{
	if (!is_armed()) {
		event(EV_UNARMED, 1);
		return false;
	}
	struct kv_cfg *cfg = cfg_get();
	if (!cfg)
		return false;
	if (!bytes)
		bytes = object_size_memo(ptr, &kind, memo);
	if (kind == MEM_VMALLOC && !bytes && ptr)
		bytes = vmalloc_enqueued(ptr);
	/* The clock and the process only when needed: most objects are neither in the window
	 * (user space zeroes window_end once it has passed) nor watched nor sampled. */
	u64 now = cfg->window_end ? bpf_ktime_get_ns() : 0;
	bool window = now < cfg->window_end;
	/* one read: user space may change the watch list meanwhile (two reads could see it
	 * empty, then not, and match tgid 0) */
	u64 nwatch = LOAD(cfg->nwatch);
	u32 tgid = nwatch ? bpf_get_current_pid_tgid() >> 32 : 0;
	bool watched = nwatch && is_watched(cfg, nwatch, tgid);
	u64 mask = LOAD(cfg->sample_mask);  /* one read: the sample and the weight agree */
	bool follow = ptr && (window || watched || in_sample(ptr, mask));
	u32 cpu = 0;
	if (follow || out) {
		if (!now)
			now = bpf_ktime_get_ns();
		if (!nwatch)
			tgid = bpf_get_current_pid_tgid() >> 32;
		cpu = bpf_get_smp_processor_id();
	}
	bool tracked = false;
	u64 old_bytes = 0;

	struct kv_counters *kc = kc_open();
	stat_add(kc, headless ? ST_ENQ_HEADLESS : ST_ENQ_HEAD, 1);
	stat_add(kc, ST_ENQ_BYTES, bytes);
	if (!bytes)
		stat_add(kc, ST_ENQ_UNSIZED, 1);
	if (kind == MEM_VMALLOC)
		stat_add(kc, ST_ENQ_VMALLOC, 1);
	else if (kind == MEM_LARGE)
		stat_add(kc, ST_ENQ_LARGE, 1);
	pending_add(kc, 1, bytes);
	if (watched) {
		stat_add(kc, ST_W_ENQ, 1);
		stat_add(kc, ST_W_ENQ_BYTES, bytes);
		if (headless) {
			stat_add(kc, ST_W_HEADLESS, 1);
			stat_add(kc, ST_W_HEADLESS_BYTES, bytes);
		}
	}
	if (follow) {
		struct inflight *old = kv_inflight.lookup(&ptr);
		if (old) {  /* its free was never seen: it leaves pending here, as if freed */
			old_bytes = old->bytes;
			u32 c = old->cpu;
			u16 f = old->flags;
			stat_add(kc, ST_REPLACED, 1);
			stat_add(kc, ST_REPLACED_BYTES, old_bytes);
			if (c < KV_NCPUS) {
				kc_add(kc, KV_GONE + 2 * c, 1);
				kc_add(kc, KV_GONE + 2 * c + 1, old_bytes);
			}
			if (f & INF_WATCHED) {
				stat_add(kc, ST_W_GONE, 1);
				stat_add(kc, ST_W_GONE_BYTES, old_bytes);
			}
			stat_add(kc, ST_WINDOW_GONE, f & INF_WINDOW);
			pending_add(kc, -1, -(s64)old_bytes);
			tgid_take(old->tgid, f, old_bytes, 1);
		}
		struct inflight val = {};
		val.ts = now;
		val.gp_seq = gp_seq_now();
		val.bytes = bytes;
		val.tgid = tgid;
		val.cpu = cpu;
		val.flags = (window ? INF_WINDOW : 0) | (watched ? INF_WATCHED : 0);
		/* weighed by the inverse of its chance to be followed: 1 in the window or watched,
		 * else the sample's one_in (mask + 1, a power of two) */
		u32 shift = (window || watched) ? 0 : log2_slot(mask + 1);
		val.flags |= shift << INF_SHIFT;
		struct tgid_pending *tp = tgid_slot(tgid, &val.flags);
		tracked = kv_inflight.update(&ptr, &val) == 0;
		/* added after the insert: its free cannot come first, as it waits for a grace
		 * period this program (an RCU reader) holds off */
		if (tracked)
			tgid_add(tp, 1LL << shift, (s64)(bytes << shift));
		if (tracked) {
			stat_add(kc, ST_TRACKED, 1);
			stat_add(kc, ST_TRACKED_BYTES, bytes);
			stat_add(kc, ST_WINDOW_TRACKED, window);
		} else {
			stat_add(kc, ST_UNTRACKED, 1);
			stat_add(kc, ST_UNTRACKED_BYTES, bytes);
			if (watched) {
				stat_add(kc, ST_W_UNTRACKED, 1);
				stat_add(kc, ST_W_UNTRACKED_BYTES, bytes);
			}
		}
	} else {
		ev_add(kc, EV_UNSAMPLED, 1);
	}
	kc_close(kc);

	if (follow) {  /* attribution counts every followed object, even one the map refused */
		struct task_key key = {.tgid = tgid};
		bpf_get_current_comm(&key.comm, sizeof(key.comm));
		struct task_bytes zero = {};
		struct task_bytes *t = kvfree_by_task.lookup_or_try_init(&key, &zero);
		if (t) {
			__sync_fetch_and_add(&t->objects, 1);
			__sync_fetch_and_add(&t->bytes, bytes);
			if (!window && !watched) {
				__sync_fetch_and_add(&t->sampled, 1);
				__sync_fetch_and_add(&t->sampled_bytes, bytes);
			}
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
	}
	if (out) {
		out->path = PATH_INLINE;
		out->ptr = ptr;
		out->bytes = bytes;
		out->cpu = cpu;
		out->tracked = tracked;
	}
	return true;
}

/* Phases of the krc objects freed by one call (a bulk page, a list kfree): inside
 * kfree_rcu_work the batch's queue time (queue_rcu_work) and start split each followed
 * object's wait into batch wait, grace period and reclaim; freed elsewhere
 * (kvfree_rcu_drain_ready from the monitor, the shrinker) the grace period had already ended
 * when the monitor looked: one `ready` duration. Per object and without a branch, inside the
 * loop: an accounting after the loop would be walked by the verifier once per record (each
 * record's exit from the loop reaches it), tripling the bulk loop's cost. */

/* A free program's per-object working values live in per-CPU map memory, not in registers or
 * on the stack: the verifier does not track what it loads from a map, so both sides of each
 * per-object branch end in the same state and it checks one path per object (the 512-record
 * bulk loop fits every supported kernel's limit), not one per combination. One slot per
 * program (SC_*): a program does not nest in itself, another may interrupt it. */
#define REC_BATCH 16  /* records one read fetches (one helper call, not one per record) */

struct free_scratch {
	struct inflight rec;  /* the object's record, zero when not looked up or not found */
	u64 look;
	u64 deleted;          /* 1: this program deleted the record (and accounts the object) */
	u64 queued;           /* phases: the batch's queue_rcu_work time, 0 when unknown */
	u64 started;          /* ... and its kfree_rcu_work start */
	u64 vmbytes;          /* a vmalloc object's bytes kept at its enqueue, 0 when none */
	u64 memo_page;        /* the page of the last object sized in this run (~0: none) ... */
	u64 memo_bytes;       /* ... and its bytes: the objects of one run are live until it ends,
			       * so two on one page share its slab or folio */
	u64 recs[REC_BATCH];  /* a loop's records, read REC_BATCH at a time */
};
enum { SC_BULK, SC_LIST, SC_VFREE, SC_SHEAF, SC_INLINE_ENQ, SC_INLINE_SYNC, SC_SLOTS };
BPF_PERCPU_ARRAY(kv_free_scratch, struct free_scratch, SC_SLOTS);


/* What every free of one program run shares (looked up once, not per object). */
struct free_env {
	struct kv_cfg *cfg;
	struct kbases *bases;
	struct free_scratch *sc;
	u64 now;
	u64 gp;         /* grace periods now (rcu_state.gp_seq_polled) */
	u64 window;     /* 1: every object followed, one not found was enqueued before attach */
	u64 look_all;   /* 1: look every object up (the window, or window objects in the map) */
};

static __always_inline bool free_env_init(struct free_env *env, u32 slot)
{
	/* before arming nothing was counted at its enqueue and the window is not set (a free
	 * counted then made the first snapshot's pending negative: a debian:6.12 VM, -16) */
	if (!is_armed())
		return false;
	env->cfg = cfg_get();
	env->bases = bases_get();
	env->sc = kv_free_scratch.lookup(&slot);
	if (!env->cfg || !env->bases || !env->sc)
		return false;
	env->now = bpf_ktime_get_ns();
	env->gp = gp_seq_now();
	u64 d = env->now - env->cfg->window_end;  /* ktime < 2^63: negative while in the window */
	opaque(d);
	env->window = d >> 63;
	env->look_all = env->window | nz(env->cfg->look_all);
	env->sc->memo_page = ~0ULL;
	return true;
}

/* The next records of a loop, `left` of them still in the array: up to REC_BATCH in one read,
 * not past the array's end (a read that crossed into an unmapped page would fail whole). */
static __always_inline void recs_read(struct free_scratch *sc, u64 addr, u64 left)
{
	u64 m = left - 1;                          /* left >= 1: the loop checked */
	u64 k = (m & (REC_BATCH - 1)) | ((REC_BATCH - 1) & -nz(m / REC_BATCH));  /* min(m, 15) */
	u32 len = ((k & (REC_BATCH - 1)) + 1) * 8; /* a bound the verifier sees: 8..128 */
	__builtin_memset(sc->recs, 0, sizeof(sc->recs));
	bpf_probe_read_kernel(sc->recs, len, (void *)addr);
}

static __always_inline void phases_begin(struct free_env *env)
{
	struct free_scratch *sc = env->sc;
	sc->queued = sc->started = 0;
#ifdef HAVE_PHASES
	u64 id = bpf_get_current_pid_tgid();
	struct batch_mark *m = kv_work.lookup(&id);
	if (m && m->queued && m->started >= m->queued) {
		sc->queued = m->queued;
		sc->started = m->started;
	}
#endif
}

/* The object at `ptr` finished waiting on `path` (inside the caller's open counters `kc`):
 * counted for every object enqueued after attach, with its bytes from its record, else
 * `bytes` when the caller knows them, else looked up now. `count_unmatched` (0/1): every
 * object freed here is a kvfree_rcu object, so during the window (every object followed) one
 * not found was queued before we attached: its own row, not a post-attach free. The program
 * that deletes a record accounts its object (once); one that found a record another deleted
 * first counts nothing. Arithmetic on 0/1 masks after the one branch (the lookup), whose
 * results go through the scratch slot. */
/* A record found and deleted by this program (found: 0/1): the followed object's latency,
 * grace periods, its CPU's, a stress's and the window's share, its phases. */
static __always_inline void followed_freed(struct kv_counters *kc, struct free_env *env,
					   u32 path, u64 found, bool with_phases)
{
	struct free_scratch *sc = env->sc;
	u64 ts = LOAD(sc->rec.ts), gp = LOAD(sc->rec.gp_seq);
	u64 fb = LOAD(sc->rec.bytes) & -found;
	hist_add(kc, KV_LAT, path, env->now - ts, found);
	hist_add(kc, KV_GPS, path, ((env->gp - gp) >> 2) + 1, found); /* gp_seq: counter << 2 | state */
	u32 cpu = LOAD(sc->rec.cpu) % KV_NCPUS;  /* a bound the verifier sees, without a branch */
	u64 flags = LOAD(sc->rec.flags);
	kc_add(kc, KV_GONE + 2 * cpu, found);
	kc_add(kc, KV_GONE + 2 * cpu + 1, fb);
	u64 watched = (flags >> 1) & found;  /* INF_WATCHED */
	stat_add(kc, ST_W_GONE, watched);
	stat_add(kc, ST_W_GONE_BYTES, fb & -watched);
	stat_add(kc, ST_WINDOW_GONE, flags & INF_WINDOW & found);
#ifdef HAVE_PHASES
	if (with_phases) {  /* a constant at each call site */
		u64 q = LOAD(sc->queued), st = LOAD(sc->started);
		u64 phased = nz(q) & (1 - negative(q - ts)) & found;  /* queued after enqueue */
		u64 ready = found & (1 - phased);
		dur_add_n(kc, DUR_BATCH, q - ts, phased);
		dur_add_n(kc, DUR_GP, st - q, phased);
		dur_add_n(kc, DUR_RECLAIM, env->now - st, phased);
		dur_add_n(kc, DUR_READY, env->now - ts, ready);
		ev_add(kc, EV_PHASED, phased);
		ev_add(kc, EV_READY, ready);
	}
#endif
	tgid_take(LOAD(sc->rec.tgid), flags, fb, found);
}

/* The object at `ptr` finished waiting on `path` (inside the caller's open counters `kc`):
 * counted for every object enqueued after attach, with its bytes from its record, else
 * `bytes` when the caller knows them, else looked up now. `count_unmatched` (0/1): every
 * object freed here is a kvfree_rcu object, so during the window (every object followed) one
 * not found was queued before we attached: its own row, not a post-attach free. The program
 * that deletes a record accounts its object (once); one that found a record another deleted
 * first counts nothing. One branch (look the object up or not), whose sides share no value
 * but through the scratch slot, then arithmetic on 0/1 masks: the verifier walks each record
 * once, and the followed object's figures only on the side that looks it up. */
static __always_inline void free_one(struct kv_counters *kc, struct free_env *env, u64 ptr,
				     u32 path, u64 count_unmatched, u64 bytes, bool with_phases)
{
	struct free_scratch *sc = env->sc;
	u64 hash = (((ptr >> 4) * 0x9E3779B97F4A7C15ULL) >> 40) & env->cfg->sample_mask;
	u64 sampled = 1 - nz(hash);
	sc->look = (env->look_all | sampled) & nz(ptr);
	sc->deleted = 0;
	__builtin_memset(&sc->rec, 0, sizeof(sc->rec));
	if (LOAD(sc->look)) {
		/* no branch on the lookup: a NULL source leaves the record zero (not found), and
		 * deleting a missing key fails harmlessly */
		struct inflight *e = kv_inflight.lookup(&ptr);
		bpf_probe_read_kernel(&sc->rec, sizeof(sc->rec), e);
		u64 deleted = 1 - nz((u64)kv_inflight.delete(&ptr));
		sc->deleted = deleted;
		followed_freed(kc, env, path, nz(LOAD(sc->rec.ts)) & deleted, with_phases);
	}
	u64 rb = LOAD(sc->rec.bytes);
	u64 seen = nz(LOAD(sc->rec.ts));                 /* a record was there */
	u64 deleted = LOAD(sc->deleted);
	u64 found = seen & deleted;                      /* ... and this program accounts it */
	u64 raced = seen & (1 - deleted);                /* ... another deleted it first */
	u64 unmatched = count_unmatched & LOAD(sc->look) & (1 - seen);
	u64 early = unmatched & env->window;             /* enqueued before attach: its own row */
	stat_add(kc, ST_UNMATCHED + path, early);
	/* an object from before attach that outlived the window, or a full map's */
	stat_add(kc, ST_LATE_UNMATCHED, unmatched & (1 - env->window) & sampled);
	/* a vmalloc object: the bytes its enqueue kept, taken back (through the scratch slot, so
	 * both sides of the branch join in one verifier state) */
	sc->vmbytes = 0;
	if (in_vmalloc(env->bases, ptr)) {
		u64 *vb = kv_vmbytes.lookup(&ptr);
		bpf_probe_read_kernel(&sc->vmbytes, sizeof(sc->vmbytes), vb);
		kv_vmbytes.delete(&ptr);
	}
	/* not followed: the caller's bytes, else the object's slot now (read either way: a
	 * branch here would double the verifier's paths; most frees are not followed), looked up
	 * once per page in a run: consecutive objects of a flood mostly share a slab page. The
	 * sides join through the scratch slot. */
	if (!bytes && (ptr >> 12) != LOAD(sc->memo_page)) {
		sc->memo_bytes = object_bytes_fast(env->bases, ptr);
		sc->memo_page = ptr >> 12;
	}
	u64 alt = bytes ? bytes : LOAD(sc->memo_bytes) | LOAD(sc->vmbytes);
	u64 counted = nz(ptr) & (1 - early) & (1 - raced);
	u64 b = (rb ^ ((alt ^ rb) & (found - 1))) & -counted;
	stat_add(kc, ST_FREED + path, counted);
	stat_add(kc, ST_FREED_BYTES + path, b);
	pending_add(kc, -(s64)counted, -(s64)b);
}

/* One free on its own (inline, list, vfree), in scratch slot `slot`; with_phases: its phase. */
static __always_inline void on_free(u64 ptr, u32 path, u64 count_unmatched, u64 bytes, u32 slot,
				    bool with_phases)
{
	struct free_env env = {};
	if (!free_env_init(&env, slot))
		return;
	if (with_phases)
		phases_begin(&env);
	struct kv_counters *kc = kc_open();
	if (!kc)
		return;
	free_one(kc, &env, ptr, path, count_unmatched, bytes, with_phases);
	kc_close(kc);
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

/* kvfree_call_rcu(head, ptr) entry: a headless object may be freed inline (synchronize_rcu()
 * then kvfree() inside the call, when no page can be had): its context is kept for that. */
static __always_inline void enqueue_entry(void *head, void *arg2)
{
	u64 ptr = object_of(head, arg2);
	if (head) {
		on_enqueue(ptr, false, 0, 0, NULL, MEMO_KVFREE);
		return;
	}
	struct path_ctx c = {};
	if (on_enqueue(ptr, true, 0, 0, &c, MEMO_KVFREE)) {
		u64 id = bpf_get_current_pid_tgid();
		kv_ctx.update(&id, &c);
	}
}

/* kvfree_call_rcu() returns (kprobe mode): if synchronize_rcu() ran inside it, the object was
 * freed inline. */
static __always_inline void enqueue_exit(void)
{
	u64 id = bpf_get_current_pid_tgid();
	struct path_ctx *c = kv_ctx.lookup(&id);
	if (c && c->path == PATH_INLINE && c->synced)
		on_free(c->ptr, PATH_INLINE, 1, c->bytes, SC_INLINE_ENQ, false);
	kv_ctx.delete(&id);
}

/* synchronize_rcu() entered: inside kvfree_call_rcu() with a headless object, the inline free
 * has begun. In fentry mode (no exit program on kvfree_call_rcu, the hot path) the stack tells
 * whether kvfree_call_rcu() is the caller, since a context may outlive a queued object. */
static __always_inline void on_synchronize_rcu(void *regs)
{
	u64 id = bpf_get_current_pid_tgid();
	struct path_ctx *c = kv_ctx.lookup(&id);
	if (!c || c->path != PATH_INLINE)
		return;
#if defined(KVFREE_START) && defined(KVFREE_END)
	u64 frames[8] = {};
	long n = bpf_get_stack(regs, frames, sizeof(frames), 0);
	bool inside = false;
	for (int i = 0; i < 8; i++)
		if (i * 8 < n && frames[i] >= KVFREE_START && frames[i] < KVFREE_END)
			inside = true;
	if (!inside)
		return;
#endif
	c->synced = 1;
}

/* synchronize_rcu() returned (fentry mode): the inline kvfree() follows at once. */
static __always_inline void on_synchronize_rcu_done(void)
{
	u64 id = bpf_get_current_pid_tgid();
	struct path_ctx *c = kv_ctx.lookup(&id);
	if (c && c->path == PATH_INLINE && c->synced) {
		on_free(c->ptr, PATH_INLINE, 1, c->bytes, SC_INLINE_SYNC, false);
		kv_ctx.delete(&id);
	}
}

#ifndef BULK_CHUNK
#define BULK_CHUNK 512  /* records one program run reads */
#endif

/* Records [from, from + BULK_CHUNK) of an array of `n` kvfree_rcu objects freed now;
 * `vmalloc`: they are vmalloc'ed (their bytes unknown). */
static __always_inline void on_bulk_records(u64 records, u64 n, u32 from)
{
	struct free_env env = {};
	if (!free_env_init(&env, SC_BULK))
		return;
	phases_begin(&env);
	struct kv_counters *kc = kc_open();
	if (!kc)
		return;
	struct free_scratch *sc = env.sc;
	for (u32 j = 0; j < BULK_CHUNK; j++) {
		u64 i = from + j;
		if (i >= n)
			break;
		if (j % REC_BATCH == 0)
			recs_read(sc, records + 8 * i, n - i);
		free_one(kc, &env, LOAD(sc->recs[j % REC_BATCH]), PATH_BULK, 1, 0, true);
	}
	kc_close(kc);
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

#ifdef KVFREE_BY_KPROBE
/* Whether this call's caller (its return address: the frame bpftrace's kstack(2) shows)
 * lies in [a0, a1) or [b0, b1): 1 or 0; -1 when the stack cannot be read. */
static __always_inline int caller_in(struct pt_regs *ctx, u64 a0, u64 a1, u64 b0, u64 b1)
{
	u64 frames[2] = {};
	if (bpf_get_stack(ctx, frames, sizeof(frames), 0) < (long)sizeof(frames))
		return -1;
	u64 ret = frames[1];
	return (ret >= a0 && ret < a1) || (ret >= b0 && ret < b1);
}

/* The text ranges P_{A,B}_{START,END} of a few functions (the layout's _text_ranges()). */
#define CALLER_IN(ctx, P) caller_in(ctx, P##_A_START, P##_A_END, P##_B_START, P##_B_END)

/* Whether this kvfree() was called by a list function itself (LIST_CALLER_*), not nested: a
 * vmalloc object's vfree() kvfree()s its page array inside the same path (process context:
 * krc's list, 6.1's work). No stack: counted, as before. */
static __always_inline bool list_called(struct pt_regs *ctx)
{
#ifdef LIST_CALLER_A_START
	return CALLER_IN(ctx, LIST_CALLER) != 0;
#else
	return true;
#endif
}

#ifdef PENDING_INLINE_A_START
/* rcu_pending backend: a headless object freed inside its own enqueue, its grace period over
 * while the enqueue slept for memory (__rcu_pending_enqueue()'s check_expired, inlined into
 * kvfree_call_rcu_pending(), and rcu_pending_enqueue_list()'s kvfree(--ptr)): a kvfree() of
 * the object the entry program kept as this task's inline context, called by one of those
 * functions (PENDING_INLINE_*: their text). The stack is read only when the object matches. */
static __always_inline bool pending_inline_free(struct pt_regs *ctx, struct path_ctx *c, u64 id,
					       u64 ptr)
{
	if (!c || c->path != PATH_INLINE || c->ptr != ptr || !ptr)
		return false;
	if (CALLER_IN(ctx, PENDING_INLINE) != 1)
		return false;
	u64 bytes = c->bytes;
	kv_ctx.delete(&id);  /* freed: a later kvfree() of the address is another object's */
	on_free(ptr, PATH_INLINE, 1, bytes, SC_INLINE_ENQ, false);
	return true;
}
#endif

/* kvfree(addr) inside a list path (krc's channel 3, 6.1's kfree_rcu_work, rcu_pending's
 * __process_finished_items): the object itself. The kfree()s around it in the same path are
 * not kvfree_rcu objects: a vmalloc object's vm_struct (vfree), rcu_pending's radix nodes and
 * the rcu_heads of headless objects. Only kvfree() calls, not every kfree() of the machine. */
int kprobe_kvfree(struct pt_regs *ctx)
{
#ifdef PENDING_INLINE_A_START
	/* every kvfree() may be an inline free: its context, looked up once for both uses */
	u64 id = bpf_get_current_pid_tgid();
	struct path_ctx *c = kv_ctx.lookup(&id);
	if (pending_inline_free(ctx, c, id, PT_REGS_PARM1(ctx)))
		return 0;
#endif
	u32 zero = 0;
	u64 *a = kv_active.lookup(&zero);
	if (!a || !*a)
		return 0;
#ifndef PENDING_INLINE_A_START  /* with it: looked up above */
	u64 id = bpf_get_current_pid_tgid();
	struct path_ctx *c = kv_ctx.lookup(&id);
#endif
	if (!c || (c->path != PATH_LIST && c->path != PATH_BULK))
		return 0;
	/* The list function calls kvfree() from one frame, so its own calls enter with one stack
	 * pointer; a nested call is deeper, an interrupt's on another stack. The stack is read
	 * (a walk, costly) only for a call at another stack pointer, such as the path's first. */
	u64 sp = PT_REGS_SP(ctx);
	if (sp != c->sp0) {
		if (!list_called(ctx))
			return 0;
		if (!c->sp0)
			c->sp0 = sp;
	}
	u64 ptr = PT_REGS_PARM1(ctx);
	c->ptr = ptr;  /* the vfree() it makes of a vmalloc object is this free, not another */
	on_free(ptr, PATH_LIST, 1, 0, SC_LIST, true);
	return 0;
}
#else
/* Without kprobes: the kmem:kfree tracepoint inside a list path (a vmalloc object's vm_struct
 * kfree() then counts in its place). */
TRACEPOINT_PROBE(kmem, kfree)
{
	u32 zero = 0;
	u64 *a = kv_active.lookup(&zero);
	if (!a || !*a)
		return 0;
	u32 c = current_ctx();
	if (c == PATH_LIST || c == PATH_BULK)  /* PATH_BULK: 6.1's kfree_rcu_work */
		on_free((u64)args->ptr, PATH_LIST, !PENDING_BACKEND, 0, SC_LIST, true);
	return 0;
}
#endif

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


/* A bulk record's vfree() (6.1: krc's vmalloc channel), called by kfree_rcu_work() itself
 * (LIST_CALLER_*). Not one nested in a list object's free: the vfree() of a list object is its
 * kvfree()'s, counted there, and that vfree() may vfree() the area's page array in turn (an
 * area of over 512 pages vmalloc()s it). rcu_pending keeps vmalloc objects on its lists only. */
int kprobe_vfree(struct pt_regs *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	struct path_ctx *c = kv_ctx.lookup(&id);
	u64 ptr = PT_REGS_PARM1(ctx);
	if (!c || c->path != PATH_BULK || ptr == c->ptr || PENDING_BACKEND)
		return 0;
#ifdef KVFREE_BY_KPROBE
	if (!list_called(ctx))
		return 0;
#endif
	on_free(ptr, PATH_BULK, 1, 0, SC_VFREE, true);
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
	struct free_env env = {};
	if (!free_env_init(&env, SC_SHEAF))
		return;
	struct kv_counters *kc = kc_open();
	if (!kc)
		return;
	struct free_scratch *sc = env.sc;
	for (u32 i = 0; i < BULK_CHUNK; i++) {
		if (i >= n)
			break;
		if (i % REC_BATCH == 0)
			recs_read(sc, head + OFF_SHEAF_OBJECTS + 8 * (u64)i, n - i);
		free_one(kc, &env, LOAD(sc->recs[i % REC_BATCH]), PATH_SHEAF, 1, 0, false);
	}
	kc_close(kc);
}

static __always_inline void on_sheaf_taken(u64 obj)
{
	/* before arm the enqueue was not counted: counting its route would make krc's share
	 * (enqueued - sheaf) negative (debian:7.3: -2,700 after the tool's own load) */
	if (!is_armed())
		return;
	u32 kind;
	u64 start, bytes = object_size(obj, &kind, &start);
	struct inflight *v = kv_inflight.lookup(&obj);
	if (v)
		v->flags |= INF_SHEAF;
	struct kv_counters *kc = kc_open();
	stat_add(kc, ST_ENQ_SHEAF, 1);
	stat_add(kc, ST_ENQ_SHEAF_BYTES, bytes);
	kc_close(kc);
}
#endif

#if defined(KVFREE_FENTRY) && defined(KVFREE_ARGS_OFFSET)
/* 6.1: the verifier refuses fentry reads of the rcu_callback_t argument, so the object is the
 * slab object holding the head; a headless object (its pointer in that argument) is read from
 * the context's memory, a copy the verifier does not type. */
KFUNC_PROBE_SYM(KVFREE_SYM, void *head)
{
	u32 kind = MEM_UNSIZED;
	u64 ptr = 0, bytes = 0;

	if (head)
		bytes = object_size(to_scalar(head), &kind, &ptr);
	else  /* headless: the object is the second argument, read as memory, not as its type */
		bpf_probe_read_kernel(&ptr, sizeof(ptr), (void *)&ctx[1]);
	struct path_ctx c = {};
	if (on_enqueue(ptr, !head, bytes, kind, head ? NULL : &c, MEMO_KVFREE) && !head) {
		u64 id = bpf_get_current_pid_tgid();
		kv_ctx.update(&id, &c);
	}
	return 0;
}
#elif defined(KVFREE_FENTRY)
KFUNC_PROBE_SYM(KVFREE_SYM, void *head, void *arg2)
{
	enqueue_entry(head, arg2);
	return 0;
}
#endif

#if defined(KVFREE_FENTRY)

KFUNC_PROBE(synchronize_rcu)
{
	on_synchronize_rcu(ctx);
	return 0;
}

KRETFUNC_PROBE(synchronize_rcu)
{
	on_synchronize_rcu_done();
	return 0;
}

#if defined(HAVE_KVFREE_RCU_BULK) && defined(BULK_BY_KPROBE)
/* Where kprobes exist the bulk page is read by two, each BULK_CHUNK (256) records: a kprobe
 * per page costs nothing beside its records, and a 512-record loop with the phases is more
 * than older verifiers (6.12: E2BIG) accept in one program. They run one after the other on
 * the same hit, never nested. */
int kprobe_ctx_bulk(struct pt_regs *ctx)
{
	on_bulk_node(PT_REGS_PARM2(ctx), 0);
	return 0;
}

int kprobe_ctx_bulk_hi(struct pt_regs *ctx)
{
	u64 bnode = PT_REGS_PARM2(ctx);
	on_bulk_records(bnode + OFF_BNODE_RECORDS, read_u64(bnode + OFF_BNODE_NR), BULK_CHUNK);
	return 0;
}
#elif defined(HAVE_KVFREE_RCU_BULK)
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
/* 7.x kfree_rcu_nolock(): into an rcu_free sheaf (counted as an enqueue by __kfree_rcu_sheaf's
 * exit, SLAB_FREE_NOLOCK), else deferred to irq_work, which then calls kvfree_call_rcu()
 * (counted there). The calls are counted here. */
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
	if (!ret)
		return 0;
#if defined(SHEAF_FREE_FLAGS_ARG) && defined(HAVE_KFREE_NOLOCK)
	/* kfree_rcu_nolock() straight to a sheaf: an enqueue kvfree_call_rcu() never saw */
	if (free_flags & SLAB_FREE_NOLOCK && on_enqueue(to_scalar(obj), false, 0, MEM_UNSIZED, NULL,
							  MEMO_NONE))
		event_stat(ST_ENQ_NOLOCK);
#endif
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
	on_synchronize_rcu(ctx);
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
