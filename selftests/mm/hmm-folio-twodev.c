// SPDX-License-Identifier: GPL-2.0
/*
 * Two device-private devices (/dev/hmm_dmirror0 and 1): a THP moves from
 * device 0 to device 1 as a PMD-order folio, each device's freed memory is
 * reused at other orders while the other device holds the data, and the data
 * comes back intact. Needs the lib/test_hmm patches (LOWEST policy, DEVPFN,
 * CHECK) on both devices.
 *
 * test_hmm gives each device its own pgmap owner, so hmm_range_fault() of
 * one device does not report the other's device-private pages: a SNAPSHOT
 * through the other device reads HMM_DMIRROR_PROT_NONE for a device PTE and
 * HMM_DMIRROR_PROT_ERROR for a device PMD (hmm_vma_handle_absent_pmd()),
 * never DEV_PRIVATE_REMOTE (only reachable with one owner for both, or with
 * device-coherent memory); and migrate_vma with MIGRATE_VMA_SELECT_SYSTEM
 * does not take them: data moves between the two through system memory.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "kselftest_harness.h"
#include "vm_util.h"
#include "hmm_folio_util.h"

enum move_how {
	MOVE_MIGRATE,		/* MIGRATE_TO_SYS on device 0, then to device 1 */
	MOVE_DEVICE_READ,	/* device 1 reads it (faults it off device 0) */
	MOVE_CPU_WRITE,		/* a CPU write brings it back, then to device 1 */
};

/* Freed (on device 1) by FREE_MUNMAP, FREE_EXIT or FREE_CLOSE. */

FIXTURE(twodev)
{
	struct hmm_folio_kmsg kmsg;
	int fd[2];
	unsigned int old_policy[2];
	bool policy_set[2];
	size_t size;
	unsigned long npages;
	unsigned int pmd_order;
	void *mirror;
	struct hmm_dmirror_devpfn *pfns;
};

FIXTURE_VARIANT(twodev)
{
	enum move_how move;
	enum free_how free;
};

#define TWODEV(name, m, f) FIXTURE_VARIANT_ADD(twodev, name)	\
	{ .move = m, .free = f }
TWODEV(migrate_munmap, MOVE_MIGRATE, FREE_MUNMAP);
TWODEV(migrate_exit, MOVE_MIGRATE, FREE_EXIT);
TWODEV(device_read_munmap, MOVE_DEVICE_READ, FREE_MUNMAP);
TWODEV(device_read_close, MOVE_DEVICE_READ, FREE_CLOSE);
TWODEV(cpu_write_munmap, MOVE_CPU_WRITE, FREE_MUNMAP);
TWODEV(cpu_write_exit, MOVE_CPU_WRITE, FREE_EXIT);

FIXTURE_SETUP(twodev)
{
	const char *why = NULL;
	int i;

	self->mirror = NULL;
	self->pfns = NULL;
	self->fd[1] = -1;
	self->policy_set[0] = false;
	self->policy_set[1] = false;
	HMM_FOLIO_REQUIRE(hmm_folio_fixture_open(&self->kmsg, &self->fd[0],
						 HMM_FOLIO_NEED_ALL, &why), why);
	/* test_hmm makes its private devices in pairs: no device 1 is a FAIL. */
	self->fd[1] = hmm_folio_open(1, &why);
	ASSERT_GE(self->fd[1], 0)
		TH_LOG("device 1: %s", why);
	ASSERT_EQ(hmm_folio_ext_probe(self->fd[1], &why), 0)
		TH_LOG("device 1: %s", why);
	self->size = read_pmd_pagesize();
	self->npages = self->size / psize();
	self->pmd_order = sz2ord(self->size, psize());
	self->mirror = malloc(self->size);
	self->pfns = calloc(self->npages, sizeof(*self->pfns));
	ASSERT_NE(self->mirror, NULL);
	ASSERT_NE(self->pfns, NULL);
	for (i = 0; i < 2; i++) {
		ASSERT_EQ(hmm_folio_set_policy(self->fd[i],
					       HMM_DMIRROR_POLICY_LOWEST,
					       &self->old_policy[i]), 0);
		self->policy_set[i] = true;
	}
}

FIXTURE_TEARDOWN(twodev)
{
	int i, splats;

	for (i = 1; i >= 0; i--) {
		if (self->fd[i] < 0)
			continue;
		if (self->policy_set[i])
			hmm_folio_set_policy(self->fd[i], self->old_policy[i],
					     NULL);
		if (i)
			close(self->fd[i]);
	}
	splats = hmm_folio_fixture_close(&self->kmsg, &self->fd[0]);
	free(self->mirror);
	free(self->pfns);
	HMM_FOLIO_FAIL_ON_SPLATS(splats);
}

/*
 * Where [p, +npages) is on device @dev: every page at @order in one run of
 * device offsets (order 0: anywhere), or nowhere (@order < 0). Returns the
 * device offset of the first page.
 */
static __u64 expect_on(struct __test_metadata *_metadata,
		       FIXTURE_DATA(twodev) *self, int dev, char *p, int order,
		       const char *step)
{
	unsigned long i;

	ASSERT_EQ(hmm_folio_devpfn(self->fd[dev], p, self->npages,
				   self->pfns), 0);
	for (i = 0; i < self->npages; i++) {
		struct hmm_dmirror_devpfn *d = &self->pfns[i];

		if (order < 0) {
			ASSERT_EQ(d->offset, HMM_DMIRROR_DEVPFN_NONE)
				TH_LOG("%s: page %lu on device %d", step, i, dev);
			continue;
		}
		ASSERT_NE(d->offset, HMM_DMIRROR_DEVPFN_NONE)
			TH_LOG("%s: page %lu not on device %d", step, i, dev);
		ASSERT_EQ(d->order, (unsigned int)order)
			TH_LOG("%s: page %lu order %u on device %d", step, i,
			       d->order, dev);
		if (order)
			ASSERT_EQ(d->offset, self->pfns[0].offset + i);
	}
	if (order < 0)
		return HMM_DMIRROR_DEVPFN_NONE;
	ASSERT_EQ(hmm_folio_check_invariants(self->fd[dev], HMM_DMIRROR_CHECK_RANGE,
					     0, p, self->npages), 0)
		TH_LOG("%s: folio check on device %d", step, dev);
	/* Each device sees its own pages; the other one sees nothing. */
	ASSERT_EQ(hmm_folio_snapshot_expect(self->fd[dev], p, self->npages,
					    order == (int)self->pmd_order ?
					    HMM_FOLIO_PROT_DEV_PMD :
					    HMM_FOLIO_PROT_DEV_PTE, step), 0);
	ASSERT_EQ(hmm_folio_snapshot_expect(self->fd[!dev], p, self->npages,
					    HMM_FOLIO_SNAP_INVISIBLE, step), 0);
	return self->pfns[0].offset;
}

/* Where it lands is expect_on()'s to check: the snapshot is not checked. */
static void to_device(struct __test_metadata *_metadata,
		      FIXTURE_DATA(twodev) *self, int dev, char *p,
		      unsigned int gen)
{
	ASSERT_EQ(hmm_folio_to_device(self->fd[dev], p, self->size,
				      self->mirror, gen, 0), 0);
}

/* Order-0 pages of a new range on @dev must be exactly [base, +npages). */
static void reuse_order0(struct __test_metadata *_metadata,
			 FIXTURE_DATA(twodev) *self, int dev, __u64 base,
			 unsigned int gen)
{
	char *q = HMM_FOLIO_NEW_RANGE(self->size, false, gen);
	struct hmm_dmirror_cmd cmd;
	unsigned long i;

	to_device(_metadata, self, dev, q, gen);
	expect_on(_metadata, self, dev, q, 0, "order-0 reuse");
	/* The other device's MIGRATE_TO_SYS skips these PTEs: not its pages. */
	ASSERT_EQ(hmm_folio_cmd(self->fd[!dev], HMM_DMIRROR_MIGRATE_TO_SYS, q,
				NULL, self->npages, &cmd), 0);
	ASSERT_EQ(cmd.cpages, 0)
		TH_LOG("device %d migrated %llu of device %d's pages", !dev,
		       (unsigned long long)cmd.cpages, dev);
	expect_on(_metadata, self, dev, q, 0,
		  "order-0 reuse, after the other device's MIGRATE_TO_SYS");
	for (i = 0; i < self->npages; i++)
		ASSERT_TRUE(self->pfns[i].offset >= base &&
			    self->pfns[i].offset < base + self->npages)
			TH_LOG("device %d: page %lu at %#llx, off the freed block at %#llx",
			       dev, i, (unsigned long long)self->pfns[i].offset,
			       (unsigned long long)base);
	ASSERT_EQ(hmm_folio_check_tags(q, self->size, (uintptr_t)q, gen,
				       "order-0 reuse, CPU view"), 0);
	ASSERT_EQ(munmap(q, self->size), 0);
	HMM_FOLIO_STEP_DONE("reusing the freed block at order 0");
}

static void all_free(struct __test_metadata *_metadata,
		     FIXTURE_DATA(twodev) *self, int dev, const char *step)
{
	struct hmm_dmirror_alloc_stats st;

	ASSERT_EQ(hmm_folio_stats(self->fd[dev], &st), 0);
	ASSERT_EQ(st.free_pages, st.total_pages)
		TH_LOG("%s: device %d has %llu of %llu pages in use", step, dev,
		       (unsigned long long)(st.total_pages - st.free_pages),
		       (unsigned long long)st.total_pages);
}

/*
 * The THP at @p (tagged @gen) goes to device 0, then to device 1; device
 * 0's freed block is reused at order 0 meanwhile. Returns the device 1
 * offset and updates *@gen.
 */
static __u64 move(struct __test_metadata *_metadata, FIXTURE_DATA(twodev) *self,
		  const FIXTURE_VARIANT(twodev) *variant, char *p,
		  unsigned int *gen)
{
	struct hmm_dmirror_cmd cmd;
	__u64 base0, base1;

	to_device(_metadata, self, 0, p, *gen);
	base0 = expect_on(_metadata, self, 0, p, self->pmd_order, "on device 0");

	/*
	 * Device 1 cannot take device 0's pages directly: nothing migrates,
	 * and reading back its copy finds nothing (ENOENT).
	 */
	ASSERT_EQ(hmm_folio_cmd(self->fd[1], HMM_DMIRROR_MIGRATE_TO_DEV, p,
				self->mirror, self->npages, &cmd), -ENOENT);
	expect_on(_metadata, self, 0, p, self->pmd_order,
		  "after device 1's MIGRATE_TO_DEV");
	/*
	 * Nor send them to system memory: migrate_vma skips the device PMD
	 * of another pgmap owner, whole (migrate_vma_collect_huge_pmd()).
	 */
	ASSERT_EQ(hmm_folio_cmd(self->fd[1], HMM_DMIRROR_MIGRATE_TO_SYS, p,
				NULL, self->npages, &cmd), 0);
	ASSERT_EQ(cmd.cpages, 0)
		TH_LOG("device 1 migrated %llu of device 0's pages",
		       (unsigned long long)cmd.cpages);
	expect_on(_metadata, self, 0, p, self->pmd_order,
		  "after device 1's MIGRATE_TO_SYS");

	switch (variant->move) {
	case MOVE_MIGRATE:
		ASSERT_EQ(hmm_folio_cmd(self->fd[0], HMM_DMIRROR_MIGRATE_TO_SYS,
					p, NULL, self->npages, &cmd), 0);
		break;
	case MOVE_DEVICE_READ:
		memset(self->mirror, 0, self->size);
		ASSERT_EQ(hmm_folio_cmd(self->fd[1], HMM_DMIRROR_READ, p,
					self->mirror, self->npages, &cmd), 0);
		ASSERT_EQ(hmm_folio_check_tags(self->mirror, self->size,
					       (uintptr_t)p, *gen,
					       "device 1 read of device 0's THP"), 0);
		break;
	case MOVE_CPU_WRITE:
		hmm_folio_fill(p, self->size, (uintptr_t)p, ++*gen);
		break;
	}
	expect_on(_metadata, self, 0, p, -1, "off device 0");
	ASSERT_EQ(hmm_folio_snapshot_expect(self->fd[0], p, self->npages,
					    HMM_FOLIO_SNAP_SYSTEM,
					    "back in system memory"), 0);
	all_free(_metadata, self, 0, "device 0 once the data left it");

	to_device(_metadata, self, 1, p, *gen);
	base1 = expect_on(_metadata, self, 1, p, self->pmd_order,
			  "on device 1");

	/* Device 0's freed PMD block, at order 0, while device 1 holds it. */
	reuse_order0(_metadata, self, 0, base0, *gen + 50);
	ASSERT_EQ(hmm_folio_direct_cycle(self->fd[0], base0, self->npages, 3), 0);
	expect_on(_metadata, self, 1, p, self->pmd_order,
		  "device 1 after device 0's reuse");
	HMM_FOLIO_STEP_DONE("moving the THP from device 0 to device 1");
	return base1;
}

TEST_F_TIMEOUT(twodev, lifecycle, HMM_FOLIO_TIMEOUT(60))
{
	unsigned int gen = 1;
	__u64 base1;
	char *p;

	if (variant->free == FREE_EXIT) {
		__u64 *shared = mmap(NULL, sizeof(*shared),
				     PROT_READ | PROT_WRITE,
				     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		pid_t pid;

		ASSERT_NE(shared, MAP_FAILED);
		pid = hmm_folio_fork_owner(self->fd, 2);
		ASSERT_GE(pid, 0);
		if (!pid) {
			p = HMM_FOLIO_NEW_RANGE(self->size, true, gen);
			*shared = move(_metadata, self, variant, p, &gen);
			_exit(0);	/* with the THP on device 1 */
		}
		ASSERT_EQ(hmm_folio_wait_owner(pid), 0);
		base1 = *shared;
		munmap(shared, sizeof(*shared));
	} else {
		p = HMM_FOLIO_NEW_RANGE(self->size, true, gen);
		base1 = move(_metadata, self, variant, p, &gen);
		if (variant->free == FREE_MUNMAP) {
			ASSERT_EQ(munmap(p, self->size), 0);
		} else {
			const char *why;

			/*
			 * Closing device 1's mirror evicts its pages: they are
			 * in system memory before the CPU touches them (a CPU
			 * read would fault them back itself).
			 */
			ASSERT_EQ(close(self->fd[1]), 0);
			self->fd[1] = hmm_folio_open(1, &why);
			ASSERT_GE(self->fd[1], 0);
			expect_on(_metadata, self, 1, p, -1,
				  "after device 1's close");
			ASSERT_EQ(hmm_folio_snapshot_expect(self->fd[1], p,
							    self->npages,
							    HMM_FOLIO_SNAP_SYSTEM,
							    "evicted by the close"), 0);
			ASSERT_EQ(hmm_folio_check_tags(p, self->size, (uintptr_t)p,
						       gen, "after device 1's close"),
				  0);
			ASSERT_EQ(munmap(p, self->size), 0);
		}
	}
	all_free(_metadata, self, 1, "device 1 after the free");

	/* Device 1's freed PMD block, at other orders, then a THP again. */
	ASSERT_EQ(hmm_folio_direct_cycle(self->fd[1], base1, self->npages, 8), 0);
	reuse_order0(_metadata, self, 1, base1, gen + 100);
	p = hmm_folio_thp_on_device(self->fd[1], self->size, gen + 200);
	ASSERT_NE(p, NULL);
	ASSERT_EQ(expect_on(_metadata, self, 1, p, self->pmd_order,
			    "a THP on device 1 again"), base1);
	ASSERT_EQ(hmm_folio_check_tags(p, self->size, (uintptr_t)p, gen + 200,
				       "CPU view at the end"), 0);
	ASSERT_EQ(munmap(p, self->size), 0);
}

TEST_HARNESS_MAIN
