#!/usr/bin/env python3
"""Counts results from meson's testlog.json files and pytest's JUnit XML and
prints the one summary line make check ends with. Exit status 1 if anything
failed (including a build step), else 0."""
import argparse
import json
import os
import sys
import xml.etree.ElementTree as ET


def count_meson(path, c):
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            r = json.loads(line).get("result", "")
            if r in ("OK", "EXPECTEDFAIL"):
                c["passed"] += 1
            elif r == "SKIP":
                c["skipped"] += 1
            else:
                c["failed"] += 1
                c["names"].append(json.loads(line).get("name", "?"))


def count_junit(path, c):
    root = ET.parse(path).getroot()
    for case in root.iter("testcase"):
        kinds = {child.tag for child in case}
        name = case.get("classname", "") + "::" + case.get("name", "")
        if "failure" in kinds or "error" in kinds:
            c["failed"] += 1
            c["names"].append(name)
        elif "skipped" in kinds:
            c["skipped"] += 1
        else:
            c["passed"] += 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps-failed", type=int, default=0)
    ap.add_argument("files", nargs="*")
    a = ap.parse_args()
    c = {"passed": 0, "failed": 0, "skipped": 0, "names": []}
    for p in a.files:
        if not os.path.exists(p):
            continue
        if p.endswith(".json"):
            count_meson(p, c)
        else:
            count_junit(p, c)
    c["failed"] += a.steps_failed
    for n in c["names"]:
        print("FAILED:", n)
    if a.steps_failed:
        print("FAILED: %d build step(s)" % a.steps_failed)
    print("%d passed, %d failed, %d skipped" % (c["passed"], c["failed"], c["skipped"]))
    return 1 if c["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
