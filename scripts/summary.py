#!/usr/bin/env python3
"""Counts the results of make check and prints the one line it ends with:
`N passed, N failed, N skipped`. Exit status 1 if anything failed, else 0.

It fails closed. Each step of scripts/check.sh is named with its exit status
and the result file it must leave:

    summary.py --step unit:0:meson:build-asan/meson-logs/testlog.json \\
               --step system:1:junit:build/pytest.xml --step build:0

- a step whose exit status is not 0 is a failure, even if its file says all
  passed (pytest killed mid-run, a sanitizer abort after the last case);
- a step whose result file is missing, empty or unreadable is a failure (the
  file is deleted before the step, so an old run's file cannot stand in);
- test cases are counted, not executables: each cmocka case in a meson
  test's output, each pytest item. A meson test that failed without a failed
  case in its output (a crash between cases) adds one failure of its own.
"""
import argparse
import json
import re
import sys
import xml.etree.ElementTree as ET

# One case's line; not the closing "[  SKIPPED ] 2 test(s), listed below:"
# nor an "[  ERROR   ] --- message" line.
CMOCKA = re.compile(r"^\[ *(RUN|OK|FAILED|SKIPPED|ERROR) *\] (\S+)[ \t]*$", re.M)


class Counts:
    def __init__(self):
        self.passed = self.failed = self.skipped = 0
        self.names = []

    def fail(self, name):
        self.failed += 1
        self.names.append(name)


def count_cmocka(test, c):
    """Counts the cmocka cases in one meson test's output; returns how many
    cases it saw, and whether one of them failed."""
    text = (test.get("stdout") or "") + "\n" + (test.get("stderr") or "")
    state = {}
    for kind, case in CMOCKA.findall(text):
        if kind == "RUN":
            state.setdefault(case, "RUN")
        elif kind in ("FAILED", "ERROR"):
            state[case] = "FAILED"
        elif state.get(case) != "FAILED":
            state[case] = kind
    any_failed = False
    for case, st in state.items():
        name = "%s::%s" % (test.get("name", "?"), case)
        if st == "OK":
            c.passed += 1
        elif st == "SKIPPED":
            c.skipped += 1
        else:  # FAILED, or RUN with no verdict: it crashed in that case
            c.fail(name)
            any_failed = True
    return len(state), any_failed


def count_meson(path, c):
    seen = 0
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            test = json.loads(line)
            seen += 1
            result = test.get("result", "")
            ok = result in ("OK", "EXPECTEDFAIL")
            cases, case_failed = count_cmocka(test, c)
            if cases:
                if not ok and not case_failed:
                    c.fail("%s (%s after its cases)" % (test.get("name", "?"), result))
                continue
            if ok:
                c.passed += 1
            elif result == "SKIP":
                c.skipped += 1
            else:
                c.fail("%s (%s)" % (test.get("name", "?"), result))
    if not seen:
        raise ValueError("no test results in it")


def count_junit(path, c):
    root = ET.parse(path).getroot()
    seen = 0
    for case in root.iter("testcase"):
        seen += 1
        kinds = {child.tag for child in case}
        name = case.get("classname", "") + "::" + case.get("name", "")
        if "failure" in kinds or "error" in kinds:
            c.fail(name)
        elif "skipped" in kinds:
            c.skipped += 1
        else:
            c.passed += 1
    if not seen:
        raise ValueError("no test cases in it")


READERS = {"meson": count_meson, "junit": count_junit}


def parse_step(text):
    """NAME:STATUS[:KIND:PATH] -> (name, status, kind, path)."""
    parts = text.split(":", 3)
    if len(parts) not in (2, 4) or not parts[1].lstrip("-").isdigit():
        raise argparse.ArgumentTypeError("a step is NAME:STATUS[:meson|junit:PATH], not %r" % text)
    if len(parts) == 4 and parts[2] not in READERS:
        raise argparse.ArgumentTypeError("result kind %r: use meson or junit" % parts[2])
    name, status = parts[0], int(parts[1])
    kind, path = (parts[2], parts[3]) if len(parts) == 4 else (None, None)
    return name, status, kind, path


def summarize(steps):
    c = Counts()
    for name, status, kind, path in steps:
        if status != 0:
            c.fail("step %s exited with status %d" % (name, status))
        if kind is None:
            continue
        try:
            READERS[kind](path, c)
        except FileNotFoundError:
            c.fail("step %s left no result file %s" % (name, path))
        except (OSError, ValueError, ET.ParseError) as e:
            c.fail("step %s: unreadable results in %s: %s" % (name, path, e))
    return c


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--step", action="append", type=parse_step, default=[],
                    help="NAME:STATUS[:meson|junit:PATH], once per step")
    a = ap.parse_args(argv)
    c = summarize(a.step)
    if not a.step:
        c.fail("no steps were given")
    for n in c.names:
        print("FAILED:", n)
    print("%d passed, %d failed, %d skipped" % (c.passed, c.failed, c.skipped))
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
