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
 * Open /dev/hmm_dmirror<unit>. Returns the fd, or -errno with @why set to a
 * reason fit for a SKIP (device missing, not root).
 */
int hmm_folio_open(int unit, const char **why);

/* One ioctl on the mirror, restarted on EINTR. Returns 0 or -errno. */
int hmm_folio_cmd(int fd, unsigned long request, void *addr, void *mirror,
		  unsigned long npages, struct hmm_dmirror_cmd *out);

/*
 * The hmm-folio extension of test_hmm (lib/test_hmm patches). A stock
 * test_hmm answers its ioctls with ENOTTY (or EINVAL before 7.2's fix):
 * hmm_folio_ext_check() then fails with @why fit for a SKIP.
 */
bool hmm_folio_ext_check(int fd, const char **why);
int hmm_folio_set_policy(int fd, unsigned int policy, unsigned int *old);
int hmm_folio_stats(int fd, struct hmm_dmirror_alloc_stats *st);
/* Device page offset and folio order of each page of [addr, +npages). */
int hmm_folio_devpfn(int fd, void *addr, unsigned long npages,
		     struct hmm_dmirror_devpfn *out);
/*
 * Folio invariants (HMM_DMIRROR_CHECK with @flags); returns the number of
 * violations (printing the first) or -errno.
 */
long hmm_folio_check_folios(int fd, unsigned int flags, __u64 handle,
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
int hmm_folio_folio(int fd, unsigned long request,
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
unsigned long hmm_folio_check(const void *buf, size_t size, uintptr_t addr,
			      unsigned int gen, const char *what);

/* Pages of [p, +size) that are not all zero (printing the first). */
unsigned long hmm_folio_nonzero_pages(const void *p, size_t size);

/* Map @size bytes, @size aligned, with MADV_HUGEPAGE. NULL on failure. */
void *hmm_folio_map_aligned(size_t size);
bool hmm_folio_is_thp(void *addr, size_t size);
void hmm_folio_unmap_aligned(void *p, size_t size);
/*
 * A new THP of @size bytes, tagged with generation @gen, migrated through
 * @fd to the device as one PMD folio: MIGRATE_TO_DEV must take every page,
 * the device copy must hold the tags, and SNAPSHOT must show a writable
 * device PMD. NULL (printing why, the range unmapped) otherwise.
 */
char *hmm_folio_thp_on_device(int fd, size_t size, unsigned int gen);

/*
 * Make MADV_HUGEPAGE regions get PMD-sized THPs. The settings in force at
 * program start are saved by the first call in the harness process and
 * restored at its exit, whatever the tests did. Returns false (with @why)
 * when THP is not available.
 */
bool hmm_folio_thp_setup(const char **why);

/*
 * Kernel log watch: hmm_folio_kmsg_begin() remembers the end of the kernel
 * log and the taint mask; hmm_folio_kmsg_check() reads what the kernel logged
 * since, prints every line that looks like a splat and returns how many
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
 * What every fixture opens: the kernel log watch, /dev/hmm_dmirror0 and,
 * per @needs, the hmm-folio extension and PMD-sized THP. Returns false with
 * @why fit for a SKIP. hmm_folio_fixture_close() closes them and returns the
 * number of splats the kernel logged in between; device folios that test_hmm
 * saw freed dirty (ALLOC_STATS dirty_frees, when the extension is loaded)
 * count as one more.
 */
#define HMM_FOLIO_NEED_EXT	(1U << 0)
#define HMM_FOLIO_NEED_THP	(1U << 1)
bool hmm_folio_fixture_open(struct hmm_folio_kmsg *k, int *fd,
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

/* Returns the splat pattern @line matches, or NULL. */
const char *hmm_folio_splat(const char *line);

#endif /* __HMM_FOLIO_UTIL_H__ */
