#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Apply the lib/test_hmm patch series that fits a tree's lib/test_hmm.c.
#
# usage: apply.sh [--dry-run] DIR [VERSION]
# DIR holds lib/test_hmm.c and lib/test_hmm_uapi.h (a kernel tree, or a copy
# of those two files); VERSION only names the tree in messages. --dry-run
# only tells which series would apply, leaving DIR as it is.
#
# One series per kernel version the lib side changed in: series (Linux 7.2)
# and 7.3/series (7.3 adds HMM_DMIRROR_READ_UNLOCKED to the ioctl dispatch of
# patch 0001). Each line of a series names a patch relative to the series
# file. A series is used only if every patch applies without fuzz: a hunk
# that needs fuzz may land next to code it was not written for (7.2's 0001
# applies to 7.3 with fuzz and loses HMM_DMIRROR_READ_UNLOCKED). Prints the
# series used on stdout.
#
# A test_hmm without HMM_DMIRROR_FLAGS is older than device-private large
# folios: the ioctl came in the series that taught test_hmm to migrate THPs
# to device memory ("lib/test_hmm: add large page allocation failure
# testing", Balbir Singh, 2025). Such a tree gets its own message (exit 3):
# no rebase of ours can make it run these tests. Without patch(1) it says
# so (exit 4) rather than that no series applies.
set -euo pipefail

dry=
[ "${1:-}" != --dry-run ] || { dry=1; shift; }
[ $# -ge 1 ] || { echo "usage: apply.sh [--dry-run] DIR [VERSION]" >&2; exit 2; }
dir=$1
version=${2:-$(make -s -C "$dir" kernelversion 2>/dev/null || echo unknown)}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
command -v patch >/dev/null ||
	{ echo "lib/test_hmm: apply.sh needs patch(1): apt-get install patch" >&2; exit 4; }

[ -f "$dir/lib/test_hmm.c" ] && [ -f "$dir/lib/test_hmm_uapi.h" ] ||
	{ echo "lib/test_hmm: $dir has no lib/test_hmm.c and lib/test_hmm_uapi.h" >&2; exit 1; }
grep -q 'define HMM_DMIRROR_FLAGS' "$dir/lib/test_hmm_uapi.h" || {
	echo "lib/test_hmm: the test_hmm of $version has no HMM_DMIRROR_FLAGS: it is older
than device-private large folios (THP migration to device memory), which
these tests are about. Use a kernel that has them (Linux 7.2 or 7.3 here)." >&2
	exit 3
}

# "<series file> <patch>..." with the patches as absolute paths.
patches_of() {
	local s=$1 d p
	d=$(dirname "$s")
	while read -r p; do
		case $p in ''|'#'*) continue ;; esac
		echo "$d/$p"
	done <"$s"
}

# The version a series is made for, from its "# Linux X.Y" first line.
made_for() { sed -n '1s/^# *for Linux \([^ ]*\).*/\1/p' "$1"; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tried=
for s in "$here/series" "$here"/*/series; do
	[ -f "$s" ] || continue
	rm -rf "$tmp/lib" && mkdir "$tmp/lib"
	cp "$dir/lib/test_hmm.c" "$dir/lib/test_hmm_uapi.h" "$tmp/lib/"
	bad=
	for p in $(patches_of "$s"); do
		if ! patch -p1 -d "$tmp" --fuzz=0 --silent --no-backup-if-mismatch \
			-r - <"$p" >/dev/null 2>&1; then
			bad=$(basename "$p")
			break
		fi
	done
	if [ -z "$bad" ]; then
		[ -n "$dry" ] || for p in $(patches_of "$s"); do
			patch -p1 -d "$dir" --fuzz=0 --silent --no-backup-if-mismatch \
				-r - <"$p" >/dev/null
		done
		echo "${s#"$here"/}"
		exit 0
	fi
	tried="$tried
  Linux $(made_for "$s") (lib/test_hmm/${s#"$here"/}): $bad does not apply"
done
echo "lib/test_hmm: no patch series applies to the lib/test_hmm.c of $version:$tried
The series are made for the test_hmm of the kernels named above; use one of
those trees (run_tests.sh --series 7.2 or 7.3) or rebase the series." >&2
exit 1
