/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The tree's kselftest_harness.h, for the tree's hmm-tests only (the
 * selftests/mm Makefile puts this directory first on its include path):
 * with HMM_FOLIO_ANCHOR_TIMEOUT defined, the harness's default test timeout
 * is that many seconds instead of 30. run_tests.sh --debug full defines it:
 * under lockdep and KASAN in TCG the same tests run ten times slower, and
 * hmm-tests gives its tests no timeout of their own.
 */
#include_next "kselftest_harness.h"

#ifdef HMM_FOLIO_ANCHOR_TIMEOUT
#undef TEST_TIMEOUT_DEFAULT
#define TEST_TIMEOUT_DEFAULT HMM_FOLIO_ANCHOR_TIMEOUT
#endif
