# SPDX-License-Identifier: GPL-2.0
#
#   make test    run the suite in QEMU on a freshly built debug kernel
#                (run_tests.sh; RUN_ARGS="--filter ... --ksrc ..." passes options)
#   make unit    unit tests of the host side (verdict, options)
#   make check   the project's own checks: unit tests, then the suite in QEMU
#   make tests KSRC=DIR   only build the test programs against a kernel tree

RUN_ARGS ?=
PYTHON ?= python3

all: check

test:
	./run_tests.sh $(RUN_ARGS)

unit:
	cd selftests/runner && $(PYTHON) -m unittest -v test_runner

check: unit test

tests:
	$(MAKE) -C selftests/mm KSRC=$(KSRC)

clean:
	$(MAKE) -C selftests/mm KSRC=$(KSRC) clean 2>/dev/null || true

.PHONY: all test unit check tests clean
