// SPDX-License-Identifier: GPL-2.0
/*
 * Unloading test_hmm while its device memory is in use: folios held by the
 * direct-allocation ioctl, a THP on the device mapped in this live process,
 * a THP left on the device by a process that exited. The unload must be
 * refused while the device is open, and once it is closed complete within a
 * bounded time after migrating everything back, with the data intact, no
 * splat and no leaked device page; reloaded, the device memory is handed
 * out again at new orders. Loading with bad parameters must fail cleanly.
 * A device release racing migrations to the device must either wait for
 * nothing or be refused (EBUSY), never leave both stuck (release_race).
 *
 * Needs root, the hmm-folio extension and HMM_FOLIO_MODULE, the path of the
 * test_hmm.ko to reload (the runner's guest sets it). The module is loaded
 * again whatever happens, so that the programs after this one find it.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "kselftest_harness.h"
#include "vm_util.h"
#include "hmm_folio_util.h"

/* How long an unload may take (times HMM_FOLIO_TIMEOUT_SCALE). */
#define UNLOAD_SECS	(30 * hmm_folio_timeout_scale())

enum busy_how {
	BUSY_HELD,	/* device folios held by the fd */
	BUSY_MAPPED,	/* a THP on the device, mapped here */
	BUSY_EXITED,	/* a THP left on the device by an exited process */
	BUSY_BADPARAM,	/* nothing: load with bad parameters instead */
};

FIXTURE(teardown)
{
	struct hmm_folio_kmsg kmsg;
	int fd;
	const char *module;
	size_t size;
	unsigned long npages;
	char *thp;
};

FIXTURE_VARIANT(teardown)
{
	enum busy_how busy;
};

FIXTURE_VARIANT_ADD(teardown, held_folios) { .busy = BUSY_HELD };
FIXTURE_VARIANT_ADD(teardown, mapped_thp) { .busy = BUSY_MAPPED };
FIXTURE_VARIANT_ADD(teardown, owner_exited) { .busy = BUSY_EXITED };
FIXTURE_VARIANT_ADD(teardown, bad_parameters) { .busy = BUSY_BADPARAM };

static int load(const char *path, const char *params)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC), ret;

	if (fd < 0)
		return -errno;
	ret = syscall(SYS_finit_module, fd, params, 0) ? -errno : 0;
	close(fd);
	return ret;
}

/*
 * delete_module() in a child, waited for at most @secs: 0, -errno, or
 * -ETIMEDOUT when the unload hung (the child is left stuck in the kernel).
 */
static int unload_bounded(int secs)
{
	int status, i;
	pid_t pid = fork();

	if (pid < 0)
		return -errno;
	if (!pid)
		_exit(syscall(SYS_delete_module, "test_hmm", O_NONBLOCK) ?
		      errno : 0);
	for (i = 0; i < secs * 10; i++) {
		if (waitpid(pid, &status, WNOHANG) == pid)
			return WIFEXITED(status) ? -WEXITSTATUS(status) : -EIO;
		usleep(100000);
	}
	return -ETIMEDOUT;
}

static bool loaded(void)
{
	return access("/sys/module/test_hmm", F_OK) == 0;
}

FIXTURE_SETUP(teardown)
{
	const char *why = NULL;

	self->thp = NULL;
	/* The runner (guest-init.sh, test_hmm_folio.sh) must say what to reload. */
	self->module = getenv("HMM_FOLIO_MODULE");
	ASSERT_TRUE(self->module && *self->module)
		TH_LOG("HMM_FOLIO_MODULE (the test_hmm.ko to reload) is not set");
	ASSERT_EQ(access(self->module, R_OK), 0)
		TH_LOG("cannot read HMM_FOLIO_MODULE=%s", self->module);
	HMM_FOLIO_REQUIRE(hmm_folio_fixture_open(&self->kmsg, &self->fd,
						 HMM_FOLIO_NEED_ALL, &why), why);
	self->size = read_pmd_pagesize();
	self->npages = self->size / psize();
}

FIXTURE_TEARDOWN(teardown)
{
	int splats;

	if (self->module && !loaded())
		load(self->module, "");
	splats = hmm_folio_fixture_close(&self->kmsg, &self->fd);
	if (self->thp)
		munmap(self->thp, self->size);
	HMM_FOLIO_FAIL_ON_SPLATS(splats);
}

/* Reloaded: device memory at PMD order, freed, then order 5 over it. */
static void reuse_after_reload(struct __test_metadata *_metadata,
			       FIXTURE_DATA(teardown) *self)
{
	struct hmm_dmirror_devpfn *pfns;
	unsigned int old_policy;
	unsigned long j;
	const char *why;
	__u64 base;
	char *p;

	self->fd = hmm_folio_open(0, &why);
	ASSERT_GE(self->fd, 0)
		TH_LOG("no device after the reload: %s", why);
	ASSERT_EQ(hmm_folio_ext_probe(self->fd, &why), 0)
		TH_LOG("after the reload: %s", why);
	ASSERT_EQ(hmm_folio_set_policy(self->fd, HMM_DMIRROR_POLICY_LOWEST,
				       &old_policy), 0);
	pfns = calloc(self->npages, sizeof(*pfns));
	ASSERT_NE(pfns, NULL);
	p = hmm_folio_thp_on_device(self->fd, self->size, 7);
	ASSERT_NE(p, NULL);
	ASSERT_EQ(hmm_folio_devpfn(self->fd, p, self->npages, pfns), 0);
	base = pfns[0].offset;
	ASSERT_EQ(pfns[0].order, sz2ord(self->size, psize()));
	ASSERT_EQ(hmm_folio_check_tags(p, self->size, (uintptr_t)p, 7,
				       "after the reload"), 0);
	ASSERT_EQ(munmap(p, self->size), 0);
	for (j = 0; j < self->npages >> 5; j++) {
		struct hmm_dmirror_folio_cmd c = {
			.offset = base + (j << 5),
			.order = 5,
			.flags = HMM_DMIRROR_FOLIO_AT_OFFSET,
		};

		ASSERT_EQ(hmm_folio_direct_folio(self->fd, HMM_DMIRROR_FOLIO_ALLOC,
						 &c), 0);
	}
	ASSERT_EQ(hmm_folio_check_invariants(self->fd, HMM_DMIRROR_CHECK_HELD, 0,
					     NULL, 0), 0);
	hmm_folio_set_policy(self->fd, old_policy, NULL);
	free(pfns);
	/* The held folios go when the fd is closed, in the teardown. */
}

/* Make the device busy the row's way: held folios, a mapped THP, or none. */
static void make_busy(struct __test_metadata *_metadata,
		      FIXTURE_DATA(teardown) *self,
		      const FIXTURE_VARIANT(teardown) *variant)
{
	struct hmm_dmirror_folio_cmd c = { .order = 4 };
	pid_t pid;

	switch (variant->busy) {
	case BUSY_HELD:
		ASSERT_EQ(hmm_folio_direct_folio(self->fd, HMM_DMIRROR_FOLIO_ALLOC,
						 &c), 0);
		c.order = 9;
		ASSERT_EQ(hmm_folio_direct_folio(self->fd, HMM_DMIRROR_FOLIO_ALLOC,
						 &c), 0);
		break;
	case BUSY_MAPPED:
		self->thp = hmm_folio_thp_on_device(self->fd, self->size, 3);
		ASSERT_NE(self->thp, NULL);
		break;
	case BUSY_EXITED:
		pid = hmm_folio_fork_owner(&self->fd, 1);
		ASSERT_GE(pid, 0);
		/* Exits with its THP on the device. */
		if (!pid)
			_exit(!hmm_folio_thp_on_device(self->fd, self->size, 5));
		ASSERT_EQ(hmm_folio_wait_owner(pid), 0);
		break;
	case BUSY_BADPARAM:
		break;
	}
}

/*
 * Module parameters that are not numbers fail the load with EINVAL and
 * leave nothing loaded. (An unknown parameter is not an error: the kernel
 * ignores it with a warning.)
 */
static void bad_parameters(struct __test_metadata *_metadata,
			   FIXTURE_DATA(teardown) *self)
{
	close(self->fd);
	self->fd = -1;
	ASSERT_EQ(unload_bounded(UNLOAD_SECS), 0);
	ASSERT_EQ(load(self->module, "spm_addr_dev0=notanumber"), -EINVAL);
	ASSERT_FALSE(loaded());
	ASSERT_EQ(load(self->module, "spm_addr_dev1=0x"), -EINVAL);
	ASSERT_FALSE(loaded());
	ASSERT_EQ(load(self->module, ""), 0);
	reuse_after_reload(_metadata, self);
}

/* The mapped THP came back to system memory with its tags. */
static void expect_thp_evicted(struct __test_metadata *_metadata,
			       FIXTURE_DATA(teardown) *self)
{
	int pagemap = open("/proc/self/pagemap", O_RDONLY);
	unsigned long i;

	ASSERT_GE(pagemap, 0);
	for (i = 0; i < self->npages; i++)
		ASSERT_TRUE(pagemap_get_entry(pagemap, self->thp +
					      i * psize()) & PM_PRESENT)
			TH_LOG("page %lu not back in system memory", i);
	close(pagemap);
	ASSERT_EQ(hmm_folio_check_tags(self->thp, self->size,
				       (uintptr_t)self->thp, 3,
				       "after the device was closed"), 0);
}

TEST_F_TIMEOUT(teardown, unload_reload, HMM_FOLIO_TIMEOUT(120))
{
	struct hmm_dmirror_alloc_stats st;
	int ret;

	if (variant->busy == BUSY_BADPARAM) {
		bad_parameters(_metadata, self);
		return;
	}
	make_busy(_metadata, self, variant);

	/* In use: the open device holds the module. */
	ret = unload_bounded(UNLOAD_SECS);
	ASSERT_NE(ret, -ETIMEDOUT) TH_LOG("unload hung");
	ASSERT_EQ(ret, -EWOULDBLOCK)
		TH_LOG("unload while our fd is open: %s", strerror(-ret));
	if (variant->busy == BUSY_EXITED) {
		/* Only our fd holds it: the exit freed the device folio. */
		ASSERT_EQ(hmm_folio_stats(self->fd, &st), 0);
		ASSERT_EQ(st.free_pages, st.total_pages)
			TH_LOG("%llu device pages still in use after the owner exited",
			       (unsigned long long)(st.total_pages -
						    st.free_pages));
	}
	ASSERT_TRUE(loaded());

	/* Closed: everything comes back to system memory, then it unloads. */
	close(self->fd);
	self->fd = -1;
	if (self->thp)
		expect_thp_evicted(_metadata, self);
	ASSERT_EQ(unload_bounded(UNLOAD_SECS), 0)
		TH_LOG("unload after close");
	ASSERT_FALSE(loaded());
	ASSERT_EQ(load(self->module, ""), 0);
	if (self->thp)
		ASSERT_EQ(hmm_folio_check_tags(self->thp, self->size,
					       (uintptr_t)self->thp, 3,
					       "after the reload"), 0);
	reuse_after_reload(_metadata, self);
}

/* ------------------------------------------------------------------------
 * release_race: HMM_DMIRROR_RELEASE against HMM_DMIRROR_MIGRATE_TO_DEV of
 * small pages on the same device. A migration takes device pages one by one
 * and holds them locked, not yet counted by their pagemap, until its
 * migrate_vma_finalize(); a release in that window (before lib/test_hmm
 * patch 0012) evicts around them and waits in memunmap_pages() with
 * devmem_lock held, while the migration waits for devmem_lock to add a
 * chunk: both stuck for good. The release must be refused (EBUSY) then.
 * One thread migrates and reads the range back, the other releases, each on
 * its own CPU; a thread that makes no progress for RR_STALL_MS fails it.
 */
/* How long the race runs (times HMM_FOLIO_TIMEOUT_SCALE: a slower kernel) */
#define RR_MS		(3000 * hmm_folio_timeout_scale())
#define RR_STALL_MS	10000	/* no round done for this long: stuck */
#define RR_PAGES	256	/* small pages migrated per round */

FIXTURE(release_race)
{
	struct hmm_folio_kmsg kmsg;
	int fd;
	size_t size;
	char *p;
	void *mirror;
	bool stop;		/* __atomic */
	/* __atomic: rounds done by each thread, and what they saw */
	unsigned long migrations, partial, releases, refused;
	unsigned long bad_pages;
	int bad_errno;
	const char *bad_what;
	int exited;		/* __atomic: threads that returned */
};

FIXTURE_SETUP(release_race)
{
	const char *why = NULL;

	self->p = NULL;
	self->mirror = NULL;
	HMM_FOLIO_REQUIRE(hmm_folio_fixture_open(&self->kmsg, &self->fd,
						 HMM_FOLIO_NEED_EXT, &why), why);
	self->size = RR_PAGES * psize();
	self->mirror = malloc(self->size);
	ASSERT_NE(self->mirror, NULL);
	self->p = HMM_FOLIO_NEW_RANGE(self->size, false, 11);
}

FIXTURE_TEARDOWN(release_race)
{
	int splats;

	if (self->p)
		munmap(self->p, self->size);
	splats = hmm_folio_fixture_close(&self->kmsg, &self->fd);
	free(self->mirror);
	HMM_FOLIO_FAIL_ON_SPLATS(splats);
}

static bool rr_stopped(FIXTURE_DATA(release_race) *self)
{
	return __atomic_load_n(&self->stop, __ATOMIC_ACQUIRE);
}

static void rr_bad(FIXTURE_DATA(release_race) *self, const char *what, int err)
{
	if (!self->bad_what) {
		self->bad_what = what;
		self->bad_errno = err;
	}
	__atomic_store_n(&self->stop, true, __ATOMIC_RELEASE);
}

/* To the device and back by a CPU read: the tags must survive either. */
static void *rr_migrator(void *arg)
{
	FIXTURE_DATA(release_race) *self = arg;
	struct hmm_dmirror_cmd cmd;
	unsigned long bad;
	int ret;

	hmm_folio_pin_cpu(0);
	while (!rr_stopped(self)) {
		ret = hmm_folio_cmd(self->fd, HMM_DMIRROR_MIGRATE_TO_DEV, self->p,
				    self->mirror, RR_PAGES, &cmd);
		/* ENOENT: a release evicted pages before they were read back. */
		if (ret && ret != -ENOENT) {
			rr_bad(self, "MIGRATE_TO_DEV", -ret);
			break;
		}
		if (!ret && hmm_folio_check_tags(self->mirror, self->size,
						 (uintptr_t)self->p, 11,
						 "device copy during the race")) {
			rr_bad(self, "device copy", 0);
			break;
		}
		__atomic_add_fetch(ret ? &self->partial : &self->migrations, 1,
				   __ATOMIC_RELAXED);
		bad = hmm_folio_check_tags(self->p, self->size, (uintptr_t)self->p,
					   11, "CPU view during the race");
		if (bad) {
			self->bad_pages = bad;
			rr_bad(self, "CPU view", 0);
			break;
		}
	}
	__atomic_add_fetch(&self->exited, 1, __ATOMIC_RELEASE);
	return NULL;
}

static void *rr_releaser(void *arg)
{
	FIXTURE_DATA(release_race) *self = arg;
	int ret;

	hmm_folio_pin_cpu(1);
	while (!rr_stopped(self)) {
		/* A range is only checked for sanity: the device goes. */
		ret = hmm_folio_cmd(self->fd, HMM_DMIRROR_RELEASE, self->p, NULL,
				    RR_PAGES, NULL);
		if (ret && ret != -EBUSY) {
			rr_bad(self, "RELEASE", -ret);
			break;
		}
		__atomic_add_fetch(ret ? &self->refused : &self->releases, 1,
				   __ATOMIC_RELAXED);
	}
	__atomic_add_fetch(&self->exited, 1, __ATOMIC_RELEASE);
	return NULL;
}

TEST_F_TIMEOUT(release_race, migrate_to_dev, HMM_FOLIO_TIMEOUT(60))
{
	unsigned long *const rounds[2][2] = {
		{ &self->migrations, &self->partial },
		{ &self->releases, &self->refused },
	};
	struct hmm_dmirror_alloc_stats st;
	unsigned long ms;
	pthread_t tm, tr;
	int stuck;

	ASSERT_EQ(pthread_create(&tm, NULL, rr_migrator, self), 0);
	ASSERT_EQ(pthread_create(&tr, NULL, rr_releaser, self), 0);
	ms = hmm_folio_race_watch(&self->stop, &self->exited, rounds, NULL,
				  RR_MS, RR_STALL_MS * hmm_folio_timeout_scale(),
				  &stuck);
	/* Both stuck in the kernel cannot be joined: fail, leave them. */
	ASSERT_NE(ms, 0)
		TH_LOG("the %s thread is stuck (%lu migrations, %lu releases)",
		       stuck ? "releasing" : "migrating",
		       self->migrations + self->partial,
		       self->releases + self->refused);
	pthread_join(tm, NULL);
	pthread_join(tr, NULL);
	ASSERT_EQ(self->bad_what, NULL)
		TH_LOG("%s: %s (%lu bad pages)", self->bad_what,
		       self->bad_errno ? strerror(self->bad_errno) : "wrong data",
		       self->bad_pages);
	TH_LOG("%lu ms: %lu migrations (%lu partly evicted), %lu releases, %lu refused (%lu/s)",
	       ms, self->migrations, self->partial, self->releases,
	       self->refused, self->refused * 1000 / ms);
	/* Both sides ran: the race was run, not one side alone. */
	ASSERT_GT(self->migrations + self->partial, 0);
	ASSERT_GT(self->releases, 0);
	HMM_FOLIO_STEP_DONE("release racing migrations");

	/* The range whole in system memory; then no device page left in use. */
	ASSERT_EQ(hmm_folio_check_tags(self->p, self->size, (uintptr_t)self->p,
				       11, "after the race"), 0);
	ASSERT_EQ(munmap(self->p, self->size), 0);
	self->p = NULL;
	ASSERT_EQ(hmm_folio_stats(self->fd, &st), 0);
	ASSERT_EQ(st.free_pages, st.total_pages)
		TH_LOG("%llu device pages still in use after the race",
		       (unsigned long long)(st.total_pages - st.free_pages));
	HMM_FOLIO_STEP_DONE("after the race");
}

/*
 * Known kernel bugs that spoil the rest of a run are run only when asked
 * (HMM_FOLIO_CRASHERS=1; run_tests.sh --crashers) and SKIP otherwise,
 * naming the bug. Both here are met by an eviction of device memory by PFN
 * (migrate_device_range(), as test_hmm does when one of its files is
 * closed) while the owner munmaps a device THP: each round moves a large
 * range (what the eviction spends its time copying) and a THP of its own
 * VMA to the device, closes a second file of the device and, from another
 * thread, munmaps the THP a swept delay later; the munmap must land inside
 * the eviction in some rounds, and the large range must come back to system
 * memory intact in all of them. The variant says when the munmap lands.
 *
 * migrate_device_finalize_anon_vma: early, before try_to_migrate() reaches
 * the THP. __migrate_device_finalize() then walks folio->mapping's
 * anon_vma, which the munmap freed: the eviction holds neither a reference
 * on it nor any mmap_lock. A use-after-free that only KASAN (with
 * SLUB_RCU_DEBUG: anon_vmas are SLAB_TYPESAFE_BY_RCU) sees; its report turns
 * lockdep off for the rest of the boot.
 *
 * zap_huge_pmd_migration_entry: late, after try_to_migrate() made the THP's
 * PMD a migration entry. zap_huge_pmd_folio() takes it for a device-private
 * PMD (it tests the folio, not the entry): it removes the rmap again and
 * drops the eviction's reference, and the folio is freed while the eviction
 * holds it locked and copies it (a DEBUG_VM kernel oopses or hits a
 * VM_BUG_ON; the test is left stuck in the kernel).
 */
#define EV_BULK		(32UL << 20)	/* bytes the eviction copies */
#define EV_ROUNDS	12
#define EV_NDELAYS	4

FIXTURE(crashers)
{
	struct hmm_folio_kmsg kmsg;
	int fd;
};

FIXTURE_VARIANT(crashers)
{
	/* When the munmap starts, in thousandths of the last eviction. */
	unsigned int permille[EV_NDELAYS];
	bool need_kasan;	/* the bug shows only under KASAN */
	const char *bug;	/* selftests/fixes/known-bugs */
	const char *symptom;	/* for the log: what the bug looks like */
};

FIXTURE_VARIANT_ADD(crashers, migrate_device_finalize_anon_vma) {
	.permille = { 10, 20, 35, 50 },
	.need_kasan = true,
	.bug = "migrate_device_finalize_anon_vma",
	.symptom = "KASAN: slab-use-after-free in rmap_walk_anon(), from finalize",
};

FIXTURE_VARIANT_ADD(crashers, zap_huge_pmd_migration_entry) {
	.permille = { 300, 400, 500, 600 },
	.bug = "zap_huge_pmd_migration_entry",
	.symptom = "the evicted folio freed under the eviction by the munmap's zap_huge_pmd()",
};

FIXTURE_SETUP(crashers)
{
	const char *why = NULL, *e = getenv("HMM_FOLIO_CRASHERS");

	if ((!e || strcmp(e, "1")) && variant->need_kasan)
		SKIP(return,
		     "known kernel bug whose KASAN report turns lockdep off for the rest of the run (see the source); HMM_FOLIO_CRASHERS=1 runs it");
	if (!e || strcmp(e, "1"))
		SKIP(return,
		     "known kernel bug that crashes DEBUG_VM kernels (see the source); HMM_FOLIO_CRASHERS=1 runs it");
	if (variant->need_kasan &&
	    (hmm_folio_config_has("CONFIG_KASAN") != 1 ||
	     hmm_folio_config_has("CONFIG_SLUB_RCU_DEBUG") != 1))
		SKIP(return,
		     "the kernel lacks CONFIG_KASAN or CONFIG_SLUB_RCU_DEBUG (or no config to read): it cannot see this use-after-free");
	HMM_FOLIO_REQUIRE(hmm_folio_fixture_open(&self->kmsg, &self->fd,
						 HMM_FOLIO_NEED_THP, &why), why);
}

FIXTURE_TEARDOWN(crashers)
{
	HMM_FOLIO_FAIL_ON_SPLATS(hmm_folio_fixture_close(&self->kmsg,
							 &self->fd));
}

/*
 * @len bytes, @align aligned, in a PROT_NONE reservation of their own
 * (*@res, *@res_len): the guard pages keep the range a VMA that neither
 * merges with another one nor takes over its anon_vma when first faulted,
 * so that its munmap frees its anon_vma. MADV_HUGEPAGE, tagged with @gen.
 */
static char *ev_map(size_t align, size_t len, unsigned int gen, char **res,
		    size_t *res_len)
{
	char *p, *a;

	*res_len = len + 2 * align;
	p = mmap(NULL, *res_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	a = (char *)(((uintptr_t)p + psize() + align - 1) & ~(align - 1));
	if (mprotect(a, len, PROT_READ | PROT_WRITE) ||
	    madvise(a, len, MADV_HUGEPAGE)) {
		munmap(p, *res_len);
		return NULL;
	}
	*res = p;
	hmm_folio_fill(a, len, (uintptr_t)a, gen);
	return a;
}

struct ev_unmapper {
	char *p;
	size_t len;
	useconds_t delay;
	unsigned long start_us, done_us;	/* its munmap */
	int err;
};

static void *ev_unmap(void *arg)
{
	struct ev_unmapper *u = arg;

	usleep(u->delay);
	u->start_us = hmm_folio_mono_us();
	u->err = munmap(u->p, u->len) ? errno : 0;
	u->done_us = hmm_folio_mono_us();
	return NULL;
}

TEST_F_TIMEOUT(crashers, owner_unmaps_during_eviction, HMM_FOLIO_TIMEOUT(120))
{
	size_t thp = read_pmd_pagesize();
	unsigned long evict_us = 50000, windows = 0, r;
	void *mirror = malloc(EV_BULK);
	char step[96];

	ASSERT_NE(mirror, NULL);
	for (r = 0; r < EV_ROUNDS; r++) {
		unsigned int gb = 2 * r + 1, gv = 2 * r + 2;
		struct ev_unmapper u = { .len = thp };
		unsigned long t0, t1;
		char *bulk, *bres, *vres;
		size_t bres_len, vres_len;
		pthread_t t;
		int fd2;

		bulk = ev_map(thp, EV_BULK, gb, &bres, &bres_len);
		ASSERT_NE(bulk, NULL);
		u.p = ev_map(thp, thp, gv, &vres, &vres_len);
		ASSERT_NE(u.p, NULL);
		ASSERT_EQ(hmm_folio_to_device(self->fd, bulk, EV_BULK, mirror,
					      gb, 0), 0);
		ASSERT_EQ(hmm_folio_to_device(self->fd, u.p, thp, mirror, gv,
					      HMM_FOLIO_PROT_DEV_PMD), 0);
		u.delay = evict_us * variant->permille[r % EV_NDELAYS] / 1000;
		fd2 = open("/dev/hmm_dmirror0", O_RDWR);
		ASSERT_GE(fd2, 0);
		ASSERT_EQ(pthread_create(&t, NULL, ev_unmap, &u), 0);
		/* Closing a file of the device evicts all device memory. */
		t0 = hmm_folio_mono_us();
		ASSERT_EQ(close(fd2), 0);
		t1 = hmm_folio_mono_us();
		pthread_join(t, NULL);
		ASSERT_EQ(u.err, 0) TH_LOG("munmap: %s", strerror(u.err));
		windows += u.start_us > t0 && u.done_us < t1;
		if (!r || r % EV_NDELAYS == EV_NDELAYS - 1)
			evict_us = t1 - t0;
		snprintf(step, sizeof(step),
			 "round %lu: eviction of %lu ms, the THP unmapped at %+ld ms",
			 r, (t1 - t0) / 1000, ((long)u.done_us - (long)t0) / 1000);
		ASSERT_EQ(hmm_folio_step_check(step), 0)
			TH_LOG("the kernel logged a splat during %s (known bug %s if it is %s)",
			       step, variant->bug, variant->symptom);
		ASSERT_EQ(hmm_folio_snapshot_expect(self->fd, bulk,
						    EV_BULK / psize(),
						    HMM_FOLIO_SNAP_SYSTEM,
						    "after the eviction"), 0);
		ASSERT_EQ(hmm_folio_check_tags(bulk, EV_BULK, (uintptr_t)bulk,
					       gb, "after the eviction"), 0);
		ASSERT_EQ(munmap(bres, bres_len), 0);
		ASSERT_EQ(munmap(vres, vres_len), 0);
	}
	free(mirror);
	TH_LOG("%lu rounds, %lu with the munmap done inside the eviction",
	       r, windows);
	/* The race was run: the munmap fell inside some evictions. */
	ASSERT_GT(windows, 0);
	HMM_FOLIO_STEP_DONE("evictions racing the owner's munmap");
}

TEST_HARNESS_MAIN
