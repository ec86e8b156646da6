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

# Whether the verdict in $1 has a failure that one of the mutation's
# "Caught-by: GLOB KIND[|KIND...]" lines names: a test (or "console", or
# "*rmmod*" for the module unload) matching GLOB that failed that way
# (assert, splat, hang, died). A run that failed only by the host's
# timeout, by an infrastructure error or in other tests is not caught.
caught_as_declared() {
	local glob kinds line name kind
	while read -r glob kinds; do
		while IFS= read -r line; do
			kind=${line##* }
			name=${line% *}
			# shellcheck disable=SC2053 # GLOB is a glob
			[[ $name == $glob ]] && [[ "|$kinds|" == *"|$kind|"* ]] && return 0
		done < <(sed -n 's/^caught-by: //p' "$1")
	done <<<"$caught_by"
	return 1
}

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
	if [ "$got" = FAIL ] && [ "$expect" = FAIL ] && [ -n "$caught_by" ] &&
	   ! caught_as_declared "$out/$name.log"; then
		got="FAIL(not as declared)"
		failed="declared: $(echo "$caught_by" | paste -sd ';' -); got: $(
			sed -n 's/^caught-by: //p' "$out/$name.log" | head -n 4 | paste -sd ';' -)"
	fi
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

caught_by=
verdict unmodified PASS
for m in "${muts[@]}"; do
	expect=$(sed -n 's/^Expect: *\([A-Z]*\).*/\1/p' "$m" | head -n 1)
	fixes=$(sed -n 's/^Fixes-known-bugs: *//p' "$m" | head -n 1)
	caught_by=$(sed -n 's/^Caught-by: *//p' "$m")
	if [ "${expect:-FAIL}" = FAIL ] && [ -z "$caught_by" ]; then
		bad=$((bad + 1))
		summary+=("$(printf '%-32s no Caught-by: line: which tests must catch it, and how?' \
			"$(basename "$m" .patch)")")
		continue
	fi
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
