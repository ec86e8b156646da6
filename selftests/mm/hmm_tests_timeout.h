/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Forced into the tree's hmm-tests with -include when the build gives
 * HMM_FOLIO_ANCHOR_TIMEOUT (run_tests.sh --debug full: under lockdep and
 * KASAN in TCG the same tests run ten times slower, and hmm-tests gives its
 * tests no timeout of their own). It includes the tree's harness first and
 * makes the harness's default test timeout that many seconds instead of 30;
 * hmm-tests.c's own include of the harness is then a no-op (its guard).
 */
#include "kselftest_harness.h"

#undef TEST_TIMEOUT_DEFAULT
#define TEST_TIMEOUT_DEFAULT HMM_FOLIO_ANCHOR_TIMEOUT
