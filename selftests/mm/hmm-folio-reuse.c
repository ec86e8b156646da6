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
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <linux/mman.h>
#include <sys/mman.h>
#include <sys/wait.h>

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
	/* repeated rounds alternating orders over the same block */
	REUSE_ROUNDS,
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

/* Free (enum free_how) and back (enum back_how): hmm_folio_util.h. */

/* What the range holds when it is migrated to the device. */
enum reach_how {
	REACH_THP,		/* a tagged PMD-sized THP */
	REACH_EMPTY,		/* nothing: never touched */
	REACH_ZERO,		/* the huge zero page, read-faulted */
	REACH_MIXED,		/* a THP and 512 small pages in one range */
};

/* What the process does to the range while its THP sits on the device. */
enum op_how {
	OP_NONE,
	OP_MPROTECT_RO,		/* read-only: reads work, then RW again */
	OP_MPROTECT_NONE,	/* no access, then RW again */
	OP_MREMAP_DONTUNMAP,	/* moved, the old range kept empty */
	OP_MREMAP_SHRINK,	/* the second half dropped (splits the PMD) */
	OP_MREMAP_GROW,		/* moved to a range twice the size */
	OP_FORK_COW,		/* child and parent write their own copies */
	OP_MADV_COLD,
	OP_MADV_PAGEOUT,
	OP_MADV_WILLNEED,
	OP_MADV_NOHUGEPAGE,
	OP_MADV_COLLAPSE,
	OP_PAGEMAP,		/* /proc/self/pagemap: not present, swap-like */
	OP_SMAPS,		/* /proc/self/smaps read through */
	OP_NUMA_MAPS,		/* /proc/self/numa_maps read through */
};

FIXTURE_VARIANT(reuse)
{
	enum op_how op;
	enum reach_how reach;
	enum reuse_how how;
	unsigned int order;
	enum free_how free;
	enum back_how back;
};

FIXTURE_VARIANT_ADD(reuse, migrate_order0) { .how = REUSE_MIGRATE_ORDER0 };
FIXTURE_VARIANT_ADD(reuse, assemble_pmd) { .how = REUSE_ASSEMBLE_PMD };
#define DIRECT(o) FIXTURE_VARIANT_ADD(reuse, direct_order##o) \
	{ .how = REUSE_DIRECT, .order = o }
/* Freed other ways, reused, and brought back other ways. */
#define ROW(name, h, o, f, b) FIXTURE_VARIANT_ADD(reuse, name)	\
	{ .how = h, .order = o, .free = f, .back = b }
ROW(partial_munmap_order0_write, REUSE_MIGRATE_ORDER0, 0, FREE_MUNMAP_PARTIAL, BACK_WRITE);
ROW(partial_munmap_direct_order3, REUSE_DIRECT, 3, FREE_MUNMAP_PARTIAL, BACK_READ);
ROW(dontneed_direct_order8, REUSE_DIRECT, 8, FREE_DONTNEED, BACK_READ);
ROW(dontneed_order0_pte, REUSE_MIGRATE_ORDER0, 0, FREE_DONTNEED, BACK_PTE);
ROW(madv_free_order0_migrate, REUSE_MIGRATE_ORDER0, 0, FREE_MADV_FREE, BACK_MIGRATE);
ROW(mremap_order0_device_read, REUSE_MIGRATE_ORDER0, 0, FREE_MREMAP, BACK_DEVICE_READ);
ROW(mremap_direct_order1, REUSE_DIRECT, 1, FREE_MREMAP, BACK_READ);
ROW(exit_order0_read, REUSE_MIGRATE_ORDER0, 0, FREE_EXIT, BACK_READ);
ROW(exit_direct_order4, REUSE_DIRECT, 4, FREE_EXIT, BACK_PTE);
ROW(fork_order0_write, REUSE_MIGRATE_ORDER0, 0, FREE_FORK, BACK_WRITE);
ROW(fork_direct_order6, REUSE_DIRECT, 6, FREE_FORK, BACK_MIGRATE);
ROW(munmap_order0_device_read, REUSE_MIGRATE_ORDER0, 0, FREE_MUNMAP, BACK_DEVICE_READ);
ROW(munmap_direct_order2_pte, REUSE_DIRECT, 2, FREE_MUNMAP, BACK_PTE);
ROW(munmap_order0_device_write, REUSE_MIGRATE_ORDER0, 0, FREE_MUNMAP, BACK_DEVICE_WRITE);
ROW(release_order0_read, REUSE_MIGRATE_ORDER0, 0, FREE_RELEASE, BACK_READ);
ROW(release_direct_order7, REUSE_DIRECT, 7, FREE_RELEASE, BACK_MIGRATE);
/* Rounds: the same device block at order 9, 0, N, 9, 0, N', ... */
FIXTURE_VARIANT_ADD(reuse, rounds) { .how = REUSE_ROUNDS };
/* Things a process does to a range on the device, before it is freed. */
#define OP(name, o) FIXTURE_VARIANT_ADD(reuse, op_##name)		\
	{ .op = o, .how = REUSE_MIGRATE_ORDER0 }
OP(mprotect_ro, OP_MPROTECT_RO);
OP(mprotect_none, OP_MPROTECT_NONE);
OP(mremap_dontunmap, OP_MREMAP_DONTUNMAP);
OP(mremap_shrink, OP_MREMAP_SHRINK);
OP(mremap_grow, OP_MREMAP_GROW);
OP(fork_cow, OP_FORK_COW);
OP(madv_cold, OP_MADV_COLD);
OP(madv_pageout, OP_MADV_PAGEOUT);
OP(madv_willneed, OP_MADV_WILLNEED);
OP(madv_nohugepage, OP_MADV_NOHUGEPAGE);
OP(madv_collapse, OP_MADV_COLLAPSE);
OP(pagemap, OP_PAGEMAP);
OP(smaps, OP_SMAPS);
OP(numa_maps, OP_NUMA_MAPS);
/* Ranges with no data of their own: the device memory is still reused. */
FIXTURE_VARIANT_ADD(reuse, empty_order0_read) { .reach = REACH_EMPTY };
FIXTURE_VARIANT_ADD(reuse, zero_order0_migrate)
	{ .reach = REACH_ZERO, .back = BACK_MIGRATE };
/* A THP and small pages in one migration; then the other way round. */
FIXTURE_VARIANT_ADD(reuse, mixed_read) { .reach = REACH_MIXED };
FIXTURE_VARIANT_ADD(reuse, mixed_pte) { .reach = REACH_MIXED, .back = BACK_PTE };
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
	HMM_FOLIO_REQUIRE(hmm_folio_fixture_open(&self->kmsg, &self->fd,
						 HMM_FOLIO_NEED_ALL, &why), why);
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

/*
 * Migrate [p, +size) to the device and check the device's copy, the folio
 * invariants and where it landed. Returns the device offset of the first page.
 */
static __u64 range_to_device(struct __test_metadata *_metadata,
			     FIXTURE_DATA(reuse) *self, char *p,
			     unsigned int gen, unsigned int order)
{
	unsigned long i;

	/* The CPU's page table: one device PMD, or device PTEs. */
	ASSERT_EQ(hmm_folio_to_device(self->fd, p, self->size, self->mirror,
				      gen, order == self->pmd_order ?
				      HMM_FOLIO_PROT_DEV_PMD :
				      HMM_FOLIO_PROT_DEV_PTE), 0);
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
	ASSERT_EQ(hmm_folio_check_invariants(self->fd, HMM_DMIRROR_CHECK_RANGE, 0,
					     p, self->npages), 0);
	HMM_FOLIO_STEP_DONE("checking the range's device folios");
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

/* Bring the range back to system memory as @back says; returns the gen. */
static unsigned int range_back(struct __test_metadata *_metadata,
			       FIXTURE_DATA(reuse) *self, char *p,
			       unsigned int gen, enum back_how back)
{
	unsigned long i;

	if (back == BACK_PTE) {
		/* One page alone first: splits the PMD; then a CPU read. */
		ASSERT_EQ(hmm_folio_cmd(self->fd, HMM_DMIRROR_MIGRATE_TO_SYS,
					p + psize(), NULL, 1, NULL), 0);
		ASSERT_EQ(hmm_folio_check_tags(p + psize(), psize(),
					       (uintptr_t)p + psize(), gen,
					       "page migrated back alone"), 0);
		ASSERT_EQ(hmm_folio_check_invariants(self->fd,
						     HMM_DMIRROR_CHECK_RANGE, 0, p,
						     self->npages), 0);
		back = BACK_READ;
	}
	ASSERT_EQ(hmm_folio_back(self->fd, p, self->size, self->mirror, &gen,
				 back), 0);
	ASSERT_EQ(hmm_folio_devpfn(self->fd, p, self->npages, self->pfns), 0);
	for (i = 0; i < self->npages; i++)
		ASSERT_EQ(self->pfns[i].offset, HMM_DMIRROR_DEVPFN_NONE)
			TH_LOG("page %lu still on the device after fault-back", i);
	return gen;
}

/*
 * mremap of the device range: DONTUNMAP and GROW move it (returned, its
 * data tagged anew there), SHRINK drops its second half (splits the PMD)
 * and maps fresh memory in its place.
 */
static char *op_mremap(struct __test_metadata *_metadata,
		       FIXTURE_DATA(reuse) *self, char *p, unsigned int *gen,
		       enum op_how op)
{
	size_t half = self->size / 2;
	char *q;

	switch (op) {
	case OP_MREMAP_DONTUNMAP:
		q = mremap(p, self->size, self->size,
			   MREMAP_MAYMOVE | MREMAP_DONTUNMAP, NULL);
		ASSERT_NE(q, MAP_FAILED);
		ASSERT_EQ(hmm_folio_nonzero_pages(p, self->size), 0)
			TH_LOG("the range left behind by MREMAP_DONTUNMAP is not empty");
		ASSERT_EQ(munmap(p, self->size), 0);
		/* The data moved with the pages: tags of the old address. */
		ASSERT_EQ(hmm_folio_check_tags(q, self->size, (uintptr_t)p, *gen,
					       "after MREMAP_DONTUNMAP"), 0);
		break;
	case OP_MREMAP_SHRINK:
		ASSERT_EQ(mremap(p, self->size, half, 0), p);
		ASSERT_EQ(hmm_folio_check_tags(p, half, (uintptr_t)p, *gen,
					       "after shrinking mremap"), 0);
		q = mmap(p + half, half, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
		ASSERT_EQ(q, p + half);
		q = p;
		break;
	case OP_MREMAP_GROW:
		q = mremap(p, self->size, 2 * self->size, MREMAP_MAYMOVE);
		ASSERT_NE(q, MAP_FAILED);
		ASSERT_EQ(hmm_folio_check_tags(q, self->size, (uintptr_t)p, *gen,
					       "after growing mremap"), 0);
		ASSERT_EQ(munmap(q + self->size, self->size), 0);
		break;
	default:
		ASSERT_TRUE(false) TH_LOG("op %d is no mremap", op);
	}
	hmm_folio_fill(q, self->size, (uintptr_t)q, ++*gen);
	return q;
}

/* Child and parent write their own copies: neither sees the other's. */
static void op_fork_cow(struct __test_metadata *_metadata,
			FIXTURE_DATA(reuse) *self, char *p, unsigned int *gen)
{
	int status;
	pid_t pid;

	pid = fork();
	ASSERT_GE(pid, 0);
	if (!pid) {
		hmm_folio_fill(p, self->size, (uintptr_t)p, *gen + 100);
		ASSERT_EQ(hmm_folio_check_tags(p, self->size, (uintptr_t)p,
					       *gen + 100, "child's copy"), 0);
		_exit(0);
	}
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT_TRUE(WIFEXITED(status) && !WEXITSTATUS(status));
	/* The child's writes must not show through. */
	ASSERT_EQ(hmm_folio_check_tags(p, self->size, (uintptr_t)p, *gen,
				       "parent after the child's COW writes"), 0);
	hmm_folio_fill(p, self->size, (uintptr_t)p, ++*gen);
}

/*
 * madvise of the device range. Each has one answer for a device-private
 * PMD: COLD, PAGEOUT and WILLNEED skip what is not present, NOHUGEPAGE only
 * sets a VMA flag; COLLAPSE finds no present PMD to collapse (EINVAL, as
 * 7.2.13 and 7.3.4 say). None may break it.
 */
static void op_madvise(struct __test_metadata *_metadata,
		       FIXTURE_DATA(reuse) *self, char *p, enum op_how op)
{
	static const int advice[] = {
		[OP_MADV_COLD] = MADV_COLD,
		[OP_MADV_PAGEOUT] = MADV_PAGEOUT,
		[OP_MADV_WILLNEED] = MADV_WILLNEED,
		[OP_MADV_NOHUGEPAGE] = MADV_NOHUGEPAGE,
		[OP_MADV_COLLAPSE] = MADV_COLLAPSE,
	};
	static const int answer[] = {
		[OP_MADV_COLLAPSE] = EINVAL,
	};
	int ret;

	errno = 0;
	ret = madvise(p, self->size, advice[op]);
	ASSERT_EQ(ret ? errno : 0, answer[op])
		TH_LOG("madvise(%d): %s, expected %s", advice[op],
		       ret ? strerror(errno) : "success",
		       answer[op] ? strerror(answer[op]) : "success");
}

/* What /proc says of the device range: pagemap and smaps. */
/*
 * The numa_maps line of the VMA at @addr: the pages it counts on any node
 * (the N<node>= fields) into *@pages, whether it has an anon= field into
 * *@anon. Returns 0, or -1 when no line starts at @addr.
 */
static int numa_maps_pages(void *addr, unsigned long *pages, bool *anon)
{
	static const char sep[] = { ' ', '\n', 0 };
	char start[32], line[1024], *tok, *save;
	int ret = -1;
	FILE *fp;

	fp = fopen("/proc/self/numa_maps", "r");
	if (!fp)
		return -1;
	snprintf(start, sizeof(start), "%lx ", (unsigned long)addr);
	while (fgets(line, sizeof(line), fp)) {
		if (strncmp(line, start, strlen(start)))
			continue;
		*pages = 0;
		*anon = false;
		for (tok = strtok_r(line, sep, &save); tok;
		     tok = strtok_r(NULL, sep, &save)) {
			unsigned int node;
			unsigned long n;

			if (sscanf(tok, "N%u=%lu", &node, &n) == 2)
				*pages += n;
			else if (!strncmp(tok, "anon=", 5))
				*anon = true;
		}
		ret = 0;
		break;
	}
	fclose(fp);
	return ret;
}

static void op_proc(struct __test_metadata *_metadata,
		    FIXTURE_DATA(reuse) *self, char *p, enum op_how op)
{
	unsigned long i, pages;
	int pagemap_fd;
	bool anon;

	if (op == OP_NUMA_MAPS) {
		/* A one-page VMA between two PROT_NONE ones: no merge. */
		char *q = mmap(NULL, 3 * psize(), PROT_NONE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		/* A present page next to it is counted: the parse works. */
		ASSERT_NE(q, MAP_FAILED);
		ASSERT_EQ(mprotect(q + psize(), psize(), PROT_READ | PROT_WRITE), 0);
		q[psize()] = 1;
		ASSERT_EQ(numa_maps_pages(q + psize(), &pages, &anon), 0);
		ASSERT_EQ(munmap(q, 3 * psize()), 0);
		ASSERT_EQ(pages, 1);
		ASSERT_TRUE(anon);
		/*
		 * numa_maps counts present pages only (can_gather_numa_stats*()):
		 * a THP on the device is on no node.
		 */
		ASSERT_EQ(numa_maps_pages(p, &pages, &anon), 0)
			TH_LOG("no numa_maps line for the range");
		ASSERT_EQ(pages, 0)
			TH_LOG("numa_maps counts %lu pages of a range on the device",
			       pages);
		ASSERT_FALSE(anon);
		return;
	}
	if (op == OP_SMAPS) {
		/*
		 * smaps_pmd_entry() accounts a device-private PMD's folio: the
		 * whole range is resident and one anonymous THP.
		 */
		ASSERT_EQ(hmm_folio_smaps_kb(p, "Rss:"), (long)(self->size >> 10));
		ASSERT_EQ(hmm_folio_smaps_kb(p, "AnonHugePages:"),
			  (long)(self->size >> 10));
		return;
	}
	pagemap_fd = open("/proc/self/pagemap", O_RDONLY);
	ASSERT_GE(pagemap_fd, 0);
	for (i = 0; i < self->npages; i++) {
		uint64_t e = pagemap_get_entry(pagemap_fd, p + i * psize());

		ASSERT_FALSE(e & PM_PRESENT)
			TH_LOG("page %lu present in pagemap while on the device", i);
		ASSERT_TRUE(e & PM_SWAP);
	}
	close(pagemap_fd);
}

/* Nothing touched the data: still one PMD-order device folio. */
static void expect_device_pmd(struct __test_metadata *_metadata,
			      FIXTURE_DATA(reuse) *self, char *p)
{
	unsigned long i;

	ASSERT_EQ(hmm_folio_devpfn(self->fd, p, self->npages, self->pfns), 0);
	for (i = 0; i < self->npages; i++)
		ASSERT_EQ(self->pfns[i].order, self->pmd_order)
			TH_LOG("page %lu: order %u offset %#llx after the operation",
			       i, self->pfns[i].order,
			       (unsigned long long)self->pfns[i].offset);
	ASSERT_EQ(hmm_folio_check_invariants(self->fd, HMM_DMIRROR_CHECK_RANGE, 0,
					     p, self->npages), 0);
}

/*
 * Do @op to the range @p whose THP (tagged @gen) sits on the device, check
 * the data after it, and return where the range (still @size bytes, with
 * generation *@gen) is now; whatever the op left elsewhere is unmapped.
 */
static char *range_op(struct __test_metadata *_metadata,
		      FIXTURE_DATA(reuse) *self, char *p, unsigned int *gen,
		      enum op_how op)
{
	switch (op) {
	case OP_NONE:
		return p;
	case OP_MPROTECT_RO:
		ASSERT_EQ(mprotect(p, self->size, PROT_READ), 0);
		ASSERT_EQ(hmm_folio_check_tags(p, self->size, (uintptr_t)p, *gen,
					       "read-only view"), 0);
		ASSERT_EQ(mprotect(p, self->size, PROT_READ | PROT_WRITE), 0);
		break;
	case OP_MPROTECT_NONE:
		ASSERT_EQ(mprotect(p, self->size, PROT_NONE), 0);
		ASSERT_EQ(mprotect(p, self->size, PROT_READ | PROT_WRITE), 0);
		break;
	case OP_MREMAP_DONTUNMAP:
	case OP_MREMAP_GROW:
		/* Moved, with new tags: the CPU checked it where it went. */
		p = op_mremap(_metadata, self, p, gen, op);
		HMM_FOLIO_STEP_DONE("the operation on the device range");
		return p;
	case OP_MREMAP_SHRINK:
		op_mremap(_metadata, self, p, gen, op);
		break;
	case OP_FORK_COW:
		op_fork_cow(_metadata, self, p, gen);
		break;
	case OP_MADV_COLD:
	case OP_MADV_PAGEOUT:
	case OP_MADV_WILLNEED:
	case OP_MADV_NOHUGEPAGE:
	case OP_MADV_COLLAPSE:
		op_madvise(_metadata, self, p, op);
		break;
	case OP_PAGEMAP:
	case OP_SMAPS:
	case OP_NUMA_MAPS:
		op_proc(_metadata, self, p, op);
		break;
	}
	if (op != OP_MPROTECT_RO && op != OP_MREMAP_SHRINK && op != OP_FORK_COW)
		expect_device_pmd(_metadata, self, p);
	/* And the data is intact when the CPU faults it back. */
	ASSERT_EQ(hmm_folio_check_tags(p, self->size, (uintptr_t)p, *gen,
				       "after the operation"), 0);
	HMM_FOLIO_STEP_DONE("the operation on the device range");
	return p;
}

/*
 * Free the PMD-order device folio behind @p (tagged @gen, at device offset
 * @base) as @free says.
 */
static void range_free(struct __test_metadata *_metadata,
		       FIXTURE_DATA(reuse) *self, char *p, unsigned int gen,
		       __u64 base, enum free_how free)
{
	size_t half = self->size / 2;
	char *q;
	pid_t pid;
	int status;
	size_t i;

	switch (free) {
	case FREE_MUNMAP:
	case FREE_EXIT:
		ASSERT_EQ(munmap(p, self->size), 0);
		break;
	case FREE_MUNMAP_PARTIAL:
		ASSERT_EQ(munmap(p + half, half), 0);
		/* The half left is still there, on the device or not. */
		memset(self->mirror, 0, half);
		ASSERT_EQ(hmm_folio_cmd(self->fd, HMM_DMIRROR_READ, p,
					self->mirror, half / psize(), NULL), 0);
		ASSERT_EQ(hmm_folio_check_tags(self->mirror, half, (uintptr_t)p, gen,
					       "device read after partial munmap"), 0);
		ASSERT_EQ(munmap(p, half), 0);
		break;
	case FREE_DONTNEED:
		ASSERT_EQ(hmm_folio_dontneed(p, self->size), 0);
		ASSERT_EQ(munmap(p, self->size), 0);
		break;
	case FREE_MADV_FREE:
		ASSERT_EQ(madvise(p, self->size, MADV_FREE), 0);
		ASSERT_EQ(munmap(p, self->size), 0);
		break;
	case FREE_MREMAP:
		q = hmm_folio_map_aligned(self->size);
		ASSERT_NE(q, NULL);
		ASSERT_EQ(mremap(p, self->size, self->size,
				 MREMAP_MAYMOVE | MREMAP_FIXED, q), q);
		/*
		 * Moved as it was: the same device folio. (Its data is not read
		 * through the mirror here: see known_bugs below.)
		 */
		ASSERT_EQ(hmm_folio_devpfn(self->fd, q, self->npages,
					   self->pfns), 0);
		for (i = 0; i < self->npages; i++)
			ASSERT_EQ(self->pfns[i].offset, base + i)
				TH_LOG("page %zu moved off its device folio", i);
		ASSERT_EQ(self->pfns[0].order, self->pmd_order);
		ASSERT_EQ(hmm_folio_check_invariants(self->fd,
						     HMM_DMIRROR_CHECK_RANGE, 0, q,
						     self->npages), 0);
		ASSERT_EQ(munmap(q, self->size), 0);
		break;
	case FREE_FORK:
		pid = fork();
		ASSERT_GE(pid, 0);
		if (!pid)
			_exit(0);	/* drops the child's share of the folio */
		ASSERT_EQ(waitpid(pid, &status, 0), pid);
		ASSERT_EQ(munmap(p, self->size), 0);
		break;
	case FREE_RELEASE:
		/* The device goes away: all its memory comes back to the CPU. */
		ASSERT_EQ(hmm_folio_cmd(self->fd, HMM_DMIRROR_RELEASE, p, NULL,
					self->npages, NULL), 0);
		ASSERT_EQ(hmm_folio_snapshot_expect(self->fd, p, self->npages,
						    HMM_FOLIO_SNAP_SYSTEM,
						    "after device release"), 0);
		ASSERT_EQ(hmm_folio_check_tags(p, self->size, (uintptr_t)p, gen,
					       "CPU view after device release"), 0);
		ASSERT_EQ(munmap(p, self->size), 0);
		break;
	default:
		ASSERT_TRUE(false) TH_LOG("no such free in this table");
	}
	HMM_FOLIO_STEP_DONE("freeing the device folio");
}

/*
 * An empty or zero-page range migrated to the device and unmapped there; its
 * device pages must then serve order-0 migrations.
 */
static void reuse_no_data(struct __test_metadata *_metadata,
			  FIXTURE_DATA(reuse) *self,
			  const FIXTURE_VARIANT(reuse) *variant)
{
	struct hmm_dmirror_alloc_stats before, after;
	struct hmm_dmirror_devpfn *old;
	unsigned long i, j, n = 0;
	struct hmm_dmirror_cmd cmd;
	unsigned int gen = 1;
	char *p;

	ASSERT_EQ(hmm_folio_stats(self->fd, &before), 0);
	p = hmm_folio_map_aligned(self->size);
	ASSERT_NE(p, NULL);
	if (variant->reach == REACH_ZERO) {
		/* Read faults map the huge zero page. */
		force_read_pages(p, self->npages, psize());
		ASSERT_EQ(hmm_folio_nonzero_pages(p, self->size), 0);
	}
	memset(self->mirror, 0xff, self->size);
	ASSERT_EQ(hmm_folio_cmd(self->fd, HMM_DMIRROR_MIGRATE_TO_DEV, p,
				self->mirror, self->npages, &cmd), 0);
	ASSERT_EQ(cmd.cpages, self->npages);
	ASSERT_EQ(hmm_folio_nonzero_pages(self->mirror, self->size), 0);
	ASSERT_EQ(hmm_folio_devpfn(self->fd, p, self->npages, self->pfns), 0);
	for (i = 0; i < self->npages; i++)
		ASSERT_NE(self->pfns[i].offset, HMM_DMIRROR_DEVPFN_NONE)
			TH_LOG("page %lu is not on the device", i);
	ASSERT_EQ(hmm_folio_check_invariants(self->fd, HMM_DMIRROR_CHECK_RANGE, 0,
					     p, self->npages), 0);
	old = malloc(self->npages * sizeof(*old));
	ASSERT_NE(old, NULL);
	memcpy(old, self->pfns, self->npages * sizeof(*old));
	ASSERT_EQ(munmap(p, self->size), 0);
	ASSERT_EQ(hmm_folio_stats(self->fd, &after), 0);
	ASSERT_EQ(after.free_pages - before.free_pages,
		  after.total_pages - before.total_pages);

	p = HMM_FOLIO_NEW_RANGE(self->size, false, ++gen);
	range_to_device(_metadata, self, p, gen, 0);
	for (i = 0; i < self->npages; i++)
		for (j = 0; j < self->npages; j++)
			if (self->pfns[i].offset == old[j].offset) {
				n++;
				break;
			}
	free(old);
	ASSERT_EQ(n, self->npages)
		TH_LOG("only %lu order-0 pages reused the freed device memory", n);
	range_back(_metadata, self, p, gen, variant->back);
	ASSERT_EQ(munmap(p, self->size), 0);
}

/*
 * The range @p of two PMDs on the device: its THP half @thp as one device
 * PMD folio, the other half as order-0 folios; @pfns gets their DEVPFN.
 */
static void mixed_on_device(struct __test_metadata *_metadata,
			    FIXTURE_DATA(reuse) *self, char *p, char *thp,
			    struct hmm_dmirror_devpfn *pfns)
{
	char *small = thp == p ? p + self->size : p;
	unsigned long npages = 2 * self->npages, i;

	ASSERT_EQ(hmm_folio_snapshot_expect(self->fd, thp, self->npages,
					    HMM_FOLIO_PROT_DEV_PMD,
					    "THP half on the device"), 0);
	ASSERT_EQ(hmm_folio_snapshot_expect(self->fd, small, self->npages,
					    HMM_FOLIO_PROT_DEV_PTE,
					    "small half on the device"), 0);
	ASSERT_EQ(hmm_folio_devpfn(self->fd, p, npages, pfns), 0);
	for (i = 0; i < npages; i++) {
		bool in_thp = p + i * psize() >= thp &&
			      p + i * psize() < thp + self->size;

		ASSERT_NE(pfns[i].offset, HMM_DMIRROR_DEVPFN_NONE)
			TH_LOG("page %lu not on the device", i);
		ASSERT_EQ(pfns[i].order, in_thp ? self->pmd_order : 0)
			TH_LOG("page %lu has order %u", i, pfns[i].order);
	}
	ASSERT_EQ(hmm_folio_check_invariants(self->fd, HMM_DMIRROR_CHECK_RANGE,
					     0, p, npages), 0);
}

/*
 * One range of two PMDs, a THP and 512 small pages, migrated by one
 * MIGRATE_TO_DEV: a PMD-order device folio and 512 order-0 ones. Freed, and
 * the same again with the halves swapped: every device page must come back
 * at the other order, the PMD folio built from the freed order-0 pages and
 * the small pages from the freed PMD folio.
 */
static void reuse_mixed(struct __test_metadata *_metadata,
			FIXTURE_DATA(reuse) *self,
			const FIXTURE_VARIANT(reuse) *variant)
{
	struct hmm_dmirror_alloc_stats before, after;
	unsigned long npages = 2 * self->npages, i, j;
	struct hmm_dmirror_devpfn *pfns, *old;
	size_t size = 2 * self->size;
	unsigned int gen = 1, round;
	char *mirror, *p = NULL;

	pfns = calloc(npages, sizeof(*pfns));
	old = calloc(npages, sizeof(*old));
	mirror = malloc(size);
	ASSERT_TRUE(pfns && old && mirror);
	ASSERT_EQ(hmm_folio_stats(self->fd, &before), 0);
	for (round = 0; round < 2; round++, gen++) {
		char *thp, *small;

		p = hmm_folio_map_aligned(size);
		ASSERT_NE(p, NULL);
		thp = round ? p + self->size : p;
		small = round ? p : p + self->size;
		ASSERT_EQ(madvise(small, self->size, MADV_NOHUGEPAGE), 0);
		hmm_folio_fill(p, size, (uintptr_t)p, gen);
		ASSERT_TRUE(hmm_folio_is_thp(thp, self->size))
			TH_LOG("round %u: no THP at %p", round, thp);

		ASSERT_EQ(hmm_folio_to_device(self->fd, p, size, mirror, gen, 0),
			  0);
		mixed_on_device(_metadata, self, p, thp, pfns);
		if (round)
			break;
		memcpy(old, pfns, npages * sizeof(*old));
		ASSERT_EQ(munmap(p, size), 0);
		ASSERT_EQ(hmm_folio_stats(self->fd, &after), 0);
		ASSERT_EQ(after.free_pages - before.free_pages,
			  after.total_pages - before.total_pages)
			TH_LOG("the mixed range's device memory was not freed");
	}
	/* Every page where a page of the other order was. */
	for (i = 0; i < npages; i++) {
		for (j = 0; j < npages; j++)
			if (old[j].offset == pfns[i].offset)
				break;
		ASSERT_LT(j, npages)
			TH_LOG("page %lu (offset %#llx) is not on freed memory",
			       i, (unsigned long long)pfns[i].offset);
		ASSERT_NE(old[j].order, pfns[i].order)
			TH_LOG("page %lu (offset %#llx) reused at its old order %u",
			       i, (unsigned long long)pfns[i].offset,
			       pfns[i].order);
	}
	ASSERT_EQ(hmm_folio_stats(self->fd, &after), 0);
	ASSERT_GE(after.cross_order_pages - before.cross_order_pages, npages);
	/* Back, half by half (both end at the same generation). */
	range_back(_metadata, self, p, gen, variant->back);
	range_back(_metadata, self, p + self->size, gen, variant->back);
	ASSERT_EQ(munmap(p, size), 0);
	free(pfns);
	free(old);
	free(mirror);
}

/* 512 order-0 device pages, freed by munmap, make the next PMD folio. */
static void reuse_assemble_pmd(struct __test_metadata *_metadata,
			       FIXTURE_DATA(reuse) *self,
			       const FIXTURE_VARIANT(reuse) *variant)
{
	struct hmm_dmirror_alloc_stats before, after;
	struct hmm_dmirror_devpfn *small;
	unsigned int gen = 1;
	__u64 base;
	char *p;

	ASSERT_EQ(hmm_folio_stats(self->fd, &before), 0);
	p = HMM_FOLIO_NEW_RANGE(self->size, false, gen);
	range_to_device(_metadata, self, p, gen, 0);
	small = malloc(self->npages * sizeof(*small));
	ASSERT_NE(small, NULL);
	memcpy(small, self->pfns, self->npages * sizeof(*small));
	ASSERT_EQ(munmap(p, self->size), 0);
	/* ...must be assembled into the next PMD-order folio. */
	p = HMM_FOLIO_NEW_RANGE(self->size, true, ++gen);
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
	range_back(_metadata, self, p, gen, variant->back);
	ASSERT_EQ(munmap(p, self->size), 0);
}

/*
 * A THP becomes one PMD-order device folio, the row's operation is done to
 * it and it is freed there the row's way. Returns its device offset.
 */
static __u64 reuse_free_thp(struct __test_metadata *_metadata,
			    FIXTURE_DATA(reuse) *self,
			    const FIXTURE_VARIANT(reuse) *variant,
			    unsigned int *gen)
{
	__u64 base, *shared;
	pid_t pid;
	char *p;

	if (variant->free != FREE_EXIT) {
		p = HMM_FOLIO_NEW_RANGE(self->size, true, *gen);
		base = range_to_device(_metadata, self, p, *gen,
				       self->pmd_order);
		p = range_op(_metadata, self, p, gen, variant->op);
		range_free(_metadata, self, p, *gen, base, variant->free);
		return base;
	}
	shared = mmap(NULL, sizeof(*shared), PROT_READ | PROT_WRITE,
		      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(shared, MAP_FAILED);
	pid = hmm_folio_fork_owner(&self->fd, 1);
	ASSERT_GE(pid, 0);
	if (!pid) {
		p = HMM_FOLIO_NEW_RANGE(self->size, true, *gen);
		*shared = range_to_device(_metadata, self, p, *gen,
					  self->pmd_order);
		_exit(0);	/* with the folio on the device */
	}
	ASSERT_EQ(hmm_folio_wait_owner(pid), 0);
	base = *shared;
	munmap(shared, sizeof(*shared));
	return base;
}

/* The freed PMD block at @base, reused at the row's orders. */
static void reuse_at_orders(struct __test_metadata *_metadata,
			    FIXTURE_DATA(reuse) *self,
			    const FIXTURE_VARIANT(reuse) *variant, __u64 base,
			    unsigned int *gen)
{
	static const unsigned int orders[] = { 8, 1, 5, 0, 3 };
	unsigned int r;
	char *p;

	switch (variant->how) {
	case REUSE_ROUNDS:
		for (r = 0; r < sizeof(orders) / sizeof(orders[0]); r++) {
			/* order 0 by migration, then N directly, then 9 again */
			p = HMM_FOLIO_NEW_RANGE(self->size, false, ++*gen);
			range_to_device(_metadata, self, p, *gen, 0);
			ASSERT_EQ(overlap(self, base), self->npages)
				TH_LOG("round %u: order-0 pages off the block", r);
			*gen = range_back(_metadata, self, p, *gen, BACK_READ);
			ASSERT_EQ(munmap(p, self->size), 0);
			ASSERT_EQ(hmm_folio_direct_cycle(self->fd, base,
							 self->npages,
							 orders[r]), 0);
			p = HMM_FOLIO_NEW_RANGE(self->size, true, ++*gen);
			ASSERT_EQ(range_to_device(_metadata, self, p, *gen,
						  self->pmd_order), base)
				TH_LOG("round %u: PMD folio off the block", r);
			ASSERT_EQ(munmap(p, self->size), 0);
		}
		break;
	case REUSE_MIGRATE_ORDER0:
		p = HMM_FOLIO_NEW_RANGE(self->size, false, ++*gen);
		range_to_device(_metadata, self, p, *gen, 0);
		ASSERT_EQ(overlap(self, base), self->npages)
			TH_LOG("order-0 pages did not reuse the freed PMD block at %#llx",
			       (unsigned long long)base);
		*gen = range_back(_metadata, self, p, *gen, variant->back);
		ASSERT_EQ(munmap(p, self->size), 0);
		break;
	case REUSE_DIRECT:
		ASSERT_EQ(hmm_folio_direct_cycle(self->fd, base, self->npages,
						 variant->order), 0);
		break;
	default:
		break;
	}
}

TEST_F_TIMEOUT(reuse, lifecycle, HMM_FOLIO_TIMEOUT(45))
{
	struct hmm_dmirror_alloc_stats before, after;
	unsigned int gen = 1;
	__u64 base;
	char *p;

	if (variant->reach == REACH_MIXED) {
		reuse_mixed(_metadata, self, variant);
		return;
	}
	if (variant->reach != REACH_THP) {
		reuse_no_data(_metadata, self, variant);
		return;
	}
	if (variant->how == REUSE_ASSEMBLE_PMD) {
		reuse_assemble_pmd(_metadata, self, variant);
		return;
	}
	ASSERT_EQ(hmm_folio_stats(self->fd, &before), 0);
	base = reuse_free_thp(_metadata, self, variant, &gen);
	if (variant->free == FREE_RELEASE) {
		/* New device memory: a THP goes there and is freed by munmap. */
		p = HMM_FOLIO_NEW_RANGE(self->size, true, ++gen);
		base = range_to_device(_metadata, self, p, gen, self->pmd_order);
		ASSERT_EQ(munmap(p, self->size), 0);
	}
	ASSERT_EQ(base % self->npages, 0);
	ASSERT_EQ(hmm_folio_stats(self->fd, &after), 0);
	/* All of it is free again, whole or as split pieces. */
	ASSERT_EQ(after.free_pages - before.free_pages,
		  after.total_pages - before.total_pages)
		TH_LOG("device memory not freed: %llu free pages, %llu before",
		       (unsigned long long)after.free_pages,
		       (unsigned long long)before.free_pages);

	reuse_at_orders(_metadata, self, variant, base, &gen);
	ASSERT_EQ(hmm_folio_stats(self->fd, &after), 0);
	ASSERT_GE(after.cross_order_pages - before.cross_order_pages,
		  self->npages)
		TH_LOG("no page was handed out at another order");

	/* And back up: the next THP is assembled over the same block again. */
	p = HMM_FOLIO_NEW_RANGE(self->size, true, ++gen);
	ASSERT_EQ(range_to_device(_metadata, self, p, gen, self->pmd_order), base)
		TH_LOG("the PMD folio did not go back to the freed block");
	range_back(_metadata, self, p, gen, variant->back);
	ASSERT_EQ(munmap(p, self->size), 0);
}

/*
 * Eviction over a freed large folio's stale head page. A device that
 * reuses a freed PMD folio's memory from its end (HMM_DMIRROR_POLICY_HIGHEST)
 * leaves the old head page B (and B + 1) free while the pages after it are
 * live order-0 folios. The struct pages of free device memory still describe
 * the old order-9 folio. Closing a mirror evicts all device memory with
 * migrate_device_range(), which must bring every live page back to system
 * memory however stale the free pages next to them are.
 *
 * Kernel bug (7.2.13): migrate_device_range() takes folio_nr_pages() of
 * every PFN, also of a free page it could not lock, and skips that many
 * PFNs: the stale head says 512, so the 511 pages after it stay on the
 * device (and memunmap_pages() would wait for them forever on device
 * removal). The rows that leave the head free report that known bug
 * (selftests/fixes/known-bugs) when, and only when, every live page stayed
 * on the device; the other two show the same steps pass when the head page
 * is reused (LOWEST) or was never part of a folio.
 */
FIXTURE(evict)
{
	struct hmm_folio_kmsg kmsg;
	int fd;
	unsigned int old_policy;
	bool policy_set;
};

FIXTURE_VARIANT(evict)
{
	unsigned int policy;		/* HMM_DMIRROR_POLICY_* */
	bool thp_first;			/* free a PMD folio there first */
	unsigned long head_free;	/* pages of it not reused */
};

FIXTURE_VARIANT_ADD(evict, head_and_first_tail_free) {
	.policy = HMM_DMIRROR_POLICY_HIGHEST, .thp_first = true, .head_free = 2,
};

FIXTURE_VARIANT_ADD(evict, head_free) {
	.policy = HMM_DMIRROR_POLICY_HIGHEST, .thp_first = true, .head_free = 1,
};

FIXTURE_VARIANT_ADD(evict, head_reused) {
	.policy = HMM_DMIRROR_POLICY_LOWEST, .thp_first = true, .head_free = 2,
};

FIXTURE_VARIANT_ADD(evict, fresh_memory) {
	.policy = HMM_DMIRROR_POLICY_HIGHEST, .thp_first = false, .head_free = 2,
};

FIXTURE_SETUP(evict)
{
	const char *why = NULL;
	int ret;

	self->policy_set = false;
	HMM_FOLIO_REQUIRE(hmm_folio_fixture_open(&self->kmsg, &self->fd,
						 HMM_FOLIO_NEED_ALL, &why), why);
	/* The extension has HIGHEST (patch 0011): EINVAL is a FAIL. */
	ret = hmm_folio_set_policy(self->fd, variant->policy,
				   &self->old_policy);
	ASSERT_EQ(ret, 0)
		TH_LOG("HMM_DMIRROR_SET_POLICY(%u): %s", variant->policy,
		       strerror(-ret));
	self->policy_set = true;
}

FIXTURE_TEARDOWN(evict)
{
	if (self->policy_set)
		hmm_folio_set_policy(self->fd, self->old_policy, NULL);
	HMM_FOLIO_FAIL_ON_SPLATS(hmm_folio_fixture_close(&self->kmsg, &self->fd));
}

TEST_F_TIMEOUT(evict, close_after_reuse_from_the_end, HMM_FOLIO_TIMEOUT(30))
{
	size_t size = read_pmd_pagesize();
	unsigned long npages = size / psize();
	unsigned long nsmall = npages - variant->head_free, i;
	struct hmm_dmirror_devpfn *pfns = calloc(npages, sizeof(*pfns));
	void *mirror = malloc(size);
	struct hmm_dmirror_cmd cmd;
	const char *why;
	__u64 base = 0;
	char *p, *q;
	long left;
	int fd;

	ASSERT_NE(pfns, NULL);
	ASSERT_NE(mirror, NULL);

	/* An order-9 device folio at B, freed. */
	if (variant->thp_first) {
		p = hmm_folio_thp_on_device(self->fd, size, 1);
		ASSERT_NE(p, NULL);
		ASSERT_EQ(hmm_folio_devpfn(self->fd, p, npages, pfns), 0);
		base = pfns[0].offset;
		ASSERT_EQ(pfns[0].order, sz2ord(size, psize()));
		ASSERT_EQ(munmap(p, size), 0);
	}

	/* Order-0 folios in it: HIGHEST from B + 511 down, LOWEST from B. */
	q = hmm_folio_map_aligned(size);
	ASSERT_NE(q, NULL);
	ASSERT_EQ(madvise(q, size, MADV_NOHUGEPAGE), 0);
	hmm_folio_fill(q, nsmall * psize(), (uintptr_t)q, 2);
	ASSERT_EQ(hmm_folio_cmd(self->fd, HMM_DMIRROR_MIGRATE_TO_DEV, q, mirror,
				nsmall, &cmd), 0);
	ASSERT_EQ(cmd.cpages, nsmall);
	ASSERT_EQ(hmm_folio_devpfn(self->fd, q, nsmall, pfns), 0);
	for (i = 0; i < nsmall && variant->thp_first; i++) {
		__u64 lo = base, hi = base + npages;

		if (variant->policy == HMM_DMIRROR_POLICY_HIGHEST)
			lo += variant->head_free;
		ASSERT_EQ(pfns[i].order, 0);
		ASSERT_TRUE(pfns[i].offset >= lo && pfns[i].offset < hi)
			TH_LOG("page %lu at offset %#llx, not in [%#llx, %#llx)",
			       i, (unsigned long long)pfns[i].offset,
			       (unsigned long long)lo, (unsigned long long)hi);
	}

	/* Closing any mirror of the device evicts all its memory. */
	fd = hmm_folio_open(0, &why);
	ASSERT_GE(fd, 0);
	ASSERT_EQ(close(fd), 0);
	left = hmm_folio_snapshot_expect(self->fd, q, nsmall,
					 HMM_FOLIO_SNAP_SYSTEM,
					 "small folios after the eviction");
	/* The bug's symptom: every live page after the stale head stays. */
	if (variant->thp_first && variant->policy == HMM_DMIRROR_POLICY_HIGHEST &&
	    left == (long)nsmall &&
	    !hmm_folio_snapshot_expect(self->fd, q, nsmall,
				       HMM_FOLIO_PROT_DEV_PTE, "left behind"))
		HMM_FOLIO_XFAIL_KNOWN("migrate_device_range_stale_head",
				    "%lu of %lu pages still on the device after the eviction (free head at %#llx)",
				    nsmall, nsmall, (unsigned long long)base);
	ASSERT_EQ(left, 0)
		TH_LOG("the eviction left %ld of %lu pages on the device",
		       left, nsmall);
	ASSERT_EQ(hmm_folio_check_tags(q, nsmall * psize(), (uintptr_t)q, 2,
				       "CPU view after the eviction"), 0);
	ASSERT_EQ(munmap(q, size), 0);
	free(mirror);
	free(pfns);
}

/*
 * Eviction of a device THP split on the device. Moving one page of it back
 * (MIGRATE_TO_SYS of page 1) splits the device folio into order-0 folios,
 * and test_hmm's split callback splits its backing pages with it; then the
 * device's memory is evicted (a mirror closed, or HMM_DMIRROR_RELEASE):
 * every page comes back with its data. Before lib/test_hmm 0014 the head's
 * backing page kept PG_head with no pages, and the eviction's copy of it
 * ran over memory past its order-0 destination: the guest died.
 */
FIXTURE(evict_split)
{
	struct hmm_folio_kmsg kmsg;
	int fd;
};

FIXTURE_VARIANT(evict_split)
{
	bool release;		/* HMM_DMIRROR_RELEASE, else a mirror closed */
};

FIXTURE_VARIANT_ADD(evict_split, close) { .release = false };
FIXTURE_VARIANT_ADD(evict_split, release) { .release = true };

FIXTURE_SETUP(evict_split)
{
	const char *why = NULL;

	HMM_FOLIO_REQUIRE(hmm_folio_fixture_open(&self->kmsg, &self->fd,
						 HMM_FOLIO_NEED_ALL, &why), why);
}

FIXTURE_TEARDOWN(evict_split)
{
	HMM_FOLIO_FAIL_ON_SPLATS(hmm_folio_fixture_close(&self->kmsg, &self->fd));
}

TEST_F_TIMEOUT(evict_split, one_page_back_then_evict, HMM_FOLIO_TIMEOUT(30))
{
	size_t size = read_pmd_pagesize(), ps = psize();
	unsigned long npages = size / ps, i;
	struct hmm_dmirror_devpfn *pfns = calloc(npages, sizeof(*pfns));
	struct hmm_dmirror_cmd cmd;
	const char *why;
	char *p;
	int fd;

	ASSERT_NE(pfns, NULL);
	p = hmm_folio_thp_on_device(self->fd, size, 1);
	ASSERT_NE(p, NULL);
	ASSERT_EQ(hmm_folio_cmd(self->fd, HMM_DMIRROR_MIGRATE_TO_SYS, p + ps,
				NULL, 1, &cmd), 0);
	ASSERT_EQ(cmd.cpages, 1);
	ASSERT_EQ(hmm_folio_devpfn(self->fd, p, npages, pfns), 0);
	for (i = 0; i < npages; i++) {
		if (i == 1)
			continue;
		ASSERT_EQ(pfns[i].order, 0)
			TH_LOG("page %lu still in a folio of order %u on the device",
			       i, pfns[i].order);
	}
	ASSERT_EQ(hmm_folio_check_invariants(self->fd, HMM_DMIRROR_CHECK_RANGE,
					     0, p, npages), 0);
	HMM_FOLIO_STEP_DONE("one page of a device THP back: the folio split");

	if (variant->release) {
		ASSERT_EQ(hmm_folio_cmd(self->fd, HMM_DMIRROR_RELEASE, p, NULL,
					npages, NULL), 0);
	} else {
		fd = hmm_folio_open(0, &why);
		ASSERT_GE(fd, 0) TH_LOG("%s", why);
		ASSERT_EQ(close(fd), 0);
	}
	ASSERT_EQ(hmm_folio_snapshot_expect(self->fd, p, npages,
					    HMM_FOLIO_SNAP_SYSTEM,
					    "after the eviction"), 0);
	ASSERT_EQ(hmm_folio_check_tags(p, size, (uintptr_t)p, 1,
				       "CPU view after the eviction"), 0);
	HMM_FOLIO_STEP_DONE("the eviction of the split folio");
	ASSERT_EQ(munmap(p, size), 0);
	free(pfns);
}

/*
 * Kernel bugs this suite found (selftests/fixes/known-bugs): each test
 * reports its bug only on the bug's exact symptom.
 *
 * hmm_absent_pmd_offset: hmm_vma_handle_absent_pmd() (mm/hmm.c, 7.2) fills
 * the PFNs of a device-private PMD from the PMD's first PFN even when the
 * range starts inside the PMD, so a device that faults a moved device THP in
 * batches (test_hmm: 32 pages) sees page 0's data at page 32 and on: every
 * page i holds page (i mod batch)'s.
 */
FIXTURE(known_bugs)
{
	struct hmm_folio_kmsg kmsg;
	int fd;
};

FIXTURE_VARIANT(known_bugs)
{
	int unused;
};

FIXTURE_VARIANT_ADD(known_bugs, hmm_absent_pmd_offset) { 0 };

FIXTURE_SETUP(known_bugs)
{
	const char *why = NULL;

	HMM_FOLIO_REQUIRE(hmm_folio_fixture_open(&self->kmsg, &self->fd,
						 HMM_FOLIO_NEED_ALL, &why), why);
}

FIXTURE_TEARDOWN(known_bugs)
{
	HMM_FOLIO_FAIL_ON_SPLATS(hmm_folio_fixture_close(&self->kmsg, &self->fd));
}

/* Whether page i of @buf holds page (i mod @batch) of @p's tags, for all i. */
static bool pages_repeat(const char *buf, const char *p, unsigned long npages,
			 unsigned long batch)
{
	unsigned long i;

	for (i = 0; i < npages; i++)
		if (!hmm_folio_page_is(buf + i * psize(),
				       (uintptr_t)p + (i % batch) * psize(), 1))
			return false;
	return true;
}

TEST_F_TIMEOUT(known_bugs, device_read_after_mremap, HMM_FOLIO_TIMEOUT(30))
{
	size_t size = read_pmd_pagesize();
	unsigned long npages = size / psize(), first;
	char *p = hmm_folio_map_aligned(size);
	char *q = hmm_folio_map_aligned(size);
	char *mirror = malloc(size);

	ASSERT_NE(p, NULL);
	ASSERT_NE(q, NULL);
	ASSERT_NE(mirror, NULL);
	hmm_folio_fill(p, size, (uintptr_t)p, 1);
	ASSERT_TRUE(hmm_folio_is_thp(p, size));
	ASSERT_EQ(hmm_folio_cmd(self->fd, HMM_DMIRROR_MIGRATE_TO_DEV, p, mirror,
				npages, NULL), 0);
	/* The move empties the mirror's page table for the range. */
	ASSERT_EQ(mremap(p, size, size, MREMAP_MAYMOVE | MREMAP_FIXED, q), q);
	memset(mirror, 0, size);
	ASSERT_EQ(hmm_folio_cmd(self->fd, HMM_DMIRROR_READ, q, mirror, npages,
				NULL), 0);
	for (first = 0; first < npages; first++)
		if (!hmm_folio_page_is(mirror + first * psize(),
				       (uintptr_t)p + first * psize(), 1))
			break;
	if (first && first < npages && pages_repeat(mirror, p, npages, first))
		HMM_FOLIO_XFAIL_KNOWN("hmm_absent_pmd_offset",
				    "page %lu holds page 0's tag: every page i holds page i mod %lu's",
				    first, first);
	ASSERT_EQ(hmm_folio_check_tags(mirror, size, (uintptr_t)p, 1,
				       "device read of a moved device THP"), 0);
	free(mirror);
	munmap(q, size);
}

TEST_HARNESS_MAIN
