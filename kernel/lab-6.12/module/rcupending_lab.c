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
 * The module counts for itself: objects it enqueued, dequeued, and that its
 * rcu_pending process callback freed; outstanding = enqueued - dequeued -
 * processed, per flavor. Objects given to kvfree_rcu are only counted when
 * queued (the kernel frees them).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/atomic.h>
#include <linux/debugfs.h>
#include <linux/delay.h>
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/rcu_pending.h>
#include <linux/rcupdate.h>
#include <linux/sched.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/srcu.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>

struct lab_obj {
	struct rcu_head rcu;
	u64 payload[];
};

enum { LAB_RCU, LAB_SRCU, LAB_NR_FLAVORS };
static const char *const flavor_names[LAB_NR_FLAVORS] = { "rcu", "srcu" };

struct lab_flavor {
	struct rcu_pending pending;
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

/* The process callback: a global name observers can hook (rcupending's layout.PROCESS_CALLBACKS). */
void rcupending_lab_process(struct rcu_pending *pending, struct rcu_head *rcu);
noinline void rcupending_lab_process(struct rcu_pending *pending, struct rcu_head *rcu)
{
	struct lab_flavor *f = container_of(pending, struct lab_flavor, pending);

	kvfree(container_of(rcu, struct lab_obj, rcu));
	atomic_long_inc(&f->processed);
}

static int parse_count(const char __user *ubuf, size_t len, unsigned long *n)
{
	int ret = kstrtoul_from_user(ubuf, len, 0, n);

	if (ret)
		return ret;
	return *n > 100000000UL ? -ERANGE : 0;
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
		kvfree_rcu_barrier();
		atomic_long_inc(&barriers);
		break;
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
	ret = rcu_pending_init(&flavors[LAB_RCU].pending, NULL, rcupending_lab_process);
	if (ret)
		goto err_srcu;
	ret = rcu_pending_init(&flavors[LAB_SRCU].pending, &lab_srcu, rcupending_lab_process);
	if (ret)
		goto err_rcu;

	lab_dir = debugfs_create_dir(KBUILD_MODNAME, NULL);
	debugfs_create_u64("size", 0644, lab_dir, &obj_size);
	debugfs_create_bool("vmalloc", 0644, lab_dir, &use_vmalloc);
	for (int i = 0; i < ARRAY_SIZE(knobs); i++)
		debugfs_create_file(knobs[i].name, 0200, lab_dir,
				    (void *)(unsigned long)knobs[i].op, &lab_op_fops);
	debugfs_create_file("counters", 0444, lab_dir, NULL, &counters_fops);
	pr_info("loaded: /sys/kernel/debug/%s\n", KBUILD_MODNAME);
	return 0;

err_rcu:
	rcu_pending_exit(&flavors[LAB_RCU].pending);
err_srcu:
	cleanup_srcu_struct(&lab_srcu);
	return ret;
}

static void __exit rcupending_lab_exit(void)
{
	debugfs_remove_recursive(lab_dir);
	/* processes (frees) everything still pending, through rcupending_lab_process */
	rcu_pending_exit(&flavors[LAB_RCU].pending);
	rcu_pending_exit(&flavors[LAB_SRCU].pending);
	cleanup_srcu_struct(&lab_srcu);
	pr_info("unloaded: rcu processed %ld, srcu processed %ld\n",
		atomic_long_read(&flavors[LAB_RCU].processed),
		atomic_long_read(&flavors[LAB_SRCU].processed));
}

module_init(rcupending_lab_init);
module_exit(rcupending_lab_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("rcupending-tools lab: drive rcu_pending and kvfree_rcu from debugfs");
