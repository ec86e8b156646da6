// SPDX-License-Identifier: GPL-2.0
/*
 * Reproducer: hmm_vma_handle_absent_pmd() ignores where the range starts
 * in a device-private PMD (mm/hmm.c; selftests/fixes/hmm_absent_pmd_offset).
 *
 * Build, against a kernel tree with the hmm-folio lib/test_hmm series
 * applied (lib/test_hmm/apply.sh KSRC, or make install-kselftest KSRC=...):
 *
 *	gcc -O2 -Wall -static -I KSRC -o hmm_absent_pmd_offset repro.c
 *
 * Run as root with that tree's test_hmm.ko loaded (/dev/hmm_dmirror0) and
 * THP enabled. Exit status: 1 the bug is present, 0 it is not, 4 it cannot
 * be run here (the reason is printed), 2 something else went wrong.
 *
 * Why the extension: test_hmm reads device memory through its mirror page
 * table. When a device THP of its own is missing from that table (here: the
 * process mremap()ed it), the device fault stores the device-private page
 * itself, and the stock dmirror_do_read() oopses copying from the struct
 * page of device memory, with or without this bug. Patch 0008 of the series
 * ("lib/test_hmm: read our own device pages through their backing pages")
 * makes that read work; nothing else of the series is used.
 *
 * The steps: a THP with a tag in every word of every page is migrated to
 * the device (one device-private PMD); mremap() moves it, which empties the
 * mirror's page table; HMM_DMIRROR_READ faults it back into the mirror in
 * batches of 32 pages (test_hmm's dmirror_fault()) and copies it out. With
 * the bug every batch after the first gets the PFNs of the PMD's first 32
 * pages: page i reads back page (i mod 32)'s data.
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

#ifndef HMM_DMIRROR_ALLOC_STATS
#error "build it against a tree with the hmm-folio lib/test_hmm series applied"
#endif

#define NAME	"hmm_absent_pmd_offset"
#define DEV	"/dev/hmm_dmirror0"

static size_t psz;
static uint64_t seed;

static void result(int rc, const char *skip)
{
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

static uint64_t tag(unsigned long page, unsigned long word)
{
	return seed ^ ((uint64_t)page << 20 | word);
}

/* The page whose tags @p holds, or -1 if it holds no page's. */
static long holds(const uint64_t *p, unsigned long npages)
{
	unsigned long k = (p[0] ^ seed) >> 20, w;

	if (k >= npages)
		return -1;
	for (w = 0; w < psz / 8; w++)
		if (p[w] != tag(k, w))
			return -1;
	return k;
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

static int dmirror(int fd, unsigned long req, void *addr, void *ptr,
		   unsigned long npages, struct hmm_dmirror_cmd *cmd)
{
	memset(cmd, 0, sizeof(*cmd));
	cmd->addr = (uintptr_t)addr;
	cmd->ptr = (uintptr_t)ptr;
	cmd->npages = npages;
	return ioctl(fd, req, cmd);
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

/* Whether every page of @buf holds its own tags; else report what it holds. */
static int check(const char *buf, unsigned long npages)
{
	unsigned long i, first = npages, batch;
	long k;

	for (i = 0; i < npages; i++)
		if (holds((const uint64_t *)(buf + i * psz), npages) != (long)i) {
			first = i;
			break;
		}
	if (first == npages) {
		printf("# all %lu pages read back through the device hold their own data\n",
		       npages);
		return 0;
	}
	k = holds((const uint64_t *)(buf + first * psz), npages);
	printf("# page %lu read back through the device holds %s%ld%s\n",
	       first, k < 0 ? "no page's data (" : "page ", k,
	       k < 0 ? ")" : "'s data");
	batch = first;
	for (i = 0; batch && i < npages; i++)
		if (holds((const uint64_t *)(buf + i * psz), npages) !=
		    (long)(i % batch))
			batch = 0;
	if (!batch) {
		printf("# that is not the bug's pattern: some other corruption\n");
		return 2;
	}
	fprintf(stdout,
		"# bug present: every page i holds page (i mod %lu)'s data: the device fault of each batch of %lu pages got the PFNs of the PMD's first %lu pages\n",
		batch, batch, batch);
	return 1;
}

int main(void)
{
	struct hmm_dmirror_alloc_stats stats;
	struct hmm_dmirror_cmd cmd;
	size_t size = pmd_size();
	unsigned long npages, i, w;
	unsigned char *snap;
	char *p, *q, *buf;
	int fd;

	printf("TAP version 13\n1..1\n");
	psz = sysconf(_SC_PAGESIZE);
	seed = (uint64_t)getpid() << 40 ^ 0x686d6d666f6c696fULL;
	if (!size)
		result(4, "no THP: no /sys/kernel/mm/transparent_hugepage/hpage_pmd_size");
	npages = size / psz;
	fd = open(DEV, O_RDWR);
	if (fd < 0) {
		printf("# %s: %s\n", DEV, strerror(errno));
		result(4, "test_hmm not loaded: no " DEV);
	}
	if (ioctl(fd, HMM_DMIRROR_ALLOC_STATS, &stats)) {
		if (errno != ENOTTY && errno != EINVAL)
			fail("HMM_DMIRROR_ALLOC_STATS");
		result(4,
		       "test_hmm lacks the hmm-folio extension (its patch 0008 makes this device read possible)");
	}

	p = map_aligned(size);
	q = map_aligned(size);
	buf = malloc(size);
	snap = malloc(npages);
	if (!buf || !snap)
		fail("malloc");
	if (madvise(p, size, MADV_HUGEPAGE))
		fail("madvise(MADV_HUGEPAGE)");
	for (i = 0; i < npages; i++)
		for (w = 0; w < psz / 8; w++)
			((uint64_t *)(p + i * psz))[w] = tag(i, w);

	if (dmirror(fd, HMM_DMIRROR_MIGRATE_TO_DEV, p, buf, npages, &cmd))
		fail("HMM_DMIRROR_MIGRATE_TO_DEV");
	if (dmirror(fd, HMM_DMIRROR_SNAPSHOT, p, snap, npages, &cmd))
		fail("HMM_DMIRROR_SNAPSHOT");
	for (i = 0; i < npages; i++)
		if (snap[i] != (HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL |
				HMM_DMIRROR_PROT_PMD | HMM_DMIRROR_PROT_WRITE)) {
			fprintf(stdout,
				"# page %lu is not in a writable device THP after the migration (snapshot %#x)\n",
				i, snap[i]);
			result(4, "no PMD-sized THP could be moved to the device");
		}
	printf("# a %zu kB THP is on the device as one device-private PMD\n",
	       size >> 10);

	/* The move invalidates the range: the mirror forgets the pages. */
	if (mremap(p, size, size, MREMAP_MAYMOVE | MREMAP_FIXED, q) != q)
		fail("mremap");
	memset(buf, 0, size);
	if (dmirror(fd, HMM_DMIRROR_READ, q, buf, npages, &cmd))
		fail("HMM_DMIRROR_READ after mremap");
	printf("# mremap()ed it, read it through the device: %llu pages, %llu device fault(s)\n",
	       (unsigned long long)cmd.cpages, (unsigned long long)cmd.faults);
	result(check(buf, npages), NULL);
	return 0;
}
