#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# The runner's own check: a guest that panics, oopses, WARNs, hangs or runs
# out of memory must give a FAIL verdict (exit 1) that shows what happened,
# within a bounded time, never a host hang or a PASS.
#
# usage: inject.sh [run_tests.sh options] [KIND ...]   (default: all kinds)
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
opts=()
kinds=()
while [ $# -gt 0 ]; do
	case $1 in
	panic|oops|warn|hang|oom) kinds+=("$1"); shift ;;
	--raw) opts+=("$1"); shift ;;
	*) opts+=("$1" "${2:-}"); shift 2 ;;
	esac
done
[ ${#kinds[@]} -gt 0 ] || kinds=(panic oops warn hang oom)

# What the verdict must show for each kind.
declare -A expect=(
	[panic]='sysrq triggered crash'
	[oops]='kernel BUG at drivers/misc/lkdtm'
	[warn]='WARNING:'
	[hang]='guest timed out'
	[oom]='Out of memory:'
)
out=$(mktemp -d /tmp/hmm-folio-inject.XXXXXX)
bad=0
for k in "${kinds[@]}"; do
	start=$SECONDS
	# One short program first. The hang needs a short guest timeout; the
	# others must not meet it: filling 2 GB for the OOM killer under TCG
	# took 225 s in CI, and more than 300 s with three other guests on
	# the CPUs.
	timeout=300
	[ "$k" != hang ] || timeout=90
	[ "$k" != oom ] || timeout=900
	"$repo/run_tests.sh" "${opts[@]}" --inject "$k" --filter 'thp.munmap_read.*' \
		--timeout $timeout --output "$out/$k" >"$out/$k.log" 2>&1
	rc=$?
	if [ $rc -eq 1 ] && grep -qF "${expect[$k]}" "$out/$k.log" &&
	   grep -q 'last KTAP line\|splat' "$out/$k.log"; then
		verdict=ok
	else
		verdict=WRONG
		bad=$((bad + 1))
		tail -n 15 "$out/$k.log"
	fi
	printf 'inject %-6s exit %d in %3ss: %s\n' "$k" $rc $((SECONDS - start)) $verdict
done
echo "logs: $out"
echo "inject: $(( ${#kinds[@]} - bad )) passed, $bad failed"
[ $bad -eq 0 ]
