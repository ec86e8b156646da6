/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Helpers shared by the device-private large folio tests: the test_hmm
 * device, per-page tags, and the kernel log watch every lifecycle test ends
 * with.
 */
#ifndef __HMM_FOLIO_UTIL_H__
#define __HMM_FOLIO_UTIL_H__

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <lib/test_hmm_uapi.h>

/* Snapshot value of a page the device holds as part of a PMD-mapped folio. */
#define HMM_FOLIO_PROT_DEV_PMD	(HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | \
				 HMM_DMIRROR_PROT_PMD | HMM_DMIRROR_PROT_WRITE)
/* ... and of a page the device holds mapped by a PTE. */
#define HMM_FOLIO_PROT_DEV_PTE	(HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | \
				 HMM_DMIRROR_PROT_WRITE)
/* The same, mapped read-only (mprotect, soft-dirty write protection). */
#define HMM_FOLIO_PROT_DEV_PMD_RO (HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | \
				   HMM_DMIRROR_PROT_PMD | HMM_DMIRROR_PROT_READ)
#define HMM_FOLIO_PROT_DEV_PTE_RO (HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | \
				   HMM_DMIRROR_PROT_READ)

/*
 * Setup probes return 0 when ready, HMM_FOLIO_SKIP when this machine lacks
 * what a test needs (@why then names that environment reason: a SKIP, which
 * the runner's verdict accepts only if the run declared it), or -errno when
 * something that must work failed (@why names it: a FAIL).
 */
#define HMM_FOLIO_SKIP	1

/* In a FIXTURE_SETUP or TEST: SKIP or fail on what a probe returned. */
#define HMM_FOLIO_REQUIRE(probe, why) do {				\
	int __ret = (probe);						\
									\
	if (__ret == HMM_FOLIO_SKIP)					\
		SKIP(return, "%s", why);				\
	ASSERT_EQ(__ret, 0)						\
		TH_LOG("%s: %s", why, strerror(-__ret));		\
} while (0)

/*
 * Open /dev/hmm_dmirror<unit>. Returns the fd, or -errno with @why set to
 * what went wrong.
 */
int hmm_folio_open(int unit, const char **why);
/* The same as a probe: no device or not root is a SKIP, else a FAIL. */
int hmm_folio_open_probe(int unit, int *fd, const char **why);

/* One ioctl on the mirror, restarted on EINTR. Returns 0 or -errno. */
int hmm_folio_cmd(int fd, unsigned long request, void *addr, void *mirror,
		  unsigned long npages, struct hmm_dmirror_cmd *out);

/*
 * The hmm-folio extension of test_hmm (lib/test_hmm patches), as a probe: a
 * stock test_hmm answers ALLOC_STATS with ENOTTY, or with EINVAL when its
 * dispatch predates patch 0001 (7.2, 7.3: it answers every unknown command
 * so); that is a SKIP. Any other error, or EINVAL from a module that has
 * patch 0001, is a FAIL.
 */
int hmm_folio_ext_probe(int fd, const char **why);
int hmm_folio_set_policy(int fd, unsigned int policy, unsigned int *old);
int hmm_folio_stats(int fd, struct hmm_dmirror_alloc_stats *st);
/* Device page offset and folio order of each page of [addr, +npages). */
int hmm_folio_devpfn(int fd, void *addr, unsigned long npages,
		     struct hmm_dmirror_devpfn *out);
/*
 * Folio invariants (HMM_DMIRROR_CHECK with @flags); returns the number of
 * violations (printing the first) or -errno.
 */
long hmm_folio_check_invariants(int fd, unsigned int flags, __u64 handle,
				void *addr, unsigned long npages);
/*
 * HMM_DMIRROR_SNAPSHOT of [addr, +npages): every page must read @want, or,
 * for HMM_FOLIO_SNAP_SYSTEM, be mapped system memory (readable or writable,
 * not device, not the zero page), or for HMM_FOLIO_SNAP_INVISIBLE, be
 * nothing this device can map. Returns the number of pages that do not
 * (printing the first) or -errno.
 */
#define HMM_FOLIO_SNAP_SYSTEM	0x100
/* Not mapped for this device: NONE, or ERROR (an absent PMD, mm/hmm.c). */
#define HMM_FOLIO_SNAP_INVISIBLE	0x101
long hmm_folio_snapshot_expect(int fd, void *addr, unsigned long npages,
			       unsigned int want, const char *what);

/* HMM_DMIRROR_FOLIO_* on @cmd; returns 0 or -errno. */
int hmm_folio_direct_folio(int fd, unsigned long request,
			   struct hmm_dmirror_folio_cmd *cmd);
/*
 * Direct folios on the device memory at [base, +npages) (device page
 * offsets): one order-@order folio at each aligned offset, taken with
 * HMM_DMIRROR_FOLIO_AT_OFFSET, checked fresh, filled, verified (data and
 * order), the held folios checked, then all freed. Returns 0, -errno of the
 * first ioctl that failed, or the number of bad pages or violations
 * (printing what went wrong). Folios still held after a failure are freed
 * when @fd is closed.
 */
long hmm_folio_direct_cycle(int fd, __u64 base, unsigned long npages,
			    unsigned int order);

/*
 * Tags: every 64-bit word of a page holds a value derived from the word's
 * user address and a generation, so a page that shows up at the wrong
 * address, a stale page from an earlier generation and a partly copied page
 * are all told apart from the right one.
 */
uint64_t hmm_folio_tag(uintptr_t addr, unsigned int gen);
void hmm_folio_fill(void *buf, size_t size, uintptr_t addr, unsigned int gen);

/*
 * Check @size bytes at @buf against the tags of user address @addr (which
 * may differ from @buf when checking a device mirror copy). Returns the
 * number of bad pages and prints the first bad word.
 */
unsigned long hmm_folio_check_tags(const void *buf, size_t size, uintptr_t addr,
				   unsigned int gen, const char *what);

/* Pages of [p, +size) that are not all zero (printing the first). */
unsigned long hmm_folio_nonzero_pages(const void *p, size_t size);

/* Map @size bytes, @size aligned, with MADV_HUGEPAGE. NULL on failure. */
void *hmm_folio_map_aligned(size_t size);
bool hmm_folio_is_thp(void *addr, size_t size);
/* @field ("Rss:") of the smaps entry of the VMA at @addr in kB, or -1. */
long hmm_folio_smaps_kb(void *addr, const char *field);
/*
 * Whether a store of @v to @addr gets SIGSEGV (caught; the SIGSEGV action
 * is restored). Each thread jumps back through its own buffer, but the
 * action is the process's: no other thread may fault meanwhile.
 */
bool hmm_folio_write_faults(uint64_t *addr, uint64_t v);
void hmm_folio_unmap_aligned(void *p, size_t size);
/* A counter of the THP size of @order: hugepages-<kB>kB/stats/@name. */
unsigned long hmm_folio_size_stat(unsigned int order, const char *name);
/*
 * Only the anonymous THP size of @order enabled ("inherit"), every other
 * size, the PMD size too, "never"; @order 0: none at all, small pages.
 * hmm_folio_thp_setup() restores them all at exit.
 */
void hmm_folio_thp_only(unsigned int order);
/*
 * The lifecycle steps the programs' tables combine. Each checks what
 * belongs to it and the kernel log since the last step, prints what went
 * wrong and returns 0, or the number of problems, or -errno.
 */

/* How a device folio is freed (each program uses some of them). */
enum free_how {
	FREE_MUNMAP,		/* zap of the device PMD on munmap */
	FREE_MUNMAP_PARTIAL,	/* half unmapped (PMD split), then the rest */
	FREE_DONTNEED,		/* MADV_DONTNEED, VMA kept: must read zero */
	FREE_MADV_FREE,		/* MADV_FREE (kept on the device), then munmap */
	FREE_MREMAP,		/* moved by mremap, checked there, then munmap */
	FREE_EXIT,		/* exit_mmap() of the process that owns it */
	FREE_FORK,		/* shared with a child after fork; both let go */
	FREE_RELEASE,		/* device release evicts it to system memory */
	FREE_CLOSE,		/* its device's fd closed: evicted to the CPU */
};

/* How device memory comes back to system memory. */
enum back_how {
	BACK_READ,		/* CPU read fault of the device entry */
	BACK_WRITE,		/* CPU write fault, new generation */
	BACK_MIGRATE,		/* HMM_DMIRROR_MIGRATE_TO_SYS of the range */
	BACK_DEVICE_READ,	/* read through the mirror first, then CPU read */
	BACK_PTE,		/* MIGRATE_TO_SYS of one page (splits a PMD), then the rest */
	BACK_DEVICE_WRITE,	/* new generation written through the mirror, then CPU read */
};

/*
 * @size bytes of new anonymous memory, @size aligned and its own VMA,
 * tagged with @gen: a PMD-sized THP (checked in smaps) or, !@thp, small
 * pages (MADV_NOHUGEPAGE). NULL (printing why, nothing left mapped).
 */
char *hmm_folio_new_range(size_t size, bool thp, unsigned int gen);

/*
 * MIGRATE_TO_DEV of [p, +size) through @fd: every page taken, the device
 * copy in @mirror (@size bytes) holding the tags of @gen, SNAPSHOT showing
 * @snap for every page (0: not checked), the kernel log quiet.
 */
long hmm_folio_to_device(int fd, char *p, size_t size, void *mirror,
			 unsigned int gen, unsigned int snap);

/*
 * Bring [p, +size) back to system memory as @how says (not BACK_PTE, which
 * needs the extension), *@gen updated by the writes: the tags of *@gen
 * read by the CPU, SNAPSHOT showing system memory, the kernel log quiet.
 */
long hmm_folio_back(int fd, char *p, size_t size, void *mirror,
		    unsigned int *gen, enum back_how how);

/* MADV_DONTNEED of [p, +size): the device folio must not come back. */
long hmm_folio_dontneed(char *p, size_t size);

/*
 * fork() of a process that is to own device memory and exit with it. A
 * mirror serves the mm that opened it: the child reopens the mirrors
 * fds[0 .. n - 1] (of units 0 .. n - 1), or exits 1. Returns the pid, 0 in
 * the child, or -errno.
 */
pid_t hmm_folio_fork_owner(int *fds, int n);
/*
 * Wait for that child: it must exit 0 (its status is printed otherwise),
 * and its exit, which freed what it owned, must leave the kernel log quiet.
 */
long hmm_folio_wait_owner(pid_t pid);

/* In a test: hmm_folio_new_range(), or the test fails. */
#define HMM_FOLIO_NEW_RANGE(size, thp, gen) ({				\
	char *__p = hmm_folio_new_range(size, thp, gen);		\
									\
	ASSERT_NE(__p, NULL);						\
	__p;								\
})

/*
 * A new THP of @size bytes, tagged with generation @gen, migrated through
 * @fd to the device as one PMD folio (hmm_folio_to_device(), a writable
 * device PMD). NULL (printing why, the range unmapped) otherwise.
 */
char *hmm_folio_thp_on_device(int fd, size_t size, unsigned int gen);

/*
 * Make MADV_HUGEPAGE regions get PMD-sized THPs. The settings in force at
 * program start are saved by the first call in the harness process and
 * restored at its exit, whatever the tests did. A probe: no THP in this
 * kernel or not root is a SKIP.
 */
int hmm_folio_thp_setup(const char **why);

/*
 * Kernel log watch: hmm_folio_kmsg_begin() (a probe) remembers the end of
 * the kernel log and the taint mask; hmm_folio_kmsg_check() reads what the
 * kernel logged since, prints every line that looks like a splat and returns how many
 * there were (a new taint counts as one).
 */
struct hmm_folio_kmsg {
	int fd;
	unsigned long taint;
	long long dirty_frees;	/* fixtures: ALLOC_STATS baseline, or -1 */
};

int hmm_folio_kmsg_begin(struct hmm_folio_kmsg *k, const char **why);
int hmm_folio_kmsg_check(struct hmm_folio_kmsg *k);
void hmm_folio_kmsg_end(struct hmm_folio_kmsg *k);

/*
 * The kernel log after every step: hmm_folio_fixture_open() makes its watch
 * the test's, and hmm_folio_step_check() reads what the kernel logged (and
 * newly tainted) since the last check, printing each splat with the @step
 * it happened in; it returns how many. The util's lifecycle steps call it
 * before they return, the programs' steps end with HMM_FOLIO_STEP_DONE().
 * What a step reported, the fixture's last check does not count again.
 */
int hmm_folio_step_check(const char *step);

#define HMM_FOLIO_STEP_DONE(step)					\
	ASSERT_EQ(hmm_folio_step_check(step), 0)			\
		TH_LOG("the kernel logged a splat during: %s", step)

/*
 * What every fixture opens: the kernel log watch, /dev/hmm_dmirror0 and,
 * per @needs, the hmm-folio extension and PMD-sized THP. A probe (0,
 * HMM_FOLIO_SKIP or -errno, with @why). hmm_folio_fixture_close() closes them and returns the
 * number of splats the kernel logged in between; device folios that test_hmm
 * saw freed dirty (ALLOC_STATS dirty_frees, when the extension is loaded)
 * count as one more.
 */
#define HMM_FOLIO_NEED_EXT	(1U << 0)
#define HMM_FOLIO_NEED_THP	(1U << 1)
#define HMM_FOLIO_NEED_ALL	(HMM_FOLIO_NEED_EXT | HMM_FOLIO_NEED_THP)
int hmm_folio_fixture_open(struct hmm_folio_kmsg *k, int *fd,
			   unsigned int needs, const char **why);
int hmm_folio_fixture_close(struct hmm_folio_kmsg *k, int *fd);

/*
 * For a fixture teardown: a splat fails the test. Not ASSERT, since teardown
 * also runs from the bail-out of a failed assertion.
 */
#define HMM_FOLIO_FAIL_ON_SPLATS(splats) do {				\
	int __n = (splats);						\
									\
	if (__n) {							\
		TH_LOG("the kernel logged %d splat(s) during the test",	\
		       __n);						\
		abort();						\
	}								\
} while (0)

/*
 * A known kernel bug (selftests/fixes/known-bugs), seen by its exact
 * symptom: the test reports XFAIL "known bug <id>: <what it saw>" and ends.
 * Any other failure of the test stays a FAIL; when it passes, the kernel
 * has the fix (the verdict says so). A splat still fails it in teardown.
 */
#define HMM_FOLIO_XFAIL_KNOWN(id, fmt, ...) do {			\
	snprintf(_metadata->results->reason,				\
		 sizeof(_metadata->results->reason),			\
		 "known bug %s: " fmt, id, ##__VA_ARGS__);		\
	_metadata->exit_code = KSFT_XFAIL;				\
	_metadata->trigger = 0;						\
	return;								\
} while (0)

/* Whether the page at @page holds the tags of user address @addr, @gen. */
bool hmm_folio_page_is(const void *page, uintptr_t addr, unsigned int gen);

/*
 * A test's harness timeout, @sec seconds times HMM_FOLIO_TIMEOUT_SCALE
 * (1..100, default 1): a kernel with lockdep and KASAN under TCG (run_tests.sh
 * --debug full) runs the same tests many times slower. The harness timeout
 * also gives up on a test stuck in the kernel: never disable it.
 */
#define HMM_FOLIO_TIMEOUT(sec)	((sec) * hmm_folio_timeout_scale())
unsigned int hmm_folio_timeout_scale(void);

/*
 * Whether the running kernel's config sets @opt ("CONFIG_KASAN") to y: 1 or
 * 0, or -1 when there is none to read (/boot/config-RELEASE, which the
 * runner's guest has, or /proc/config.gz).
 */
int hmm_folio_config_has(const char *opt);

/*
 * For the race tests: pin the calling thread to @cpu when there are two
 * CPUs or more (each side of a race on its own vCPU), and CLOCK_MONOTONIC
 * in microseconds.
 */
void hmm_folio_pin_cpu(int cpu);
unsigned long hmm_folio_mono_us(void);

/*
 * clear_refs 4 of the calling process: soft-dirty cleared (and present
 * entries write-protected) everywhere. 0 or -errno, from any thread.
 */
int hmm_folio_clear_soft_dirty(void);

/*
 * The watch over a race of two threads that count their rounds in
 * @rounds[0] and @rounds[1] (each a pair of counters, read __atomic) and
 * add themselves to @exited (__atomic) when they return: after @ms it sets
 * @stop (__atomic) and waits for both to exit; with @need, only once each
 * non-NULL @need[i] is nonzero too (a thread slowed down by the other
 * gets up to 4 * @ms for a round that counts). Returns the milliseconds
 * it ran, or 0 when thread 0 or 1 (*@stuck) did no round for @stall_ms,
 * after printing each thread's /proc stack as "# " lines: a thread stuck
 * in the kernel cannot be joined, the caller fails.
 */
unsigned long hmm_folio_race_watch(bool *stop, int *exited,
				   unsigned long *const rounds[2][2],
				   unsigned long *const need[2],
				   unsigned long ms, unsigned long stall_ms,
				   int *stuck);

/* Returns the splat pattern @line matches, or NULL. */
const char *hmm_folio_splat(const char *line);

#endif /* __HMM_FOLIO_UTIL_H__ */
