#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Drop the hmm-folio tests into a kernel tree's selftests, the kselftest way.
#
#   kselftest-install.sh install KSRC     add them to KSRC (one patch, kept as
#                                         tools/testing/selftests/mm/.hmm-folio.patch)
#   kselftest-install.sh uninstall KSRC   take exactly that patch out again
#   kselftest-install.sh patches KSRC DIR the same as a git am series in DIR
#   kselftest-install.sh tarball KSRC KBUILD OUT [MODULE_DIR]
#                                         kselftest-install tarball of the
#                                         tree's mm tests with ours and the
#                                         patched test_hmm.ko for KBUILD
#
# What goes into the tree: the lib/test_hmm series for it (lib/test_hmm/
# apply.sh picks it: the tests need its uapi, and a kernel built from the
# tree then has the patched test_hmm.ko), our sources in selftests/mm, one
# include line at the end of its Makefile (hmm-folio.mk), the hmm_folio
# category of run_vmtests.sh, our kernel options in its config and our
# binaries in its .gitignore. Nothing of the tree is copied into this
# repository: the series is made from the tree's own files every time.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
tests=$repo/selftests/mm
MM=tools/testing/selftests/mm
STATE=$MM/.hmm-folio.patch
series=		# the lib/test_hmm series for the tree (check_tree)
PROGS="hmm-folio-thp hmm-folio-reuse hmm-folio-ioctl hmm-folio-pin hmm-folio-numa
	hmm-folio-twodev hmm-folio-fork hmm-folio-sizes hmm-folio-perm hmm-folio-race
	hmm-folio-stress hmm-folio-teardown"
# What goes into the tree's mm dir: the tests' sources (selftests/mm) and
# the glue that builds and runs them there (this dir).
SOURCES="$(printf '%s.c ' $PROGS)hmm_folio_util.c hmm_folio_util.h hmm_folio_splats.h"
GLUE="hmm-folio.mk test_hmm_folio.sh ksft_hmm_folio.sh"

# Scratch dirs, removed when the script exits.
scratch=()
trap 'rm -rf "${scratch[@]}"' EXIT
new_scratch() { scratch+=("$(mktemp -d)"); echo "${scratch[-1]}"; }

die() { echo "kselftest-install: $*" >&2; exit 1; }
log() { echo "kselftest-install: $*" >&2; }

usage() {
	sed -n '4,13s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
	exit 2
}

# Host tools a command needs, as command:package.
need_tools() {
	local t miss=
	for t in "$@"; do
		command -v "${t%%:*}" >/dev/null || miss="$miss ${t#*:}"
	done
	[ -z "$miss" ] || die "missing host packages:$miss (apt-get install$miss)"
}

check_tree() {
	local t=$1 f
	need_tools patch:patch git:git
	for f in lib/test_hmm.c lib/test_hmm_uapi.h; do
		[ -f "$t/$f" ] || die "$t is not a kernel tree with mm selftests: no $f"
	done
	# A tree too old for the tests, or one no series fits: apply.sh says
	# which. The series it names is the one make_series applies (once
	# installed, the series is in the tree: make_series asks again after
	# the uninstall).
	[ -f "$t/$STATE" ] || series=$("$repo/lib/test_hmm/apply.sh" --dry-run \
		"$t" "$(make -s -C "$t" kernelversion 2>/dev/null)") || exit 1
	for f in $MM/Makefile $MM/run_vmtests.sh; do
		[ -f "$t/$f" ] || die "$t is not a kernel tree with mm selftests: no $f"
	done
}

gitq() {
	git -C "$1" -c user.name="hmm-folio developer" \
		-c user.email=dev@hmm-folio.invalid "${@:2}"
}

# Build, in a scratch git repo $2 holding the tree's files we touch, the
# series "lib/test_hmm patches + one selftests/mm patch" for tree $1.
make_series() {
	local t=$1 g=$2 s p d
	mkdir -p "$g/lib" "$g/$MM"
	cp "$t/lib/test_hmm.c" "$t/lib/test_hmm_uapi.h" "$g/lib/"
	for f in Makefile run_vmtests.sh config .gitignore; do
		[ ! -f "$t/$MM/$f" ] || cp "$t/$MM/$f" "$g/$MM/"
	done
	git -C "$g" init -q
	gitq "$g" add -A -f
	gitq "$g" commit -q -m "base: $(make -s -C "$t" kernelversion 2>/dev/null)"

	s=${series:-}
	[ -n "$s" ] || s=$("$repo/lib/test_hmm/apply.sh" --dry-run "$g" \
		"$(make -s -C "$t" kernelversion 2>/dev/null)") || exit 1
	d=$repo/lib/test_hmm/$(dirname "$s")
	while read -r p; do
		case $p in ''|'#'*) continue ;; esac
		gitq "$g" am -q "$d/$p" || die "git am $p failed"
	done <"$repo/lib/test_hmm/$s"

	for f in $SOURCES $GLUE; do
		[ ! -e "$t/$MM/$f" ] || die "$t/$MM/$f exists already: not ours to overwrite"
	done
	for f in $SOURCES; do cp -p "$tests/$f" "$g/$MM/"; done
	for f in $GLUE; do cp -p "$here/$f" "$g/$MM/"; done
	printf '\ninclude hmm-folio.mk\n' >>"$g/$MM/Makefile"
	awk '
	{ print }
	/^\thmm smoke tests$/ {
		print "- hmm_folio"
		print "\tdevice-private large folio lifecycle tests (hmm-folio)"
		u = 1
	}
	/^CATEGORY="hmm" run_test / {
		print ""
		print "CATEGORY=\"hmm_folio\" run_test bash ./test_hmm_folio.sh"
		c = 1
	}
	END { exit !(u && c) }' "$t/$MM/run_vmtests.sh" >"$g/$MM/run_vmtests.sh" ||
		die "$t/$MM/run_vmtests.sh has no hmm category to add ours next to"
	grep -h '^CONFIG_' "$tests/config" | while read -r l; do
		grep -qx "$l" "$g/$MM/config" 2>/dev/null || echo "$l"
	done >>"$g/$MM/config"
	# 7.3's mm/.gitignore ignores all but sources: add only what it does not.
	for p in $PROGS; do
		git -C "$g" check-ignore -q "$MM/$p" || echo "$p"
	done >>"$g/$MM/.gitignore"
	# Forced: hmm-folio.mk is no source to an allow-list .gitignore.
	gitq "$g" add -A -f
	gitq "$g" commit -q -F - <<-EOF
	selftests/mm: add hmm-folio, device-private large folio lifecycle tests

	Drive test_hmm to migrate THPs to device-private memory, free them
	there, reuse that memory at other orders and fault it back, checking
	every page's data, the device folios' invariants and the kernel log
	after every step. They run as the hmm_folio category of run_vmtests.sh
	(ksft_hmm_folio.sh), which loads test_hmm, runs the hmm-folio-*
	programs (THP lifecycle, reuse at other orders, the extension's
	ioctls, pinned I/O, NUMA policy, two devices, a seeded stress and
	module unload/reload) and requires the module to unload. The tests
	that need the lib/test_hmm extension skip without it.

	Signed-off-by: hmm-folio developer <dev@hmm-folio.invalid>
	EOF
}

base_of() { git -C "$1" rev-list --max-parents=0 HEAD; }

install() {
	local t=$1 tmp
	check_tree "$t"
	[ ! -f "$t/$STATE" ] || uninstall "$t"
	tmp=$(new_scratch)
	make_series "$t" "$tmp/g"
	gitq "$tmp/g" diff "$(base_of "$tmp/g")" HEAD >"$tmp/install.patch"
	patch -p1 -d "$t" --dry-run -s -f <"$tmp/install.patch" >/dev/null ||
		die "the install patch does not apply to $t (edited since?)"
	patch -p1 -d "$t" -s -f <"$tmp/install.patch"
	cp "$tmp/install.patch" "$t/$STATE"
	log "installed into $t ($(grep -c '^diff --git' "$t/$STATE") files; undo: make uninstall-kselftest KSRC=$t)"
}

uninstall() {
	local t=$1 p
	[ -f "$t/$STATE" ] || die "nothing installed in $t (no $STATE)"
	patch -R -p1 -d "$t" --dry-run -s -f <"$t/$STATE" >/dev/null ||
		die "$t changed since the install: $STATE no longer reverts"
	patch -R -p1 -d "$t" -s -f -E <"$t/$STATE"
	rm -f "$t/$STATE"
	for p in $PROGS; do rm -f "$t/$MM/$p"; done
	log "removed from $t"
}

patches() {
	local t=$1 out=$2 tmp
	check_tree "$t"
	[ ! -f "$t/$STATE" ] || die "$t has the tests installed: make uninstall-kselftest first"
	tmp=$(new_scratch)
	make_series "$t" "$tmp/g"
	mkdir -p "$out"
	gitq "$tmp/g" format-patch -o "$(realpath "$out")" --no-signature \
		"$(base_of "$tmp/g")..HEAD"
}

# kselftest-install layout made by the tree's own "make install" of
# tools/testing/selftests, from a copy of KSRC with the tests installed
# (hard links for the tree, a real copy of tools/, which the build writes
# into; KSRC itself is not written to).
tarball() {
	local t=$1 kbuild=$2 out=$3 mod=${4:-} tmp
	check_tree "$t"
	[ -f "$kbuild/usr/include/linux/mman.h" ] ||
		die "$kbuild has no installed uapi headers: make headers there first"
	tmp=$(new_scratch)
	log "copying $t (hard links; tools/ copied)"
	cp -al "$t" "$tmp/tree"
	rm -rf "$tmp/tree/tools"
	cp -a "$t/tools" "$tmp/tree/tools"
	[ -f "$t/$STATE" ] || install "$tmp/tree"
	if [ -z "$mod" ]; then
		log "building test_hmm.ko for $kbuild"
		"$repo/selftests/runner/build-module.sh" "$t" "$kbuild" "$tmp/module" >&2
		mod=$tmp/module
	fi
	# The tree's "make install" copies with rsync (selftests/lib.mk).
	need_tools rsync:rsync
	log "make -C tools/testing/selftests TARGETS=mm install"
	make -C "$tmp/tree/tools/testing/selftests" TARGETS=mm -j"$(nproc)" \
		O="$tmp/obj" KHDR_INCLUDES="-isystem $kbuild/usr/include" \
		KSFT_INSTALL_PATH="$tmp/install" install >"$tmp/make.log" 2>&1 || {
		cat "$tmp/make.log" >&2
		die "the tree's make install of its mm selftests failed; its first error:
$(grep -m 3 -E 'error:|Error [0-9]|No such file|not found|cannot find' "$tmp/make.log" ||
	tail -n 3 "$tmp/make.log")"
	}
	cat "$tmp/make.log" >&2
	for p in $PROGS; do
		[ -x "$tmp/install/mm/$p" ] || die "$p was not built"
	done
	cp "$mod/lib/test_hmm.ko" "$tmp/install/mm/"
	tar -czf "$out" -C "$tmp/install" .
	log "$out: $(grep -c . "$tmp/install/kselftest-list.txt") tests in kselftest-list.txt, test_hmm.ko for $(make -s -C "$t" kernelversion)"
}

[ $# -ge 2 ] || usage
cmd=$1
tree=$(realpath "$2")
case $cmd in
install|uninstall) [ $# -eq 2 ] || usage; $cmd "$tree" ;;
patches) [ $# -eq 3 ] || usage; patches "$tree" "$3" ;;
tarball)
	[ $# -ge 4 ] || usage
	tarball "$tree" "$(realpath "$3")" "$(realpath -m "$4")" "${5:+$(realpath "$5")}" ;;
*) usage ;;
esac
