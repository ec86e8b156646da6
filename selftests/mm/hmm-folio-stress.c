// SPDX-License-Identifier: GPL-2.0
/*
 * Seeded, bounded stress of the device-private folio lifecycle: processes
 * of threads migrate PMD-sized ranges (THPs or small pages) to the device
 * and back, whole or in parts, fault them back by CPU and device reads and
 * writes, munmap/mremap/madvise/fork them, read pagemap, SNAPSHOT and
 * DEVPFN, and allocate and free device folios of random orders directly,
 * all on ranges the threads of a process share. An op that changes a
 * range's data takes the range exclusively; ops that only move it (migrate,
 * reads, madvise COLD/PAGEOUT) share it, so they race with each other and
 * with the device allocator while the tags stay checkable. Every op ends
 * with a tag check of its range; every round (ROUND_OPS ops of a thread),
 * the folio invariants of every range, held alone for it, and of the held
 * folios; at the end, that device memory was reused at another order
 * (ALLOC_STATS cross_order_pages) and the kernel log.
 *
 *   hmm-folio-stress [--seed N] [--duration SEC] [--iterations N]
 *                    [--procs N] [--threads N]
 *
 * Defaults from HMM_FOLIO_SEED / HMM_FOLIO_DURATION, else a time-based seed
 * and 60 s. The seed fixes every thread's sequence of ops, not how the
 * threads interleave. A failure prints the seed and the tail of the op log.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "kselftest.h"
#include "vm_util.h"
#include "hmm_folio_util.h"

#define SLOTS		4
#define HELD_MAX	4
#define LOG_LEN		24
#define ROUND_OPS	8
#define MAX_THREADS	8
#define MAX_PROCS	8

struct slot {
	pthread_rwlock_t lock;
	char *addr;
	uintptr_t tagaddr;	/* the address its tags were made for */
	unsigned int gen;
	/*
	 * Small pages only (MADV_NOHUGEPAGE): device reads and writes go to
	 * these alone. On a THP range, a device PMD the mirror does not map
	 * (after mremap, fork, a split, racing migrations) meets the
	 * hmm_vma_handle_absent_pmd() offset bug (hmm-folio-reuse:
	 * known_bugs): page 0's data from page 32 on.
	 */
	bool small;
};

struct oplog {
	unsigned long seq;
	unsigned int ms;
	const char *op;
	int slot;
	long off, len;
	int ret;
};

struct worker {
	int proc, id;
	uint64_t rng;
	struct oplog log[LOG_LEN];
	unsigned long nlog;
	__u64 held[HELD_MAX];
	unsigned int held_seed[HELD_MAX];
	int nheld;
	void *mirror;
	unsigned long ops;
};

static unsigned int seed;
static unsigned int duration = 60;
static unsigned long iterations;
static int nprocs = 2, nthreads = 2;
static size_t size;
static unsigned long npages;
static int fd;
static struct slot slots[SLOTS];
static struct worker workers[MAX_THREADS];
static atomic_ulong seq;
static atomic_uint gens;
static atomic_bool failed;
static struct timespec t0;
/*
 * Shared by the processes: closing a mirror evicts every page of the
 * device, the other processes' too, so none closes its own before all are
 * done (or one failed).
 */
static struct {
	atomic_int done;
	atomic_int failed;
} *procs_state;
static pthread_mutex_t print_lock = PTHREAD_MUTEX_INITIALIZER;
/* Folio ops of one fd: CHECK_HELD must not see a folio mid-fill or free. */
static pthread_mutex_t held_lock = PTHREAD_MUTEX_INITIALIZER;

static unsigned int ms_now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
}

static uint64_t rnd(struct worker *w)
{
	w->rng ^= w->rng >> 12;
	w->rng ^= w->rng << 25;
	w->rng ^= w->rng >> 27;
	return w->rng * 0x2545f4914f6cdd1dULL;
}

static unsigned long rnd_below(struct worker *w, unsigned long n)
{
	return n ? rnd(w) % n : 0;
}

static void log_op(struct worker *w, const char *op, int s, long off,
		   long len, int ret)
{
	struct oplog *l = &w->log[w->nlog++ % LOG_LEN];

	l->seq = atomic_fetch_add(&seq, 1);
	l->ms = ms_now();
	l->op = op;
	l->slot = s;
	l->off = off;
	l->len = len;
	l->ret = ret;
}

/* Print the op logs of this process's threads, oldest first, and exit. */
static void __noreturn __printf(2, 3)
fail(struct worker *w, const char *fmt, ...)
{
	unsigned long printed = 0, min;
	va_list ap;
	int i, t;

	atomic_store(&failed, true);
	if (procs_state)
		atomic_store(&procs_state->failed, 1);
	pthread_mutex_lock(&print_lock);
	printf("# stress FAIL (seed %u, process %d, thread %d, after %u ms): ",
	       seed, w->proc, w->id, ms_now());
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n# op log tail (seq ms thread op slot page+pages ret), seed %u:\n",
	       seed);
	for (;;) {
		struct oplog *next = NULL;
		int who = 0;

		min = ~0UL;
		for (t = 0; t < nthreads; t++)
			for (i = 0; i < LOG_LEN && i < (int)workers[t].nlog; i++) {
				struct oplog *l = &workers[t].log[i];

				if (l->op && l->seq >= printed && l->seq < min) {
					min = l->seq;
					next = l;
					who = t;
				}
			}
		if (!next)
			break;
		printf("#   %6lu %7u t%d %-12s %d %ld+%ld %d\n", next->seq,
		       next->ms, who, next->op, next->slot, next->off,
		       next->len, next->ret);
		printed = min + 1;
	}
	fflush(stdout);
	pthread_mutex_unlock(&print_lock);
	_exit(KSFT_FAIL);
}

static void check_slot(struct worker *w, int s, const char *after)
{
	struct slot *sl = &slots[s];
	unsigned long bad = hmm_folio_check_tags(sl->addr, size, sl->tagaddr,
						 sl->gen, after);

	if (bad)
		fail(w, "slot %d: %lu bad page(s) after %s", s, bad, after);
}

/* A fresh PMD-aligned range for slot @s: a THP or small pages. */
static void slot_new(struct worker *w, int s)
{
	struct slot *sl = &slots[s];

	sl->addr = hmm_folio_map_aligned(size);
	if (!sl->addr)
		fail(w, "slot %d: cannot map %zu bytes", s, size);
	sl->small = rnd_below(w, 3) == 0;
	if (sl->small && madvise(sl->addr, size, MADV_NOHUGEPAGE))
		fail(w, "madvise(NOHUGEPAGE): %s", strerror(errno));
	sl->tagaddr = (uintptr_t)sl->addr;
	sl->gen = atomic_fetch_add(&gens, 1);
	hmm_folio_fill(sl->addr, size, sl->tagaddr, sl->gen);
}

/*
 * The device writes the slot (a new generation @g) or reads it. Alone on
 * the range: test_hmm's read of its mirror does not exclude a migration of
 * the same range to system memory (dmirror_do_read() copies from the page
 * its page table names, unreferenced; the migration erases the entry and
 * frees the page without dmirror->mutex), so a racing MIGRATE_TO_SYS lets it
 * read a page already reused.
 */
static int op_device(struct worker *w, int s, unsigned int g, bool write)
{
	struct slot *sl = &slots[s];
	int ret;

	if (write)
		hmm_folio_fill(w->mirror, size, (uintptr_t)sl->addr, g);
	ret = hmm_folio_cmd(fd, write ? HMM_DMIRROR_WRITE : HMM_DMIRROR_READ,
			    sl->addr, w->mirror, npages, NULL);
	if (ret)
		fail(w, "slot %d: device %s: %s", s, write ? "write" : "read",
		     strerror(-ret));
	if (write) {
		sl->gen = g;
		sl->tagaddr = (uintptr_t)sl->addr;
	} else if (hmm_folio_check_tags(w->mirror, size, sl->tagaddr, sl->gen,
					"device read")) {
		fail(w, "slot %d: bad device read", s);
	}
	return ret;
}

/* The slot from page @off on to the device, its copy checked. */
static int op_to_dev_alone(struct worker *w, int s, unsigned long off)
{
	struct slot *sl = &slots[s];
	int ret;

	ret = hmm_folio_cmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV,
			    sl->addr + off * psize(), w->mirror, npages - off,
			    NULL);
	if (ret && ret != -ENOENT)
		fail(w, "slot %d: MIGRATE_TO_DEV: %s", s, strerror(-ret));
	/* Pages already there are not in the mirror's copy: ENOENT. */
	if (!ret && hmm_folio_check_tags(w->mirror, (npages - off) * psize(),
					 sl->tagaddr + off * psize(), sl->gen,
					 "device copy"))
		fail(w, "slot %d: bad device copy", s);
	return ret;
}

/* Ops that change the data, or read it through the device: held alone. */
static void op_exclusive(struct worker *w, int s)
{
	struct slot *sl = &slots[s];
	unsigned int g = atomic_fetch_add(&gens, 1);
	unsigned long off = 0;
	const char *op;
	int ret = 0;
	char *q;
	long n;

	switch (rnd_below(w, 7)) {
	case 0:
		op = "cpu_write";
		sl->gen = g;
		sl->tagaddr = (uintptr_t)sl->addr;
		hmm_folio_fill(sl->addr, size, sl->tagaddr, sl->gen);
		break;
	case 1:
		op = "device_write";
		if (!sl->small)
			return;
		ret = op_device(w, s, g, true);
		break;
	case 2:
		op = "munmap_new";
		ret = munmap(sl->addr, size);
		if (ret)
			fail(w, "munmap: %s", strerror(errno));
		slot_new(w, s);
		break;
	case 3:
		op = "device_read";
		if (!sl->small)
			return;
		ret = op_device(w, s, g, false);
		break;
	case 4:
		op = "to_dev_alone";
		off = rnd_below(w, 2) ? rnd_below(w, npages) : 0;
		ret = op_to_dev_alone(w, s, off);
		break;
	case 5:
		op = "mremap";
		q = hmm_folio_map_aligned(size);
		if (!q)
			fail(w, "cannot map a target for mremap");
		if (mremap(sl->addr, size, size, MREMAP_MAYMOVE | MREMAP_FIXED,
			   q) != q)
			fail(w, "mremap: %s", strerror(errno));
		sl->addr = q;
		break;
	default:
		op = "dontneed";
		if (madvise(sl->addr, size, MADV_DONTNEED))
			fail(w, "madvise(DONTNEED): %s", strerror(errno));
		if (hmm_folio_nonzero_pages(sl->addr, size))
			fail(w, "slot %d: not zero after MADV_DONTNEED", s);
		sl->gen = g;
		sl->tagaddr = (uintptr_t)sl->addr;
		hmm_folio_fill(sl->addr, size, sl->tagaddr, sl->gen);
		break;
	}
	log_op(w, op, s, off, npages - off, ret);
	check_slot(w, s, op);
	/* Nobody else moves the slot now: its folios must be at rest. */
	n = hmm_folio_check_invariants(fd, HMM_DMIRROR_CHECK_RANGE, 0, sl->addr,
				       npages);
	log_op(w, "check_range", s, 0, npages, (int)n);
	if (n)
		fail(w, "slot %d: folio check: %ld violation(s)", s, n);
}

/*
 * fork with every range held: the child writes its copy of one range and
 * exits; the parent's must not change. fork write-protects all of the
 * parent's anon memory and drops the mirror's view of it, so the parent then
 * writes every range again, as a process would: a shared, soft-dirty THP
 * migrated to the device trips a VM_BUG_ON (hmm-folio-thp:
 * crashers.remove_migration_pmd_soft_dirty) and a device read of a device
 * PMD the mirror lost meets the absent-PMD offset bug (known_bugs).
 */
static void op_fork(struct worker *w)
{
	int s, c = rnd_below(w, SLOTS), status;
	unsigned int g = atomic_fetch_add(&gens, 1);
	struct slot *sl = &slots[c];
	pid_t pid;

	for (s = 0; s < SLOTS; s++)
		pthread_rwlock_wrlock(&slots[s].lock);
	pid = fork();
	if (pid < 0)
		fail(w, "fork: %s", strerror(errno));
	if (!pid) {
		/* Only memory: other threads' locks are not ours. */
		hmm_folio_fill(sl->addr, size, (uintptr_t)sl->addr, g);
		_exit(hmm_folio_check_tags(sl->addr, size, (uintptr_t)sl->addr, g,
					   "child's copy") ? 1 : 0);
	}
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
	    WEXITSTATUS(status))
		fail(w, "slot %d: fork child failed (status %#x)", c, status);
	log_op(w, "fork_cow", c, 0, npages, 0);
	for (s = 0; s < SLOTS; s++) {
		check_slot(w, s, "fork_cow");
		sl = &slots[s];
		sl->gen = atomic_fetch_add(&gens, 1);
		sl->tagaddr = (uintptr_t)sl->addr;
		hmm_folio_fill(sl->addr, size, sl->tagaddr, sl->gen);
	}
	for (s = SLOTS - 1; s >= 0; s--)
		pthread_rwlock_unlock(&slots[s].lock);
}

/* Ops that move or read the data: the slot is shared with other readers. */
static void op_shared(struct worker *w, int s)
{
	static const int advice[] = { MADV_COLD, MADV_PAGEOUT, MADV_WILLNEED };
	struct hmm_dmirror_devpfn *pfns;
	struct slot *sl = &slots[s];
	unsigned long off = 0, len = npages, i;
	struct hmm_dmirror_cmd cmd;
	const char *op;
	int ret = 0, pm;

	/* Half the migrations take a part: device PMDs get split. */
	if (rnd_below(w, 2)) {
		off = rnd_below(w, npages);
		len = 1 + rnd_below(w, npages - off);
	}
	switch (rnd_below(w, 7)) {
	case 0:
	case 1:
		op = "to_dev";
		ret = hmm_folio_cmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV,
				    sl->addr + off * psize(), w->mirror, len,
				    &cmd);
		/*
		 * ENOENT: pages another thread had locked were not moved. The
		 * device's copy is checked only when the range is held alone
		 * (to_dev_alone): see device_read.
		 */
		if (ret && ret != -ENOENT)
			fail(w, "slot %d: MIGRATE_TO_DEV: %s", s, strerror(-ret));
		break;
	case 2:
		op = "to_sys";
		ret = hmm_folio_cmd(fd, HMM_DMIRROR_MIGRATE_TO_SYS,
				    sl->addr + off * psize(), NULL, len, &cmd);
		if (ret)
			fail(w, "slot %d: MIGRATE_TO_SYS: %s", s, strerror(-ret));
		break;
	case 3:
		op = "madvise";
		ret = madvise(sl->addr, size, advice[rnd_below(w, 3)]);
		if (ret)
			fail(w, "madvise: %s", strerror(errno));
		break;
	case 4:
		op = "pagemap";
		pm = open("/proc/self/pagemap", O_RDONLY);
		if (pm < 0)
			fail(w, "open pagemap: %s", strerror(errno));
		for (i = 0; i < npages; i += 1 + rnd_below(w, 64))
			pagemap_get_entry(pm, sl->addr + i * psize());
		close(pm);
		break;
	case 5:
		op = "snap_devpfn";
		ret = hmm_folio_cmd(fd, HMM_DMIRROR_SNAPSHOT, sl->addr,
				    w->mirror, npages, &cmd);
		if (ret)
			fail(w, "SNAPSHOT: %s", strerror(-ret));
		pfns = w->mirror;
		ret = hmm_folio_devpfn(fd, sl->addr, npages, pfns);
		if (ret)
			fail(w, "DEVPFN: %s", strerror(-ret));
		break;
	default:
		op = "cpu_read";
		break;
	}
	log_op(w, op, s, off, len, ret);
	check_slot(w, s, op);
}

/* Device folios of random orders, held by the fd, filled and verified. */
static void op_folio(struct worker *w)
{
	struct hmm_dmirror_folio_cmd c = { 0 };
	int i, ret;

	if (w->nheld && (w->nheld == HELD_MAX || rnd_below(w, 2))) {
		i = rnd_below(w, w->nheld);
		c.handle = w->held[i];
		c.seed = w->held_seed[i];
		ret = hmm_folio_direct_folio(fd, HMM_DMIRROR_FOLIO_VERIFY, &c);
		if (ret || c.bad_pages)
			fail(w, "held folio %llu: verify %d, %llu bad pages",
			     (unsigned long long)c.handle, ret,
			     (unsigned long long)c.bad_pages);
		memset(&c, 0, sizeof(c));
		c.handle = w->held[i];
		ret = hmm_folio_direct_folio(fd, HMM_DMIRROR_FOLIO_FREE, &c);
		log_op(w, "folio_free", -1, i, 0, ret);
		if (ret)
			fail(w, "folio free: %s", strerror(-ret));
		w->held[i] = w->held[--w->nheld];
		w->held_seed[i] = w->held_seed[w->nheld];
		return;
	}
	c.order = rnd_below(w, sz2ord(size, psize()) + 1);
	ret = hmm_folio_direct_folio(fd, HMM_DMIRROR_FOLIO_ALLOC, &c);
	log_op(w, "folio_alloc", -1, c.order, 1L << c.order, ret);
	if (ret == -ENOMEM || ret == -ENOSPC)
		return;		/* device memory full or fragmented */
	if (ret)
		fail(w, "folio alloc order %u: %s", c.order, strerror(-ret));
	w->held[w->nheld] = c.handle;
	w->held_seed[w->nheld] = 1 + rnd_below(w, 1000);
	memset(&c, 0, sizeof(c));
	c.handle = w->held[w->nheld];
	c.seed = w->held_seed[w->nheld++];
	ret = hmm_folio_direct_folio(fd, HMM_DMIRROR_FOLIO_FILL, &c);
	if (ret)
		fail(w, "folio fill: %s", strerror(-ret));
}

/*
 * Every round (ROUND_OPS ops of a thread): the folio invariants of every
 * range, each held alone for it (shared ops may be moving it otherwise),
 * and of the held folios.
 */
static void round_check(struct worker *w)
{
	long n;
	int s;

	for (s = 0; s < SLOTS; s++) {
		pthread_rwlock_wrlock(&slots[s].lock);
		n = hmm_folio_check_invariants(fd, HMM_DMIRROR_CHECK_RANGE, 0,
					       slots[s].addr, npages);
		pthread_rwlock_unlock(&slots[s].lock);
		log_op(w, "check_range", s, 0, npages, (int)n);
		if (n)
			fail(w, "slot %d: folio check: %ld violation(s)", s, n);
	}
	pthread_mutex_lock(&held_lock);
	n = hmm_folio_check_invariants(fd, HMM_DMIRROR_CHECK_HELD, 0, NULL, 0);
	pthread_mutex_unlock(&held_lock);
	log_op(w, "check_held", -1, 0, 0, (int)n);
	if (n)
		fail(w, "held folio check: %ld", n);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	unsigned int end = duration * 1000;

	w->mirror = malloc(size);
	if (!w->mirror)
		fail(w, "no memory");
	while (!atomic_load(&failed) && ms_now() < end &&
	       (!iterations || w->ops < iterations)) {
		int s = rnd_below(w, SLOTS);
		unsigned long r = rnd_below(w, 10);

		if (++w->ops % ROUND_OPS == 0)
			round_check(w);
		if (r == 0) {
			pthread_mutex_lock(&held_lock);
			op_folio(w);
			pthread_mutex_unlock(&held_lock);
		} else if (rnd_below(w, 40) == 0) {
			op_fork(w);
		} else if (r < 3) {
			pthread_rwlock_wrlock(&slots[s].lock);
			op_exclusive(w, s);
			pthread_rwlock_unlock(&slots[s].lock);
		} else {
			pthread_rwlock_rdlock(&slots[s].lock);
			op_shared(w, s);
			pthread_rwlock_unlock(&slots[s].lock);
		}
	}
	return NULL;
}

/* One process: its own mirror and ranges, @nthreads threads on them. */
static int proc_main(int proc)
{
	pthread_t tid[MAX_THREADS];
	unsigned long ops = 0;
	const char *why;
	int s, t;

	fd = hmm_folio_open(0, &why);
	if (fd < 0) {
		printf("# process %d: %s\n", proc, why);
		return KSFT_FAIL;
	}
	for (t = 0; t < nthreads; t++) {
		workers[t].proc = proc;
		workers[t].id = t;
		workers[t].rng = ((uint64_t)seed << 32 | proc << 8 | t) *
				 0x9e3779b97f4a7c15ULL + 1;
	}
	for (s = 0; s < SLOTS; s++) {
		pthread_rwlock_init(&slots[s].lock, NULL);
		slot_new(&workers[0], s);
	}
	for (t = 0; t < nthreads; t++)
		if (pthread_create(&tid[t], NULL, worker_main, &workers[t]))
			fail(&workers[0], "pthread_create failed");
	for (t = 0; t < nthreads; t++) {
		pthread_join(tid[t], NULL);
		ops += workers[t].ops;
	}
	for (s = 0; s < SLOTS; s++)
		check_slot(&workers[0], s, "the last op");
	printf("# process %d: %lu ops\n", proc, ops);
	fflush(stdout);
	atomic_fetch_add(&procs_state->done, 1);
	for (t = 0; t < 6000 && atomic_load(&procs_state->done) < nprocs &&
	     !atomic_load(&procs_state->failed); t++)
		usleep(10000);
	close(fd);
	return KSFT_PASS;
}

static void print_usage(FILE *f)
{
	fprintf(f, "Usage: %s [--seed N] [--duration SEC] [--iterations N]\n"
		"                        [--procs 1-%d] [--threads 1-%d]\n",
		"hmm-folio-stress", MAX_PROCS, MAX_THREADS);
}

static unsigned long number(const char *opt, const char *s, unsigned long max)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 0);
	if (errno || !*s || *end || v > max) {
		fprintf(stderr, "hmm-folio-stress: bad %s '%s'\n", opt, s);
		print_usage(stderr);
		exit(KSFT_FAIL);
	}
	return v;
}

/* Options over HMM_FOLIO_SEED / _DURATION; returns -1 or an exit code. */
static int parse_args(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "seed", required_argument, NULL, 's' },
		{ "duration", required_argument, NULL, 'd' },
		{ "iterations", required_argument, NULL, 'i' },
		{ "procs", required_argument, NULL, 'p' },
		{ "threads", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *e;
	int c;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	seed = (unsigned int)(t0.tv_nsec ^ getpid());
	e = getenv("HMM_FOLIO_SEED");
	if (e && *e)
		seed = number("HMM_FOLIO_SEED", e, ~0U);
	e = getenv("HMM_FOLIO_DURATION");
	if (e && *e)
		duration = number("HMM_FOLIO_DURATION", e, 86400);
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			seed = number("--seed", optarg, ~0U);
			break;
		case 'd':
			duration = number("--duration", optarg, 86400);
			break;
		case 'i':
			iterations = number("--iterations", optarg, ~0UL);
			break;
		case 'p':
			nprocs = number("--procs", optarg, MAX_PROCS);
			break;
		case 't':
			nthreads = number("--threads", optarg, MAX_THREADS);
			break;
		case 'h':
			print_usage(stdout);
			return KSFT_PASS;
		default:
			print_usage(stderr);
			return KSFT_FAIL;
		}
	}
	if (optind < argc || !nprocs || !nthreads) {
		fprintf(stderr, "hmm-folio-stress: bad arguments\n");
		print_usage(stderr);
		return KSFT_FAIL;
	}
	return -1;
}

/* The device, its policy and statistics, THP: or the program skips or fails. */
static void setup(struct hmm_folio_kmsg *kmsg, unsigned int *old_policy,
		  struct hmm_dmirror_alloc_stats *st0)
{
	const char *why;
	int ret;

	ret = hmm_folio_kmsg_begin(kmsg, &why);
	if (!ret)
		ret = hmm_folio_open_probe(0, &fd, &why);
	if (!ret)
		ret = hmm_folio_ext_probe(fd, &why);
	if (!ret)
		ret = hmm_folio_thp_setup(&why);
	if (ret == HMM_FOLIO_SKIP)
		ksft_exit_skip("%s\n", why);
	if (ret)
		ksft_exit_fail_msg("%s: %s\n", why, strerror(-ret));
	/* Freed device memory is handed out again at any order. */
	if (hmm_folio_set_policy(fd, HMM_DMIRROR_POLICY_LOWEST, old_policy))
		ksft_exit_fail_msg("cannot set the LOWEST policy\n");
	if (hmm_folio_stats(fd, st0))
		ksft_exit_fail_msg("HMM_DMIRROR_ALLOC_STATS failed\n");
	size = read_pmd_pagesize();
	npages = size / psize();
	procs_state = mmap(NULL, sizeof(*procs_state), PROT_READ | PROT_WRITE,
			   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (procs_state == MAP_FAILED)
		ksft_exit_fail_msg("mmap: %s\n", strerror(errno));
}

/* Runs the processes; returns how many failed or got stuck. */
static int run_procs(void)
{
	pid_t pids[MAX_PROCS];
	int p, status, bad = 0;

	fflush(stdout);
	for (p = 0; p < nprocs; p++) {
		pids[p] = fork();
		if (pids[p] < 0)
			ksft_exit_fail_msg("fork: %s\n", strerror(errno));
		if (!pids[p])
			_exit(proc_main(p));
	}
	/*
	 * Bounded: the run, the wait for the others (60 s), and a margin. A
	 * process still there then is stuck in the kernel: it is reported,
	 * killed if it can be, and not waited for.
	 */
	for (p = 0; p < nprocs; p++) {
		pid_t r;

		while ((r = waitpid(pids[p], &status, WNOHANG)) == 0 &&
		       ms_now() < (duration + 90) * 1000U)
			usleep(100000);
		if (r == 0) {
			ksft_print_msg("process %d stuck 90 s after the run, seed %u\n",
				       p, seed);
			kill(pids[p], SIGKILL);
			bad++;
		} else if (r != pids[p] || !WIFEXITED(status) ||
			   WEXITSTATUS(status)) {
			ksft_print_msg("process %d failed (status %#x), seed %u\n",
				       p, status, seed);
			bad++;
		}
	}
	return bad;
}

/* What the device says after the run: problems found. */
static int device_after(const struct hmm_dmirror_alloc_stats *st0,
			const struct hmm_dmirror_alloc_stats *st1)
{
	int bad = 0;

	if (st1->dirty_frees != st0->dirty_frees) {
		ksft_print_msg("%llu device folio(s) freed dirty, seed %u\n",
			       (unsigned long long)(st1->dirty_frees -
						    st0->dirty_frees), seed);
		bad++;
	}
	/* What the run is for: freed device memory reused at another order. */
	ksft_print_msg("%llu device pages reused at another order\n",
		       (unsigned long long)(st1->cross_order_pages -
					    st0->cross_order_pages));
	if (st1->cross_order_pages == st0->cross_order_pages) {
		ksft_print_msg("no device page was reused at another order, seed %u\n",
			       seed);
		bad++;
	}
	if (st1->free_pages != st1->total_pages) {
		ksft_print_msg("%llu device pages still in use after the run, seed %u\n",
			       (unsigned long long)(st1->total_pages -
						    st1->free_pages), seed);
		bad++;
	}
	return bad;
}

int main(int argc, char **argv)
{
	struct hmm_dmirror_alloc_stats st0, st1;
	struct hmm_folio_kmsg kmsg;
	unsigned int old_policy;
	int bad, splats, ret;

	ret = parse_args(argc, argv);
	if (ret >= 0)
		return ret;
	ksft_print_header();
	ksft_set_plan(1);
	ksft_print_msg("seed %u, %u s, %lu iterations per thread, %d processes x %d threads\n",
		       seed, duration, iterations, nprocs, nthreads);
	setup(&kmsg, &old_policy, &st0);
	bad = run_procs();
	hmm_folio_set_policy(fd, old_policy, NULL);
	if (hmm_folio_stats(fd, &st1))
		ksft_exit_fail_msg("HMM_DMIRROR_ALLOC_STATS failed\n");
	close(fd);
	bad += device_after(&st0, &st1);
	splats = hmm_folio_kmsg_check(&kmsg);
	hmm_folio_kmsg_end(&kmsg);
	if (splats)
		ksft_print_msg("the kernel logged %d splat(s), seed %u\n",
			       splats, seed);
	if (bad || splats)
		ksft_test_result_fail("stress (seed %u)\n", seed);
	else
		ksft_test_result_pass("stress (seed %u)\n", seed);
	ksft_finished();
}
