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
 *   HAVE_KVFREE_RCU_BULK, HAVE_KVFREE_RCU_LIST, HAVE_KFREE_RCU_WORK_CTX (6.1),
 *   HAVE_KFREE_RCU_SHEAF (+ OFF_SHEAF_SIZE, OFF_SHEAF_OBJECTS), HAVE_RCU_FREE_SHEAF_NOBARN
 *   TRACK_MAX                per-object tracking cap (objects over it count as untracked)
 *
 * Kernel code only counts: per-CPU counters, per-path log2 histograms, per-task sums. */
#include "common.bpf.h"

/* Where an object's wait ended (keep in sync with collector.KVFREE_PATHS). */
enum free_path {
	PATH_BULK = 0,    /* krc bulk page: kfree_bulk / vfree loop after the batch's GP */
	PATH_LIST = 1,    /* krc channel 3: objects linked through their rcu_head */
	PATH_INLINE = 2,  /* headless, no page: synchronize_rcu(); kvfree() inline */
	PATH_SHEAF = 3,   /* 6.18+: per-CPU rcu_free sheaf, freed by rcu_free_sheaf() */
	PATH_OTHER = 4,   /* a tracked object freed outside the known paths */
	NPATH = 5,
};

enum kv_stat {
	ST_ENQ_HEAD = 0,       /* kfree_rcu(ptr, rhf): object carries an rcu_head */
	ST_ENQ_HEADLESS = 1,   /* kfree_rcu_mightsleep(ptr) */
	ST_ENQ_BYTES = 2,
	ST_ENQ_UNSIZED = 3,    /* bytes unknown (not a slab object) */
	ST_ENQ_VMALLOC = 4,
	ST_ENQ_SHEAF = 5,      /* taken by the sheaf bypass (subset of the enqueues) */
	ST_ENQ_SHEAF_BYTES = 6,
	ST_UNTRACKED = 7,      /* not tracked per object (map full): free side cannot match */
	ST_UNTRACKED_BYTES = 8,
	ST_REPLACED = 9,       /* a tracked address enqueued again before its free was seen */
	ST_FREED = 10,                   /* + path */
	ST_FREED_BYTES = ST_FREED + NPATH, /* + path */
	ST_UNMATCHED = ST_FREED_BYTES + NPATH, /* + path: frees of objects enqueued before attach */
	ST_MAX = ST_UNMATCHED + NPATH,
};

#define HIST_SLOTS 64

struct inflight {
	u64 ts;
	u64 gp_seq;
	u64 bytes;
	u32 tgid;
	u16 cpu;
	u16 route;  /* 0: krc batching, 1: sheaf bypass */
};

#define MAX_CPUS 1024

struct task_bytes {
	u64 objects;
	u64 bytes;
};

struct freed_sum {  /* frees, by the process that enqueued the objects */
	u64 objects;
	u64 bytes;
};

#ifndef TRACK_MAX
#define TRACK_MAX 65536
#endif

BPF_PERCPU_ARRAY(kv_stats, u64, ST_MAX);
BPF_PERCPU_ARRAY(kv_lat_hist, u64, NPATH * HIST_SLOTS);  /* log2(ns) enqueue -> free */
BPF_PERCPU_ARRAY(kv_gp_hist, u64, NPATH * HIST_SLOTS);   /* log2(1 + grace periods) */
BPF_HASH(kv_inflight, u64, struct inflight, TRACK_MAX);
BPF_HASH(kvfree_by_task, struct task_key, struct task_bytes, TASK_MAP_SIZE);
BPF_HASH(kv_freed_by_tgid, u32, struct freed_sum, TASK_MAP_SIZE);
BPF_HASH(kv_ctx, u64, u32, 4096);  /* pid_tgid -> path context of a running free path */
BPF_ARRAY(kv_freed_by_enq_cpu, struct freed_sum, MAX_CPUS);  /* by the CPU that enqueued */

static __always_inline void stat_add(u32 idx, u64 n)
{
	u64 *c = kv_stats.lookup(&idx);
	if (c)
		*c += n;
}

static __always_inline u32 log2_slot(u64 v)
{
	u32 r = 0;
#pragma unroll
	for (int i = 32; i > 0; i >>= 1) {
		if (v >= (1ULL << i)) {
			v >>= i;
			r += i;
		}
	}
	return r < HIST_SLOTS ? r : HIST_SLOTS - 1;
}

static __always_inline u64 read_u64(u64 addr)
{
	u64 v = 0;
	bpf_probe_read_kernel(&v, sizeof(v), (void *)addr);
	return v;
}

static __always_inline u64 gp_seq_now(void)
{
#ifdef RCU_GP_SEQ_ADDR
	return read_u64(RCU_GP_SEQ_ADDR);
#else
	return 0;
#endif
}

/* Bytes the object really holds: its slab cache's object slot size (kmem_cache.size). */
static __always_inline u64 object_bytes(u64 addr, bool *is_vmalloc)
{
#ifdef BYTES_UNAVAILABLE
	*is_vmalloc = false;
	return 0;
#else
	u64 vmalloc_base = read_u64(VMALLOC_BASE_ADDR);
	u64 page_offset = read_u64(PAGE_OFFSET_BASE_ADDR);
	u64 vmemmap = read_u64(VMEMMAP_BASE_ADDR);
	u64 page, head, cache;
	u32 size = 0;

	*is_vmalloc = addr >= vmalloc_base && addr - vmalloc_base < (32ULL << 40);
	if (*is_vmalloc || addr < page_offset)
		return 0;
	page = vmemmap + ((addr - page_offset) >> 12) * PAGE_STRUCT_SIZE;
	head = read_u64(page + OFF_PAGE_COMPOUND_HEAD);
	if (head & 1)
		page = head - 1;
#if defined(SLAB_BY_PAGE_TYPE)
	u32 page_type = 0;
	bpf_probe_read_kernel(&page_type, sizeof(page_type), (void *)(page + OFF_PAGE_TYPE));
	if ((page_type >> 24) != SLAB_TYPE)
		return 0;
#elif defined(SLAB_BY_FLAG)
	if (!(read_u64(page + OFF_PAGE_FLAGS) & (1ULL << SLAB_FLAG_BIT)))
		return 0;
#endif
	cache = read_u64(page + OFF_SLAB_CACHE);
	if (!cache)
		return 0;
	bpf_probe_read_kernel(&size, sizeof(size), (void *)(cache + OFF_KMEM_CACHE_SIZE));
	return size;
#endif
}

static __always_inline void on_enqueue(void *head, void *arg2)
{
	u64 ptr;
	bool headless = !head, is_vmalloc = false;

#ifdef KVFREE_ARGS_OFFSET
	ptr = head ? (u64)head - (u64)arg2 : (u64)arg2;
#else
	ptr = (u64)arg2;
#endif
	u64 bytes = object_bytes(ptr, &is_vmalloc);
	stat_add(headless ? ST_ENQ_HEADLESS : ST_ENQ_HEAD, 1);
	stat_add(ST_ENQ_BYTES, bytes);
	if (!bytes)
		stat_add(ST_ENQ_UNSIZED, 1);
	if (is_vmalloc)
		stat_add(ST_ENQ_VMALLOC, 1);

	struct task_key key = current_task_key();
	struct task_bytes zero = {};
	struct task_bytes *t = kvfree_by_task.lookup_or_try_init(&key, &zero);
	if (t) {
		__sync_fetch_and_add(&t->objects, 1);
		__sync_fetch_and_add(&t->bytes, bytes);
	} else {
		count_lost(LOST_TASK_MAP_FULL);
	}

	struct inflight val = {};
	val.ts = bpf_ktime_get_ns();
	val.gp_seq = gp_seq_now();
	val.bytes = bytes;
	val.tgid = key.tgid;
	val.cpu = bpf_get_smp_processor_id();
	if (kv_inflight.lookup(&ptr))
		stat_add(ST_REPLACED, 1);
	if (kv_inflight.update(&ptr, &val)) {
		stat_add(ST_UNTRACKED, 1);
		stat_add(ST_UNTRACKED_BYTES, bytes);
	}
}

/* The object at `ptr` finished waiting on `path`; `count_unmatched`: every object freed here is
 * a kvfree_rcu object, so one we never saw enqueued was queued before we attached. */
static __always_inline void on_free(u64 ptr, u32 path, bool count_unmatched)
{
	struct inflight *v = kv_inflight.lookup(&ptr);

	if (!v) {
		if (count_unmatched)
			stat_add(ST_UNMATCHED + path, 1);
		return;
	}
	u64 delta = bpf_ktime_get_ns() - v->ts;
	u64 gps = (gp_seq_now() - v->gp_seq) >> 2; /* gp_seq: counter << 2 | state */
	u32 slot = path * HIST_SLOTS + log2_slot(delta);
	u64 *h = kv_lat_hist.lookup(&slot);
	if (h)
		(*h)++;
	slot = path * HIST_SLOTS + log2_slot(gps + 1);
	h = kv_gp_hist.lookup(&slot);
	if (h)
		(*h)++;
	u64 bytes = v->bytes;
	u32 tgid = v->tgid, cpu = v->cpu;
	struct freed_sum *by_cpu = kv_freed_by_enq_cpu.lookup(&cpu);
	if (by_cpu) {
		__sync_fetch_and_add(&by_cpu->objects, 1);
		__sync_fetch_and_add(&by_cpu->bytes, bytes);
	}
	stat_add(ST_FREED + path, 1);
	stat_add(ST_FREED_BYTES + path, bytes);
	kv_inflight.delete(&ptr);

	struct freed_sum zero = {};
	struct freed_sum *f = kv_freed_by_tgid.lookup_or_try_init(&tgid, &zero);
	if (f) {
		__sync_fetch_and_add(&f->objects, 1);
		__sync_fetch_and_add(&f->bytes, bytes);
	} else {
		count_lost(LOST_TASK_MAP_FULL);
	}
}

static __always_inline u32 current_ctx(void)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 *c = kv_ctx.lookup(&id);
	return c ? *c : NPATH;
}

static __always_inline void ctx_enter(u32 path)
{
	u64 id = bpf_get_current_pid_tgid();
	kv_ctx.update(&id, &path);
}

static __always_inline void ctx_exit(void)
{
	u64 id = bpf_get_current_pid_tgid();
	kv_ctx.delete(&id);
}

/* kmem_cache_free_bulk(s, size, p): kfree_bulk() of a krc bulk page. */
static __always_inline void on_free_bulk(u64 size, void **p)
{
	u32 ctx = current_ctx();
	if (ctx != PATH_BULK)
		return;
	for (u32 i = 0; i < 512; i++) {
		if (i >= size)
			break;
		u64 obj = 0;
		bpf_probe_read_kernel(&obj, sizeof(obj), &p[i]);
		on_free(obj, PATH_BULK, true);
	}
}

/* kvfree(addr): channel 3 list (kvfree_rcu_list; 6.1 kfree_rcu_work), or headless inline. */
static __always_inline void on_kvfree(u64 addr)
{
	u32 ctx = current_ctx();
	if (ctx == PATH_LIST || ctx == PATH_INLINE)
		on_free(addr, ctx, ctx == PATH_LIST);
	else if (ctx == PATH_BULK) /* 6.1 kfree_rcu_work frees its list with kvfree() too */
		on_free(addr, PATH_LIST, false);
	else
		on_free(addr, PATH_OTHER, false);
}

/* vfree(addr): the vmalloc channel of a bulk page. */
static __always_inline void on_vfree(u64 addr)
{
	if (current_ctx() == PATH_BULK)
		on_free(addr, PATH_BULK, false);
}

#ifdef HAVE_KFREE_RCU_SHEAF
/* rcu_free_sheaf(head): a whole sheaf of objects passed its grace period. */
static __always_inline void on_sheaf(u64 head)
{
	u32 n = 0;
	bpf_probe_read_kernel(&n, sizeof(n), (void *)(head + OFF_SHEAF_SIZE));
	for (u32 i = 0; i < 256; i++) {
		if (i >= n)
			break;
		u64 obj = read_u64(head + OFF_SHEAF_OBJECTS + 8 * (u64)i);
		on_free(obj, PATH_SHEAF, true);
	}
}

static __always_inline void on_sheaf_taken(u64 obj)
{
	struct inflight *v = kv_inflight.lookup(&obj);
	stat_add(ST_ENQ_SHEAF, 1);
	if (v) {
		stat_add(ST_ENQ_SHEAF_BYTES, v->bytes);
		v->route = 1;
	}
}
#endif

#if defined(KVFREE_FENTRY)
KFUNC_PROBE_SYM(KVFREE_SYM, void *head, void *arg2)
{
	on_enqueue(head, arg2);
	ctx_enter(PATH_INLINE);
	return 0;
}

KRETFUNC_PROBE_SYM(KVFREE_SYM, void *head, void *arg2)
{
	ctx_exit();
	return 0;
}

KFUNC_PROBE(kmem_cache_free_bulk, void *s, u64 size, void **p)
{
	on_free_bulk(size, p);
	return 0;
}

KFUNC_PROBE(kvfree, void *addr)
{
	on_kvfree((u64)addr);
	return 0;
}

KFUNC_PROBE(vfree, void *addr)
{
	on_vfree((u64)addr);
	return 0;
}

#ifdef HAVE_KVFREE_RCU_BULK
KFUNC_PROBE(kvfree_rcu_bulk, void *krcp, void *bnode, int idx)
{
	ctx_enter(PATH_BULK);
	return 0;
}

KRETFUNC_PROBE(kvfree_rcu_bulk, void *krcp, void *bnode, int idx)
{
	ctx_exit();
	return 0;
}
#endif

#ifdef HAVE_KVFREE_RCU_LIST
KFUNC_PROBE(kvfree_rcu_list, void *head)
{
	ctx_enter(PATH_LIST);
	return 0;
}

KRETFUNC_PROBE(kvfree_rcu_list, void *head)
{
	ctx_exit();
	return 0;
}
#endif

#ifdef HAVE_KFREE_RCU_WORK_CTX
/* 6.1: kfree_rcu_work() frees bulk pages (kfree_bulk/vfree) and the list (kvfree) itself. */
KFUNC_PROBE(kfree_rcu_work, void *work)
{
	ctx_enter(PATH_BULK);
	return 0;
}

KRETFUNC_PROBE(kfree_rcu_work, void *work)
{
	ctx_exit();
	return 0;
}
#endif

#ifdef HAVE_KFREE_RCU_SHEAF
KRETFUNC_PROBE(__kfree_rcu_sheaf, void *s, void *obj, bool ret)
{
	if (ret)
		on_sheaf_taken((u64)obj);
	return 0;
}

KFUNC_PROBE(rcu_free_sheaf, void *head)
{
	on_sheaf((u64)head);
	return 0;
}

#ifdef HAVE_RCU_FREE_SHEAF_NOBARN
KFUNC_PROBE(rcu_free_sheaf_nobarn, void *head)
{
	on_sheaf((u64)head);
	return 0;
}
#endif
#endif

#elif defined(KVFREE_KPROBE)
/* kprobe fallback: enqueues and the krc paths; the sheaf path needs fexit. */
int kprobe_kvfree_call_rcu(struct pt_regs *ctx)
{
	on_enqueue((void *)PT_REGS_PARM1(ctx), (void *)PT_REGS_PARM2(ctx));
	ctx_enter(PATH_INLINE);
	return 0;
}

int kretprobe_kvfree_call_rcu(struct pt_regs *ctx)
{
	ctx_exit();
	return 0;
}

int kprobe_kmem_cache_free_bulk(struct pt_regs *ctx)
{
	on_free_bulk(PT_REGS_PARM2(ctx), (void **)PT_REGS_PARM3(ctx));
	return 0;
}

int kprobe_kvfree(struct pt_regs *ctx)
{
	on_kvfree(PT_REGS_PARM1(ctx));
	return 0;
}

int kprobe_vfree(struct pt_regs *ctx)
{
	on_vfree(PT_REGS_PARM1(ctx));
	return 0;
}

int kprobe_ctx_bulk(struct pt_regs *ctx)
{
	ctx_enter(PATH_BULK);
	return 0;
}

int kprobe_ctx_list(struct pt_regs *ctx)
{
	ctx_enter(PATH_LIST);
	return 0;
}

int kretprobe_ctx_exit(struct pt_regs *ctx)
{
	ctx_exit();
	return 0;
}
#endif
