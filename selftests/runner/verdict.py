#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Turn a guest run into a verdict.

Reads the KTAP stream the guest wrote (kselftest runner format: one
top-level result per test program, the program's own KTAP nested behind
"# ") and the kernel console, prints a summary and returns the exit status
of run_tests.sh: 0 when every test passed (or skipped) and the kernel said
nothing alarming, 1 otherwise.
"""

import argparse
import fnmatch
import os
import re
import sys
from dataclasses import dataclass, field

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_USAGE = 2

# What a kernel says when something went wrong: the one list the tests'
# kernel log check also uses, HMM_FOLIO_SPLAT("...") lines of a C header.
SPLATS_H = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        "..", "mm", "hmm_folio_splats.h")


def read_splat_patterns(path=SPLATS_H):
    """The patterns of hmm_folio_splats.h; a line it cannot read is an
    error, not a pattern lost."""
    pats = []
    with open(path) as f:
        for no, line in enumerate(f, 1):
            if not line.startswith("HMM_FOLIO_SPLAT"):
                continue
            m = re.match(r'^HMM_FOLIO_SPLAT\("([^"\\]+)"\)$', line.rstrip("\n"))
            if not m:
                raise ValueError(f"{path}:{no}: not HMM_FOLIO_SPLAT(\"text\")")
            pats.append(m.group(1))
    return pats


SPLAT_PATTERNS = read_splat_patterns()

GUEST_DONE = "# hmmfolio: guest done"
PLAN_RE = re.compile(r"^1\.\.(\d+)")
RESULT_RE = re.compile(r"^(not ok|ok) (\d+) ?-? ?([^#]*?)\s*(?:#\s*(.*))?$")


@dataclass
class Result:
    ok: bool
    name: str
    directive: str = ""
    log: list = field(default_factory=list)

    @property
    def skipped(self):
        return self.ok and self.directive.upper().startswith("SKIP")


@dataclass
class Program:
    result: Result
    plan: int = -1
    subtests: list = field(default_factory=list)
    log: list = field(default_factory=list)


@dataclass
class Run:
    programs: list = field(default_factory=list)
    plan: int = -1
    bail_out: str = ""
    done: bool = False
    last_line: str = ""


def parse_ktap(text):
    """Parse the guest's KTAP: top-level program results, nested subtests."""
    run = Run()
    pending = Program(Result(False, ""))
    for raw in text.splitlines():
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        run.last_line = line
        if line.startswith(GUEST_DONE):
            run.done = True
            continue
        if line.startswith("Bail out!"):
            run.bail_out = line[len("Bail out!"):].strip()
            continue
        if line.startswith("# selftest: "):
            pending.result.name = "selftests: " + line[len("# selftest: "):]
            continue
        m = PLAN_RE.match(line)
        if m and run.plan < 0:
            run.plan = int(m.group(1))
            continue
        if line.startswith("# "):
            inner = line[2:]
            pending.log.append(inner)
            m = PLAN_RE.match(inner)
            if m:
                pending.plan = int(m.group(1))
                continue
            m = RESULT_RE.match(inner)
            if m:
                # A test's log: the lines since the result before it.
                done = sum(len(t.log) + 1 for t in pending.subtests)
                pending.subtests.append(
                    Result(m.group(1) == "ok", m.group(3), m.group(4) or "",
                           pending.log[done:-1]))
            continue
        m = RESULT_RE.match(line)
        if m:
            pending.result = Result(m.group(1) == "ok", m.group(3),
                                    m.group(4) or "")
            run.programs.append(pending)
            pending = Program(Result(False, ""))
    # Lines after the last result (a runner's "# Totals") are no program
    # unless the guest stopped before it said it was done.
    if pending.subtests or pending.result.name or (pending.log and
                                                    not run.done):
        pending.result.directive = "no result: the guest stopped"
        run.programs.append(pending)
    return run


def scan_console(text):
    """Lines of the kernel console that match a splat pattern."""
    hits = []
    for no, line in enumerate(text.splitlines(), 1):
        for pat in SPLAT_PATTERNS:
            if pat in line:
                hits.append((no, pat, line.rstrip()))
                break
    return hits


def excerpt(text, lineno, before=2, after=25):
    lines = text.splitlines()
    lo = max(0, lineno - 1 - before)
    return lines[lo:lineno - 1 + after]


TOTALS_RE = re.compile(r"^(?:# ){2,}Totals: pass:(\d+) fail:(\d+) xfail:(\d+) "
                       r"xpass:(\d+) skip:(\d+) error:(\d+)")


def nested_totals(prog):
    """(passed, failed, skipped) of the kselftest_harness programs run two
    or more levels down (run_kselftest.sh -> run_vmtests.sh -> program), or
    None when the program's tests are its own."""
    sums = [0, 0, 0]
    found = False
    for line in prog.log:
        m = TOTALS_RE.match(line)
        if not m:
            continue
        found = True
        p, f, xf, xp, sk, err = map(int, m.groups())
        sums[0] += p + xf + xp
        sums[1] += f + err
        sums[2] += sk
    return tuple(sums) if found else None


KNOWN_BUGS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                               "..", "fixes", "known-bugs")


@dataclass
class KnownBug:
    id: str
    tests: list
    where: str


def read_known_bugs(path=KNOWN_BUGS_FILE):
    """selftests/fixes/known-bugs: "id tests where" lines."""
    bugs = {}
    with open(path) as f:
        for no, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(None, 2)
            if len(parts) < 3:
                raise ValueError(f"{path}:{no}: not 'id tests where'")
            bugs[parts[0]] = KnownBug(parts[0], parts[1].split(","), parts[2])
    return bugs


KNOWN_BUGS = read_known_bugs()
KNOWN_BUG_RE = re.compile(r"^XFAIL\s+known bug (\S+): (.+)$")

# The SKIP reasons a run may give. Each is accepted only when the run
# declares its id (run_tests.sh does, from its own options and its build);
# any other SKIP of a test is a FAIL that names the test and its reason.
SKIP_REASONS = {
    "crashers": ("known kernel bug that crashes DEBUG_VM kernels",
                 "known kernel bug whose KASAN report turns lockdep off",
                 "known kernel bug that spoils the rest of its run"),
    "no-kasan": ("the kernel lacks CONFIG_KASAN",),
    # Never declared by run_tests.sh: its kernels have CONFIG_USERFAULTFD.
    "no-userfaultfd": ("userfaultfd not available",),
    # Never declared either: its kernels have CONFIG_GUP_TEST and debugfs.
    "no-gup_test": ("gup_test not available",),
    "filter": ("no test matches ",),
    "fail-fast": ("fail-fast: an earlier program failed",),
    "one-node": ("NUMA not available", "only one NUMA node"),
    "no-io_uring": ("io_uring disabled", "io_uring not in this kernel"),
    "no-liburing": ("built without liburing",),
    "no-libnuma": ("built without libnuma",),
    "stock-module": ("test_hmm lacks the hmm-folio extension",),
    # The tree's own hmm-tests (selftests/mm/Makefile: ANCHOR_PROGS).
    "no-coherent": ("DEVICE_COHERENT not available",),
}


def skip_reason_id(reason):
    for rid, prefixes in SKIP_REASONS.items():
        if reason.startswith(prefixes):
            return rid
    return None


def known_bug_of(name, bugs):
    for bug in bugs.values():
        if any(fnmatch.fnmatchcase(name, g) for g in bug.tests):
            return bug
    return None


def nested_results(lines):
    """The results of every level below @lines."""
    deeper = [line[2:] for line in lines if line.startswith("# ")]
    for line in deeper:
        m = RESULT_RE.match(line)
        if m:
            yield Result(m.group(1) == "ok", m.group(3), m.group(4) or "")
    if deeper:
        yield from nested_results(deeper)


SPLAT_IN_TEST_RE = re.compile(r"# kernel log during |# kernel tainted during |"
                              r"splat\(s\) during the test|freed dirty")
RUN_RE = re.compile(r"^#?\s+RUN\s+(\S+) \.\.\.")


def failure_kind(log):
    """How a test failed, from its log: it hung (the harness's timeout),
    the kernel logged a splat during it, or an assertion failed."""
    text = "\n".join(log)
    if "Test terminated by timeout" in text:
        return "hang"
    if SPLAT_IN_TEST_RE.search(text):
        return "splat"
    return "assert"


def running_test(prog):
    """The test a program was running when it stopped reporting."""
    reported = {t.name for t in prog.subtests}
    running = None
    for line in prog.log:
        m = RUN_RE.match(line)
        if m and m.group(1) not in reported:
            running = m.group(1)
    return running


def block_plan_problems(lines, where):
    """Plans of the KTAP documents in @lines ("TAP version" starts one)
    against their results, and so on for every level nested below."""
    problems, deeper, blocks = [], [], []
    for line in lines:
        plan = PLAN_RE.match(line)
        if line.startswith("# "):
            deeper.append(line[2:])
        elif line.startswith("TAP version"):
            blocks.append([-1, 0])
        elif blocks and plan:
            if blocks[-1][0] < 0:
                blocks[-1][0] = int(plan.group(1))
        elif blocks and RESULT_RE.match(line):
            blocks[-1][1] += 1
    for plan, got in blocks:
        if plan >= 0 and plan != got:
            problems.append(f"{where}: a nested plan of {plan} test(s) "
                            f"has {got} result(s)")
    if deeper:
        problems += block_plan_problems(deeper, where)
    return problems


class Verdict:
    """Counts, problems and reports of one run, filled in by judge()."""

    def __init__(self, out, allow_skips, bugs, timed_out=False, repro=False):
        self.out = out
        self.repro = repro      # the tests are the known bugs' reproducers
        self.timed_out = timed_out
        self.allow = set(allow_skips)
        self.bugs = bugs
        self.passed = self.failed = self.skipped = 0
        self.problems = []
        self.skips = {}         # reason -> count
        self.present = {}       # known bug id -> [(test, symptom)]
        self.fixed = {}         # known bug id -> [test]
        self.no_match = 0
        self.caught = []        # (test or program, how it failed)

    def say(self, text):
        print(text, file=self.out)

    def fail(self, line, problem=None, name=None, kind=None):
        self.failed += 1
        if name:
            self.caught.append((name, kind))
        if line:
            self.say(line)
        if problem:
            self.problems.append(problem)

    def skip(self, name, reason):
        rid = skip_reason_id(reason)
        if rid is None or rid not in self.allow:
            why = "no reason given" if not reason else (
                f"'{reason}' is no environment reason this run declared")
            self.fail(f"FAIL  {name}: skipped, {why}")
            return
        self.skipped += 1
        self.skips[reason] = self.skips.get(reason, 0) + 1
        self.say(f"SKIP  {name}: {reason}")

    def known_bug_result(self, t):
        """An XFAIL or XPASS: true if it is a known bug's exact symptom,
        else counted as a FAIL."""
        bug = known_bug_of(t.name, self.bugs)
        m = KNOWN_BUG_RE.match(t.directive)
        if not m:
            self.fail(f"FAIL  {t.name}: {t.directive.split()[0].upper()} that "
                      f"names no known bug's symptom (HMM_FOLIO_XFAIL_KNOWN)")
            return False
        if bug is None or bug.id != m.group(1):
            self.fail(f"FAIL  {t.name}: '{t.directive}' is no known bug of "
                      f"this test (selftests/fixes/known-bugs)")
            return False
        self.present.setdefault(bug.id, []).append((t.name, m.group(2)))
        self.say(f"KNOWN {t.name}: known bug {bug.id}: {m.group(2)}")
        return True

    def reproducer(self, t):
        """A known bug's reproducer (run_tests.sh --repro): "not ok" is the
        bug only when it said "bug present:", else the reproducer broke."""
        bug = self.bugs[t.name]
        seen = [line[2:] for line in t.log
                if line.startswith("# bug present: ")]
        if t.ok and not t.skipped:
            self.passed += 1
            self.fixed.setdefault(bug.id, []).append("its reproducer")
            self.say(f"FIXED {bug.id}: its reproducer passed")
        elif t.skipped:
            self.skip(t.name, t.directive[4:].strip())
        elif seen:
            self.present.setdefault(bug.id, []).append(
                ("its reproducer", seen[0]))
            self.fail(f"BUG   {bug.id}: {seen[0]}", name=t.name, kind="assert")
        else:
            self.fail(f"FAIL  {bug.id}: the reproducer failed without "
                      f"seeing the bug (its log above)", name=t.name,
                      kind="assert")

    def subtest(self, t):
        if self.repro and t.name in self.bugs:
            self.reproducer(t)
            return
        bug = known_bug_of(t.name, self.bugs)
        if t.directive.upper().startswith(("XFAIL", "XPASS")):
            self.passed += self.known_bug_result(t)
        elif t.skipped:
            self.skip(t.name, t.directive[4:].strip())
        elif t.ok:
            self.passed += 1
            if bug:
                self.fixed.setdefault(bug.id, []).append(t.name)
            self.say(f"PASS  {t.name}")
        else:
            self.fail(f"FAIL  {t.name}", name=t.name, kind=failure_kind(t.log))

    def wrapper(self, prog, nested):
        """A wrapper (run_vmtests.sh) around test programs: count their
        tests, check their plans, and fail a failed wrapper entry that none
        of them explains."""
        name = prog.result.name
        p_, f_, s_ = nested
        self.passed += p_
        self.failed += f_
        self.skipped += s_
        self.say(f"      {name}: {p_} passed, {f_} failed, {s_} skipped "
                 f"in its test programs")
        for t in prog.subtests:
            self.say(f"{'PASS' if t.ok else 'FAIL':5} {t.name}")
            if not t.ok and not f_:
                self.failed += 1
        for problem in block_plan_problems(prog.log, name):
            self.fail(None, problem)
        for t in nested_results(prog.log):
            if t.directive.upper().startswith(("XFAIL", "XPASS")):
                self.known_bug_result(t)
        if not prog.result.ok and not f_ and all(t.ok for t in prog.subtests):
            self.fail(None, f"{name}: failed ({prog.result.directive})")

    def program(self, prog):
        name = prog.result.name
        nested = nested_totals(prog)
        if nested:
            self.wrapper(prog, nested)
            return
        for t in prog.subtests:
            self.subtest(t)
        got = len(prog.subtests)
        if prog.plan >= 0 and got > prog.plan:
            self.fail(None, f"{name}: {got} results for a plan of {prog.plan}")
        if prog.plan > got:
            self.failed += prog.plan - got
            self.problems.append(f"{name}: {prog.plan - got} of {prog.plan} "
                                 f"tests never reported "
                                 f"({prog.result.directive or 'died'})")
            stuck = running_test(prog)
            if stuck:
                timed = prog.result.directive.upper().startswith("TIMEOUT")
                # The host's whole-run timeout bounds nothing of the test's.
                self.caught.append((stuck, "hang" if timed else
                                    "run-timeout" if self.timed_out else "died"))
                self.problems.append(f"{name}: {stuck} was running when it "
                                     f"{'timed out' if timed else 'stopped'}")
        elif not prog.subtests:
            if prog.result.skipped:
                reason = prog.result.directive[4:].strip()
                self.no_match += reason.startswith("no test matches ")
                self.skip(name, reason)
            elif prog.result.ok:
                self.passed += 1
                self.say(f"PASS  {name}")
            else:
                timed = prog.result.directive.upper().startswith("TIMEOUT")
                self.fail(None, f"{name}: failed without reporting a test "
                          f"({prog.result.directive})", name=name,
                          kind="hang" if timed else "assert")
        elif not prog.result.ok and not any(not t.ok for t in prog.subtests):
            self.fail(None, f"{name}: program failed after its tests "
                      f"({prog.result.directive})")

    def summary(self):
        # For make prove: what failed, and how (a mutation says which
        # tests must catch it and how).
        for name, kind in self.caught:
            self.say(f"caught-by: {name} {kind}")
        for reason, n in sorted(self.skips.items()):
            self.say(f"skipped ({n}): {reason}")
        for bid, tests in sorted(self.present.items()):
            self.say(f"known bug {bid} ({self.bugs[bid].where}) is in this "
                     f"kernel: {tests[0][0]}: {tests[0][1]}")
        for bid, tests in sorted(self.fixed.items()):
            if bid not in self.present:
                self.say(f"known bug {bid} ({self.bugs[bid].where}) is fixed "
                         f"in this kernel: {', '.join(tests)} passed")


def judge(ktap, console, timed_out=False, out=sys.stdout, allow_skips=(),
          bugs=None, repro=False):
    """Print the summary of a run; return (exit status, passed, failed, skipped)."""
    run = parse_ktap(ktap)
    v = Verdict(out, allow_skips, KNOWN_BUGS if bugs is None else bugs,
                timed_out, repro)
    for prog in run.programs:
        v.program(prog)

    if run.plan < 0 and run.programs:
        v.fail(None, "the guest printed no plan of its test programs")
    elif run.plan >= 0 and len(run.programs) != run.plan:
        v.fail(None, f"the plan promised {run.plan} test programs, "
               f"{len(run.programs)} reported")
    if run.bail_out:
        v.fail(None, f"guest bailed out: {run.bail_out}")
    if timed_out or not run.done:
        why = "timed out" if timed_out else "died (panic, oops or hang?)"
        v.fail(None, f"the guest {why} before finishing; last KTAP line: "
               f"{run.last_line or '(none)'}")

    hits = scan_console(console)
    if hits:
        v.fail(None, f"the kernel console has {len(hits)} splat line(s)",
               name="console", kind="splat")

    for p in v.problems:
        v.say(f"FAIL  {p}")
    show_console(v, console, hits, timed_out or not run.done)
    v.summary()

    # A filter that matched nothing: every test program said so (the
    # module unload after them is no test of the filter's).
    tests = [p for p in run.programs
             if not p.result.name.endswith("rmmod test_hmm")]
    if tests and v.no_match == len(tests) and not v.failed:
        v.say("no test matches the filter")
        status = EXIT_USAGE
    elif v.failed or v.passed + v.skipped == 0:
        status = EXIT_FAIL
    else:
        status = EXIT_PASS
    v.say(f"{v.passed} passed, {v.failed} failed, {v.skipped} skipped")
    return status, v.passed, v.failed, v.skipped


def show_console(v, console, hits, stopped):
    """Up to three console excerpts of splats, or the console's end when
    the guest stopped without one."""
    shown, shown_to = 0, 0
    for no, pat, line in hits:
        if shown >= 3:
            break
        if no <= shown_to:
            continue
        v.say(f"\n--- console line {no} (matches '{pat}') ---")
        v.say("\n".join(excerpt(console, no)))
        shown += 1
        shown_to = no + 25
    if stopped and not hits:
        v.say("\n--- last console lines ---")
        v.say("\n".join(console.splitlines()[-30:]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ktap", required=True, help="KTAP written by the guest")
    ap.add_argument("--console", required=True, help="kernel console log")
    ap.add_argument("--timed-out", action="store_true",
                    help="the host killed the guest at the run timeout")
    ap.add_argument("--allow-skip", action="append", default=[],
                    choices=sorted(SKIP_REASONS), metavar="ID",
                    help="a SKIP reason this run declares (%(choices)s)")
    ap.add_argument("--repro", action="store_true",
                    help="the run's tests are the known bugs' reproducers")
    args = ap.parse_args(argv)

    def read(path):
        try:
            with open(path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    return judge(read(args.ktap), read(args.console), args.timed_out,
                 allow_skips=args.allow_skip, repro=args.repro)[0]


if __name__ == "__main__":
    sys.exit(main())
