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
import re
import sys
from dataclasses import dataclass, field

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_USAGE = 2

# What a kernel says when something went wrong. Keep in sync with
# splat_patterns[] in selftests/mm/hmm_folio_util.c (make check compares).
SPLAT_PATTERNS = [
    "BUG:",
    "WARNING:",
    "kernel BUG at",
    "Bad page state",
    "Bad page map",
    "Oops",
    "page dumped because",
    "VM_BUG_ON",
    "list_add corruption",
    "list_del corruption",
    "refcount_t:",
    "general protection fault",
    "Kernel panic",
    "Call Trace:",
    "blocked for more than",
    "rcu_sched self-detected stall",
    # test_hmm with the lib/test_hmm patches: allocator misuse, leaks
    "freeing free device memory",
    "still allocated after memunmap_pages",
    "dirty device folio freed",
    "Out of memory:",
]

GUEST_DONE = "# hmmfolio: guest done"
RESULT_RE = re.compile(r"^(not ok|ok) (\d+) ?-? ?([^#]*?)\s*(?:#\s*(.*))?$")


@dataclass
class Result:
    ok: bool
    name: str
    directive: str = ""

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
        if line.startswith("# "):
            inner = line[2:]
            pending.log.append(inner)
            m = re.match(r"^1\.\.(\d+)", inner)
            if m:
                pending.plan = int(m.group(1))
                continue
            m = RESULT_RE.match(inner)
            if m:
                pending.subtests.append(
                    Result(m.group(1) == "ok", m.group(3), m.group(4) or ""))
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


def judge(ktap, console, timed_out=False, out=sys.stdout):
    """Print the summary of a run; return (exit status, passed, failed, skipped)."""
    run = parse_ktap(ktap)
    passed = failed = skipped = 0
    problems = []
    no_match = 0

    for prog in run.programs:
        name = prog.result.name
        nested = nested_totals(prog)
        if nested:
            # A wrapper (run_vmtests.sh) around test programs: count their
            # tests, and a failed wrapper entry that none of them explains.
            p_, f_, s_ = nested
            passed, failed, skipped = passed + p_, failed + f_, skipped + s_
            print(f"      {name}: {p_} passed, {f_} failed, {s_} skipped "
                  f"in its test programs", file=out)
            for t in prog.subtests:
                print(f"{'PASS' if t.ok else 'FAIL':5} {t.name}", file=out)
                if not t.ok and not f_:
                    failed += 1
            if not prog.result.ok and not f_ and all(t.ok for t in prog.subtests):
                failed += 1
                problems.append(f"{name}: failed ({prog.result.directive})")
            continue
        for t in prog.subtests:
            if t.ok and t.directive.upper().startswith(("XFAIL", "XPASS")):
                # Expected failures (known kernel bugs) pass; an XPASS says
                # the bug is gone and its XFAIL_ADD can go.
                passed += 1
                print(f"{t.directive.split()[0].upper():5} {t.name}", file=out)
            elif t.skipped:
                skipped += 1
                print(f"SKIP  {t.name}: {t.directive[4:].strip()}", file=out)
            elif t.ok:
                passed += 1
                print(f"PASS  {t.name}", file=out)
            else:
                failed += 1
                print(f"FAIL  {t.name}", file=out)
        missing = prog.plan - len(prog.subtests) if prog.plan >= 0 else 0
        if missing > 0:
            failed += missing
            problems.append(f"{name}: {missing} of {prog.plan} tests never "
                            f"reported ({prog.result.directive or 'died'})")
        elif not prog.subtests:
            if prog.result.skipped:
                skipped += 1
                if "no test matches" in prog.result.directive:
                    no_match += 1
                print(f"SKIP  {name}: {prog.result.directive[4:].strip()}",
                      file=out)
            elif prog.result.ok:
                passed += 1
                print(f"PASS  {name}", file=out)
            else:
                failed += 1
                problems.append(f"{name}: failed without reporting a test "
                                f"({prog.result.directive})")
        elif not prog.result.ok and not any(not t.ok for t in prog.subtests):
            failed += 1
            problems.append(f"{name}: program failed after its tests "
                            f"({prog.result.directive})")

    if run.bail_out:
        failed += 1
        problems.append(f"guest bailed out: {run.bail_out}")
    if timed_out or not run.done:
        failed += 1
        why = "timed out" if timed_out else "died (panic, oops or hang?)"
        problems.append(f"the guest {why} before finishing; last KTAP line: "
                        f"{run.last_line or '(none)'}")

    hits = scan_console(console)
    if hits:
        failed += 1
        problems.append(f"the kernel console has {len(hits)} splat line(s)")

    for p in problems:
        print(f"FAIL  {p}", file=out)
    shown, shown_to = 0, 0
    for no, pat, line in hits:
        if shown >= 3:
            break
        if no <= shown_to:
            continue
        print(f"\n--- console line {no} (matches '{pat}') ---", file=out)
        print("\n".join(excerpt(console, no)), file=out)
        shown += 1
        shown_to = no + 25
    if (timed_out or not run.done) and not hits:
        print("\n--- last console lines ---", file=out)
        print("\n".join(console.splitlines()[-30:]), file=out)

    if passed + failed == 0 and run.programs and no_match == len(run.programs):
        print("no test matches the filter", file=out)
        status = EXIT_USAGE
    elif failed or passed + skipped == 0:
        status = EXIT_FAIL
    else:
        status = EXIT_PASS
    print(f"{passed} passed, {failed} failed, {skipped} skipped", file=out)
    return status, passed, failed, skipped


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ktap", required=True, help="KTAP written by the guest")
    ap.add_argument("--console", required=True, help="kernel console log")
    ap.add_argument("--timed-out", action="store_true",
                    help="the host killed the guest at the run timeout")
    args = ap.parse_args(argv)

    def read(path):
        try:
            with open(path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    return judge(read(args.ktap), read(args.console), args.timed_out)[0]


if __name__ == "__main__":
    sys.exit(main())
