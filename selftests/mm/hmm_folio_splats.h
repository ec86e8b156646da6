/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What a kernel says when something went wrong: the one list of patterns
 * that both the tests' kernel log check (hmm_folio_util.c, per step) and
 * the host's verdict on the whole console (selftests/runner/verdict.py,
 * which reads this file) look for. A line matches a pattern when it
 * contains it. One HMM_FOLIO_SPLAT("...") per line, plain text only.
 */
/* BUG: covers KASAN, KFENCE, soft lockups, workqueue lockups, bad page map */
HMM_FOLIO_SPLAT("BUG:")
HMM_FOLIO_SPLAT("WARNING:")
HMM_FOLIO_SPLAT("kernel BUG at")
HMM_FOLIO_SPLAT("Oops")
HMM_FOLIO_SPLAT("general protection fault")
HMM_FOLIO_SPLAT("Kernel panic")
HMM_FOLIO_SPLAT("Call Trace:")
/* page state: mm/page_alloc.c, mm/debug.c, page_owner */
HMM_FOLIO_SPLAT("Bad page state")
HMM_FOLIO_SPLAT("Bad page map")
HMM_FOLIO_SPLAT("Bad rss-counter state")
HMM_FOLIO_SPLAT("page dumped because")
HMM_FOLIO_SPLAT("VM_BUG_ON")
/* a page table entry no swap device owns taken for swap: mm/swapfile.c */
HMM_FOLIO_SPLAT("Bad swap file entry")
HMM_FOLIO_SPLAT("Bad swap offset entry")
/* list and refcount corruption */
HMM_FOLIO_SPLAT("list_add corruption")
HMM_FOLIO_SPLAT("list_del corruption")
HMM_FOLIO_SPLAT("refcount_t:")
/* stalls and lockups of every flavour: rcu_preempt, rcu_sched, tasks */
HMM_FOLIO_SPLAT("self-detected stall")
HMM_FOLIO_SPLAT("detected stalls")
HMM_FOLIO_SPLAT("soft lockup")
HMM_FOLIO_SPLAT("hard LOCKUP")
HMM_FOLIO_SPLAT("workqueue lockup")
HMM_FOLIO_SPLAT("blocked for more than")
/* sanitizers and lockdep */
HMM_FOLIO_SPLAT("KASAN:")
HMM_FOLIO_SPLAT("KFENCE:")
HMM_FOLIO_SPLAT("UBSAN:")
HMM_FOLIO_SPLAT("possible circular locking dependency")
HMM_FOLIO_SPLAT("possible recursive locking")
HMM_FOLIO_SPLAT("inconsistent lock state")
HMM_FOLIO_SPLAT("suspicious RCU usage")
HMM_FOLIO_SPLAT("lock held when returning to user space")
HMM_FOLIO_SPLAT("suspected memory leak")
/* test_hmm with the lib/test_hmm patches: allocator misuse, leaks */
HMM_FOLIO_SPLAT("freeing free device memory")
HMM_FOLIO_SPLAT("still allocated after memunmap_pages")
HMM_FOLIO_SPLAT("dirty device folio freed")
HMM_FOLIO_SPLAT("Out of memory:")
