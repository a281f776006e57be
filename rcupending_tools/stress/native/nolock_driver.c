/* The nolock stress driver's loader: loads bpf/nolock_stress.bpf.c's object with libbpf and
 * runs one of its socket-filter programs by BPF_PROG_TEST_RUN, in batches of `repeat` runs.
 *
 *   nolock_driver OBJ stream|arena --batches B --repeat R [--duration S] [--wait 1]
 *
 * --wait 1: after loading, print {"ready": true} and wait for a line on stdin.
 * --irq-seconds S [--irq-freq F] (stream): then run the same printing from a perf cpu-clock
 *   event on every CPU at F Hz for S seconds (hard IRQ context).
 *
 * stream: each run prints one message to the program's BPF stderr stream; after each batch
 *         the stream is read empty (BPF_PROG_STREAM_READ_BY_FD), so its capacity never stops
 *         the printing (and the pages holding read messages are given back).
 * arena:  each run allocates one arena page (held, up to 512); arena_release gives them back
 *         after each batch.
 * Prints one JSON line: the programs' own counts (calls, ok, failed, freed) and what was read.
 * Built with gcc against Debian's libbpf (libbpf-dev) by rcupending_tools/stress/nolock.py. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <linux/perf_event.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#define CMD_PROG_STREAM_READ_BY_FD 37 /* enum bpf_cmd, 6.17+ */
#define STREAM_STDERR 2

struct state {
	uint64_t calls, ok, failed, freed;
	int64_t last_err;
	uint64_t irq_calls;
	uint64_t nheld;
	uint64_t held[512];
};

struct stream_read_attr {
	uint64_t stream_buf;
	uint32_t stream_buf_len;
	uint32_t stream_id;
	uint32_t prog_fd;
	uint32_t pad;
};

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int quiet(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	return level == LIBBPF_WARN ? vfprintf(stderr, fmt, ap) : 0;
}

static long drain(int prog_fd, long *reads)
{
	static char buf[65536];
	long total = 0;
	for (;;) {
		struct stream_read_attr a = {0};
		a.stream_buf = (uint64_t)(uintptr_t)buf;
		a.stream_buf_len = sizeof(buf);
		a.stream_id = STREAM_STDERR;
		a.prog_fd = prog_fd;
		long n = syscall(__NR_bpf, CMD_PROG_STREAM_READ_BY_FD, &a, sizeof(a));
		if (n < 0) {
			fprintf(stderr, "nolock_driver: stream read: %s\n", strerror(errno));
			return -1;
		}
		(*reads)++;
		if (n == 0)
			return total;
		total += n;
	}
}

/* stream_printk_irq on a cpu-clock perf event per CPU (hrtimer: hard IRQ context) for
 * `seconds`, then the stream read empty; returns the perf events attached, or -1. */
static int irq_phase(struct bpf_object *obj, double seconds, int freq,
		     long *drained, long *reads)
{
	struct bpf_program *irq = bpf_object__find_program_by_name(obj, "stream_printk_irq");
	int ncpu = sysconf(_SC_NPROCESSORS_ONLN), made = 0;
	struct bpf_link *links[256] = {0};
	if (!irq) {
		fprintf(stderr, "nolock_driver: no stream_printk_irq program\n");
		return -1;
	}
	for (int cpu = 0; cpu < ncpu && cpu < 256; cpu++) {
		struct perf_event_attr attr = {0};
		attr.size = sizeof(attr);
		attr.type = PERF_TYPE_SOFTWARE;
		attr.config = PERF_COUNT_SW_CPU_CLOCK;
		attr.freq = 1;
		attr.sample_freq = freq;
		int pfd = syscall(__NR_perf_event_open, &attr, -1, cpu, -1, PERF_FLAG_FD_CLOEXEC);
		if (pfd < 0) {
			fprintf(stderr, "nolock_driver: perf_event_open cpu %d: %s\n", cpu,
				strerror(errno));
			return -1;
		}
		links[cpu] = bpf_program__attach_perf_event(irq, pfd);
		if (libbpf_get_error(links[cpu])) {
			fprintf(stderr, "nolock_driver: attach perf event cpu %d failed\n", cpu);
			links[cpu] = NULL;
			close(pfd);
			return -1;
		}
		made++;
	}
	/* Not drained meanwhile: the stream fills up to its capacity (~100 KB, -ENOSPC beyond),
	 * so message memory is allocated in IRQ context (7.x: slab refills there too). */
	int irq_fd = bpf_program__fd(irq); /* streams are per program: drain the IRQ one's */
	usleep((useconds_t)(seconds * 1e6));
	for (int cpu = 0; cpu < 256; cpu++)
		if (links[cpu])
			bpf_link__destroy(links[cpu]); /* closes the perf event too */
	long n = drain(irq_fd, reads);
	if (n < 0)
		return -1;
	*drained += n;
	return made;
}

static int run(int fd, unsigned repeat)
{
	char pkt[64] = {0};
	LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = pkt, .data_size_in = sizeof(pkt),
		    .repeat = repeat);
	if (bpf_prog_test_run_opts(fd, &opts)) {
		fprintf(stderr, "nolock_driver: test run: %s\n", strerror(errno));
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	long batches = 10, repeat = 200, reads = 0, drained = 0, done = 0;
	double duration = 0, irq_seconds = 0;
	int wait = 0, irq_freq = 1000, irq_cpus = 0;
	if (argc < 3) {
		fprintf(stderr, "usage: nolock_driver OBJ stream|arena [--batches B] [--repeat R] "
				"[--duration S]\n");
		return 2;
	}
	const char *path = argv[1], *mode = argv[2];
	for (int i = 3; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--batches"))
			batches = atol(argv[i + 1]);
		else if (!strcmp(argv[i], "--repeat"))
			repeat = atol(argv[i + 1]);
		else if (!strcmp(argv[i], "--duration"))
			duration = atof(argv[i + 1]);
		else if (!strcmp(argv[i], "--wait"))
			wait = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--irq-seconds"))
			irq_seconds = atof(argv[i + 1]);
		else if (!strcmp(argv[i], "--irq-freq"))
			irq_freq = atoi(argv[i + 1]);
	}
	int stream = !strcmp(mode, "stream");
	if (!stream && strcmp(mode, "arena")) {
		fprintf(stderr, "nolock_driver: mode %s: give stream or arena\n", mode);
		return 2;
	}
	libbpf_set_print(quiet);
	struct bpf_object *obj = bpf_object__open_file(path, NULL);
	if (!obj || libbpf_get_error(obj)) {
		fprintf(stderr, "nolock_driver: open %s failed\n", path);
		return 1;
	}
	if (bpf_object__load(obj)) {
		fprintf(stderr, "nolock_driver: loading %s failed: %s\n", path, strerror(errno));
		return 1;
	}
	struct bpf_program *prog =
		bpf_object__find_program_by_name(obj, stream ? "stream_printk" : "arena_alloc");
	struct bpf_program *rel = stream ? NULL : bpf_object__find_program_by_name(obj, "arena_release");
	struct bpf_map *bss = NULL, *m;
	bpf_object__for_each_map(m, obj) {
		const char *name = bpf_map__name(m);
		size_t len = strlen(name);
		if (len >= 4 && !strcmp(name + len - 4, ".bss"))
			bss = m;
	}
	if (!prog || (!stream && !rel) || !bss) {
		fprintf(stderr, "nolock_driver: %s lacks its programs or .bss\n", path);
		return 1;
	}
	int fd = bpf_program__fd(prog);
	printf("{\"ready\": true}\n");
	fflush(stdout);
	if (wait) { /* until the caller has attached and set limits: one line on stdin */
		char line[16];
		if (!fgets(line, sizeof(line), stdin))
			return 1;
	}
	double start = now();
	while (duration > 0 ? now() - start < duration : done < batches) {
		if (run(fd, repeat))
			return 1;
		if (stream) {
			long n = drain(fd, &reads);
			if (n < 0)
				return 1;
			drained += n;
		} else if (run(bpf_program__fd(rel), 1)) {
			return 1;
		}
		done++;
	}
	if (stream && irq_seconds > 0) {
		irq_cpus = irq_phase(obj, irq_seconds, irq_freq, &drained, &reads);
		if (irq_cpus < 0)
			return 1;
	}
	double secs = now() - start;
	struct state st;
	int zero = 0;
	if (bpf_map_lookup_elem(bpf_map__fd(bss), &zero, &st)) {
		fprintf(stderr, "nolock_driver: reading .bss: %s\n", strerror(errno));
		return 1;
	}
	printf("{\"mode\": \"%s\", \"batches\": %ld, \"repeat\": %ld, \"calls\": %llu, "
	       "\"ok\": %llu, \"failed\": %llu, \"freed\": %llu, \"last_err\": %lld, "
	       "\"drained_bytes\": %ld, \"stream_reads\": %ld, \"irq_calls\": %llu, "
	       "\"irq_cpus\": %d, \"seconds\": %.3f}\n",
	       mode, done, repeat, (unsigned long long)st.calls, (unsigned long long)st.ok,
	       (unsigned long long)st.failed, (unsigned long long)st.freed,
	       (long long)st.last_err, drained, reads, (unsigned long long)st.irq_calls, irq_cpus,
	       secs);
	bpf_object__close(obj);
	return 0;
}
