// SPDX-License-Identifier: GPL-2.0
/*
 * Device memory of a freed large device-private folio, handed out again at
 * other orders. Needs the hmm-folio extension of test_hmm (lib/test_hmm
 * patches): the LOWEST allocation policy makes the just-freed PFNs the next
 * ones handed out, HMM_DMIRROR_DEVPFN proves they were, HMM_DMIRROR_FOLIO_*
 * builds folios of any order there directly and HMM_DMIRROR_CHECK verifies
 * the invariants of every folio built over the stale struct pages.
 *
 * This is the path zone_device_page_init() must get right: an order-9 folio
 * freed, then order-8 folios (or order-0 pages, ...) initialised over pages
 * that still carry its order bits, _nr_pages and compound head.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include "kselftest_harness.h"
#include "vm_util.h"
#include "hmm_folio_util.h"

enum reuse_how {
	/* 512 order-0 pages migrated into the freed PMD block */
	REUSE_MIGRATE_ORDER0,
	/* device folios of .order allocated directly at the freed offsets */
	REUSE_DIRECT,
	/* the other way: order-0 pages freed, a THP assembled from them */
	REUSE_ASSEMBLE_PMD,
};

FIXTURE(reuse)
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

FIXTURE_VARIANT(reuse)
{
	enum reuse_how how;
	unsigned int order;
};

FIXTURE_VARIANT_ADD(reuse, migrate_order0) { .how = REUSE_MIGRATE_ORDER0 };
FIXTURE_VARIANT_ADD(reuse, assemble_pmd) { .how = REUSE_ASSEMBLE_PMD };
#define DIRECT(o) FIXTURE_VARIANT_ADD(reuse, direct_order##o) \
	{ .how = REUSE_DIRECT, .order = o }
/* The seed: an order-9 folio freed, order-8 folios at offsets 0 and 256. */
DIRECT(8);
DIRECT(0);
DIRECT(1);
DIRECT(2);
DIRECT(3);
DIRECT(4);
DIRECT(5);
DIRECT(6);
DIRECT(7);

FIXTURE_SETUP(reuse)
{
	const char *why = NULL;

	self->mirror = NULL;
	self->pfns = NULL;
	self->policy_set = false;
	if (!hmm_folio_fixture_open(&self->kmsg, &self->fd,
				    HMM_FOLIO_NEED_EXT | HMM_FOLIO_NEED_THP, &why))
		SKIP(return, "%s", why);
	self->size = read_pmd_pagesize();
	self->npages = self->size / psize();
	self->pmd_order = sz2ord(self->size, psize());
	self->mirror = malloc(self->size);
	self->pfns = calloc(self->npages, sizeof(*self->pfns));
	ASSERT_NE(self->mirror, NULL);
	ASSERT_NE(self->pfns, NULL);
	ASSERT_EQ(hmm_folio_set_policy(self->fd, HMM_DMIRROR_POLICY_LOWEST,
				       &self->old_policy), 0);
	self->policy_set = true;
}

FIXTURE_TEARDOWN(reuse)
{
	int splats;

	if (self->policy_set)
		hmm_folio_set_policy(self->fd, self->old_policy, NULL);
	splats = hmm_folio_fixture_close(&self->kmsg, &self->fd);
	free(self->mirror);
	free(self->pfns);
	HMM_FOLIO_FAIL_ON_SPLATS(splats);
}

/* @size bytes of anonymous memory, tagged with @gen; a THP or not. */
static char *range_new(struct __test_metadata *_metadata,
		       FIXTURE_DATA(reuse) *self, bool thp, unsigned int gen)
{
	char *p = hmm_folio_map_aligned(self->size);

	ASSERT_NE(p, NULL);
	if (!thp)
		ASSERT_EQ(madvise(p, self->size, MADV_NOHUGEPAGE), 0);
	hmm_folio_fill(p, self->size, (uintptr_t)p, gen);
	if (thp)
		ASSERT_TRUE(check_huge_anon(p, 1, self->size))
			TH_LOG("no PMD-sized THP at %p after MADV_HUGEPAGE", p);
	return p;
}

/*
 * Migrate [p, +size) to the device and check the device's copy, the folio
 * invariants and where it landed. Returns the device offset of the first page.
 */
static __u64 range_to_device(struct __test_metadata *_metadata,
			     FIXTURE_DATA(reuse) *self, char *p,
			     unsigned int gen, unsigned int order)
{
	struct hmm_dmirror_cmd cmd;
	unsigned long i;

	ASSERT_EQ(hmm_folio_cmd(self->fd, HMM_DMIRROR_MIGRATE_TO_DEV, p,
				self->mirror, self->npages, &cmd), 0);
	ASSERT_EQ(cmd.cpages, self->npages);
	ASSERT_EQ(hmm_folio_check(self->mirror, self->size, (uintptr_t)p, gen,
				  "device copy after MIGRATE_TO_DEV"), 0);
	ASSERT_EQ(hmm_folio_devpfn(self->fd, p, self->npages, self->pfns), 0);
	for (i = 0; i < self->npages; i++) {
		struct hmm_dmirror_devpfn *d = &self->pfns[i];

		ASSERT_NE(d->offset, HMM_DMIRROR_DEVPFN_NONE)
			TH_LOG("page %lu is not on the device", i);
		ASSERT_EQ(d->order, order)
			TH_LOG("page %lu: folio order %u, expected %u", i,
			       d->order, order);
		ASSERT_EQ(!!(d->flags & HMM_DMIRROR_DEVPFN_HEAD),
			  !(i & ((1UL << order) - 1)))
			TH_LOG("page %lu: head flag %#x", i, d->flags);
		if (order)
			ASSERT_EQ(d->offset, self->pfns[0].offset + i);
	}
	ASSERT_EQ(hmm_folio_check_folios(self->fd, HMM_DMIRROR_CHECK_RANGE, 0,
					 p, self->npages), 0);
	return self->pfns[0].offset;
}

/* How many pages of the range last passed to DEVPFN lie in [base, +npages). */
static unsigned long overlap(FIXTURE_DATA(reuse) *self, __u64 base)
{
	unsigned long i, n = 0;

	for (i = 0; i < self->npages; i++)
		if (self->pfns[i].offset >= base &&
		    self->pfns[i].offset < base + self->npages)
			n++;
	return n;
}

/* CPU read fault of the whole range; it must come back to system memory. */
static void range_back(struct __test_metadata *_metadata,
		       FIXTURE_DATA(reuse) *self, char *p, unsigned int gen)
{
	unsigned long i;

	ASSERT_EQ(hmm_folio_check(p, self->size, (uintptr_t)p, gen,
				  "CPU view after fault-back"), 0);
	ASSERT_EQ(hmm_folio_devpfn(self->fd, p, self->npages, self->pfns), 0);
	for (i = 0; i < self->npages; i++)
		ASSERT_EQ(self->pfns[i].offset, HMM_DMIRROR_DEVPFN_NONE)
			TH_LOG("page %lu still on the device after fault-back", i);
}

/* Folios of @order carved directly out of [base, +npages), then freed. */
static void reuse_direct(struct __test_metadata *_metadata,
			 FIXTURE_DATA(reuse) *self, __u64 base,
			 unsigned int order)
{
	unsigned long n = self->npages >> order, j;
	__u64 *handles = calloc(n, sizeof(*handles));

	ASSERT_NE(handles, NULL);
	for (j = 0; j < n; j++) {
		struct hmm_dmirror_folio_cmd c = {
			.offset = base + (j << order),
			.order = order,
			.flags = HMM_DMIRROR_FOLIO_AT_OFFSET,
		};

		ASSERT_EQ(hmm_folio_folio(self->fd, HMM_DMIRROR_FOLIO_ALLOC, &c), 0)
			TH_LOG("order-%u folio at offset %#llx", order,
			       (unsigned long long)c.offset);
		ASSERT_EQ(c.offset, base + (j << order));
		handles[j] = c.handle;
		ASSERT_EQ(hmm_folio_check_folios(self->fd, HMM_DMIRROR_CHECK_HANDLE,
						 c.handle, NULL, 0), 0)
			TH_LOG("fresh order-%u folio at offset %#llx", order,
			       (unsigned long long)c.offset);
	}
	for (j = 0; j < n; j++) {
		struct hmm_dmirror_folio_cmd c = { .handle = handles[j], .seed = j + 1 };

		ASSERT_EQ(hmm_folio_folio(self->fd, HMM_DMIRROR_FOLIO_FILL, &c), 0);
	}
	for (j = 0; j < n; j++) {
		struct hmm_dmirror_folio_cmd c = { .handle = handles[j], .seed = j + 1 };

		ASSERT_EQ(hmm_folio_folio(self->fd, HMM_DMIRROR_FOLIO_VERIFY, &c), 0);
		ASSERT_EQ(c.bad_pages, 0)
			TH_LOG("folio %lu: %llu bad pages", j,
			       (unsigned long long)c.bad_pages);
		ASSERT_EQ(c.order, order);
	}
	ASSERT_EQ(hmm_folio_check_folios(self->fd, HMM_DMIRROR_CHECK_HELD, 0,
					 NULL, 0), 0);
	for (j = 0; j < n; j++) {
		struct hmm_dmirror_folio_cmd c = { .handle = handles[j] };

		ASSERT_EQ(hmm_folio_folio(self->fd, HMM_DMIRROR_FOLIO_FREE, &c), 0);
	}
	free(handles);
}

TEST_F_TIMEOUT(reuse, lifecycle, 45)
{
	struct hmm_dmirror_alloc_stats before, after;
	unsigned int gen = 1;
	__u64 base;
	char *p;

	ASSERT_EQ(hmm_folio_stats(self->fd, &before), 0);

	if (variant->how == REUSE_ASSEMBLE_PMD) {
		/* 512 order-0 device pages, freed by munmap... */
		struct hmm_dmirror_devpfn *small;

		p = range_new(_metadata, self, false, gen);
		range_to_device(_metadata, self, p, gen, 0);
		small = malloc(self->npages * sizeof(*small));
		ASSERT_NE(small, NULL);
		memcpy(small, self->pfns, self->npages * sizeof(*small));
		ASSERT_EQ(munmap(p, self->size), 0);
		/* ...must be assembled into the next PMD-order folio. */
		p = range_new(_metadata, self, true, ++gen);
		base = range_to_device(_metadata, self, p, gen, self->pmd_order);
		memcpy(self->pfns, small, self->npages * sizeof(*small));
		free(small);
		ASSERT_EQ(overlap(self, base), self->npages)
			TH_LOG("the PMD folio at %#llx is not made of the freed pages",
			       (unsigned long long)base);
		ASSERT_EQ(hmm_folio_stats(self->fd, &after), 0);
		ASSERT_GE(after.cross_order_pages - before.cross_order_pages,
			  self->npages)
			TH_LOG("the PMD folio did not reuse order-0 memory");
		range_back(_metadata, self, p, gen);
		ASSERT_EQ(munmap(p, self->size), 0);
		return;
	}

	/* A THP becomes one PMD-order device folio, and is freed there. */
	p = range_new(_metadata, self, true, gen);
	base = range_to_device(_metadata, self, p, gen, self->pmd_order);
	ASSERT_EQ(base % self->npages, 0);
	ASSERT_EQ(munmap(p, self->size), 0);
	ASSERT_EQ(hmm_folio_stats(self->fd, &after), 0);
	ASSERT_EQ(after.frees[self->pmd_order], before.frees[self->pmd_order] + 1)
		TH_LOG("the PMD-order device folio was not freed by munmap");

	switch (variant->how) {
	case REUSE_MIGRATE_ORDER0:
		p = range_new(_metadata, self, false, ++gen);
		range_to_device(_metadata, self, p, gen, 0);
		ASSERT_EQ(overlap(self, base), self->npages)
			TH_LOG("order-0 pages did not reuse the freed PMD block at %#llx",
			       (unsigned long long)base);
		range_back(_metadata, self, p, gen);
		ASSERT_EQ(munmap(p, self->size), 0);
		break;
	case REUSE_DIRECT:
		reuse_direct(_metadata, self, base, variant->order);
		break;
	default:
		break;
	}
	ASSERT_EQ(hmm_folio_stats(self->fd, &after), 0);
	ASSERT_GE(after.cross_order_pages - before.cross_order_pages,
		  self->npages)
		TH_LOG("no page was handed out at another order");

	/* And back up: the next THP is assembled over the same block again. */
	p = range_new(_metadata, self, true, ++gen);
	ASSERT_EQ(range_to_device(_metadata, self, p, gen, self->pmd_order), base)
		TH_LOG("the PMD folio did not go back to the freed block");
	range_back(_metadata, self, p, gen);
	ASSERT_EQ(munmap(p, self->size), 0);
}

TEST_HARNESS_MAIN
