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

/*
 * Open /dev/hmm_dmirror<unit>. Returns the fd, or -errno with @why set to a
 * reason fit for a SKIP (device missing, not root).
 */
int hmm_folio_open(int unit, const char **why);

/* One ioctl on the mirror, restarted on EINTR. Returns 0 or -errno. */
int hmm_folio_cmd(int fd, unsigned long request, void *addr, void *mirror,
		  unsigned long npages, struct hmm_dmirror_cmd *out);

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

/* Map @size bytes, @size aligned, with MADV_HUGEPAGE. NULL on failure. */
void *hmm_folio_map_aligned(size_t size);
void hmm_folio_unmap_aligned(void *p, size_t size);

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
};

int hmm_folio_kmsg_begin(struct hmm_folio_kmsg *k, const char **why);
int hmm_folio_kmsg_check(struct hmm_folio_kmsg *k);
void hmm_folio_kmsg_end(struct hmm_folio_kmsg *k);

/* Returns the splat pattern @line matches, or NULL. */
const char *hmm_folio_splat(const char *line);

#endif /* __HMM_FOLIO_UTIL_H__ */
