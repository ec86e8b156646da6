// SPDX-License-Identifier: GPL-2.0
/*
 * Pinned I/O around device-private large folios.
 *
 * fixed: a THP registered as io_uring fixed buffers is pinned for the long
 * term (FOLL_LONGTERM). Migrating it to the device must leave it in system
 * memory, since the ring would go on reading and writing the old pages;
 * registering a range whose THP sits on the device must bring it back to
 * system memory first. Either way the ring's I/O and the CPU must see the
 * same pages, and once the buffers are unregistered the THP goes to the
 * device as one PMD folio again.
 *
 * pinned.<by>_<size>: a PMD-sized range made of folios of one size
 * (small pages, each anonymous mTHP size enabled alone, the PMD size),
 * pinned for the long term by an io_uring fixed buffer or by the tree's
 * gup_test (PIN_LONGTERM_TEST_START, FOLL_LONGTERM), then offered to
 * MIGRATE_TO_DEV again and again while a thread on the other CPU keeps
 * reading the range's pagemap. migrate_vma must not collect any of it:
 * every page present at its pinned PFN in every read (a migration entry
 * that comes and goes would show), no page on the device, nothing split
 * and no device folio allocated; the pin and the CPU still see the same
 * pages. Unpinned, the range moves to the device and back.
 *
 * race: O_DIRECT reads and writes (pread/pwrite, or io_uring, or io_uring
 * on the pages registered as a fixed buffer for that one I/O, so that the
 * FOLL_LONGTERM registration races too) pin the pages of a range for the
 * time of each I/O while another thread migrates the same range to the
 * device, brings it back, or unmaps it. Bounded in time
 * and seeded (HMM_FOLIO_SEED repeats a run); afterwards the block device
 * and memory must hold exactly what the I/O thread last wrote.
 *
 * O_DIRECT needs a block device: a loop device over a tmpfs file (tmpfs
 * itself only pretends to do direct I/O and never pins user pages).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/uio.h>

#ifdef HAVE_LIBURING
#include <liburing.h>
#endif

#include <mm/gup_test.h>

#include "kselftest_harness.h"
#include "vm_util.h"
#include "hugepage_settings.h"
#include "hmm_folio_util.h"

/* ------------------------------------------------------------------------
 * io_uring, through liburing: one ring, one request at a time.
 */

struct pin_ring {
#ifdef HAVE_LIBURING
	struct io_uring ring;
#endif
	bool up;
};

static int pin_ring_init(struct pin_ring *r, const char **why)
{
#ifdef HAVE_LIBURING
	int ret = io_uring_queue_init(8, &r->ring, 0);

	r->up = !ret;
	if (ret == -ENOSYS)
		*why = "io_uring not in this kernel (CONFIG_IO_URING)";
	else if (ret == -EPERM)
		*why = "io_uring disabled (sysctl kernel.io_uring_disabled)";
	else if (ret)
		*why = "io_uring_queue_init failed";
	return ret == -ENOSYS || ret == -EPERM ? HMM_FOLIO_SKIP : ret;
#else
	r->up = false;
	*why = "built without liburing (liburing-dev was missing at build time)";
	return HMM_FOLIO_SKIP;
#endif
}

static void pin_ring_exit(struct pin_ring *r)
{
#ifdef HAVE_LIBURING
	if (r->up)
		io_uring_queue_exit(&r->ring);
#endif
	r->up = false;
}

/* Register [p, +size) as fixed buffer 0: a long-term pin of its pages. */
static int pin_ring_register(struct pin_ring *r, void *p, size_t size)
{
#ifdef HAVE_LIBURING
	struct iovec iov = { .iov_base = p, .iov_len = size };

	return io_uring_register_buffers(&r->ring, &iov, 1);
#else
	return -EOPNOTSUPP;
#endif
}

static int pin_ring_unregister(struct pin_ring *r)
{
#ifdef HAVE_LIBURING
	return io_uring_unregister_buffers(&r->ring);
#else
	return -EOPNOTSUPP;
#endif
}

/*
 * One read (@write false) or write of @len bytes at @buf, file offset @off,
 * from fixed buffer 0 when @fixed. Returns the result: bytes or -errno.
 */
static long pin_ring_rw(struct pin_ring *r, bool write, bool fixed, int fd,
			void *buf, size_t len, off_t off)
{
#ifdef HAVE_LIBURING
	struct io_uring_cqe *cqe;
	struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
	long ret;

	if (!sqe)
		return -EBUSY;
	if (fixed && write)
		io_uring_prep_write_fixed(sqe, fd, buf, len, off, 0);
	else if (fixed)
		io_uring_prep_read_fixed(sqe, fd, buf, len, off, 0);
	else if (write)
		io_uring_prep_write(sqe, fd, buf, len, off);
	else
		io_uring_prep_read(sqe, fd, buf, len, off);
	ret = io_uring_submit(&r->ring);
	if (ret != 1)
		return ret < 0 ? ret : -EIO;
	do {
		ret = io_uring_wait_cqe(&r->ring, &cqe);
	} while (ret == -EINTR);
	if (ret)
		return ret;
	ret = cqe->res;
	io_uring_cqe_seen(&r->ring, cqe);
	return ret;
#else
	return -EOPNOTSUPP;
#endif
}

/* ------------------------------------------------------------------------
 * A loop block device over an unlinked tmpfs file, opened O_DIRECT.
 */

struct pin_disk {
	int fd;		/* /dev/loopN, O_DIRECT; LO_FLAGS_AUTOCLEAR detaches it */
	size_t size;
};

static int pin_disk_open(struct pin_disk *d, size_t size, const char **why)
{
	struct loop_config cfg = {
		.block_size = 4096,
		.info.lo_flags = LO_FLAGS_AUTOCLEAR,
	};
	char path[] = "/tmp/hmm-folio-pin.XXXXXX", dev[32];
	int ctl, back, n, ret;

	d->fd = -1;
	d->size = size;
	ctl = open("/dev/loop-control", O_RDWR);
	if (ctl < 0) {
		ret = -errno;
		*why = "no /dev/loop-control (CONFIG_BLK_DEV_LOOP): no block device for O_DIRECT";
		return ret == -ENOENT ? HMM_FOLIO_SKIP : ret;
	}
	back = mkstemp(path);
	if (back < 0) {
		ret = -errno;
		*why = "cannot create the loop device's backing file in /tmp";
		goto out_ctl;
	}
	unlink(path);
	if (ftruncate(back, size)) {
		ret = -errno;
		*why = "cannot size the loop device's backing file";
		goto out_back;
	}
	n = ioctl(ctl, LOOP_CTL_GET_FREE);
	snprintf(dev, sizeof(dev), "/dev/loop%d", n);
	d->fd = n < 0 ? -1 : open(dev, O_RDWR | O_DIRECT);
	if (d->fd < 0) {
		ret = -errno;
		*why = "no free loop device";
		goto out_back;
	}
	cfg.fd = back;
	if (ioctl(d->fd, LOOP_CONFIGURE, &cfg)) {
		ret = -errno;
		*why = "LOOP_CONFIGURE failed";
		close(d->fd);
		d->fd = -1;
		goto out_back;
	}
	ret = 0;
out_back:
	close(back);
out_ctl:
	close(ctl);
	return ret;
}

static void pin_disk_close(struct pin_disk *d)
{
	if (d->fd >= 0)
		close(d->fd);
	d->fd = -1;
}

/* Snapshot of a pinned THP: writable, PMD-mapped system memory. */
#define PIN_PROT_SYS_PMD	(HMM_DMIRROR_PROT_PMD | HMM_DMIRROR_PROT_WRITE)

/* ------------------------------------------------------------------------
 * fixed: io_uring fixed buffers over a THP, and the device.
 */

enum fixed_how {
	FIXED_PIN_THEN_MIGRATE,	/* registered, then MIGRATE_TO_DEV tried */
	FIXED_DEVICE_THEN_PIN,	/* on the device, then registered */
};

FIXTURE(fixed)
{
	struct hmm_folio_kmsg kmsg;
	int fd;
	struct pin_ring ring;
	struct pin_disk disk;
	int file;		/* what the ring reads and writes */
	size_t size;
	unsigned long npages;
	void *mirror;
	void *bounce;
};

FIXTURE_VARIANT(fixed)
{
	enum fixed_how how;
	bool dio;		/* the loop device O_DIRECT, not a tmpfs file */
};

FIXTURE_VARIANT_ADD(fixed, pin_then_migrate_file)
{
	.how = FIXED_PIN_THEN_MIGRATE,
};

FIXTURE_VARIANT_ADD(fixed, pin_then_migrate_dio)
{
	.how = FIXED_PIN_THEN_MIGRATE, .dio = true,
};

FIXTURE_VARIANT_ADD(fixed, device_then_pin_file)
{
	.how = FIXED_DEVICE_THEN_PIN,
};

FIXTURE_VARIANT_ADD(fixed, device_then_pin_dio)
{
	.how = FIXED_DEVICE_THEN_PIN, .dio = true,
};

FIXTURE_SETUP(fixed)
{
	char path[] = "/tmp/hmm-folio-fixed.XXXXXX";
	const char *why = NULL;

	self->mirror = NULL;
	self->bounce = NULL;
	self->file = -1;
	self->disk.fd = -1;
	self->ring.up = false;
	HMM_FOLIO_REQUIRE(hmm_folio_fixture_open(&self->kmsg, &self->fd,
						 HMM_FOLIO_NEED_THP, &why), why);
	HMM_FOLIO_REQUIRE(pin_ring_init(&self->ring, &why), why);
	self->size = read_pmd_pagesize();
	self->npages = self->size / psize();
	if (variant->dio) {
		HMM_FOLIO_REQUIRE(pin_disk_open(&self->disk, self->size,
						&why), why);
		self->file = self->disk.fd;
	} else {
		self->file = mkstemp(path);
		ASSERT_GE(self->file, 0);
		unlink(path);
	}
	self->mirror = malloc(self->size);
	ASSERT_NE(self->mirror, NULL);
	self->bounce = aligned_alloc(psize(), self->size);
	ASSERT_NE(self->bounce, NULL);
}

FIXTURE_TEARDOWN(fixed)
{
	int splats;

	pin_ring_exit(&self->ring);
	if (variant->dio)
		pin_disk_close(&self->disk);
	else if (self->file >= 0)
		close(self->file);
	splats = hmm_folio_fixture_close(&self->kmsg, &self->fd);
	free(self->mirror);
	free(self->bounce);
	HMM_FOLIO_FAIL_ON_SPLATS(splats);
}

/*
 * The ring and the CPU must use the same pages: the CPU writes a new
 * generation, the ring writes the buffer to the file, the file must hold
 * it; then the file gets another generation and the ring reads it into the
 * buffer, where the CPU must see it. Returns the generation in memory.
 */
static unsigned int fixed_io(struct __test_metadata *_metadata,
			     FIXTURE_DATA(fixed) *self, char *p,
			     unsigned int gen)
{
	gen++;
	hmm_folio_fill(p, self->size, (uintptr_t)p, gen);
	ASSERT_EQ(pin_ring_rw(&self->ring, true, true, self->file, p,
			      self->size, 0), self->size);
	ASSERT_EQ(pread(self->file, self->bounce, self->size, 0), self->size);
	ASSERT_EQ(hmm_folio_check_tags(self->bounce, self->size, (uintptr_t)p, gen,
				       "file after WRITE_FIXED"), 0);

	gen++;
	hmm_folio_fill(self->bounce, self->size, (uintptr_t)p, gen);
	ASSERT_EQ(pwrite(self->file, self->bounce, self->size, 0), self->size);
	ASSERT_EQ(pin_ring_rw(&self->ring, false, true, self->file, p,
			      self->size, 0), self->size);
	ASSERT_EQ(hmm_folio_check_tags(p, self->size, (uintptr_t)p, gen,
				       "buffer after READ_FIXED"), 0);
	HMM_FOLIO_STEP_DONE("I/O on the pinned buffer");
	return gen;
}

/* MIGRATE_TO_DEV of a pinned range: nothing of it may move. */
static void fixed_try_migrate(struct __test_metadata *_metadata,
			      FIXTURE_DATA(fixed) *self, char *p,
			      unsigned int gen)
{
	struct hmm_dmirror_cmd cmd;
	int ret;

	ret = hmm_folio_cmd(self->fd, HMM_DMIRROR_MIGRATE_TO_DEV, p,
			    self->mirror, self->npages, &cmd);
	/* test_hmm: ENOENT when nothing could be migrated */
	ASSERT_TRUE(!ret || ret == -ENOENT || ret == -EBUSY)
		TH_LOG("MIGRATE_TO_DEV of a pinned range: %s", strerror(-ret));
	ASSERT_EQ(hmm_folio_snapshot_expect(self->fd, p, self->npages,
					    PIN_PROT_SYS_PMD,
					    "pinned, after MIGRATE_TO_DEV"), 0);
	ASSERT_EQ(hmm_folio_check_tags(p, self->size, (uintptr_t)p, gen,
				       "pinned buffer after MIGRATE_TO_DEV"), 0);
	HMM_FOLIO_STEP_DONE("migrating the pinned range");
}

/* To the device as one PMD folio, its copy carrying generation @gen. */
static void fixed_to_device(struct __test_metadata *_metadata,
			    FIXTURE_DATA(fixed) *self, char *p,
			    unsigned int gen)
{
	ASSERT_EQ(hmm_folio_to_device(self->fd, p, self->size, self->mirror,
				      gen, HMM_FOLIO_PROT_DEV_PMD), 0);
}

TEST_F_TIMEOUT(fixed, lifecycle, HMM_FOLIO_TIMEOUT(60))
{
	unsigned int gen = 1;
	char *p = hmm_folio_map_aligned(self->size);

	ASSERT_NE(p, NULL);
	hmm_folio_fill(p, self->size, (uintptr_t)p, gen);
	ASSERT_TRUE(hmm_folio_is_thp(p, self->size))
		TH_LOG("no PMD-sized THP at %p after MADV_HUGEPAGE", p);

	if (variant->how == FIXED_DEVICE_THEN_PIN) {
		fixed_to_device(_metadata, self, p, gen);
		/* Pinning faults the device folio back to system memory. */
		ASSERT_EQ(pin_ring_register(&self->ring, p, self->size), 0);
		ASSERT_EQ(hmm_folio_snapshot_expect(self->fd, p,
						    self->npages, PIN_PROT_SYS_PMD,
						    "registered over the device folio"),
			  0);
		ASSERT_EQ(hmm_folio_check_tags(p, self->size, (uintptr_t)p, gen,
					       "buffer registered over the device"), 0);
	} else {
		ASSERT_EQ(pin_ring_register(&self->ring, p, self->size), 0);
	}

	gen = fixed_io(_metadata, self, p, gen);
	fixed_try_migrate(_metadata, self, p, gen);
	/* The ring still reads and writes the pages the CPU sees. */
	gen = fixed_io(_metadata, self, p, gen);
	fixed_try_migrate(_metadata, self, p, gen);

	/* Unpinned, the THP goes to the device whole, and comes back. */
	ASSERT_EQ(pin_ring_unregister(&self->ring), 0);
	fixed_to_device(_metadata, self, p, gen);
	ASSERT_EQ(hmm_folio_check_tags(p, self->size, (uintptr_t)p, gen,
				       "CPU view after fault-back"), 0);
	ASSERT_EQ(munmap(p, self->size), 0);
}

/* ------------------------------------------------------------------------
 * pinned: a long-term pin of every anonymous THP size against migrate_vma.
 */

enum pinned_by {
	PINNED_URING,	/* io_uring fixed buffer: FOLL_LONGTERM */
	PINNED_GUP,	/* the tree's gup_test, PIN_LONGTERM_TEST_START */
};

/* A row's order for the PMD size, whatever read_pmd_pagesize() says. */
#define PINNED_PMD	(~0U)
/*
 * MIGRATE_TO_DEV attempts on the pinned range while pagemap is watched:
 * PINNED_TRIES, or as many as fit in PINNED_MS but at least
 * PINNED_MIN_TRIES (an attempt over 512 pinned small pages clears and
 * restores each PTE, a TLB flush each: under TCG on a loaded host it can
 * take a second).
 */
#define PINNED_TRIES		128
#define PINNED_MIN_TRIES	8
#define PINNED_MS		(1000UL * hmm_folio_timeout_scale())
#define PINNED_PFN	((1ULL << 55) - 1)	/* pagemap's PFN bits */

FIXTURE(pinned)
{
	struct hmm_folio_kmsg kmsg;
	int fd;
	struct pin_ring ring;
	int file;		/* what the ring writes the buffer to */
	int gup;		/* /sys/kernel/debug/gup_test */
	bool gup_pinned;
	int pagemap;
	size_t size;
	unsigned long npages;
	unsigned int order;	/* of the folios the range is made of */
	void *mirror;
	void *bounce;
	struct hmm_dmirror_devpfn *pfns;
	__u64 *want;		/* the range's pagemap once pinned */
	/* the watcher thread */
	char *p;
	bool stop;		/* __atomic */
	unsigned long reads;	/* whole reads of the range's pagemap */
	unsigned long overlaps;	/* of them, during a MIGRATE_TO_DEV */
	unsigned long bad;	/* of them, finding a page absent or moved */
	unsigned long bad_page;
	__u64 bad_entry;
	unsigned long tries;	/* __atomic: attempts begun and ended, x2 */
};

FIXTURE_VARIANT(pinned)
{
	enum pinned_by by;
	unsigned int order;	/* 0: small pages */
};

#define PINNED(b, o, be, oe) FIXTURE_VARIANT_ADD(pinned, b##_##o)	\
	{ .by = be, .order = oe }
PINNED(uring, order0, PINNED_URING, 0);
PINNED(uring, order2, PINNED_URING, 2);
PINNED(uring, order3, PINNED_URING, 3);
PINNED(uring, order4, PINNED_URING, 4);
PINNED(uring, order5, PINNED_URING, 5);
PINNED(uring, order6, PINNED_URING, 6);
PINNED(uring, order7, PINNED_URING, 7);
PINNED(uring, order8, PINNED_URING, 8);
PINNED(uring, pmd, PINNED_URING, PINNED_PMD);
PINNED(gup, order0, PINNED_GUP, 0);
PINNED(gup, order2, PINNED_GUP, 2);
PINNED(gup, order3, PINNED_GUP, 3);
PINNED(gup, order4, PINNED_GUP, 4);
PINNED(gup, order5, PINNED_GUP, 5);
PINNED(gup, order6, PINNED_GUP, 6);
PINNED(gup, order7, PINNED_GUP, 7);
PINNED(gup, order8, PINNED_GUP, 8);
PINNED(gup, pmd, PINNED_GUP, PINNED_PMD);

FIXTURE_SETUP(pinned)
{
	char path[] = "/tmp/hmm-folio-pinned.XXXXXX";
	const char *why = NULL;
	unsigned int pmd_order;

	self->mirror = NULL;
	self->bounce = NULL;
	self->pfns = NULL;
	self->want = NULL;
	self->p = NULL;
	self->file = -1;
	self->gup = -1;
	self->gup_pinned = false;
	self->pagemap = -1;
	self->ring.up = false;
	HMM_FOLIO_REQUIRE(hmm_folio_fixture_open(&self->kmsg, &self->fd,
						 HMM_FOLIO_NEED_ALL, &why), why);
	self->size = read_pmd_pagesize();
	self->npages = self->size / psize();
	pmd_order = sz2ord(self->size, psize());
	self->order = variant->order == PINNED_PMD ? pmd_order : variant->order;
	ASSERT_TRUE(!self->order ||
		    (thp_supported_orders() & (1UL << self->order)))
		TH_LOG("no %lukB anonymous THP size in this kernel",
		       ((unsigned long)psize() << self->order) >> 10);
	if (variant->by == PINNED_URING) {
		HMM_FOLIO_REQUIRE(pin_ring_init(&self->ring, &why), why);
		self->file = mkstemp(path);
		ASSERT_GE(self->file, 0);
		unlink(path);
	} else {
		self->gup = open("/sys/kernel/debug/gup_test", O_RDWR);
		if (self->gup < 0 && errno == ENOENT)
			SKIP(return, "gup_test not available (CONFIG_GUP_TEST, debugfs)");
		ASSERT_GE(self->gup, 0) TH_LOG("gup_test: %s", strerror(errno));
	}
	self->pagemap = open("/proc/self/pagemap", O_RDONLY);
	ASSERT_GE(self->pagemap, 0);
	hmm_folio_thp_only(self->order);
	self->mirror = malloc(self->size);
	self->bounce = aligned_alloc(psize(), self->size);
	self->pfns = calloc(self->npages, sizeof(*self->pfns));
	self->want = calloc(self->npages, sizeof(*self->want));
	ASSERT_TRUE(self->mirror && self->bounce && self->pfns && self->want);
}

FIXTURE_TEARDOWN(pinned)
{
	int splats;

	if (self->gup_pinned)
		ioctl(self->gup, PIN_LONGTERM_TEST_STOP);
	if (self->gup >= 0)
		close(self->gup);
	pin_ring_exit(&self->ring);
	if (self->file >= 0)
		close(self->file);
	if (self->p)
		munmap(self->p, self->size);
	if (self->pagemap >= 0)
		close(self->pagemap);
	splats = hmm_folio_fixture_close(&self->kmsg, &self->fd);
	free(self->mirror);
	free(self->bounce);
	free(self->pfns);
	free(self->want);
	HMM_FOLIO_FAIL_ON_SPLATS(splats);
}

static int pinned_pagemap(FIXTURE_DATA(pinned) *self, __u64 *out)
{
	size_t len = self->npages * sizeof(*out);

	return pread(self->pagemap, out, len,
		     (uintptr_t)self->p / psize() * sizeof(*out)) ==
	       (ssize_t)len ? 0 : -EIO;
}

/*
 * The watcher: the range's pagemap, read again and again, must show every
 * page present at the PFN it was pinned at. A migration entry that came
 * and went, or a page moved, is seen here even when it is gone by the
 * time the attempt returns.
 */
static void *pinned_watch(void *arg)
{
	FIXTURE_DATA(pinned) *self = arg;
	__u64 *seen = calloc(self->npages, sizeof(*seen));
	unsigned long i, t0, t1;

	if (!seen)
		return NULL;
	hmm_folio_pin_cpu(1);
	while (!__atomic_load_n(&self->stop, __ATOMIC_ACQUIRE)) {
		t0 = __atomic_load_n(&self->tries, __ATOMIC_ACQUIRE);
		if (pinned_pagemap(self, seen))
			break;
		t1 = __atomic_load_n(&self->tries, __ATOMIC_ACQUIRE);
		self->reads++;
		/* An attempt was under way during the read. */
		if ((t0 & 1) || t1 != t0)
			self->overlaps++;
		for (i = 0; i < self->npages; i++)
			if (seen[i] != self->want[i])
				break;
		if (i < self->npages && !self->bad++) {
			self->bad_page = i;
			self->bad_entry = seen[i];
		}
	}
	free(seen);
	return NULL;
}

/* What the pin holds must be what the CPU sees: generation @gen. */
static void pinned_io(struct __test_metadata *_metadata,
		      FIXTURE_DATA(pinned) *self,
		      const FIXTURE_VARIANT(pinned) *variant, unsigned int gen,
		      const char *what)
{
	__u64 to = (uintptr_t)self->bounce;

	hmm_folio_fill(self->p, self->size, (uintptr_t)self->p, gen);
	memset(self->bounce, 0, self->size);
	if (variant->by == PINNED_URING) {
		ASSERT_EQ(pin_ring_rw(&self->ring, true, true, self->file,
				      self->p, self->size, 0), self->size);
		ASSERT_EQ(pread(self->file, self->bounce, self->size, 0),
			  self->size);
	} else {
		ASSERT_EQ(ioctl(self->gup, PIN_LONGTERM_TEST_READ, &to), 0)
			TH_LOG("PIN_LONGTERM_TEST_READ: %s", strerror(errno));
	}
	ASSERT_EQ(hmm_folio_check_tags(self->bounce, self->size,
				       (uintptr_t)self->p, gen, what), 0);
}

TEST_F_TIMEOUT(pinned, never_collected, HMM_FOLIO_TIMEOUT(60))
{
	const unsigned int order = self->order;
	const bool pmd = order == sz2ord(self->size, psize());
	unsigned long nfolios = self->npages >> order, i, splits, anon, t0;
	struct pin_longterm_test pin = {
		.size = self->size, .flags = PIN_LONGTERM_TEST_FLAG_USE_WRITE,
	};
	struct hmm_dmirror_alloc_stats st0, st;
	struct hmm_dmirror_cmd cmd;
	unsigned int gen = 1;
	pthread_t watcher;
	int ret = 0;

	/* Faulted in as folios of the row's order alone. */
	anon = order ? hmm_folio_size_stat(order, "nr_anon") : 0;
	self->p = hmm_folio_map_aligned(self->size);
	ASSERT_NE(self->p, NULL);
	if (!order)
		ASSERT_EQ(madvise(self->p, self->size, MADV_NOHUGEPAGE), 0);
	hmm_folio_fill(self->p, self->size, (uintptr_t)self->p, gen);
	if (order)
		ASSERT_EQ(hmm_folio_size_stat(order, "nr_anon") - anon, nfolios);
	ASSERT_EQ(hmm_folio_smaps_kb(self->p, "AnonHugePages:"),
		  pmd ? (long)(self->size >> 10) : 0);
	HMM_FOLIO_STEP_DONE("faulting the range in");

	/* Pinned for the long term, writable. */
	if (variant->by == PINNED_URING) {
		ASSERT_EQ(pin_ring_register(&self->ring, self->p, self->size), 0);
	} else {
		pin.addr = (uintptr_t)self->p;
		ASSERT_EQ(ioctl(self->gup, PIN_LONGTERM_TEST_START, &pin), 0)
			TH_LOG("PIN_LONGTERM_TEST_START: %s", strerror(errno));
		self->gup_pinned = true;
	}
	pinned_io(_metadata, self, variant, ++gen, "pinned pages");
	ASSERT_EQ(pinned_pagemap(self, self->want), 0);
	for (i = 0; i < self->npages; i++) {
		ASSERT_TRUE(self->want[i] & PM_PRESENT) TH_LOG("page %lu", i);
		/* Each folio physically contiguous: the order it claims. */
		ASSERT_NE(self->want[i] & PINNED_PFN, 0) TH_LOG("page %lu", i);
		if (i & ((1UL << order) - 1)) {
			ASSERT_EQ(self->want[i] & PINNED_PFN,
				  (self->want[i - 1] & PINNED_PFN) + 1);
		}
	}
	HMM_FOLIO_STEP_DONE("pinning the range");

	/* Migration attempts, the watcher on the other CPU. */
	splits = order ? hmm_folio_size_stat(order, "split") : 0;
	anon = order ? hmm_folio_size_stat(order, "nr_anon") : 0;
	ASSERT_EQ(hmm_folio_stats(self->fd, &st0), 0);
	self->stop = false;
	ASSERT_EQ(pthread_create(&watcher, NULL, pinned_watch, self), 0);
	hmm_folio_pin_cpu(0);
	t0 = hmm_folio_mono_us();
	for (i = 0; i < PINNED_TRIES; i++) {
		if (i >= PINNED_MIN_TRIES &&
		    hmm_folio_mono_us() - t0 > PINNED_MS * 1000)
			break;
		__atomic_add_fetch(&self->tries, 1, __ATOMIC_RELEASE);
		ret = hmm_folio_cmd(self->fd, HMM_DMIRROR_MIGRATE_TO_DEV,
				    self->p, self->mirror, self->npages, &cmd);
		__atomic_add_fetch(&self->tries, 1, __ATOMIC_RELEASE);
		/*
		 * test_hmm reads the range back through its mirror: ENOENT
		 * when the mirror holds none of it (its cpages counts the
		 * pages read back, not those collected: no use here).
		 */
		if (ret && ret != -ENOENT)
			break;
	}
	ret = ret && ret != -ENOENT ? ret : 0;
	__atomic_store_n(&self->stop, true, __ATOMIC_RELEASE);
	pthread_join(watcher, NULL);
	TH_LOG("%lu attempts in %lu ms; pagemap read %lu times, %lu during an attempt",
	       i, (hmm_folio_mono_us() - t0) / 1000, self->reads,
	       self->overlaps);
	ASSERT_EQ(ret, 0)
		TH_LOG("MIGRATE_TO_DEV of the pinned range: %s", strerror(-ret));
	ASSERT_EQ(self->bad, 0)
		TH_LOG("%lu of %lu pagemap reads: page %lu read %#llx, pinned %#llx",
		       self->bad, self->reads, self->bad_page,
		       (unsigned long long)self->bad_entry,
		       (unsigned long long)self->want[self->bad_page]);
	ASSERT_GT(self->overlaps, 0)
		TH_LOG("the watcher never read pagemap during an attempt");

	/* Nothing collected: no device page, nothing split or allocated. */
	ASSERT_EQ(hmm_folio_devpfn(self->fd, self->p, self->npages,
				   self->pfns), 0);
	for (i = 0; i < self->npages; i++) {
		ASSERT_EQ(self->pfns[i].offset, HMM_DMIRROR_DEVPFN_NONE)
			TH_LOG("pinned page %lu is on the device", i);
	}
	if (order) {
		ASSERT_EQ(hmm_folio_size_stat(order, "split"), splits);
		ASSERT_EQ(hmm_folio_size_stat(order, "nr_anon"), anon);
	}
	ASSERT_EQ(hmm_folio_stats(self->fd, &st), 0);
	for (i = 0; i < HMM_DMIRROR_STATS_ORDERS; i++) {
		ASSERT_EQ(st.allocs[i], st0.allocs[i])
			TH_LOG("device folios of order %lu allocated", i);
	}
	ASSERT_EQ(st.free_pages, st.total_pages);
	ASSERT_EQ(hmm_folio_snapshot_expect(self->fd, self->p, self->npages,
					    HMM_FOLIO_SNAP_SYSTEM,
					    "pinned, after the attempts"), 0);
	pinned_io(_metadata, self, variant, ++gen,
		  "pinned pages after the attempts");
	HMM_FOLIO_STEP_DONE("migrating the pinned range");

	/* Unpinned, it goes to the device and comes back. */
	if (variant->by == PINNED_URING) {
		ASSERT_EQ(pin_ring_unregister(&self->ring), 0);
	} else {
		ASSERT_EQ(ioctl(self->gup, PIN_LONGTERM_TEST_STOP), 0);
		self->gup_pinned = false;
	}
	ASSERT_EQ(hmm_folio_to_device(self->fd, self->p, self->size,
				      self->mirror, gen,
				      pmd ? HMM_FOLIO_PROT_DEV_PMD :
				      HMM_FOLIO_PROT_DEV_PTE), 0);
	ASSERT_EQ(hmm_folio_back(self->fd, self->p, self->size, self->mirror,
				 &gen, BACK_READ), 0);
}

/* ------------------------------------------------------------------------
 * race: O_DIRECT I/O against migration and munmap of the same range.
 */

enum race_io {
	RACE_PIO,	/* pwrite/pread on the O_DIRECT fd */
	RACE_URING,	/* IORING_OP_WRITE/READ on it */
	RACE_FIXED,	/* its pages a fixed buffer for one I/O: registered */
};

enum race_op {
	RACE_TO_DEV,	/* MIGRATE_TO_DEV; the I/O faults pages back */
	RACE_TO_SYS,	/* MIGRATE_TO_DEV, then MIGRATE_TO_SYS */
	RACE_MUNMAP,	/* the read buffer to the device, unmapped, mapped anew */
};

/* How long each race runs (times HMM_FOLIO_TIMEOUT_SCALE: a slower kernel) */
#define RACE_MS		(2000 * hmm_folio_timeout_scale())
#define RACE_MAX_PAGES	64	/* largest I/O, in pages */

FIXTURE(race)
{
	struct hmm_folio_kmsg kmsg;
	int fd;
	struct pin_ring ring;
	struct pin_disk disk;
	size_t size;
	unsigned long npages;
	char *src;		/* written to the disk */
	char *dst;		/* read from the disk */
	void *mirror;
	void *bounce;
	unsigned int *gens;	/* generation of each disk page */
	unsigned int seed;
	bool stop;		/* __atomic: the mover thread reads it */
	/* held by the mover while dst is unmapped: dst can be read then */
	pthread_mutex_t remap_lock;
	/* what the migrating thread saw */
	unsigned long migrations, failed_migrations, remaps;
	int bad_errno;
};

FIXTURE_VARIANT(race)
{
	enum race_io io;
	enum race_op op;
};

#define RACE(i, o, ie, oe) FIXTURE_VARIANT_ADD(race, i##_##o)	\
	{ .io = ie, .op = oe }
RACE(pio, to_dev, RACE_PIO, RACE_TO_DEV);
RACE(pio, to_sys, RACE_PIO, RACE_TO_SYS);
RACE(pio, munmap, RACE_PIO, RACE_MUNMAP);
RACE(uring, to_dev, RACE_URING, RACE_TO_DEV);
RACE(uring, to_sys, RACE_URING, RACE_TO_SYS);
RACE(uring, munmap, RACE_URING, RACE_MUNMAP);
RACE(fixed, to_dev, RACE_FIXED, RACE_TO_DEV);
RACE(fixed, to_sys, RACE_FIXED, RACE_TO_SYS);
RACE(fixed, munmap, RACE_FIXED, RACE_MUNMAP);

FIXTURE_SETUP(race)
{
	const char *why = NULL, *env = getenv("HMM_FOLIO_SEED");

	self->mirror = NULL;
	self->bounce = NULL;
	self->gens = NULL;
	self->src = NULL;
	self->dst = NULL;
	self->disk.fd = -1;
	self->ring.up = false;
	self->stop = false;
	pthread_mutex_init(&self->remap_lock, NULL);
	HMM_FOLIO_REQUIRE(hmm_folio_fixture_open(&self->kmsg, &self->fd,
						 HMM_FOLIO_NEED_THP, &why), why);
	if (variant->io != RACE_PIO)
		HMM_FOLIO_REQUIRE(pin_ring_init(&self->ring, &why), why);
	self->size = read_pmd_pagesize();
	self->npages = self->size / psize();
	HMM_FOLIO_REQUIRE(pin_disk_open(&self->disk, self->size, &why), why);
	self->seed = env ? strtoul(env, NULL, 0) : (unsigned int)time(NULL);
	TH_LOG("seed %u (HMM_FOLIO_SEED=%u repeats it)", self->seed,
	       self->seed);
	self->mirror = malloc(self->size);
	self->bounce = aligned_alloc(psize(), self->size);
	self->gens = calloc(self->npages, sizeof(*self->gens));
	ASSERT_TRUE(self->mirror && self->bounce && self->gens);
}

FIXTURE_TEARDOWN(race)
{
	int splats;

	pin_ring_exit(&self->ring);
	pin_disk_close(&self->disk);
	if (self->src)
		munmap(self->src, self->size);
	if (self->dst)
		munmap(self->dst, self->size);
	splats = hmm_folio_fixture_close(&self->kmsg, &self->fd);
	free(self->mirror);
	free(self->bounce);
	free(self->gens);
	HMM_FOLIO_FAIL_ON_SPLATS(splats);
}

struct race_ctx {
	FIXTURE_DATA(race) *self;
	const FIXTURE_VARIANT(race) *variant;
};

static void race_migrate(FIXTURE_DATA(race) *self, unsigned long request,
			 char *p)
{
	struct hmm_dmirror_cmd cmd;
	int ret = hmm_folio_cmd(self->fd, request, p,
				request == HMM_DMIRROR_MIGRATE_TO_DEV ?
				self->mirror : NULL, self->npages, &cmd);

	if (!ret) {
		self->migrations++;
		return;
	}
	self->failed_migrations++;
	/*
	 * Pinned or busy pages are skipped (test_hmm: ENOENT when none
	 * moved); anything else is a bug.
	 */
	if (ret != -ENOENT && ret != -EBUSY && ret != -EAGAIN &&
	    !self->bad_errno)
		self->bad_errno = -ret;
}

static bool race_stopped(FIXTURE_DATA(race) *self)
{
	return __atomic_load_n(&self->stop, __ATOMIC_ACQUIRE);
}

static void race_stop(FIXTURE_DATA(race) *self)
{
	__atomic_store_n(&self->stop, true, __ATOMIC_RELEASE);
}

/* One round of the thread that moves the range under the I/O's feet. */
static void race_move(FIXTURE_DATA(race) *self,
		      const FIXTURE_VARIANT(race) *variant)
{
	race_migrate(self, HMM_DMIRROR_MIGRATE_TO_DEV, self->src);
	race_migrate(self, HMM_DMIRROR_MIGRATE_TO_DEV, self->dst);
	switch (variant->op) {
	case RACE_TO_DEV:
		break;
	case RACE_TO_SYS:
		race_migrate(self, HMM_DMIRROR_MIGRATE_TO_SYS, self->src);
		race_migrate(self, HMM_DMIRROR_MIGRATE_TO_SYS, self->dst);
		break;
	case RACE_MUNMAP:
		/* Zaps the device folio under the I/O, or its pages. */
		pthread_mutex_lock(&self->remap_lock);
		munmap(self->dst, self->size);
		if (mmap(self->dst, self->size, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) ==
		    MAP_FAILED ||
		    madvise(self->dst, self->size, MADV_HUGEPAGE)) {
			if (!self->bad_errno)
				self->bad_errno = errno;
			race_stop(self);
		}
		pthread_mutex_unlock(&self->remap_lock);
		self->remaps++;
		break;
	}
}

static void *race_mover(void *arg)
{
	struct race_ctx *c = arg;

	while (!race_stopped(c->self))
		race_move(c->self, c->variant);
	return NULL;
}

static long race_rw(FIXTURE_DATA(race) *self,
		    const FIXTURE_VARIANT(race) *variant, bool write,
		    void *buf, size_t len, off_t off)
{
	long ret, unreg;

	if (variant->io == RACE_URING)
		return pin_ring_rw(&self->ring, write, false, self->disk.fd,
				   buf, len, off);
	if (variant->io == RACE_FIXED) {
		/* Pinned while the other thread migrates (or unmaps) it. */
		ret = pin_ring_register(&self->ring, buf, len);
		if (ret)
			return ret;
		ret = pin_ring_rw(&self->ring, write, true, self->disk.fd,
				  buf, len, off);
		unreg = pin_ring_unregister(&self->ring);
		return ret < 0 || !unreg ? ret : unreg;
	}
	ret = write ? pwrite(self->disk.fd, buf, len, off) :
		pread(self->disk.fd, buf, len, off);
	return ret < 0 ? -errno : ret;
}

static unsigned long race_elapsed_ms(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (t.tv_sec - t0->tv_sec) * 1000 +
		(t.tv_nsec - t0->tv_nsec) / 1000000;
}

/*
 * The pages [first, +n) of dst after a read that a remap may have cut:
 * each holds what the read brought (generation @gen) or, remapped since,
 * nothing; never an older generation or another page's data. Returns the
 * pages that hold something else.
 */
static unsigned long race_check_cut(FIXTURE_DATA(race) *self,
				    unsigned long first, unsigned long n,
				    unsigned int gen)
{
	unsigned long i, bad = 0;
	char *pg;

	pthread_mutex_lock(&self->remap_lock);
	for (i = first; i < first + n; i++) {
		pg = self->dst + i * psize();
		if (hmm_folio_page_is(pg, (uintptr_t)self->src + i * psize(), gen) ||
		    !hmm_folio_nonzero_pages(pg, psize()))
			continue;
		if (!bad++)
			fprintf(stderr,
				"# munmap race: read page %lu is neither gen %u nor zero\n",
				i, gen);
	}
	pthread_mutex_unlock(&self->remap_lock);
	return bad;
}

/* Page @i of @buf must carry the generation the disk last got for it. */
static unsigned long race_check(FIXTURE_DATA(race) *self, const char *buf,
				const char *what)
{
	unsigned long i, bad = 0;

	for (i = 0; i < self->npages; i++)
		bad += hmm_folio_check_tags(buf + i * psize(), psize(),
					    (uintptr_t)self->src + i * psize(),
					    self->gens[i], what);
	return bad;
}

/* What the reads of a munmap race saw: cut short, and stale pages. */
struct race_cut {
	unsigned long short_reads, bad_pages;
};

/*
 * One round of I/O during the race: a random run of pages written with
 * generation @gen from src to the disk, read back into dst and checked.
 * Returns false (saying why) when the race must stop.
 */
static bool race_round(FIXTURE_DATA(race) *self,
		       const FIXTURE_VARIANT(race) *variant,
		       unsigned int *seed, unsigned int gen,
		       struct race_cut *cut)
{
	unsigned long first = rand_r(seed) % self->npages;
	unsigned long n = 1 + rand_r(seed) % RACE_MAX_PAGES, i;
	size_t off = first * psize(), len;
	long ret;

	if (n > self->npages - first)
		n = self->npages - first;
	len = n * psize();
	/* The CPU write faults back what sits on the device. */
	hmm_folio_fill(self->src + off, len, (uintptr_t)self->src + off, gen);
	ret = race_rw(self, variant, true, self->src + off, len, off);
	if (ret != (long)len) {
		fprintf(stderr, "# write of %zu bytes at %zu: %ld\n", len, off,
			ret);
		return false;
	}
	for (i = first; i < first + n; i++)
		self->gens[i] = gen;

	ret = race_rw(self, variant, false, self->dst + off, len, off);
	if (variant->op == RACE_MUNMAP) {
		/* Read into a range being unmapped: may fault, or stop short. */
		if (ret == -EFAULT || (ret >= 0 && ret < (long)len))
			cut->short_reads++;
		else if (ret != (long)len)
			return false;
		if (ret > 0)
			cut->bad_pages += race_check_cut(self, first,
							 ret / psize(), gen);
		return true;
	}
	if (ret != (long)len ||
	    hmm_folio_check_tags(self->dst + off, len,
				 (uintptr_t)self->src + off, gen,
				 "read buffer during the race")) {
		fprintf(stderr, "# read of %zu bytes at %zu: %ld\n", len, off,
			ret);
		return false;
	}
	return true;
}

TEST_F_TIMEOUT(race, dio, HMM_FOLIO_TIMEOUT(60))
{
	struct race_cut cut = { 0 };
	struct race_ctx ctx = { self, variant };
	unsigned long iters = 0;
	unsigned int gen = 0, seed = self->seed;
	struct timespec t0;
	pthread_t mover;

	self->src = hmm_folio_map_aligned(self->size);
	self->dst = hmm_folio_map_aligned(self->size);
	ASSERT_TRUE(self->src && self->dst);
	/* Disk, source and destination all start at generation 0. */
	hmm_folio_fill(self->src, self->size, (uintptr_t)self->src, gen);
	ASSERT_EQ(race_rw(self, variant, true, self->src, self->size, 0),
		  self->size);
	ASSERT_EQ(race_rw(self, variant, false, self->dst, self->size, 0),
		  self->size);
	ASSERT_EQ(race_check(self, self->dst, "first read"), 0);

	ASSERT_EQ(pthread_create(&mover, NULL, race_mover, &ctx), 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (!race_stopped(self) && race_elapsed_ms(&t0) < RACE_MS &&
	       race_round(self, variant, &seed, ++gen, &cut))
		iters++;
	race_stop(self);
	pthread_join(mover, NULL);
	TH_LOG("%lu I/O rounds in %lu ms, %lu cut short by munmap", iters,
	       race_elapsed_ms(&t0), cut.short_reads);
	TH_LOG("%lu migrations, %lu refused, %lu remaps", self->migrations,
	       self->failed_migrations, self->remaps);
	ASSERT_GE(race_elapsed_ms(&t0), RACE_MS)
		TH_LOG("the race stopped early (round %lu)", iters);
	ASSERT_EQ(self->bad_errno, 0)
		TH_LOG("migration or remap failed: %s",
		       strerror(self->bad_errno));
	ASSERT_GT(self->migrations, 0);
	ASSERT_EQ(cut.bad_pages, 0)
		TH_LOG("%lu page(s) read during the munmap race hold stale data",
		       cut.bad_pages);

	/* Disk and source memory hold what was last written, page by page. */
	ASSERT_EQ(race_rw(self, variant, false, self->bounce, self->size, 0),
		  self->size);
	ASSERT_EQ(race_check(self, self->bounce, "disk after the race"), 0);
	ASSERT_EQ(race_check(self, self->src, "source after the race"), 0);
	if (variant->op != RACE_MUNMAP)
		ASSERT_EQ(race_check(self, self->dst,
				     "destination after the race"), 0);
}

TEST_HARNESS_MAIN
