// SPDX-License-Identifier: GPL-2.0
/*
 * Reproducer: mremap() does not mark a moved device-private PMD soft-dirty
 * (mm/huge_memory.c, move_soft_dirty_pmd();
 * selftests/fixes/mremap_device_pmd_soft_dirty).
 *
 * Build, against any kernel tree (the stock lib/test_hmm_uapi.h will do):
 *
 *	gcc -O2 -Wall -static -I KSRC -o mremap_device_pmd_soft_dirty repro.c
 *
 * Run as root with test_hmm.ko loaded (the stock module will do:
 * /dev/hmm_dmirror0), THP enabled, on a kernel with CONFIG_MEM_SOFT_DIRTY
 * that migrates device-private THPs (6.19 and later). Exit status: 1 the
 * bug is present, 0 it is not, 4 it cannot be run here (the reason is
 * printed), 2 something else went wrong.
 *
 * The steps, for a THP left in system memory (the control) and for one
 * moved to the device: it is written, its soft-dirty bits are cleared
 * (clear_refs 4), it goes to the device as one device-private PMD, and
 * mremap(MREMAP_FIXED) moves it to an aligned VMA between PROT_NONE guards
 * (no merge can lend it VM_SOFTDIRTY). mremap marks what it moves
 * soft-dirty; pagemap bit 55 must then be set at the new address, and stay
 * so after the THP is read back to system memory.
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

#define NAME	"mremap_device_pmd_soft_dirty"
#define DEV	"/dev/hmm_dmirror0"
#define PM_SOFT_DIRTY	(1ULL << 55)
#define PM_SWAP		(1ULL << 62)
#define PM_PRESENT	(1ULL << 63)

static size_t psz;
static int pagemap = -1;

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

static uint64_t entry(void *addr)
{
	uint64_t e;

	if (pread(pagemap, &e, sizeof(e), (uintptr_t)addr / psz * sizeof(e)) !=
	    sizeof(e))
		fail("pread of /proc/self/pagemap");
	return e;
}

/* Pages of [p, +npages) that are not soft-dirty. */
static unsigned long clean_pages(char *p, unsigned long npages)
{
	unsigned long i, n = 0;

	for (i = 0; i < npages; i++)
		n += !(entry(p + i * psz) & PM_SOFT_DIRTY);
	return n;
}

static void clear_soft_dirty(void)
{
	int f = open("/proc/self/clear_refs", O_WRONLY);

	if (f < 0 || write(f, "4", 1) != 1)
		fail("writing 4 to /proc/self/clear_refs");
	close(f);
}

/* An aligned range of @size bytes between PROT_NONE guards (*@res, 3 x). */
static char *guarded(size_t size, char **res)
{
	char *g = mmap(NULL, 3 * size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);
	char *a;

	if (g == MAP_FAILED)
		fail("mmap");
	a = (char *)(((uintptr_t)g + psz + size - 1) & ~(size - 1));
	if (mprotect(a, size, PROT_READ | PROT_WRITE))
		fail("mprotect");
	*res = g;
	return a;
}

/* The steps; returns the pages clean after the move. */
static unsigned long moved_clean(int fd, size_t size, int device)
{
	const char *what = device ? "device THP" : "system THP";
	unsigned long npages = size / psz, clean, i;
	struct hmm_dmirror_cmd cmd = { 0 };
	char *pg, *tg, *p, *t, *q;
	void *buf = malloc(size);

	if (!buf)
		fail("malloc");
	p = guarded(size, &pg);
	t = guarded(size, &tg);
	if (madvise(p, size, MADV_HUGEPAGE))
		fail("madvise(MADV_HUGEPAGE)");
	for (i = 0; i < size; i += psz)
		memset(p + i, (int)(i / psz) & 0xff, psz);
	if (!(entry(p) & PM_PRESENT))
		fail("the range is not mapped");
	clear_soft_dirty();
	if (clean_pages(p, npages) != npages) {
		printf("# %s: clear_refs left soft-dirty pages\n", what);
		result(2, NULL);
	}
	if (device) {
		cmd.addr = (uintptr_t)p;
		cmd.ptr = (uintptr_t)buf;
		cmd.npages = npages;
		if (ioctl(fd, HMM_DMIRROR_MIGRATE_TO_DEV, &cmd))
			fail("HMM_DMIRROR_MIGRATE_TO_DEV");
		if (cmd.cpages != npages || (entry(p) & PM_PRESENT) ||
		    !(entry(p) & PM_SWAP)) {
			printf("# %s: not on the device (%llu pages moved, pagemap %#llx)\n",
			       what, (unsigned long long)cmd.cpages,
			       (unsigned long long)entry(p));
			result(2, NULL);
		}
	}
	q = mremap(p, size, size, MREMAP_MAYMOVE | MREMAP_FIXED, t);
	if (q != t)
		fail("mremap");
	clean = clean_pages(q, npages);
	printf("# %s: after mremap %lu of %lu pages clean (pagemap %#llx)\n",
	       what, clean, npages, (unsigned long long)entry(q));
	for (i = 0; i < size; i += psz)
		if (((unsigned char *)q)[i] != ((i / psz) & 0xff)) {
			printf("# %s: page %lu lost its data\n", what, i / psz);
			result(2, NULL);
		}
	printf("# %s: read back, %lu pages clean (pagemap %#llx)\n", what,
	       clean_pages(q, npages), (unsigned long long)entry(q));
	munmap(pg, 3 * size);
	munmap(tg, 3 * size);
	free(buf);
	return clean;
}

int main(void)
{
	size_t size = pmd_size();
	unsigned long sys, dev;
	int fd;

	printf("TAP version 13\n1..1\n");
	psz = sysconf(_SC_PAGESIZE);
	if (!size)
		result(4, "no THP: no /sys/kernel/mm/transparent_hugepage/hpage_pmd_size");
	if (access("/proc/self/clear_refs", W_OK))
		result(4, "no /proc/self/clear_refs");
	pagemap = open("/proc/self/pagemap", O_RDONLY);
	if (pagemap < 0)
		fail("/proc/self/pagemap");
	fd = open(DEV, O_RDWR);
	if (fd < 0) {
		printf("# %s: %s\n", DEV, strerror(errno));
		result(4, "test_hmm not loaded: no " DEV);
	}
	sys = moved_clean(fd, size, 0);
	if (sys) {
		printf("%s\n",
		       "# the THP in system memory came out of mremap clean: no soft-dirty tracking here");
		result(4, "mremap does not mark moved entries soft-dirty on this kernel");
	}
	dev = moved_clean(fd, size, 1);
	if (dev == size / psz) {
		printf("%s\n",
		       "# bug present: the device THP moved by mremap() is not soft-dirty at its new address, the same THP in system memory is");
		result(1, NULL);
	}
	if (dev) {
		printf("# that is not the bug's pattern\n");
		result(2, NULL);
	}
	printf("# both came out of mremap soft-dirty\n");
	result(0, NULL);
	return 0;
}
