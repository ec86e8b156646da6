#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Proof of detection: the suite must pass on the unmodified kernel and fail
# on every kernel with a mutation of selftests/mutations applied.
#
# usage: prove.sh [run_tests.sh options] [--] [MUTATION.patch|SERIES-DIR ...]
# (default: every selftests/mutations/*.patch and the kernel fixes,
# selftests/fixes/patches). Prints one line per kernel: verdict, time, the
# tests that failed; exits 0 only if every verdict is the expected one.
#
# A patch says what it expects in its header ("Expect: PASS", default FAIL;
# "Caught-by: GLOB KINDS"; "Fixes-known-bugs: ID ..."); a series directory
# says it in "# Expect: ..." lines of its series file.
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
opts=()
muts=()
while [ $# -gt 0 ]; do
	case $1 in
	--) shift; muts+=("$@"); break ;;
	*.patch) muts+=("$1"); shift ;;
	--raw|-h|--help) opts+=("$1"); shift ;;
	-*) opts+=("$1" "${2:-}"); shift 2 ;;
	*) [ -f "$1/series" ] || { echo "prove.sh: $1: no patch, no series directory" >&2; exit 2; }
	   muts+=("$1"); shift ;;
	esac
done
[ ${#muts[@]} -gt 0 ] ||
	muts=("$repo"/selftests/mutations/*.patch "$repo/selftests/fixes/patches")

out=$(mktemp -d /tmp/hmm-folio-prove.XXXXXX)
summary=()
declare -A failed_entry=()
# The last summary line is a failure.
mark_bad() { failed_entry[$(( ${#summary[@]} - 1 ))]=1; }

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
	summary+=("$(printf '%-32s expect %-4s got %-9s %4ss  %s' "$name" "$expect" "$got" \
		$((SECONDS - start)) "${failed:--}")")
	[ "$got" = "$expect" ] || { mark_bad; tail -n 5 "$out/$name.log"; }
}

# A fix ("Fixes-known-bugs: ID ...") must have the verdict in $1 say of each
# of those known bugs (after $2) "is fixed in this kernel" ($2 "fixed in":
# its tests passed, crashers.* too, which run with --crashers; or its
# reproducer did) or, for the reproducers on the unmodified kernel, "is in
# this kernel" ($2 "in").
reported() {
	local name=$1 want=$2 id
	shift 2
	for id in "$@"; do
		grep -q "^known bug $id (.*) is $want this kernel" "$out/$name.log" && continue
		mark_bad
		echo "    $name: the verdict does not say known bug $id is $want this kernel"
		summary[-1]="${summary[-1]}; known bug $id NOT reported $want this kernel"
	done
}

# The header lines of a patch, or the "# " lines of a series file.
meta() {
	if [ -d "$1" ]; then sed -n 's/^# *//p' "$1/series"; else cat "$1"; fi
}

caught_by=
repro_unmodified=
verdict unmodified PASS
for m in "${muts[@]}"; do
	name=$(basename "$m" .patch)
	[ ! -d "$m" ] || name=$(basename "$(dirname "$(realpath "$m")")")-$name
	expect=$(meta "$m" | sed -n 's/^Expect: *\([A-Z]*\).*/\1/p' | head -n 1)
	fixes=$(meta "$m" | sed -n 's/^Fixes-known-bugs: *//p' | head -n 1)
	caught_by=$(meta "$m" | sed -n 's/^Caught-by: *//p')
	if [ "${expect:-FAIL}" = FAIL ] && [ -z "$caught_by" ]; then
		summary+=("$(printf '%-32s no Caught-by: line: which tests must catch it, and how?' \
			"$name")")
		mark_bad
		continue
	fi
	# A kernel that must fail may stop at its first failing program.
	extra=
	[ "${expect:-FAIL}" != FAIL ] || extra=--fail-fast
	[ -z "$fixes" ] || extra=--crashers
	verdict "$name" "${expect:-FAIL}" --mutation "$m" $extra
	[ -n "$fixes" ] || continue
	# shellcheck disable=SC2086 # a list of ids
	reported "$name" "fixed in" $fixes
	# The reproducers: red without the fixes, green with them.
	caught_by=
	verdict "$name-repro" PASS --repro --mutation "$m"
	# shellcheck disable=SC2086
	reported "$name-repro" "fixed in" $fixes
	if [ -z "$repro_unmodified" ]; then
		repro_unmodified=1
		verdict unmodified-repro FAIL --repro
		# shellcheck disable=SC2086
		reported unmodified-repro in $fixes
	fi
done

echo
printf '%s\n' "${summary[@]}"
echo "logs: $out"
bad=${#failed_entry[@]}
echo "$(( ${#summary[@]} - bad )) passed, $bad failed"
[ "$bad" -eq 0 ]
