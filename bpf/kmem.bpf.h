/* Helpers without maps shared by probe files (bcc rewrites map calls only in the main
 * source, so nothing here may touch a map): log2 slots, kernel reads, slab object sizes from
 * BTF-derived offsets (-D defines from layout.bytes_defines()). */
#ifndef RCUPENDING_KMEM_BPF_H
#define RCUPENDING_KMEM_BPF_H

#define HIST_SLOTS 64

/* floor(log2(v)) (0 for v = 0) without branches: smear the top bit down, count the bits.
 * Branch-free, so the verifier walks the 512-record bulk loop as one path per record. */
static __always_inline u32 log2_slot(u64 v)
{
	v |= 1;
	v |= v >> 1;
	v |= v >> 2;
	v |= v >> 4;
	v |= v >> 8;
	v |= v >> 16;
	v |= v >> 32;
	v = v - ((v >> 1) & 0x5555555555555555ULL);
	v = (v & 0x3333333333333333ULL) + ((v >> 2) & 0x3333333333333333ULL);
	v = (v + (v >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
	return (u32)((v * 0x0101010101010101ULL) >> 56) - 1;  /* 0..63 */
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

/* What memory an object lives in (the size a free gives back depends on it). */
enum mem_kind {
	MEM_UNSIZED = 0,  /* not found: bytes unknown */
	MEM_SLAB = 1,     /* a slab object: its cache's slot size */
	MEM_LARGE = 2,    /* kmalloc > 8 KiB: its own folio, PAGE_SIZE << order */
	MEM_VMALLOC = 3,  /* vmalloc'ed: bytes unknown here */
};

/* The kernel's base addresses (KASLR), read from the running kernel. */
struct kbases {
	u64 page_offset;
	u64 vmemmap;
	u64 vmalloc;
};

static __always_inline void kbases_read(struct kbases *b)
{
#ifndef BYTES_UNAVAILABLE
	b->page_offset = read_u64(PAGE_OFFSET_BASE_ADDR);
	b->vmemmap = read_u64(VMEMMAP_BASE_ADDR);
	b->vmalloc = read_u64(VMALLOC_BASE_ADDR);
#endif
}

/* 1 when x != 0, else 0, without a branch (BPF has no conditional set: comparisons become
 * jumps, and each jump is one more path for the verifier in a loop over objects). */
/* Hides a value from clang (not from the verifier): a 0/1 mask stays arithmetic instead of
 * becoming a select, which BPF compiles to a branch. */
#define opaque(x) asm volatile("" : "+r"(x))

static __always_inline u64 negative(u64 x)  /* 1 if (s64)x < 0, without a branch */
{
	opaque(x);
	x >>= 63;
	opaque(x);
	return x;
}

static __always_inline u64 nz(u64 x)  /* 1 if x != 0, without a branch */
{
	u64 t = x | -x;
	opaque(t);
	t >>= 63;
	opaque(t);
	return t;
}

/* 1 if `addr` lies in the vmalloc range (its 32 TiB from the KASLR base; below the base the
 * difference wraps far past it), without a branch. */
static __always_inline u64 in_vmalloc(const struct kbases *b, u64 addr)
{
	return 1 - nz((addr - b->vmalloc) >> 45);
}

#ifndef BYTES_UNAVAILABLE
/* The struct page fields the lookups need (compound head, slab cache, page type or flags), in
 * one kernel read of PAGE_HDR_LEN bytes from PAGE_HDR_FIRST (both from the layout, 8-aligned:
 * bytes_defines()) instead of one read per field: each read is a helper call. */
struct page_hdr {
	u64 w[PAGE_HDR_LEN / 8];
};

/* A naturally aligned field of `width` bits at struct page offset `off`, from the header. */
#define HDR_FIELD(h, off, width)                                                    \
	(((h)->w[((off) - PAGE_HDR_FIRST) / 8] >> (8 * (((off) - PAGE_HDR_FIRST) % 8))) & \
	 ((width) == 64 ? ~0ULL : ((1ULL << ((width) & 63)) - 1)))

/* The header of the struct page at `page`, `len` bytes of it (0: keep what *h holds; a read
 * that faults leaves zeros). */
static __always_inline void page_hdr_read(struct page_hdr *h, u64 page, u32 len)
{
	bpf_probe_read_kernel(h, len, (void *)(page + PAGE_HDR_FIRST));
}
#endif

/* The memory holding `addr`: its kind, its size in bytes (the slab slot, the large kmalloc's
 * folio; 0 when unknown) and, in *start, the object's first byte (slab objects; else `addr`
 * rounded down to its page, as the kernel finds a vmalloc object's start). */
static __always_inline u64 object_lookup(const struct kbases *b, u64 addr, u32 *kind, u64 *start)
{
	*kind = MEM_UNSIZED;
	*start = addr;
#ifdef BYTES_UNAVAILABLE
	return 0;
#else
	u64 page, head, cache, base;
	u32 size = 0;
	struct page_hdr h;

	if (in_vmalloc(b, addr)) {
		*kind = MEM_VMALLOC;
		*start = addr & ~4095ULL;
		return 0;
	}
	if (addr < b->page_offset)
		return 0;
	page = b->vmemmap + ((addr - b->page_offset) >> 12) * PAGE_STRUCT_SIZE;
	page_hdr_read(&h, page, sizeof(h));
	head = HDR_FIELD(&h, OFF_PAGE_COMPOUND_HEAD, 64);
	if (head & 1) {
		/* Tail page: compound_head is head + 1; 7.x compound_info with HVO holds instead
		 * GENMASK(63, shift) | 1, a mask to apply to the tail's own address. */
		u64 m = head & ~1ULL;
		if (((~m) & (~m + 1)) == 0)
			page = page & m;
		else
			page = head - 1;
		page_hdr_read(&h, page, sizeof(h));
	}
	base = b->page_offset + (((page - b->vmemmap) / PAGE_STRUCT_SIZE) << 12);
#if defined(SLAB_BY_PAGE_TYPE)
	u32 page_type = HDR_FIELD(&h, OFF_PAGE_TYPE, 32);
	bool slab = (page_type >> 24) == SLAB_TYPE;
#elif defined(SLAB_BY_FLAG)
	bool slab = HDR_FIELD(&h, OFF_PAGE_FLAGS, 64) & (1ULL << SLAB_FLAG_BIT);
#else
	bool slab = false;
#endif
	if (!slab) {
#ifdef HAVE_FOLIO_ORDER
		/* a large kmalloc: a compound head page of its own; the order is in the folio */
		if (HDR_FIELD(&h, OFF_PAGE_FLAGS, 64) & (1ULL << PG_HEAD_BIT)) {
			u8 order = 0;
			bpf_probe_read_kernel(&order, 1, (void *)(page + OFF_FOLIO_ORDER));
			*kind = MEM_LARGE;
			*start = base;
			return 4096ULL << (order & 31);
		}
#endif
		return 0;
	}
	cache = HDR_FIELD(&h, OFF_SLAB_CACHE, 64);
	if (!cache)
		return 0;
	bpf_probe_read_kernel(&size, sizeof(size), (void *)(cache + OFF_KMEM_CACHE_SIZE));
	if (!size)
		return 0;
	*kind = MEM_SLAB;
	if (addr >= base)
		*start = base + ((addr - base) / size) * size;
	return size;
#endif
}

#ifdef HAVE_VMAP_LOOKUP
#define VMAP_WALK_MAX 48  /* an rbtree of 2^23 areas is at most 46 deep */

/* The vmap area tree node as read at once: vmap_area's va_start, va_end and rb_node (whose
 * __rb_parent_color, rb_right, rb_left follow), at offsets 0, 8, 16 (checked from BTF). */
struct vmap_walk {
	u64 va_start, va_end, parent, right, left;
};

/* A vmalloc object's bytes: the pages of its vmap area (vm_struct.nr_pages x PAGE_SIZE, the
 * pages vfree() gives back; the guard page is no memory), found as find_vmap_area() finds it,
 * by a walk of the busy tree of the node holding `addr` (6.9+; before, the one
 * vmap_area_root). Read without the tree's lock: a walk that an insert or erase disturbs may
 * miss (0: unsized), never loops (bounded) nor faults (probe reads). 0 when not found. */
static __always_inline u64 vmalloc_bytes(u64 addr)
{
#ifdef VMAP_NODES_ADDR
	u64 nodes = read_u64(VMAP_NODES_ADDR);
	u32 nr = 0, zone = 0;  /* both unsigned int (mm/vmalloc.c) */
	bpf_probe_read_kernel(&nr, sizeof(nr), (void *)NR_VMAP_NODES_ADDR);
	bpf_probe_read_kernel(&zone, sizeof(zone), (void *)VMAP_ZONE_SIZE_ADDR);
	if (!nodes || !zone || !nr)
		return 0;
	u64 root = nodes + ((addr / zone) % nr) * VMAP_NODE_SIZE + OFF_VMAP_NODE_ROOT;
#else
	u64 root = VMAP_AREA_ROOT_ADDR;
#endif
	u64 n = read_u64(root), va = 0;
	struct vmap_walk w;
	for (int i = 0; i < VMAP_WALK_MAX; i++) {
		if (!n)
			return 0;
		if (bpf_probe_read_kernel(&w, sizeof(w), (void *)(n - 16)))
			return 0;
		if (addr < w.va_start) {
			n = w.left;
		} else if (addr >= w.va_end) {
			n = w.right;
		} else {
			va = n - 16;
			break;
		}
	}
	if (!va)
		return 0;
	u64 vm = read_u64(va + OFF_VA_VM);
	u32 pages = 0;
	if (vm)
		bpf_probe_read_kernel(&pages, sizeof(pages), (void *)(vm + OFF_VM_NR_PAGES));
	return (u64)pages << 12;
}
#else
static __always_inline u64 vmalloc_bytes(u64 addr)
{
	return 0;
}
#endif

/* The bytes a free of `addr` gives back, without branches (the free side's loops): a slab
 * object's slot size, a large kmalloc's folio, 0 for vmalloc'ed or unknown memory. Reads that
 * make no sense for the kind at hand fault to 0 and are masked off. */
static __always_inline u64 object_bytes_fast(const struct kbases *b, u64 addr)
{
#ifdef BYTES_UNAVAILABLE
	return 0;
#else
	u64 vm = in_vmalloc(b, addr);
	u64 page = b->vmemmap + ((addr - b->page_offset) >> 12) * PAGE_STRUCT_SIZE;
	struct page_hdr h;
	page_hdr_read(&h, page, sizeof(h));
	u64 head = HDR_FIELD(&h, OFF_PAGE_COMPOUND_HEAD, 64);
	u64 tail = head & 1, m = head & ~1ULL;
	u64 hvo = 1 - nz((~m) & (~m + 1));  /* 7.x compound_info: a mask, not head + 1 */
	u64 via_mask = page & m, via_head = head - 1;
	u64 headp = via_head ^ ((via_mask ^ via_head) & -hvo);
	page = page ^ ((headp ^ page) & -tail);
	u32 again = tail * sizeof(h);  /* a tail page: its head's header (else a 0-byte read) */
	opaque(again);
	page_hdr_read(&h, page, again);
#if defined(SLAB_BY_PAGE_TYPE)
	u32 page_type = HDR_FIELD(&h, OFF_PAGE_TYPE, 32);
	u64 slab = 1 - nz((page_type >> 24) ^ SLAB_TYPE);
#elif defined(SLAB_BY_FLAG)
	u64 slab = (HDR_FIELD(&h, OFF_PAGE_FLAGS, 64) >> SLAB_FLAG_BIT) & 1;
#else
	u64 slab = 0;
#endif
	u32 size = 0;
	u64 cache = HDR_FIELD(&h, OFF_SLAB_CACHE, 64);
	bpf_probe_read_kernel(&size, sizeof(size), (void *)(cache + OFF_KMEM_CACHE_SIZE));
	u64 bytes = size & -slab;
#ifdef HAVE_FOLIO_ORDER
	u8 order = 0;
	bpf_probe_read_kernel(&order, 1, (void *)(page + OFF_FOLIO_ORDER));
	u64 large = (1 - slab) & (HDR_FIELD(&h, OFF_PAGE_FLAGS, 64) >> PG_HEAD_BIT) & 1;
	bytes |= (4096ULL << (order & 31)) & -large;
#endif
	return bytes & -(1 - vm);
#endif
}

/* The slab object holding `addr` (bases read now): its slot size and, in *start, the object's
 * first byte; 0 when not a slab object or a large kmalloc (or bytes unavailable). */
static __always_inline u64 slab_lookup(u64 addr, bool *is_vmalloc, u64 *start)
{
	struct kbases b = {};
	u32 kind;
	kbases_read(&b);
	u64 bytes = object_lookup(&b, addr, &kind, start);
	*is_vmalloc = kind == MEM_VMALLOC;
	return bytes;
}

/* Per-object tracking of 1 in SAMPLE_MASK + 1 objects (RCUPENDING_SAMPLE), chosen by a hash
 * of the address so the free side skips the others without a map lookup. */
static __always_inline bool sampled(u64 ptr)
{
#ifdef SAMPLE_MASK
	return ((((ptr >> 4) * 0x9E3779B97F4A7C15ULL) >> 40) & SAMPLE_MASK) == 0;
#else
	return true;
#endif
}

#endif
