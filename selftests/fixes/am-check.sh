#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Check that the kernel fixes are a series git am takes: the files they
# touch are copied from a kernel tree into a scratch git repository, and
# the series that fits the tree (patches/series for 7.3, patches/7.2/series
# for 7.2: the first whose patches all git am) is applied with git am.
#
# usage: am-check.sh KSRC
# exit 0 and one line naming the series when one applies, 1 otherwise.
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: am-check.sh KSRC" >&2; exit 2; }
ksrc=$1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
command -v git >/dev/null || { echo "am-check: needs git" >&2; exit 3; }
[ -f "$ksrc/mm/memremap.c" ] || { echo "am-check: not a kernel tree: $ksrc" >&2; exit 2; }

# Not while mutant-build.sh has a mutation applied to the tree.
if [ -f "$ksrc/.hmmfolio-mutation.lock" ]; then
	exec 9<"$ksrc/.hmmfolio-mutation.lock"
	flock -s 9
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for s in "$here/patches/series" "$here"/patches/*/series; do
	mapfile -t patches < <(sed -e '/^#/d' -e '/^$/d' -e "s|^|$(dirname "$s")/|" "$s")
	rm -rf "$tmp/tree" && mkdir "$tmp/tree"
	for f in $(sed -n 's|^+++ b/\([^[:space:]]*\).*|\1|p' "${patches[@]}" | sort -u); do
		mkdir -p "$tmp/tree/$(dirname "$f")"
		cp "$ksrc/$f" "$tmp/tree/$f"
	done
	g=(git -C "$tmp/tree" -c user.name=am-check -c user.email=am-check@invalid)
	"${g[@]}" init -q && "${g[@]}" add -f . && "${g[@]}" commit -q -m base
	if "${g[@]}" am -q "${patches[@]}" >"$tmp/am.log" 2>&1; then
		echo "am-check: git am of ${s#"$here"/} (${#patches[@]} patches) works on $ksrc"
		exit 0
	fi
done
echo "am-check: no series of $here/patches goes in with git am on $ksrc" >&2
cat "$tmp/am.log" >&2
exit 1
