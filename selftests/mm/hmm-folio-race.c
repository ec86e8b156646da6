// SPDX-License-Identifier: GPL-2.0
/*
 * Page-table walkers racing migrations of THPs to the device and back.
 *
 * One thread (the mover, on CPU 0) keeps moving the THPs of a few PMD-sized
 * ranges to the device and back: whole (one PMD-order device folio, back
 * by MIGRATE_TO_SYS or by CPU read faults), split on the device (one page
 * migrated back first, then the rest) and in parts (half of a range, which
 * splits the THP), rebuilding the THP with MADV_COLLAPSE after a split.
 * Another thread (the walker, on CPU 1) keeps applying one walker of the
 * row to the same ranges: a madvise(), mprotect(), mremap(), a replacement
 * of part of a range, mbind(), move_pages(), a read of pagemap or smaps,
 * fork() with a child that reads the ranges, or a device read through the
 * mirror. Every step checks the tags of the pages it saw (a walker that
 * frees pages lets them read zero, never anything else), and at the end
 * every range comes back to system memory with its tags, passes the folio
 * check, leaves no device page in use, and the kernel log is clean.
 *
 * A window is a walker op that overlapped a migration (the mover was inside
 * a MIGRATE_TO_DEV or MIGRATE_TO_SYS when the op began or ended); each row
 * prints how many it opened per second and fails if it opened none.
 * Inside the kernel the walkers that hold mmap_lock for reading (or none)
 * interleave with a migration, which test_hmm runs under the read lock:
 * pagemap, smaps, the madvise rows, move_pages and device_read. So does
 * mbind's migration of the pages it queued (it queues them under the
 * write lock and migrates them after dropping it), and fork's child,
 * whose mapping of the folios it shares every migration of the mover
 * unmaps too (rmap) while the child reads them. mprotect, mremap and
 * replace_half hold mmap_lock for writing throughout, so their windows
 * are waits for the lock: those rows meet every state the mover leaves
 * between migrations (device PMDs, split device PTEs, half ranges), never
 * a migration entry of the mover's, and no kernel change can misbehave in
 * them under this race alone. The evict_* rows race those walkers with
 * a migration: there the mover brings every range back by evicting the
 * device's memory (HMM_DMIRROR_RELEASE: migrate_device_range() finds the
 * mappings by rmap and takes no mmap_lock), and the walker acts once the
 * eviction's migration entries are there. evict_mprotect writes a page
 * while the range is read-only (the write must fault); evict_mprotect_half
 * makes only the second half read-only, which splits the eviction's PMD
 * migration entry; evict_mremap clears soft-dirty, moves the range away
 * and reads pagemap there (a PMD moved reads soft-dirty), then moves it
 * back; evict_replace_half maps a new range over the second half, which
 * splits the eviction's PMD migration entry and zaps the second half's
 * entries (the first half must keep its tags; the second may read zero).
 * Each row runs RACE_MS by default (HMM_FOLIO_RACE_MS,
 * run_tests.sh --race-ms, for a soak); the mover's choices are seeded
 * (HMM_FOLIO_SEED, printed).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "kselftest_harness.h"
#include "vm_util.h"
#include "hmm_folio_util.h"

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE	25
#endif
#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4
#endif
#define RACE_MPOL_BIND		2	/* <linux/mempolicy.h> */
#define RACE_MPOL_MF_MOVE	(1 << 1)

#define RACE_RANGES	4
#define RACE_MS_DEFAULT	2000
#define RACE_STALL_MS	10000	/* a thread that did nothing for this long */
#define RACE_EVICT_WAIT_MS 50	/* an evict_* walker waits for an eviction */

enum race_walker {
	W_PAGEMAP,	/* read the ranges' pagemap: every page present or swap */
	W_SMAPS,	/* read smaps and smaps_rollup */
	W_COLD,		/* MADV_COLD */
	W_PAGEOUT,	/* MADV_PAGEOUT */
	W_WILLNEED,	/* MADV_WILLNEED */
	W_FREE,		/* MADV_FREE: pages may read zero */
	W_DONTNEED,	/* MADV_DONTNEED of a range: its pages read zero */
	W_COLLAPSE,	/* MADV_COLLAPSE (may refuse) */
	W_MPROTECT,	/* read-only, then writable again */
	W_MPROTECT_HALF, /* the same, of the second half: the PMD splits */
	W_MREMAP,	/* moved away (MREMAP_DONTUNMAP) and back */
	W_REPLACE_HALF,	/* second half replaced by a new mapping (a partial zap) */
	W_MBIND,	/* mbind(MPOL_BIND, MPOL_MF_MOVE) to the other node */
	W_MOVE_PAGES,	/* move_pages() of every page to the other node */
	W_FORK,		/* fork(): the child reads every range and exits */
	W_DEVICE_READ,	/* HMM_DMIRROR_READ of a range through the mirror */
};

/*
 * Which way the mover migrates, for the walkers to tell which migrations
 * overlapped what they saw: a seqcount per direction (__atomic), odd while
 * a migration to the device (to system memory) runs.
 */
struct race_seqs {
	unsigned long dev, sys;
};

/* What a walker op saw of them: read before it, and what had run after. */
struct race_seq {
	unsigned long dev, sys;
	bool to_dev, to_sys;
};

static void seq_begin(struct race_seqs *q, struct race_seq *s)
{
	s->dev = __atomic_load_n(&q->dev, __ATOMIC_ACQUIRE);
	s->sys = __atomic_load_n(&q->sys, __ATOMIC_ACQUIRE);
}

static void seq_end(struct race_seqs *q, struct race_seq *s)
{
	unsigned long dev = __atomic_load_n(&q->dev, __ATOMIC_ACQUIRE);
	unsigned long sys = __atomic_load_n(&q->sys, __ATOMIC_ACQUIRE);

	s->to_dev = (s->dev & 1) || dev != s->dev;
	s->to_sys = (s->sys & 1) || sys != s->sys;
}

/*
 * A migration ioctl of @fd inside the seqcount of its direction (an
 * eviction, HMM_DMIRROR_RELEASE, moves to system memory).
 */
static int seq_migrate(struct race_seqs *q, int fd, unsigned long req,
		       char *addr, void *buf, unsigned long npages,
		       struct hmm_dmirror_cmd *cmd)
{
	unsigned long *seq = req == HMM_DMIRROR_MIGRATE_TO_DEV ? &q->dev : &q->sys;
	int ret;

	__atomic_add_fetch(seq, 1, __ATOMIC_ACQ_REL);
	ret = hmm_folio_cmd(fd, req, addr, buf, npages, cmd);
	__atomic_add_fetch(seq, 1, __ATOMIC_ACQ_REL);
	return ret;
}

FIXTURE(walk)
{
	struct hmm_folio_kmsg kmsg;
	int fd;
	size_t pmd;		/* one range */
	size_t size;		/* all of them */
	unsigned long npages;	/* of one range */
	char *p;
	void *mirror;		/* the mover's device copy */
	void *wbuf;		/* the walker's */
	unsigned int seed;
	bool stop;		/* __atomic */
	struct race_seqs seqs;	/* the mover's migrations */
	/* __atomic: what each thread did */
	unsigned long cycles, partial, collapsed, ops, refused, windows;
	unsigned long sink;	/* what the CPU read faults read */
	int cur;		/* __atomic: the range the mover moves */
	/*
	 * The walker's: the mover's seqcount of migrations to the device
	 * when the eviction the walker waited for ran (odd: none met).
	 */
	unsigned long evict_dev;
	/* evict_mremap: PMDs moved and checked, still migrating there */
	unsigned long moved_pmds, moved_migrating;
	int exited;
	char bad[256];		/* the first thing that went wrong */
	/*
	 * Held for writing by a walker op that changes what a range reads
	 * (zero for tags, or back), for reading by the mover's CPU check: a
	 * page read while it changes would be torn, which is no bug.
	 */
	pthread_rwlock_t view;
	/* Symptoms of known bugs, counted, not failed (see the walkers). */
	unsigned long holes, absent_reads;
};

FIXTURE_VARIANT(walk)
{
	enum race_walker walker;
	bool frees;		/* the walker drops pages: zero is valid data */
	bool numa;		/* needs nodes 0 and 1 */
	/*
	 * The mover brings the pages back by evicting the device's memory
	 * (HMM_DMIRROR_RELEASE: migrate_device_range(), which finds the
	 * mappings by rmap and takes no mmap_lock) instead of migrating
	 * the range back: the walkers that hold mmap_lock for writing race
	 * that.
	 */
	bool evict;
	/*
	 * A known kernel bug this race meets that crashes a DEBUG_VM kernel
	 * or spoils the rest of the run: the row SKIPs saying so, unless
	 * HMM_FOLIO_CRASHERS=1 (run_tests.sh --crashers, make prove's run of
	 * the fixed kernel).
	 */
	const char *crasher;
};

#define RACE_ROW(name, w, f, n)						\
	FIXTURE_VARIANT_ADD(walk, name) { .walker = w, .frees = f, .numa = n }
#define RACE_CRASHER(name, w, f, why)					\
	FIXTURE_VARIANT_ADD(walk, name) { .walker = w, .frees = f, .crasher = why }
#define RACE_EVICT(name, w, f)						\
	FIXTURE_VARIANT_ADD(walk, name) { .walker = w, .frees = f, .evict = true }

RACE_ROW(pagemap, W_PAGEMAP, false, false);
RACE_ROW(smaps, W_SMAPS, false, false);
RACE_ROW(madv_cold, W_COLD, false, false);
RACE_ROW(madv_pageout, W_PAGEOUT, false, false);
RACE_ROW(madv_willneed, W_WILLNEED, false, false);
RACE_ROW(madv_free, W_FREE, true, false);
/* zaps a PMD migration entry of a device folio as a device-private PMD */
RACE_CRASHER(madv_dontneed, W_DONTNEED, true,
	     "known kernel bug that crashes DEBUG_VM kernels: zap_huge_pmd_migration_entry");
RACE_ROW(madv_collapse, W_COLLAPSE, false, false);
RACE_ROW(mprotect, W_MPROTECT, false, false);
RACE_ROW(mremap, W_MREMAP, true, false);
RACE_ROW(replace_half, W_REPLACE_HALF, true, false);
RACE_ROW(mbind, W_MBIND, false, true);
RACE_ROW(move_pages, W_MOVE_PAGES, false, true);
/* migrates a soft-dirty THP that fork() shared */
RACE_CRASHER(fork, W_FORK, false,
	     "known kernel bug that crashes DEBUG_VM kernels: remove_migration_pmd_soft_dirty");
/* reads a device PMD the mirror does not map: wrong pages in the mirror */
RACE_CRASHER(device_read, W_DEVICE_READ, false,
	     "known kernel bug that spoils the rest of its run: hmm_absent_pmd_offset");
/* Back by eviction: rmap walks against mmap_lock held for writing. */
RACE_EVICT(evict_mprotect, W_MPROTECT, false);
RACE_EVICT(evict_mprotect_half, W_MPROTECT_HALF, false);
RACE_EVICT(evict_mremap, W_MREMAP, true);
RACE_EVICT(evict_replace_half, W_REPLACE_HALF, true);

/* The walker makes (part of) the range read-only: the mover writes it back. */
static bool race_mprotects(const FIXTURE_VARIANT(walk) *v)
{
	return v->walker == W_MPROTECT || v->walker == W_MPROTECT_HALF;
}

static unsigned long race_ms(void)
{
	unsigned long ms = RACE_MS_DEFAULT;
	const char *e = getenv("HMM_FOLIO_RACE_MS");
	char *end;

	if (e && *e) {
		ms = strtoul(e, &end, 10);
		if (*end || !ms || ms > 86400000UL)
			ms = RACE_MS_DEFAULT;
	}
	return ms * hmm_folio_timeout_scale();
}

static unsigned long now_ms(void)
{
	return hmm_folio_mono_us() / 1000;
}

static bool two_nodes(void)
{
	return access("/sys/devices/system/node/node1", F_OK) == 0;
}

FIXTURE_SETUP(walk)
{
	const char *why = NULL;
	const char *e = getenv("HMM_FOLIO_SEED");
	const char *c = getenv("HMM_FOLIO_CRASHERS");

	self->p = NULL;
	self->mirror = NULL;
	self->wbuf = NULL;
	if (variant->crasher && (!c || strcmp(c, "1")))
		SKIP(return, "%s (selftests/fixes); HMM_FOLIO_CRASHERS=1 runs it",
		     variant->crasher);
	HMM_FOLIO_REQUIRE(hmm_folio_fixture_open(&self->kmsg, &self->fd,
						 HMM_FOLIO_NEED_ALL, &why), why);
	if (variant->numa && !two_nodes())
		SKIP(return, "only one NUMA node: the tests need nodes 0 and 1");
	self->pmd = read_pmd_pagesize();
	self->npages = self->pmd / psize();
	self->size = RACE_RANGES * self->pmd;
	self->mirror = malloc(self->pmd);
	self->wbuf = malloc(self->pmd);
	ASSERT_NE(self->mirror, NULL);
	ASSERT_NE(self->wbuf, NULL);
	self->seed = e && *e ? strtoul(e, NULL, 10) : (unsigned int)time(NULL);
	self->seed ^= variant->walker * 0x9e3779b9U;
	pthread_rwlock_init(&self->view, NULL);
	self->p = HMM_FOLIO_NEW_RANGE(self->size, true, 1);
}

FIXTURE_TEARDOWN(walk)
{
	int splats;

	if (self->p)
		munmap(self->p, self->size);
	splats = hmm_folio_fixture_close(&self->kmsg, &self->fd);
	free(self->mirror);
	free(self->wbuf);
	HMM_FOLIO_FAIL_ON_SPLATS(splats);
}

static bool race_stopped(FIXTURE_DATA(walk) *self)
{
	return __atomic_load_n(&self->stop, __ATOMIC_ACQUIRE);
}

/* The first failure wins; both threads then stop. */
static void race_bad(FIXTURE_DATA(walk) *self, const char *fmt, ...)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	va_list ap;

	pthread_mutex_lock(&lock);
	if (!self->bad[0]) {
		va_start(ap, fmt);
		vsnprintf(self->bad, sizeof(self->bad), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&lock);
	__atomic_store_n(&self->stop, true, __ATOMIC_RELEASE);
}

/* race_bad_pages(): no page may read zero. */
#define RACE_NO_ZERO	(~(size_t)0)

/*
 * Pages of @buf (@npages, the data of user address @addr) that hold
 * neither their tags nor, at offset @zero_from of their PMD-sized range
 * (@pmd) or beyond, zeroes.
 */
static unsigned long race_bad_pages(const char *buf, unsigned long npages,
				    uintptr_t addr, size_t pmd,
				    size_t zero_from)
{
	size_t ps = psize();
	unsigned long i, bad = 0;

	for (i = 0; i < npages; i++) {
		const char *pg = buf + i * ps;

		if (hmm_folio_page_is(pg, addr + i * ps, 1))
			continue;
		if (((addr + i * ps) & (pmd - 1)) >= zero_from &&
		    !hmm_folio_nonzero_pages(pg, ps))
			continue;
		bad++;
	}
	return bad;
}

/*
 * Where a range may read zero: where the walker drops pages, which
 * replace_half does to the second half only (nothing writes the tags
 * again, and the first half keeps them).
 */
static size_t race_zero_from(FIXTURE_DATA(walk) *self,
			     const FIXTURE_VARIANT(walk) *v)
{
	if (!v->frees)
		return RACE_NO_ZERO;
	return v->walker == W_REPLACE_HALF ? self->pmd / 2 : 0;
}

static char *range(FIXTURE_DATA(walk) *self, int r)
{
	return self->p + r * self->pmd;
}

/*
 * One migration ioctl of the mover (seq_migrate()). A migration
 * to the device that did not take every page returns 1: its device copy
 * is not checked (ENOENT, or stale mirror entries for the pages left
 * behind). The range stays mapped throughout (MREMAP_DONTUNMAP, MAP_FIXED
 * replacements), so any error is a failure.
 */
static int race_migrate(FIXTURE_DATA(walk) *self, unsigned long req,
			char *addr, void *buf, unsigned long npages)
{
	struct hmm_dmirror_cmd cmd = { 0 };
	int ret = seq_migrate(&self->seqs, self->fd, req, addr, buf, npages,
			      &cmd);

	/* ENOENT: a page was not moved (the walker held or dropped it). */
	if (ret == -ENOENT || (!ret && cmd.cpages != npages))
		return 1;
	return ret;
}

/*
 * The mover's view of @npages at @addr after a step, in @buf: tags (or
 * zero) everywhere.
 */
static bool mover_check(FIXTURE_DATA(walk) *self,
			const FIXTURE_VARIANT(walk) *variant, char *addr,
			unsigned long npages, const char *buf, const char *what)
{
	unsigned long bad = race_bad_pages(buf, npages, (uintptr_t)addr,
					   self->pmd,
					   race_zero_from(self, variant));

	if (bad) {
		/* The first bad word, printed. */
		hmm_folio_check_tags(buf, npages * psize(), (uintptr_t)addr,
				     1, what);
		race_bad(self, "%s of %lu pages at range offset %#lx: %lu hold wrong data",
			 what, npages, (unsigned long)(addr - self->p), bad);
	}
	return !bad;
}

/*
 * Back by eviction (FIXTURE_VARIANT(walk).evict): @mode 2 moves one page
 * of range @p back first (the device THP splits: the eviction meets device
 * PTEs and order-0 device folios; before lib/test_hmm 0014 the split left
 * the head's backing page a large folio of no pages, and the eviction's
 * copy of it ran over memory), then every page of the device is evicted to
 * system memory. The release is refused (EBUSY) only while a migration of
 * the device runs, and only the mover migrates: any error is a failure.
 */
static int race_evict(FIXTURE_DATA(walk) *self, char *p, int mode,
		      unsigned int *seed)
{
	struct hmm_dmirror_cmd cmd = { 0 };
	int ret = 0;

	if (mode == 2)
		ret = race_migrate(self, HMM_DMIRROR_MIGRATE_TO_SYS,
				   p + (rand_r(seed) % self->npages) * psize(),
				   NULL, 1);
	if (ret < 0)
		return ret;
	return seq_migrate(&self->seqs, self->fd, HMM_DMIRROR_RELEASE, p, NULL,
			   self->npages, &cmd);
}

static void *race_mover(void *arg)
{
	struct { FIXTURE_DATA(walk) *self; const FIXTURE_VARIANT(walk) *v; }
		*a = arg;
	FIXTURE_DATA(walk) *self = a->self;
	const FIXTURE_VARIANT(walk) *variant = a->v;
	unsigned int seed = self->seed;
	unsigned long n = self->npages, half = n / 2, k, i;
	size_t ps = psize();
	unsigned long sum;
	int ret, r, mode;
	char *p;

	hmm_folio_pin_cpu(0);
	while (!race_stopped(self)) {
		r = rand_r(&seed) % RACE_RANGES;
		mode = rand_r(&seed) % 4;
		p = range(self, r);
		__atomic_store_n(&self->cur, r, __ATOMIC_RELEASE);
		/* Mode 3 takes half a range: the THP is split. */
		k = mode == 3 ? (rand_r(&seed) % 2) * half : 0;
		ret = race_migrate(self, HMM_DMIRROR_MIGRATE_TO_DEV, p + k * ps,
				   self->mirror, mode == 3 ? half : n);
		if (ret < 0) {
			race_bad(self, "MIGRATE_TO_DEV of range %d: %s", r,
				 strerror(-ret));
			break;
		}
		/*
		 * After a walker dropped pages, the device copy may be stale:
		 * test_hmm maps what it migrated into its mirror without
		 * checking for an invalidation meanwhile, and reads the freed
		 * pages' backing memory then. Only the CPU's view counts.
		 */
		if (!ret && !variant->frees &&
		    !mover_check(self, variant, p + k * ps,
					 mode == 3 ? half : n, self->mirror,
					 "device copy"))
			break;
		__atomic_add_fetch(ret ? &self->partial : &self->cycles, 1,
				   __ATOMIC_RELAXED);
		ret = 0;
		switch (variant->evict ? 4 : mode) {
		case 4:		/* back by eviction */
			ret = race_evict(self, p, rand_r(&seed) % 4, &seed);
			break;
		case 1:		/* back by CPU read faults */
			__atomic_add_fetch(&self->seqs.sys, 1, __ATOMIC_ACQ_REL);
			for (i = 0, sum = 0; i < n; i++)
				sum += p[i * ps];
			__atomic_store_n(&self->sink, sum, __ATOMIC_RELAXED);
			__atomic_add_fetch(&self->seqs.sys, 1, __ATOMIC_ACQ_REL);
			break;
		case 2:		/* one page back first: the device PMD splits */
			k = rand_r(&seed) % n;
			ret = race_migrate(self, HMM_DMIRROR_MIGRATE_TO_SYS,
					   p + k * ps, NULL, 1);
			if (ret >= 0)
				ret = race_migrate(self, HMM_DMIRROR_MIGRATE_TO_SYS,
						   p, NULL, n);
			break;
		default:
			ret = race_migrate(self, HMM_DMIRROR_MIGRATE_TO_SYS, p,
					   NULL, n);
			break;
		}
		if (ret < 0) {
			race_bad(self, "%s of range %d: %s",
				 variant->evict ? "eviction" : "MIGRATE_TO_SYS", r,
				 strerror(-ret));
			break;
		}
		pthread_rwlock_rdlock(&self->view);
		ret = mover_check(self, variant, p, n, p, "CPU view");
		/*
		 * mprotect() makes the PMD read-only, and only a write makes
		 * it writable again: a write of every page's own first word
		 * keeps the device entries (and the migration entries of the
		 * eviction) writable, as mprotect() must see them.
		 */
		if (ret && race_mprotects(variant))
			for (i = 0; i < n; i++)
				__atomic_store_n((uint64_t *)(p + i * ps),
						 __atomic_load_n((uint64_t *)(p + i * ps),
								 __ATOMIC_RELAXED),
						 __ATOMIC_RELAXED);
		pthread_rwlock_unlock(&self->view);
		if (!ret)
			break;
		/* Split ranges become THPs again (when khugepaged could). */
		if ((mode >= 2 || variant->evict) &&
		    !madvise(p, self->pmd, MADV_COLLAPSE))
			__atomic_add_fetch(&self->collapsed, 1, __ATOMIC_RELAXED);
	}
	__atomic_add_fetch(&self->exited, 1, __ATOMIC_RELEASE);
	return NULL;
}

/*
 * pagemap of range @r: a mapped page is present or swap-like, never none.
 * A THP migrating back from the device reads as a hole now and then on 7.2
 * and 7.3 (known bug set_pmd_migration_entry_pmd_none: its PMD is cleared
 * before the migration entry is written; known_bugs.* pins it): a hole seen
 * while only migrations back to system memory ran is counted, not failed.
 * One seen while a migration to the device ran, or none, fails the row; one
 * seen while both ran tells nothing.
 */
static int walk_pagemap(FIXTURE_DATA(walk) *self, int r)
{
	struct race_seq s;
	uint64_t *pm = self->wbuf;
	size_t len = self->npages * sizeof(*pm);
	off_t off = (uintptr_t)range(self, r) / psize() * sizeof(*pm);
	unsigned long i;
	int fd = open("/proc/self/pagemap", O_RDONLY);
	ssize_t got;

	if (fd < 0)
		return -errno;
	seq_begin(&self->seqs, &s);
	got = pread(fd, pm, len, off);
	seq_end(&self->seqs, &s);
	close(fd);
	if (got != (ssize_t)len)
		return got < 0 ? -errno : -EIO;
	for (i = 0; i < self->npages; i++) {
		if (pm[i] & (PM_PRESENT | PM_SWAP))
			continue;
		if (s.to_sys && !s.to_dev) {
			self->holes++;
		} else if (!s.to_sys) {
			race_bad(self,
				 "pagemap: page %lu of range %d is neither present nor swap (%#llx), %s",
				 i, r, (unsigned long long)pm[i],
				 s.to_dev ? "during a migration to the device" :
				 "while no migration ran");
		}
		break;
	}
	return 0;
}

/* Page i of @buf holds page (i mod b) of @p's tags, for some 0 < b < n. */
static bool absent_pmd_symptom(const char *buf, const char *p, unsigned long n)
{
	unsigned long b, i;
	size_t ps = psize();

	for (b = 0; b < n; b++)
		if (!hmm_folio_page_is(buf + b * ps, (uintptr_t)p + b * ps, 1))
			break;
	if (!b || b == n)
		return false;
	for (i = b; i < n; i++)
		if (!hmm_folio_page_is(buf + i * ps,
				       (uintptr_t)p + (i % b) * ps, 1))
			return false;
	return true;
}

static int read_whole(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY);
	ssize_t got, all = 0;

	if (fd < 0)
		return -errno;
	while ((got = read(fd, buf, size)) > 0)
		all += got;
	close(fd);
	return got < 0 ? -errno : all ? 0 : -EIO;
}

/*
 * mremap() marks soft-dirty each PMD entry it moves, present or migration
 * (move_soft_dirty_pmd()), and the THP restored from a moved migration
 * entry keeps the bit: after clear_refs, a range that is one PMD entry at
 * @q (smaps counts it in AnonHugePages) reads soft-dirty on every page.
 * Not so for PTEs, whose page table move_normal_pmd() moves as it is, nor
 * for a device-private PMD, which move_soft_dirty_pmd() leaves alone
 * (known bug mremap_device_pmd_soft_dirty): the walker moves the range
 * once the eviction put its migration entry there (race_wait_migration()),
 * and checks only if no migration to the device ran since the eviction
 * began.
 */
static int race_check_moved(FIXTURE_DATA(walk) *self, int r, char *q)
{
	uint64_t *pm = self->wbuf;
	size_t len = self->npages * sizeof(*pm);
	unsigned long i;
	bool pmd;
	int fd;

	if ((self->evict_dev & 1) ||
	    __atomic_load_n(&self->seqs.dev, __ATOMIC_ACQUIRE) != self->evict_dev)
		return 0;
	pmd = hmm_folio_smaps_kb(q, "AnonHugePages:") == (long)(self->pmd >> 10);
	fd = open("/proc/self/pagemap", O_RDONLY);
	if (fd < 0)
		return -errno;
	if (pread(fd, pm, len, (uintptr_t)q / psize() * sizeof(*pm)) !=
	    (ssize_t)len) {
		close(fd);
		return -EIO;
	}
	close(fd);
	self->moved_pmds += pmd;
	self->moved_migrating += pmd && (pm[0] & PM_SWAP);
	for (i = 0; pmd && i < self->npages; i++) {
		if (!(pm[i] & (PM_PRESENT | PM_SWAP)) || (pm[i] & PM_SOFT_DIRTY))
			continue;
		race_bad(self,
			 "mremap of range %d during an eviction: page %lu of the PMD moved is not soft-dirty (pagemap %#llx)",
			 r, i, (unsigned long long)pm[i]);
		break;
	}
	return 0;
}

/* The walker's op on range @r; returns 0, 1 (refused as allowed) or -errno. */
static int walk_once(FIXTURE_DATA(walk) *self,
		     const FIXTURE_VARIANT(walk) *variant, int r, int node)
{
	unsigned long n = self->npages, i, k, h;
	char *p = range(self, r);
	size_t ps = psize();
	struct hmm_dmirror_cmd cmd;
	struct race_seq s;
	void *pages[512];
	int status[512], nodes[512];
	unsigned long mask;
	char *q, *res;
	pid_t pid;
	int ret, st;

	switch (variant->walker) {
	case W_PAGEMAP:
		return walk_pagemap(self, r);
	case W_SMAPS:
		ret = read_whole("/proc/self/smaps", self->wbuf, self->pmd);
		return ret ? ret : read_whole("/proc/self/smaps_rollup",
					      self->wbuf, self->pmd);
	case W_COLD:
		return madvise(p, self->pmd, MADV_COLD) ? -errno : 0;
	case W_PAGEOUT:
		return madvise(p, self->pmd, MADV_PAGEOUT) ? -errno : 0;
	case W_WILLNEED:
		return madvise(p, self->pmd, MADV_WILLNEED) ? -errno : 0;
	case W_FREE:
		return madvise(p, self->pmd, MADV_FREE) ? -errno : 0;
	case W_DONTNEED:
		if (madvise(p, self->pmd, MADV_DONTNEED))
			return -errno;
		/*
		 * Nothing writes the tags again: once MADV_DONTNEED returned,
		 * whatever migration was in flight, the range reads zero.
		 */
		i = hmm_folio_nonzero_pages(p, self->pmd);
		if (i)
			race_bad(self,
				 "MADV_DONTNEED of range %d returned, and %lu pages still hold data",
				 r, i);
		return 0;
	case W_COLLAPSE:
		if (!madvise(p, self->pmd, MADV_COLLAPSE))
			return 0;
		/* Busy or split pages, device pages: it may refuse. */
		return errno == EAGAIN || errno == EINVAL || errno == ENOMEM ?
			1 : -errno;
	case W_MPROTECT:
	case W_MPROTECT_HALF:
		/* Of the second half only, the PMD (and its entry) splits. */
		h = variant->walker == W_MPROTECT_HALF ? n / 2 : 0;
		if (mprotect(p + h * ps, self->pmd - h * ps, PROT_READ))
			return -errno;
		/*
		 * Let an eviction that met the range in flight finish: the
		 * PTEs it restores from the entries mprotect() changed must
		 * be read-only. A write of a page's own first tag must fault
		 * (the tag is computed, not read: a read would fault a device
		 * page back).
		 */
		seq_begin(&self->seqs, &s);
		for (k = now_ms() + RACE_STALL_MS; (s.sys & 1) && now_ms() < k &&
		     __atomic_load_n(&self->seqs.sys, __ATOMIC_ACQUIRE) == s.sys;)
			sched_yield();
		i = h + s.sys % (n - h);
		if (!hmm_folio_write_faults((uint64_t *)(p + i * ps),
					    hmm_folio_tag((uintptr_t)(p + i * ps),
							  1)))
			race_bad(self,
				 "a write to page %lu of range %d went through while it was PROT_READ",
				 i, r);
		return mprotect(p + h * ps, self->pmd - h * ps,
				PROT_READ | PROT_WRITE) ? -errno : 0;
	case W_MREMAP:
		/* A PMD-aligned hole of our own, then there and back. */
		res = mmap(NULL, 2 * self->pmd, PROT_NONE,
			   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (res == MAP_FAILED)
			return -errno;
		q = (char *)(((uintptr_t)res + self->pmd - 1) & ~(self->pmd - 1));
		/* Against an eviction: soft-dirty cleared, moves checked. */
		ret = variant->evict ? hmm_folio_clear_soft_dirty() : 0;
		if (!ret && mremap(p, self->pmd, self->pmd,
				   MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP,
				   q) == MAP_FAILED)
			ret = -errno;
		if (!ret && variant->evict)
			ret = race_check_moved(self, r, q);
		if (!ret && mremap(q, self->pmd, self->pmd,
				   MREMAP_MAYMOVE | MREMAP_FIXED, p) == MAP_FAILED)
			ret = -errno;
		munmap(res, 2 * self->pmd);
		return ret;
	case W_REPLACE_HALF:
		q = mmap(p + self->pmd / 2, self->pmd / 2,
			 PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
		if (q == MAP_FAILED)
			return -errno;
		return madvise(q, self->pmd / 2, MADV_HUGEPAGE) ? -errno : 0;
	case W_MBIND:
		mask = 1UL << node;
		if (syscall(SYS_mbind, p, self->pmd, RACE_MPOL_BIND, &mask,
			    sizeof(mask) * 8, RACE_MPOL_MF_MOVE))
			return errno == EIO ? 1 : -errno;
		return 0;
	case W_MOVE_PAGES:
		for (i = 0; i < n && i < 512; i++) {
			pages[i] = p + i * ps;
			nodes[i] = node;
		}
		ret = syscall(SYS_move_pages, 0, i, pages, nodes, status,
			      RACE_MPOL_MF_MOVE);
		/* Per-page statuses: device pages and busy ones are refused. */
		return ret < 0 ? -errno : ret ? 1 : 0;
	case W_FORK:
		pid = fork();
		if (pid < 0)
			return -errno;
		if (!pid)
			_exit(race_bad_pages(self->p, RACE_RANGES * n,
					     (uintptr_t)self->p, self->pmd,
					     RACE_NO_ZERO) ? 1 : 0);
		if (waitpid(pid, &st, 0) != pid)
			return -errno;
		if (!WIFEXITED(st) || WEXITSTATUS(st)) {
			race_bad(self, "fork: the child saw wrong data (status %#x)",
				 st);
		}
		return 0;
	case W_DEVICE_READ:
		/*
		 * Through the mover's mirror: test_hmm keeps no other mirror
		 * of the device coherent with its migrations (its invalidation
		 * skips every MMU_NOTIFY_MIGRATE of the device's own).
		 */
		ret = hmm_folio_cmd(self->fd, HMM_DMIRROR_READ, p, self->wbuf,
				    n, &cmd);
		if (ret)
			return ret;
		if (!race_bad_pages(self->wbuf, n, (uintptr_t)p, self->pmd,
				    RACE_NO_ZERO))
			return 0;
		/*
		 * Known bug hmm_absent_pmd_offset: a device PMD the mirror
		 * does not map is read as page i mod the fault batch (and the
		 * mirror keeps those pages: the row runs only with the fix,
		 * --crashers). Counted, not failed; other data fails.
		 */
		if (absent_pmd_symptom(self->wbuf, p, n)) {
			self->absent_reads++;
			return 0;
		}
		hmm_folio_check_tags(self->wbuf, self->pmd, (uintptr_t)p, 1,
				     "device read");
		race_bad(self, "device read of range %d: wrong data", r);
		return 0;
	}
	return -EINVAL;
}

/*
 * An evict_* walker acts once the eviction (seqcount @sys, odd) replaced
 * entries of range @r by migration entries: a pagemap entry of a swap type
 * that the range's first read while the eviction ran did not show (those
 * are the device's entries), or the eviction ended. Only with
 * CAP_SYS_ADMIN does pagemap show swap types; without, the walker waits
 * for the end of the eviction.
 */
static void race_wait_migration(FIXTURE_DATA(walk) *self, int r,
				unsigned long sys)
{
	unsigned long n = self->npages < 512 ? self->npages : 512, i;
	off_t off = (uintptr_t)range(self, r) / psize() * sizeof(uint64_t);
	int fd = open("/proc/self/pagemap", O_RDONLY);
	uint64_t pm[512], seen = 0;
	bool first = true;

	if (fd < 0)
		return;
	while (__atomic_load_n(&self->seqs.sys, __ATOMIC_ACQUIRE) == sys &&
	       !race_stopped(self)) {
		if (pread(fd, pm, n * sizeof(*pm), off) != (ssize_t)(n * sizeof(*pm)))
			break;
		for (i = 0; i < n; i++) {
			if (!(pm[i] & PM_SWAP))
				continue;
			if (first)
				seen |= 1ULL << (pm[i] & 0x1f);
			else if (!(seen & (1ULL << (pm[i] & 0x1f))))
				goto out;
		}
		first = false;
	}
out:
	close(fd);
}

/*
 * Walker ops that change what a range reads, or make it read-only (the
 * mover writes it), hold the view for writing.
 */
static bool race_holds_view(const FIXTURE_VARIANT(walk) *v)
{
	return v->frees || race_mprotects(v);
}

static void *race_walker(void *arg)
{
	struct { FIXTURE_DATA(walk) *self; const FIXTURE_VARIANT(walk) *v; }
		*a = arg;
	FIXTURE_DATA(walk) *self = a->self;
	unsigned int seed = self->seed ^ 0x5bd1e995U;
	struct race_seq s;
	unsigned long deadline, sys;
	int ret, r, node = 1;

	hmm_folio_pin_cpu(1);
	while (!race_stopped(self)) {
		r = rand_r(&seed) % RACE_RANGES;
		/*
		 * Against an eviction, act on the mover's range while one runs
		 * (waiting at most RACE_EVICT_WAIT_MS for one), once it put
		 * migration entries there: in between, the walker would change
		 * the device's entries (mprotect() leaves them read-only for
		 * good) long before the eviction meets them.
		 */
		if (a->v->evict) {
			for (deadline = now_ms() + RACE_EVICT_WAIT_MS;
			     !((sys = __atomic_load_n(&self->seqs.sys,
						       __ATOMIC_ACQUIRE)) & 1) &&
			     !race_stopped(self) && now_ms() < deadline;)
				sched_yield();
			r = __atomic_load_n(&self->cur, __ATOMIC_ACQUIRE);
			self->evict_dev = 1;
			if (sys & 1) {
				self->evict_dev = __atomic_load_n(&self->seqs.dev,
								  __ATOMIC_ACQUIRE);
				race_wait_migration(self, r, sys);
			}
		}
		if (race_holds_view(a->v))
			pthread_rwlock_wrlock(&self->view);
		seq_begin(&self->seqs, &s);
		ret = walk_once(self, a->v, r, node);
		seq_end(&self->seqs, &s);
		if (race_holds_view(a->v))
			pthread_rwlock_unlock(&self->view);
		if (ret < 0) {
			race_bad(self, "walker on range %d: %s", r,
				 strerror(-ret));
			break;
		}
		node ^= 1;
		__atomic_add_fetch(ret ? &self->refused : &self->ops, 1,
				   __ATOMIC_RELAXED);
		if (s.to_dev || s.to_sys)
			__atomic_add_fetch(&self->windows, 1, __ATOMIC_RELAXED);
	}
	__atomic_add_fetch(&self->exited, 1, __ATOMIC_RELEASE);
	return NULL;
}

TEST_F_TIMEOUT(walk, vs_migration, HMM_FOLIO_TIMEOUT(60))
{
	struct { FIXTURE_DATA(walk) *self; const FIXTURE_VARIANT(walk) *v; }
		arg = { self, variant };
	unsigned long *const rounds[2][2] = {
		{ &self->cycles, &self->partial },
		{ &self->ops, &self->refused },
	};
	/*
	 * What the row needs of each side (below): a walker that keeps the
	 * pages busy (madv_collapse: 0 whole migrations of 2 in 2 s once,
	 * on 7.3.4 beside another guest) gets more time for them.
	 */
	unsigned long *const need[2] = {
		variant->frees ? NULL : &self->cycles, &self->ops,
	};
	unsigned long dur = race_ms(), ms;
	struct hmm_dmirror_alloc_stats st;
	pthread_t tm, tw;
	int r, stuck;

	TH_LOG("seed %u, %lu ms", self->seed, dur);
	ASSERT_EQ(pthread_create(&tm, NULL, race_mover, &arg), 0);
	ASSERT_EQ(pthread_create(&tw, NULL, race_walker, &arg), 0);
	ms = hmm_folio_race_watch(&self->stop, &self->exited, rounds, need,
				  dur, RACE_STALL_MS * hmm_folio_timeout_scale(),
				  &stuck);
	/* Stuck in the kernel (the watch said where): fail, leave them. */
	ASSERT_NE(ms, 0)
		TH_LOG("the %s is stuck (%lu cycles, %lu walker ops)",
		       stuck ? "walker" : "mover", self->cycles + self->partial,
		       self->ops + self->refused);
	pthread_join(tm, NULL);
	pthread_join(tw, NULL);
	TH_LOG("%lu ms: %lu cycles (%lu partial, %lu collapsed), %lu walker ops (%lu refused)",
	       ms, self->cycles, self->partial, self->collapsed, self->ops,
	       self->refused);
	TH_LOG("%lu windows (%lu/s)", self->windows, self->windows * 1000 / ms);
	if (variant->evict && variant->walker == W_MREMAP)
		TH_LOG("%lu PMDs moved in an eviction, %lu still migrating: soft-dirty",
		       self->moved_pmds, self->moved_migrating);
	if (self->holes)
		TH_LOG("known bug set_pmd_migration_entry_pmd_none: %lu pagemap holes",
		       self->holes);
	if (self->absent_reads)
		TH_LOG("known bug hmm_absent_pmd_offset: %lu device reads of unmapped device PMDs",
		       self->absent_reads);
	ASSERT_EQ(self->bad[0], 0) TH_LOG("%s", self->bad);
	/*
	 * Both sides ran, and at the same time. Against a walker that frees
	 * pages most migrations to the device are partial (walk.madv_free:
	 * 36 whole of 1162 in a 30 s run, none now and then in 2 s), and
	 * their device copies are not checked: any migration counts there.
	 */
	ASSERT_GT(self->cycles + (variant->frees ? self->partial : 0), 0);
	ASSERT_GT(self->ops, 0);
	ASSERT_GT(self->windows, 0);
	HMM_FOLIO_STEP_DONE("walker racing migrations");

	/* Everything back, intact, in order, and the device empty. */
	for (r = 0; r < RACE_RANGES; r++) {
		ASSERT_EQ(hmm_folio_cmd(self->fd, HMM_DMIRROR_MIGRATE_TO_SYS,
					range(self, r), NULL, self->npages,
					NULL), 0);
		ASSERT_EQ(race_bad_pages(range(self, r), self->npages,
					 (uintptr_t)range(self, r), self->pmd,
					 race_zero_from(self, variant)), 0)
			TH_LOG("range %d after the race", r);
	}
	/* Dropped pages read back as the zero page: only the data counts. */
	if (!variant->frees)
		ASSERT_EQ(hmm_folio_snapshot_expect(self->fd, self->p,
						    self->size / psize(),
						    HMM_FOLIO_SNAP_SYSTEM,
						    "after the race"), 0);
	ASSERT_EQ(hmm_folio_check_invariants(self->fd, HMM_DMIRROR_CHECK_RANGE,
					     0, self->p, self->size / psize()), 0);
	ASSERT_EQ(munmap(self->p, self->size), 0);
	self->p = NULL;
	ASSERT_EQ(hmm_folio_stats(self->fd, &st), 0);
	ASSERT_EQ(st.free_pages, st.total_pages)
		TH_LOG("%llu device pages still in use after the race",
		       (unsigned long long)(st.total_pages - st.free_pages));
	HMM_FOLIO_STEP_DONE("after the race");
}

/* ------------------------------------------------------------------------
 * known_bugs.set_pmd_migration_entry_pmd_none: a THP migrating back from
 * the device has no PMD for a moment. set_pmd_migration_entry() clears the
 * device-private PMD (pmdp_huge_get_and_clear()) before it writes the
 * migration entry, and walkers that test pmd_none() without the PMD lock
 * take the range for a hole: pagemap reports it unmapped, MADV_DONTNEED
 * skips it (walk.madv_dontneed sees that). One thread moves one THP to the
 * device and back, the test reads its first pagemap entry over and over,
 * on the other CPU, until a hole or KB_ROUNDS rounds: XFAIL at the first
 * hole seen while only a migration back ran; a hole seen while a migration
 * to the device ran (which invalidates a present PMD, never none) fails
 * it. The bug shows within tens of rounds on 7.2.13 (10 in 294 ms, 55 in
 * 2259 ms) and about a hundred on 7.3.4 (123 in 1259 ms, 131 in 2988 ms),
 * but a loaded machine runs few rounds in a fixed time: no hole means
 * "fixed" only after KB_ROUNDS and KB_MIN_MS both (about 8 s on either).
 * If KB_MS ran out before KB_ROUNDS the test SKIPs, saying so: no
 * environment reason run_tests.sh declares, so its verdict fails the test
 * by name rather than call the bug fixed.
 */
#define KB_ROUNDS	300
#define KB_MIN_MS	(8000 * hmm_folio_timeout_scale())
#define KB_MS		(30000 * hmm_folio_timeout_scale())

FIXTURE(known_bugs)
{
	struct hmm_folio_kmsg kmsg;
	int fd;
	size_t size;
	char *p;
	void *mirror;
	struct race_seqs seqs;	/* as walk's */
	unsigned long rounds;
	bool stop;
	int err;
};

FIXTURE_VARIANT(known_bugs)
{
	int unused;
};

FIXTURE_VARIANT_ADD(known_bugs, set_pmd_migration_entry_pmd_none) { 0 };

FIXTURE_SETUP(known_bugs)
{
	const char *why = NULL;

	self->p = NULL;
	self->mirror = NULL;
	HMM_FOLIO_REQUIRE(hmm_folio_fixture_open(&self->kmsg, &self->fd,
						 HMM_FOLIO_NEED_THP, &why), why);
	self->size = read_pmd_pagesize();
	self->mirror = malloc(self->size);
	ASSERT_NE(self->mirror, NULL);
	self->p = HMM_FOLIO_NEW_RANGE(self->size, true, 1);
}

FIXTURE_TEARDOWN(known_bugs)
{
	int splats;

	if (self->p)
		munmap(self->p, self->size);
	splats = hmm_folio_fixture_close(&self->kmsg, &self->fd);
	free(self->mirror);
	HMM_FOLIO_FAIL_ON_SPLATS(splats);
}

static int kb_migrate(FIXTURE_DATA(known_bugs) *self, unsigned long req)
{
	return seq_migrate(&self->seqs, self->fd, req, self->p, self->mirror,
			   self->size / psize(), NULL);
}

static void *kb_mover(void *arg)
{
	FIXTURE_DATA(known_bugs) *self = arg;
	int ret = 0;

	hmm_folio_pin_cpu(0);
	while (!__atomic_load_n(&self->stop, __ATOMIC_ACQUIRE)) {
		ret = kb_migrate(self, HMM_DMIRROR_MIGRATE_TO_DEV);
		if (!ret)
			ret = kb_migrate(self, HMM_DMIRROR_MIGRATE_TO_SYS);
		if (ret)
			break;
		__atomic_add_fetch(&self->rounds, 1, __ATOMIC_RELEASE);
	}
	self->err = ret;
	__atomic_store_n(&self->stop, true, __ATOMIC_RELEASE);
	return NULL;
}

TEST_F_TIMEOUT(known_bugs, pagemap_hole_while_migrating_back,
	       HMM_FOLIO_TIMEOUT(60))
{
	unsigned long start = now_ms(), reads = 0;
	off_t off = (uintptr_t)self->p / psize() * sizeof(uint64_t);
	int pm = open("/proc/self/pagemap", O_RDONLY);
	struct race_seq s = { 0 };
	bool hole = false;
	uint64_t e = 0;
	pthread_t t;

	ASSERT_GE(pm, 0);
	hmm_folio_pin_cpu(1);
	ASSERT_EQ(pthread_create(&t, NULL, kb_mover, self), 0);
	while (!__atomic_load_n(&self->stop, __ATOMIC_ACQUIRE) &&
	       (__atomic_load_n(&self->rounds, __ATOMIC_ACQUIRE) < KB_ROUNDS ||
		now_ms() - start < KB_MIN_MS) &&
	       now_ms() - start < KB_MS) {
		seq_begin(&self->seqs, &s);
		if (pread(pm, &e, sizeof(e), off) != sizeof(e))
			break;
		seq_end(&self->seqs, &s);
		reads++;
		if (e & (PM_PRESENT | PM_SWAP))
			continue;
		/* Both ran: it tells nothing. */
		if (!s.to_dev || !s.to_sys) {
			hole = true;
			break;
		}
	}
	__atomic_store_n(&self->stop, true, __ATOMIC_RELEASE);
	pthread_join(t, NULL);
	close(pm);
	TH_LOG("%lu ms: %lu rounds to the device and back, %lu pagemap reads",
	       now_ms() - start, self->rounds, reads);
	ASSERT_EQ(self->err, 0) TH_LOG("a migration: %s", strerror(-self->err));
	ASSERT_GT(self->rounds, 0);
	/* Back in system memory, every page as it was. */
	ASSERT_EQ(hmm_folio_cmd(self->fd, HMM_DMIRROR_MIGRATE_TO_SYS, self->p,
				NULL, self->size / psize(), NULL), 0);
	ASSERT_EQ(hmm_folio_check_tags(self->p, self->size, (uintptr_t)self->p,
				       1, "after the migrations"), 0);
	HMM_FOLIO_STEP_DONE("pagemap reads racing migrations");
	if (hole && s.to_sys && !s.to_dev)
		HMM_FOLIO_XFAIL_KNOWN("set_pmd_migration_entry_pmd_none",
				      "pagemap read a hole (%#llx) in a THP migrating back from the device, after %lu reads",
				      (unsigned long long)e, reads);
	ASSERT_FALSE(hole)
		TH_LOG("pagemap read a hole (%#llx) %s", (unsigned long long)e,
		       s.to_dev ? "while a migration to the device ran" :
		       "while no migration ran");
	if (self->rounds < KB_ROUNDS)
		SKIP(return, "no hole in %lu rounds of %d in %u ms: too slow to tell",
		     self->rounds, KB_ROUNDS, KB_MS);
}

TEST_HARNESS_MAIN
