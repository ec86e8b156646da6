#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Build test_hmm.ko from the kernel tree's lib/test_hmm.c with our patch
# series applied (lib/test_hmm/apply.sh picks the one made for the tree),
# out of tree against a kernel build.
#
# usage: build-module.sh [--stock] KSRC KBUILD OUTDIR [MAKEVAR=VALUE...]
# leaves OUTDIR/lib/{test_hmm.c,test_hmm_uapi.h,test_hmm.ko}; the tests
# include OUTDIR/lib/test_hmm_uapi.h as <lib/test_hmm_uapi.h>. --stock
# builds the tree's test_hmm.c as it is, without our series. The MAKEVARs
# go to kbuild (--coverage: GCOV_PROFILE_test_hmm.o=y).
set -euo pipefail

stock=
[ "${1:-}" != --stock ] || { stock=1; shift; }
ksrc=$1
kbuild=$2
out=$3
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

err() { echo "build-module: $*" >&2; exit 1; }

rm -rf "$out"
mkdir -p "$out/lib"
cp "$ksrc/lib/test_hmm.c" "$ksrc/lib/test_hmm_uapi.h" "$out/lib/" ||
	err "$ksrc has no lib/test_hmm.c"
cp "$repo/lib/test_hmm/Kbuild" "$out/lib/"

if [ -n "$stock" ]; then
	echo "build-module: the tree's own test_hmm.c, no patches"
else
	used=$("$repo/lib/test_hmm/apply.sh" "$out" "$(make -s -C "$ksrc" kernelversion)") ||
		err "the lib/test_hmm patches do not apply (see above)"
	echo "build-module: applied lib/test_hmm/$used"
fi
make -C "$ksrc" O="$kbuild" M="$out/lib" "${@:4}" modules
