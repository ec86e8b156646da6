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
# prints the mutant build dir on stdout (last line); build output on stderr.
set -euo pipefail

ksrc=$1
kbuild=$2
patchfile=$(realpath "$3")
jobs=$4
name=$(basename "$patchfile" .patch)
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

files=$(sed -n 's|^+++ b/\([^[:space:]]*\).*|\1|p' "$patchfile")
[ -n "$files" ] || err "$patchfile: no '+++ b/...' lines: not a -p1 patch"
patch -p1 -d "$ksrc" --dry-run --silent <"$patchfile" >&2 ||
	err "$patchfile does not apply to $ksrc"

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
patch -p1 -d "$ksrc" --silent --no-backup-if-mismatch <"$patchfile" >&2
make -C "$ksrc" O="$mbuild" -j"$jobs" bzImage modules >&2
restore
echo "$mbuild"
