// SPDX-License-Identifier: GPL-2.0
/*
 * Lifecycle of a PMD-order device-private folio with the stock test_hmm:
 * a THP is migrated to the device as one folio, faulted back, migrated
 * again, freed while it sits on the device, and the device memory is then
 * used for a new THP that is faulted back again. Every page carries a tag
 * (address, generation) checked after every step, the device's view is
 * checked with SNAPSHOT, and the kernel log must stay clean.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "kselftest_harness.h"
#include "vm_util.h"
#include "hmm_folio_util.h"

/* Freed by FREE_MUNMAP, FREE_DONTNEED or FREE_EXIT; back by READ, WRITE, MIGRATE. */

FIXTURE(thp)
{
	struct hmm_folio_kmsg kmsg;
	int fd;
	size_t size;
	unsigned long npages;
	void *mirror;
};

FIXTURE_VARIANT(thp)
{
	enum free_how free;
	enum back_how back;
};

#define THP_VARIANT(f, b, fe, be)				\
	FIXTURE_VARIANT_ADD(thp, f##_##b)			\
	{							\
		.free = fe,					\
		.back = be,					\
	}

THP_VARIANT(munmap, read, FREE_MUNMAP, BACK_READ);
THP_VARIANT(munmap, write, FREE_MUNMAP, BACK_WRITE);
THP_VARIANT(munmap, migrate, FREE_MUNMAP, BACK_MIGRATE);
THP_VARIANT(dontneed, read, FREE_DONTNEED, BACK_READ);
THP_VARIANT(dontneed, write, FREE_DONTNEED, BACK_WRITE);
THP_VARIANT(dontneed, migrate, FREE_DONTNEED, BACK_MIGRATE);
THP_VARIANT(exit, read, FREE_EXIT, BACK_READ);
THP_VARIANT(exit, write, FREE_EXIT, BACK_WRITE);
THP_VARIANT(exit, migrate, FREE_EXIT, BACK_MIGRATE);

FIXTURE_SETUP(thp)
{
	const char *why = NULL;

	self->mirror = NULL;
	HMM_FOLIO_REQUIRE(hmm_folio_fixture_open(&self->kmsg, &self->fd,
						 HMM_FOLIO_NEED_THP, &why), why);
	self->size = read_pmd_pagesize();
	self->npages = self->size / psize();
	self->mirror = malloc(self->size);
	ASSERT_NE(self->mirror, NULL);
}

FIXTURE_TEARDOWN(thp)
{
	int splats = hmm_folio_fixture_close(&self->kmsg, &self->fd);

	free(self->mirror);
	HMM_FOLIO_FAIL_ON_SPLATS(splats);
}

/* Migrate the THP at @p to the device as one PMD-order device folio. */
static void thp_to_device(struct __test_metadata *_metadata,
			  FIXTURE_DATA(thp) *self, char *p, unsigned int gen)
{
	ASSERT_EQ(hmm_folio_to_device(self->fd, p, self->size, self->mirror,
				      gen, HMM_FOLIO_PROT_DEV_PMD), 0);
}

/* Bring the device folio at @p back to system memory; returns the new gen. */
static unsigned int thp_back(struct __test_metadata *_metadata,
			     FIXTURE_DATA(thp) *self,
			     const FIXTURE_VARIANT(thp) *variant,
			     char *p, unsigned int gen)
{
	ASSERT_EQ(hmm_folio_back(self->fd, p, self->size, self->mirror, &gen,
				 variant->back), 0);
	return gen;
}

/*
 * Round one: to the device, back, to the device again, then free it there
 * the way the variant says.
 */
static void thp_round_free(struct __test_metadata *_metadata,
			   FIXTURE_DATA(thp) *self,
			   const FIXTURE_VARIANT(thp) *variant)
{
	unsigned int gen = 1;
	char *p = HMM_FOLIO_NEW_RANGE(self->size, true, gen);

	thp_to_device(_metadata, self, p, gen);
	gen = thp_back(_metadata, self, variant, p, gen);
	gen++;
	hmm_folio_fill(p, self->size, (uintptr_t)p, gen);
	thp_to_device(_metadata, self, p, gen);

	switch (variant->free) {
	case FREE_MUNMAP:
		ASSERT_EQ(munmap(p, self->size), 0);
		break;
	case FREE_DONTNEED:
		ASSERT_EQ(hmm_folio_dontneed(p, self->size), 0);
		ASSERT_EQ(munmap(p, self->size), 0);
		break;
	case FREE_EXIT:
		/* The caller's child exits with the folio on the device. */
		break;
	default:
		ASSERT_TRUE(false) TH_LOG("no such free in this table");
	}
	HMM_FOLIO_STEP_DONE("freeing the device THP");
}

TEST_F_TIMEOUT(thp, lifecycle, HMM_FOLIO_TIMEOUT(120))
{
	unsigned int gen = 10;
	char *p;

	if (variant->free == FREE_EXIT) {
		pid_t pid = hmm_folio_fork_owner(&self->fd, 1);

		ASSERT_GE(pid, 0);
		if (!pid) {
			thp_round_free(_metadata, self, variant);
			_exit(0);
		}
		ASSERT_EQ(hmm_folio_wait_owner(pid), 0);
	} else {
		thp_round_free(_metadata, self, variant);
	}

	/* Round two: a new THP goes to the device memory freed above. */
	p = HMM_FOLIO_NEW_RANGE(self->size, true, gen);
	thp_to_device(_metadata, self, p, gen);
	gen = thp_back(_metadata, self, variant, p, gen);
	ASSERT_EQ(munmap(p, self->size), 0);
}

/*
 * A device PMD split while the folio stays on the device: what the PMD
 * entry said must then be said by each PTE entry. The range's soft-dirty
 * state is cleared (clear_refs 4) first, and the THP written again or not,
 * so pagemap's soft-dirty bit tells whether the split carried the PMD's
 * bit over (and is not just the VMA's VM_SOFTDIRTY).
 */
enum split_how {
	SPLIT_MUNMAP,		/* the second half unmapped */
	SPLIT_MPROTECT,		/* the second half made read-only */
	SPLIT_MIGRATE_ONE,	/* one page migrated back to system memory */
};

FIXTURE(split)
{
	struct hmm_folio_kmsg kmsg;
	int fd;
	int pagemap;
	size_t size;
	unsigned long npages;
	void *mirror;
};

FIXTURE_VARIANT(split)
{
	enum split_how how;
	bool written;
};

#define SPLIT_VARIANT(name, h, w)				\
	FIXTURE_VARIANT_ADD(split, name) { .how = h, .written = w }
SPLIT_VARIANT(munmap_dirty, SPLIT_MUNMAP, true);
SPLIT_VARIANT(munmap_clean, SPLIT_MUNMAP, false);
SPLIT_VARIANT(mprotect_dirty, SPLIT_MPROTECT, true);
SPLIT_VARIANT(mprotect_clean, SPLIT_MPROTECT, false);
SPLIT_VARIANT(migrate_one_dirty, SPLIT_MIGRATE_ONE, true);
SPLIT_VARIANT(migrate_one_clean, SPLIT_MIGRATE_ONE, false);

/*
 * What the soft-dirty fixtures (split, mremap_sd) open beside the device:
 * pagemap and a PMD-sized mirror buffer. A probe, as HMM_FOLIO_REQUIRE()
 * takes it; sd_close() returns the splats of the fixture.
 */
static int sd_open(int *pagemap, size_t *size, unsigned long *npages,
		   void **mirror, const char **why)
{
	if (!softdirty_supported()) {
		*why = "no soft-dirty tracking (CONFIG_MEM_SOFT_DIRTY)";
		return HMM_FOLIO_SKIP;
	}
	*why = "/proc/self/pagemap or the mirror buffer";
	*pagemap = open("/proc/self/pagemap", O_RDONLY);
	if (*pagemap < 0)
		return -errno;
	*size = read_pmd_pagesize();
	*npages = *size / psize();
	*mirror = malloc(*size);
	return *mirror ? 0 : -ENOMEM;
}

static int sd_close(struct hmm_folio_kmsg *kmsg, int *fd, int pagemap,
		    void *mirror)
{
	int splats = hmm_folio_fixture_close(kmsg, fd);

	if (pagemap >= 0)
		close(pagemap);
	free(mirror);
	return splats;
}

FIXTURE_SETUP(split)
{
	const char *why = NULL;

	self->mirror = NULL;
	self->pagemap = -1;
	HMM_FOLIO_REQUIRE(hmm_folio_fixture_open(&self->kmsg, &self->fd,
						 HMM_FOLIO_NEED_THP, &why), why);
	HMM_FOLIO_REQUIRE(sd_open(&self->pagemap, &self->size, &self->npages,
				  &self->mirror, &why), why);
}

FIXTURE_TEARDOWN(split)
{
	HMM_FOLIO_FAIL_ON_SPLATS(sd_close(&self->kmsg, &self->fd,
					  self->pagemap, self->mirror));
}

/* Pages of [p, +npages) whose pagemap soft-dirty bit is not @want. */
static unsigned long softdirty_wrong(int pagemap, char *p,
				     unsigned long npages, bool want,
				     const char *what)
{
	unsigned long i, bad = 0;

	for (i = 0; i < npages; i++) {
		uint64_t e = pagemap_get_entry(pagemap, p + i * psize());

		if (!!(e & PM_SOFT_DIRTY) != want && !bad++)
			fprintf(stderr, "# %s: page %lu pagemap %#llx, soft-dirty should be %s\n",
				what, i, (unsigned long long)e,
				want ? "set" : "clear");
	}
	return bad;
}

/* Split the device PMD at @p the row's way; check what each half says. */
static void split_device_pmd(struct __test_metadata *_metadata,
			     FIXTURE_DATA(split) *self,
			     const FIXTURE_VARIANT(split) *variant, char *p,
			     unsigned int gen, unsigned int pte)
{
	unsigned long half = self->npages / 2;
	size_t hsize = self->size / 2;
	struct hmm_dmirror_cmd cmd;

	switch (variant->how) {
	case SPLIT_MUNMAP:
		ASSERT_EQ(munmap(p + hsize, hsize), 0);
		ASSERT_EQ(hmm_folio_snapshot_expect(self->fd, p, half, pte,
						    "half left after munmap"), 0);
		break;
	case SPLIT_MPROTECT:
		ASSERT_EQ(mprotect(p + hsize, hsize, PROT_READ), 0);
		ASSERT_EQ(hmm_folio_snapshot_expect(self->fd, p, half, pte,
						    "half left writable"), 0);
		ASSERT_EQ(hmm_folio_snapshot_expect(self->fd, p + hsize, half,
						    HMM_FOLIO_PROT_DEV_PTE_RO,
						    "read-only half"), 0);
		break;
	case SPLIT_MIGRATE_ONE:
		ASSERT_EQ(hmm_folio_cmd(self->fd, HMM_DMIRROR_MIGRATE_TO_SYS,
					p + psize(), NULL, 1, &cmd), 0);
		/* Page 1 is back in system memory; 0 and 2.. stay. */
		ASSERT_EQ(hmm_folio_snapshot_expect(self->fd, p + psize(), 1,
						    HMM_FOLIO_SNAP_SYSTEM,
						    "the page migrated back"), 0);
		ASSERT_EQ(hmm_folio_check_tags(p + psize(), psize(),
					       (uintptr_t)p + psize(), gen,
					       "the page migrated back"), 0);
		ASSERT_EQ(hmm_folio_snapshot_expect(self->fd, p, 1, pte,
						    "page 0 left on the device"), 0);
		ASSERT_EQ(hmm_folio_snapshot_expect(self->fd, p + 2 * psize(),
						    self->npages - 2, pte,
						    "pages left on the device"), 0);
		break;
	}
}

TEST_F_TIMEOUT(split, soft_dirty, HMM_FOLIO_TIMEOUT(60))
{
	unsigned long half = self->npages / 2;
	size_t hsize = self->size / 2;
	unsigned int pte = variant->written ? HMM_FOLIO_PROT_DEV_PTE :
			   HMM_FOLIO_PROT_DEV_PTE_RO;
	struct hmm_dmirror_cmd cmd;
	unsigned int gen = 1;
	char *p;

	p = hmm_folio_map_aligned(self->size);
	ASSERT_NE(p, NULL);
	hmm_folio_fill(p, self->size, (uintptr_t)p, gen);
	ASSERT_TRUE(hmm_folio_is_thp(p, self->size));
	clear_softdirty();
	ASSERT_EQ(softdirty_wrong(self->pagemap, p, self->npages, false,
				  "after clear_refs"), 0);
	if (variant->written)
		hmm_folio_fill(p, self->size, (uintptr_t)p, ++gen);
	ASSERT_TRUE(hmm_folio_is_thp(p, self->size));

	ASSERT_EQ(hmm_folio_cmd(self->fd, HMM_DMIRROR_MIGRATE_TO_DEV, p,
				self->mirror, self->npages, &cmd), 0);
	ASSERT_EQ(cmd.cpages, self->npages);
	/* clear_refs write-protected the PMD: unwritten, it stays so. */
	ASSERT_EQ(hmm_folio_snapshot_expect(self->fd, p, self->npages,
					    variant->written ?
					    HMM_FOLIO_PROT_DEV_PMD :
					    HMM_FOLIO_PROT_DEV_PMD_RO,
					    "after MIGRATE_TO_DEV"), 0);
	ASSERT_EQ(softdirty_wrong(self->pagemap, p, self->npages,
				  variant->written, "device PMD"), 0);

	split_device_pmd(_metadata, self, variant, p, gen, pte);
	/*
	 * Every PTE made from the PMD keeps its soft-dirty bit. (mprotect's
	 * write to read-only conversion of a device-private entry drops it on
	 * purpose, see change_pte_range(): the read-only half is not checked.)
	 */
	ASSERT_EQ(softdirty_wrong(self->pagemap, p,
				  variant->how == SPLIT_MIGRATE_ONE ?
				  self->npages : half, variant->written,
				  "after the split"), 0);

	/* And the data comes back intact. */
	ASSERT_EQ(hmm_folio_check_tags(p, variant->how == SPLIT_MUNMAP ? hsize :
				       self->size, (uintptr_t)p, gen,
				       "CPU view after the split"), 0);
	ASSERT_EQ(hmm_folio_snapshot_expect(self->fd, p,
					    variant->how == SPLIT_MUNMAP ?
					    half : self->npages,
					    HMM_FOLIO_SNAP_SYSTEM,
					    "after fault-back"), 0);
	ASSERT_EQ(munmap(p, variant->how == SPLIT_MUNMAP ? hsize : self->size),
		  0);
}

/*
 * mremap() of a range whose soft-dirty state was cleared: every entry it
 * moves must come out soft-dirty (mremap marks moved entries, so that a
 * tracker sees the range as new at its new address), be it a present THP,
 * device-private PTEs or a device-private PMD, and stay so after the range
 * comes back to system memory. The target is a VMA between PROT_NONE
 * guards, so that no merge with a neighbour's VM_SOFTDIRTY can hide it; for
 * small pages it is one page off PMD alignment, so that mremap moves the
 * entries one by one (move_ptes()) and not their whole page table
 * (move_normal_pmd(), which marks nothing).
 *
 * mremap_device_pmd_soft_dirty (selftests/fixes/known-bugs):
 * move_soft_dirty_pmd() (mm/huge_memory.c) marks migration entries and
 * present PMDs only: a moved device-private PMD stays clean.
 */
FIXTURE(mremap_sd)
{
	struct hmm_folio_kmsg kmsg;
	int fd;
	int pagemap;
	size_t size;
	unsigned long npages;
	void *mirror;
};

FIXTURE_VARIANT(mremap_sd)
{
	bool device;	/* moved to the device before the mremap */
	bool thp;	/* a PMD-sized THP, else small pages */
};

FIXTURE_VARIANT_ADD(mremap_sd, device_pmd) { .device = true, .thp = true };
FIXTURE_VARIANT_ADD(mremap_sd, device_pte) { .device = true, .thp = false };
FIXTURE_VARIANT_ADD(mremap_sd, system_thp) { .device = false, .thp = true };

FIXTURE_SETUP(mremap_sd)
{
	const char *why = NULL;

	self->mirror = NULL;
	self->pagemap = -1;
	HMM_FOLIO_REQUIRE(hmm_folio_fixture_open(&self->kmsg, &self->fd,
						 HMM_FOLIO_NEED_THP, &why), why);
	HMM_FOLIO_REQUIRE(sd_open(&self->pagemap, &self->size, &self->npages,
				  &self->mirror, &why), why);
}

FIXTURE_TEARDOWN(mremap_sd)
{
	HMM_FOLIO_FAIL_ON_SPLATS(sd_close(&self->kmsg, &self->fd,
					  self->pagemap, self->mirror));
}

TEST_F_TIMEOUT(mremap_sd, moved_range_is_soft_dirty, HMM_FOLIO_TIMEOUT(60))
{
	size_t gsize = self->size + 2 * self->size;
	unsigned long clean;
	struct hmm_dmirror_cmd cmd;
	char *p, *g, *t, *q;

	p = HMM_FOLIO_NEW_RANGE(self->size, variant->thp, 1);
	/* The target: an aligned VMA between PROT_NONE guards. */
	g = mmap(NULL, gsize, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(g, MAP_FAILED);
	t = (char *)(((uintptr_t)g + psize() + self->size - 1) &
		     ~(self->size - 1));
	if (!variant->thp)
		t += psize();
	ASSERT_EQ(mprotect(t, self->size, PROT_READ | PROT_WRITE), 0);
	clear_softdirty();
	ASSERT_EQ(softdirty_wrong(self->pagemap, p, self->npages, false,
				  "after clear_refs"), 0);
	if (variant->device) {
		ASSERT_EQ(hmm_folio_cmd(self->fd, HMM_DMIRROR_MIGRATE_TO_DEV, p,
					self->mirror, self->npages, &cmd), 0);
		ASSERT_EQ(cmd.cpages, self->npages);
		/* clear_refs write-protected the range. */
		ASSERT_EQ(hmm_folio_snapshot_expect(self->fd, p, self->npages,
						    variant->thp ?
						    HMM_FOLIO_PROT_DEV_PMD_RO :
						    HMM_FOLIO_PROT_DEV_PTE_RO,
						    "after MIGRATE_TO_DEV"), 0);
		ASSERT_EQ(softdirty_wrong(self->pagemap, p, self->npages, false,
					  "on the device"), 0);
	}
	q = mremap(p, self->size, self->size, MREMAP_MAYMOVE | MREMAP_FIXED, t);
	ASSERT_EQ(q, t);
	HMM_FOLIO_STEP_DONE("mremap");
	if (variant->device)
		ASSERT_EQ(hmm_folio_snapshot_expect(self->fd, q, self->npages,
						    variant->thp ?
						    HMM_FOLIO_PROT_DEV_PMD_RO :
						    HMM_FOLIO_PROT_DEV_PTE_RO,
						    "after mremap"), 0);
	clean = softdirty_wrong(self->pagemap, q, self->npages, true,
				"after mremap");
	if (variant->device && variant->thp && clean == self->npages)
		HMM_FOLIO_XFAIL_KNOWN("mremap_device_pmd_soft_dirty",
				      "a device THP moved by mremap() is not soft-dirty: %lu of %lu pages clean",
				      clean, self->npages);
	ASSERT_EQ(clean, 0);

	/* Back in system memory: the data, and still soft-dirty. */
	ASSERT_EQ(hmm_folio_check_tags(q, self->size, (uintptr_t)p, 1,
				       "CPU view after the move"), 0);
	ASSERT_EQ(hmm_folio_snapshot_expect(self->fd, q, self->npages,
					    HMM_FOLIO_SNAP_SYSTEM,
					    "after fault-back"), 0);
	ASSERT_EQ(softdirty_wrong(self->pagemap, q, self->npages, true,
				  "after fault-back"), 0);
	HMM_FOLIO_STEP_DONE("fault-back of the moved range");
	ASSERT_EQ(munmap(g, gsize), 0);
}

/*
 * Kernel bugs that crash a CONFIG_DEBUG_VM kernel: they run only on request
 * (HMM_FOLIO_CRASHERS=1; run_tests.sh --crashers) and SKIP otherwise, naming
 * the bug, so that the rest of a run is not lost with the kernel.
 *
 * remove_migration_pmd_soft_dirty: remove_migration_pmd() (mm/huge_memory.c,
 * 7.2.13) turns pmde into a device-private swap PMD, then checks
 * VM_BUG_ON(pmd_write(pmde) && anon && !PageAnonExclusive(new)) on it. On
 * x86, _PAGE_SWP_SOFT_DIRTY is _PAGE_RW: a soft-dirty THP that is not
 * anon-exclusive (it was shared with a child, now gone) trips it when it
 * is migrated to the device. remove_migration_pte() has no such check.
 */
FIXTURE(crashers)
{
	struct hmm_folio_kmsg kmsg;
	int fd;
};

FIXTURE_VARIANT(crashers)
{
	int unused;
};

FIXTURE_VARIANT_ADD(crashers, remove_migration_pmd_soft_dirty) { 0 };

FIXTURE_SETUP(crashers)
{
	const char *why = NULL, *e = getenv("HMM_FOLIO_CRASHERS");

	if (!e || strcmp(e, "1"))
		SKIP(return,
		     "known kernel bug that crashes DEBUG_VM kernels (see the source); HMM_FOLIO_CRASHERS=1 runs it");
	HMM_FOLIO_REQUIRE(hmm_folio_fixture_open(&self->kmsg, &self->fd,
						 HMM_FOLIO_NEED_THP, &why), why);
}

FIXTURE_TEARDOWN(crashers)
{
	HMM_FOLIO_FAIL_ON_SPLATS(hmm_folio_fixture_close(&self->kmsg,
							 &self->fd));
}

TEST_F_TIMEOUT(crashers, migrate_after_fork, HMM_FOLIO_TIMEOUT(30))
{
	size_t size = read_pmd_pagesize();
	unsigned long npages = size / psize();
	char *p = hmm_folio_map_aligned(size);
	void *mirror = malloc(size);
	struct hmm_dmirror_cmd cmd;
	int status;
	pid_t pid;

	ASSERT_NE(p, NULL);
	ASSERT_NE(mirror, NULL);
	hmm_folio_fill(p, size, (uintptr_t)p, 1);
	ASSERT_TRUE(hmm_folio_is_thp(p, size));
	/* Shared with a child: the PMD is write-protected, not exclusive. */
	pid = fork();
	ASSERT_GE(pid, 0);
	if (!pid)
		_exit(0);
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT_EQ(hmm_folio_cmd(self->fd, HMM_DMIRROR_MIGRATE_TO_DEV, p, mirror,
				npages, &cmd), 0);
	ASSERT_EQ(hmm_folio_check_tags(mirror, size, (uintptr_t)p, 1,
				       "device copy"), 0);
	ASSERT_EQ(hmm_folio_snapshot_expect(self->fd, p, npages,
					    HMM_FOLIO_PROT_DEV_PMD_RO,
					    "after MIGRATE_TO_DEV"), 0);
	ASSERT_EQ(hmm_folio_check_tags(p, size, (uintptr_t)p, 1, "CPU view"), 0);
	free(mirror);
	munmap(p, size);
}

TEST_HARNESS_MAIN
