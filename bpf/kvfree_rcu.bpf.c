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
BPF_HASH(kv_ctx, u64, struct path_ctx, 4096);  /* pid_tgid -> running kvfree path */
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

/* A BTF-typed fentry argument as a plain number: the verifier refuses arithmetic with
 * unbounded scalars on typed pointers, and a copy through bpf_probe_read is a scalar. */
static __always_inline u64 to_scalar(void *p)
{
	u64 in = (u64)p, out = 0;
	bpf_probe_read_kernel(&out, sizeof(out), &in);
	return out;
}

static __always_inline u64 gp_seq_now(void)
{
#ifdef RCU_GP_SEQ_ADDR
	return read_u64(RCU_GP_SEQ_ADDR);
#else
	return 0;
#endif
}

/* The slab object holding `addr`: its slot size (kmem_cache.size, the bytes it really holds)
 * and, in *start, the object's first byte. 0 when not a slab object (or bytes unavailable). */
static __always_inline u64 slab_lookup(u64 addr, bool *is_vmalloc, u64 *start)
{
	*is_vmalloc = false;
	*start = addr;
#ifdef BYTES_UNAVAILABLE
	return 0;
#else
	u64 vmalloc_base = read_u64(VMALLOC_BASE_ADDR);
	u64 page_offset = read_u64(PAGE_OFFSET_BASE_ADDR);
	u64 vmemmap = read_u64(VMEMMAP_BASE_ADDR);
	u64 page, head, cache, base;
	u32 size = 0;

	*is_vmalloc = addr >= vmalloc_base && addr - vmalloc_base < (32ULL << 40);
	if (*is_vmalloc || addr < page_offset)
		return 0;
	page = vmemmap + ((addr - page_offset) >> 12) * PAGE_STRUCT_SIZE;
	head = read_u64(page + OFF_PAGE_COMPOUND_HEAD);
	if (head & 1) {
		/* Tail page: compound_head is head + 1; 7.x compound_info with HVO holds instead
		 * GENMASK(63, shift) | 1, a mask to apply to the tail's own address. */
		u64 m = head & ~1ULL;
		if (((~m) & (~m + 1)) == 0)
			page = page & m;
		else
			page = head - 1;
	}
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
	if (!size)
		return 0;
	base = page_offset + (((page - vmemmap) / PAGE_STRUCT_SIZE) << 12);
	if (addr >= base)
		*start = base + ((addr - base) / size) * size;
	return size;
#endif
}

static __always_inline void on_enqueue(u64 ptr, bool headless)
{
	bool is_vmalloc = false;
	u64 start;
	u64 bytes = slab_lookup(ptr, &is_vmalloc, &start);
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
	if (!ptr) {  /* object unknown (6.1 headless under fentry): counted, not tracked */
		stat_add(ST_UNTRACKED, 1);
		stat_add(ST_UNTRACKED_BYTES, bytes);
		return;
	}
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
	on_enqueue(ptr, !head);
	ctx_enter(PATH_INLINE, ptr);
}

/* kvfree_call_rcu() returns: if synchronize_rcu() ran inside it, the object was freed inline. */
static __always_inline void enqueue_exit(void)
{
	u64 id = bpf_get_current_pid_tgid();
	struct path_ctx *c = kv_ctx.lookup(&id);
	if (c && c->path == PATH_INLINE && c->synced)
		on_free(c->ptr, PATH_INLINE, true);
	kv_ctx.delete(&id);
}

static __always_inline void on_synchronize_rcu(void)
{
	u64 id = bpf_get_current_pid_tgid();
	struct path_ctx *c = kv_ctx.lookup(&id);
	if (c && c->path == PATH_INLINE)
		c->synced = 1;
}

#ifdef HAVE_KVFREE_RCU_BULK
/* kvfree_rcu_bulk(krcp, bnode, idx), 6.3+: every record of the bulk page is freed now
 * (kfree_bulk() for slab, a vfree() loop for vmalloc). */
static __always_inline void on_bulk_node(u64 bnode)
{
	u64 n = read_u64(bnode + OFF_BNODE_NR);
	for (u32 i = 0; i < 512; i++) {
		if (i >= n)
			break;
		on_free(read_u64(bnode + OFF_BNODE_RECORDS + 8 * (u64)i), PATH_BULK, true);
	}
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
		on_free((u64)args->ptr, PATH_LIST, true);
	return 0;
}

#ifdef HAVE_KFREE_RCU_WORK_CTX
/* 6.1: kfree_rcu_work() frees bulk pages with kfree_bulk()/vfree() and the list with
 * kvfree(); fentry cannot read those functions' (const) void pointers: kprobes. */
int kprobe_kmem_cache_free_bulk(struct pt_regs *ctx)
{
	if (current_ctx() != PATH_BULK)
		return 0;
	u64 size = PT_REGS_PARM2(ctx);
	void **p = (void **)PT_REGS_PARM3(ctx);
	for (u32 i = 0; i < 512; i++) {
		if (i >= size)
			break;
		u64 obj = 0;
		bpf_probe_read_kernel(&obj, sizeof(obj), &p[i]);
		on_free(obj, PATH_BULK, true);
	}
	return 0;
}

int kprobe_vfree(struct pt_regs *ctx)
{
	if (current_ctx() == PATH_BULK)
		on_free(PT_REGS_PARM1(ctx), PATH_BULK, true);
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
		on_free(read_u64(head + OFF_SHEAF_OBJECTS + 8 * (u64)i), PATH_SHEAF, true);
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

#if defined(KVFREE_FENTRY) && defined(KVFREE_ARGS_OFFSET)
/* 6.1: the verifier refuses fentry reads of the rcu_callback_t argument, so the object is the
 * slab object holding the head; a headless object (pointer in that argument) is untracked. */
KFUNC_PROBE_SYM(KVFREE_SYM, void *head)
{
	bool is_vmalloc;
	u64 ptr = 0;

	if (head)
		slab_lookup(to_scalar(head), &is_vmalloc, &ptr);
	on_enqueue(ptr, !head);
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
	on_bulk_node(to_scalar(bnode));
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

#ifdef HAVE_KFREE_RCU_WORK_CTX
KFUNC_PROBE(kfree_rcu_work, void *work)
{
	list_enter(PATH_BULK);
	return 0;
}

KRETFUNC_PROBE(kfree_rcu_work, void *work)
{
	list_exit();
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
	on_bulk_node(PT_REGS_PARM2(ctx));
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
