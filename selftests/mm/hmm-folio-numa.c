// SPDX-License-Identifier: GPL-2.0
/*
 * Memory policies around device-private large folios, through libnuma.
 *
 * policy: a THP placed by a memory policy goes to the device and is freed
 * there; the device memory is used again by a THP of a range with a policy
 * of its own, and the folio that comes back to system memory must land on
 * the node that range's policy names (move_pages() query and
 * get_mempolicy(MPOL_F_NODE | MPOL_F_ADDR)).
 *
 * mpol: mbind() with MPOL_MF_MOVE / MPOL_MF_STRICT, migrate_pages() and
 * move_pages() over a range that is partly or wholly on the device. The
 * page table walks meet device-private PMDs and PTEs there: they must fail
 * or skip those pages cleanly, move the system pages, and leave every
 * page's data intact.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>

#ifdef HAVE_LIBNUMA
#include <numa.h>
#include <numaif.h>
#else
/* Built without libnuma: every fixture skips before any of these is used. */
#include <linux/mempolicy.h>
static int numa_available(void)
{
	return -1;
}

static int numa_max_node(void)
{
	return 0;
}

static long long numa_node_size64(int node, long long *freep)
{
	return -1;
}

static void *numa_alloc_onnode(size_t size, int node)
{
	return NULL;
}

static void numa_free(void *p, size_t size)
{
}

static long mbind(void *a, unsigned long l, int m, const unsigned long *n,
		  unsigned long mx, unsigned int f)
{
	return -1;
}

static long get_mempolicy(int *m, unsigned long *n, unsigned long mx,
			  void *a, unsigned long f)
{
	return -1;
}

static long set_mempolicy(int m, const unsigned long *n, unsigned long mx)
{
	return -1;
}

static long migrate_pages(int pid, unsigned long mx, const unsigned long *o,
			  const unsigned long *n)
{
	return -1;
}

static long move_pages(int pid, unsigned long c, void **p, const int *n,
		       int *s, int f)
{
	return -1;
}
#endif

#include "kselftest_harness.h"
#include "vm_util.h"
#include "hmm_folio_util.h"

/* Sizes of the nodemasks passed to the syscalls. */
#define NUMA_MAXNODE	(sizeof(unsigned long) * 8)

/*
 * Why a NUMA test cannot run here, or NULL: libnuma, a NUMA kernel, and the
 * two nodes with memory the tests move pages between.
 */
static const char *numa_why_not(void)
{
#ifndef HAVE_LIBNUMA
	return "built without libnuma (libnuma-dev was missing at build time)";
#endif
	if (numa_available() < 0)
		return "NUMA not available (kernel without CONFIG_NUMA, or numa=off)";
	if (numa_max_node() < 1)
		return "only one NUMA node: the tests need nodes 0 and 1";
	if (numa_node_size64(0, NULL) <= 0 || numa_node_size64(1, NULL) <= 0)
		return "NUMA node 0 or 1 has no memory";
	return NULL;
}

static long range_policy(void *p, size_t size, int mode, int node,
		      unsigned int flags)
{
	unsigned long mask = 1UL << node;

	return mbind(p, size, mode, mode == MPOL_DEFAULT ? NULL : &mask,
		     NUMA_MAXNODE, flags);
}

/*
 * Node of every page of [p, +npages) by a move_pages() query: the node, or
 * a negative errno for a page that is not in system memory (device-private
 * pages are not present to the CPU: -ENOENT).
 */
static int numa_query(char *p, unsigned long npages, void **pages, int *status)
{
	unsigned long i;

	for (i = 0; i < npages; i++)
		pages[i] = p + i * psize();
	return move_pages(0, npages, pages, NULL, status, 0);
}

/* Every page of [p, +npages) must be on @node (negative: not in memory). */
static void numa_expect_node(struct __test_metadata *_metadata, void **pages,
			     int *status, char *p, unsigned long npages,
			     int node, const char *step)
{
	unsigned long i;

	ASSERT_EQ(numa_query(p, npages, pages, status), 0);
	for (i = 0; i < npages; i++) {
		if (node < 0) {
			ASSERT_LT(status[i], 0)
				TH_LOG("%s: page %lu on node %d, expected not in system memory",
				       step, i, status[i]);
		} else {
			ASSERT_EQ(status[i], node)
				TH_LOG("%s: page %lu on node %d, expected %d",
				       step, i, status[i], node);
		}
	}
}

#define EXPECT_NODE(p, npages, node, step)				\
	numa_expect_node(_metadata, self->pages, self->status, p, npages, \
			 node, step)

/* Nothing of [p, +npages) may be device memory. */
static void numa_expect_system(struct __test_metadata *_metadata, int fd,
			       unsigned char *m, char *p,
			       unsigned long npages, const char *step)
{
	struct hmm_dmirror_cmd cmd;
	unsigned long i;

	ASSERT_EQ(hmm_folio_cmd(fd, HMM_DMIRROR_SNAPSHOT, p, m, npages, &cmd),
		  0);
	for (i = 0; i < npages; i++)
		ASSERT_TRUE(!(m[i] & 0xf0) && (m[i] & HMM_DMIRROR_PROT_WRITE))
			TH_LOG("%s: page %lu snapshot %#x", step, i, m[i]);
}

/* ------------------------------------------------------------------------
 * policy: where a folio faulted back from reused device memory lands.
 */

/* Back (enum back_how, hmm_folio_util.h) by READ, WRITE or MIGRATE. */

enum place_how {
	PLACE_MBIND,	/* mbind() of the range before it is touched */
	PLACE_ONNODE,	/* numa_alloc_onnode() */
	PLACE_TASK,	/* set_mempolicy() of the task, no VMA policy */
};

FIXTURE(policy)
{
	struct hmm_folio_kmsg kmsg;
	int fd;
	unsigned int old_policy;
	bool policy_set;
	size_t size;
	unsigned long npages;
	void *mirror;
	struct hmm_dmirror_devpfn *pfns;
	void **pages;
	int *status;
	void *onnode;
};

FIXTURE_VARIANT(policy)
{
	enum place_how place;
	int mode;		/* of the second range */
	int first;		/* node of the THP freed on the device */
	int second;		/* node the second range's policy names */
	enum back_how back;
};

#define POLICY(name, pl, m, n1, n2, b) FIXTURE_VARIANT_ADD(policy, name) \
	{ .place = pl, .mode = m, .first = n1, .second = n2, .back = b }
/* Same node both times: the policy, not chance, picks the node. */
POLICY(bind1_read, PLACE_MBIND, MPOL_BIND, 1, 1, BACK_READ);
POLICY(bind1_write, PLACE_MBIND, MPOL_BIND, 1, 1, BACK_WRITE);
POLICY(bind1_migrate, PLACE_MBIND, MPOL_BIND, 1, 1, BACK_MIGRATE);
/* The reused device memory held node 1's data: node 0 is asked for now. */
POLICY(bind0_after1_read, PLACE_MBIND, MPOL_BIND, 1, 0, BACK_READ);
POLICY(bind0_after1_migrate, PLACE_MBIND, MPOL_BIND, 1, 0, BACK_MIGRATE);
POLICY(preferred1_after0_write, PLACE_MBIND, MPOL_PREFERRED, 0, 1, BACK_WRITE);
POLICY(onnode1_read, PLACE_ONNODE, MPOL_BIND, 1, 1, BACK_READ);
POLICY(onnode0_after1_write, PLACE_ONNODE, MPOL_BIND, 1, 0, BACK_WRITE);
/* No VMA policy: the task's policy governs the fault-back. */
POLICY(task1_read, PLACE_TASK, MPOL_BIND, 0, 1, BACK_READ);
POLICY(task1_migrate, PLACE_TASK, MPOL_BIND, 0, 1, BACK_MIGRATE);

FIXTURE_SETUP(policy)
{
	const char *why = numa_why_not();

	self->mirror = NULL;
	self->pfns = NULL;
	self->pages = NULL;
	self->status = NULL;
	self->onnode = NULL;
	self->policy_set = false;
	self->fd = -1;
	self->kmsg.fd = -1;
	if (why)
		SKIP(return, "%s", why);
	HMM_FOLIO_REQUIRE(hmm_folio_fixture_open(&self->kmsg, &self->fd,
						 HMM_FOLIO_NEED_ALL, &why), why);
	self->size = read_pmd_pagesize();
	self->npages = self->size / psize();
	self->mirror = malloc(self->size);
	self->pfns = calloc(self->npages, sizeof(*self->pfns));
	self->pages = calloc(self->npages, sizeof(*self->pages));
	self->status = calloc(self->npages, sizeof(*self->status));
	ASSERT_TRUE(self->mirror && self->pfns && self->pages && self->status);
	/* The just-freed device block is the next one handed out. */
	ASSERT_EQ(hmm_folio_set_policy(self->fd, HMM_DMIRROR_POLICY_LOWEST,
				       &self->old_policy), 0);
	self->policy_set = true;
}

FIXTURE_TEARDOWN(policy)
{
	int splats;

	if (variant->place == PLACE_TASK)
		set_mempolicy(MPOL_DEFAULT, NULL, 0);
	if (self->policy_set)
		hmm_folio_set_policy(self->fd, self->old_policy, NULL);
	splats = hmm_folio_fixture_close(&self->kmsg, &self->fd);
	free(self->mirror);
	free(self->pfns);
	free(self->pages);
	free(self->status);
	HMM_FOLIO_FAIL_ON_SPLATS(splats);
}

/*
 * A PMD-aligned THP whose pages the policy @mode places on @node, tagged
 * with @gen. With numa_alloc_onnode() the THP is the aligned middle of a
 * twice as large allocation (kept in self->onnode).
 */
static char *policy_thp(struct __test_metadata *_metadata,
			FIXTURE_DATA(policy) *self,
			const FIXTURE_VARIANT(policy) *variant, int mode,
			int node, unsigned int gen)
{
	unsigned long mask = 1UL << node;
	char *p = NULL;

	switch (variant->place) {
	case PLACE_MBIND:
		p = hmm_folio_map_aligned(self->size);
		ASSERT_NE(p, NULL);
		ASSERT_EQ(range_policy(p, self->size, mode, node, 0), 0)
			TH_LOG("mbind node %d: %s", node, strerror(errno));
		break;
	case PLACE_ONNODE:
		self->onnode = numa_alloc_onnode(2 * self->size, node);
		ASSERT_NE(self->onnode, NULL);
		p = (char *)(((uintptr_t)self->onnode + self->size - 1) &
			     ~(self->size - 1));
		ASSERT_EQ(madvise(p, self->size, MADV_HUGEPAGE), 0);
		break;
	case PLACE_TASK:
		ASSERT_EQ(set_mempolicy(mode, &mask, NUMA_MAXNODE), 0)
			TH_LOG("set_mempolicy node %d: %s", node,
			       strerror(errno));
		p = hmm_folio_map_aligned(self->size);
		ASSERT_NE(p, NULL);
		break;
	}
	ASSERT_NE(p, NULL);
	hmm_folio_fill(p, self->size, (uintptr_t)p, gen);
	ASSERT_TRUE(hmm_folio_is_thp(p, self->size))
		TH_LOG("no PMD-sized THP at %p after MADV_HUGEPAGE", p);
	EXPECT_NODE(p, self->npages, node, "new THP");
	return p;
}

static void policy_free(FIXTURE_DATA(policy) *self,
			const FIXTURE_VARIANT(policy) *variant, char *p)
{
	if (variant->place == PLACE_ONNODE) {
		numa_free(self->onnode, 2 * self->size);
		self->onnode = NULL;
	} else {
		munmap(p, self->size);
	}
}

/* To the device as one PMD folio; returns the device offset of page 0. */
static __u64 policy_to_device(struct __test_metadata *_metadata,
			      FIXTURE_DATA(policy) *self, char *p,
			      unsigned int gen)
{
	unsigned long i;

	ASSERT_EQ(hmm_folio_to_device(self->fd, p, self->size, self->mirror,
				      gen, HMM_FOLIO_PROT_DEV_PMD), 0);
	ASSERT_EQ(hmm_folio_devpfn(self->fd, p, self->npages, self->pfns), 0);
	for (i = 0; i < self->npages; i++)
		ASSERT_EQ(self->pfns[i].offset, self->pfns[0].offset + i)
			TH_LOG("page %lu not in one device block", i);
	ASSERT_EQ(hmm_folio_check_invariants(self->fd, HMM_DMIRROR_CHECK_RANGE, 0,
					     p, self->npages), 0);
	EXPECT_NODE(p, self->npages, -1, "on the device");
	return self->pfns[0].offset;
}

TEST_F_TIMEOUT(policy, fault_back_node, HMM_FOLIO_TIMEOUT(60))
{
	unsigned int gen = 1;
	__u64 block;
	int node = -1;
	char *p;

	/* A THP of node .first goes to the device and is freed there. */
	p = policy_thp(_metadata, self, variant, MPOL_BIND, variant->first,
		       gen);
	block = policy_to_device(_metadata, self, p, gen);
	policy_free(self, variant, p);

	/* The next THP, placed by another policy, reuses its device block. */
	gen++;
	p = policy_thp(_metadata, self, variant, variant->mode, variant->second,
		       gen);
	ASSERT_EQ(policy_to_device(_metadata, self, p, gen), block)
		TH_LOG("the freed device block was not reused");

	ASSERT_EQ(hmm_folio_back(self->fd, p, self->size, self->mirror, &gen,
				 variant->back), 0);
	numa_expect_system(_metadata, self->fd, self->mirror, p, self->npages,
			   "after fault-back");
	EXPECT_NODE(p, self->npages, variant->second, "after fault-back");
	ASSERT_EQ(get_mempolicy(&node, NULL, 0, p, MPOL_F_NODE | MPOL_F_ADDR),
		  0);
	ASSERT_EQ(node, variant->second)
		TH_LOG("get_mempolicy(MPOL_F_NODE | MPOL_F_ADDR): node %d",
		       node);
	policy_free(self, variant, p);
}

/* ------------------------------------------------------------------------
 * mpol: NUMA syscalls over a range that is partly or wholly on the device.
 */

enum where_how {
	WHERE_WHOLE,	/* both THPs on the device as PMD folios */
	WHERE_PART,	/* the first THP on the device, the second in memory */
	WHERE_SPLIT,	/* half of the first THP on the device as order-0 pages */
};

enum op_how {
	OP_MBIND_MOVE,		/* mbind(MPOL_BIND 1, MPOL_MF_MOVE) */
	OP_MBIND_STRICT,	/* mbind(MPOL_BIND 1, MPOL_MF_STRICT): no move */
	OP_MBIND_MOVE_STRICT,	/* MPOL_MF_MOVE | MPOL_MF_STRICT */
	OP_MIGRATE_PAGES,	/* migrate_pages(0 -> 1) of the whole process */
	OP_MOVE_PAGES,		/* move_pages() of every page to node 1 */
};

FIXTURE(mpol)
{
	struct hmm_folio_kmsg kmsg;
	int fd;
	size_t size;		/* of the range: two THPs */
	unsigned long npages;
	unsigned long pmd_pages;
	void *mirror;
	void **pages;
	int *status;
	int *nodes;
};

FIXTURE_VARIANT(mpol)
{
	enum op_how op;
	enum where_how where;
};

#define MPOL(o, w, oe, we) FIXTURE_VARIANT_ADD(mpol, o##_##w)	\
	{ .op = oe, .where = we }
MPOL(mbind_move, whole, OP_MBIND_MOVE, WHERE_WHOLE);
MPOL(mbind_move, part, OP_MBIND_MOVE, WHERE_PART);
MPOL(mbind_move, split, OP_MBIND_MOVE, WHERE_SPLIT);
MPOL(mbind_strict, whole, OP_MBIND_STRICT, WHERE_WHOLE);
MPOL(mbind_strict, part, OP_MBIND_STRICT, WHERE_PART);
MPOL(mbind_strict, split, OP_MBIND_STRICT, WHERE_SPLIT);
MPOL(mbind_move_strict, whole, OP_MBIND_MOVE_STRICT, WHERE_WHOLE);
MPOL(mbind_move_strict, part, OP_MBIND_MOVE_STRICT, WHERE_PART);
MPOL(mbind_move_strict, split, OP_MBIND_MOVE_STRICT, WHERE_SPLIT);
MPOL(migrate_pages, whole, OP_MIGRATE_PAGES, WHERE_WHOLE);
MPOL(migrate_pages, part, OP_MIGRATE_PAGES, WHERE_PART);
MPOL(migrate_pages, split, OP_MIGRATE_PAGES, WHERE_SPLIT);
MPOL(move_pages, whole, OP_MOVE_PAGES, WHERE_WHOLE);
MPOL(move_pages, part, OP_MOVE_PAGES, WHERE_PART);
MPOL(move_pages, split, OP_MOVE_PAGES, WHERE_SPLIT);

FIXTURE_SETUP(mpol)
{
	const char *why = numa_why_not();

	self->mirror = NULL;
	self->pages = NULL;
	self->status = NULL;
	self->nodes = NULL;
	self->fd = -1;
	self->kmsg.fd = -1;
	if (why)
		SKIP(return, "%s", why);
	HMM_FOLIO_REQUIRE(hmm_folio_fixture_open(&self->kmsg, &self->fd,
						 HMM_FOLIO_NEED_THP, &why), why);
	self->pmd_pages = read_pmd_pagesize() / psize();
	self->size = 2 * read_pmd_pagesize();
	self->npages = self->size / psize();
	self->mirror = malloc(self->size);
	self->pages = calloc(self->npages, sizeof(*self->pages));
	self->status = calloc(self->npages, sizeof(*self->status));
	self->nodes = calloc(self->npages, sizeof(*self->nodes));
	ASSERT_TRUE(self->mirror && self->pages && self->status && self->nodes);
}

FIXTURE_TEARDOWN(mpol)
{
	int splats = hmm_folio_fixture_close(&self->kmsg, &self->fd);

	free(self->mirror);
	free(self->pages);
	free(self->status);
	free(self->nodes);
	HMM_FOLIO_FAIL_ON_SPLATS(splats);
}

/* Pages of the range the variant puts on the device. */
static unsigned long mpol_dev_pages(FIXTURE_DATA(mpol) *self,
				    const FIXTURE_VARIANT(mpol) *variant)
{
	switch (variant->where) {
	case WHERE_WHOLE:
		return self->npages;
	case WHERE_PART:
		return self->pmd_pages;
	case WHERE_SPLIT:
		return self->pmd_pages / 2;
	}
	return 0;
}

/* Run the variant's syscall; returns what it returned (errno in *err). */
static long mpol_op(FIXTURE_DATA(mpol) *self,
		    const FIXTURE_VARIANT(mpol) *variant, char *p, int *err)
{
	unsigned long from = 1UL << 0, to = 1UL << 1;
	unsigned long i;
	long ret = -1;

	switch (variant->op) {
	case OP_MBIND_MOVE:
		ret = range_policy(p, self->size, MPOL_BIND, 1, MPOL_MF_MOVE);
		break;
	case OP_MBIND_STRICT:
		ret = range_policy(p, self->size, MPOL_BIND, 1, MPOL_MF_STRICT);
		break;
	case OP_MBIND_MOVE_STRICT:
		ret = range_policy(p, self->size, MPOL_BIND, 1,
				MPOL_MF_MOVE | MPOL_MF_STRICT);
		break;
	case OP_MIGRATE_PAGES:
		ret = migrate_pages(0, NUMA_MAXNODE, &from, &to);
		break;
	case OP_MOVE_PAGES:
		for (i = 0; i < self->npages; i++) {
			self->pages[i] = p + i * psize();
			self->nodes[i] = 1;
		}
		ret = move_pages(0, self->npages, self->pages, self->nodes,
				 self->status, MPOL_MF_MOVE);
		break;
	}
	*err = ret < 0 ? errno : 0;
	return ret;
}

/* What the syscall answered, @ndev pages of the range being on the device. */
static void mpol_expect_answer(struct __test_metadata *_metadata,
			       FIXTURE_DATA(mpol) *self,
			       const FIXTURE_VARIANT(mpol) *variant,
			       unsigned long ndev, long ret, int err)
{
	unsigned long i;

	switch (variant->op) {
	case OP_MBIND_MOVE:
		/* Device pages are skipped, not failures: nothing to move. */
		ASSERT_EQ(ret, 0) TH_LOG("mbind: %s", strerror(err));
		break;
	case OP_MBIND_STRICT:
	case OP_MBIND_MOVE_STRICT:
		/* EIO: pages on the wrong node that stay there. */
		ASSERT_TRUE(!ret || err == EIO)
			TH_LOG("mbind: %ld %s", ret, strerror(err));
		break;
	case OP_MIGRATE_PAGES:
		/* The number of pages that could not be moved. */
		ASSERT_GE(ret, 0) TH_LOG("migrate_pages: %s", strerror(err));
		break;
	case OP_MOVE_PAGES:
		ASSERT_GE(ret, 0) TH_LOG("move_pages: %s", strerror(err));
		for (i = 0; i < self->npages; i++) {
			if (i < ndev) {
				ASSERT_LT(self->status[i], 0)
					TH_LOG("device page %lu: status %d",
					       i, self->status[i]);
			} else {
				/* EBUSY: its THP was queued by an earlier page. */
				ASSERT_TRUE(self->status[i] == 1 ||
					    self->status[i] == -EBUSY)
					TH_LOG("page %lu: status %d", i,
					       self->status[i]);
			}
		}
		break;
	}
}

TEST_F_TIMEOUT(mpol, device_range, HMM_FOLIO_TIMEOUT(60))
{
	unsigned long ndev = mpol_dev_pages(self, variant);
	unsigned char dev_prot = variant->where == WHERE_SPLIT ?
		HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_WRITE :
		HMM_FOLIO_PROT_DEV_PMD;
	bool moves = variant->op != OP_MBIND_STRICT;
	struct hmm_dmirror_cmd cmd;
	unsigned int gen = 1;
	long ret;
	int err;
	char *p;

	/* Two THPs on node 0, then no VMA policy: nothing pins them there. */
	p = hmm_folio_map_aligned(self->size);
	ASSERT_NE(p, NULL);
	ASSERT_EQ(range_policy(p, self->size, MPOL_BIND, 0, 0), 0);
	hmm_folio_fill(p, self->size, (uintptr_t)p, gen);
	ASSERT_TRUE(hmm_folio_is_thp(p, 2 * read_pmd_pagesize()))
		TH_LOG("no PMD-sized THPs at %p after MADV_HUGEPAGE", p);
	ASSERT_EQ(range_policy(p, self->size, MPOL_DEFAULT, 0, 0), 0);
	EXPECT_NODE(p, self->npages, 0, "new THPs");

	ASSERT_EQ(hmm_folio_cmd(self->fd, HMM_DMIRROR_MIGRATE_TO_DEV, p,
				self->mirror, ndev, &cmd), 0);
	ASSERT_EQ(hmm_folio_check_tags(self->mirror, ndev * psize(), (uintptr_t)p,
				       gen, "device copy after MIGRATE_TO_DEV"), 0);
	ASSERT_EQ(hmm_folio_snapshot_expect(self->fd, p, ndev, dev_prot,
					    "after MIGRATE_TO_DEV"), 0);
	EXPECT_NODE(p, ndev, -1, "on the device");

	ret = mpol_op(self, variant, p, &err);
	mpol_expect_answer(_metadata, self, variant, ndev, ret, err);

	/* The device pages stay where they are, with their data. */
	ASSERT_EQ(hmm_folio_snapshot_expect(self->fd, p, ndev, dev_prot,
					    "after the syscall"), 0);
	ASSERT_EQ(hmm_folio_cmd(self->fd, HMM_DMIRROR_READ, p, self->mirror,
				ndev, &cmd), 0);
	ASSERT_EQ(hmm_folio_check_tags(self->mirror, ndev * psize(), (uintptr_t)p,
				       gen, "device copy after the syscall"), 0);
	/* The system pages moved to node 1, unless only checked. */
	if (ndev < self->npages)
		EXPECT_NODE(p + ndev * psize(), self->npages - ndev,
			    moves ? 1 : 0, "system pages after the syscall");

	/* Back to system memory: data intact. */
	ASSERT_EQ(hmm_folio_check_tags(p, self->size, (uintptr_t)p, gen,
				       "CPU view after fault-back"), 0);
	numa_expect_system(_metadata, self->fd, self->mirror, p, self->npages,
			   "after fault-back");
	/* mbind() that succeeded set the policy (an EIO one sets nothing). */
	if (!ret && variant->op != OP_MIGRATE_PAGES &&
	    variant->op != OP_MOVE_PAGES)
		EXPECT_NODE(p, ndev, 1, "device pages after fault-back");
	ASSERT_EQ(munmap(p, self->size), 0);
}

TEST_HARNESS_MAIN
