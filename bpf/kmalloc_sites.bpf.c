/* The kernel's own account of what a stress allocated, for `stress kvfree --measure`
 * (rcupending_tools/stress/oracle.py): kmem:kmalloc per (process, call site) with the
 * bytes_alloc the allocator reports. Written apart from kvfree_rcu.bpf.c: no slab lookup, no
 * kvfree hook; ip_options_get() allocates one block per IP_OPTIONS set, kernfs_rename_ns()
 * one name per rename, and the previous one of each goes to kfree_rcu(). */
struct site_key {
	u32 tgid;
	u64 call_site;
};

struct site_val {
	u64 count;
	u64 bytes_alloc;
};

BPF_HASH(kmalloc_sites, struct site_key, struct site_val, 16384);

TRACEPOINT_PROBE(kmem, kmalloc)
{
	struct site_key key = {};
	struct site_val zero = {};
	struct site_val *v;

	key.tgid = bpf_get_current_pid_tgid() >> 32;
	key.call_site = args->call_site;
	v = kmalloc_sites.lookup_or_try_init(&key, &zero);
	if (v) {
		__sync_fetch_and_add(&v->count, 1);
		__sync_fetch_and_add(&v->bytes_alloc, args->bytes_alloc);
	}
	return 0;
}
