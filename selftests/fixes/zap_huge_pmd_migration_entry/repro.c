// SPDX-License-Identifier: GPL-2.0
/*
 * Reproducer: zapping the PMD migration entry of a device-private THP
 * removes its rmap again and drops a reference it never held
 * (mm/huge_memory.c, zap_huge_pmd_folio();
 * selftests/fixes/zap_huge_pmd_migration_entry).
 *
 * Build, against any kernel tree (the stock lib/test_hmm_uapi.h will do):
 *
 *	gcc -O2 -Wall -static -I KSRC -pthread \
 *		-o zap_huge_pmd_migration_entry repro.c
 *
 * Run as root with test_hmm.ko loaded (the stock module will do:
 * /dev/hmm_dmirror0), THP enabled, and no other user of the device, on a
 * kernel with CONFIG_DEBUG_VM, in a machine you can lose: the folio is freed
 * under the migration that holds it, and the kernel oopses or hits a
 * VM_BUG_ON (the migrating process is left stuck in the kernel). Exit
 * status: 1 the bug is present, 0 it is not, 4 it cannot be run here (the
 * reason is printed), 2 something else went wrong.
 *
 * The steps: a large range ("bulk") and a THP of its own VMA ("victim") are
 * migrated to the device. Closing a second file of the device makes
 * test_hmm evict all device memory: migrate_device_range() takes a
 * reference on and locks every device folio, migrate_device_unmap()'s
 * try_to_migrate() turns the victim's device-private PMD into a migration
 * PMD (dropping the rmap and the reference of the mapping), and the driver
 * copies each folio to system memory. While it copies the bulk, a second
 * thread munmaps the victim: zap_huge_pmd_folio() sees a device-private
 * folio and treats the migration PMD as a device-private one, removing the
 * rmap again and dropping the eviction's reference. The folio is freed
 * while locked, test_hmm frees its backing page, and the copy reads freed
 * memory or the finalize step puts a folio whose count is zero. The munmap
 * must fall after the victim's try_to_migrate(), late in the eviction (see
 * permille[]). The rounds run in a child; the parent watches the kernel log.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <lib/test_hmm_uapi.h>

#define NAME	"zap_huge_pmd_migration_entry"
#define DEV	"/dev/hmm_dmirror0"
#define BULK_MB	32	/* what the eviction copies while the victim goes */
#define ROUNDS	24
#define MAX_S	120	/* the whole sweep stops after this long */
#define WAIT_S	300	/* for the child */

/*
 * When the victim is unmapped, in thousandths of the eviction before: late,
 * after try_to_migrate() made its migration entry, while the bulk is copied.
 */
static const unsigned int permille[] = { 300, 400, 500, 600 };
#define NDELAYS	4

static size_t psz;
static int fd = -1;
static int in_child;	/* the parent prints the result */

static void result(int rc, const char *skip)
{
	if (in_child) {
		fflush(stdout);
		exit(rc);
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

/* 1 if the kernel config sets @opt, 0 if not, -1 if there is none to read. */
static int config_has(const char *opt)
{
	char path[128], line[256], want[96];
	struct utsname u;
	FILE *f = NULL;
	int found = 0, pipe = 0;

	if (!uname(&u)) {
		snprintf(path, sizeof(path), "/boot/config-%s", u.release);
		f = fopen(path, "r");
	}
	if (!f && !access("/proc/config.gz", R_OK)) {
		f = popen("zcat /proc/config.gz", "r");
		pipe = 1;
	}
	if (!f)
		return -1;
	snprintf(want, sizeof(want), "%s=y\n", opt);
	while (fgets(line, sizeof(line), f))
		found |= !strcmp(line, want);
	if (pipe)
		pclose(f);
	else
		fclose(f);
	return found;
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

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/*
 * A @size-aligned anonymous range of @len bytes in a PROT_NONE reservation
 * (*@res, *@res_len): the reservation's pages on both sides keep the range a
 * VMA of its own, which neither merges with another VMA nor takes another
 * one's anon_vma when it is first faulted.
 */
static char *map_aligned(size_t size, size_t len, char **res, size_t *res_len)
{
	char *p, *a;

	*res_len = len + 2 * size;
	p = mmap(NULL, *res_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		fail("mmap");
	a = (char *)(((uintptr_t)p + psz + size - 1) & ~(size - 1));
	if (mprotect(a, len, PROT_READ | PROT_WRITE))
		fail("mprotect");
	*res = p;
	return a;
}

static uint64_t tag(uint64_t seed, unsigned long i, unsigned long w)
{
	return seed << 40 ^ i << 20 ^ w;
}

/* @len bytes of a new range tagged with @seed, migrated to the device. */
static char *to_device(size_t align, size_t len, uint64_t seed, char **res,
		       size_t *res_len)
{
	struct hmm_dmirror_cmd cmd = { 0 };
	unsigned long i, w, npages = len / psz;
	char *p = map_aligned(align, len, res, res_len);
	void *buf = malloc(len);

	if (!buf)
		fail("malloc");
	if (madvise(p, len, MADV_HUGEPAGE))
		fail("madvise(MADV_HUGEPAGE)");
	for (i = 0; i < npages; i++)
		for (w = 0; w < psz / 8; w++)
			((uint64_t *)(p + i * psz))[w] = tag(seed, i, w);
	cmd.addr = (uintptr_t)p;
	cmd.ptr = (uintptr_t)buf;
	cmd.npages = npages;
	if (ioctl(fd, HMM_DMIRROR_MIGRATE_TO_DEV, &cmd))
		fail("HMM_DMIRROR_MIGRATE_TO_DEV");
	if (cmd.cpages != npages) {
		printf("# %llu of %lu pages went to the device\n",
		       (unsigned long long)cmd.cpages, npages);
		result(2, NULL);
	}
	free(buf);
	return p;
}

static int kasan, splat, ours, shown;

/* Print the kernel log's splat lines; true once it has the bug's. */
static int scan_kmsg(int kmsg)
{
	char rec[2048];
	ssize_t n;

	for (;;) {
		char *text;

		n = read(kmsg, rec, sizeof(rec) - 1);
		if (n < 0 && errno == EPIPE)
			continue;
		if (n <= 0)
			break;
		rec[n] = 0;
		text = strchr(rec, ';');
		text = text ? text + 1 : rec;
		text[strcspn(text, "\n")] = 0;
		if (strstr(text, "BUG: KASAN:"))
			kasan = 1;
		if (strstr(text, "BUG:") || strstr(text, "WARNING:") ||
		    strstr(text, "kernel BUG at") || strstr(text, "Oops") ||
		    strstr(text, "Bad page"))
			splat = 1;
		/* A frame of the eviction or of the zap, not the task's name. */
		if (splat && (strstr(text, "zap_huge_pmd+0x") ||
			      strstr(text, "zap_huge_pmd_folio+0x") ||
			      strstr(text, "dmirror_device_evict_chunk+0x") ||
			      strstr(text, "__migrate_device_pages+0x") ||
			      strstr(text, "__migrate_device_finalize+0x")))
			ours = 1;
		if ((kasan || splat) && shown < 16 && !strstr(text, "Comm:") &&
		    (strstr(text, "KASAN") || strstr(text, " of size ") ||
		     strstr(text, "rmap_walk") || strstr(text, "migrat") ||
		     strstr(text, "dmirror_") || strstr(text, "Freed by") ||
		     strstr(text, "put_anon_vma") || strstr(text, "unlink_anon") ||
		     strstr(text, "unmap_region") || strstr(text, "exit_mmap") ||
		     strstr(text, "BUG") || strstr(text, "RIP:") ||
		     strstr(text, "copy") || strstr(text, "zap_") ||
		     strstr(text, "page dumped") || strstr(text, "folio_put"))) {
			printf("# kernel: %s\n", text);
			shown++;
		}
	}
	return ours;
}

struct unmapper {
	char *victim;
	size_t len;
	useconds_t delay;
	double at;
};

static void *unmap_victim(void *arg)
{
	struct unmapper *u = arg;

	usleep(u->delay);
	u->at = now();
	if (munmap(u->victim, u->len))
		fail("munmap of the victim");
	return NULL;
}

/* The rounds, in a child: exits 0 when each came back intact. */
static void run_rounds(size_t thp)
{
	size_t bulk_len = BULK_MB << 20;
	double evict = 0.05, start = now();
	unsigned long i, w, r;

	in_child = 1;
	/* A mirror serves the mm that opened it: this one. */
	fd = open(DEV, O_RDWR);
	if (fd < 0)
		fail("open of " DEV);
	for (r = 0; r < ROUNDS && now() - start < MAX_S; r++) {
		struct unmapper u = { .len = thp };
		char *bulk, *bres, *vres;
		size_t bres_len, vres_len;
		pthread_t t;
		double t0, t1;
		int fd2;

		bulk = to_device(thp, bulk_len, 2 * r + 1, &bres, &bres_len);
		u.victim = to_device(thp, thp, 2 * r + 2, &vres, &vres_len);
		u.delay = evict * permille[r % NDELAYS] * 1000;
		fd2 = open(DEV, O_RDWR);
		if (fd2 < 0)
			fail("open of a second " DEV);
		errno = pthread_create(&t, NULL, unmap_victim, &u);
		if (errno)
			fail("pthread_create");
		/* Closing a file of the device evicts all device memory. */
		t0 = now();
		if (close(fd2))
			fail("close of the second " DEV);
		t1 = now();
		pthread_join(t, NULL);
		printf("# round %lu: eviction %.0f ms, victim unmapped at %+.0f ms\n",
		       r, (t1 - t0) * 1e3, (u.at - t0) * 1e3);
		fflush(stdout);
		if (!r || r % NDELAYS == NDELAYS - 1)
			evict = t1 - t0;
		for (i = 0; i < bulk_len / psz; i++)
			for (w = 0; w < psz / 8; w++)
				if (((uint64_t *)(bulk + i * psz))[w] !=
				    tag(2 * r + 1, i, w)) {
					printf("# bulk page %lu lost its data in the eviction\n",
					       i);
					result(2, NULL);
				}
		if (munmap(bres, bres_len) || munmap(vres, vres_len))
			fail("munmap of the reservations");
	}
	printf("# %lu of them done\n", r);
	fflush(stdout);
	exit(0);
}

int main(void)
{
	size_t thp = pmd_size();
	int kmsg, dv, rc = -1, status, i, after = 0;
	pid_t pid;

	printf("TAP version 13\n1..1\n");
	psz = sysconf(_SC_PAGESIZE);
	if (!thp)
		result(4, "no THP: no /sys/kernel/mm/transparent_hugepage/hpage_pmd_size");
	dv = config_has("CONFIG_DEBUG_VM");
	if (dv < 0)
		result(4,
		       "no kernel config to read (/boot/config-RELEASE, /proc/config.gz): the bug shows only with CONFIG_DEBUG_VM");
	if (!dv)
		result(4,
		       "the kernel lacks CONFIG_DEBUG_VM: the bug cannot show");
	if (access(DEV, R_OK | W_OK))
		result(4, "test_hmm not loaded: no " DEV);
	kmsg = open("/dev/kmsg", O_RDONLY | O_NONBLOCK);
	if (kmsg < 0 || lseek(kmsg, 0, SEEK_END) < 0)
		fail("/dev/kmsg");

	fflush(stdout);
	pid = fork();
	if (pid < 0)
		fail("fork");
	if (!pid)
		run_rounds(thp);
	/* Until the child is done, or 2 s after the bug (it may be stuck). */
	for (i = 0; i < WAIT_S * 10 && after < 20; i++) {
		if (waitpid(pid, &status, WNOHANG) == pid) {
			rc = WIFEXITED(status) ? WEXITSTATUS(status) :
				128 + WTERMSIG(status);
			break;
		}
		/* Seen: no more rounds, which could meet other bugs. */
		if (scan_kmsg(kmsg) && !after++)
			kill(pid, SIGKILL);
		usleep(100000);
	}
	usleep(200000);
	if (scan_kmsg(kmsg)) {
		printf("%s\n",
		       "# bug present: the munmap of a device THP under eviction freed the folio the eviction held (zap_huge_pmd_folio() took its migration PMD for a device-private one)");
		result(1, NULL);
	}
	if (splat) {
		printf("# a kernel splat that is not this bug's\n");
		result(2, NULL);
	}
	if (rc) {
		printf("# no splat, but the child %s (%d)\n",
		       rc < 0 ? "did not finish" : "failed", rc);
		result(2, NULL);
	}
	printf("# every round came back intact, no splat\n");
	result(0, NULL);
	return 0;
}
