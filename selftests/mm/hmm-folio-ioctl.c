// SPDX-License-Identifier: GPL-2.0
/*
 * Argument checking of the hmm-folio extension's ioctls: every malformed
 * request gets its documented errno, and none of them makes the kernel warn.
 * Plus the basic contract of each ioctl on good arguments.
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

union hmm_folio_arg {
	struct hmm_dmirror_policy policy;
	struct hmm_dmirror_devpfn_cmd devpfn;
	struct hmm_dmirror_folio_cmd folio;
	struct hmm_dmirror_check_cmd check;
};

/* Fields the table cannot hold as constants, filled in at run time. */
#define FIX_BUF		(1 << 0)	/* devpfn.ptr: a valid output buffer */
#define FIX_ADDR	(1 << 1)	/* .addr: a mapped, page aligned range */
#define FIX_PMD_ORDER1	(1 << 2)	/* folio.order: PMD order + 1 */
#define FIX_HANDLE	(1 << 3)	/* folio/check .handle: a held folio */

FIXTURE(badarg)
{
	struct hmm_folio_kmsg kmsg;
	int fd;
	char *map;
	struct hmm_dmirror_devpfn buf[16];
};

FIXTURE_VARIANT(badarg)
{
	unsigned long request;
	union hmm_folio_arg arg;
	unsigned int fix;
	int err;
};

#define BAD(name, req, fixups, errno_, ...)				\
	FIXTURE_VARIANT_ADD(badarg, name) {				\
		.request = req, .fix = fixups, .err = errno_,		\
		.arg = { __VA_ARGS__ },					\
	}

BAD(policy_unknown, HMM_DMIRROR_SET_POLICY, 0, EINVAL, .policy = { .policy = 99 });
BAD(policy_flags, HMM_DMIRROR_SET_POLICY, 0, EINVAL, .policy = { .flags = 1 });
BAD(policy_reserved, HMM_DMIRROR_SET_POLICY, 0, EINVAL, .policy = { .reserved = 1 });
BAD(devpfn_unaligned, HMM_DMIRROR_DEVPFN, FIX_BUF, EINVAL,
	.devpfn = { .addr = 0x10001, .npages = 1 });
BAD(devpfn_zero_pages, HMM_DMIRROR_DEVPFN, FIX_BUF | FIX_ADDR, EINVAL,
	.devpfn = { .npages = 0 });
BAD(devpfn_huge_npages, HMM_DMIRROR_DEVPFN, FIX_BUF | FIX_ADDR, EINVAL,
	.devpfn = { .npages = HMM_DMIRROR_DEVPFN_MAX_PAGES + 1 });
BAD(devpfn_wrapping, HMM_DMIRROR_DEVPFN, FIX_BUF, EINVAL,
	.devpfn = { .addr = -4096ULL, .npages = 2 });
BAD(devpfn_reserved, HMM_DMIRROR_DEVPFN, FIX_BUF | FIX_ADDR, EINVAL,
	.devpfn = { .npages = 1, .reserved = 1 });
BAD(devpfn_bad_buffer, HMM_DMIRROR_DEVPFN, FIX_ADDR, EFAULT,
	.devpfn = { .npages = 1, .ptr = 8 });
BAD(alloc_order_too_big, HMM_DMIRROR_FOLIO_ALLOC, FIX_PMD_ORDER1, EINVAL, .folio = { 0 });
BAD(alloc_order_huge, HMM_DMIRROR_FOLIO_ALLOC, 0, EINVAL, .folio = { .order = ~0U });
BAD(alloc_unknown_flag, HMM_DMIRROR_FOLIO_ALLOC, 0, EINVAL, .folio = { .flags = 1U << 7 });
BAD(alloc_misaligned, HMM_DMIRROR_FOLIO_ALLOC, 0, EINVAL,
	.folio = { .order = 2, .offset = 1, .flags = HMM_DMIRROR_FOLIO_AT_OFFSET });
BAD(alloc_out_of_range, HMM_DMIRROR_FOLIO_ALLOC, 0, ERANGE,
	.folio = { .offset = 1ULL << 40, .flags = HMM_DMIRROR_FOLIO_AT_OFFSET });
BAD(alloc_reserved, HMM_DMIRROR_FOLIO_ALLOC, 0, EINVAL, .folio = { .reserved = { 1 } });
BAD(free_unknown_handle, HMM_DMIRROR_FOLIO_FREE, 0, ENOENT, .folio = { .handle = 12345 });
BAD(free_flags, HMM_DMIRROR_FOLIO_FREE, FIX_HANDLE, EINVAL, .folio = { .flags = 1 });
BAD(fill_unknown_handle, HMM_DMIRROR_FOLIO_FILL, 0, ENOENT, .folio = { .handle = 12345 });
BAD(verify_unknown_handle, HMM_DMIRROR_FOLIO_VERIFY, 0, ENOENT, .folio = { .handle = 12345 });
BAD(check_no_flag, HMM_DMIRROR_CHECK, 0, EINVAL, .check = { .flags = 0 });
BAD(check_two_flags, HMM_DMIRROR_CHECK, 0, EINVAL,
	.check = { .flags = HMM_DMIRROR_CHECK_HELD | HMM_DMIRROR_CHECK_RANGE });
BAD(check_unknown_flag, HMM_DMIRROR_CHECK, 0, EINVAL, .check = { .flags = 1U << 9 });
BAD(check_unknown_handle, HMM_DMIRROR_CHECK, 0, ENOENT,
	.check = { .flags = HMM_DMIRROR_CHECK_HANDLE, .handle = 12345 });
BAD(check_range_zero_pages, HMM_DMIRROR_CHECK, FIX_ADDR, EINVAL,
	.check = { .flags = HMM_DMIRROR_CHECK_RANGE, .npages = 0 });
BAD(check_range_unaligned, HMM_DMIRROR_CHECK, 0, EINVAL,
	.check = { .flags = HMM_DMIRROR_CHECK_RANGE, .addr = 0x10001, .npages = 1 });
BAD(check_reserved, HMM_DMIRROR_CHECK, 0, EINVAL,
	.check = { .flags = HMM_DMIRROR_CHECK_HELD, .reserved = { 0, 1 } });
BAD(unknown_ioctl, _IOWR('H', 0x7f, struct hmm_dmirror_cmd), 0, ENOTTY, .folio = { 0 });

FIXTURE_SETUP(badarg)
{
	const char *why = NULL;

	self->map = MAP_FAILED;
	HMM_FOLIO_REQUIRE(hmm_folio_fixture_open(&self->kmsg, &self->fd,
						 HMM_FOLIO_NEED_EXT, &why), why);
	self->map = mmap(NULL, 4 * psize(), PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(self->map, MAP_FAILED);
}

FIXTURE_TEARDOWN(badarg)
{
	int splats = hmm_folio_fixture_close(&self->kmsg, &self->fd);

	if (self->map != MAP_FAILED)
		munmap(self->map, 4 * psize());
	HMM_FOLIO_FAIL_ON_SPLATS(splats);
}

TEST_F_TIMEOUT(badarg, rejected, HMM_FOLIO_TIMEOUT(30))
{
	union hmm_folio_arg arg = variant->arg;
	struct hmm_dmirror_folio_cmd held = { 0 };
	int ret;

	if (variant->fix & FIX_BUF)
		arg.devpfn.ptr = (uintptr_t)self->buf;
	if (variant->fix & FIX_ADDR) {
		if (variant->request == HMM_DMIRROR_DEVPFN)
			arg.devpfn.addr = (uintptr_t)self->map;
		else
			arg.check.addr = (uintptr_t)self->map;
	}
	if (variant->fix & FIX_PMD_ORDER1)
		arg.folio.order = sz2ord(read_pmd_pagesize(), psize()) + 1;
	if (variant->fix & FIX_HANDLE) {
		ASSERT_EQ(hmm_folio_direct_folio(self->fd, HMM_DMIRROR_FOLIO_ALLOC, &held), 0);
		arg.folio.handle = held.handle;
	}

	ret = ioctl(self->fd, variant->request, &arg);
	EXPECT_EQ(ret, -1);
	EXPECT_EQ(errno, variant->err)
		TH_LOG("errno %d (%s), expected %d (%s)", errno, strerror(errno),
		       variant->err, strerror(variant->err));

	if (variant->fix & FIX_HANDLE) {
		held.flags = 0;
		ASSERT_EQ(hmm_folio_direct_folio(self->fd, HMM_DMIRROR_FOLIO_FREE, &held), 0);
	}
}

/*
 * Folios held by an fd are freed when it is closed, whatever their order, and
 * a device THP mapped in the process is evicted to system memory by that
 * close (every device page of the device comes back), which the CPU then
 * reads and munmap frees: nothing leaks, nothing warns.
 */
FIXTURE(held)
{
	struct hmm_folio_kmsg kmsg;
	int fd;
};

FIXTURE_SETUP(held)
{
	const char *why = NULL;

	HMM_FOLIO_REQUIRE(hmm_folio_fixture_open(&self->kmsg, &self->fd,
						 HMM_FOLIO_NEED_ALL, &why), why);
}

FIXTURE_TEARDOWN(held)
{
	HMM_FOLIO_FAIL_ON_SPLATS(hmm_folio_fixture_close(&self->kmsg, &self->fd));
}

TEST_F_TIMEOUT(held, freed_on_close, HMM_FOLIO_TIMEOUT(30))
{
	static const unsigned int orders[] = { 0, 1, 4, 8 };
	struct hmm_dmirror_alloc_stats before, after;
	size_t pmd = read_pmd_pagesize();
	const char *why;
	unsigned int i;
	char *p;
	int fd;

	ASSERT_EQ(hmm_folio_stats(self->fd, &before), 0);
	fd = hmm_folio_open(0, &why);
	ASSERT_GE(fd, 0);
	for (i = 0; i < sizeof(orders) / sizeof(orders[0]); i++) {
		struct hmm_dmirror_folio_cmd c = { .order = orders[i] };

		ASSERT_EQ(hmm_folio_direct_folio(fd, HMM_DMIRROR_FOLIO_ALLOC, &c), 0);
	}
	p = hmm_folio_thp_on_device(fd, pmd, 1);
	ASSERT_NE(p, NULL);
	ASSERT_EQ(close(fd), 0);

	ASSERT_EQ(hmm_folio_stats(self->fd, &after), 0);
	for (i = 0; i < sizeof(orders) / sizeof(orders[0]); i++)
		ASSERT_EQ(after.frees[orders[i]] - before.frees[orders[i]], 1)
			TH_LOG("held order-%u folio not freed on close", orders[i]);
	/* Evicted by the close, before the CPU touches it. */
	ASSERT_EQ(hmm_folio_snapshot_expect(self->fd, p, pmd / psize(),
					    HMM_FOLIO_SNAP_SYSTEM,
					    "the THP after its file's close"), 0);
	ASSERT_EQ(hmm_folio_check_tags(p, pmd, (uintptr_t)p, 1, "after close"), 0);
	ASSERT_EQ(munmap(p, pmd), 0);
	ASSERT_EQ(hmm_folio_stats(self->fd, &after), 0);
	/* All that was free is free again (plus any chunk added meanwhile). */
	ASSERT_EQ(after.free_pages - before.free_pages,
		  after.total_pages - before.total_pages)
		TH_LOG("device memory leaked: %llu of %llu pages free, %llu of %llu before",
		       (unsigned long long)after.free_pages,
		       (unsigned long long)after.total_pages,
		       (unsigned long long)before.free_pages,
		       (unsigned long long)before.total_pages);
}

/*
 * Closing a file evicts the device's memory to system memory, but not the
 * folios another open file holds: they are mapped by no process. (Evicting
 * one whose holder let go of it at the same moment warned in
 * mem_cgroup_migrate() and stalled the CPU: patch 0010; hmm-folio-stress
 * closes two mirrors together.)
 */
TEST_F_TIMEOUT(held, kept_when_another_file_closes, HMM_FOLIO_TIMEOUT(30))
{
	static const unsigned int orders[] = { 0, 1, 4, 9 };
	__u64 handles[sizeof(orders) / sizeof(orders[0])];
	size_t pmd = read_pmd_pagesize();
	const char *why;
	unsigned int i;
	char *p;
	int fd;

	for (i = 0; i < sizeof(orders) / sizeof(orders[0]); i++) {
		struct hmm_dmirror_folio_cmd c = { .order = orders[i] };

		ASSERT_EQ(hmm_folio_direct_folio(self->fd, HMM_DMIRROR_FOLIO_ALLOC, &c),
			  0);
		handles[i] = c.handle;
		memset(&c, 0, sizeof(c));
		c.handle = handles[i];
		c.seed = i + 1;
		ASSERT_EQ(hmm_folio_direct_folio(self->fd, HMM_DMIRROR_FOLIO_FILL, &c),
			  0);
	}
	/* Another file with a THP on the device, closed: evicts the device. */
	fd = hmm_folio_open(0, &why);
	ASSERT_GE(fd, 0);
	p = hmm_folio_thp_on_device(fd, pmd, 1);
	ASSERT_NE(p, NULL);
	ASSERT_EQ(close(fd), 0);
	ASSERT_EQ(hmm_folio_snapshot_expect(self->fd, p, pmd / psize(),
					    HMM_FOLIO_SNAP_SYSTEM,
					    "the THP after its file's close"), 0);
	ASSERT_EQ(hmm_folio_check_tags(p, pmd, (uintptr_t)p, 1, "after close"), 0);
	ASSERT_EQ(munmap(p, pmd), 0);

	/* Still held, where they were, with their data. */
	ASSERT_EQ(hmm_folio_check_invariants(self->fd, HMM_DMIRROR_CHECK_HELD, 0,
					     NULL, 0), 0);
	for (i = 0; i < sizeof(orders) / sizeof(orders[0]); i++) {
		struct hmm_dmirror_folio_cmd c = {
			.handle = handles[i],
			.seed = i + 1,
		};

		ASSERT_EQ(hmm_folio_direct_folio(self->fd, HMM_DMIRROR_FOLIO_VERIFY,
						 &c), 0);
		ASSERT_EQ(c.bad_pages, 0);
		ASSERT_EQ(c.order, orders[i]);
	}
}

TEST_HARNESS_MAIN
