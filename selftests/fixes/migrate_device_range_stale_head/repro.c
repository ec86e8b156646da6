// SPDX-License-Identifier: GPL-2.0
/*
 * Reproducer: migrate_device_range() skips live device pages after a free
 * page whose struct page still describes the large folio it was part of
 * (mm/migrate_device.c; selftests/fixes/migrate_device_range_stale_head).
 *
 * Build, against a kernel tree with the hmm-folio lib/test_hmm series
 * applied (lib/test_hmm/apply.sh KSRC, or make install-kselftest KSRC=...):
 *
 *	gcc -O2 -Wall -static -I KSRC -o migrate_device_range_stale_head repro.c
 *
 * Run as root with that tree's test_hmm.ko loaded (/dev/hmm_dmirror0), THP
 * enabled, and no other user of the device. Exit status: 1 the bug is
 * present, 0 it is not, 4 it cannot be run here (the reason is printed),
 * 2 something else went wrong.
 *
 * Why the extension: the stock test_hmm keeps the memory of a freed device
 * THP aside and reuses it only for another device THP, so its memory is
 * never carved into small folios. The series' allocator reuses it at any
 * order; HMM_DMIRROR_POLICY_HIGHEST hands out its last pages first, as a
 * top-down or best-fit driver allocator would (patches 0002, 0003, 0011),
 * and HMM_DMIRROR_DEVPFN shows where each page landed (0004). The policy
 * is per device: it is put back before exit.
 *
 * The steps: a THP is migrated to the device and freed there (munmap), which
 * leaves PG_head and order 9 in the struct page of its first device page;
 * 511 small pages are migrated into its other 511 pages; closing a second
 * file of the device evicts all device memory with migrate_device_range().
 * With the bug that walk cannot lock the free first page, takes
 * folio_nr_pages() of it anyway, and skips the 511 live pages: they stay on
 * the device (a device removal, memunmap_pages(), would wait for them
 * forever).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <lib/test_hmm_uapi.h>

#ifndef HMM_DMIRROR_SET_POLICY
#error "build it against a tree with the hmm-folio lib/test_hmm series applied"
#endif

#define NAME	"migrate_device_range_stale_head"
#define DEV	"/dev/hmm_dmirror0"

static size_t psz;
static int fd = -1;
static struct hmm_dmirror_policy old_policy;
static int policy_set;

static void result(int rc, const char *skip)
{
	if (policy_set) {
		struct hmm_dmirror_policy p = { .policy = old_policy.policy };

		if (ioctl(fd, HMM_DMIRROR_SET_POLICY, &p))
			printf("# could not put back the device's policy %u: %s\n",
			       old_policy.policy, strerror(errno));
	}
	if (rc == 4)
		printf("ok 1 %s # SKIP %s\n", NAME, skip);
	else
		printf("%s 1 %s\n", rc ? "not ok" : "ok", NAME);
	fflush(stdout);
	exit(rc);
}

static void fail(const char *what)
{
	printf("# error: %s: %s\n", what, strerror(errno));
	result(2, NULL);
}

static size_t pmd_size(void)
{
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size",
			"r");
	unsigned long sz = 0;

	if (!f || fscanf(f, "%lu", &sz) != 1)
		sz = 0;
	if (f)
		fclose(f);
	return sz;
}

static int dmirror(unsigned long req, void *addr, void *ptr,
		   unsigned long npages, struct hmm_dmirror_cmd *cmd)
{
	memset(cmd, 0, sizeof(*cmd));
	cmd->addr = (uintptr_t)addr;
	cmd->ptr = (uintptr_t)ptr;
	cmd->npages = npages;
	return ioctl(fd, req, cmd);
}

static void devpfn(void *addr, unsigned long npages,
		   struct hmm_dmirror_devpfn *pfns)
{
	struct hmm_dmirror_devpfn_cmd c = {
		.addr = (uintptr_t)addr, .npages = npages, .ptr = (uintptr_t)pfns,
	};

	if (ioctl(fd, HMM_DMIRROR_DEVPFN, &c))
		fail("HMM_DMIRROR_DEVPFN");
}

/* A @size-aligned anonymous range of @size bytes. */
static char *map_aligned(size_t size)
{
	char *p = mmap(NULL, 2 * size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *a;

	if (p == MAP_FAILED)
		fail("mmap");
	a = (char *)(((uintptr_t)p + size - 1) & ~(size - 1));
	if (a > p)
		munmap(p, a - p);
	munmap(a + size, p + size - a);
	return a;
}

static void fill(char *p, unsigned long npages, uint64_t seed)
{
	unsigned long i, w;

	for (i = 0; i < npages; i++)
		for (w = 0; w < psz / 8; w++)
			((uint64_t *)(p + i * psz))[w] = seed ^ (i << 20 | w);
}

/*
 * @npages pages of a new @size-aligned range with @advice (MADV_HUGEPAGE or
 * MADV_NOHUGEPAGE), filled with the tags of @seed, migrated to the device;
 * their device offsets and orders into @pfns. Returns the range.
 */
static char *to_device(size_t size, unsigned long npages, int advice,
		       uint64_t seed, struct hmm_dmirror_devpfn *pfns)
{
	struct hmm_dmirror_cmd cmd;
	char *p = map_aligned(size);
	void *buf = malloc(size);

	if (!buf)
		fail("malloc");
	if (madvise(p, size, advice))
		fail(advice == MADV_HUGEPAGE ? "madvise(MADV_HUGEPAGE)" :
		     "madvise(MADV_NOHUGEPAGE)");
	fill(p, npages, seed);
	if (dmirror(HMM_DMIRROR_MIGRATE_TO_DEV, p, buf, npages, &cmd))
		fail("HMM_DMIRROR_MIGRATE_TO_DEV");
	devpfn(p, npages, pfns);
	free(buf);
	return p;
}

/* A THP on the device, freed there; returns its device page offset. */
static uint64_t free_device_thp(size_t size, struct hmm_dmirror_devpfn *pfns)
{
	unsigned long npages = size / psz;
	char *p = to_device(size, npages, MADV_HUGEPAGE, 1, pfns);

	if (pfns[0].offset == HMM_DMIRROR_DEVPFN_NONE ||
	    (1UL << pfns[0].order) != npages) {
		printf("# the THP is not one device folio of %lu pages (order %u)\n",
		       npages, pfns[0].order);
		result(4, "no PMD-sized THP could be moved to the device");
	}
	if (munmap(p, size))
		fail("munmap of the device THP");
	printf("# a device THP at device page offset %#llx, freed (munmap)\n",
	       (unsigned long long)pfns[0].offset);
	return pfns[0].offset;
}

int main(void)
{
	struct hmm_dmirror_policy pol = { .policy = HMM_DMIRROR_POLICY_HIGHEST };
	size_t size = pmd_size();
	struct hmm_dmirror_devpfn *pfns;
	struct hmm_dmirror_cmd cmd;
	unsigned long npages, nsmall, i, left = 0;
	unsigned char *snap;
	uint64_t base;
	char *q;
	int fd2;

	printf("TAP version 13\n1..1\n");
	psz = sysconf(_SC_PAGESIZE);
	if (!size)
		result(4, "no THP: no /sys/kernel/mm/transparent_hugepage/hpage_pmd_size");
	npages = size / psz;
	nsmall = npages - 1;
	fd = open(DEV, O_RDWR);
	if (fd < 0) {
		printf("# %s: %s\n", DEV, strerror(errno));
		result(4, "test_hmm not loaded: no " DEV);
	}
	if (ioctl(fd, HMM_DMIRROR_SET_POLICY, &pol)) {
		if (errno != ENOTTY && errno != EINVAL)
			fail("HMM_DMIRROR_SET_POLICY");
		result(4,
		       "test_hmm lacks the hmm-folio extension (its cross-order allocator is needed: see the source)");
	}
	old_policy = pol;
	policy_set = 1;
	pfns = calloc(npages, sizeof(*pfns));
	snap = malloc(npages);
	if (!pfns || !snap)
		fail("malloc");

	base = free_device_thp(size, pfns);

	/* Small folios from its end down: its first page stays free. */
	q = to_device(size, nsmall, MADV_NOHUGEPAGE, 2, pfns);
	for (i = 0; i < nsmall; i++)
		if (pfns[i].order || pfns[i].offset <= base ||
		    pfns[i].offset >= base + npages) {
			fprintf(stdout,
				"# small page %lu is at %#llx (order %u), not in the freed THP's pages %#llx..%#llx\n",
				i, (unsigned long long)pfns[i].offset, pfns[i].order,
				(unsigned long long)base + 1,
				(unsigned long long)base + npages - 1);
			result(2, NULL);
		}
	printf("# %lu small pages moved into its pages %#llx..%#llx: its first page is free\n",
	       nsmall, (unsigned long long)base + 1,
	       (unsigned long long)base + npages - 1);

	/* Closing a file of the device evicts all device memory. */
	fd2 = open(DEV, O_RDWR);
	if (fd2 < 0 || close(fd2))
		fail("open and close of a second " DEV);
	if (dmirror(HMM_DMIRROR_SNAPSHOT, q, snap, nsmall, &cmd))
		fail("HMM_DMIRROR_SNAPSHOT");
	for (i = 0; i < nsmall; i++)
		left += (snap[i] & 0xf0) == HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL;
	fprintf(stdout,
		"# closed a second file of the device (evicts all device memory): %lu of %lu pages still on the device\n",
		left, nsmall);
	if (left == nsmall) {
		fprintf(stdout,
			"# bug present: the eviction skipped every live page after the free head at %#llx (its stale order 9 said 512 pages)\n",
			(unsigned long long)base);
		result(1, NULL);
	}
	if (left) {
		printf("# that is not the bug's pattern\n");
		result(2, NULL);
	}
	for (i = 0; i < nsmall * (psz / 8); i++)
		if (((uint64_t *)q)[i] != (2 ^ ((i / (psz / 8)) << 20 | i % (psz / 8)))) {
			printf("# page %lu lost its data in the eviction\n",
			       i / (psz / 8));
			result(2, NULL);
		}
	printf("# every page was evicted to system memory with its data\n");
	result(0, NULL);
	return 0;
}
