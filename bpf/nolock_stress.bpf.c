/* The nolock stress driver's BPF programs (libbpf object, built with clang -target bpf by
 * rcupending_tools/stress/nolock.py; loaded by stress/native/nolock_driver.c). Socket-filter
 * programs, run from userspace by BPF_PROG_TEST_RUN with `repeat` (bh disabled, so
 * preempt_count() != 0: the kernel takes its nolock paths).
 *
 * -DSTREAM_KFUNC=bpf_stream_vprintk (6.17) or bpf_stream_vprintk_impl (6.18), or
 * -DSTREAM_IMPLICIT (7.x: bpf_stream_vprintk without the aux argument): each message
 *   goes to the program's stderr stream; 6.17/6.18 carve messages out of a per-CPU page got
 *   from alloc_pages_nolock() when the current one is full, 7.x kmalloc_nolock()s each one
 *   (whose slab refills call alloc_frozen_pages_nolock()).
 * -DARENA: a non-sleepable program calling bpf_arena_alloc_pages() (7.x): one page per call,
 *   each a memcg-charged alloc_pages_nolock(__GFP_ACCOUNT) in this (bh-disabled) context. */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

#define HOLD 512 /* arena pages held until arena_release runs */

/* What the programs did, read back by the loader: the one variable of .bss (offset 0). */
struct nolock_stress_state {
	__u64 calls;    /* program runs */
	__u64 ok;       /* printk returned >= 0 / arena page obtained */
	__u64 failed;   /* printk returned < 0 / arena returned NULL */
	__u64 freed;    /* arena pages given back */
	__s64 last_err; /* printk's last negative return */
	__u64 irq_calls; /* runs of stream_printk_irq (perf cpu-clock: hard IRQ context) */
	__u64 nheld;
	void *held[HOLD];
} state;

#if defined(STREAM_IMPLICIT) /* 7.x: the aux argument is implicit (KF_IMPLICIT_ARGS) */
extern int bpf_stream_vprintk(int stream_id, const char *fmt__str, const void *args,
			      __u32 len__sz) __ksym;
#define STREAM_PRINTK(id, fmt, args, len) bpf_stream_vprintk(id, fmt, args, len)
#elif defined(STREAM_KFUNC)
extern int STREAM_KFUNC(int stream_id, const char *fmt__str, const void *args, __u32 len__sz,
			void *aux__prog) __ksym;
#define STREAM_PRINTK(id, fmt, args, len) STREAM_KFUNC(id, fmt, args, len, 0)
#endif

#ifdef STREAM_PRINTK

static __always_inline int stream_message(void)
{
	/* ~240 bytes per message: one 4 KiB stream page holds ~16 */
	static const char fmt[] = "rcupending nolock stress %llu ........................................"
				  "................................................................"
				  "................................................................"
				  "...................................................\n";
	__u64 args[1];
	int ret;

	args[0] = __sync_fetch_and_add(&state.calls, 1);
	ret = STREAM_PRINTK(2 /* BPF_STDERR */, fmt, args, sizeof(args));
	if (ret < 0) {
		__sync_fetch_and_add(&state.failed, 1);
		state.last_err = ret;
	} else {
		__sync_fetch_and_add(&state.ok, 1);
	}
	return 0;
}

SEC("socket")
int stream_printk(void *ctx)
{
	return stream_message();
}

/* The same from a perf cpu-clock event (hrtimer: hard IRQ context), --irq-seconds. */
SEC("perf_event")
int stream_printk_irq(void *ctx)
{
	__sync_fetch_and_add(&state.irq_calls, 1);
	return stream_message();
}
#endif

#ifdef ARENA
#ifndef ARENA_PAGES
#define ARENA_PAGES 65536 /* 256 MiB of address range; pages are given back in batches */
#endif
#define BPF_MAP_TYPE_ARENA_ 33
#define BPF_F_MMAPABLE_ (1U << 10)

struct {
	__uint(type, BPF_MAP_TYPE_ARENA_);
	__uint(map_flags, BPF_F_MMAPABLE_);
	__uint(max_entries, ARENA_PAGES);
	__uint(map_extra, 0x10000000); /* user address of the range (never mmapped here) */
} arena SEC(".maps");

extern void *bpf_arena_alloc_pages(void *map, void *addr__ign, __u32 page_cnt, int node_id,
				   __u64 flags) __ksym;
extern void bpf_arena_free_pages(void *map, void *ptr__ign, __u32 page_cnt) __ksym;

SEC("socket")
int arena_alloc(void *ctx)
{
	void *p;
	__u64 i;

	__sync_fetch_and_add(&state.calls, 1);
	p = bpf_arena_alloc_pages(&arena, 0, 1, -1 /* NUMA_NO_NODE */, 0);
	if (!p) {
		__sync_fetch_and_add(&state.failed, 1);
		return 0;
	}
	__sync_fetch_and_add(&state.ok, 1);
	i = state.nheld;
	if (i < HOLD) { /* held, so a tight memory.max fills up */
		state.held[i] = p;
		state.nheld = i + 1;
	} else {
		bpf_arena_free_pages(&arena, p, 1);
		__sync_fetch_and_add(&state.freed, 1);
	}
	return 0;
}

/* Give every held page back (the loader runs it after each batch). */
SEC("socket")
int arena_release(void *ctx)
{
	for (__u32 i = 0; i < HOLD; i++) {
		void *p = state.held[i];

		if (p) {
			bpf_arena_free_pages(&arena, p, 1);
			state.held[i] = 0;
			__sync_fetch_and_add(&state.freed, 1);
		}
	}
	state.nheld = 0;
	return 0;
}
#endif
