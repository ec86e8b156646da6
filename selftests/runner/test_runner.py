#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Unit tests of the host side of run_tests.sh: the verdict on canned guest
logs, the kernel log patterns, and the option handling of run_tests.sh."""

import io
import os
import re
import subprocess
import unittest

import verdict

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DATA = os.path.join(HERE, "testdata")


def data(name):
    with open(os.path.join(DATA, name)) as f:
        return f.read()


def judge(ktap, console="clean.console", **kw):
    out = io.StringIO()
    res = verdict.judge(data(ktap), data(console), out=out, **kw)
    return res, out.getvalue()


class Verdict(unittest.TestCase):
    def test_pass_counts_subtests(self):
        (status, p, f, s), out = judge("pass.ktap")
        self.assertEqual((status, p, f, s), (0, 3, 0, 1))
        self.assertIn("SKIP  thp.exit_read.lifecycle: no test_hmm device", out)
        self.assertIn("XFAIL known_bugs.x.t", out)
        self.assertTrue(out.rstrip().endswith("3 passed, 0 failed, 1 skipped"))

    def test_failed_subtest_fails_the_run(self):
        (status, p, f, s), out = judge("fail.ktap")
        self.assertEqual((status, p, f), (1, 1, 1))
        self.assertIn("FAIL  thp.munmap_write.lifecycle", out)

    def test_splat_in_console_fails_a_green_run(self):
        (status, p, f, s), out = judge("pass.ktap", "splat.console")
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
        (status, p, f, s), out = judge("nomatch.ktap")
        self.assertEqual(status, 2)

    def test_no_ktap_at_all(self):
        out = io.StringIO()
        status = verdict.judge("", "", out=out)[0]
        self.assertEqual(status, 1)

    def test_patterns_match_c_scanner(self):
        """The guest-side kmsg scanner and this one look for the same things."""
        with open(os.path.join(REPO, "selftests/mm/hmm_folio_util.c")) as f:
            src = f.read()
        block = re.search(r"splat_patterns\[\] = \{(.*?)\};", src, re.S).group(1)
        self.assertEqual(re.findall(r'"((?:[^"\\]|\\.)*)"', block),
                         verdict.SPLAT_PATTERNS)


class Options(unittest.TestCase):
    def run_tests(self, *args):
        return subprocess.run([os.path.join(REPO, "run_tests.sh"), *args],
                              capture_output=True, text=True, timeout=60)

    def test_help(self):
        r = self.run_tests("--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("--kbuild", r.stdout)

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
            (["--inject", "fire"], "--inject"),
            (["--append"], "needs an argument"),
        ]:
            with self.subTest(args=args):
                r = self.run_tests(*args)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn(msg, r.stderr)


if __name__ == "__main__":
    unittest.main()
