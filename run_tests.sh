#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# One command from a kernel source tree to a verdict: build a debug kernel
# with test_hmm, boot it in QEMU with the tests in a busybox initramfs, and
# judge the KTAP and the kernel console. See README.
set -uo pipefail

EXIT_PASS=0
EXIT_FAIL=1
EXIT_USAGE=2
EXIT_INFRA=3

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RUNNER=$REPO/selftests/runner
SERIES=7.2
KSFT_TESTS=mm:ksft_hmm.sh,mm:ksft_hmm_folio.sh

usage() {
	cat <<EOF
usage: $0 [options]

Build a debug kernel with test_hmm, boot it in QEMU and run the
device-private large folio tests. Exit status: 0 all passed, 1 a test
failed or the kernel misbehaved, 2 bad usage, 3 infrastructure error.

Kernel:
  --ksrc DIR           kernel source tree to build (default: Debian's
                       linux-source-$SERIES, downloaded into the cache)
  --kernel BZIMAGE     boot this kernel instead of building one; needs --kbuild
  --kbuild DIR         the build dir of --kernel (.config, modules, headers)
  --series VER         Debian linux-source version to fetch (default $SERIES)
  --jobs N             parallel build jobs (default: nproc)
  --debug PROFILE      default, or full: also lockdep, KASAN, KFENCE, UBSAN,
                       debug objects, page_owner, DEBUG_PAGEALLOC and
                       kmemleak (configs/profiles/debug-full.config; its own
                       cached build; a kmemleak scan after the tests)
  --coverage           build the kernel with gcov for the device-private
                       code (mm/ and test_hmm, see configs/profiles/
                       coverage.config), collect it from the guest after the
                       run and write an lcov report into the output dir

  --mutation PATCH     also build a kernel with PATCH (a bug re-introduced in
                       the cached Debian source, see selftests/mutations) and
                       run the tests on that one; the source is restored after.
                       PATCH may be a directory of a series (its "series"
                       file, or one of its */series that applies: the kernel
                       fixes, selftests/fixes/patches)

Tests:
  --filter GLOB[,GLOB] run only tests whose fixture.variant.test matches a GLOB
  --kselftest          the kselftest way instead: install the tests into a
                       copy of the tree's selftests (make install-kselftest),
                       make a kselftest-install tarball of its mm tests with
                       test_hmm.ko (make kselftest-tarball), unpack it in the
                       guest and run its run_kselftest.sh
  --ksft-tests LIST    with --kselftest: run_kselftest.sh tests, comma
                       separated, or "all" (default: $KSFT_TESTS)
  --timeout SEC        whole guest run (default 1500; 5400 with --debug full)
  --test-timeout SEC   per test program (default: selftests/mm/settings;
                       1800 with --debug full)
  --seed N             seed of hmm-folio-stress (default: random, printed)
  --duration SEC       how long hmm-folio-stress runs (default 60)
  --race-ms MS         how long each race row of hmm-folio-race runs
                       (default 2000): a soak of the page-table walker
                       races, e.g. --race-ms 60000
  --crashers           also run the tests of known kernel bugs that crash a
                       DEBUG_VM kernel or spoil the rest of its run (a KASAN
                       report turns lockdep off): crashers.*; they SKIP
                       otherwise
  --fail-fast          stop at the first test program that fails (the rest
                       SKIP): enough for a FAIL verdict, as make prove wants
                       on a mutant kernel whose tests hang
  --repro              run the standalone reproducers of the kernel bugs this
                       suite found (selftests/fixes/*/repro.c) instead of
                       the tests: exit 1 while a bug is there, 0 when every
                       one is fixed (with --mutation selftests/fixes/patches)
  --stock-module       load the tree's own test_hmm.ko, built without the
                       lib/test_hmm series (the tests are still built with
                       its uapi): what the suite does with upstream test_hmm;
                       the tests that need the extension SKIP saying so
  --inject KIND        check the runner itself: after the first test program
                       the guest panics (sysrq-c), oopses or WARNs (LKDTM
                       BUG, WARNING), hangs (LKDTM HUNG_TASK) or runs out of
                       memory; the verdict must be FAIL

Guest:
  --accel auto|kvm|tcg QEMU accelerator (default auto: KVM only if a probe
                       guest really boots with it, else TCG)
  --memory MB          guest memory, split over two NUMA nodes (default 2048)
  --append ARGS        more guest kernel command line, e.g. numa=off (one
                       node: the NUMA tests skip) or
                       sysctl.kernel.io_uring_disabled=2 (no io_uring)

Output:
  --output DIR         keep logs here (default: <cache>/runs/<time>)
  --cache DIR          cache for sources and builds
                       (default \${XDG_CACHE_HOME:-~/.cache}/hmm-folio)
  --raw                print the guest's KTAP as it arrives

Host:
  --no-install         never install missing host packages (as root, the
                       missing ones are otherwise installed with apt-get)
  -h, --help           this text
EOF
}

die_usage() {
	echo "run_tests.sh: $*" >&2
	echo "run_tests.sh: try --help" >&2
	exit $EXIT_USAGE
}

die_infra() {
	echo "run_tests.sh: error: $*" >&2
	exit $EXIT_INFRA
}

log() { echo "==> $*"; }

# Run "$@" with output to $1's log file; print a line every 30 s so that a
# long step is never silent; on failure show the tail of the log.
LOGFILE=
run_logged() {
	local what=$1 logf=$2 start=$SECONDS next=$((SECONDS + 30)) pid rc
	shift 2
	"$@" >"$logf" 2>&1 &
	pid=$!
	while kill -0 $pid 2>/dev/null; do
		sleep 1
		if (( SECONDS >= next )); then
			echo "    ... $what: $((SECONDS - start)) s"
			next=$((next + 30))
		fi
	done
	wait $pid
	rc=$?
	if [ $rc -ne 0 ]; then
		echo "---- last lines of $logf ----" >&2
		tail -n 25 "$logf" >&2
		return $rc
	fi
}

ksrc=
kernel=
kbuild=
filter=
mutation=
timeout=
test_timeout=
seed=
duration=
race_ms=
crashers=0
stock=0
failfast=0
inject=
accel=auto
memory=2048
append=
outdir=
cache=${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/hmm-folio
raw=0
install=1
kselftest=0
repro=0
ksft_tests=
jobs=$(nproc 2>/dev/null || echo 2)
debug=default
coverage=0

need_arg() { [ $# -ge 2 ] && [ -n "$2" ] || die_usage "$1 needs an argument"; }
while [ $# -gt 0 ]; do
	case $1 in
	--ksrc) need_arg "$@"; ksrc=$2; shift 2 ;;
	--kernel) need_arg "$@"; kernel=$2; shift 2 ;;
	--kbuild) need_arg "$@"; kbuild=$2; shift 2 ;;
	--series) need_arg "$@"; SERIES=$2; shift 2 ;;
	--jobs) need_arg "$@"; jobs=$2; shift 2 ;;
	--debug) need_arg "$@"; debug=$2; shift 2 ;;
	--coverage) coverage=1; shift ;;
	--mutation) need_arg "$@"; mutation=$2; shift 2 ;;
	--filter) need_arg "$@"; filter=$2; shift 2 ;;
	--kselftest) kselftest=1; shift ;;
	--repro) repro=1; shift ;;
	--ksft-tests) need_arg "$@"; ksft_tests=$2; shift 2 ;;
	--timeout) need_arg "$@"; timeout=$2; shift 2 ;;
	--test-timeout) need_arg "$@"; test_timeout=$2; shift 2 ;;
	--seed) need_arg "$@"; seed=$2; shift 2 ;;
	--duration) need_arg "$@"; duration=$2; shift 2 ;;
	--race-ms) need_arg "$@"; race_ms=$2; shift 2 ;;
	--crashers) crashers=1; shift ;;
	--stock-module) stock=1; shift ;;
	--fail-fast) failfast=1; shift ;;
	--inject) need_arg "$@"; inject=$2; shift 2 ;;
	--accel) need_arg "$@"; accel=$2; shift 2 ;;
	--memory) need_arg "$@"; memory=$2; shift 2 ;;
	--append) need_arg "$@"; append=$2; shift 2 ;;
	--output|--keep) need_arg "$@"; outdir=$2; shift 2 ;;
	--cache) need_arg "$@"; cache=$2; shift 2 ;;
	--raw) raw=1; shift ;;
	--no-install) install=0; shift ;;
	-h|--help) usage; exit 0 ;;
	*) die_usage "unknown option: $1" ;;
	esac
done

is_num() { [[ $1 =~ ^[1-9][0-9]*$ ]]; }
[ -z "$timeout" ] || is_num "$timeout" || die_usage "--timeout takes a number of seconds"
[ -z "$test_timeout" ] || is_num "$test_timeout" ||
	die_usage "--test-timeout takes a number of seconds"
is_num "$jobs" || die_usage "--jobs takes a number"
[ -z "$seed" ] || [[ $seed =~ ^[0-9]+$ ]] && [ "${#seed}" -le 9 ] ||
	die_usage "--seed takes a number below 10^9"
[ -z "$duration" ] || is_num "$duration" ||
	die_usage "--duration takes a number of seconds"
[ -z "$race_ms" ] || { is_num "$race_ms" && [ "${#race_ms}" -le 8 ]; } ||
	die_usage "--race-ms takes a number of milliseconds below 10^8"
# The stress test's seed: printed, so that any run can be repeated.
[ -n "$seed" ] || seed=$(( (RANDOM << 15 | RANDOM) % 1000000000 ))
is_num "$memory" && [ "$memory" -ge 512 ] || die_usage "--memory takes MB >= 512"
case $accel in auto|kvm|tcg) ;; *) die_usage "--accel takes auto, kvm or tcg" ;; esac
case $debug in default|full) ;; *) die_usage "--debug takes default or full" ;; esac
# The full debug profile is several times slower under TCG (BENCHMARKS).
if [ $debug = full ]; then
	: "${timeout:=5400}" "${test_timeout:=1800}"
fi
: "${timeout:=1500}"
case $inject in ''|panic|oops|warn|hang|oom) ;;
*) die_usage "--inject takes panic, oops, warn, hang or oom" ;; esac
[[ $filter =~ [[:space:]] ]] && die_usage "--filter takes a glob without spaces"
if [ $repro = 1 ]; then
	[ $kselftest = 0 ] || die_usage "--repro and --kselftest: one or the other"
	[ $crashers = 0 ] && [ -z "$inject" ] ||
		die_usage "--repro runs the reproducers only: not with --crashers or --inject"
fi
if [ $kselftest = 1 ]; then
	[ -z "$filter" ] || die_usage "--filter selects tests of our runner: not with --kselftest"
	[ $stock = 0 ] || die_usage "--stock-module: the kselftest tarball ships the patched module"
	[ $failfast = 0 ] || die_usage "--fail-fast is for our runner: not with --kselftest"
	[[ ${ksft_tests:=$KSFT_TESTS} =~ ^[A-Za-z0-9_.:,-]+$ ]] ||
		die_usage "--ksft-tests takes collection:test names separated by commas"
else
	[ -z "$ksft_tests" ] || die_usage "--ksft-tests goes with --kselftest"
fi
if [ $coverage = 1 ]; then
	[ -z "$kernel$kbuild" ] ||
		die_usage "--coverage builds its own kernel: not with --kernel or --kbuild"
	[ -z "$mutation" ] || die_usage "--coverage and --mutation: one or the other"
	[ $repro = 0 ] || die_usage "--coverage measures the tests: not with --repro"
fi
if [ -n "$kernel" ] || [ -n "$kbuild" ]; then
	[ -n "$kernel" ] && [ -n "$kbuild" ] || die_usage "--kernel and --kbuild go together"
	[ -f "$kernel" ] || die_usage "--kernel: no such file: $kernel"
	[ -f "$kbuild/.config" ] || die_usage "--kbuild: no .config in $kbuild"
	kernel=$(realpath "$kernel")
	kbuild=$(realpath "$kbuild")
fi
if [ -n "$mutation" ]; then
	[ -f "$mutation" ] || [ -f "$mutation/series" ] ||
		die_usage "--mutation: no such patch, or directory with a series file: $mutation"
	[ -z "$ksrc$kernel" ] ||
		die_usage "--mutation patches the cached Debian source: not with --ksrc or --kernel"
	mutation=$(realpath "$mutation")
fi
if [ -n "$ksrc" ]; then
	[ -f "$ksrc/Makefile" ] && [ -f "$ksrc/mm/memremap.c" ] ||
		die_usage "--ksrc: not a kernel source tree: $ksrc"
	ksrc=$(realpath "$ksrc")
fi

# Host tools, as command:package (or file:package), for the mode asked.
# Missing ones are installed when run as root (announced; --no-install
# refuses), else the one apt-get command that installs them is printed.
need="make:make gcc:gcc flex:flex bison:bison bc:bc cpio:cpio gzip:gzip
	xz:xz-utils tar:tar python3:python3 flock:util-linux readelf:binutils
	perl:perl patch:patch qemu-system-x86_64:qemu-system-x86
	busybox:busybox-static /usr/include/libelf.h:libelf-dev
	/usr/include/openssl/ssl.h:libssl-dev /usr/include/liburing.h:liburing-dev
	/usr/include/numa.h:libnuma-dev"
# The Debian source fetch; the tree's mm selftests (make install: rsync).
[ -n "$ksrc$kbuild" ] || need="$need apt-get:apt dpkg-deb:dpkg
	/usr/share/keyrings/debian-archive-keyring.gpg:debian-archive-keyring"
[ $kselftest = 0 ] || need="$need rsync:rsync git:git
	/usr/include/sys/capability.h:libcap-dev"
[ $coverage = 0 ] || need="$need lcov:lcov genhtml:lcov gcov:gcc"
missing=
for t in $need; do
	case ${t%%:*} in
	/*) [ -e "${t%%:*}" ] ;;
	*) command -v "${t%%:*}" >/dev/null ;;
	esac || case " $missing " in *" ${t#*:} "*) ;; *) missing="$missing ${t#*:}" ;; esac
done
if [ -n "$missing" ]; then
	[ $install = 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null ||
		die_infra "missing host packages:$missing; install them with:
    apt-get install --no-install-recommends$missing
(as root, run_tests.sh does that itself unless given --no-install)"
	log "installing missing host packages:$missing (apt-get, as root; --no-install refuses)"
	aptlog=$(mktemp)
	{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends $missing; } >"$aptlog" 2>&1 || {
		tail -n 15 "$aptlog" >&2
		die_infra "apt-get install$missing failed (above: the end of its log, $aptlog)"
	}
	rm -f "$aptlog"
fi
busybox_bin=$(command -v busybox)
readelf -l "$busybox_bin" 2>/dev/null | grep -q "Requesting program interpreter" &&
	die_infra "$busybox_bin is dynamically linked: install busybox-static"

mkdir -p "$cache" || die_infra "cannot create cache dir $cache"
cache=$(realpath "$cache")
[ -n "$outdir" ] || outdir=$cache/runs/$(date +%Y%m%d-%H%M%S)
mkdir -p "$outdir" || die_infra "cannot create output dir $outdir"
outdir=$(realpath "$outdir")
log "output in $outdir"

# --- 1. kernel source ------------------------------------------------------
if [ -n "$kbuild" ] && [ -z "$ksrc" ]; then
	if [ -L "$kbuild/source" ]; then
		ksrc=$(realpath "$kbuild/source")
	elif [ -f "$kbuild/mm/memremap.c" ]; then
		ksrc=$kbuild
	else
		die_usage "--kbuild $kbuild has no 'source' link: also give --ksrc"
	fi
fi
if [ -z "$ksrc" ]; then
	log "kernel source: Debian linux-source-$SERIES (cached in $cache/src)"
	ksrc=$("$RUNNER/fetch-ksrc.sh" "$cache" "$SERIES" | tail -n 1) ||
		die_infra "could not fetch linux-source-$SERIES"
fi
kver=$(make -s -C "$ksrc" kernelversion 2>/dev/null) || die_infra "cannot read the version of $ksrc"
log "kernel source: $ksrc ($kver)"
# Before the long build: does one of our lib/test_hmm series fit this tree?
series=$("$REPO/lib/test_hmm/apply.sh" --dry-run "$ksrc" "$kver" 2>"$outdir/series.err") ||
	die_infra "$(cat "$outdir/series.err")"
log "lib/test_hmm series: lib/test_hmm/$series"

# --- 2. kernel build -------------------------------------------------------
fragments=("$REPO"/configs/*.config)
[ $debug = default ] || fragments+=("$REPO/configs/profiles/debug-$debug.config")
covfiles=
if [ $coverage = 1 ]; then
	fragments+=("$REPO/configs/profiles/coverage.config")
	covfiles=$REPO/configs/profiles/coverage.files
fi
check_config() {
	local cfg=$1 bad=
	for l in $(grep -h '^CONFIG_' "${fragments[@]}"); do
		grep -qx "$l" "$cfg" || bad="$bad ${l}"
	done
	[ -z "$bad" ] || die_infra "required options not set in $cfg:$bad"
}

if [ -z "$kbuild" ]; then
	# The build's key: what the fragments set, not how they say it.
	key=$( (echo "$kver"; grep -h '^CONFIG_\|^# CONFIG_.* is not set' "${fragments[@]}"
		[ -z "$covfiles" ] || grep -v '^#' "$covfiles"; gcc --version | head -n 1) |
		sha256sum | cut -c1-12)
	kbuild=$cache/build/$kver-$key
	if [ $coverage = 1 ]; then
		# gcov for the files of coverage.files only: a hard-linked copy
		# of the tree whose Makefiles say so (each replaced, never
		# written through a link); it is the build's source from now on.
		# Made once per tree: remove it to take up edits of a --ksrc.
		gsrc=$cache/gcov-src/$kver-$key
		if [ "$(cat "$gsrc/.hmmfolio-gcov" 2>/dev/null)" != "$ksrc" ]; then
			log "coverage: hard-linked copy of $ksrc in $gsrc"
			rm -rf "$gsrc"
			mkdir -p "$(dirname "$gsrc")"
			lk=/dev/null
			[ "${ksrc#"$cache"/src/}" = "$ksrc" ] || lk=$ksrc/.hmmfolio-mutation.lock
			flock -s "$lk" cp -al "$ksrc" "$gsrc" || die_infra "cannot copy $ksrc to $gsrc"
			for f in $(grep -v '^#' "$covfiles"); do
				[ -f "$ksrc/$f" ] || die_infra "coverage.files: no $f in $ksrc"
				mf=$gsrc/$(dirname "$f")/Makefile
				{ cat "$mf"; echo "GCOV_PROFILE_$(basename "$f" .c).o := y"; } >"$mf.new" &&
					mv -f "$mf.new" "$mf" || die_infra "cannot write $mf"
			done
			echo "$ksrc" >"$gsrc/.hmmfolio-gcov"
		fi
		ksrc=$gsrc
	fi
	mkdir -p "$kbuild"
	if [ ! -f "$kbuild/.config" ]; then
		log "configuring $kbuild (tinyconfig + configs/*.config)"
		run_logged "configure" "$outdir/config.log" bash -c '
			make -C "$1" O="$2" tinyconfig &&
			"$1"/scripts/kconfig/merge_config.sh -m -O "$2" "$2"/.config "${@:3}" &&
			make -C "$1" O="$2" olddefconfig' _ "$ksrc" "$kbuild" "${fragments[@]}" ||
			{ rm -f "$kbuild/.config"; die_infra "kernel configuration failed"; }
	fi
	check_config "$kbuild/.config"
	[ -f "$kbuild/arch/x86/boot/bzImage" ] &&
		log "building kernel (incremental)" ||
		log "building kernel (cold build: about 10 minutes on 2 cores)"
	# One make per build dir at a time; and none while mutant-build.sh has a
	# mutation applied to the cached source (it holds that lock exclusively).
	srclock=/dev/null
	[ "${ksrc#"$cache"/src/}" = "$ksrc" ] || srclock=$ksrc/.hmmfolio-mutation.lock
	run_logged "kernel build" "$outdir/build.log" \
		flock "$kbuild/.hmmfolio-build.lock" flock -s "$srclock" \
		make -C "$ksrc" O="$kbuild" -j"$jobs" bzImage modules ||
		die_infra "kernel build failed (log: $outdir/build.log)"
	kernel=$kbuild/arch/x86/boot/bzImage
else
	check_config "$kbuild/.config"
fi
[ -f "$kbuild/Module.symvers" ] || die_infra "no Module.symvers in $kbuild: build the kernel and its modules first"

if [ ! -f "$kbuild/usr/include/linux/mman.h" ]; then
	log "installing uapi headers into $kbuild/usr"
	run_logged "headers" "$outdir/headers.log" \
		make -C "$ksrc" O="$kbuild" headers ||
		die_infra "make headers failed (log: $outdir/headers.log)"
fi

if [ -n "$mutation" ]; then
	log "mutation: building with $(basename "$mutation") applied (incremental)"
	run_logged "mutant build" "$outdir/mutant-build.log" \
		"$RUNNER/mutant-build.sh" "$ksrc" "$kbuild" "$mutation" "$jobs" ||
		die_infra "building the mutant kernel failed (log: $outdir/mutant-build.log)"
	kbuild=$(tail -n 1 "$outdir/mutant-build.log")
	kernel=$kbuild/arch/x86/boot/bzImage
	echo "$mutation" >"$outdir/mutation"
fi

log "building test_hmm.ko with the lib/test_hmm patches"
run_logged "module build" "$outdir/module-build.log" \
	"$RUNNER/build-module.sh" "$ksrc" "$kbuild" "$outdir/module" \
	$([ $coverage = 0 ] || echo GCOV_PROFILE_test_hmm.o=y) ||
	die_infra "building test_hmm.ko failed (log: $outdir/module-build.log)"
if [ $stock = 1 ]; then
	log "building the tree's own test_hmm.ko (--stock-module)"
	run_logged "stock module build" "$outdir/stock-module-build.log" \
		"$RUNNER/build-module.sh" --stock "$ksrc" "$kbuild" "$outdir/stock-module" ||
		die_infra "building the stock test_hmm.ko failed (log: $outdir/stock-module-build.log)"
fi

# --- 3. tests ---------------------------------------------------------------
root=$outdir/initramfs
rm -rf "$root"
mkdir -p "$root"/{bin,dev,proc,sys,tmp,tests,modules,boot}
# The kernel's config, where tests and reproducers look for it: the
# crashers and reproducers need CONFIG_DEBUG_VM or CONFIG_KASAN to see theirs.
cp "$kbuild/.config" "$root/boot/config-$(cat "$kbuild/include/config/kernel.release")" ||
	die_infra "cannot copy $kbuild/.config into the initramfs"
cp "$busybox_bin" "$root/bin/busybox"
cp "$RUNNER/guest-init.sh" "$root/init"
if [ $kselftest = 1 ]; then
	log "building the kselftest tarball (the tree's mm tests with ours)"
	run_logged "kselftest tarball" "$outdir/kselftest-build.log" \
		"$REPO/selftests/kselftest/kselftest-install.sh" tarball "$ksrc" "$kbuild" \
		"$outdir/kselftest.tar.gz" "$outdir/module" ||
		die_infra "building the kselftest tarball failed (log: $outdir/kselftest-build.log)"
	grep 'kselftest.tar.gz:' "$outdir/kselftest-build.log" | sed 's/^kselftest-install: /    /'
	# The tests are dynamic and the tree's scripts need bash and a
	# timeout that knows --foreground: the host's, with their libraries.
	cp "$outdir/kselftest.tar.gz" "$root/"
	mkdir -p "$root/usr/bin" "$outdir/kselftest"
	tar -xzf "$outdir/kselftest.tar.gz" -C "$outdir/kselftest"
	cp "$(command -v bash)" "$root/bin/bash"
	cp "$(command -v timeout)" "$root/usr/bin/timeout"
	{ echo "$root/bin/bash"; echo "$root/usr/bin/timeout"
	  find "$outdir/kselftest" -type f -perm -u+x; } |
		xargs -r ldd 2>/dev/null | grep -o '/[^ ]*\.so[^ ]*' | sort -u |
		while read -r lib; do cp -L --parents "$lib" "$root/"; done
	rm -rf "$outdir/kselftest"
elif [ $repro = 1 ]; then
	# One static program each, built the way its header says, in the
	# order of selftests/fixes/known-bugs (the crasher last).
	log "building the reproducers (selftests/fixes/*/repro.c)"
	progs=
	for id in $(sed -n 's/^\([a-z0-9_]\+\)[[:space:]].*/\1/p' "$REPO/selftests/fixes/known-bugs"); do
		src=$REPO/selftests/fixes/$id/repro.c
		[ -f "$src" ] || die_infra "known bug $id has no reproducer $src"
		gcc -O2 -Wall -static -pthread -isystem "$kbuild/usr/include" -I "$outdir/module" \
			-o "$root/tests/$id" "$src" >>"$outdir/tests-build.log" 2>&1 ||
			{ tail -n 20 "$outdir/tests-build.log" >&2; die_infra "building $src failed"; }
		progs="$progs $id"
	done
	echo $progs >"$root/tests/list"
else
	log "building the tests"
	tests_out=$outdir/tests
	# --debug full: the tree's hmm-tests get 300 s per test, not 30.
	run_logged "tests build" "$outdir/tests-build.log" \
		make -C "$REPO/selftests/mm" KSRC="$ksrc" OUTPUT="$tests_out" \
		KHDR_INCLUDES="-isystem $kbuild/usr/include" HMM_UAPI="$outdir/module" \
		$([ $debug = default ] || echo ANCHOR_TIMEOUT=300) ||
		die_infra "building the tests failed (log: $outdir/tests-build.log)"
	progs=$(make -s -C "$REPO/selftests/mm" KSRC="$ksrc" list)
	for p in $progs; do cp "$tests_out/$p" "$root/tests/"; done
	echo "$progs" >"$root/tests/list"
	make -s -C "$REPO/selftests/mm" KSRC="$ksrc" args >"$root/tests/args"
fi
if [ $kselftest = 0 ]; then
	if [ $stock = 1 ]; then
		cp "$outdir/stock-module/lib/test_hmm.ko" "$root/modules/"
	else
		cp "$outdir/module/lib/test_hmm.ko" "$root/modules/"
	fi
	cp "$REPO/selftests/mm/settings" "$root/tests/"
fi

# --- 4. initramfs ----------------------------------------------------------
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$outdir/initramfs.cpio.gz" ||
	die_infra "cannot build the initramfs"

# --- 5. boot ---------------------------------------------------------------
qemu=(qemu-system-x86_64 -nodefaults -display none -no-reboot
	-m "$memory" -smp 2,sockets=2,cores=1,threads=1
	-object memory-backend-ram,id=m0,size=$((memory / 2))M
	-object memory-backend-ram,id=m1,size=$((memory - memory / 2))M
	-numa node,nodeid=0,cpus=0,memdev=m0
	-numa node,nodeid=1,cpus=1,memdev=m1
	-kernel "$kernel" -initrd "$outdir/initramfs.cpio.gz")
# A reproducer sees its own oops (the crasher's VM_BUG_ON) and says so.
cmdline="console=ttyS0 panic=-1"
[ $repro = 1 ] || cmdline="$cmdline oops=panic"
# hugetlb pages for the tree's hmm-tests (anon_write_hugetlbfs, compound).
cmdline="$cmdline loglevel=7 hugepages=4 hmmfolio.filter=$filter"
[ -z "$test_timeout" ] || cmdline="$cmdline hmmfolio.timeout=$test_timeout"
cmdline="$cmdline hmmfolio.seed=$seed"
[ -z "$duration" ] || cmdline="$cmdline hmmfolio.duration=$duration"
[ -z "$race_ms" ] || cmdline="$cmdline hmmfolio.race_ms=$race_ms"
[ "$crashers" = 0 ] || cmdline="$cmdline hmmfolio.crashers=1"
[ "$failfast" = 0 ] || cmdline="$cmdline hmmfolio.failfast=1"
[ -z "$inject" ] || cmdline="$cmdline hmmfolio.inject=$inject"
# What the full debug profile built in, turned on (kmemleak is on by default).
[ $debug = default ] || cmdline="$cmdline page_owner=on debug_pagealloc=on slub_debug=FZP"
# ... and the tests' own harness timeouts stretched as much as it is slower.
[ $debug = default ] || cmdline="$cmdline hmmfolio.tscale=10"
[ -z "$append" ] || cmdline="$cmdline $append"
[ $kselftest = 0 ] || cmdline="$cmdline hmmfolio.ksft=$ksft_tests"
gcovdump=()
if [ $coverage = 1 ]; then
	cmdline="$cmdline hmmfolio.gcov=1"
	gcovdump=(-serial "file:$outdir/gcov.dump")
fi

# /dev/kvm can exist and still not work (a guest that hangs after the BIOS):
# believe KVM only when a guest prints the kernel banner with it.
kvm_works() {
	[ -r /dev/kvm ] && [ -w /dev/kvm ] || return 1
	local probe=$outdir/kvm-probe.log
	timeout 15 "${qemu[@]}" -accel kvm -serial "file:$probe" \
		-append "console=ttyS0 panic=-1 rdinit=/bin/false" >/dev/null 2>&1 &
	local pid=$! i
	for i in $(seq 1 20); do
		sleep 0.5
		grep -q "Linux version" "$probe" 2>/dev/null && break
	done
	kill $pid 2>/dev/null
	wait $pid 2>/dev/null
	grep -q "Linux version" "$probe" 2>/dev/null
}
case $accel in
auto)
	if kvm_works; then accel=kvm; log "accelerator: KVM (probe guest booted)"
	else accel=tcg; log "accelerator: TCG (KVM missing or its probe guest did not boot)"; fi ;;
kvm)
	[ -w /dev/kvm ] || die_infra "--accel kvm: /dev/kvm is not usable" ;;
tcg) log "accelerator: TCG" ;;
esac
qemu+=(-accel "$accel")

console=$outdir/console.log
ktap=$outdir/ktap.log
: >"$console"
: >"$ktap"
log "booting $kernel (timeout ${timeout}s)"
start=$SECONDS
"${qemu[@]}" -serial "file:$console" -serial "file:$ktap" "${gcovdump[@]}" -append "$cmdline" \
	>"$outdir/qemu.log" 2>&1 &
qpid=$!
# run_tests.sh interrupted or killed: the guest must not outlive it (it
# would go on writing into this output dir, and eat the CPUs).
trap 'kill -9 $qpid 2>/dev/null' EXIT
trap 'exit 130' INT TERM HUP
echo "$cmdline" >"$outdir/cmdline"

# Follow the KTAP: every result line (or everything with --raw).
tail -n +1 -F --pid=$qpid "$ktap" 2>/dev/null | while IFS= read -r line; do
	if [ $raw = 1 ]; then
		echo "    $line"
	else
		case $line in
		"# ok "*|"# not ok "*|"ok "*|"not ok "*|"Bail out"*) echo "    ${line#\# }" ;;
		esac
	fi
done &
follower=$!

timed_out=
while kill -0 $qpid 2>/dev/null; do
	if (( SECONDS - start >= timeout )); then
		timed_out=--timed-out
		kill $qpid 2>/dev/null
		sleep 1
		kill -9 $qpid 2>/dev/null
		break
	fi
	sleep 1
done
wait $qpid 2>/dev/null
qrc=$?
wait $follower 2>/dev/null
log "guest ran $((SECONDS - start)) s ($accel); hmm-folio-stress seed $seed (--seed $seed repeats it)"
times=$(tr -d '\r' <"$ktap" | sed -n 's/^# hmmfolio: \(.*\) ran \([0-9]*\) s$/\1 \2 s/p' |
	paste -sd , - | sed 's/,/, /g')
[ -z "$times" ] || log "time per program: $times"
if [ ! -s "$console" ] && [ -z "$timed_out" ] && [ $qrc -ne 0 ]; then
	cat "$outdir/qemu.log" >&2
	die_infra "QEMU failed to start (exit $qrc)"
fi

# --- 6. verdict ------------------------------------------------------------
echo "logs: $outdir (console.log, ktap.log)"
echo
# The SKIP reasons this run declares (selftests/runner/verdict.py): what
# the options chose, or the build reported; any other SKIP is a FAIL.
allow=()
[ "$crashers" = 1 ] || allow+=(--allow-skip crashers)
[ -z "$filter" ] || allow+=(--allow-skip filter)
[ "$failfast" = 0 ] || allow+=(--allow-skip fail-fast)
[ "$stock" = 0 ] || allow+=(--allow-skip stock-module)
# The tree's hmm-tests: the guest gives test_hmm no device coherent memory.
[ $kselftest = 1 ] || [ $repro = 1 ] || allow+=(--allow-skip no-coherent)
[[ " $append " != *" numa=off "* ]] || allow+=(--allow-skip one-node)
[[ $append != *io_uring_disabled* ]] || allow+=(--allow-skip no-io_uring)
for lib in liburing libnuma; do
	grep -qs "hmm-folio: built without $lib" "$outdir/tests-build.log" &&
		allow+=(--allow-skip no-$lib)
done
# A known bug only KASAN sees (its crasher and reproducer say so).
grep -qx 'CONFIG_KASAN=y' "$kbuild/.config" && grep -qx 'CONFIG_SLUB_RCU_DEBUG=y' "$kbuild/.config" ||
	allow+=(--allow-skip no-kasan)
[ $repro = 0 ] || allow+=(--repro)
python3 "$RUNNER/verdict.py" --ktap "$ktap" --console "$console" $timed_out "${allow[@]}"
rc=$?
if [ $coverage = 1 ]; then
	echo
	log "coverage report (selftests/runner/coverage.py)"
	python3 "$RUNNER/coverage.py" report --dump "$outdir/gcov.dump" \
		--files "$covfiles" --out "$outdir/coverage" ||
		{ echo "run_tests.sh: error: no coverage report (above)" >&2
		  [ $rc -ne 0 ] || rc=$EXIT_INFRA; }
fi
exit $rc
