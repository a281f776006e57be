/* kvfree_rcu family: where each figure of bpf/kvfree_rcu.bpf.c lives in its one per-CPU
 * value (kv_counters, enum kv_slot). The one definition: rcupending_tools/families/kvfree.py
 * reads this header (families/enums.py) for names, order and sizes. */
#ifndef RCUPENDING_KVFREE_RCU_H
#define RCUPENDING_KVFREE_RCU_H

#ifndef HIST_SLOTS
#define HIST_SLOTS 64
#endif
#ifndef KV_NCPUS
#define KV_NCPUS 64  /* possible CPUs: the loader passes this machine's number */
#endif

/* Where an object's wait ended. */
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
	ST_ENQ_UNSIZED = 3,    /* bytes unknown (vmalloc'ed, or memory not found) */
	ST_ENQ_VMALLOC = 4,
	ST_ENQ_SHEAF = 5,      /* taken by the sheaf bypass (subset of the enqueues) */
	ST_ENQ_SHEAF_BYTES = 6,
	ST_UNTRACKED = 7,      /* to be followed per object, but the tracking map was full */
	ST_UNTRACKED_BYTES = 8,
	ST_REPLACED = 9,       /* a tracked address enqueued again before its free was seen */
	ST_FREED = 10,                   /* + path: frees of objects enqueued after attach */
	ST_FREED_BYTES = ST_FREED + NPATH, /* + path */
	ST_UNMATCHED = ST_FREED_BYTES + NPATH, /* + path: frees of objects enqueued before attach */
	ST_REPLACED_BYTES = ST_UNMATCHED + NPATH,
	ST_ENQ_LARGE = ST_REPLACED_BYTES + 1,  /* kmalloc > 8 KiB: bytes of its folio */
	ST_TRACKED = ST_ENQ_LARGE + 1,  /* enqueues followed per object (sample, window, stress) */
	ST_TRACKED_BYTES = ST_TRACKED + 1,
	ST_LATE_UNMATCHED = ST_TRACKED_BYTES + 1,  /* after the window, a sampled free not found */
	ST_W_ENQ = ST_LATE_UNMATCHED + 1,  /* the watched processes' (a stress's) enqueues */
	ST_W_ENQ_BYTES = ST_W_ENQ + 1,
	ST_W_HEADLESS = ST_W_ENQ_BYTES + 1,
	ST_W_HEADLESS_BYTES = ST_W_HEADLESS + 1,
	ST_W_GONE = ST_W_HEADLESS_BYTES + 1,  /* ... of those, freed or replaced */
	ST_W_GONE_BYTES = ST_W_GONE + 1,
	ST_W_UNTRACKED = ST_W_GONE_BYTES + 1,  /* ... watched, but the tracking map was full */
	ST_W_UNTRACKED_BYTES = ST_W_UNTRACKED + 1,
	ST_ENQ_NOLOCK = ST_W_UNTRACKED_BYTES + 1,  /* 7.x kfree_rcu_nolock() straight to a sheaf */
	ST_WINDOW_TRACKED = ST_ENQ_NOLOCK + 1,  /* followed because enqueued during the window */
	ST_WINDOW_GONE = ST_WINDOW_TRACKED + 1,  /* ... of those, freed or replaced */
	ST_MAX = ST_WINDOW_GONE + 1,
};

/* Counted kernel events. */
enum kv_event {
	EV_GP = 0,            /* grace periods completed (rcu_gp_cleanup) */
	EV_BARRIER = 1,       /* kvfree_rcu_barrier() calls */
	EV_SHRINK_SCAN = 2,   /* krc shrinker scans */
	EV_SHRINK_FREED = 3,  /* objects the shrinker reported */
	EV_REFILL = 4,        /* page-cache refill work runs (fill_page_cache_func) */
	EV_RECLAIM_WORK = 5,  /* kfree_rcu_work runs (one per batch after its grace period) */
	EV_PHASED = 6,        /* freed objects with batch/GP/reclaim phases */
	EV_READY = 7,         /* freed objects whose GP ended before their batch was queued */
	EV_NOLOCK_ENQ = 8,    /* kfree_call_rcu_nolock() calls (7.x) */
	EV_NOLOCK_DEFER = 9,  /* of those, deferred to irq_work (defer_kfree_rcu) */
	EV_UNSAMPLED = 10,    /* enqueues outside the sample (RCUPENDING_SAMPLE): untracked */
	EV_UNARMED = 11,      /* calls before every hook was attached: not counted */
	EV_BULK_PAGES = 12,   /* krc bulk pages freed (kvfree_rcu_bulk calls) */
	NEV = 13,
};

/* Duration histograms. */
enum kv_dur {
	DUR_BATCH = 0,    /* enqueue -> its batch handed to RCU (queue_rcu_work) */
	DUR_GP = 1,       /* batch queued -> kfree_rcu_work starts (grace period + wakeup) */
	DUR_RECLAIM = 2,  /* kfree_rcu_work start -> the object's free */
	DUR_READY = 3,    /* enqueue -> free, freed by the monitor with the GP already over */
	DUR_RCU_GP = 4,   /* rcu_gp_init -> rcu_gp_cleanup: one RCU grace period */
	DUR_BARRIER = 5,  /* kvfree_rcu_barrier() call duration */
	NDUR = 6,
};

/* What user space tells the programs (kv_cfg): until window_end (ktime ns) every object is
 * followed, so the frees of objects enqueued before attach are told apart; after it 1 in
 * sample_mask + 1 objects (address hash), and always those of the watched processes (a
 * stress's, counted apart too). */
#define KV_WATCH_MAX 8
/* inflight.flags */
#define INF_WINDOW 1   /* tracked during the window */
#define INF_WATCHED 2  /* of a watched process */
#define INF_SHEAF 4    /* taken by the sheaf bypass */
#define INF_PENDING 8  /* its weight added to a kv_pending_tgid slot (taken back where it leaves) */
#define INF_OTHER 16   /* ... to the overflow slot KV_TGID_OTHER (no slot of its own: map full) */
#define INF_SHIFT 8    /* flags >> INF_SHIFT: log2 of its weight (1, or the sample's one_in) */
/* kv_pending_tgid's overflow key, made by user space at arm (no process has this tgid) */
#define KV_TGID_OTHER 0xFFFFFFFF

/* The one per-CPU value (kv_counters): every figure of the family, so that one lookup reads
 * them all for every CPU at one instant. A program brackets its updates with KV_BEGIN++ first
 * and KV_END++ last; a reader's copy of a CPU is whole when the two are equal (the copy runs
 * from KV_END, the lowest word, to KV_BEGIN, the highest). KV_GONE counts, by the CPU that
 * enqueued them, the tracked objects that left the tracking map (freed or replaced), so that
 * per-CPU pending is enqueued - untracked - gone of that CPU, and sums to the total. */
enum kv_slot {
	KV_END = 0,
	KV_STATS = 1,                          /* + kv_stat */
	KV_EVENTS = KV_STATS + ST_MAX,         /* + kv_event */
	KV_GAUGE = KV_EVENTS + NEV,            /* + 0, 1: net tracked pending objects, bytes of
	                                          the programs that ran on this CPU */
	KV_LAT = KV_GAUGE + 2,                 /* + path * HIST_SLOTS + log2(ns) enqueue -> free */
	KV_GPS = KV_LAT + NPATH * HIST_SLOTS,  /* + path * HIST_SLOTS + log2(1 + grace periods) */
	KV_DUR = KV_GPS + NPATH * HIST_SLOTS,  /* + kv_dur * HIST_SLOTS + log2(ns) */
	KV_GONE = KV_DUR + NDUR * HIST_SLOTS,  /* + 2 * enqueue CPU (+ 1: bytes) */
	KV_BEGIN = KV_GONE + 2 * KV_NCPUS,
	KV_SLOTS = KV_BEGIN + 1,
};

#endif
