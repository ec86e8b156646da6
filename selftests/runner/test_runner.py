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

    def test_kselftest_runner_output(self):
        """run_kselftest.sh -> run_vmtests.sh -> programs: the programs'
        tests count; "# Totals" after the last result is no program."""
        (status, p, f, s), out = judge("kselftest.ktap")
        self.assertEqual((status, p, f, s), (0, 3, 0, 1), out)
        self.assertIn("PASS  test_hmm_folio.sh", out)
        self.assertIn("ksft_hmm_folio.sh: 2 passed, 0 failed, 0 skipped", out)

    def test_kselftest_failed_wrapper_without_failed_test(self):
        ktap = data("kselftest.ktap").replace("# ok 1 test_hmm_folio.sh",
                                              "# not ok 1 test_hmm_folio.sh")
        res = verdict.judge(ktap, data("clean.console"), out=io.StringIO())
        self.assertEqual(res[0], 1)

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
            (["--inject", "fire"], "--inject"),
            (["--append"], "needs an argument"),
            (["--kselftest", "--filter", "thp.*"], "not with --kselftest"),
            (["--kselftest", "--stock-module"], "ships the patched module"),
            (["--kselftest", "--fail-fast"], "not with --kselftest"),
            (["--ksft-tests", "mm:ksft_hmm.sh"], "goes with --kselftest"),
            (["--kselftest", "--ksft-tests", "mm:a;reboot"], "--ksft-tests"),
        ]:
            with self.subTest(args=args):
                r = self.run_tests(*args)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn(msg, r.stderr)


class Kselftest(unittest.TestCase):
    """kselftest-install.sh and lib/test_hmm/apply.sh on small fake trees."""

    def sh(self, *args):
        return subprocess.run(args, capture_output=True, text=True, timeout=60)

    def test_install_usage(self):
        tool = os.path.join(REPO, "selftests/mm/kselftest-install.sh")
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
