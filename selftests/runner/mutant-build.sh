#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Build a kernel with a mutation (a patch that re-introduces a bug) applied,
# incrementally: the pristine build dir is copied once per mutation, the
# patch is applied to the kernel source in place only for the duration of the
# make (under a lock), and the touched files are restored with their original
# mtimes afterwards, so the pristine build stays up to date.
#
# usage: mutant-build.sh KSRC KBUILD PATCH JOBS
# PATCH is one patch, or a directory holding a series: its "series" file or
# one of its */series (the patches it names, relative to it, one a line),
# the first whose every patch applies without fuzz, applied in order.
# prints the mutant build dir on stdout (last line); build output on stderr.
set -euo pipefail

ksrc=$1
kbuild=$2
patchfile=$(realpath "$3")
jobs=$4
if [ -d "$patchfile" ]; then
	name=$(basename "$(dirname "$patchfile")")-$(basename "$patchfile")
else
	name=$(basename "$patchfile" .patch)
fi
mbuild=$kbuild-mut-$name
lock=$ksrc/.hmmfolio-mutation.lock
backup=$ksrc/.hmmfolio-mutation.orig

err() { echo "mutant-build: $*" >&2; exit 1; }

# Put back what an interrupted earlier mutation left in the tree.
restore() {
	if [ -d "$backup" ]; then
		(cd "$backup" && find . -type f -print0) |
			while IFS= read -r -d '' f; do cp -p "$backup/$f" "$ksrc/$f"; done
		rm -rf "$backup"
	fi
}

exec 9>"$lock"
flock 9
restore
trap restore EXIT

# The patches of series file $1, as paths.
series_patches() {
	local p
	while read -r p; do
		case $p in ''|'#'*) continue ;; esac
		echo "$(dirname "$1")/$p"
	done <"$1"
}

# Whether patches $@ apply to a scratch copy of the files they touch.
applies() {
	local scratch f p ok=0
	scratch=$(mktemp -d)
	for f in $(sed -n 's|^+++ b/\([^[:space:]]*\).*|\1|p' "$@" | sort -u); do
		mkdir -p "$scratch/$(dirname "$f")"
		cp "$ksrc/$f" "$scratch/$f" 2>/dev/null || ok=1
	done
	for p in "$@"; do
		[ $ok = 0 ] || break
		patch -p1 -d "$scratch" --fuzz=0 --silent --no-backup-if-mismatch \
			<"$p" >/dev/null 2>&1 || ok=1
	done
	rm -rf "$scratch"
	return $ok
}

if [ -d "$patchfile" ]; then
	patches=()
	for s in "$patchfile/series" "$patchfile"/*/series; do
		[ -f "$s" ] || continue
		mapfile -t cand < <(series_patches "$s")
		if applies "${cand[@]}"; then
			patches=("${cand[@]}")
			echo "mutant-build: series ${s#"$patchfile"/}" >&2
			break
		fi
	done
	[ ${#patches[@]} -gt 0 ] || err "no series of $patchfile applies to $ksrc without fuzz"
else
	patches=("$patchfile")
	patch -p1 -d "$ksrc" --dry-run --silent <"$patchfile" >&2 ||
		err "$patchfile does not apply to $ksrc"
fi
files=$(sed -n 's|^+++ b/\([^[:space:]]*\).*|\1|p' "${patches[@]}" | sort -u)
[ -n "$files" ] || err "$patchfile: no '+++ b/...' lines: not a -p1 patch"

if [ ! -d "$mbuild" ]; then
	echo "mutant-build: copying $kbuild to $mbuild" >&2
	cp -a "$kbuild" "$mbuild.tmp"
	mv "$mbuild.tmp" "$mbuild"
fi

mkdir -p "$backup"
for f in $files; do
	mkdir -p "$backup/$(dirname "$f")"
	cp -p "$ksrc/$f" "$backup/$f"
done
for p in "${patches[@]}"; do
	patch -p1 -d "$ksrc" --silent --no-backup-if-mismatch <"$p" >&2
done
make -C "$ksrc" O="$mbuild" -j"$jobs" bzImage modules >&2
restore
echo "$mbuild"
