/* rcu_pending family: the indexes of bpf/rcu_pending.bpf.c's counters and histograms.
 * The one definition: rcupending_tools/families/pending.py reads this header. Counter rows:
 * stat * NFL + flavor; histogram rows: flavor * HIST_SLOTS + slot. */
#ifndef RCUPENDING_RCU_PENDING_H
#define RCUPENDING_RCU_PENDING_H

/* Flavors. */
enum pending_flavor {
	FL_RCU = 0,
	FL_SRCU = 1,
	NFL = 2,
};

/* Counters, per flavor: index stat * NFL + flavor. */
enum pending_stat {
	PS_ENQ = 0,            /* rcu_pending_enqueue() objects */
	PS_ENQ_BYTES = 1,
	PS_ENQ_UNSIZED = 2,    /* not a slab object: bytes unknown */
	PS_LIST = 3,           /* generic enqueues that fell back to the linked list */
	PS_KV_LIST = 4,        /* kvfree_rcu() enqueues that fell back to the list (kvfree mode) */
	PS_DEQ = 5,            /* tracked objects taken back by rcu_pending_dequeue*() */
	PS_DEQ_BYTES = 6,
	PS_DEQ_UNMATCHED = 7,  /* dequeued objects enqueued before attach */
	PS_PROC = 8,           /* tracked objects handed to the process callback */
	PS_PROC_BYTES = 9,
	PS_PROC_UNMATCHED = 10, /* processed objects enqueued before attach */
	PS_UNTRACKED = 11,     /* not tracked (map full): counted, never matched */
	PS_UNTRACKED_BYTES = 12,
	PS_REPLACED = 13,      /* a tracked object enqueued again before it was seen processed */
	PS_RUNS = 14,          /* __process_finished_items() calls */
	PS_KV_RUNS = 15,       /* of those, on the kvfree_rcu() pending */
	PS_MAX = 16,
};


/* rcu_pending.process of the kvfree_rcu() pending on a patched kernel (RCU_PENDING_KVFREE_FN):
 * its objects are followed by the kvfree_call_rcu probe. */
#define RCU_PENDING_KVFREE 1

#endif
