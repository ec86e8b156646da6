// SPDX-License-Identifier: GPL-2.0
/*
 * Permission and state bits across device-PMD operations.
 *
 * uffd_wp.<back>: a THP write-protected with userfaultfd (WP mode) goes to
 * the device as one PMD folio and comes back by <back>; pagemap's uffd-wp
 * bit must be set on every page after every step (on the device, after a
 * split of the device PMD, after the fault-back), SNAPSHOT must show the
 * device PMD read-only, and afterwards a CPU write must still raise the
 * userfaultfd write-protect fault (one, at the written address) before it
 * lands.
 *
 * mprotect_ro.<back>: a THP on the device made read-only: SNAPSHOT shows
 * it read-only there, a CPU write gets SIGSEGV and leaves it on the
 * device, a read brings it back, a write still gets SIGSEGV, and once the
 * range is writable again the write lands.
 *
 * Tags and the kernel log after every step.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#include "kselftest_harness.h"
#include "vm_util.h"
#include "hmm_folio_util.h"

enum perm_back {
	PB_READ,	/* CPU read fault */
	PB_MIGRATE,	/* MIGRATE_TO_SYS */
	PB_PTE,		/* one page migrated back first: the device PMD splits */
};

/* Pages of [p, +npages) whose pagemap entry lacks @bits; -errno. */
static long pagemap_lacking(char *p, unsigned long npages, uint64_t bits)
{
	unsigned long i, n = 0;
	int fd = open("/proc/self/pagemap", O_RDONLY);

	if (fd < 0)
		return -errno;
	for (i = 0; i < npages; i++)
		n += (pagemap_get_entry(fd, p + i * psize()) & bits) != bits;
	close(fd);
	return n;
}

/* Bring the device THP at @p back as @how says; the tags must hold. */
static long perm_back(int fd, char *p, size_t size, void *mirror,
		      unsigned int gen, enum perm_back how)
{
	unsigned int g = gen;
	int ret;

	switch (how) {
	case PB_READ:
		return hmm_folio_back(fd, p, size, mirror, &g, BACK_READ);
	case PB_MIGRATE:
		return hmm_folio_back(fd, p, size, mirror, &g, BACK_MIGRATE);
	case PB_PTE:
		ret = hmm_folio_cmd(fd, HMM_DMIRROR_MIGRATE_TO_SYS,
				    p + 7 * psize(), NULL, 1, NULL);
		if (ret)
			return ret;
		/* The split: page 7 back, the others device PTEs. */
		if (hmm_folio_snapshot_expect(fd, p, 7, HMM_FOLIO_PROT_DEV_PTE_RO,
					      "after the split"))
			return 1;
		return hmm_folio_back(fd, p, size, mirror, &g, BACK_MIGRATE);
	}
	return -EINVAL;
}

/* ------------------------------------------------------------------------ */

FIXTURE(uffd_wp)
{
	struct hmm_folio_kmsg kmsg;
	int fd;
	int uffd;
	size_t size;
	unsigned long npages;
	char *p;
	void *mirror;
	/* What the fault thread saw: WP faults, the last address. */
	unsigned long faults, addr;
	int err;
};

FIXTURE_VARIANT(uffd_wp)
{
	enum perm_back back;
};

FIXTURE_VARIANT_ADD(uffd_wp, read) { .back = PB_READ };
FIXTURE_VARIANT_ADD(uffd_wp, migrate) { .back = PB_MIGRATE };
FIXTURE_VARIANT_ADD(uffd_wp, pte) { .back = PB_PTE };

FIXTURE_SETUP(uffd_wp)
{
	struct uffdio_api api = { .api = UFFD_API };
	const char *why = NULL;

	self->p = NULL;
	self->mirror = NULL;
	self->uffd = -1;
	HMM_FOLIO_REQUIRE(hmm_folio_fixture_open(&self->kmsg, &self->fd,
						 HMM_FOLIO_NEED_THP, &why), why);
	self->size = read_pmd_pagesize();
	self->npages = self->size / psize();
	self->mirror = malloc(self->size);
	ASSERT_NE(self->mirror, NULL);
	self->uffd = syscall(__NR_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (self->uffd < 0 && errno == ENOSYS)
		SKIP(return, "userfaultfd not available (CONFIG_USERFAULTFD)");
	ASSERT_GE(self->uffd, 0) TH_LOG("userfaultfd: %s", strerror(errno));
	ASSERT_EQ(ioctl(self->uffd, UFFDIO_API, &api), 0);
	self->p = HMM_FOLIO_NEW_RANGE(self->size, true, 1);
}

FIXTURE_TEARDOWN(uffd_wp)
{
	int splats;

	if (self->p)
		munmap(self->p, self->size);
	if (self->uffd >= 0)
		close(self->uffd);
	splats = hmm_folio_fixture_close(&self->kmsg, &self->fd);
	free(self->mirror);
	HMM_FOLIO_FAIL_ON_SPLATS(splats);
}

static int wp_range(int uffd, char *p, size_t len, bool wp)
{
	struct uffdio_writeprotect w = {
		.range = { .start = (uintptr_t)p, .len = len },
		.mode = wp ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
	};

	return ioctl(uffd, UFFDIO_WRITEPROTECT, &w) ? -errno : 0;
}

/* The fault handler: one WP fault, recorded and resolved (unprotected). */
static void *uffd_handler(void *arg)
{
	FIXTURE_DATA(uffd_wp) *self = arg;
	struct pollfd pfd = { .fd = self->uffd, .events = POLLIN };
	struct uffd_msg msg;
	uintptr_t page;

	if (poll(&pfd, 1, 10000) != 1 ||
	    read(self->uffd, &msg, sizeof(msg)) != sizeof(msg)) {
		self->err = errno ? errno : ETIMEDOUT;
		return NULL;
	}
	if (msg.event != UFFD_EVENT_PAGEFAULT ||
	    !(msg.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP)) {
		self->err = EPROTO;
		return NULL;
	}
	self->faults++;
	self->addr = msg.arg.pagefault.address;
	page = self->addr & ~(uintptr_t)(psize() - 1);
	self->err = -wp_range(self->uffd, (char *)page, psize(), false);
	return NULL;
}

TEST_F_TIMEOUT(uffd_wp, survives_the_device, HMM_FOLIO_TIMEOUT(60))
{
	char *w = self->p + 100 * psize() + 64;
	pthread_t t;

	ASSERT_EQ(uffd_register(self->uffd, self->p, self->size, false, true,
				false), 0);
	ASSERT_EQ(wp_range(self->uffd, self->p, self->size, true), 0);
	ASSERT_EQ(pagemap_lacking(self->p, self->npages, PM_UFFD_WP | PM_PRESENT), 0);
	HMM_FOLIO_STEP_DONE("write-protecting the THP");

	/* A write-protected PMD migrates as a read-only one. */
	ASSERT_EQ(hmm_folio_to_device(self->fd, self->p, self->size,
				      self->mirror, 1,
				      HMM_FOLIO_PROT_DEV_PMD_RO), 0);
	ASSERT_EQ(pagemap_lacking(self->p, self->npages, PM_UFFD_WP | PM_SWAP), 0)
		TH_LOG("pages on the device without uffd-wp");
	HMM_FOLIO_STEP_DONE("the THP on the device");

	ASSERT_EQ(perm_back(self->fd, self->p, self->size, self->mirror, 1,
			    variant->back), 0);
	ASSERT_EQ(pagemap_lacking(self->p, self->npages, PM_UFFD_WP | PM_PRESENT), 0)
		TH_LOG("pages back in system memory without uffd-wp");
	HMM_FOLIO_STEP_DONE("the THP back");

	/* Still write-protected: the write waits for the handler. */
	ASSERT_EQ(pthread_create(&t, NULL, uffd_handler, self), 0);
	__atomic_store_n((uint64_t *)w, 42, __ATOMIC_RELAXED);
	pthread_join(t, NULL);
	ASSERT_EQ(self->err, 0) TH_LOG("the fault handler: %s", strerror(self->err));
	ASSERT_EQ(self->faults, 1);
	ASSERT_EQ(self->addr & ~(uintptr_t)(psize() - 1),
		  (uintptr_t)w & ~(uintptr_t)(psize() - 1));
	ASSERT_EQ(*(uint64_t *)w, 42);
	/* Every other page is as it was, and still protected. */
	*(uint64_t *)w = hmm_folio_tag((uintptr_t)w, 1);
	ASSERT_EQ(hmm_folio_check_tags(self->p, self->size, (uintptr_t)self->p,
				       1, "after the write"), 0);
	ASSERT_EQ(pagemap_lacking(self->p, self->npages, PM_UFFD_WP), 1);
	HMM_FOLIO_STEP_DONE("a write to the protected range");
}

/* ------------------------------------------------------------------------ */

FIXTURE(mprotect_ro)
{
	struct hmm_folio_kmsg kmsg;
	int fd;
	size_t size;
	unsigned long npages;
	char *p;
	void *mirror;
};

FIXTURE_VARIANT(mprotect_ro)
{
	enum perm_back back;
};

FIXTURE_VARIANT_ADD(mprotect_ro, read) { .back = PB_READ };
FIXTURE_VARIANT_ADD(mprotect_ro, migrate) { .back = PB_MIGRATE };
FIXTURE_VARIANT_ADD(mprotect_ro, pte) { .back = PB_PTE };

FIXTURE_SETUP(mprotect_ro)
{
	const char *why = NULL;

	self->p = NULL;
	self->mirror = NULL;
	HMM_FOLIO_REQUIRE(hmm_folio_fixture_open(&self->kmsg, &self->fd,
						 HMM_FOLIO_NEED_THP, &why), why);
	self->size = read_pmd_pagesize();
	self->npages = self->size / psize();
	self->mirror = malloc(self->size);
	ASSERT_NE(self->mirror, NULL);
	self->p = HMM_FOLIO_NEW_RANGE(self->size, true, 1);
}

FIXTURE_TEARDOWN(mprotect_ro)
{
	int splats;

	if (self->p)
		munmap(self->p, self->size);
	splats = hmm_folio_fixture_close(&self->kmsg, &self->fd);
	free(self->mirror);
	HMM_FOLIO_FAIL_ON_SPLATS(splats);
}

TEST_F_TIMEOUT(mprotect_ro, write_faults, HMM_FOLIO_TIMEOUT(60))
{
	uint64_t *w = (uint64_t *)(self->p + 300 * psize());

	ASSERT_EQ(hmm_folio_to_device(self->fd, self->p, self->size,
				      self->mirror, 1, HMM_FOLIO_PROT_DEV_PMD), 0);
	ASSERT_EQ(mprotect(self->p, self->size, PROT_READ), 0);
	ASSERT_EQ(hmm_folio_snapshot_expect(self->fd, self->p, self->npages,
					    HMM_FOLIO_PROT_DEV_PMD_RO,
					    "read-only on the device"), 0);
	/* Refused before any fault handling: it stays on the device. */
	ASSERT_TRUE(hmm_folio_write_faults(w, 42));
	ASSERT_EQ(hmm_folio_snapshot_expect(self->fd, self->p, self->npages,
					    HMM_FOLIO_PROT_DEV_PMD_RO,
					    "after the refused write"), 0);
	HMM_FOLIO_STEP_DONE("a write to the read-only device THP");

	ASSERT_EQ(perm_back(self->fd, self->p, self->size, self->mirror, 1,
			    variant->back), 0);
	ASSERT_TRUE(hmm_folio_write_faults(w, 42));
	ASSERT_EQ(hmm_folio_check_tags(self->p, self->size, (uintptr_t)self->p,
				       1, "after the refused writes"), 0);
	HMM_FOLIO_STEP_DONE("a write to the read-only THP back");

	ASSERT_EQ(mprotect(self->p, self->size, PROT_READ | PROT_WRITE), 0);
	ASSERT_FALSE(hmm_folio_write_faults(w, 42));
	ASSERT_EQ(*w, 42);
	*w = hmm_folio_tag((uintptr_t)w, 1);
	ASSERT_EQ(hmm_folio_check_tags(self->p, self->size, (uintptr_t)self->p,
				       1, "writable again"), 0);
	HMM_FOLIO_STEP_DONE("a write once writable again");
}

TEST_HARNESS_MAIN
