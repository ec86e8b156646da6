// SPDX-License-Identifier: GPL-2.0
/*
 * Reproducer: remove_migration_pmd() checks pmd_write() of the swap-format
 * PMD it built for a device-private folio (mm/huge_memory.c;
 * selftests/fixes/remove_migration_pmd_soft_dirty).
 *
 * Build, against any kernel tree (the stock lib/test_hmm_uapi.h will do):
 *
 *	gcc -O2 -Wall -static -I KSRC -o remove_migration_pmd_soft_dirty repro.c
 *
 * Run as root with test_hmm.ko loaded (the stock module will do:
 * /dev/hmm_dmirror0), THP enabled, on an x86-64 kernel with CONFIG_DEBUG_VM
 * and CONFIG_MEM_SOFT_DIRTY, in a machine you can lose: on 7.2 the bug is a
 * VM_BUG_ON, which kills the migrating process with the page table lock
 * held (it is left stuck in the kernel; run it last, in a VM). On 7.3 it
 * is a VM_WARN_ON_ONCE: once per boot. Exit status: 1 the bug is present,
 * 0 it is not, 4 it cannot be run here (the reason is printed), 2 something
 * else went wrong.
 *
 * The steps, in a child process: a THP is written (its PMD is dirty and
 * soft-dirty), shared with a grandchild by fork() (write-protected in both,
 * no longer anon-exclusive), the grandchild exits, and the THP is migrated
 * to the device. remove_migration_pmd() installs the device-private PMD:
 * it builds the swap-format PMD, sets its soft-dirty bit, then checks
 * pmd_write() && anon && !PageAnonExclusive() on it. On x86
 * _PAGE_SWP_SOFT_DIRTY is _PAGE_RW, so the read-only PMD looks writable and
 * the check fires. The parent watches the kernel log (/dev/kmsg).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <lib/test_hmm_uapi.h>

#define NAME	"remove_migration_pmd_soft_dirty"
#define DEV	"/dev/hmm_dmirror0"
#define WAIT_S	30

static size_t psz;

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
	fflush(stdout);
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

static int dmirror(int fd, unsigned long req, void *addr, void *ptr,
		   unsigned long npages)
{
	struct hmm_dmirror_cmd cmd = {
		.addr = (uintptr_t)addr, .ptr = (uintptr_t)ptr, .npages = npages,
	};

	return ioctl(fd, req, &cmd);
}

/*
 * 7.3 warns once per boot: re-arm the warnings, so that an earlier run in
 * this boot does not hide the bug (debugfs must be mounted).
 */
static void rearm_warn_once(void)
{
	int fd = open("/sys/kernel/debug/clear_warn_once", O_WRONLY);

	if (fd < 0 || write(fd, "1", 1) != 1)
		fprintf(stdout,
			"# cannot re-arm WARN_ONCE (/sys/kernel/debug/clear_warn_once: %s): a warning of this boot before now is not seen again\n",
			strerror(errno));
	if (fd >= 0)
		close(fd);
}

/* The child: the steps; exits 0 when the THP came through them intact. */
static void steps(size_t size)
{
	unsigned long npages = size / psz, i;
	unsigned char *snap = malloc(npages);
	void *buf = malloc(size);
	char *raw, *p;
	int fd, status;
	pid_t pid;

	fd = open(DEV, O_RDWR);
	if (fd < 0 || !snap || !buf)
		fail("open " DEV);
	raw = mmap(NULL, 2 * size, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (raw == MAP_FAILED)
		fail("mmap");
	p = (char *)(((uintptr_t)raw + size - 1) & ~(size - 1));
	if (madvise(p, size, MADV_HUGEPAGE))
		fail("madvise(MADV_HUGEPAGE)");
	for (i = 0; i < size / 8; i++)
		((uint64_t *)p)[i] = 0x736f66746469727fULL ^ i;

	pid = fork();
	if (pid < 0)
		fail("fork");
	if (!pid)
		_exit(0);
	if (waitpid(pid, &status, 0) != pid)
		fail("waitpid");
	fprintf(stdout,
		"# a written THP was shared with a child, which exited; migrating it to the device\n");
	fflush(stdout);
	if (dmirror(fd, HMM_DMIRROR_MIGRATE_TO_DEV, p, buf, npages))
		fail("HMM_DMIRROR_MIGRATE_TO_DEV");
	if (dmirror(fd, HMM_DMIRROR_SNAPSHOT, p, snap, npages))
		fail("HMM_DMIRROR_SNAPSHOT");
	if (snap[0] != (HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL |
			HMM_DMIRROR_PROT_PMD | HMM_DMIRROR_PROT_READ)) {
		printf("# the range is not a read-only device THP (snapshot %#x)\n",
		       snap[0]);
		fflush(stdout);
		exit(3);
	}
	for (i = 0; i < size / 8; i++)
		if (((uint64_t *)p)[i] != (0x736f66746469727fULL ^ i)) {
			printf("# word %lu differs after the fault back\n", i);
			fflush(stdout);
			exit(2);
		}
	fprintf(stdout,
		"# it is on the device as a read-only device-private PMD; read back from the CPU intact\n");
	fflush(stdout);
	exit(0);
}

/* What the kernel logged since @kmsg was opened, read so far. */
static int splat, ours, shown;
static char last[2048];

/* Print the kernel log's new splat lines; true once it has the bug's. */
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
		if (strstr(text, "kernel BUG at") || strstr(text, "WARNING:"))
			splat = 1;
		if (splat && strstr(text, "remove_migration_pmd"))
			ours = 1;
		/* An oops prints its RIP: line twice. */
		if (splat && shown < 6 && strcmp(text, last) &&
		    (strstr(text, "BUG") || strstr(text, "WARNING") ||
		     strstr(text, "RIP:"))) {
			printf("# kernel: %s\n", text);
			snprintf(last, sizeof(last), "%s", text);
			shown++;
		}
	}
	return ours;
}

/*
 * Wait up to WAIT_S seconds for @pid, or 2 s after the kernel logged the
 * bug (a VM_BUG_ON leaves the child stuck); its exit status, or -1.
 */
static int wait_child(pid_t pid, int kmsg)
{
	int status, i, after = 0;

	for (i = 0; i < WAIT_S * 10 && after < 20; i++) {
		if (waitpid(pid, &status, WNOHANG) == pid)
			return WIFEXITED(status) ? WEXITSTATUS(status) :
				128 + WTERMSIG(status);
		after += scan_kmsg(kmsg);
		usleep(100000);
	}
	return -1;
}

int main(void)
{
	size_t size = pmd_size();
	int kmsg, rc, dv, sd;
	pid_t pid;

	printf("TAP version 13\n1..1\n");
	psz = sysconf(_SC_PAGESIZE);
	if (!size)
		result(4, "no THP: no /sys/kernel/mm/transparent_hugepage/hpage_pmd_size");
	dv = config_has("CONFIG_DEBUG_VM");
	sd = config_has("CONFIG_MEM_SOFT_DIRTY");
	if (dv < 0)
		result(4,
		       "no kernel config to read (/boot/config-RELEASE, /proc/config.gz): the bug shows only with CONFIG_DEBUG_VM and CONFIG_MEM_SOFT_DIRTY");
	if (!dv || !sd)
		result(4,
		       "the kernel lacks CONFIG_DEBUG_VM or CONFIG_MEM_SOFT_DIRTY: the bug cannot show");
	if (access(DEV, R_OK | W_OK))
		result(4, "test_hmm not loaded: no " DEV);
	rearm_warn_once();
	kmsg = open("/dev/kmsg", O_RDONLY | O_NONBLOCK);
	if (kmsg < 0 || lseek(kmsg, 0, SEEK_END) < 0)
		fail("/dev/kmsg");

	fflush(stdout);
	pid = fork();
	if (pid < 0)
		fail("fork");
	if (!pid)
		steps(size);
	rc = wait_child(pid, kmsg);
	usleep(500000);
	if (scan_kmsg(kmsg)) {
		fprintf(stdout,
			"# bug present: remove_migration_pmd() took the device-private PMD of a read-only, soft-dirty THP for a writable one (child %s)\n",
			rc < 0 ? "stuck in the kernel" : rc > 128 ? "killed" :
		       "went on");
		result(1, NULL);
	}
	if (rc) {
		printf("# no splat, but the child %s (%d)\n",
		       rc < 0 ? "did not finish" : "failed", rc);
		result(2, NULL);
	}
	printf("# the kernel logged no splat\n");
	result(0, NULL);
	return 0;
}
