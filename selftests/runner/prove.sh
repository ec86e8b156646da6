#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Proof of detection: the suite must pass on the unmodified kernel and fail
# on every kernel with a mutation of selftests/mutations applied.
#
# usage: prove.sh [run_tests.sh options] [--] [MUTATION.patch ...]
# (default: every selftests/mutations/*.patch). Prints one line per kernel:
# verdict, time, the tests that failed; exits 0 only if every verdict is the
# expected one.
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
opts=()
muts=()
while [ $# -gt 0 ]; do
	case $1 in
	--) shift; muts+=("$@"); break ;;
	*.patch) muts+=("$1"); shift ;;
	--raw|-h|--help) opts+=("$1"); shift ;;
	*) opts+=("$1" "${2:-}"); shift 2 ;;
	esac
done
[ ${#muts[@]} -gt 0 ] || muts=("$repo"/selftests/mutations/*.patch)

out=$(mktemp -d /tmp/hmm-folio-prove.XXXXXX)
bad=0
summary=()

# verdict NAME EXPECTED [run_tests.sh args]
verdict() {
	local name=$1 expect=$2 start=$SECONDS rc got failed
	shift 2
	echo "==> $name (expect $expect)"
	"$repo/run_tests.sh" "${opts[@]}" --output "$out/$name" "$@" >"$out/$name.log" 2>&1
	rc=$?
	case $rc in
	0) got=PASS ;;
	1) got=FAIL ;;
	*) got="ERROR($rc)" ;;
	esac
	failed=$(grep '^FAIL  ' "$out/$name.log" | head -n 3 | sed 's/^FAIL  //' | paste -sd ';' -)
	[ "$got" = "$expect" ] || { bad=$((bad + 1)); tail -n 5 "$out/$name.log"; }
	summary+=("$(printf '%-32s expect %-4s got %-9s %4ss  %s' "$name" "$expect" "$got" \
		$((SECONDS - start)) "${failed:--}")")
}

# A fix ("Fixes-known-bugs: ID ..." in its header) must have the verdict
# report each of those known bugs fixed: its tests passed (crashers.* too,
# which run with --crashers).
fixed_check() {
	local name=$1 id
	shift
	for id in "$@"; do
		grep -q "^known bug $id (.*) is fixed in this kernel" "$out/$name.log" && continue
		bad=$((bad + 1))
		echo "    $name: the verdict does not report known bug $id fixed"
		summary[-1]="${summary[-1]}; known bug $id NOT reported fixed"
	done
}

verdict unmodified PASS
for m in "${muts[@]}"; do
	expect=$(sed -n 's/^Expect: *\([A-Z]*\).*/\1/p' "$m" | head -n 1)
	fixes=$(sed -n 's/^Fixes-known-bugs: *//p' "$m" | head -n 1)
	# A kernel that must fail may stop at its first failing program.
	extra=
	[ "${expect:-FAIL}" != FAIL ] || extra=--fail-fast
	[ -z "$fixes" ] || extra=--crashers
	verdict "$(basename "$m" .patch)" "${expect:-FAIL}" --mutation "$m" $extra
	# shellcheck disable=SC2086 # a list of ids
	[ -z "$fixes" ] || fixed_check "$(basename "$m" .patch)" $fixes
done

echo
printf '%s\n' "${summary[@]}"
echo "logs: $out"
total=$(( ${#muts[@]} + 1 ))
echo "$((total - bad)) passed, $bad failed"
[ $bad -eq 0 ]
