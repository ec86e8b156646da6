// SPDX-License-Identifier: GPL-2.0
/*
 * Every anonymous THP size, and the kernel's accounting read back.
 *
 * mthp.<order>: like cow.c, one anonymous THP size at a time, enabled
 * alone (every other size, the PMD size too, set to never): a PMD-sized
 * range faulted in as folios of that order (the size's anon_fault_alloc
 * and nr_anon counters say so, smaps counts no PMD THP), migrated to the
 * device, faulted back, migrated again and freed there; then the freed
 * device memory is used at other orders (direct folios of the row's order
 * and of the PMD order on the same pages). migrate_vma splits an mTHP on
 * its way to the device: what arrives is order 0 (DEVPFN), the size's
 * split counter counts every folio, and nr_anon goes back to what it was.
 * Tags, SNAPSHOT and the kernel log after every step.
 *
 * account.<free>: a PMD THP's life, with the counters that must follow it
 * read back after every step: the PMD size's nr_anon (a device THP is an
 * anonymous THP too), smaps' AnonHugePages (a PMD THP in system memory,
 * and after fault-back one again, not 512 pages), RssAnon (the device's
 * pages are still the process's anonymous memory), smaps_rollup's Rss and
 * AnonHugePages (the device THP counted in both), the device's free pages
 * and its folios allocated and freed per order (ALLOC_STATS: one PMD-order
 * folio per migration to the device, freed by the fault-back or the free,
 * none of any other order). Once the folio is freed (munmap, MADV_DONTNEED, exit of its
 * owner), everything is back where it was before the range existed.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "kselftest_harness.h"
#include "vm_util.h"
#include "hugepage_settings.h"
#include "hmm_folio_util.h"

/* @field ("RssAnon:") of a /proc/self file in kB, or -1. */
static long proc_kb(const char *path, const char *field)
{
	size_t len = strlen(field);
	char line[128];
	long kb = -1;
	FILE *f = fopen(path, "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, field, len) &&
		    sscanf(line + len, " %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

/* ------------------------------------------------------------------------ */

FIXTURE(mthp)
{
	struct hmm_folio_kmsg kmsg;
	int fd;
	unsigned int old_policy;
	bool policy_set;
	size_t size;
	unsigned long npages;
	unsigned int pmd_order;
	void *mirror;
	struct hmm_dmirror_devpfn *pfns;
};

FIXTURE_VARIANT(mthp)
{
	unsigned int order;
};

FIXTURE_VARIANT_ADD(mthp, order2) { .order = 2 };
FIXTURE_VARIANT_ADD(mthp, order3) { .order = 3 };
FIXTURE_VARIANT_ADD(mthp, order4) { .order = 4 };
FIXTURE_VARIANT_ADD(mthp, order5) { .order = 5 };
FIXTURE_VARIANT_ADD(mthp, order6) { .order = 6 };
FIXTURE_VARIANT_ADD(mthp, order7) { .order = 7 };
FIXTURE_VARIANT_ADD(mthp, order8) { .order = 8 };

FIXTURE_SETUP(mthp)
{
	const char *why = NULL;

	self->mirror = NULL;
	self->pfns = NULL;
	self->policy_set = false;
	HMM_FOLIO_REQUIRE(hmm_folio_fixture_open(&self->kmsg, &self->fd,
						 HMM_FOLIO_NEED_ALL, &why), why);
	self->size = read_pmd_pagesize();
	self->npages = self->size / psize();
	self->pmd_order = sz2ord(self->size, psize());
	/* Below the PMD order every anonymous size but order 1 exists. */
	ASSERT_LT(variant->order, self->pmd_order);
	ASSERT_TRUE(thp_supported_orders() & (1UL << variant->order))
		TH_LOG("no %lukB anonymous THP size in this kernel",
		       ((unsigned long)psize() << variant->order) >> 10);
	hmm_folio_thp_only(variant->order);
	self->mirror = malloc(self->size);
	self->pfns = calloc(self->npages, sizeof(*self->pfns));
	ASSERT_NE(self->mirror, NULL);
	ASSERT_NE(self->pfns, NULL);
	ASSERT_EQ(hmm_folio_set_policy(self->fd, HMM_DMIRROR_POLICY_LOWEST,
				       &self->old_policy), 0);
	self->policy_set = true;
}

FIXTURE_TEARDOWN(mthp)
{
	int splats;

	if (self->policy_set)
		hmm_folio_set_policy(self->fd, self->old_policy, NULL);
	splats = hmm_folio_fixture_close(&self->kmsg, &self->fd);
	free(self->mirror);
	free(self->pfns);
	HMM_FOLIO_FAIL_ON_SPLATS(splats);
}

/*
 * To the device: every page taken, as order-0 device folios (migrate_vma
 * splits an mTHP first: the size's split counter counts each) or, on a
 * kernel that moves them whole, as folios of the row's order at aligned
 * device offsets; small pages (!@mthps) as order 0, nothing split. Returns
 * the lowest device offset.
 */
static __u64 mthp_to_device(struct __test_metadata *_metadata,
			    FIXTURE_DATA(mthp) *self, unsigned int order,
			    char *p, unsigned int gen, bool mthps)
{
	unsigned long nfolios = self->npages >> order, i;
	unsigned long splits = hmm_folio_size_stat(order, "split");
	unsigned int got;
	__u64 base = HMM_DMIRROR_DEVPFN_NONE;

	ASSERT_EQ(hmm_folio_to_device(self->fd, p, self->size, self->mirror,
				      gen, HMM_FOLIO_PROT_DEV_PTE), 0);
	ASSERT_EQ(hmm_folio_devpfn(self->fd, p, self->npages, self->pfns), 0);
	got = self->pfns[0].order;
	ASSERT_TRUE(got == 0 || got == order)
		TH_LOG("page 0 arrived as order %u, from order %u", got, order);
	for (i = 0; i < self->npages; i++) {
		ASSERT_NE(self->pfns[i].offset, HMM_DMIRROR_DEVPFN_NONE);
		ASSERT_EQ(self->pfns[i].order, got) TH_LOG("page %lu", i);
		/* A whole folio: its pages in order, from an aligned head. */
		if (got && (i & ((1UL << got) - 1)))
			ASSERT_EQ(self->pfns[i].offset, self->pfns[i - 1].offset + 1);
		if (got && !(i & ((1UL << got) - 1)))
			ASSERT_EQ(self->pfns[i].offset & ((1UL << got) - 1), 0);
		if (self->pfns[i].offset < base)
			base = self->pfns[i].offset;
	}
	/* Each folio split once on the way, or none (@mthps: none to split). */
	ASSERT_EQ(hmm_folio_size_stat(order, "split") - splits, got || !mthps ? 0 : nfolios);
	TH_LOG("order-%u folios arrive on the device as order %u", order, got);
	HMM_FOLIO_STEP_DONE("mTHP to the device");
	return base;
}

TEST_F_TIMEOUT(mthp, lifecycle, HMM_FOLIO_TIMEOUT(60))
{
	const unsigned int order = variant->order;
	unsigned long nfolios = self->npages >> order;
	unsigned long alloc0 = hmm_folio_size_stat(order, "anon_fault_alloc");
	unsigned long anon0 = hmm_folio_size_stat(order, "nr_anon");
	struct hmm_dmirror_alloc_stats st;
	unsigned int gen = 1;
	unsigned long i;
	__u64 base;
	char *p;

	/* Faulted in as folios of this order, one fault each. */
	p = hmm_folio_map_aligned(self->size);
	ASSERT_NE(p, NULL);
	hmm_folio_fill(p, self->size, (uintptr_t)p, gen);
	ASSERT_EQ(hmm_folio_size_stat(order, "anon_fault_alloc") - alloc0, nfolios);
	ASSERT_EQ(hmm_folio_size_stat(order, "nr_anon") - anon0, nfolios);
	ASSERT_EQ(hmm_folio_smaps_kb(p, "AnonHugePages:"), 0);
	HMM_FOLIO_STEP_DONE("faulting the mTHPs in");

	mthp_to_device(_metadata, self, order, p, gen, true);
	/* Split or moved, none is left in system memory. */
	ASSERT_EQ(hmm_folio_size_stat(order, "nr_anon") - anon0,
		  self->pfns[0].order ? nfolios : 0);

	/* Back by CPU faults: small pages (nothing of this size comes back). */
	ASSERT_EQ(hmm_folio_back(self->fd, p, self->size, self->mirror, &gen,
				 BACK_READ), 0);
	ASSERT_EQ(hmm_folio_size_stat(order, "nr_anon"), anon0);
	ASSERT_EQ(hmm_folio_smaps_kb(p, "Rss:"), (long)(self->size >> 10));

	/* Again, freed there, its memory used at other orders. */
	base = mthp_to_device(_metadata, self, order, p, gen, false);
	ASSERT_EQ(munmap(p, self->size), 0);
	ASSERT_EQ(hmm_folio_size_stat(order, "nr_anon"), anon0);
	ASSERT_EQ(hmm_folio_stats(self->fd, &st), 0);
	ASSERT_EQ(st.free_pages, st.total_pages);
	HMM_FOLIO_STEP_DONE("freeing them on the device");
	/* LOWEST: one aligned block, unless the device was in use. */
	for (i = 0; i < self->npages; i++)
		if (self->pfns[i].offset != base + i)
			break;
	if (i == self->npages && !(base % self->npages)) {
		ASSERT_EQ(hmm_folio_direct_cycle(self->fd, base, self->npages,
						 order), 0);
		ASSERT_EQ(hmm_folio_direct_cycle(self->fd, base, self->npages,
						 self->pmd_order), 0);
	} else {
		TH_LOG("device pages not one block from %#llx: no reuse at other orders",
		       (unsigned long long)base);
	}
	HMM_FOLIO_STEP_DONE("reusing the device memory at other orders");
}

/* ------------------------------------------------------------------------ */

FIXTURE(account)
{
	struct hmm_folio_kmsg kmsg;
	int fd;
	size_t size;
	unsigned long npages;
	unsigned int pmd_order;
	void *mirror;
};

FIXTURE_VARIANT(account)
{
	enum free_how free;
};

FIXTURE_VARIANT_ADD(account, munmap) { .free = FREE_MUNMAP };
FIXTURE_VARIANT_ADD(account, dontneed) { .free = FREE_DONTNEED };
FIXTURE_VARIANT_ADD(account, exit) { .free = FREE_EXIT };

FIXTURE_SETUP(account)
{
	const char *why = NULL;

	self->mirror = NULL;
	HMM_FOLIO_REQUIRE(hmm_folio_fixture_open(&self->kmsg, &self->fd,
						 HMM_FOLIO_NEED_ALL, &why), why);
	self->size = read_pmd_pagesize();
	self->npages = self->size / psize();
	self->pmd_order = sz2ord(self->size, psize());
	self->mirror = malloc(self->size);
	ASSERT_NE(self->mirror, NULL);
}

FIXTURE_TEARDOWN(account)
{
	int splats = hmm_folio_fixture_close(&self->kmsg, &self->fd);

	free(self->mirror);
	HMM_FOLIO_FAIL_ON_SPLATS(splats);
}

/*
 * The counters: the PMD size's nr_anon, RssAnon, smaps_rollup's Rss and
 * AnonHugePages (a device-private PMD of an anonymous folio counts in both,
 * fs/proc/task_mmu.c), the device's free pages and its PMD-order folios
 * allocated and freed (ALLOC_STATS).
 */
struct counts {
	unsigned long nr_anon;
	long rss_kb;
	long rollup_rss_kb;
	long rollup_thp_kb;
	unsigned long dev_free;
	unsigned long long allocs[HMM_DMIRROR_STATS_ORDERS];
	unsigned long long frees[HMM_DMIRROR_STATS_ORDERS];
};

/* What they must say against the base: */
struct expect {
	int thps;		/* PMD THPs of the process, anywhere */
	int on_dev;		/* of them, on the device */
	int allocs, frees;	/* PMD-order device folios since the base */
};

static void read_counts(FIXTURE_DATA(account) *self, struct counts *c)
{
	struct hmm_dmirror_alloc_stats st = { 0 };
	unsigned int i;

	c->nr_anon = hmm_folio_size_stat(self->pmd_order, "nr_anon");
	c->rss_kb = proc_kb("/proc/self/status", "RssAnon:");
	c->rollup_rss_kb = proc_kb("/proc/self/smaps_rollup", "Rss:");
	c->rollup_thp_kb = proc_kb("/proc/self/smaps_rollup",
				    "AnonHugePages:");
	c->dev_free = hmm_folio_stats(self->fd, &st) ? 0 : st.free_pages;
	for (i = 0; i < HMM_DMIRROR_STATS_ORDERS; i++) {
		c->allocs[i] = st.allocs[i];
		c->frees[i] = st.frees[i];
	}
}

/* A counter off what @base and @e imply: printed, counted. */
static long count_off(const char *step, const char *what, long long now,
		      long long want, long long slack)
{
	if (now >= want - slack && now <= want + slack)
		return 0;
	fprintf(stderr, "# %s: %s %lld, expected %lld\n", step, what, now,
		want);
	return 1;
}

static long counts_off(FIXTURE_DATA(account) *self, const struct counts *base,
		       struct expect e, const char *step)
{
	long kb = (long)(self->size >> 10) * e.thps, bad;
	struct counts now;
	unsigned int i;

	read_counts(self, &now);
	bad = count_off(step, "nr_anon", now.nr_anon, base->nr_anon + e.thps, 0);
	/* Other anonymous memory of this process may move by a few pages. */
	bad += count_off(step, "RssAnon kB", now.rss_kb, base->rss_kb + kb, 64);
	bad += count_off(step, "smaps_rollup Rss kB", now.rollup_rss_kb,
			 base->rollup_rss_kb + kb, 64);
	bad += count_off(step, "smaps_rollup AnonHugePages kB",
			 now.rollup_thp_kb, base->rollup_thp_kb + kb, 0);
	bad += count_off(step, "device pages free", now.dev_free,
			 base->dev_free - e.on_dev * self->npages, 0);
	for (i = 0; i < HMM_DMIRROR_STATS_ORDERS; i++) {
		int pmd = i == self->pmd_order;

		bad += count_off(step, "device folios allocated",
				 now.allocs[i] - base->allocs[i],
				 pmd ? e.allocs : 0, 0);
		bad += count_off(step, "device folios freed",
				 now.frees[i] - base->frees[i],
				 pmd ? e.frees : 0, 0);
	}
	return bad;
}

/*
 * The THP's life in the process that owns it, the counters after every
 * step; returns the problems. FREE_EXIT ends before the free: the owner is
 * a child, its exit frees the THP, the parent checks.
 */
static long account_life(FIXTURE_DATA(account) *self, enum free_how free)
{
	struct counts base;
	unsigned int gen = 1;
	long bad;
	char *p;

	/* The device copy's buffer, faulted in before the count. */
	memset(self->mirror, 0, self->size);
	read_counts(self, &base);
	p = hmm_folio_new_range(self->size, true, gen);
	if (!p)
		return 1;
	bad = counts_off(self, &base, (struct expect){ 1, 0, 0, 0 },
			 "a new THP");
	bad += hmm_folio_to_device(self->fd, p, self->size, self->mirror, gen,
				   HMM_FOLIO_PROT_DEV_PMD) ? 1 : 0;
	bad += counts_off(self, &base, (struct expect){ 1, 1, 1, 0 },
			  "on the device");
	/* Back by a CPU fault: one PMD THP again, not 512 pages. */
	bad += hmm_folio_back(self->fd, p, self->size, self->mirror, &gen,
			      BACK_READ) ? 1 : 0;
	if (hmm_folio_smaps_kb(p, "AnonHugePages:") != (long)(self->size >> 10))
		bad += fprintf(stderr, "# faulted back: AnonHugePages %ld kB\n",
			       hmm_folio_smaps_kb(p, "AnonHugePages:")) > 0;
	bad += counts_off(self, &base, (struct expect){ 1, 0, 1, 1 },
			  "faulted back");
	bad += hmm_folio_to_device(self->fd, p, self->size, self->mirror, gen,
				   HMM_FOLIO_PROT_DEV_PMD) ? 1 : 0;
	bad += counts_off(self, &base, (struct expect){ 1, 1, 2, 1 },
			  "on the device again");
	if (bad || free == FREE_EXIT)
		return bad;
	if (free == FREE_DONTNEED) {
		bad += hmm_folio_dontneed(p, self->size) ? 1 : 0;
		bad += counts_off(self, &base,
				  (struct expect){ 0, 0, 2, 2 },
				  "MADV_DONTNEED");
	}
	if (munmap(p, self->size))
		bad++;
	bad += counts_off(self, &base, (struct expect){ 0, 0, 2, 2 },
			  "freed on the device");
	return bad + hmm_folio_step_check("freeing the device THP");
}

TEST_F_TIMEOUT(account, lifecycle, HMM_FOLIO_TIMEOUT(60))
{
	struct counts base;
	pid_t pid;

	if (variant->free != FREE_EXIT) {
		ASSERT_EQ(account_life(self, variant->free), 0);
		return;
	}
	read_counts(self, &base);
	pid = hmm_folio_fork_owner(&self->fd, 1);
	ASSERT_GE(pid, 0);
	if (!pid)
		_exit(account_life(self, FREE_EXIT) ? 1 : 0);
	ASSERT_EQ(hmm_folio_wait_owner(pid), 0);
	/* nr_anon and the device are global, RssAnon this process's own. */
	ASSERT_EQ(counts_off(self, &base, (struct expect){ 0, 0, 2, 2 },
			     "after the owner's exit"), 0);
}

TEST_HARNESS_MAIN
