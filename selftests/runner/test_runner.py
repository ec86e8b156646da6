#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Unit tests of the host side of run_tests.sh: the verdict on canned guest
logs, the kernel log patterns, and the option handling of run_tests.sh."""

import io
import os
import re
import shutil
import subprocess
import sys
import unittest

import verdict

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DATA = os.path.join(HERE, "testdata")


def data(name):
    with open(os.path.join(DATA, name)) as f:
        return f.read()


def judge(ktap, console="clean.console", **kw):
    return judge_text(data(ktap), console, **kw)


def judge_text(ktap, console="clean.console", **kw):
    out = io.StringIO()
    res = verdict.judge(ktap, data(console), out=out, **kw)
    return res, out.getvalue()


class Verdict(unittest.TestCase):
    def test_pass_counts_subtests(self):
        (status, p, f, s), out = judge("pass.ktap", allow_skips=["crashers"])
        self.assertEqual((status, p, f, s), (0, 4, 0, 1), out)
        self.assertIn("SKIP  crashers.remove_migration_pmd_soft_dirty", out)
        self.assertIn("KNOWN known_bugs.hmm_absent_pmd_offset."
                      "device_read_after_mremap: known bug "
                      "hmm_absent_pmd_offset: page 32 holds page 0's tag", out)
        self.assertIn("skipped (1): known kernel bug that crashes", out)
        self.assertIn("known bug hmm_absent_pmd_offset (mm/hmm.c: "
                      "hmm_vma_handle_absent_pmd()) is in this kernel", out)
        self.assertTrue(out.rstrip().endswith("4 passed, 0 failed, 1 skipped"))

    def test_undeclared_skip_fails(self):
        """A SKIP whose reason the run did not declare is a FAIL naming the
        test and the reason (main passed it)."""
        (status, p, f, s), out = judge("pass.ktap")
        self.assertEqual((status, f, s), (1, 1, 0), out)
        self.assertIn("FAIL  crashers.remove_migration_pmd_soft_dirty."
                      "migrate_after_fork: skipped, 'known kernel bug", out)

    def test_skip_reasons_are_environment_only(self):
        for reason, allow, ok in [
            ("no test_hmm device (/dev/hmm_dmirror*): load test_hmm", [], False),
            ("test_hmm lacks the hmm-folio extension (lib/test_hmm patches not applied)",
             [], False),
            ("test_hmm lacks the hmm-folio extension (lib/test_hmm patches not applied)",
             ["stock-module"], True),
            ("HMM_DMIRROR_ALLOC_STATS failed", ["stock-module"], False),
            ("io_uring_queue_init failed", ["no-io_uring"], False),
            ("io_uring disabled (sysctl kernel.io_uring_disabled)", ["no-io_uring"], True),
            ("only one NUMA node: the tests need nodes 0 and 1", ["one-node"], True),
            ("only one NUMA node: the tests need nodes 0 and 1", [], False),
            ("", list(verdict.SKIP_REASONS), False),
        ]:
            with self.subTest(reason=reason, allow=allow):
                ktap = data("pass.ktap").replace(
                    "# SKIP known kernel bug that crashes DEBUG_VM kernels "
                    "(see the source); HMM_FOLIO_CRASHERS=1 runs it",
                    "# SKIP " + reason)
                res = verdict.judge(ktap, data("clean.console"),
                                    out=io.StringIO(), allow_skips=allow)
                self.assertEqual(res[0], 0 if ok else 1)

    def test_program_skipped_without_reason_fails(self):
        ktap = data("pass.ktap").replace("ok 2 selftests: mm: rmmod test_hmm",
                                         "ok 2 selftests: mm: hmm-folio-stress # SKIP")
        res = verdict.judge(ktap, data("clean.console"), out=io.StringIO(),
                            allow_skips=["crashers"])
        self.assertEqual(res[0], 1)

    def test_xfail_must_name_its_known_bug(self):
        """An XFAIL passes only as "known bug <id>: <symptom>" of a test that
        the id lists; XFAIL_ADD's bare XFAIL and an XPASS are FAILs."""
        name = "known_bugs.hmm_absent_pmd_offset.device_read_after_mremap"
        for result, ok in [
            (f"ok 4 {name} # XFAIL known bug hmm_absent_pmd_offset: page 32", True),
            (f"ok 4 {name} # XFAIL ", False),
            (f"ok 4 {name} # XFAIL unknown", False),
            (f"ok 4 {name} # XPASS unknown", False),
            (f"ok 4 {name} # XFAIL known bug migrate_device_range_stale_head: x",
             False),
            ("ok 4 thp.exit_read.lifecycle # XFAIL known bug "
             "hmm_absent_pmd_offset: page 32", False),
        ]:
            with self.subTest(result=result):
                ktap = re.sub(r"(?m)^# ok 4 .*$", "# " + result, data("pass.ktap"))
                res = verdict.judge(ktap, data("clean.console"),
                                    out=io.StringIO(), allow_skips=["crashers"])
                self.assertEqual(res[0], 0 if ok else 1, result)

    def test_known_bug_test_that_passes_says_fixed(self):
        ktap = re.sub(r"(?m)^# ok 4 (\S+) # XFAIL .*$", r"# ok 4 \1",
                      data("pass.ktap"))
        (status, p, f, s), out = judge_text(ktap, allow_skips=["crashers"])
        self.assertEqual(status, 0, out)
        self.assertIn("known bug hmm_absent_pmd_offset (mm/hmm.c: "
                      "hmm_vma_handle_absent_pmd()) is fixed in this kernel", out)

    def test_program_times_change_nothing(self):
        """The guest's "# hmmfolio: <prog> ran N s" before each result."""
        ktap = re.sub(r"(?m)^(ok|not ok) (\d+) selftests: mm: (\S+)",
                      r"# hmmfolio: \3 ran 7 s\n\g<0>", data("pass.ktap"))
        self.assertIn("# hmmfolio: ", ktap)
        self.assertEqual(judge_text(ktap, allow_skips=["crashers"])[0],
                         judge("pass.ktap", allow_skips=["crashers"])[0])

    def test_top_level_plan_is_kept(self):
        """A program missing from the stream fails the run."""
        ktap = data("pass.ktap").replace("1..2", "1..3", 1)
        (status, p, f, s), out = judge_text(ktap, allow_skips=["crashers"])
        self.assertEqual(status, 1)
        self.assertIn("the plan promised 3 test programs, 2 reported", out)

    def test_program_plan_is_kept_both_ways(self):
        for plan, msg in [("1..5", "1 of 5 tests never reported"),
                          ("1..3", "4 results for a plan of 3")]:
            with self.subTest(plan=plan):
                ktap = data("pass.ktap").replace("# 1..4", "# " + plan)
                (status, p, f, s), out = judge_text(ktap, allow_skips=["crashers"])
                self.assertEqual(status, 1)
                self.assertIn(msg, out)

    def test_failed_subtest_fails_the_run(self):
        (status, p, f, s), out = judge("fail.ktap")
        self.assertEqual((status, p, f), (1, 1, 1))
        self.assertIn("FAIL  thp.munmap_write.lifecycle", out)

    def test_splat_in_console_fails_a_green_run(self):
        (status, p, f, s), out = judge("pass.ktap", "splat.console",
                                       allow_skips=["crashers"])
        self.assertEqual(status, 1)
        self.assertEqual(f, 1)
        self.assertIn("kernel BUG at mm/memremap.c:512!", out)
        self.assertIn("page dumped because", out)

    def test_guest_death_is_a_failure_with_excerpt(self):
        (status, p, f, s), out = judge("died.ktap", "splat.console")
        self.assertEqual(status, 1)
        # 8 tests never reported, the guest died, the console has a splat.
        self.assertEqual((p, f), (1, 10))
        self.assertIn("died", out)
        self.assertIn("RUN           thp.munmap_write.lifecycle", out)
        self.assertIn("Kernel panic", out)

    def test_host_timeout(self):
        (status, p, f, s), out = judge("died.ktap", timed_out=True)
        self.assertEqual(status, 1)
        self.assertIn("timed out", out)
        self.assertIn("last console lines", out)

    def test_guest_side_timeout(self):
        (status, p, f, s), out = judge("timeout.ktap")
        self.assertEqual((status, p, f), (1, 1, 2))
        self.assertIn("TIMEOUT", out)

    def test_filter_without_match_is_usage(self):
        """Even with the module unload passing after the programs (main
        called that a green run)."""
        (status, p, f, s), out = judge("nomatch.ktap", allow_skips=["filter"])
        self.assertEqual(status, 2, out)
        self.assertIn("no test matches the filter", out)

    def test_kselftest_runner_output(self):
        """run_kselftest.sh -> run_vmtests.sh -> programs: the programs'
        tests count; "# Totals" after the last result is no program."""
        (status, p, f, s), out = judge("kselftest.ktap")
        self.assertEqual((status, p, f, s), (0, 3, 0, 1), out)
        self.assertIn("PASS  test_hmm_folio.sh", out)
        self.assertIn("ksft_hmm_folio.sh: 2 passed, 0 failed, 0 skipped", out)

    def test_kselftest_nested_plans_are_kept(self):
        """A program two levels down that reported fewer tests than its
        plan fails the run also in --kselftest mode (main counted only the
        totals)."""
        ktap = data("kselftest.ktap").replace("# # # 1..2", "# # # 1..3")
        (status, p, f, s), out = judge_text(ktap)
        self.assertEqual(status, 1, out)
        self.assertIn("ksft_hmm_folio.sh: a nested plan of 3 test(s) has 2", out)

    def test_kselftest_nested_xfail_must_name_its_known_bug(self):
        ktap = data("kselftest.ktap").replace(
            "# XFAIL known bug hmm_absent_pmd_offset: page 32 holds page 0's tag",
            "# XFAIL ")
        (status, p, f, s), out = judge_text(ktap)
        self.assertEqual(status, 1, out)
        self.assertIn("names no known bug's symptom", out)

    def test_kselftest_failed_wrapper_without_failed_test(self):
        ktap = data("kselftest.ktap").replace("# ok 1 test_hmm_folio.sh",
                                              "# not ok 1 test_hmm_folio.sh")
        res = verdict.judge(ktap, data("clean.console"), out=io.StringIO())
        self.assertEqual(res[0], 1)

    def test_no_ktap_at_all(self):
        out = io.StringIO()
        status = verdict.judge("", "", out=out)[0]
        self.assertEqual(status, 1)

    def test_patterns_from_one_source(self):
        """The guest-side kmsg scanner has no list of its own: it includes
        the header this verdict reads."""
        with open(os.path.join(REPO, "selftests/mm/hmm_folio_util.c")) as f:
            src = f.read()
        block = re.search(r"splat_patterns\[\] = \{(.*?)\};", src, re.S).group(1)
        self.assertEqual(re.findall(r'"([^"]*)"', block), ["hmm_folio_splats.h"])
        self.assertGreaterEqual(len(verdict.SPLAT_PATTERNS), 30)

    def test_every_splat_flavour_fails_a_green_run(self):
        """One console line of each kind of kernel report turns pass.ktap
        red (today's main missed the RCU, lockup, sanitizer, lockdep,
        kmemleak and rss-counter lines)."""
        for line in [
            "rcu: INFO: rcu_preempt self-detected stall on CPU",
            "rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:",
            "rcu: INFO: rcu_sched detected stalls on CPUs/tasks:",
            "rcu_tasks detected stalls on tasks:",
            "watchdog: BUG: soft lockup - CPU#1 stuck for 26s! [hmm-folio-stre:97]",
            "Watchdog detected hard LOCKUP on cpu 1",
            "BUG: workqueue lockup - pool cpus=0 node=0 flags=0x0 nice=0 stuck for 31s!",
            "BUG: Bad rss-counter state mm:000000001fe8c8ab type:MM_ANONPAGES val:512",
            "BUG: KASAN: slab-use-after-free in dmirror_devmem_free+0x2c/0x90",
            "BUG: KFENCE: out-of-bounds read in dmirror_fops_unlocked_ioctl+0x1a/0x40",
            "UBSAN: shift-out-of-bounds in mm/migrate_device.c:1415:9",
            "WARNING: possible circular locking dependency detected",
            "WARNING: possible recursive locking detected",
            "WARNING: inconsistent lock state",
            "WARNING: suspicious RCU usage",
            "INFO: task hmm-folio-reuse:212 blocked for more than 122 seconds.",
            "kmemleak: 3 new suspected memory leaks (see /sys/kernel/debug/kmemleak)",
            "page dumped because: VM_BUG_ON_FOLIO(folio_order(folio) != 9)",
            "Kernel panic - not syncing: Fatal exception",
            "list_del corruption. prev->next should be ffff8880, but was dead000000000100",
            "refcount_t: underflow; use-after-free.",
            "general protection fault, probably for non-canonical address 0xdead",
        ]:
            with self.subTest(line=line):
                console = "[    1.0] Linux version 7.2.13\n[   42.1] " + line + "\n"
                res = verdict.judge(data("pass.ktap"), console, out=io.StringIO(),
                                    allow_skips=["crashers"])
                self.assertEqual(res[0], 1)

    def test_unreadable_pattern_line_is_an_error(self):
        import tempfile
        with tempfile.NamedTemporaryFile("w", suffix=".h") as f:
            f.write('HMM_FOLIO_SPLAT("BUG:")\nHMM_FOLIO_SPLAT(BAD)\n')
            f.flush()
            with self.assertRaises(ValueError):
                verdict.read_splat_patterns(f.name)


class CaughtBy(unittest.TestCase):
    """How each failure happened, for make prove's Caught-by: check."""

    def caught(self, ktap, console="clean.console", **kw):
        (status, p, f, s), out = judge_text(ktap, console, **kw)
        return [l[len("caught-by: "):] for l in out.splitlines()
                if l.startswith("caught-by: ")]

    def test_kinds(self):
        fail = data("fail.ktap")
        self.assertEqual(self.caught(fail), ["thp.munmap_write.lifecycle assert"])
        splat = fail.replace("# hmm-folio-thp.c:120:lifecycle:Expected",
                             "# # kernel log during freeing the device THP: "
                             "WARNING: CPU: 1 PID: 99 at mm/memremap.c:441\n"
                             "# hmm-folio-thp.c:120:lifecycle:Expected")
        self.assertEqual(self.caught(splat), ["thp.munmap_write.lifecycle splat"])
        hang = fail.replace("# hmm-folio-thp.c:120:lifecycle:Expected 0 (0) == "
                            "hmm_folio_check(...) (3)",
                            "# thp.munmap_write.lifecycle: Test terminated by timeout")
        self.assertEqual(self.caught(hang), ["thp.munmap_write.lifecycle hang"])
        self.assertEqual(self.caught(data("died.ktap"), "splat.console"),
                         ["thp.munmap_write.lifecycle died", "console splat"])
        self.assertEqual(self.caught(data("died.ktap"), timed_out=True),
                         ["thp.munmap_write.lifecycle run-timeout"])

    def test_prove_checks_the_declaration(self):
        """prove.sh's caught_as_declared: the declared test and kind, not
        any failure (main counted any FAIL verdict as caught)."""
        import tempfile
        prove = os.path.join(REPO, "selftests/runner/prove.sh")
        with tempfile.NamedTemporaryFile("w") as log:
            log.write("FAIL  thp.a.lifecycle\ncaught-by: thp.a.lifecycle assert\n"
                      "caught-by: selftests: mm: rmmod test_hmm hang\n")
            log.flush()
            for decl, ok in [("thp.* assert", True), ("thp.* splat|hang", False),
                             ("reuse.* assert", False), ("*rmmod* hang", True),
                             ("reuse.* assert\n*rmmod* hang|died", True)]:
                with self.subTest(decl=decl):
                    r = subprocess.run(
                        ["bash", "-c", 'source <(sed -n "/^caught_as_declared() {/,/^}/p" "$1")'
                         '; caught_by=$2; caught_as_declared "$3"', "_", prove,
                         decl, log.name])
                    self.assertEqual(r.returncode == 0, ok)

    def test_every_mutation_declares_how_it_is_caught(self):
        d = os.path.join(REPO, "selftests/mutations")
        for name in sorted(n for n in os.listdir(d) if n.endswith(".patch")):
            with self.subTest(mutation=name), open(os.path.join(d, name)) as f:
                text = f.read()
                lines = re.findall(r"(?m)^Caught-by: (\S+) (\S+)$", text)
                self.assertTrue(lines)
                for glob, kinds in lines:
                    self.assertTrue(set(kinds.split("|")) <=
                                    {"assert", "splat", "hang", "died"}, kinds)


def repro_fixed_ktap():
    """The real 7.2.13 reproducer run, as a kernel with the fixes gives it."""
    ktap = re.sub(r"(?m)^# # bug present: .*\n", "", data("repro-present.ktap"))
    ktap = re.sub(r"(?m)^(# )?not ok (\d+) (.*?)( # (exit=1|TIMEOUT.*))?$",
                  r"\1ok \2 \3", ktap)
    return ktap


class Repro(unittest.TestCase):
    """run_tests.sh --repro: the known bugs' reproducers as programs."""

    # What only KASAN sees: its reproducer SKIPs on the default kernel.
    KASAN_ONLY = {"migrate_device_finalize_anon_vma"}

    def test_bug_present_is_named_and_red(self):
        (status, p, f, s), out = judge("repro-present.ktap", repro=True,
                                       allow_skips=["no-kasan"])
        self.assertEqual(status, 1, out)
        for bid in verdict.KNOWN_BUGS:
            if bid in self.KASAN_ONLY:
                self.assertRegex(out, rf"(?m)^SKIP  {bid}: the kernel lacks "
                                 rf"CONFIG_KASAN")
                continue
            self.assertRegex(out, rf"(?m)^BUG   {bid}: bug present: ")
            self.assertRegex(out, rf"(?m)^known bug {bid} \(.*\) is in this "
                             rf"kernel: its reproducer: bug present: ")

    def test_kasan_only_skip_needs_its_reason(self):
        (status, p, f, s), out = judge_text(repro_fixed_ktap(), repro=True)
        self.assertEqual(status, 1, out)
        self.assertIn("FAIL  migrate_device_finalize_anon_vma: skipped, 'the "
                      "kernel lacks CONFIG_KASAN", out)

    def test_all_fixed_is_green(self):
        (status, p, f, s), out = judge_text(repro_fixed_ktap(), repro=True,
                                            allow_skips=["no-kasan"])
        self.assertEqual((status, f), (0, 0), out)
        for bid in verdict.KNOWN_BUGS:
            if bid in self.KASAN_ONLY:
                continue
            self.assertRegex(out, rf"(?m)^FIXED {bid}: its reproducer passed")
            self.assertRegex(out, rf"(?m)^known bug {bid} \(.*\) is fixed in "
                             rf"this kernel: its reproducer passed")

    def test_failure_without_the_symptom_is_no_bug(self):
        ktap = re.sub(r"(?m)^# # bug present: every page.*\n", "",
                      data("repro-present.ktap"))
        (status, p, f, s), out = judge_text(ktap, repro=True)
        self.assertEqual(status, 1, out)
        self.assertIn("FAIL  hmm_absent_pmd_offset: the reproducer failed "
                      "without seeing the bug", out)
        self.assertNotIn("known bug hmm_absent_pmd_offset (mm/hmm.c: "
                         "hmm_vma_handle_absent_pmd()) is in this kernel", out)

    def test_skip_needs_a_declared_reason(self):
        skip = ("# ok 1 migrate_device_range_stale_head # SKIP test_hmm lacks "
                "the hmm-folio extension (its cross-order allocator)")
        ktap = repro_fixed_ktap().replace(
            "# ok 1 migrate_device_range_stale_head", skip)
        (status, p, f, s), out = judge_text(ktap, repro=True)
        self.assertEqual(status, 1, out)
        (status, p, f, s), out = judge_text(ktap, repro=True,
                                            allow_skips=["stock-module",
                                                         "no-kasan"])
        self.assertEqual((status, s), (0, 2), out)


# The skips of the tree's own hmm-tests, which run_tests.sh runs with ours.
ANCHOR_SKIPS = {"no-coherent"}
TREE_HMM_TESTS = os.path.join(
    os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")),
    "hmm-folio/src/linux-source-7.2/tools/testing/selftests/mm/hmm-tests.c")


class Sources(unittest.TestCase):
    """The C tests and the verdict's tables agree."""

    @staticmethod
    def c_sources():
        d = os.path.join(REPO, "selftests/mm")
        text = ""
        for name in sorted(os.listdir(d)):
            if name.endswith((".c", ".h")):
                with open(os.path.join(d, name)) as f:
                    text += f.read()
        return text

    def test_known_bugs_match_the_tests(self):
        src = self.c_sources()
        in_c = set(re.findall(r'HMM_FOLIO_XFAIL_KNOWN\(\s*"([a-z0-9_]+)"', src))
        crashers = set(re.findall(r"FIXTURE_VARIANT_ADD\(crashers, (\w+)\)", src))
        self.assertEqual(in_c | crashers, set(verdict.KNOWN_BUGS))
        self.assertNotIn("XFAIL_ADD(", src)

    def test_every_known_bug_has_a_reproducer_and_a_fix(self):
        """selftests/fixes/<id>/repro.c says how it is built and prints the
        symptom line the verdict looks for; every patch of a fixes series
        exists, has a Fixes: tag and the project's Signed-off-by."""
        fixes = os.path.join(REPO, "selftests/fixes")
        for bid in verdict.KNOWN_BUGS:
            with self.subTest(bug=bid):
                with open(os.path.join(fixes, bid, "repro.c")) as f:
                    src = f.read()
                self.assertRegex(src, r"\n \*\tgcc -O2 -Wall -static -I KSRC ")
                self.assertIn('"# bug present: ', src)
                self.assertIn(f'#define NAME\t"{bid}"', src)
                self.assertTrue(os.path.exists(os.path.join(fixes, bid, "README")))
        for series in ("patches/series", "patches/7.2/series"):
            path = os.path.join(fixes, series)
            with open(path) as f:
                names = [l.strip() for l in f if l.strip() and l[0] != "#"]
            self.assertEqual(len(names), 7, series)
            for name in names:
                with self.subTest(patch=name):
                    with open(os.path.join(os.path.dirname(path), name)) as f:
                        text = f.read()
                    self.assertRegex(text, r"(?m)^Fixes: [0-9a-f]{12} \(\"")
                    self.assertIn("Signed-off-by: hmm-folio developer "
                                  "<dev@hmm-folio.invalid>", text)

    def test_declared_skip_reasons_are_the_tests_own(self):
        src = self.c_sources()
        with open(os.path.join(REPO, "selftests/runner/guest-init.sh")) as f:
            src += f.read()
        for rid, prefixes in verdict.SKIP_REASONS.items():
            for prefix in prefixes:
                if rid in ANCHOR_SKIPS:
                    continue
                with self.subTest(rid=rid, prefix=prefix):
                    self.assertIn(prefix.rstrip(), src)

    @unittest.skipUnless(os.path.exists(TREE_HMM_TESTS),
                         "no cached kernel tree (run ./run_tests.sh once)")
    def test_anchor_skip_reasons_are_hmm_tests_own(self):
        with open(TREE_HMM_TESTS) as f:
            src = f.read()
        for rid in ANCHOR_SKIPS:
            for prefix in verdict.SKIP_REASONS[rid]:
                with self.subTest(rid=rid, prefix=prefix):
                    self.assertIn(f'SKIP(return, "{prefix}', src)


class Options(unittest.TestCase):
    def run_tests(self, *args):
        return subprocess.run([os.path.join(REPO, "run_tests.sh"), *args],
                              capture_output=True, text=True, timeout=60)

    def test_help(self):
        r = self.run_tests("--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("--kbuild", r.stdout)

    def test_missing_host_tools_named_with_their_package(self):
        """patch and rsync missing (a fresh machine): the packages and the
        one command, exit 3, before anything else (main said nothing of
        either and failed later, blaming something else)."""
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            bindir = os.path.join(d, "bin")
            os.mkdir(bindir)
            for b in ("/usr/bin", "/bin", "/usr/sbin", "/sbin"):
                for name in os.listdir(b):
                    if name in ("patch", "rsync") or os.path.exists(
                            os.path.join(bindir, name)):
                        continue
                    os.symlink(os.path.join(b, name), os.path.join(bindir, name))
            tree = os.path.join(d, "tree")
            os.mkdir(tree)
            Kselftest.fake_tree(tree)
            r = subprocess.run([os.path.join(REPO, "run_tests.sh"), "--kselftest",
                                "--no-install", "--ksrc", tree,
                                "--cache", os.path.join(d, "cache")],
                               capture_output=True, text=True, timeout=60,
                               env=dict(os.environ, PATH=bindir))
            self.assertEqual(r.returncode, 3, r.stderr)
            self.assertIn("missing host packages: patch rsync", r.stderr)
            self.assertIn("apt-get install --no-install-recommends patch rsync",
                          r.stderr)
            r = subprocess.run([os.path.join(REPO, "lib/test_hmm/apply.sh"),
                                "--dry-run", tree], capture_output=True,
                               text=True, env=dict(os.environ, PATH=bindir))
            self.assertEqual(r.returncode, 4, r.stderr)
            self.assertIn("apply.sh needs patch(1): apt-get install patch", r.stderr)

    def test_usage_errors(self):
        for args, msg in [
            (["--bogus"], "unknown option"),
            (["--kernel", "/nonexistent", "--kbuild", "/tmp"], "no such file"),
            (["--kernel", "/bin/sh"], "go together"),
            (["--kbuild", "/tmp"], "go together"),
            (["--ksrc", "/tmp"], "not a kernel source tree"),
            (["--timeout", "soon"], "--timeout"),
            (["--accel", "xen"], "--accel"),
            (["--filter"], "needs an argument"),
            (["--memory", "64"], "--memory"),
            (["--seed", "-1"], "--seed"),
            (["--seed", "12345678901"], "--seed"),
            (["--duration", "0"], "--duration"),
            (["--race-ms", "soon"], "--race-ms"),
            (["--race-ms", "123456789"], "--race-ms"),
            (["--inject", "fire"], "--inject"),
            (["--append"], "needs an argument"),
            (["--kselftest", "--filter", "thp.*"], "not with --kselftest"),
            (["--kselftest", "--stock-module"], "ships the patched module"),
            (["--kselftest", "--fail-fast"], "not with --kselftest"),
            (["--ksft-tests", "mm:ksft_hmm.sh"], "goes with --kselftest"),
            (["--kselftest", "--ksft-tests", "mm:a;reboot"], "--ksft-tests"),
            (["--repro", "--kselftest"], "one or the other"),
            (["--repro", "--crashers"], "runs the reproducers only"),
            (["--mutation", "/nonexistent"], "no such patch, or directory"),
            (["--mutation", "/tmp"], "no such patch, or directory"),
            (["--debug", "some"], "--debug takes default or full"),
            (["--debug"], "needs an argument"),
            (["--coverage", "--kernel", "/bin/sh", "--kbuild", "/tmp"],
             "builds its own kernel"),
            (["--coverage", "--mutation", "/tmp"], "one or the other"),
            (["--coverage", "--repro"], "not with --repro"),
        ]:
            with self.subTest(args=args):
                r = self.run_tests(*args)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn(msg, r.stderr)


class Coverage(unittest.TestCase):
    """coverage.py on the gcov data of a small userspace program, sent the
    way the guest sends it (base64 between "=== PATH" and "=== end")."""

    SRC = ("int dev(int x)\n{\n\tif (is_device_private(x))\n\t\treturn 1;\n"
           "\treturn 0;\n}\n"
           "int other(int x)\n{\n\tif (x > 3)\n\t\treturn 2;\n\treturn 0;\n}\n")

    def build(self, d, runs):
        import base64
        src = os.path.join(d, "src", "mm")
        obj = os.path.join(d, "build", "mm")
        os.makedirs(src)
        os.makedirs(obj)
        with open(os.path.join(src, "memremap.c"), "w") as f:
            f.write("#define is_device_private(x) ((x) == 2)\n" + self.SRC +
                    "int main(int c, char **v) { return dev(c) + other(c); }\n")
        o = os.path.join(obj, "memremap.o")
        subprocess.run(["gcc", "--coverage", "-O0", "-c",
                        os.path.join(src, "memremap.c"), "-o", o], check=True, cwd=obj)
        exe = os.path.join(obj, "prog")
        subprocess.run(["gcc", "--coverage", o, "-o", exe], check=True)
        for argc in runs:
            subprocess.run([exe] + ["x"] * (argc - 1), cwd=obj)
        gcda = os.path.join(obj, "memremap.gcda")
        with open(gcda, "rb") as f:
            b64 = base64.encodebytes(f.read()).decode()
        os.unlink(gcda)
        dump = os.path.join(d, "gcov.dump")
        with open(dump, "w") as f:
            f.write(f"=== {gcda}\r\n" + b64.replace("\n", "\r\n") + "=== end\r\n")
        files = os.path.join(d, "coverage.files")
        with open(files, "w") as f:
            f.write("# test\nmm/memremap.c\n")
        return dump, files

    def report(self, d, runs, name):
        dump, files = self.build(os.path.join(d, name), runs)
        out = os.path.join(d, name, "coverage")
        return subprocess.run([sys.executable, os.path.join(HERE, "coverage.py"),
                               "report", "--dump", dump, "--files", files,
                               "--out", out],
                              capture_output=True, text=True), out

    @unittest.skipUnless(shutil.which("lcov") and shutil.which("gcov"),
                         "lcov (Debian: lcov) not installed")
    def test_report_and_compare(self):
        import json
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            r, out = self.report(d, [1], "a")
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertTrue(os.path.exists(os.path.join(out, "html", "index.html")))
            with open(os.path.join(out, "summary.json")) as f:
                s = json.load(f)
            fn = s["functions"]["mm/memremap.c:dev"]
            self.assertEqual(fn["branches"], 2)
            self.assertEqual(fn["branches_hit"], 1)
            self.assertNotIn("mm/memremap.c:other", {k for k, v in s["functions"].items()
                                                     if v["device"]})
            [line] = s["device_lines"]
            self.assertEqual((line["line"], line["state"]), (4, "partly covered"))
            r2, out2 = self.report(d, [1, 2], "b")
            self.assertEqual(r2.returncode, 0, r2.stdout + r2.stderr)
            c = subprocess.run([sys.executable, os.path.join(HERE, "coverage.py"),
                                "compare", out, out2, "--names", "ours,theirs"],
                               capture_output=True, text=True)
            self.assertEqual(c.returncode, 0, c.stderr)
            self.assertIn("| mm/memremap.c:dev | 3/4 (75%) | 4/4 (100%) | "
                          "1/2 (50%) | 2/2 (100%) |", c.stdout)
            self.assertIn("mm/memremap.c:4 dev: 1/2 / 2/2 (partly covered)", c.stdout)

    def test_no_data_is_an_error(self):
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            dump = os.path.join(d, "gcov.dump")
            open(dump, "w").close()
            files = os.path.join(d, "files")
            with open(files, "w") as f:
                f.write("mm/memremap.c\n")
            r = subprocess.run([sys.executable, os.path.join(HERE, "coverage.py"),
                                "report", "--dump", dump, "--files", files,
                                "--out", os.path.join(d, "o")],
                               capture_output=True, text=True)
            self.assertEqual(r.returncode, 3)
            self.assertIn("no gcov data from the guest", r.stderr)
            r = subprocess.run([sys.executable, os.path.join(HERE, "coverage.py"),
                                "bogus"], capture_output=True, text=True)
            self.assertEqual(r.returncode, 2)


class Kselftest(unittest.TestCase):
    """kselftest-install.sh and lib/test_hmm/apply.sh on small fake trees."""

    def sh(self, *args):
        return subprocess.run(args, capture_output=True, text=True, timeout=60)

    def test_install_usage(self):
        tool = os.path.join(REPO, "selftests/kselftest/kselftest-install.sh")
        r = self.sh(tool, "install", "/tmp")
        self.assertEqual(r.returncode, 1)
        self.assertIn("not a kernel tree with mm selftests", r.stderr)
        r = self.sh(tool, "uninstall", "/tmp")
        self.assertIn("nothing installed", r.stderr)
        self.assertEqual(self.sh(tool, "frobnicate", "/tmp").returncode, 2)

    def test_make_targets_need_ksrc(self):
        for target in ("install-kselftest", "uninstall-kselftest",
                       "kselftest-patches", "kselftest-tarball"):
            with self.subTest(target=target):
                env = {k: v for k, v in os.environ.items() if k != "KSRC"}
                r = subprocess.run(["make", "-s", "-C", REPO, target],
                                   capture_output=True, text=True, env=env)
                self.assertNotEqual(r.returncode, 0)
                self.assertIn("needs KSRC=DIR", r.stderr)

    @staticmethod
    def fake_tree(d, flags=True, version="6.1"):
        """A tree run_tests.sh accepts as --ksrc, with a test_hmm that is
        not ours to patch; with or without HMM_DMIRROR_FLAGS."""
        for sub in ("lib", "mm"):
            os.mkdir(os.path.join(d, sub))
        with open(os.path.join(d, "Makefile"), "w") as out:
            out.write("kernelversion:\n\t@echo %s\n" % version)
        with open(os.path.join(d, "mm", "memremap.c"), "w") as out:
            out.write("/* not memremap */\n")
        with open(os.path.join(d, "lib", "test_hmm.c"), "w") as out:
            out.write("/* not test_hmm */\n")
        with open(os.path.join(d, "lib", "test_hmm_uapi.h"), "w") as out:
            if flags:
                out.write("#define HMM_DMIRROR_FLAGS _IOWR('H', 0x08, int)\n")

    def test_apply_names_the_series_it_tried(self):
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            self.fake_tree(d)
            r = self.sh(os.path.join(REPO, "lib/test_hmm/apply.sh"), d, "6.1")
            self.assertEqual(r.returncode, 1)
            self.assertIn("no patch series applies to the lib/test_hmm.c of 6.1",
                          r.stderr)
            self.assertIn("Linux 7.2 (lib/test_hmm/series)", r.stderr)
            self.assertIn("Linux 7.3 (lib/test_hmm/7.3/series)", r.stderr)

    def test_tree_without_device_private_thp(self):
        """A test_hmm without HMM_DMIRROR_FLAGS predates device-private
        large folios: apply.sh says so, and run_tests.sh stops before it
        builds a kernel (exit 3)."""
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            tree = os.path.join(d, "tree")
            os.mkdir(tree)
            self.fake_tree(tree, flags=False)
            r = self.sh(os.path.join(REPO, "lib/test_hmm/apply.sh"),
                        "--dry-run", tree, "6.1")
            self.assertEqual(r.returncode, 3)
            self.assertIn("older\nthan device-private large folios", r.stderr)
            r = self.sh(os.path.join(REPO, "run_tests.sh"), "--ksrc", tree,
                        "--output", os.path.join(d, "out"),
                        "--cache", os.path.join(d, "cache"))
            self.assertEqual(r.returncode, 3, r.stderr)
            self.assertIn("test_hmm of 6.1 has no HMM_DMIRROR_FLAGS", r.stderr)
            self.assertNotIn("building kernel", r.stdout + r.stderr)


if __name__ == "__main__":
    unittest.main()
