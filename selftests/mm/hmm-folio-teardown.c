// SPDX-License-Identifier: GPL-2.0
/*
 * Unloading test_hmm while its device memory is in use: folios held by the
 * direct-allocation ioctl, a THP on the device mapped in this live process,
 * a THP left on the device by a process that exited. The unload must be
 * refused while the device is open, and once it is closed complete within a
 * bounded time after migrating everything back, with the data intact, no
 * splat and no leaked device page; reloaded, the device memory is handed
 * out again at new orders. Loading with bad parameters must fail cleanly.
 *
 * Needs root, the hmm-folio extension and HMM_FOLIO_MODULE, the path of the
 * test_hmm.ko to reload (the runner's guest sets it). The module is loaded
 * again whatever happens, so that the programs after this one find it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "kselftest_harness.h"
#include "vm_util.h"
#include "hmm_folio_util.h"

#define UNLOAD_SECS	30

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

TEST_F_TIMEOUT(teardown, unload_reload, 120)
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

TEST_HARNESS_MAIN
