#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Device-private large folio tests (hmm-folio) in a kernel tree's mm
# selftests: run_vmtests.sh -t hmm_folio. Loads test_hmm (a test_hmm.ko next
# to this script first, the module built for the kernel with the lib/test_hmm
# patches, as a kselftest tarball ships it; else modprobe), runs the test
# programs and unloads the module. An unload that fails or takes more than
# 30 s (a leaked device page reference) fails the run. HMM_FOLIO_SEED and
# HMM_FOLIO_DURATION reach hmm-folio-stress (default: a new seed, 60 s; the
# seed is printed).

ksft_skip=4
here=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
progs="hmm-folio-thp hmm-folio-reuse hmm-folio-ioctl hmm-folio-pin hmm-folio-numa
	hmm-folio-twodev hmm-folio-fork hmm-folio-sizes hmm-folio-perm hmm-folio-race
	hmm-folio-stress hmm-folio-teardown"

if [ "$(id -u)" -ne 0 ]; then
	echo "$0: must be run as root"
	exit $ksft_skip
fi

# hmm-folio-teardown unloads and reloads the module from this file.
if [ -f "$here/test_hmm.ko" ]; then
	HMM_FOLIO_MODULE=${HMM_FOLIO_MODULE:-$here/test_hmm.ko}
else
	HMM_FOLIO_MODULE=${HMM_FOLIO_MODULE:-$(modinfo -n test_hmm 2>/dev/null)}
fi
export HMM_FOLIO_MODULE

loaded=
if ! grep -q '^test_hmm ' /proc/modules; then
	if [ -f "$here/test_hmm.ko" ]; then
		insmod "$here/test_hmm.ko" || exit 1
	elif ! modprobe test_hmm; then
		echo "$0: no test_hmm module: CONFIG_TEST_HMM=m is needed"
		exit $ksft_skip
	fi
	loaded=1
fi

set -- $progs
echo "TAP version 13"
echo "1..$(($# + 1))"
n=0
rc=0
for prog in $progs; do
	n=$((n + 1))
	"$here/$prog" 2>&1 | sed 's/^/# /'
	case ${PIPESTATUS[0]} in
	0) echo "ok $n $prog" ;;
	$ksft_skip) echo "ok $n $prog # SKIP" ;;
	*) echo "not ok $n $prog"; rc=1 ;;
	esac
done

n=$((n + 1))
if [ -z "$loaded" ]; then
	echo "ok $n rmmod test_hmm # SKIP test_hmm was loaded before"
	exit $rc
fi
rmmod test_hmm &
pid=$!
for _ in $(seq 30); do
	kill -0 $pid 2>/dev/null || break
	sleep 1
done
if kill -0 $pid 2>/dev/null; then
	echo "not ok $n rmmod test_hmm # TIMEOUT 30 seconds"
	rc=1
elif wait $pid; then
	echo "ok $n rmmod test_hmm"
else
	echo "not ok $n rmmod test_hmm"
	rc=1
fi
exit $rc
