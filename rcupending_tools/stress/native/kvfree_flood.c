/* kvfree_flood: fast kvfree_rcu() load with its own ground truth (see stress/kvfree.py).
 *
 * Threads, pinned one per allowed CPU, call setsockopt(IP_OPTIONS) round-robin on their own
 * UDP sockets. Each successful set frees the socket's previous option block with kfree_rcu(),
 * so per socket: expected enqueues = successful sets - 1 (when at least one succeeded).
 *
 * Usage: kvfree_flood (--count N | --duration S) [--optlen L] [--threads T] [--sockets S]
 *                     [--hold] [--go]
 * Prints one JSON line. --hold keeps the sockets open until stdin closes (closing a socket frees
 * its last block, through kfree_rcu on some kernels), so a measurement can be taken first.
 * --go prints "ready" once its sockets and threads exist and floods only after a line on stdin
 * (a recording can then see the start without the process start's own kernel work). */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 256
#define MAX_ERRNO 256

struct worker {
	pthread_t tid;
	int cpu;            /* pinned CPU, -1 if pinning failed */
	int nsock;
	int *fds;
	long *succeeded;    /* per socket */
	long enqueues;      /* target (count mode) */
	long calls, ok;
	long errors[MAX_ERRNO];
};

static unsigned char opts[64];
static int optlen = 4;
static double duration = -1;
static pthread_barrier_t barrier;
static struct timespec t_start;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void set_once(struct worker *w, int i)
{
	w->calls++;
	if (setsockopt(w->fds[i], IPPROTO_IP, IP_OPTIONS, opts, optlen) == 0) {
		w->succeeded[i]++;
		w->ok++;
	} else {
		w->errors[errno < MAX_ERRNO ? errno : 0]++;
	}
}

static void *run(void *arg)
{
	struct worker *w = arg;

	if (w->cpu >= 0) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(w->cpu, &set);
		if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set))
			w->cpu = -1;
	}
	pthread_barrier_wait(&barrier);
	if (duration < 0) {
		for (int i = 0; i < w->nsock; i++) {
			long n = w->enqueues / w->nsock + (i < w->enqueues % w->nsock) + 1;
			for (long k = 0; k < n; k++)  /* + 1: a socket's first set frees nothing */
				set_once(w, i);
		}
	} else {
		double deadline = t_start.tv_sec + t_start.tv_nsec / 1e9 + duration;
		int i = 0;
		while (now() < deadline) {
			for (int k = 0; k < 256; k++) {
				set_once(w, i);
				i = (i + 1) % w->nsock;
			}
		}
	}
	return NULL;
}

static void usage(void)
{
	fprintf(stderr, "usage: kvfree_flood (--count N | --duration S) [--optlen L] "
		"[--threads T] [--sockets S] [--hold] [--go]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	long count = -1;
	int threads = 0, sockets = 8, hold = 0, go = 0;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--hold")) {
			hold = 1;
			continue;
		}
		if (!strcmp(a, "--go")) {
			go = 1;
			continue;
		}
		if (!v)
			usage();
		i++;
		if (!strcmp(a, "--count"))
			count = atol(v);
		else if (!strcmp(a, "--duration"))
			duration = atof(v);
		else if (!strcmp(a, "--optlen"))
			optlen = atoi(v);
		else if (!strcmp(a, "--threads"))
			threads = atoi(v);
		else if (!strcmp(a, "--sockets"))
			sockets = atoi(v);
		else
			usage();
	}
	if (hold) {  /* run by the tool: do not outlive it (kill -9 of a measuring run) */
		pid_t parent = getppid();
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			return 1;
	}
	cpu_set_t allowed;
	int cpus[MAX_THREADS], ncpu = 0;
	sched_getaffinity(0, sizeof(allowed), &allowed);
	for (int c = 0; c < CPU_SETSIZE && ncpu < MAX_THREADS; c++)
		if (CPU_ISSET(c, &allowed))
			cpus[ncpu++] = c;
	if (threads <= 0)
		threads = ncpu;
	if ((count < 0) == (duration < 0) || optlen < 1 || optlen > (int)sizeof(opts) ||
	    threads > MAX_THREADS || sockets < threads)
		usage();
	memset(opts, 1, optlen - 1);  /* NOPs, then END: valid options, no privilege needed */
	opts[optlen - 1] = 0;

	struct worker *ws = calloc(threads, sizeof(*ws));
	for (int t = 0; t < threads; t++) {
		struct worker *w = &ws[t];
		w->cpu = cpus[t % ncpu];
		w->nsock = sockets / threads + (t < sockets % threads);
		w->enqueues = count < 0 ? 0 : count / threads + (t < count % threads);
		w->fds = calloc(w->nsock, sizeof(int));
		w->succeeded = calloc(w->nsock, sizeof(long));
		for (int i = 0; i < w->nsock; i++) {
			w->fds[i] = socket(AF_INET, SOCK_DGRAM, 0);
			if (w->fds[i] < 0) {
				perror("socket");
				return 1;
			}
		}
	}
	pthread_barrier_init(&barrier, NULL, threads + 1);
	for (int t = 0; t < threads; t++)
		pthread_create(&ws[t].tid, NULL, run, &ws[t]);
	if (go) {  /* wait for the word */
		char c;
		printf("ready\n");
		fflush(stdout);
		while (read(0, &c, 1) == 1 && c != '\n')
			;
	}
	clock_gettime(CLOCK_MONOTONIC, &t_start);
	pthread_barrier_wait(&barrier);
	for (int t = 0; t < threads; t++)
		pthread_join(ws[t].tid, NULL);
	double elapsed = now() - (t_start.tv_sec + t_start.tv_nsec / 1e9);

	long calls = 0, ok = 0, expected = 0, with_options = 0, errors[MAX_ERRNO] = {0};
	for (int t = 0; t < threads; t++) {
		calls += ws[t].calls;
		ok += ws[t].ok;
		for (int e = 0; e < MAX_ERRNO; e++)
			errors[e] += ws[t].errors[e];
		for (int i = 0; i < ws[t].nsock; i++) {
			expected += ws[t].succeeded[i] > 0 ? ws[t].succeeded[i] - 1 : 0;
			with_options += ws[t].succeeded[i] > 0;
		}
	}
	printf("{\"driver\": \"native\", \"pid\": %d, \"threads\": %d, \"sockets\": %d, "
	       "\"calls\": %ld, \"ok\": %ld, \"failed\": %ld, \"expected_enqueued\": %ld, "
	       "\"sockets_with_options\": %ld, \"elapsed_s\": %.6f, \"calls_per_s\": %.1f, "
	       "\"errors\": {", getpid(), threads, sockets, calls, ok, calls - ok, expected,
	       with_options, elapsed, elapsed > 0 ? calls / elapsed : 0.0);
	const char *sep = "";
	for (int e = 0; e < MAX_ERRNO; e++) {
		if (errors[e]) {
			const char *name = strerrorname_np(e);
			printf("%s\"%s\": %ld", sep, name ? name : "?", errors[e]);
			sep = ", ";
		}
	}
	printf("}, \"cpus\": [");
	for (int t = 0; t < threads; t++)
		printf("%s%d", t ? ", " : "", ws[t].cpu);
	printf("]}\n");
	fflush(stdout);
	if (hold) {  /* keep the sockets (and their last option blocks) until stdin closes */
		char buf[64];
		while (read(0, buf, sizeof(buf)) > 0)
			;
	}
	return 0;
}
