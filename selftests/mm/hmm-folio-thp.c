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
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "kselftest_harness.h"
#include "vm_util.h"
#include "hmm_folio_util.h"

enum free_how {
	FREE_MUNMAP,	/* zap of the device PMD on munmap */
	FREE_DONTNEED,	/* zap with the VMA kept: the range must read zero */
	FREE_EXIT,	/* exit_mmap() of the process that owns the range */
};

enum back_how {
	BACK_READ,	/* CPU read fault on the device-private PMD */
	BACK_WRITE,	/* CPU write fault */
	BACK_MIGRATE,	/* HMM_DMIRROR_MIGRATE_TO_SYS */
};

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
	if (!hmm_folio_fixture_open(&self->kmsg, &self->fd, HMM_FOLIO_NEED_THP,
				    &why))
		SKIP(return, "%s", why);
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

/* A PMD-aligned THP, every page tagged with @gen. */
static char *thp_new(struct __test_metadata *_metadata,
		     FIXTURE_DATA(thp) *self, unsigned int gen)
{
	char *p = hmm_folio_map_aligned(self->size);

	ASSERT_NE(p, NULL);
	hmm_folio_fill(p, self->size, (uintptr_t)p, gen);
	ASSERT_TRUE(hmm_folio_is_thp(p, self->size))
		TH_LOG("no PMD-sized THP at %p after MADV_HUGEPAGE", p);
	return p;
}

/* Every page must be @want in the device's SNAPSHOT of [p, p + size). */
static void thp_expect_snapshot(struct __test_metadata *_metadata,
				FIXTURE_DATA(thp) *self, char *p,
				unsigned char want, const char *step)
{
	unsigned char *m = self->mirror;
	struct hmm_dmirror_cmd cmd;
	unsigned long i;

	ASSERT_EQ(hmm_folio_cmd(self->fd, HMM_DMIRROR_SNAPSHOT, p, m,
				self->npages, &cmd), 0);
	ASSERT_EQ(cmd.cpages, self->npages);
	for (i = 0; i < self->npages; i++)
		ASSERT_EQ(m[i], want)
			TH_LOG("%s: page %lu snapshot %#x, expected %#x",
			       step, i, m[i], want);
}

/* Migrate the THP at @p to the device as one PMD-order device folio. */
static void thp_to_device(struct __test_metadata *_metadata,
			  FIXTURE_DATA(thp) *self, char *p, unsigned int gen)
{
	struct hmm_dmirror_cmd cmd;

	memset(self->mirror, 0, self->size);
	ASSERT_EQ(hmm_folio_cmd(self->fd, HMM_DMIRROR_MIGRATE_TO_DEV, p,
				self->mirror, self->npages, &cmd), 0);
	ASSERT_EQ(cmd.cpages, self->npages);
	/* The device's copy must carry the tags of the system pages. */
	ASSERT_EQ(hmm_folio_check(self->mirror, self->size, (uintptr_t)p, gen,
				  "device copy after MIGRATE_TO_DEV"), 0);
	thp_expect_snapshot(_metadata, self, p, HMM_FOLIO_PROT_DEV_PMD,
			    "after MIGRATE_TO_DEV");
}

/* Bring the device folio at @p back to system memory; returns the new gen. */
static unsigned int thp_back(struct __test_metadata *_metadata,
			     FIXTURE_DATA(thp) *self,
			     const FIXTURE_VARIANT(thp) *variant,
			     char *p, unsigned int gen)
{
	unsigned char *m = self->mirror;
	struct hmm_dmirror_cmd cmd;
	unsigned long i;

	switch (variant->back) {
	case BACK_READ:
		break;
	case BACK_WRITE:
		gen++;
		hmm_folio_fill(p, self->size, (uintptr_t)p, gen);
		break;
	case BACK_MIGRATE:
		/* cpages counts a PMD folio as one; SNAPSHOT below sees all. */
		ASSERT_EQ(hmm_folio_cmd(self->fd, HMM_DMIRROR_MIGRATE_TO_SYS,
					p, NULL, self->npages, &cmd), 0);
		ASSERT_GE(cmd.cpages, 1);
		break;
	}
	ASSERT_EQ(hmm_folio_check(p, self->size, (uintptr_t)p, gen,
				  "CPU view after fault-back"), 0);

	/* Nothing of the range may still be device memory. */
	ASSERT_EQ(hmm_folio_cmd(self->fd, HMM_DMIRROR_SNAPSHOT, p, m,
				self->npages, &cmd), 0);
	for (i = 0; i < self->npages; i++)
		ASSERT_TRUE(!(m[i] & 0xf0) && (m[i] & (HMM_DMIRROR_PROT_READ |
						       HMM_DMIRROR_PROT_WRITE)))
			TH_LOG("page %lu snapshot %#x after fault-back", i, m[i]);
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
	char *p = thp_new(_metadata, self, gen);

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
		ASSERT_EQ(madvise(p, self->size, MADV_DONTNEED), 0);
		/* The freed device folio must not come back: fresh zero pages. */
		ASSERT_EQ(hmm_folio_nonzero_pages(p, self->size), 0)
			TH_LOG("pages not zero after MADV_DONTNEED");
		ASSERT_EQ(munmap(p, self->size), 0);
		break;
	case FREE_EXIT:
		/* The caller's child exits with the folio on the device. */
		break;
	}
}

TEST_F_TIMEOUT(thp, lifecycle, 120)
{
	unsigned int gen = 10;
	char *p;

	if (variant->free == FREE_EXIT) {
		int status;
		pid_t pid = fork();

		ASSERT_GE(pid, 0);
		if (!pid) {
			const char *why;

			/* A mirror serves the mm that opened it. */
			close(self->fd);
			self->fd = hmm_folio_open(0, &why);
			ASSERT_GE(self->fd, 0);
			thp_round_free(_metadata, self, variant);
			_exit(0);
		}
		ASSERT_EQ(waitpid(pid, &status, 0), pid);
		ASSERT_TRUE(WIFEXITED(status) && !WEXITSTATUS(status))
			TH_LOG("child failed (status %#x)", status);
	} else {
		thp_round_free(_metadata, self, variant);
	}

	/* Round two: a new THP goes to the device memory freed above. */
	p = thp_new(_metadata, self, gen);
	thp_to_device(_metadata, self, p, gen);
	gen = thp_back(_metadata, self, variant, p, gen);
	ASSERT_EQ(munmap(p, self->size), 0);
}

TEST_HARNESS_MAIN
