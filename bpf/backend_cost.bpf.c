/* What a kvfree_rcu() backend costs the kernel besides the objects it holds, for `rcupending
 * compare` on the lab kernels (kprobes and tracepoints only):
 *   - RCU callbacks queued, by callback function: call_rcu() / call_rcu_hurry() (head, func),
 *     call_srcu() (ssp, head, func);
 *   - metadata memory: slab objects (kmem:kmalloc call_site) and pages (get_free_pages_noprof,
 *     caller from the return address) allocated by the backend's own code, followed to their
 *     kfree() / free_pages() by address. The code ranges and their kinds are in `cost_sites`,
 *     filled from kallsyms by rcupending_tools/compare/cost.py;
 *   - krc's bulk pages in use: distinct pages handed to kvfree_rcu_bulk() after their grace
 *     period. krc keeps its pages in a per-CPU cache between batches, so a warm cache
 *     allocates nothing during a run: this is the memory it holds for them.
 * Defines: none. Kernel code only counts; which range is which lives in Python. */

#define MAX_SITES 16
#define MAX_KINDS 4

struct site {
	u64 start;
	u64 end;  /* 0: unused slot */
	u64 kind;
};

struct meta {
	u64 bytes;
	u64 kind;
};

struct kind_counts {
	u64 allocs;
	u64 alloc_bytes;
	u64 frees;
	u64 free_bytes;
};

BPF_ARRAY(cost_sites, struct site, MAX_SITES);
BPF_HASH(cost_callbacks, u64, u64, 4096);            /* callback function -> calls */
BPF_HASH(cost_meta, u64, struct meta, 65536);        /* live metadata address -> size, kind */
BPF_HASH(cost_page_call, u64, struct meta, 1024);    /* pid_tgid -> page request in flight */
BPF_ARRAY(cost_gauge, struct gauge, MAX_KINDS);      /* live metadata per kind, and peak */
BPF_PERCPU_ARRAY(cost_counts, struct kind_counts, MAX_KINDS);
BPF_PERCPU_ARRAY(cost_lost, u64, 1);                 /* not counted or followed: a map full */
BPF_HASH(cost_bulk_pages, u64, u64, 8192);           /* krc bulk page -> batches it held */

/* The kind of the backend code range holding `ip`, or -1. */
static __always_inline int site_kind(u64 ip)
{
#pragma unroll
	for (u32 i = 0; i < MAX_SITES; i++) {
		u32 k = i;
		struct site *s = cost_sites.lookup(&k);
		if (s && s->end && ip >= s->start && ip < s->end)
			return s->kind < MAX_KINDS ? (int)s->kind : -1;
	}
	return -1;
}

static __always_inline void lost_one(void)
{
	u32 zero = 0;
	u64 *l = cost_lost.lookup(&zero);
	if (l)
		(*l)++;
}

/* +1 on a counter found by map.lookup_or_try_init() (NULL: the map is full, counted lost).
 * bcc rewrites map calls only outside macros, so callers do the lookup themselves. */
static __always_inline void count_one(u64 *n)
{
	if (n)
		__sync_fetch_and_add(n, 1);
	else
		lost_one();
}

static __always_inline void callback_queued(u64 func)
{
	u64 zero = 0;
	count_one(cost_callbacks.lookup_or_try_init(&func, &zero));
}

int kprobe_call_rcu(struct pt_regs *ctx)
{
	callback_queued(PT_REGS_PARM2(ctx));
	return 0;
}

int kprobe_call_srcu(struct pt_regs *ctx)
{
	callback_queued(PT_REGS_PARM3(ctx));
	return 0;
}

static __always_inline void meta_alloc(u64 addr, u64 bytes, u32 kind)
{
	struct meta m = {.bytes = bytes, .kind = kind};
	if (cost_meta.update(&addr, &m) != 0) {
		lost_one();
		return;
	}
	struct kind_counts *c = cost_counts.lookup(&kind);
	if (c) {
		c->allocs++;
		c->alloc_bytes += bytes;
	}
	gauge_add(cost_gauge.lookup(&kind), 1, bytes);
}

static __always_inline void meta_free(u64 addr)
{
	struct meta *m = cost_meta.lookup(&addr);
	if (!m)
		return;
	u32 kind = m->kind;
	u64 bytes = m->bytes;
	cost_meta.delete(&addr);
	struct kind_counts *c = cost_counts.lookup(&kind);
	if (c) {
		c->frees++;
		c->free_bytes += bytes;
	}
	gauge_add(cost_gauge.lookup(&kind), -1, -(s64)bytes);
}

TRACEPOINT_PROBE(kmem, kmalloc)
{
	int kind = site_kind(args->call_site);
	if (kind >= 0 && args->ptr)
		meta_alloc((u64)args->ptr, args->bytes_alloc, kind);
	return 0;
}

TRACEPOINT_PROBE(kmem, kfree)
{
	meta_free((u64)args->ptr);
	return 0;
}

int kprobe_get_free_pages(struct pt_regs *ctx)
{
	u64 ret = 0;
	bpf_probe_read_kernel(&ret, sizeof(ret), (void *)PT_REGS_SP(ctx));
	int kind = site_kind(ret);
	if (kind < 0)
		return 0;
	u64 id = bpf_get_current_pid_tgid();
	struct meta m = {.bytes = 4096ULL << (PT_REGS_PARM2(ctx) & 15), .kind = kind};
	cost_page_call.update(&id, &m);
	return 0;
}

int kretprobe_get_free_pages(struct pt_regs *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	struct meta *m = cost_page_call.lookup(&id);
	if (!m)
		return 0;
	struct meta v = *m;
	cost_page_call.delete(&id);
	u64 addr = PT_REGS_RC(ctx);
	if (addr)
		meta_alloc(addr, v.bytes, v.kind);
	return 0;
}

int kprobe_free_pages(struct pt_regs *ctx)
{
	meta_free(PT_REGS_PARM1(ctx));
	return 0;
}

int kprobe_kvfree_rcu_bulk(struct pt_regs *ctx)
{
	u64 page = PT_REGS_PARM2(ctx), zero = 0;
	count_one(cost_bulk_pages.lookup_or_try_init(&page, &zero));
	return 0;
}
