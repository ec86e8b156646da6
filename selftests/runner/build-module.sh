#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Build test_hmm.ko from the kernel tree's lib/test_hmm.c with our patch
# series (lib/test_hmm/series) applied, out of tree against a kernel build.
#
# usage: build-module.sh KSRC KBUILD OUTDIR
# leaves OUTDIR/lib/{test_hmm.c,test_hmm_uapi.h,test_hmm.ko}; the tests
# include OUTDIR/lib/test_hmm_uapi.h as <lib/test_hmm_uapi.h>.
set -euo pipefail

ksrc=$1
kbuild=$2
out=$3
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
series=$repo/lib/test_hmm/series

err() { echo "build-module: $*" >&2; exit 1; }

rm -rf "$out"
mkdir -p "$out/lib"
cp "$ksrc/lib/test_hmm.c" "$ksrc/lib/test_hmm_uapi.h" "$out/lib/" ||
	err "$ksrc has no lib/test_hmm.c"
cp "$repo/lib/test_hmm/Kbuild" "$out/lib/"

if [ -f "$series" ]; then
	while read -r p; do
		case $p in ''|'#'*) continue ;; esac
		patch -p1 -d "$out" --silent --no-backup-if-mismatch \
			<"$repo/lib/test_hmm/$p" ||
			err "lib/test_hmm/$p does not apply to the lib/test_hmm.c of $(make -s -C "$ksrc" kernelversion) (the series is made for Linux 7.2)"
	done <"$series"
fi
make -C "$ksrc" O="$kbuild" M="$out/lib" modules
