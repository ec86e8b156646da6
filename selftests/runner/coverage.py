#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Kernel coverage of a run (run_tests.sh --coverage), from the guest's gcov
data to an lcov report, and two reports side by side.

  coverage.py report --dump GCOV.DUMP --files COVERAGE.FILES --out DIR
  coverage.py compare DIR_A DIR_B [--names A,B]

report: GCOV.DUMP is what the guest sent on ttyS2 ("=== PATH", base64,
"=== end" per .gcda; PATH is the host's build dir the object came from,
where the .gcno is). It writes into --out:
  data/         the .gcda files with their .gcno, as the build dirs hold them
  coverage.info lcov's capture, with branches, of the files of COVERAGE.FILES
                and test_hmm.c only
  html/         genhtml of it
  files.txt     lcov --list: lines, functions and branches per file
  functions.txt gcov's own figures per function (gcov --json-format):
                lines and branch outcomes executed, of every function of
                those files that has a device-private line
  device-private.txt
                every line of those files that names device-private memory
                (DEVICE_PATTERN) and has branches: taken/all outcomes and
                covered, partly covered or not reached
  summary.json  the same, for "compare"

compare: a Markdown table of the functions with device-private lines,
lines and branches of A and B, and the device-private branches A does not
reach. Exit status: 0 done, 2 bad usage, 3 a tool failed or no data.
"""

import argparse
import base64
import json
import os
import re
import shutil
import subprocess
import sys

EXIT_USAGE = 2
EXIT_INFRA = 3

# A source line about device-private (ZONE_DEVICE) memory.
DEVICE_PATTERN = re.compile(
    r"device_private|DEVICE_PRIVATE|zone_device|is_device_|pgmap|"
    r"MIGRATE_VMA_SELECT_DEVICE|softleaf_is_device|device_exclusive")

LCOV_RC = ["--rc", "lcov_branch_coverage=1"]


class Error(Exception):
    pass


def run(cmd, cwd=None, log=None):
    p = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    if log:
        with open(log, "a") as f:
            f.write("$ " + " ".join(cmd) + "\n" + p.stdout)
    if p.returncode != 0:
        tail = "\n".join(p.stdout.splitlines()[-15:])
        raise Error(f"{cmd[0]} failed (exit {p.returncode}):\n{tail}")
    return p.stdout


def read_files(path):
    with open(path) as f:
        files = [ln.strip() for ln in f
                 if ln.strip() and not ln.startswith("#")]
    return files + ["lib/test_hmm.c"]


def unpack_dump(dump, data):
    """The .gcda files of the dump under data/<their host path>, each with
    its .gcno; returns their paths."""
    out = []
    cur = None
    chunks = []
    with open(dump, errors="replace") as f:
        for raw in f:
            line = raw.rstrip("\r\n").strip("\r")
            if line.startswith("=== "):
                name = line[4:]
                if name == "end" and cur is not None:
                    dst = data + cur
                    os.makedirs(os.path.dirname(dst), exist_ok=True)
                    with open(dst, "wb") as g:
                        g.write(base64.b64decode("".join(chunks)))
                    gcno = cur[:-len(".gcda")] + ".gcno"
                    if os.path.exists(gcno):
                        shutil.copyfile(gcno, dst[:-len(".gcda")] + ".gcno")
                        out.append(dst)
                    cur = None
                elif name != "end":
                    cur = name
                    chunks = []
            elif cur is not None:
                chunks.append(line.strip())
    return out


def gcov_json(gcda):
    """gcov's JSON intermediate format of one .gcda (with branches)."""
    d = os.path.dirname(gcda)
    text = run(["gcov", "-b", "-j", "-t", "-o", d, gcda], cwd=d)
    docs = []
    # One JSON document per line of output (gcov 12 prints one).
    for ln in text.splitlines():
        ln = ln.strip()
        if ln.startswith("{"):
            docs.append(json.loads(ln))
    if not docs:
        raise Error(f"gcov printed no JSON for {gcda}")
    return docs


def source_of(path, files):
    """The COVERAGE.FILES name of a gcov source path, or None."""
    for f in files:
        if path == f or path.endswith("/" + f):
            return f
    return None


def analyse(gcdas, files):
    funcs = {}
    dplines = []
    for gcda in gcdas:
        for doc in gcov_json(gcda):
            for rec in doc.get("files", []):
                name = source_of(rec["file"], files)
                if name is None:
                    continue
                path = rec["file"]
                if not os.path.isabs(path):
                    path = os.path.join(doc.get("current_working_directory", ""), path)
                try:
                    with open(path, errors="replace") as f:
                        text = f.read().splitlines()
                except OSError:
                    text = []
                per = {}
                for fn in rec.get("functions", []):
                    per[fn["name"]] = {
                        "file": name, "function": fn["name"],
                        "start": fn["start_line"], "end": fn["end_line"],
                        "lines": 0, "lines_hit": 0,
                        "branches": 0, "branches_hit": 0, "device": 0,
                        "calls": fn.get("execution_count", 0)}
                for ln in rec.get("lines", []):
                    fn = per.get(ln.get("function_name"))
                    if fn is None:
                        continue
                    fn["lines"] += 1
                    fn["lines_hit"] += ln["count"] > 0
                    br = ln.get("branches", [])
                    fn["branches"] += len(br)
                    fn["branches_hit"] += sum(b["count"] > 0 for b in br)
                    no = ln["line_number"]
                    src = text[no - 1] if 0 < no <= len(text) else ""
                    if DEVICE_PATTERN.search(src):
                        fn["device"] += 1
                        if br:
                            taken = sum(b["count"] > 0 for b in br)
                            state = ("not reached" if ln["count"] == 0 else
                                     "covered" if taken == len(br) else
                                     "partly covered")
                            dplines.append({
                                "file": name, "line": no,
                                "function": fn["function"],
                                "taken": taken, "outcomes": len(br),
                                "state": state, "source": src.strip()})
                for key, fn in per.items():
                    full = f"{name}:{key}"
                    if full in funcs:
                        # The same function from another .gcda (a header's
                        # inline): keep the one that ran the most.
                        if funcs[full]["lines_hit"] >= fn["lines_hit"]:
                            continue
                    funcs[full] = fn
    return funcs, sorted(dplines, key=lambda d: (d["file"], d["line"]))


def cmd_report(a):
    for tool in ("lcov", "genhtml", "gcov"):
        if shutil.which(tool) is None:
            raise Error(f"{tool} is not installed (Debian: lcov, gcc)")
    files = read_files(a.files)
    out = os.path.abspath(a.out)
    data = os.path.join(out, "data")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(data)
    log = os.path.join(out, "tools.log")
    if not os.path.exists(a.dump) or os.path.getsize(a.dump) == 0:
        raise Error(f"no gcov data from the guest ({a.dump} is empty)")
    gcdas = unpack_dump(a.dump, data)
    if not gcdas:
        raise Error(f"{a.dump} holds no .gcda file whose .gcno is on this host")
    ours = [g for g in gcdas
            if source_of(g[len(data):-len(".gcda")] + ".c", files)]
    missing = [f for f in files
               if not any(g.endswith("/" + f[:-2] + ".gcda") for g in ours)]
    info_all = os.path.join(out, "all.info")
    run(["lcov", "--capture", "--quiet", "--directory", data,
         "--output-file", info_all] + LCOV_RC, cwd=out, log=log)
    info = os.path.join(out, "coverage.info")
    run(["lcov", "--extract", info_all, "--output-file", info, "--quiet"] +
        ["*/" + f for f in files] + LCOV_RC, cwd=out, log=log)
    run(["genhtml", "--quiet", "--branch-coverage", "--legend",
         "--title", "hmm-folio: device-private paths", "--output-directory",
         os.path.join(out, "html"), info] + LCOV_RC, cwd=out, log=log)
    listing = run(["lcov", "--list", info] + LCOV_RC, cwd=out)
    with open(os.path.join(out, "files.txt"), "w") as f:
        f.write(listing)
    funcs, dplines = analyse(ours, files)
    dev = {k: v for k, v in funcs.items() if v["device"]}
    with open(os.path.join(out, "functions.txt"), "w") as f:
        f.write("# Functions with device-private lines (gcov -b --json-format):\n"
                "# lines executed/lines, branch outcomes taken/outcomes\n")
        f.write(f"{'file':24} {'function':40} {'lines':>10} {'branches':>10}\n")
        for k in sorted(dev):
            v = dev[k]
            f.write(f"{v['file']:24} {v['function']:40} "
                    f"{v['lines_hit']:>4}/{v['lines']:<5} "
                    f"{v['branches_hit']:>4}/{v['branches']:<5}\n")
    with open(os.path.join(out, "device-private.txt"), "w") as f:
        f.write("# Device-private lines with branches: outcomes taken/all\n")
        for d in dplines:
            f.write(f"{d['file']}:{d['line']} {d['function']} "
                    f"{d['taken']}/{d['outcomes']} {d['state']}: {d['source']}\n")
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump({"functions": funcs, "device_lines": dplines,
                   "missing": missing}, f, indent=1)
    states = {}
    for d in dplines:
        states[d["state"]] = states.get(d["state"], 0) + 1
    print("coverage: lcov report in", os.path.join(out, "html", "index.html"))
    for ln in listing.splitlines():
        if "Total:" in ln:
            print("coverage: " + re.sub(r"\s*\|\s*", " | ", ln.strip()))
    print(f"coverage: {len(dplines)} device-private branch lines: " +
          ", ".join(f"{n} {s}" for s, n in sorted(states.items())) +
          f" ({os.path.join(out, 'device-private.txt')})")
    if missing:
        print("coverage: no data for " + " ".join(missing) +
              " (never run, or not built with gcov)")
    return 0


def pct(hit, n):
    return f"{hit}/{n} ({100 * hit // n}%)" if n else "-"


def cmd_compare(a):
    names = a.names.split(",")
    if len(names) != 2:
        raise Error("--names takes two names, A,B")
    sums = []
    for d in (a.a, a.b):
        p = os.path.join(d, "summary.json")
        if not os.path.exists(p):
            p = os.path.join(d, "coverage", "summary.json")
        try:
            with open(p) as f:
                sums.append(json.load(f))
        except OSError as e:
            raise Error(f"no coverage summary in {d}: {e}")
    fa, fb = sums[0]["functions"], sums[1]["functions"]
    keys = sorted(k for k in set(fa) | set(fb)
                  if (fa.get(k) or fb.get(k))["device"])
    na, nb = names
    print(f"| function | lines {na} | lines {nb} | branches {na} | branches {nb} |")
    print("|---|---|---|---|---|")
    tot = [0] * 8
    for k in keys:
        x = fa.get(k, {"lines": 0, "lines_hit": 0, "branches": 0, "branches_hit": 0})
        y = fb.get(k, {"lines": 0, "lines_hit": 0, "branches": 0, "branches_hit": 0})
        print(f"| {k} | {pct(x['lines_hit'], x['lines'])} | "
              f"{pct(y['lines_hit'], y['lines'])} | "
              f"{pct(x['branches_hit'], x['branches'])} | "
              f"{pct(y['branches_hit'], y['branches'])} |")
        for i, v in enumerate((x["lines_hit"], x["lines"], y["lines_hit"], y["lines"],
                               x["branches_hit"], x["branches"],
                               y["branches_hit"], y["branches"])):
            tot[i] += v
    print(f"| **all {len(keys)}** | {pct(tot[0], tot[1])} | {pct(tot[2], tot[3])} | "
          f"{pct(tot[4], tot[5])} | {pct(tot[6], tot[7])} |")
    db = {(d["file"], d["line"]): d for d in sums[1]["device_lines"]}
    print()
    print(f"Device-private branch lines {na} does not cover fully "
          f"(outcomes taken {na} / {nb}):")
    print()
    for d in sums[0]["device_lines"]:
        if d["state"] == "covered":
            continue
        o = db.get((d["file"], d["line"]))
        other = f"{o['taken']}/{o['outcomes']}" if o else "-"
        print(f"- {d['file']}:{d['line']} {d['function']}: "
              f"{d['taken']}/{d['outcomes']} / {other} ({d['state']}) `{d['source']}`")
    return 0


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd")
    r = sub.add_parser("report")
    r.add_argument("--dump", required=True)
    r.add_argument("--files", required=True)
    r.add_argument("--out", required=True)
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--names", default="A,B")
    try:
        a = p.parse_args(argv)
    except SystemExit as e:
        return EXIT_USAGE if e.code else 0
    if a.cmd is None:
        p.print_usage(sys.stderr)
        return EXIT_USAGE
    try:
        return cmd_report(a) if a.cmd == "report" else cmd_compare(a)
    except Error as e:
        print(f"coverage.py: error: {e}", file=sys.stderr)
        return EXIT_INFRA


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
