# SPDX-License-Identifier: GPL-2.0
#
#   make test    run the suite in QEMU on a freshly built debug kernel
#                (run_tests.sh; RUN_ARGS="--filter ... --ksrc ..." passes options)
#   make unit    unit tests of the host side (verdict, options)
#   make style   checkpatch --strict on lib/test_hmm patches and the C sources
#   make check   the project's own checks: unit tests, the suite in QEMU, style
#   make prove   the suite must pass on the unmodified kernel and fail on each
#                kernel of selftests/mutations (MUTATIONS="a.patch b.patch")
#   make tests KSRC=DIR   only build the test programs against a kernel tree

RUN_ARGS ?=
PYTHON ?= python3
# The kernel tree run_tests.sh fetches by default (its checkpatch.pl).
KSRC ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/hmm-folio/src/linux-source-7.2
CHECKPATCH = $(KSRC)/scripts/checkpatch.pl
# Idioms of kselftest_harness tests that checkpatch flags: FIXTURE_DATA(x) *p
# (SPACING), table macros (COMPLEX_MACRO, PARENTHESIS_ALIGNMENT), uint64_t in
# userspace (PREFER_KERNEL_TYPES, BIT_MACRO, ARRAY_SIZE: no kernel headers).
SELFTEST_IGNORE = SPDX_LICENSE_TAG,BIT_MACRO,PREFER_KERNEL_TYPES,COMPLEX_MACRO,$\
	SPACING,ARRAY_SIZE,PARENTHESIS_ALIGNMENT

all: check

test:
	./run_tests.sh $(RUN_ARGS)

unit:
	cd selftests/runner && $(PYTHON) -m unittest -v test_runner

check: unit test style

style:
	@test -x $(CHECKPATCH) || { echo "no $(CHECKPATCH): run ./run_tests.sh once or set KSRC"; exit 1; }
	@for p in lib/test_hmm/*.patch lib/test_hmm/*/*.patch; do \
		$(CHECKPATCH) --strict --no-tree -q - <$$p || exit 1; done
	@$(CHECKPATCH) --strict --no-tree -q --ignore $(SELFTEST_IGNORE) \
		-f selftests/mm/*.c selftests/mm/*.h
	@echo "style: lib/test_hmm patches and selftests/mm sources are checkpatch clean"

prove:
	selftests/runner/prove.sh $(RUN_ARGS) $(MUTATIONS)

tests:
	$(MAKE) -C selftests/mm KSRC=$(KSRC)

clean:
	$(MAKE) -C selftests/mm KSRC=$(KSRC) clean 2>/dev/null || true

.PHONY: all test unit style check prove tests clean
