// SPDX-License-Identifier: GPL-2.0
/*
 * Helpers shared by the device-private large folio tests.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <sys/wait.h>

#include "vm_util.h"
#include "hugepage_settings.h"
#include "hmm_folio_util.h"

int hmm_folio_open(int unit, const char **why)
{
	char path[64];
	int fd;

	snprintf(path, sizeof(path), "/dev/hmm_dmirror%d", unit);
	fd = open(path, O_RDWR);
	if (fd >= 0)
		return fd;
	fd = -errno;
	if (fd == -ENOENT || fd == -ENODEV || fd == -ENXIO)
		*why = "no test_hmm device (/dev/hmm_dmirror*): load test_hmm";
	else if (fd == -EACCES || fd == -EPERM)
		*why = "cannot open /dev/hmm_dmirror*: not root";
	else
		*why = "cannot open /dev/hmm_dmirror*";
	return fd;
}

int hmm_folio_open_probe(int unit, int *fd, const char **why)
{
	*fd = hmm_folio_open(unit, why);
	if (*fd >= 0)
		return 0;
	switch (*fd) {
	case -ENOENT: case -ENODEV: case -ENXIO: case -EACCES: case -EPERM:
		return HMM_FOLIO_SKIP;
	}
	return *fd;
}

int hmm_folio_cmd(int fd, unsigned long request, void *addr, void *mirror,
		  unsigned long npages, struct hmm_dmirror_cmd *out)
{
	struct hmm_dmirror_cmd cmd = {
		.addr = (uintptr_t)addr,
		.ptr = (uintptr_t)mirror,
		.npages = npages,
	};

	while (ioctl(fd, request, &cmd)) {
		if (errno != EINTR)
			return -errno;
	}
	if (out)
		*out = cmd;
	return 0;
}

static int hmm_folio_ioctl(int fd, unsigned long request, void *arg)
{
	while (ioctl(fd, request, arg)) {
		if (errno != EINTR)
			return -errno;
	}
	return 0;
}

/*
 * A command no test_hmm knows: patch 0001's dispatch answers ENOTTY before
 * it reads the argument, a stock one parses it first and says EINVAL.
 */
#define HMM_FOLIO_UNKNOWN_CMD	_IOWR('H', 0x7f, struct hmm_dmirror_cmd)

int hmm_folio_ext_probe(int fd, const char **why)
{
	struct hmm_dmirror_alloc_stats st;
	int ret = hmm_folio_stats(fd, &st);

	if (!ret)
		return 0;
	*why = "test_hmm lacks the hmm-folio extension (lib/test_hmm patches not applied)";
	if (ret == -ENOTTY)
		return HMM_FOLIO_SKIP;
	if (ret == -EINVAL &&
	    hmm_folio_cmd(fd, HMM_FOLIO_UNKNOWN_CMD, NULL, NULL, 0, NULL) == -EINVAL)
		return HMM_FOLIO_SKIP;
	*why = "HMM_DMIRROR_ALLOC_STATS failed on a test_hmm with the extension's dispatch";
	return ret;
}

int hmm_folio_set_policy(int fd, unsigned int policy, unsigned int *old)
{
	struct hmm_dmirror_policy p = { .policy = policy };
	int ret = hmm_folio_ioctl(fd, HMM_DMIRROR_SET_POLICY, &p);

	if (!ret && old)
		*old = p.policy;
	return ret;
}

int hmm_folio_stats(int fd, struct hmm_dmirror_alloc_stats *st)
{
	memset(st, 0, sizeof(*st));
	return hmm_folio_ioctl(fd, HMM_DMIRROR_ALLOC_STATS, st);
}

int hmm_folio_devpfn(int fd, void *addr, unsigned long npages,
		     struct hmm_dmirror_devpfn *out)
{
	struct hmm_dmirror_devpfn_cmd cmd = {
		.addr = (uintptr_t)addr,
		.npages = npages,
		.ptr = (uintptr_t)out,
	};

	return hmm_folio_ioctl(fd, HMM_DMIRROR_DEVPFN, &cmd);
}

static const char * const hmm_folio_fields[] = {
	"none", "zone", "pgmap", "order", "head", "compound_head", "nr_pages",
	"refcount", "mapping", "anon_exclusive", "flags", "data", "mapcount",
	"private",
};

long hmm_folio_check_invariants(int fd, unsigned int flags, __u64 handle,
				void *addr, unsigned long npages)
{
	struct hmm_dmirror_check_cmd cmd = {
		.handle = handle,
		.addr = (uintptr_t)addr,
		.npages = npages,
		.flags = flags,
	};
	int ret = hmm_folio_ioctl(fd, HMM_DMIRROR_CHECK, &cmd);

	if (ret)
		return ret;
	if (cmd.violations)
		fprintf(stderr,
			"# folio check: %llu violation(s) in %u folio(s); first: pfn %#llx %s expected %#llx found %#llx\n",
			(unsigned long long)cmd.violations, cmd.folios,
			(unsigned long long)cmd.first.pfn,
			cmd.first.field < sizeof(hmm_folio_fields) / sizeof(char *) ?
			hmm_folio_fields[cmd.first.field] : "?",
			(unsigned long long)cmd.first.expected,
			(unsigned long long)cmd.first.found);
	return cmd.violations;
}

long hmm_folio_snapshot_expect(int fd, void *addr, unsigned long npages,
			       unsigned int want, const char *what)
{
	unsigned char *m = malloc(npages);
	unsigned long i, first = npages, bad = 0;
	struct hmm_dmirror_cmd cmd;
	int ret;

	if (!m)
		return -ENOMEM;
	ret = hmm_folio_cmd(fd, HMM_DMIRROR_SNAPSHOT, addr, m, npages, &cmd);
	if (ret) {
		free(m);
		return ret;
	}
	for (i = 0; i < npages; i++) {
		bool ok;

		if (want == HMM_FOLIO_SNAP_SYSTEM)
			ok = !(m[i] & 0xf0) &&
			     (m[i] & (HMM_DMIRROR_PROT_READ |
				      HMM_DMIRROR_PROT_WRITE));
		else if (want == HMM_FOLIO_SNAP_INVISIBLE)
			ok = m[i] == HMM_DMIRROR_PROT_NONE ||
			     m[i] == HMM_DMIRROR_PROT_ERROR;
		else
			ok = m[i] == want;
		if (!ok && !bad++)
			first = i;
	}
	if (bad)
		fprintf(stderr,
			"# %s: %lu page(s) with the wrong snapshot; first: page %lu is %#x, expected %s\n",
			what, bad, first, m[first],
			want == HMM_FOLIO_SNAP_SYSTEM ? "system memory" :
			want == HMM_FOLIO_SNAP_INVISIBLE ? "none or error" :
			"another value");
	free(m);
	return bad;
}

int hmm_folio_direct_folio(int fd, unsigned long request,
			   struct hmm_dmirror_folio_cmd *cmd)
{
	return hmm_folio_ioctl(fd, request, cmd);
}

long hmm_folio_direct_cycle(int fd, __u64 base, unsigned long npages,
			    unsigned int order)
{
	unsigned long n = npages >> order, j;
	__u64 *handles = calloc(n, sizeof(*handles));
	long ret = 0;

	if (!handles)
		return -ENOMEM;
	for (j = 0; j < n && !ret; j++) {
		struct hmm_dmirror_folio_cmd c = {
			.offset = base + (j << order),
			.order = order,
			.flags = HMM_DMIRROR_FOLIO_AT_OFFSET,
		};

		ret = hmm_folio_direct_folio(fd, HMM_DMIRROR_FOLIO_ALLOC, &c);
		if (ret) {
			fprintf(stderr, "# order-%u folio at offset %#llx: %s\n",
				order, (unsigned long long)c.offset,
				strerror(-ret));
			break;
		}
		handles[j] = c.handle;
		if (c.offset != base + (j << order)) {
			fprintf(stderr, "# order-%u folio asked at %#llx, got %#llx\n",
				order, (unsigned long long)(base + (j << order)),
				(unsigned long long)c.offset);
			ret = -EFAULT;
			break;
		}
		ret = hmm_folio_check_invariants(fd, HMM_DMIRROR_CHECK_HANDLE,
						 c.handle, NULL, 0);
	}
	for (j = 0; j < n && !ret; j++) {
		struct hmm_dmirror_folio_cmd c = {
			.handle = handles[j], .seed = j + 1,
		};

		ret = hmm_folio_direct_folio(fd, HMM_DMIRROR_FOLIO_FILL, &c);
	}
	for (j = 0; j < n && !ret; j++) {
		struct hmm_dmirror_folio_cmd c = {
			.handle = handles[j], .seed = j + 1,
		};

		ret = hmm_folio_direct_folio(fd, HMM_DMIRROR_FOLIO_VERIFY, &c);
		if (!ret && (c.bad_pages || c.order != order)) {
			fprintf(stderr, "# order-%u folio %lu of %lu: %llu bad pages, order %u\n",
				order, j, n, (unsigned long long)c.bad_pages,
				(unsigned int)c.order);
			ret = c.bad_pages ? (long)c.bad_pages : 1;
		}
	}
	if (!ret)
		ret = hmm_folio_check_invariants(fd, HMM_DMIRROR_CHECK_HELD, 0,
						 NULL, 0);
	for (j = 0; j < n && !ret; j++) {
		struct hmm_dmirror_folio_cmd c = { .handle = handles[j] };

		ret = hmm_folio_direct_folio(fd, HMM_DMIRROR_FOLIO_FREE, &c);
	}
	free(handles);
	if (hmm_folio_step_check("a direct folio cycle") && !ret)
		ret = 1;
	return ret;
}

/* splitmix64 finaliser: neighbouring addresses get unrelated tags. */
uint64_t hmm_folio_tag(uintptr_t addr, unsigned int gen)
{
	uint64_t z = addr + (uint64_t)gen * 0x9e3779b97f4a7c15ULL;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

void hmm_folio_fill(void *buf, size_t size, uintptr_t addr, unsigned int gen)
{
	uint64_t *p = buf;
	size_t i;

	for (i = 0; i < size / sizeof(*p); i++)
		p[i] = hmm_folio_tag(addr + i * sizeof(*p), gen);
}

/* The first word of @page that does not hold its tag, or -1. */
static long first_bad_word(const uint64_t *page, uintptr_t addr,
			   unsigned int gen)
{
	size_t i;

	for (i = 0; i < psize() / sizeof(*page); i++)
		if (page[i] != hmm_folio_tag(addr + i * sizeof(*page), gen))
			return i;
	return -1;
}

unsigned long hmm_folio_check_tags(const void *buf, size_t size, uintptr_t addr,
				   unsigned int gen, const char *what)
{
	const size_t words = psize() / sizeof(uint64_t);
	const uint64_t *p = buf;
	unsigned long bad = 0;
	size_t pg;
	long i;

	for (pg = 0; pg < size / psize(); pg++) {
		i = first_bad_word(p + pg * words, addr + pg * psize(), gen);
		if (i < 0)
			continue;
		if (!bad)
			fprintf(stderr,
				"# %s: page %zu word %ld: expected %#llx (gen %u) found %#llx\n",
				what, pg, i,
				(unsigned long long)hmm_folio_tag(addr + pg * psize() +
								  i * sizeof(*p), gen),
				gen, (unsigned long long)p[pg * words + i]);
		bad++;
	}
	if (bad)
		fprintf(stderr, "# %s: %lu of %zu pages bad\n", what, bad,
			size / psize());
	return bad;
}

bool hmm_folio_page_is(const void *page, uintptr_t addr, unsigned int gen)
{
	return first_bad_word(page, addr, gen) < 0;
}

unsigned long hmm_folio_nonzero_pages(const void *p, size_t size)
{
	const uint64_t *w = p;
	unsigned long bad = 0;
	size_t pg, i;

	for (pg = 0; pg < size / psize(); pg++) {
		for (i = 0; i < psize() / sizeof(*w); i++) {
			if (!w[pg * psize() / sizeof(*w) + i])
				continue;
			if (!bad)
				fprintf(stderr, "# page %zu word %zu not zero\n",
					pg, i);
			bad++;
			break;
		}
	}
	return bad;
}

void *hmm_folio_map_aligned(size_t size)
{
	char *p, *aligned;

	p = mmap(NULL, 2 * size, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	aligned = (char *)(((uintptr_t)p + size - 1) & ~(size - 1));
	/* Trim so that the range is a VMA of its own, like a driver's buffer. */
	if (aligned > p)
		munmap(p, aligned - p);
	munmap(aligned + size, p + size - aligned);
	if (madvise(aligned, size, MADV_HUGEPAGE)) {
		munmap(aligned, size);
		return NULL;
	}
	return aligned;
}

/*
 * A field of the smaps entry of the VMA that starts at @addr, in kB, or -1:
 * vm_util's check_huge_anon() took a length argument in 7.3, so the tests
 * read smaps themselves to build against both.
 */
unsigned long hmm_folio_size_stat(unsigned int order, const char *name)
{
	char path[96];

	snprintf(path, sizeof(path), "hugepages-%lukB/stats/%s",
		 ((unsigned long)psize() << order) >> 10, name);
	return thp_read_num(path);
}

void hmm_folio_thp_only(unsigned int order)
{
	struct thp_settings s;
	unsigned int i;

	thp_read_settings(&s);
	for (i = 0; i < NR_ORDERS; i++)
		s.hugepages[i].enabled = THP_NEVER;
	if (order)
		s.hugepages[order].enabled = THP_INHERIT;
	thp_write_settings(&s);
}

long hmm_folio_smaps_kb(void *addr, const char *field)
{
	char pattern[32], buf[256], fmt[48];
	unsigned long kb;
	long ret = -1;
	FILE *fp;

	fp = fopen("/proc/self/smaps", "r");
	if (!fp)
		return -1;
	snprintf(pattern, sizeof(pattern), "%08lx-", (unsigned long)addr);
	snprintf(fmt, sizeof(fmt), "%s %%lu", field);
	if (check_for_pattern(fp, pattern, buf, sizeof(buf)) &&
	    check_for_pattern(fp, field, buf, sizeof(buf)) &&
	    sscanf(buf, fmt, &kb) == 1)
		ret = kb;
	fclose(fp);
	return ret;
}

static __thread sigjmp_buf write_faults_jmp;

static void write_faults_segv(int sig)
{
	siglongjmp(write_faults_jmp, 1);
}

bool hmm_folio_write_faults(uint64_t *addr, uint64_t v)
{
	struct sigaction sa = { .sa_handler = write_faults_segv }, old;
	bool faulted = false;

	sigaction(SIGSEGV, &sa, &old);
	if (sigsetjmp(write_faults_jmp, 1))
		faulted = true;
	else
		__atomic_store_n(addr, v, __ATOMIC_RELAXED);
	sigaction(SIGSEGV, &old, NULL);
	return faulted;
}

/* Whether the VMA at @addr maps @size bytes of THP (AnonHugePages). */
bool hmm_folio_is_thp(void *addr, size_t size)
{
	return hmm_folio_smaps_kb(addr, "AnonHugePages:") == (long)(size >> 10);
}

void hmm_folio_unmap_aligned(void *p, size_t size)
{
	munmap(p, size);
}

char *hmm_folio_new_range(size_t size, bool thp, unsigned int gen)
{
	char *p = hmm_folio_map_aligned(size);

	if (!p) {
		fprintf(stderr, "# cannot map %zu bytes\n", size);
		return NULL;
	}
	if (!thp && madvise(p, size, MADV_NOHUGEPAGE)) {
		fprintf(stderr, "# MADV_NOHUGEPAGE: %s\n", strerror(errno));
		goto fail;
	}
	hmm_folio_fill(p, size, (uintptr_t)p, gen);
	if (thp && !hmm_folio_is_thp(p, size)) {
		fprintf(stderr, "# no PMD-sized THP at %p after MADV_HUGEPAGE\n",
			p);
		goto fail;
	}
	return p;
fail:
	hmm_folio_unmap_aligned(p, size);
	return NULL;
}

long hmm_folio_to_device(int fd, char *p, size_t size, void *mirror,
			 unsigned int gen, unsigned int snap)
{
	unsigned long npages = size / psize();
	struct hmm_dmirror_cmd cmd = { 0 };
	long bad;
	int ret;

	memset(mirror, 0, size);
	ret = hmm_folio_cmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, p, mirror, npages,
			    &cmd);
	if (ret || cmd.cpages != npages) {
		fprintf(stderr, "# MIGRATE_TO_DEV: %s, %llu of %lu pages\n",
			strerror(-ret), (unsigned long long)cmd.cpages, npages);
		return ret ? ret : -EAGAIN;
	}
	bad = hmm_folio_check_tags(mirror, size, (uintptr_t)p, gen,
				   "device copy after MIGRATE_TO_DEV");
	if (!bad && snap)
		bad = hmm_folio_snapshot_expect(fd, p, npages, snap,
						"after MIGRATE_TO_DEV");
	return bad + hmm_folio_step_check("migrating the range to the device");
}

long hmm_folio_back(int fd, char *p, size_t size, void *mirror,
		    unsigned int *gen, enum back_how how)
{
	unsigned long npages = size / psize();
	long bad = 0;
	int ret = 0;

	switch (how) {
	case BACK_READ:
		break;
	case BACK_WRITE:
		hmm_folio_fill(p, size, (uintptr_t)p, ++*gen);
		break;
	case BACK_MIGRATE:
		ret = hmm_folio_cmd(fd, HMM_DMIRROR_MIGRATE_TO_SYS, p, NULL,
				    npages, NULL);
		break;
	case BACK_DEVICE_READ:
		memset(mirror, 0, size);
		ret = hmm_folio_cmd(fd, HMM_DMIRROR_READ, p, mirror, npages,
				    NULL);
		if (!ret)
			bad = hmm_folio_check_tags(mirror, size, (uintptr_t)p, *gen,
						   "device read");
		break;
	case BACK_DEVICE_WRITE:
		hmm_folio_fill(mirror, size, (uintptr_t)p, ++*gen);
		ret = hmm_folio_cmd(fd, HMM_DMIRROR_WRITE, p, mirror, npages,
				    NULL);
		break;
	case BACK_PTE:
		fprintf(stderr, "# BACK_PTE is the caller's\n");
		return -EINVAL;
	}
	if (ret) {
		fprintf(stderr, "# bringing the range back: %s\n",
			strerror(-ret));
		return ret;
	}
	if (!bad)
		bad = hmm_folio_check_tags(p, size, (uintptr_t)p, *gen,
					   "CPU view after fault-back");
	if (!bad)
		bad = hmm_folio_snapshot_expect(fd, p, npages,
						HMM_FOLIO_SNAP_SYSTEM,
						"after fault-back");
	return bad + hmm_folio_step_check("bringing the range back");
}

long hmm_folio_dontneed(char *p, size_t size)
{
	if (madvise(p, size, MADV_DONTNEED)) {
		fprintf(stderr, "# MADV_DONTNEED: %s\n", strerror(errno));
		return -errno;
	}
	/* The freed device folio must not come back: fresh zero pages. */
	return hmm_folio_nonzero_pages(p, size) +
	       hmm_folio_step_check("MADV_DONTNEED of the device range");
}

pid_t hmm_folio_fork_owner(int *fds, int n)
{
	const char *why;
	pid_t pid = fork();
	int i;

	if (pid < 0)
		return -errno;
	if (pid)
		return pid;
	for (i = 0; i < n; i++) {
		close(fds[i]);
		fds[i] = hmm_folio_open(i, &why);
		if (fds[i] < 0) {
			fprintf(stderr, "# child: mirror %d: %s\n", i, why);
			_exit(1);
		}
	}
	return 0;
}

long hmm_folio_wait_owner(pid_t pid)
{
	int status;

	if (waitpid(pid, &status, 0) != pid) {
		fprintf(stderr, "# waitpid: %s\n", strerror(errno));
		return -errno;
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status)) {
		fprintf(stderr, "# the owner failed (status %#x)\n", status);
		return 1;
	}
	return hmm_folio_step_check("the exit of the process that owned the range");
}

char *hmm_folio_thp_on_device(int fd, size_t size, unsigned int gen)
{
	char *p = hmm_folio_new_range(size, true, gen);
	void *mirror = malloc(size);

	if (!p || !mirror) {
		fprintf(stderr, "# no memory for a %zu byte THP and its copy\n",
			size);
		goto fail;
	}
	if (hmm_folio_to_device(fd, p, size, mirror, gen,
				HMM_FOLIO_PROT_DEV_PMD))
		goto fail;
	free(mirror);
	return p;
fail:
	free(mirror);
	if (p)
		hmm_folio_unmap_aligned(p, size);
	return NULL;
}

/*
 * THP settings as the harness process found them, and a flag the tests (in
 * forked children) set in shared memory once they changed any: only then does
 * the harness process write the saved settings back at exit, so a run that
 * skips everything never writes sysfs.
 */
static struct thp_settings thp_saved;
static bool *thp_dirty;
static pid_t thp_owner;

static void hmm_folio_restore_thp(void)
{
	if (getpid() == thp_owner && thp_dirty && *thp_dirty) {
		thp_write_settings(&thp_saved);
		*thp_dirty = false;
	}
}

static void hmm_folio_restore_thp_signal(int sig)
{
	exit(128 + sig);	/* runs hmm_folio_restore_thp() */
}

/* Runs in the harness process, before any test forks off it. */
static void __attribute__((constructor)) hmm_folio_save_thp(void)
{
	void *p;

	if (!thp_available())
		return;
	p = mmap(NULL, sizeof(*thp_dirty), PROT_READ | PROT_WRITE,
		 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return;
	thp_dirty = p;
	thp_owner = getpid();
	thp_read_settings(&thp_saved);
	atexit(hmm_folio_restore_thp);
	signal(SIGTERM, hmm_folio_restore_thp_signal);
	signal(SIGINT, hmm_folio_restore_thp_signal);
	signal(SIGHUP, hmm_folio_restore_thp_signal);
}

int hmm_folio_thp_setup(const char **why)
{
	struct thp_settings s;
	unsigned long pmd_order;

	if (!thp_available()) {
		*why = "THP not available (CONFIG_TRANSPARENT_HUGEPAGE)";
		return HMM_FOLIO_SKIP;
	}
	if (!read_pmd_pagesize()) {
		*why = "cannot read the PMD size of THP";
		return -EIO;
	}
	if (geteuid() != 0) {
		*why = "changing THP settings needs root";
		return HMM_FOLIO_SKIP;
	}
	if (!thp_dirty) {
		*why = "THP settings could not be saved";
		return -ENOMEM;
	}
	pmd_order = sz2ord(read_pmd_pagesize(), psize());
	thp_read_settings(&s);
	s.thp_enabled = THP_MADVISE;
	s.thp_defrag = THP_DEFRAG_MADVISE;
	if (pmd_order < NR_ORDERS)
		s.hugepages[pmd_order].enabled = THP_INHERIT;
	*thp_dirty = true;
	thp_write_settings(&s);
	return 0;
}

/* What a kernel says when something went wrong (hmm_folio_splats.h). */
static const char * const splat_patterns[] = {
#define HMM_FOLIO_SPLAT(pattern) pattern,
#include "hmm_folio_splats.h"
#undef HMM_FOLIO_SPLAT
};

const char *hmm_folio_splat(const char *line)
{
	size_t i;

	for (i = 0; i < sizeof(splat_patterns) / sizeof(splat_patterns[0]); i++)
		if (strstr(line, splat_patterns[i]))
			return splat_patterns[i];
	return NULL;
}

/* Taint bits a test must not set: BAD_PAGE, DIE, WARN, SOFTLOCKUP. */
#define HMM_FOLIO_BAD_TAINT	((1UL << 5) | (1UL << 7) | (1UL << 9) | (1UL << 14))

static unsigned long read_taint(void)
{
	unsigned long t = 0;
	FILE *f = fopen("/proc/sys/kernel/tainted", "r");

	if (f) {
		if (fscanf(f, "%lu", &t) != 1)
			t = 0;
		fclose(f);
	}
	return t;
}

int hmm_folio_kmsg_begin(struct hmm_folio_kmsg *k, const char **why)
{
	int ret;

	k->taint = 0;
	k->fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK);
	if (k->fd < 0) {
		ret = -errno;
		if (ret == -EACCES || ret == -EPERM) {
			*why = "cannot read /dev/kmsg: not root";
			return HMM_FOLIO_SKIP;
		}
		*why = ret == -ENOENT ? "no /dev/kmsg (CONFIG_PRINTK)" :
			"cannot open /dev/kmsg";
		return ret == -ENOENT ? HMM_FOLIO_SKIP : ret;
	}
	if (lseek(k->fd, 0, SEEK_END) < 0) {
		ret = -errno;
		close(k->fd);
		k->fd = -1;
		*why = "cannot seek /dev/kmsg";
		return ret;
	}
	k->taint = read_taint();
	return 0;
}

/* Splats logged since the last scan of @k, printed as logged during @step. */
static int kmsg_scan(struct hmm_folio_kmsg *k, const char *step)
{
	char rec[8192];
	unsigned long taint;
	int splats = 0;

	if (k->fd < 0)
		return 0;
	for (;;) {
		ssize_t n = read(k->fd, rec, sizeof(rec) - 1);
		char *msg;

		if (n < 0 && errno == EPIPE)	/* overwritten records: go on */
			continue;
		if (n <= 0)
			break;
		rec[n] = '\0';
		msg = strchr(rec, ';');
		msg = msg ? msg + 1 : rec;
		msg[strcspn(msg, "\n")] = '\0';
		if (hmm_folio_splat(msg)) {
			fprintf(stderr, "# kernel log during %s: %s\n", step, msg);
			splats++;
		}
	}
	taint = read_taint() & ~k->taint & HMM_FOLIO_BAD_TAINT;
	if (taint) {
		fprintf(stderr, "# kernel tainted during %s: %#lx\n", step, taint);
		k->taint |= taint;
		splats++;
	}
	return splats;
}

int hmm_folio_kmsg_check(struct hmm_folio_kmsg *k)
{
	return kmsg_scan(k, "the test");
}

/* The watch of the test running in this process (hmm_folio_fixture_open()). */
static struct hmm_folio_kmsg *step_watch;

int hmm_folio_step_check(const char *step)
{
	return step_watch ? kmsg_scan(step_watch, step) : 0;
}

void hmm_folio_kmsg_end(struct hmm_folio_kmsg *k)
{
	if (k->fd >= 0)
		close(k->fd);
	k->fd = -1;
}

/*
 * test_hmm gained HMM_DMIRROR_FLAGS (its one flag fails a THP allocation)
 * with the kernel's support for device-private large folios: a test_hmm
 * without it runs on a kernel that migrates a THP to device memory as
 * order-0 pages only (a SKIP; 7.2's dispatch answers an unknown command
 * with EINVAL). The flags belong to the open file: a file of its own.
 */
static int hmm_folio_dev_thp_probe(const char **why)
{
	int fd, ret = hmm_folio_open_probe(0, &fd, why);

	if (ret)
		return ret;
	ret = hmm_folio_cmd(fd, HMM_DMIRROR_FLAGS, (void *)(uintptr_t)psize(),
			    NULL, HMM_DMIRROR_FLAG_FAIL_ALLOC, NULL);
	close(fd);
	if (ret == -ENOTTY || ret == -EINVAL) {
		*why = "kernel without device-private large folios (no HMM_DMIRROR_FLAGS)";
		return HMM_FOLIO_SKIP;
	}
	if (ret)
		*why = "HMM_DMIRROR_FLAGS failed";
	return ret;
}

/* Device folios test_hmm saw freed dirty (ALLOC_STATS), or -1. */
static long long dirty_frees(int fd)
{
	struct hmm_dmirror_alloc_stats st;

	return hmm_folio_stats(fd, &st) ? -1 : (long long)st.dirty_frees;
}

int hmm_folio_fixture_open(struct hmm_folio_kmsg *k, int *fd,
			   unsigned int needs, const char **why)
{
	int ret;

	*fd = -1;
	k->dirty_frees = -1;
	ret = hmm_folio_kmsg_begin(k, why);
	if (!ret)
		ret = hmm_folio_open_probe(0, fd, why);
	if (!ret && (needs & HMM_FOLIO_NEED_EXT))
		ret = hmm_folio_ext_probe(*fd, why);
	if (!ret && (needs & HMM_FOLIO_NEED_THP))
		ret = hmm_folio_thp_setup(why);
	if (!ret && (needs & HMM_FOLIO_NEED_THP))
		ret = hmm_folio_dev_thp_probe(why);
	if (!ret) {
		k->dirty_frees = dirty_frees(*fd);
		step_watch = k;
	}
	return ret;
}

int hmm_folio_fixture_close(struct hmm_folio_kmsg *k, int *fd)
{
	long long n = -1;
	const char *why;
	int splats = 0;

	if (*fd >= 0)
		close(*fd);
	*fd = -1;
	/*
	 * Closing the mirror evicted and freed what it held: count those frees,
	 * and read the log only once the last file is closed too.
	 */
	if (k->dirty_frees >= 0) {
		*fd = hmm_folio_open(0, &why);
		n = *fd >= 0 ? dirty_frees(*fd) : -1;
		if (n > k->dirty_frees) {
			fprintf(stderr,
				"# test_hmm: %lld device folio(s) freed dirty (mapped, referenced, with a mapping or anon-exclusive)\n",
				n - k->dirty_frees);
			splats++;
		}
	}
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
	splats += kmsg_scan(k, "the test's end (device files closed)");
	if (step_watch == k)
		step_watch = NULL;
	hmm_folio_kmsg_end(k);
	return splats;
}

unsigned int hmm_folio_timeout_scale(void)
{
	static unsigned int scale;
	const char *env;
	char *end;

	if (scale)
		return scale;
	scale = 1;
	env = getenv("HMM_FOLIO_TIMEOUT_SCALE");
	if (env && *env) {
		unsigned long v = strtoul(env, &end, 10);

		if (*end || v < 1 || v > 100)
			fprintf(stderr,
				"# HMM_FOLIO_TIMEOUT_SCALE=%s is not 1..100: using 1\n",
				env);
		else
			scale = v;
	}
	return scale;
}

int hmm_folio_config_has(const char *opt)
{
	char path[128], line[256], want[96];
	struct utsname u;
	bool piped = false;
	FILE *f = NULL;
	int found = 0;

	if (!uname(&u)) {
		snprintf(path, sizeof(path), "/boot/config-%s", u.release);
		f = fopen(path, "r");
	}
	if (!f && !access("/proc/config.gz", R_OK)) {
		f = popen("zcat /proc/config.gz 2>/dev/null", "r");
		piped = true;
	}
	if (!f)
		return -1;
	snprintf(want, sizeof(want), "%s=y\n", opt);
	while (fgets(line, sizeof(line), f))
		found |= !strcmp(line, want);
	if (piped)
		pclose(f);
	else
		fclose(f);
	return found;
}

void hmm_folio_pin_cpu(int cpu)
{
	cpu_set_t set;

	if (sysconf(_SC_NPROCESSORS_ONLN) < 2)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

int hmm_folio_clear_soft_dirty(void)
{
	int fd = open("/proc/self/clear_refs", O_WRONLY);
	int ret = fd >= 0 && write(fd, "4", 1) == 1 ? 0 : -errno;

	if (fd >= 0)
		close(fd);
	return ret;
}

unsigned long hmm_folio_mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000UL + ts.tv_nsec / 1000;
}

/*
 * Where a stuck thread waits in the kernel: each task's /proc stack (root
 * and CONFIG_STACKTRACE; nothing otherwise), as "# " lines.
 */
static void race_dump_stacks(void)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	char path[300], buf[4096];
	ssize_t got;
	int fd;

	if (!d)
		return;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/stack", e->d_name);
		fd = open(path, O_RDONLY);
		if (fd < 0)
			continue;
		got = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (got <= 0)
			continue;
		buf[got] = 0;
		fprintf(stderr, "# task %s:\n", e->d_name);
		for (char *l = strtok(buf, "\n"); l; l = strtok(NULL, "\n"))
			fprintf(stderr, "#   %s\n", l);
	}
	closedir(d);
}

/* Every counter of @need (NULL, or NULL entries: none) nonzero. */
static bool race_watch_enough(unsigned long *const need[2])
{
	int i;

	for (i = 0; need && i < 2; i++)
		if (need[i] && !__atomic_load_n(need[i], __ATOMIC_RELAXED))
			return false;
	return true;
}

unsigned long hmm_folio_race_watch(bool *stop, int *exited,
				   unsigned long *const rounds[2][2],
				   unsigned long *const need[2],
				   unsigned long ms, unsigned long stall_ms,
				   int *stuck)
{
	unsigned long start = hmm_folio_mono_us() / 1000, now, n;
	unsigned long last[2] = { 0, 0 }, moved[2] = { start, start };
	int i;

	for (;;) {
		usleep(20000);
		now = hmm_folio_mono_us() / 1000;
		for (i = 0; i < 2; i++) {
			n = __atomic_load_n(rounds[i][0], __ATOMIC_RELAXED) +
			    __atomic_load_n(rounds[i][1], __ATOMIC_RELAXED);
			if (n != last[i])
				moved[i] = now;
			last[i] = n;
		}
		/* Stopped, and both threads out of the kernel: joinable. */
		if (__atomic_load_n(exited, __ATOMIC_ACQUIRE) == 2)
			return now - start + 1;
		for (i = 0; i < 2; i++) {
			if (now - moved[i] >= stall_ms) {
				race_dump_stacks();
				*stuck = i;
				return 0;
			}
		}
		if (now - start >= ms &&
		    (race_watch_enough(need) || now - start >= 4 * ms))
			__atomic_store_n(stop, true, __ATOMIC_RELEASE);
	}
}
