#!/bin/busybox sh
# SPDX-License-Identifier: GPL-2.0
#
# /init of the test guest. Kernel messages go to ttyS0 (the console); test
# output goes to ttyS1 as kselftest KTAP, so the two never interleave.
#
# Kernel command line parameters read here:
#   hmmfolio.filter=GLOB[,GLOB] run only tests (fixture.variant.test) matching a GLOB
#   hmmfolio.timeout=SEC      per test program; default from /tests/settings
#   hmmfolio.module=FILE      module to load (default /modules/test_hmm.ko)
#   hmmfolio.seed=N           HMM_FOLIO_SEED for hmm-folio-stress
#   hmmfolio.duration=SEC     HMM_FOLIO_DURATION for hmm-folio-stress
#   hmmfolio.race_ms=MS       HMM_FOLIO_RACE_MS for hmm-folio-race
#   hmmfolio.crashers=1       HMM_FOLIO_CRASHERS: run known kernel-crashing bugs
#   hmmfolio.inject=KIND      after the first program: panic, oops, warn, hang
#                             or oom (run_tests.sh --inject: runner self-check)
#   hmmfolio.ksft=A,B         with a kselftest tarball (/kselftest.tar.gz):
#                             the run_kselftest.sh tests to run, or "all"
#   hmmfolio.gcov=1           at the end, send the kernel's gcov data
#                             (debugfs gcov/**/*.gcda) to ttyS2, base64
#                             (run_tests.sh --coverage)
#   hmmfolio.tscale=N         HMM_FOLIO_TIMEOUT_SCALE: the tests' harness
#                             timeouts times N (run_tests.sh --debug full)
#   hmmfolio.failfast=1       after the first program that fails, report the
#                             rest (and the unload) as SKIP: one failure is
#                             make prove's verdict on a mutant kernel

/bin/busybox mkdir -p /proc /sys /dev /tmp /bin /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp
# LKDTM (--inject); clear_warn_once (a reproducer re-arms WARN_ONCE).
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
# What udev would add to devtmpfs: the kselftest runner writes to /dev/stdout.
ln -s /proc/self/fd /dev/fd
ln -s /proc/self/fd/0 /dev/stdin
ln -s /proc/self/fd/1 /dev/stdout
ln -s /proc/self/fd/2 /dev/stderr

filter=
inject=
gcov=
timeout=
ksft=
module=/modules/test_hmm.ko
for arg in $(cat /proc/cmdline); do
	case $arg in
	hmmfolio.filter=*) filter=${arg#hmmfolio.filter=} ;;
	hmmfolio.timeout=*) timeout=${arg#hmmfolio.timeout=} ;;
	hmmfolio.module=*) module=${arg#hmmfolio.module=} ;;
	hmmfolio.seed=*) export HMM_FOLIO_SEED=${arg#hmmfolio.seed=} ;;
	hmmfolio.duration=*) export HMM_FOLIO_DURATION=${arg#hmmfolio.duration=} ;;
	hmmfolio.race_ms=*) export HMM_FOLIO_RACE_MS=${arg#hmmfolio.race_ms=} ;;
	hmmfolio.crashers=1) export HMM_FOLIO_CRASHERS=1 ;;
	hmmfolio.inject=*) inject=${arg#hmmfolio.inject=} ;;
	hmmfolio.ksft=*) ksft=${arg#hmmfolio.ksft=} ;;
	hmmfolio.failfast=1) failfast=1 ;;
	hmmfolio.gcov=1) gcov=1 ;;
	hmmfolio.tscale=*) export HMM_FOLIO_TIMEOUT_SCALE=${arg#hmmfolio.tscale=} ;;
	esac
done
# Coverage counts what the tests reach, not what the boot did.
[ -z "$gcov" ] || echo 1 >/sys/kernel/debug/gcov/reset 2>/dev/null
[ -n "$timeout" ] || timeout=$(sed -n 's/^timeout=//p' /tests/settings 2>/dev/null)
[ -n "$timeout" ] || timeout=900

exec 3>/dev/ttyS1
out() { echo "$*" >&3; }

# --debug full: a kmemleak scan once the tests are done. An object must be
# 5 s old to be reported, and a second scan confirms the first; kmemleak
# logs "N new suspected memory leaks", a splat, and the list goes to the
# console.
leak_scan() {
	kml=/sys/kernel/debug/kmemleak
	[ -w $kml ] || return 0
	out "# hmmfolio: kmemleak scan"
	sleep 6
	echo scan >$kml
	sleep 1
	echo scan >$kml
	n=$(grep -c '^unreferenced object' $kml)
	out "# hmmfolio: kmemleak: $n unreferenced object(s)"
	[ "$n" = 0 ] || cat $kml
}

# --coverage: every .gcda file of debugfs as "=== PATH", its base64 and
# "=== end", on ttyS2 (the paths are the host's build dirs). The data of
# an unloaded module stays there (gcov_persist).
gcov_dump() {
	g=/sys/kernel/debug/gcov
	[ -n "$gcov" ] || return 0
	if [ ! -d $g ]; then
		out "# hmmfolio: no $g: no coverage data"
		return 0
	fi
	out "# hmmfolio: sending the gcov data"
	find $g -name '*.gcda' | while read -r f; do
		echo "=== ${f#$g}"
		base64 <"$f"
		echo "=== end"
	done >/dev/ttyS2
	out "# hmmfolio: gcov data sent: $(find $g -name '*.gcda' | wc -l) file(s)"
}

finish() {
	leak_scan
	gcov_dump
	out "# hmmfolio: guest done"
	sync
	echo o >/proc/sysrq-trigger 2>/dev/null
	poweroff -f
}

# Is process $1 still running (and not a zombie waiting for wait)?
alive() {
	[ -r /proc/$1/stat ] || return 1
	! grep -q '^[0-9]* ([^)]*) Z' /proc/$1/stat
}

# Wait up to $2 seconds for process $1 to end; false if it is still running.
wait_gone() {
	w=0
	while alive $1 && [ $w -lt $2 ]; do
		sleep 1
		w=$((w + 1))
	done
	! alive $1
}

# Run one program, its output prefixed with "# ", killed after $timeout s,
# as soon as one of its tests hung (harness timeout: the kernel is no longer
# trustworthy), or 20 s after it printed its totals without exiting (a task
# stuck in the kernel at exit). A task stuck in D state cannot be killed: it is left
# behind, after a dump of the blocked tasks, and the run goes on.
# Returns the program's status, 124 on timeout.
run_prog() {
	fifo=/tmp/out.$$
	done=/tmp/done.$$
	hung=/tmp/hung.$$
	rm -f $fifo $done $hung && mkfifo $fifo
	(while IFS= read -r line; do
		echo "# $line"
		case $line in
		"# Totals:"*) : >$done ;;
		*"Test terminated by timeout"*) : >$hung ;;
		esac
	done <$fifo >&3) &
	reader=$!
	"$@" >$fifo 2>&1 </dev/null &
	pid=$!
	waited=0
	exit_wait=0
	while alive $pid; do
		[ -e $done ] && exit_wait=$((exit_wait + 1))
		if [ $waited -ge $timeout ] || [ $exit_wait -gt 20 ] || [ -e $hung ]; then
			if [ -e $hung ]; then
				echo "# hmmfolio: a test of $1 hung in the kernel: the rest of it cannot be trusted and is not run" >&3
			elif [ $exit_wait -gt 20 ]; then
				echo "# hmmfolio: $1 did not exit 20s after its last test, dumping blocked tasks" >&3
			else
				echo "# hmmfolio: $1 timed out after ${timeout}s, dumping blocked tasks" >&3
			fi
			echo w >/proc/sysrq-trigger
			kill -9 -$pid $pid $reader 2>/dev/null
			sleep 2
			alive $pid || wait $pid
			rm -f $fifo $done $hung
			return 124
		fi
		sleep 1
		waited=$((waited + 1))
	done
	wait $pid
	rc=$?
	# A child stuck in the kernel may still hold the pipe: do not wait on it.
	if wait_gone $reader 5; then
		wait $reader
	else
		echo "# hmmfolio: $1 left a task behind, dumping blocked tasks" >&3
		echo w >/proc/sysrq-trigger
		kill -9 $reader 2>/dev/null
	fi
	rm -f $fifo $done $hung
	return $rc
}

# A fault the runner must turn into a FAIL (run_tests.sh --inject).
inject_fault() {
	out "# hmmfolio: injecting $1"
	lkdtm=/sys/kernel/debug/provoke-crash/DIRECT
	case $1 in
	oops|warn|hang)
		if [ ! -w $lkdtm ]; then
			out "# hmmfolio: no LKDTM ($lkdtm): cannot inject $1"
			return
		fi ;;
	esac
	case $1 in
	panic) echo c >/proc/sysrq-trigger ;;
	oops) echo BUG >$lkdtm ;;
	warn) echo WARNING >$lkdtm ;;
	hang) echo HUNG_TASK >$lkdtm ;;
	# sort keeps every line: the OOM killer takes it, the guest goes on.
	oom) head -c 8000000000 /dev/zero | tr '\0' '\n' | sort >/dev/null ;;
	esac
}

# fixture.variant.test names of a kselftest_harness program, from its -l
# table ("%-20s %-25s %s" rows that zip the variants and the tests); a
# program that is not one (no "# FIXTURE" header) is one test, its name.
list_tests() {
	"$1" -l >/tmp/list.$$ 2>&1
	if ! grep -q '^# FIXTURE' /tmp/list.$$; then
		echo "${1##*/}"
		return
	fi
	awk '
	function flush(i, j) {
		for (i = 1; i <= (nv ? nv : 1); i++)
			for (j = 1; j <= nt; j++)
				print f "." (nv ? V[i] "." : "") T[j]
		nv = 0; nt = 0
	}
	/^# FIXTURE/ { next }
	/^-----/ { flush(); next }
	{
		# A variant name longer than its column pushes the test right.
		a = substr($0, 1, 21); rest = substr($0, 22)
		gsub(/ /, "", a)
		if (a != "") f = a
		n = split(rest, w, " ")
		if (substr(rest, 1, 1) != " " && n >= 1) {
			V[++nv] = w[1]
			if (n >= 2) T[++nt] = w[2]
		} else if (n >= 1) {
			T[++nt] = w[1]
		}
	}
	END { flush() }' /tmp/list.$$
}

# A kselftest tarball (run_tests.sh --kselftest): unpack it as a test
# machine would, make its test_hmm.ko the kernel's module (test_hmm.sh
# modprobes it) and let the tree's run_kselftest.sh print the KTAP.
if [ -f /kselftest.tar.gz ]; then
	mkdir -p /kselftest
	if ! tar -xzf /kselftest.tar.gz -C /kselftest 2>/tmp/tar.err; then
		out "Bail out! cannot unpack the kselftest tarball: $(cat /tmp/tar.err)"
		finish
	fi
	mdir=/lib/modules/$(uname -r)/kernel/lib
	mkdir -p $mdir
	cp /kselftest/mm/test_hmm.ko $mdir/ && depmod
	sel=
	[ "$ksft" = all ] || for t in $(echo "$ksft" | tr , ' '); do sel="$sel -t $t"; done
	cd /kselftest
	./run_kselftest.sh $sel >&3 2>&1
	finish
fi

out "TAP version 13"
if ! insmod "$module" 2>/tmp/insmod.err; then
	out "Bail out! cannot load $module: $(cat /tmp/insmod.err)"
	finish
fi

# hmm-folio-teardown unloads and reloads the module.
export HMM_FOLIO_MODULE=$module
cd /tests
progs=$(cat /tests/list)
set -- $progs
# One result per program, and one for unloading the module at the end.
out "1..$(($# + 1))"
n=0
failed=
for prog in $progs; do
	n=$((n + 1))
	args=
	if [ -n "$failed" ] && [ -n "$failfast" ]; then
		out "ok $n selftests: mm: $prog # SKIP fail-fast: an earlier program failed"
		continue
	fi
	if [ -n "$filter" ]; then
		# A harness program runs the matching tests (-r each); one
		# that is a single test (list_tests names it after itself)
		# runs whole if its name matches.
		# GLOB may be several, comma separated: a test matching any
		# (split with pathname expansion off: they are no file names).
		globs=$(echo "$filter" | tr , ' ')
		matched=
		for t in $(list_tests ./$prog); do
			set -f
			for g in $globs; do
				case $t in
				$g)
					matched=1
					[ "$t" = "$prog" ] || args="$args -r $t"
					break ;;
				esac
			done
			set +f
		done
		if [ -z "$matched" ]; then
			out "ok $n selftests: mm: $prog # SKIP no test matches $filter"
			continue
		fi
	fi
	out "# selftest: mm: $prog"
	# The arguments it always runs with (selftests/mm/Makefile: PROG_ARGS).
	args="$(sed -n "s|^$prog ||p" /tests/args 2>/dev/null) $args"
	t0=$(cut -d. -f1 /proc/uptime)
	run_prog ./$prog $args
	rc=$?
	out "# hmmfolio: $prog ran $(($(cut -d. -f1 /proc/uptime) - t0)) s"
	case $rc in
	0) out "ok $n selftests: mm: $prog" ;;
	4) out "ok $n selftests: mm: $prog # SKIP" ;;
	124) out "not ok $n selftests: mm: $prog # TIMEOUT ${timeout} seconds"; failed=1 ;;
	*) out "not ok $n selftests: mm: $prog # exit=$rc"; failed=1 ;;
	esac
	if [ -n "$inject" ]; then
		inject_fault $inject
		inject=
	fi
done

# Every device folio must be gone once the tests are: unloading must work
# (the module's chunk teardown reports leaked device memory).
# A leaked device page reference makes memunmap_pages() wait forever: give
# the unload 30 s.
n=$((n + 1))
if [ -n "$failed" ] && [ -n "$failfast" ]; then
	out "ok $n selftests: mm: rmmod test_hmm # SKIP fail-fast: an earlier program failed"
	finish
fi
rmmod "${module##*/}" 2>/tmp/rmmod.err &
pid=$!
if ! wait_gone $pid 30; then
	echo w >/proc/sysrq-trigger
	out "not ok $n selftests: mm: rmmod test_hmm # TIMEOUT 30 seconds"
elif wait $pid; then
	out "ok $n selftests: mm: rmmod test_hmm"
else
	out "# $(cat /tmp/rmmod.err)"
	out "not ok $n selftests: mm: rmmod test_hmm"
fi
finish
