// SPDX-License-Identifier: GPL-2.0
/*
 * rcupending_lab: drive rcu_pending and kvfree_rcu() from debugfs, for
 * rcupending-tools' lab kernels (kernel/lab-6.12: rcu_pending in the core
 * kernel, exported GPL).
 *
 * /sys/kernel/debug/rcupending_lab/
 *   size              object size in bytes (>= 16, default 64)
 *   vmalloc           0: objects from kmalloc (slab), 1: from vmalloc
 *   enqueue_rcu       write N: allocate N objects, rcu_pending_enqueue() each
 *   enqueue_srcu        on the RCU (resp. SRCU) flavored rcu_pending
 *   dequeue_rcu       write N: rcu_pending_dequeue() up to N objects (this
 *   dequeue_srcu        CPU's), free them here; counters say how many came
 *   hold_rcu_ms       write T: hold an RCU read lock (busy, <= 10000 ms)
 *   hold_srcu_ms      write T: hold an SRCU read lock (sleeping, <= 60000 ms)
 *   kvfree_rcu_barrier  write anything: kvfree_rcu_barrier()
 *   kvfree_mightsleep write N: allocate N objects, kvfree_rcu_mightsleep() each
 *   kfree_rcu         write N: allocate N objects, kvfree_rcu(obj, rcu) each
 *   counters          the module's own counts (one "name value" per line)
 *   reset             write anything: zero the counters
 *
 *   oracle_run        write "key=value ..." (see ORACLE below): kvfree_rcu() N
 *                     objects of a chosen kind from a chosen context (blocks); then
 *                     read the same open file: counts, exact sizes, times, context
 *   oracle_state      runs holding their reader now, the latest one's pid, the time
 *   oracle_release    write anything: runs holding their reader end the hold now
 *
 * The module counts for itself: objects it enqueued, dequeued, and that its
 * rcu_pending process callback freed; outstanding = enqueued - dequeued -
 * processed, per flavor. Objects given to kvfree_rcu are only counted when
 * queued (the kernel frees them).
 *
 * The rcu_pending knobs exist only where <linux/rcu_pending.h> does (the lab
 * kernels); the kvfree_rcu knobs and the oracle build against any 6.1+ tree,
 * e.g. a Debian linux-headers package (rcupending_tools/lab/modules.py).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/atomic.h>
#include <linux/debugfs.h>
#include <linux/delay.h>
#include <linux/irq_work.h>
#include <linux/kernel.h>
#include <linux/kthread.h>
#include <linux/mm.h>
#include <linux/ktime.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/rcupdate.h>
#include <linux/sched.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/srcu.h>
#include <linux/string.h>
#include <linux/timer.h>
#include <linux/uaccess.h>
#include <linux/version.h>
#include <linux/vmalloc.h>

#if __has_include(<linux/rcu_pending.h>)
#include <linux/rcu_pending.h>
#define HAVE_RCU_PENDING 1
#endif
/* exported from kernel/rcu/tree.c (6.12, 6.13); built in only once it moved to mm/ */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 12, 0) && LINUX_VERSION_CODE < KERNEL_VERSION(6, 14, 0)
#define HAVE_KVFREE_RCU_BARRIER 1
#endif

struct lab_obj {
	struct rcu_head rcu;
	u64 payload[];
};

enum { LAB_RCU, LAB_SRCU, LAB_NR_FLAVORS };
static const char *const flavor_names[LAB_NR_FLAVORS] = { "rcu", "srcu" };

struct lab_flavor {
#ifdef HAVE_RCU_PENDING
	struct rcu_pending pending;
#endif
	atomic_long_t enqueued;
	atomic_long_t dequeued;
	atomic_long_t processed;
	atomic_long_t enqueue_failed; /* allocation failures before enqueue */
};

static struct lab_flavor flavors[LAB_NR_FLAVORS];
static struct srcu_struct lab_srcu;
static struct dentry *lab_dir;

static u64 obj_size = 64;
static bool use_vmalloc;

static atomic_long_t kvfree_mightsleep_queued;
static atomic_long_t kfree_rcu_queued;
static atomic_long_t alloc_failed;
static atomic_long_t barriers;
static atomic_t holding[LAB_NR_FLAVORS]; /* 1 while a hold_*_ms reader is inside */

static struct lab_obj *lab_alloc(void)
{
	size_t size = max_t(size_t, obj_size, sizeof(struct lab_obj));
	struct lab_obj *obj = use_vmalloc ? vzalloc(size) : kzalloc(size, GFP_KERNEL);

	if (!obj)
		atomic_long_inc(&alloc_failed);
	return obj;
}

static int parse_count(const char __user *ubuf, size_t len, unsigned long *n)
{
	int ret = kstrtoul_from_user(ubuf, len, 0, n);

	if (ret)
		return ret;
	return *n > 100000000UL ? -ERANGE : 0;
}

#ifdef HAVE_RCU_PENDING
/* The process callback: a global name observers can hook (rcupending's layout.PROCESS_CALLBACKS). */
void rcupending_lab_process(struct rcu_pending *pending, struct rcu_head *rcu);
noinline void rcupending_lab_process(struct rcu_pending *pending, struct rcu_head *rcu)
{
	struct lab_flavor *f = container_of(pending, struct lab_flavor, pending);

	kvfree(container_of(rcu, struct lab_obj, rcu));
	atomic_long_inc(&f->processed);
}

static ssize_t do_enqueue(struct lab_flavor *f, unsigned long n)
{
	for (unsigned long i = 0; i < n; i++) {
		struct lab_obj *obj = lab_alloc();

		if (!obj) {
			atomic_long_inc(&f->enqueue_failed);
			return -ENOMEM;
		}
		rcu_pending_enqueue(&f->pending, &obj->rcu);
		atomic_long_inc(&f->enqueued);
		if (!(i & 1023))
			cond_resched();
	}
	return 0;
}

static ssize_t do_dequeue(struct lab_flavor *f, unsigned long n)
{
	for (unsigned long i = 0; i < n; i++) {
		struct rcu_head *rcu = rcu_pending_dequeue(&f->pending);

		if (!rcu)
			break;
		kvfree(container_of(rcu, struct lab_obj, rcu));
		atomic_long_inc(&f->dequeued);
	}
	return 0;
}
#endif

/* ------------------------------------------------------------------ ORACLE
 *
 * oracle_run takes one line of key=value words:
 *   kind=cache|kmalloc|vmalloc  cache: a dedicated kmem_cache "rcupending_oracle_<size>"
 *                               (SLAB_STORE_USER: a debug cache, so never merged and never
 *                               cached per CPU: /sys/kernel/slab/<name>/objects is its exact
 *                               live count at any instant); kmalloc: kmalloc(size) (> 8 KiB:
 *                               pages from the page allocator); vmalloc: vzalloc(size)
 *   size=S     object size in bytes (>= 16; default 64)
 *   n=N        objects (<= 1000000)
 *   ctx=process|softirq|hardirq  where kvfree_rcu() runs: the worker kthread itself, a
 *              timer_list callback on its CPU (softirq) or an irq_work (hard IRQ) that
 *              interrupts the worker while it spins, so `current` is the worker in all three
 *   headless=0|1  kvfree_rcu_mightsleep(obj) instead of kvfree_rcu(obj, rcu) (process only)
 *   hold_ms=T  hold an RCU reader (rcu_read_lock) from before the first kvfree_rcu() until
 *              T ms after the last (<= 15000: under the 21 s RCU stall warning), or until a
 *              write to oracle_release: no object may be freed before the reader ends
 *   cpu=C      the CPU the worker is bound to (default 0)
 *   comm=NAME  the worker's name (default rcuorc; <= 15 characters)
 *
 * Objects are allocated by the worker in process context first (GFP_KERNEL; the pointer
 * array by the writer), then all handed to kvfree_rcu() in the chosen context. The write
 * returns once the worker is done; a read of the same open file then says what happened:
 * the worker's pid, the pid `current` had in the enqueuing context, the context seen there,
 * the exact size of each object (ksize(); vmalloc: pages mapped x PAGE_SIZE), and
 * CLOCK_MONOTONIC times (the clock of bpf_ktime_get_ns) of the first and last enqueue and of
 * the reader's start and end. Runs may overlap (each has its own worker and open file).
 */
#define ORC_MAX_N 1000000UL
#define ORC_MAX_CACHES 8

enum orc_kind { ORC_CACHE, ORC_KMALLOC, ORC_VMALLOC };
enum orc_ctx { ORC_PROCESS, ORC_SOFTIRQ, ORC_HARDIRQ };
static const char *const orc_kind_names[] = { "cache", "kmalloc", "vmalloc" };
static const char *const orc_ctx_names[] = { "process", "softirq", "hardirq" };

struct orc_cache {
	unsigned int size;
	struct kmem_cache *cache;
	char name[32];
};

struct orc_run {
	/* asked */
	enum orc_kind kind;
	enum orc_ctx ctx;
	unsigned long n;
	unsigned int size;
	bool headless;
	unsigned int hold_ms;
	int cpu;
	char comm[TASK_COMM_LEN];
	/* state */
	struct orc_cache *oc;
	void **objs;
	struct timer_list timer;
	struct irq_work work;
	struct completion done;
	int done_irq;
	/* result */
	int ret;
	pid_t pid;           /* the worker */
	pid_t enqueue_pid;   /* `current` where kvfree_rcu() ran */
	bool ctx_ok;         /* every enqueue ran in the asked context */
	unsigned long allocated;
	unsigned long enqueued;
	size_t bytes_each;   /* ksize() of each object (vmalloc: pages mapped x PAGE_SIZE) */
	bool sizes_equal;    /* every object had bytes_each */
	u64 t_alloc_ns, t_first_ns, t_last_ns, t_reader_start_ns, t_reader_end_ns, t_done_ns;
};

static DEFINE_MUTEX(orc_lock);  /* guards orc_caches */
static struct orc_cache orc_caches[ORC_MAX_CACHES];
static atomic_long_t orc_enqueued_total;
/* oracle_state: runs holding their reader now (all their objects enqueued), the latest */
static atomic_t orc_holding;
static atomic_t orc_holding_pid;
static atomic_t orc_release_gen;  /* oracle_release: holding runs end their hold now */

static struct orc_cache *orc_cache_get(unsigned int size)
{
	slab_flags_t flags = SLAB_STORE_USER;
	int i;

#ifdef SLAB_NO_MERGE
	flags |= SLAB_NO_MERGE;
#endif
	for (i = 0; i < ORC_MAX_CACHES; i++) {
		struct orc_cache *oc = &orc_caches[i];

		if (oc->cache && oc->size == size)
			return oc;
		if (!oc->cache) {
			snprintf(oc->name, sizeof(oc->name), "rcupending_oracle_%u", size);
			oc->cache = kmem_cache_create(oc->name, size, 0, flags, NULL);
			if (!oc->cache)
				return NULL;
			oc->size = size;
			return oc;
		}
	}
	return NULL;
}

static void *orc_alloc_one(struct orc_run *r)
{
	switch (r->kind) {
	case ORC_CACHE:
		return kmem_cache_zalloc(r->oc->cache, GFP_KERNEL);
	case ORC_KMALLOC:
		return kzalloc(r->size, GFP_KERNEL);
	case ORC_VMALLOC:
		return vzalloc(r->size);
	}
	return NULL;
}

static size_t orc_size_of(struct orc_run *r, void *obj)
{
	if (r->kind == ORC_VMALLOC)
		return PAGE_ALIGN(r->size);  /* vzalloc maps whole pages; the guard page is extra */
	return ksize(obj);
}

static bool orc_in_ctx(enum orc_ctx ctx)
{
	switch (ctx) {
	case ORC_PROCESS:
		return in_task();
	case ORC_SOFTIRQ:
		return in_serving_softirq() && !in_hardirq();
	case ORC_HARDIRQ:
		return in_hardirq();
	}
	return false;
}

/* Hands every allocated object to kvfree_rcu(), in whatever context this runs. */
static void orc_enqueue_all(struct orc_run *r)
{
	unsigned long i;

	r->enqueue_pid = current->pid;
	r->ctx_ok = orc_in_ctx(r->ctx);
	r->t_first_ns = ktime_get_ns();
	for (i = 0; i < r->allocated; i++) {
		struct lab_obj *obj = r->objs[i];

		if (r->headless)
			kvfree_rcu_mightsleep(obj);
		else
			kvfree_rcu(obj, rcu);
		r->objs[i] = NULL;
		if (r->ctx == ORC_PROCESS && !r->hold_ms && !(i & 1023))
			cond_resched();
	}
	r->t_last_ns = ktime_get_ns();
	r->enqueued = r->allocated;
	atomic_long_add(r->allocated, &orc_enqueued_total);
}

static void orc_timer_fn(struct timer_list *t)
{
	struct orc_run *r = container_of(t, struct orc_run, timer);

	orc_enqueue_all(r);
	smp_store_release(&r->done_irq, 1);
}

static void orc_irq_work_fn(struct irq_work *w)
{
	struct orc_run *r = container_of(w, struct orc_run, work);

	orc_enqueue_all(r);
	smp_store_release(&r->done_irq, 1);
}

/* The interrupt runs on this CPU and interrupts this task (preemption off while it spins). */
static void orc_enqueue_from_irq(struct orc_run *r)
{
	r->done_irq = 0;
	preempt_disable();
	if (r->ctx == ORC_SOFTIRQ) {
		timer_setup(&r->timer, orc_timer_fn, 0);
		r->timer.expires = jiffies + 1;
		add_timer_on(&r->timer, smp_processor_id());
	} else {
		init_irq_work(&r->work, orc_irq_work_fn);
		irq_work_queue(&r->work);
	}
	while (!smp_load_acquire(&r->done_irq))
		cpu_relax();
	preempt_enable();
	if (r->ctx == ORC_SOFTIRQ)
		timer_delete_sync(&r->timer);
	else
		irq_work_sync(&r->work);
}

static int orc_worker(void *data)
{
	struct orc_run *r = data;
	unsigned long i;

	r->pid = current->pid;
	r->t_alloc_ns = ktime_get_ns();
	for (i = 0; i < r->n; i++) {
		void *obj = orc_alloc_one(r);
		size_t bytes;

		if (!obj) {
			atomic_long_inc(&alloc_failed);
			r->ret = -ENOMEM;
			break;
		}
		bytes = orc_size_of(r, obj);
		if (i == 0)
			r->bytes_each = bytes;
		else if (bytes != r->bytes_each)
			r->sizes_equal = false;
		r->objs[i] = obj;
		r->allocated = i + 1;
		if (!(i & 1023))
			cond_resched();
	}
	if (r->hold_ms) {
		rcu_read_lock();
		r->t_reader_start_ns = ktime_get_ns();
	}
	if (r->ctx == ORC_PROCESS)
		orc_enqueue_all(r);
	else
		orc_enqueue_from_irq(r);
	if (r->hold_ms) {
		u64 until = r->t_last_ns + (u64)r->hold_ms * NSEC_PER_MSEC;
		int gen = atomic_read(&orc_release_gen);

		atomic_set(&orc_holding_pid, r->pid);
		atomic_inc(&orc_holding);
		while (ktime_get_ns() < until && atomic_read(&orc_release_gen) == gen)
			udelay(100);
		r->t_reader_end_ns = ktime_get_ns();
		atomic_dec(&orc_holding);
		rcu_read_unlock();
	}
	r->t_done_ns = ktime_get_ns();
	complete(&r->done);
	return 0;
}

/* One line of key=value words into *r; -EINVAL on anything unknown or out of range. */
static int orc_parse(char *line, struct orc_run *r)
{
	char *word;

	r->kind = ORC_CACHE;
	r->ctx = ORC_PROCESS;
	r->size = 64;
	strscpy(r->comm, "rcuorc", sizeof(r->comm));
	while ((word = strsep(&line, " \t\n")) != NULL) {
		char *key = strsep(&word, "=");
		unsigned long v = 0;
		int i;

		if (!*key)
			continue;
		if (!word)
			return -EINVAL;
		if (!strcmp(key, "kind") || !strcmp(key, "ctx")) {
			bool kind = !strcmp(key, "kind");
			const char *const *names = kind ? orc_kind_names : orc_ctx_names;

			for (i = 0; i < 3 && strcmp(word, names[i]); i++)
				;
			if (i == 3)
				return -EINVAL;
			if (kind)
				r->kind = i;
			else
				r->ctx = i;
			continue;
		}
		if (!strcmp(key, "comm")) {
			if (!*word || strlen(word) >= sizeof(r->comm))
				return -EINVAL;
			strscpy(r->comm, word, sizeof(r->comm));
			continue;
		}
		if (kstrtoul(word, 0, &v))
			return -EINVAL;
		if (!strcmp(key, "size") && v >= sizeof(struct lab_obj) && v <= (64UL << 20))
			r->size = v;
		else if (!strcmp(key, "n") && v <= ORC_MAX_N)
			r->n = v;
		else if (!strcmp(key, "headless") && v <= 1)
			r->headless = v;
		else if (!strcmp(key, "hold_ms") && v <= 15000)
			r->hold_ms = v;
		else if (!strcmp(key, "cpu") && v < nr_cpu_ids && cpu_online(v))
			r->cpu = v;
		else
			return -EINVAL;
	}
	/* headless may sleep: neither in an interrupt nor inside a reader */
	if (r->headless && (r->ctx != ORC_PROCESS || r->hold_ms))
		return -EINVAL;
	if (r->kind == ORC_CACHE && r->size > KMALLOC_MAX_CACHE_SIZE)
		return -EINVAL;
	return 0;
}

/* A run and its result belong to the open file: write the spec, then read the result. */
static ssize_t oracle_run_write(struct file *file, const char __user *ubuf, size_t len,
				loff_t *ppos)
{
	struct orc_run *r;
	struct task_struct *t;
	char *line;
	ssize_t ret;

	if (len > 256)
		return -EINVAL;
	line = memdup_user_nul(ubuf, len);
	if (IS_ERR(line))
		return PTR_ERR(line);
	r = kzalloc(sizeof(*r), GFP_KERNEL);
	if (!r) {
		kfree(line);
		return -ENOMEM;
	}
	ret = orc_parse(line, r);
	kfree(line);
	if (ret)
		goto out;
	r->sizes_equal = true;
	init_completion(&r->done);
	r->objs = kvcalloc(max(r->n, 1UL), sizeof(void *), GFP_KERNEL);
	if (!r->objs) {
		ret = -ENOMEM;
		goto out;
	}
	if (r->kind == ORC_CACHE) {
		mutex_lock(&orc_lock);
		r->oc = orc_cache_get(r->size);
		mutex_unlock(&orc_lock);
		if (!r->oc) {
			ret = -ENOMEM;
			goto out;
		}
	}
	t = kthread_create(orc_worker, r, "%s", r->comm);
	if (IS_ERR(t)) {
		ret = PTR_ERR(t);
		goto out;
	}
	kthread_bind(t, r->cpu);
	wake_up_process(t);
	wait_for_completion(&r->done);
	/* an allocation failure leaves objects behind: free them (never enqueued) */
	for (unsigned long i = r->enqueued; i < r->allocated; i++)
		if (r->objs[i])
			kvfree(r->objs[i]);
	ret = r->ret;
out:
	kvfree(r->objs);
	r->objs = NULL;
	if (ret) {
		kfree(r);
		return ret;
	}
	kfree(file->private_data);
	file->private_data = r;
	return len;
}

static ssize_t oracle_run_read(struct file *file, char __user *ubuf, size_t len, loff_t *ppos)
{
	struct orc_run *r = file->private_data;
	char *buf;
	int n;
	ssize_t ret;

	if (!r)
		return -ENODATA;
	buf = kmalloc(PAGE_SIZE, GFP_KERNEL);
	if (!buf)
		return -ENOMEM;
	n = scnprintf(buf, PAGE_SIZE,
		      "kind %s\nctx %s\nsize %u\nn %lu\nheadless %d\nhold_ms %u\ncpu %d\n"
		      "comm %s\npid %d\nenqueue_pid %d\nctx_ok %d\nallocated %lu\nenqueued %lu\n"
		      "bytes_each %zu\nsizes_equal %d\ncache %s\nt_alloc_ns %llu\n"
		      "t_first_ns %llu\nt_last_ns %llu\nt_reader_start_ns %llu\n"
		      "t_reader_end_ns %llu\nt_done_ns %llu\nret %d\nenqueued_total %ld\n",
		      orc_kind_names[r->kind], orc_ctx_names[r->ctx], r->size, r->n, r->headless,
		      r->hold_ms, r->cpu, r->comm, r->pid, r->enqueue_pid, r->ctx_ok, r->allocated,
		      r->enqueued, r->bytes_each, r->sizes_equal, r->oc ? r->oc->name : "-",
		      r->t_alloc_ns, r->t_first_ns, r->t_last_ns, r->t_reader_start_ns,
		      r->t_reader_end_ns, r->t_done_ns, r->ret,
		      atomic_long_read(&orc_enqueued_total));
	ret = simple_read_from_buffer(ubuf, len, ppos, buf, n);
	kfree(buf);
	return ret;
}

static int oracle_run_release(struct inode *inode, struct file *file)
{
	kfree(file->private_data);
	return 0;
}

static int oracle_run_open(struct inode *inode, struct file *file)
{
	file->private_data = NULL;
	return 0;
}

static ssize_t oracle_release_write(struct file *file, const char __user *ubuf, size_t len,
				    loff_t *ppos)
{
	atomic_inc(&orc_release_gen);
	return len;
}

static const struct file_operations oracle_release_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.write = oracle_release_write,
	.llseek = noop_llseek,
};

static int oracle_state_show(struct seq_file *m, void *v)
{
	seq_printf(m, "holding %d\nholding_pid %d\nenqueued_total %ld\nnow_ns %llu\n",
		   atomic_read(&orc_holding), atomic_read(&orc_holding_pid),
		   atomic_long_read(&orc_enqueued_total), ktime_get_ns());
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(oracle_state);

static const struct file_operations oracle_run_fops = {
	.owner = THIS_MODULE,
	.open = oracle_run_open,
	.write = oracle_run_write,
	.read = oracle_run_read,
	.release = oracle_run_release,
	.llseek = default_llseek,
};

/* ------------------------------------------------------------------ knobs */

/* the private data of each write-only knob says what to do */
enum lab_op {
	OP_ENQUEUE_RCU, OP_ENQUEUE_SRCU, OP_DEQUEUE_RCU, OP_DEQUEUE_SRCU,
	OP_HOLD_RCU, OP_HOLD_SRCU, OP_KVFREE_BARRIER, OP_KVFREE_MIGHTSLEEP,
	OP_KFREE_RCU, OP_RESET,
};

static void reset_counters(void)
{
	for (int i = 0; i < LAB_NR_FLAVORS; i++) {
		atomic_long_set(&flavors[i].enqueued, 0);
		atomic_long_set(&flavors[i].dequeued, 0);
		atomic_long_set(&flavors[i].processed, 0);
		atomic_long_set(&flavors[i].enqueue_failed, 0);
	}
	atomic_long_set(&kvfree_mightsleep_queued, 0);
	atomic_long_set(&kfree_rcu_queued, 0);
	atomic_long_set(&alloc_failed, 0);
	atomic_long_set(&barriers, 0);
}

static ssize_t lab_write(struct file *file, const char __user *ubuf, size_t len, loff_t *ppos)
{
	enum lab_op op = (enum lab_op)(unsigned long)file->private_data;
	unsigned long n = 0;
	ssize_t ret = 0;
	int idx;

	if (op != OP_KVFREE_BARRIER && op != OP_RESET) {
		ret = parse_count(ubuf, len, &n);
		if (ret)
			return ret;
	}

	switch (op) {
#ifdef HAVE_RCU_PENDING
	case OP_ENQUEUE_RCU:
		ret = do_enqueue(&flavors[LAB_RCU], n);
		break;
	case OP_ENQUEUE_SRCU:
		ret = do_enqueue(&flavors[LAB_SRCU], n);
		break;
	case OP_DEQUEUE_RCU:
		ret = do_dequeue(&flavors[LAB_RCU], n);
		break;
	case OP_DEQUEUE_SRCU:
		ret = do_dequeue(&flavors[LAB_SRCU], n);
		break;
#else
	case OP_ENQUEUE_RCU:
	case OP_ENQUEUE_SRCU:
	case OP_DEQUEUE_RCU:
	case OP_DEQUEUE_SRCU:
		return -EOPNOTSUPP;
#endif
	case OP_HOLD_RCU:
		if (n > 10000)
			return -ERANGE;
		rcu_read_lock();
		atomic_set(&holding[LAB_RCU], 1);
		for (unsigned long ms = 0; ms < n; ms++)
			mdelay(1);
		atomic_set(&holding[LAB_RCU], 0);
		rcu_read_unlock();
		break;
	case OP_HOLD_SRCU:
		if (n > 60000)
			return -ERANGE;
		idx = srcu_read_lock(&lab_srcu);
		atomic_set(&holding[LAB_SRCU], 1);
		msleep(n);
		atomic_set(&holding[LAB_SRCU], 0);
		srcu_read_unlock(&lab_srcu, idx);
		break;
	case OP_KVFREE_BARRIER:
#ifdef HAVE_KVFREE_RCU_BARRIER
		kvfree_rcu_barrier();
		atomic_long_inc(&barriers);
		break;
#else
		return -EOPNOTSUPP;
#endif
	case OP_KVFREE_MIGHTSLEEP:
		for (unsigned long i = 0; i < n; i++) {
			struct lab_obj *obj = lab_alloc();

			if (!obj)
				return -ENOMEM;
			kvfree_rcu_mightsleep(obj);
			atomic_long_inc(&kvfree_mightsleep_queued);
			if (!(i & 1023))
				cond_resched();
		}
		break;
	case OP_KFREE_RCU:
		for (unsigned long i = 0; i < n; i++) {
			struct lab_obj *obj = lab_alloc();

			if (!obj)
				return -ENOMEM;
			kvfree_rcu(obj, rcu);
			atomic_long_inc(&kfree_rcu_queued);
			if (!(i & 1023))
				cond_resched();
		}
		break;
	case OP_RESET:
		reset_counters();
		break;
	}
	return ret ?: len;
}

static const struct file_operations lab_op_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.write = lab_write,
	.llseek = noop_llseek,
};

static int counters_show(struct seq_file *m, void *v)
{
	for (int i = 0; i < LAB_NR_FLAVORS; i++) {
		struct lab_flavor *f = &flavors[i];
		long enq = atomic_long_read(&f->enqueued);
		long deq = atomic_long_read(&f->dequeued);
		long done = atomic_long_read(&f->processed);

		seq_printf(m, "%s_enqueued %ld\n", flavor_names[i], enq);
		seq_printf(m, "%s_dequeued %ld\n", flavor_names[i], deq);
		seq_printf(m, "%s_processed %ld\n", flavor_names[i], done);
		seq_printf(m, "%s_outstanding %ld\n", flavor_names[i], enq - deq - done);
		seq_printf(m, "%s_holding %d\n", flavor_names[i], atomic_read(&holding[i]));
		seq_printf(m, "%s_enqueue_failed %ld\n", flavor_names[i],
			   atomic_long_read(&f->enqueue_failed));
	}
	seq_printf(m, "kvfree_mightsleep_queued %ld\n", atomic_long_read(&kvfree_mightsleep_queued));
	seq_printf(m, "kfree_rcu_queued %ld\n", atomic_long_read(&kfree_rcu_queued));
	seq_printf(m, "alloc_failed %ld\n", atomic_long_read(&alloc_failed));
	seq_printf(m, "kvfree_rcu_barriers %ld\n", atomic_long_read(&barriers));
	seq_printf(m, "size %llu\n", obj_size);
	seq_printf(m, "vmalloc %d\n", use_vmalloc);
#ifdef HAVE_RCU_PENDING
	seq_puts(m, "rcu_pending 1\n");
#else
	seq_puts(m, "rcu_pending 0\n");
#endif
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(counters);

static const struct {
	const char *name;
	enum lab_op op;
} knobs[] = {
	{ "enqueue_rcu", OP_ENQUEUE_RCU },
	{ "enqueue_srcu", OP_ENQUEUE_SRCU },
	{ "dequeue_rcu", OP_DEQUEUE_RCU },
	{ "dequeue_srcu", OP_DEQUEUE_SRCU },
	{ "hold_rcu_ms", OP_HOLD_RCU },
	{ "hold_srcu_ms", OP_HOLD_SRCU },
	{ "kvfree_rcu_barrier", OP_KVFREE_BARRIER },
	{ "kvfree_mightsleep", OP_KVFREE_MIGHTSLEEP },
	{ "kfree_rcu", OP_KFREE_RCU },
	{ "reset", OP_RESET },
};

static int __init rcupending_lab_init(void)
{
	int ret = init_srcu_struct(&lab_srcu);

	if (ret)
		return ret;
#ifdef HAVE_RCU_PENDING
	ret = rcu_pending_init(&flavors[LAB_RCU].pending, NULL, rcupending_lab_process);
	if (ret)
		goto err_srcu;
	ret = rcu_pending_init(&flavors[LAB_SRCU].pending, &lab_srcu, rcupending_lab_process);
	if (ret)
		goto err_rcu;
#endif

	lab_dir = debugfs_create_dir(KBUILD_MODNAME, NULL);
	debugfs_create_u64("size", 0644, lab_dir, &obj_size);
	debugfs_create_bool("vmalloc", 0644, lab_dir, &use_vmalloc);
	for (int i = 0; i < ARRAY_SIZE(knobs); i++)
		debugfs_create_file(knobs[i].name, 0200, lab_dir,
				    (void *)(unsigned long)knobs[i].op, &lab_op_fops);
	debugfs_create_file("counters", 0444, lab_dir, NULL, &counters_fops);
	debugfs_create_file("oracle_run", 0600, lab_dir, NULL, &oracle_run_fops);
	debugfs_create_file("oracle_state", 0444, lab_dir, NULL, &oracle_state_fops);
	debugfs_create_file("oracle_release", 0200, lab_dir, NULL, &oracle_release_fops);
	pr_info("loaded: /sys/kernel/debug/%s\n", KBUILD_MODNAME);
	return 0;

#ifdef HAVE_RCU_PENDING
err_rcu:
	rcu_pending_exit(&flavors[LAB_RCU].pending);
err_srcu:
	cleanup_srcu_struct(&lab_srcu);
	return ret;
#endif
}

/* The oracle's caches can only go once every object queued to kvfree_rcu() is freed:
 * kmem_cache_destroy() waits for that itself from 6.12 on. */
static void orc_destroy_caches(void)
{
	bool any = false;
	int i;

	for (i = 0; i < ORC_MAX_CACHES; i++)
		any |= orc_caches[i].cache != NULL;
	if (!any)
		return;
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 12, 0)
	/* krc's monitor runs every 5 s (KFREE_DRAIN_JIFFIES), then a grace period */
	for (i = 0; i < 3; i++) {
		msleep(6000);
		rcu_barrier();
	}
#endif
	for (i = 0; i < ORC_MAX_CACHES; i++)
		kmem_cache_destroy(orc_caches[i].cache);
}

static void __exit rcupending_lab_exit(void)
{
	debugfs_remove_recursive(lab_dir);
#ifdef HAVE_RCU_PENDING
	/* processes (frees) everything still pending, through rcupending_lab_process */
	rcu_pending_exit(&flavors[LAB_RCU].pending);
	rcu_pending_exit(&flavors[LAB_SRCU].pending);
#endif
	cleanup_srcu_struct(&lab_srcu);
	orc_destroy_caches();
	pr_info("unloaded: rcu processed %ld, srcu processed %ld, oracle enqueued %ld\n",
		atomic_long_read(&flavors[LAB_RCU].processed),
		atomic_long_read(&flavors[LAB_SRCU].processed),
		atomic_long_read(&orc_enqueued_total));
}

module_init(rcupending_lab_init);
module_exit(rcupending_lab_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("rcupending-tools lab: drive rcu_pending and kvfree_rcu from debugfs");
