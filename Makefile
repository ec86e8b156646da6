# SPDX-License-Identifier: GPL-2.0
#
#   make test    run the suite in QEMU on a freshly built debug kernel
#                (run_tests.sh; RUN_ARGS="--filter ... --ksrc ..." passes options)
#   make unit    unit tests of the host side (verdict, options)
#   make style   checkpatch --strict on lib/test_hmm patches, the kernel fixes
#                and the C sources; git am of the fixes onto KSRC
#   make check   the project's own checks: unit tests, the suite in QEMU, the
#                runner's verdicts on injected guest faults, style
#   make inject  only the runner's check: a guest that panics, oopses, WARNs,
#                hangs or runs out of memory must give FAIL (INJECT="oom ...")
#   make prove   the suite must pass on the unmodified kernel and fail on each
#                kernel of selftests/mutations, and the kernel fixes must fix
#                every known bug (MUTATIONS="a.patch b.patch")
#   make repro   boot the kernel and run the reproducers of the kernel bugs
#                this suite found (selftests/fixes): exit 1 while one is
#                there; make repro-fixed: the same with the fixes applied
#   make tests KSRC=DIR   only build the test programs against a kernel tree
#   make install-kselftest KSRC=DIR    add the tests to DIR's selftests/mm
#                         (with the lib/test_hmm series); undone by
#   make uninstall-kselftest KSRC=DIR
#   make kselftest-patches KSRC=DIR [PATCHES=dir]   the same as a git am series
#   make kselftest-tarball KSRC=DIR KBUILD=DIR [TARBALL=file]
#                         kselftest-install tarball: DIR's mm tests, ours and
#                         test_hmm.ko for the kernel built in KBUILD

RUN_ARGS ?=
PYTHON ?= python3
# The kernel tree run_tests.sh fetches by default (its checkpatch.pl).
KSRC ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/hmm-folio/src/linux-source-7.2
CHECKPATCH = $(KSRC)/scripts/checkpatch.pl
# Idioms of kselftest_harness tests that checkpatch flags: FIXTURE_DATA(x) *p
# (SPACING), table macros (COMPLEX_MACRO, PARENTHESIS_ALIGNMENT), uint64_t in
# userspace (PREFER_KERNEL_TYPES, BIT_MACRO, ARRAY_SIZE: no kernel headers),
# ENOSYS (what a kernel without a syscall answers, which a test must tell),
# macros that end a test as the harness's SKIP() and ASSERT_*() do
# (MACRO_WITH_FLOW_CONTROL; MACRO_ARG_REUSE: the reason a probe just set).
SELFTEST_IGNORE = SPDX_LICENSE_TAG,BIT_MACRO,PREFER_KERNEL_TYPES,COMPLEX_MACRO,$\
	SPACING,ARRAY_SIZE,PARENTHESIS_ALIGNMENT,ENOSYS,MACRO_WITH_FLOW_CONTROL,$\
	MACRO_ARG_REUSE

all: check

test:
	./run_tests.sh $(RUN_ARGS)

unit:
	cd selftests/runner && $(PYTHON) -m unittest -v test_runner

check: unit test inject style

style:
	@test -x $(CHECKPATCH) || { echo "no $(CHECKPATCH): run ./run_tests.sh once or set KSRC"; exit 1; }
	@for p in lib/test_hmm/*.patch lib/test_hmm/*/*.patch; do \
		$(CHECKPATCH) --strict --no-tree -q - <$$p || exit 1; done
	@# The Fixes: ids are upstream's: this tree has no kernel history to
	@# look them up in (selftests/fixes/README says where they were found).
	@for p in selftests/fixes/patches/*.patch selftests/fixes/patches/*/*.patch; do \
		$(CHECKPATCH) --strict --no-tree -q --ignore UNKNOWN_COMMIT_ID - <$$p || \
		exit 1; done
	@selftests/fixes/am-check.sh $(KSRC)
	@$(CHECKPATCH) --strict --no-tree -q --ignore $(SELFTEST_IGNORE) \
		-f selftests/mm/*.c selftests/mm/*.h selftests/fixes/*/repro.c
	@echo "style: lib/test_hmm and kernel fix patches, selftests/mm sources and reproducers are checkpatch clean"

inject:
	selftests/runner/inject.sh $(RUN_ARGS) $(INJECT)

repro:
	./run_tests.sh --repro $(RUN_ARGS)

repro-fixed:
	./run_tests.sh --repro --mutation selftests/fixes/patches $(RUN_ARGS)

prove:
	selftests/runner/prove.sh $(RUN_ARGS) $(MUTATIONS)

tests:
	$(MAKE) -C selftests/mm KSRC=$(KSRC)

PATCHES ?= kselftest-patches
TARBALL ?= kselftest.tar.gz
KSELFTEST = selftests/kselftest/kselftest-install.sh
# Never the cached Debian tree by default: it is shared by every run.
need_ksrc = $(if $(filter command line environment,$(origin KSRC)),,$\
	$(error $@ needs KSRC=DIR, the kernel tree to work on))

install-kselftest uninstall-kselftest:
	$(need_ksrc)
	$(KSELFTEST) $(@:-kselftest=) $(KSRC)

kselftest-patches:
	$(need_ksrc)
	$(KSELFTEST) patches $(KSRC) $(PATCHES)

kselftest-tarball:
	$(need_ksrc)
	$(if $(KBUILD),,$(error $@ needs KBUILD=DIR: a kernel build of KSRC, $\
		e.g. one run_tests.sh made in ~/.cache/hmm-folio/build))
	$(KSELFTEST) tarball $(KSRC) $(KBUILD) $(TARBALL)

clean:
	$(MAKE) -C selftests/mm KSRC=$(KSRC) clean 2>/dev/null || true

.PHONY: all test unit style check inject prove repro repro-fixed tests clean \
	install-kselftest \
	uninstall-kselftest kselftest-patches kselftest-tarball
