/* Independent count for the VM tests: kmem:kmalloc per (process, call site).
 * ip_options_get() allocates one options block per IP_OPTIONS set, so for the stress workers
 * count(ip_options_get) = kfree_rcu enqueues + one first set per socket. */
struct site_key {
	u32 tgid;
	u64 call_site;
};

struct site_val {
	u64 count;
	u64 bytes_req;
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
		__sync_fetch_and_add(&v->bytes_req, args->bytes_req);
		__sync_fetch_and_add(&v->bytes_alloc, args->bytes_alloc);
	}
	return 0;
}

/* kmem:kfree per call site (any process: kvfree_rcu frees run in kworkers). kfree_bulk() emits
 * no per-object kfree, but channel 3's kvfree_rcu_list() frees each object with kfree(). */
BPF_HASH(kfree_sites, u64, u64, 4096);

TRACEPOINT_PROBE(kmem, kfree)
{
	u64 site = args->call_site, zero = 0;
	u64 *v = kfree_sites.lookup_or_try_init(&site, &zero);

	if (v)
		__sync_fetch_and_add(v, 1);
	return 0;
}
