// SPDX-License-Identifier: GPL-2.0
/*
 * Reproducer: a device-private THP migrating back to system memory has no
 * PMD for a moment, and walkers that look without the PMD lock take the
 * range for a hole (mm/huge_memory.c, set_pmd_migration_entry();
 * selftests/fixes/set_pmd_migration_entry_pmd_none).
 *
 * Build, against any kernel tree (the stock lib/test_hmm_uapi.h will do):
 *
 *	gcc -O2 -Wall -static -I KSRC -pthread -o set_pmd_migration_entry_pmd_none repro.c
 *
 * Run as root with test_hmm.ko loaded (the stock module will do:
 * /dev/hmm_dmirror0), THP enabled, on a kernel that migrates device-private
 * THPs (6.19 and later). Exit status: 1 the bug is present, 0 it is not, 4
 * it cannot be run here (the reason is printed), 2 something else went
 * wrong.
 *
 * One thread moves a THP to the device as one device-private PMD and back
 * (HMM_DMIRROR_MIGRATE_TO_DEV, HMM_DMIRROR_MIGRATE_TO_SYS), over and over,
 * on one CPU; the main thread reads the THP's first /proc/self/pagemap
 * entry over and over on the other. A page that is mapped is present or
 * swap-like (a device-private or a migration entry), never neither. On the
 * way back, set_pmd_migration_entry() clears the device-private PMD with
 * pmdp_huge_get_and_clear() before it writes the migration entry, and
 * walk_pmd_range() tests pmd_none() without the lock: pagemap reads a hole.
 * Holes seen while only the migration back ran are the bug; one seen while
 * a migration to the device ran (that one invalidates the present PMD,
 * which never reads none) or while none ran is not its pattern. It runs
 * until the first hole, at most RUN_MS.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <lib/test_hmm_uapi.h>

#define NAME	"set_pmd_migration_entry_pmd_none"
#define DEV	"/dev/hmm_dmirror0"
#define PM_SWAP		(1ULL << 62)
#define PM_PRESENT	(1ULL << 63)
#define RUN_MS	20000

static size_t psz, size;
static char *thp;
static void *buf;
static int fd;
/* odd while a migration to the device (to system memory) runs */
static unsigned long dev_seq, sys_seq;
static int stop, mig_err;
static unsigned long rounds;

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

static unsigned long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000UL + ts.tv_nsec / 1000000;
}

static void pin(int cpu)
{
	cpu_set_t set;

	if (sysconf(_SC_NPROCESSORS_ONLN) < 2)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

static int migrate(unsigned long req, unsigned long *seq)
{
	struct hmm_dmirror_cmd cmd = { 0 };
	int ret;

	cmd.addr = (uintptr_t)thp;
	cmd.ptr = (uintptr_t)buf;
	cmd.npages = size / psz;
	__atomic_add_fetch(seq, 1, __ATOMIC_ACQ_REL);
	ret = ioctl(fd, req, &cmd) ? -errno : 0;
	__atomic_add_fetch(seq, 1, __ATOMIC_ACQ_REL);
	return ret;
}

static void *migrator(void *arg)
{
	int ret = 0;

	pin(0);
	while (!__atomic_load_n(&stop, __ATOMIC_ACQUIRE)) {
		ret = migrate(HMM_DMIRROR_MIGRATE_TO_DEV, &dev_seq);
		if (!ret)
			ret = migrate(HMM_DMIRROR_MIGRATE_TO_SYS, &sys_seq);
		if (ret)
			break;
		__atomic_add_fetch(&rounds, 1, __ATOMIC_RELAXED);
	}
	__atomic_store_n(&mig_err, ret, __ATOMIC_RELEASE);
	__atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
	return NULL;
}

int main(void)
{
	unsigned long start, reads = 0, d0, d1, s0, s1, i;
	int pagemap, odd = 0, bug = 0;
	pthread_t t;
	uint64_t e;
	char *res;

	printf("TAP version 13\n1..1\n");
	psz = sysconf(_SC_PAGESIZE);
	size = pmd_size();
	if (!size)
		result(4, "no THP: no /sys/kernel/mm/transparent_hugepage/hpage_pmd_size");
	pagemap = open("/proc/self/pagemap", O_RDONLY);
	if (pagemap < 0)
		fail("/proc/self/pagemap");
	fd = open(DEV, O_RDWR);
	if (fd < 0) {
		printf("# %s: %s\n", DEV, strerror(errno));
		result(4, "test_hmm not loaded: no " DEV);
	}
	buf = malloc(size);
	res = mmap(NULL, 2 * size, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (!buf || res == MAP_FAILED)
		fail("mmap");
	thp = (char *)(((uintptr_t)res + size - 1) & ~(size - 1));
	if (madvise(thp, size, MADV_HUGEPAGE))
		fail("madvise(MADV_HUGEPAGE)");
	for (i = 0; i < size; i += psz)
		memset(thp + i, (int)(i / psz) & 0xff, psz);
	if (migrate(HMM_DMIRROR_MIGRATE_TO_DEV, &dev_seq) ||
	    migrate(HMM_DMIRROR_MIGRATE_TO_SYS, &sys_seq))
		fail("a first migration to the device and back");

	pin(1);
	if (pthread_create(&t, NULL, migrator, NULL))
		fail("pthread_create");
	start = now_ms();
	while (!__atomic_load_n(&stop, __ATOMIC_ACQUIRE)) {
		d0 = __atomic_load_n(&dev_seq, __ATOMIC_ACQUIRE);
		s0 = __atomic_load_n(&sys_seq, __ATOMIC_ACQUIRE);
		if (pread(pagemap, &e, sizeof(e),
			  (uintptr_t)thp / psz * sizeof(e)) != sizeof(e))
			fail("pread of /proc/self/pagemap");
		d1 = __atomic_load_n(&dev_seq, __ATOMIC_ACQUIRE);
		s1 = __atomic_load_n(&sys_seq, __ATOMIC_ACQUIRE);
		reads++;
		if (!(e & (PM_PRESENT | PM_SWAP))) {
			int to_dev = (d0 & 1) || d1 != d0;
			int to_sys = (s0 & 1) || s1 != s0;

			if (to_sys && !to_dev) {
				bug = 1;
				break;
			}
			/* Both ran: it tells nothing. */
			if (!to_sys) {
				odd = 1;
				break;
			}
		}
		if (now_ms() - start >= RUN_MS)
			break;
	}
	__atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
	pthread_join(t, NULL);
	printf("# %lu ms: %lu rounds to the device and back, %lu pagemap reads\n",
	       now_ms() - start, rounds, reads);
	if (mig_err) {
		errno = -mig_err;
		fail("a migration");
	}
	if (odd) {
		printf("# pagemap %#llx (a hole) %s: that is not the bug's pattern\n",
		       (unsigned long long)e,
		       (d0 & 1) || d1 != d0 ? "while a migration to the device ran" :
		       "while no migration ran");
		result(2, NULL);
	}
	if (bug) {
		printf("%s (%#llx)\n",
		       "# bug present: pagemap read a hole in a mapped THP while it migrated back from the device",
		       (unsigned long long)e);
		result(1, NULL);
	}
	for (i = 0; i < size; i += psz)
		if (((unsigned char *)thp)[i] != ((i / psz) & 0xff)) {
			printf("# page %lu lost its data\n", i / psz);
			result(2, NULL);
		}
	printf("# no hole in %d ms\n", RUN_MS);
	result(0, NULL);
	return 0;
}
