#!/usr/bin/python3
"""Disk-library benchmark: cloison's disk library (bench/disk_bench.c,
built as $BUILD/tests/tools/disk_bench) against `qemu-img bench` on the
same image files, in the same run, with the same access pattern:

  write-4k-rand  4 KiB writes into an EMPTY dynamic image, offsets
                 i*STRIDE mod size (STRIDE = 4 KiB * 100003, odd, so the
                 requests visit distinct 4 KiB slots in a scattered order)
  write-1m-seq   1 MiB sequential writes into an EMPTY dynamic image
  read-4k-rand   4 KiB reads, same scattered order, of a FULL dynamic image
  read-1m-seq    1 MiB sequential reads of a full dynamic image

each for VHDX and VHD, plus the raw file as the ceiling (both tools).
Both tools get the same count, request size, step and queue depth (qemu-img
bench's default depth 64; our bench runs 64 threads since the library's
calls are synchronous), and both use the page cache (qemu-img bench's
default cache mode, writeback). Each tool starts from its own copy of the
same file: a fresh empty dynamic image made by `cloison disk create` for
each write run, a copy of one full image (made by `cloison disk convert`
from random data) for the read runs; qemu-img opens our files. Every case runs --repeat
times and the best run counts. Prints MiB/s (each tool's own clock), the
CPU time (user + system, from wait4) each process used, and the ratios:
on a loaded shared host the wall-clock figures swing with scheduling while
the CPU time per run stays put, so both are shown.

usage: bench/disk_lib.py [--build DIR] [--size 512M] [--count N] [--repeat 3]
                         [--dir /dev/shm] [--formats vhdx,vhd]
"""
import argparse
import os
import pathlib
import random
import resource
import re
import shutil
import subprocess
import sys
import tempfile

TOP = pathlib.Path(__file__).resolve().parents[1]
MiB = 1024 * 1024
STRIDE_SLOTS = 100003


def sh(cmd):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if r.returncode:
        sys.exit("failed: %s\n%s%s" % (" ".join(map(str, cmd)), r.stdout, r.stderr))
    return r.stdout


def timed(cmd):
    """Runs a bench program; returns (its stdout, the CPU seconds - user +
    system - it used, from wait4)."""
    p = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    out, err = p.communicate()
    # communicate() reaped it, so its rusage is in RUSAGE_CHILDREN now
    if p.returncode:
        sys.exit("failed: %s\n%s%s" % (" ".join(map(str, cmd)), out, err))
    return out


def child_cpu():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def seconds(out):
    m = re.search(r"Run completed in ([0-9.]+) seconds", out)
    if not m:
        sys.exit("cannot parse bench output:\n" + out)
    return float(m.group(1))


def bench_args(case, size, count):
    if case.endswith("4k-rand"):
        n = count
        return ["-c", n, "-s", 4096, "-S", 4096 * STRIDE_SLOTS], n * 4096
    n = size // MiB
    return ["-c", n, "-s", MiB, "-S", MiB], n * MiB


def measure(cmd, nbytes):
    """(MiB/s by the tool's own wall clock, CPU seconds the process used)."""
    before = child_cpu()
    out = timed(cmd)
    return nbytes / seconds(out) / MiB, child_cpu() - before


def run_ours(tools, case, image, qfmt, size, count):
    args, nbytes = bench_args(case, size, count)
    extra = ["--raw"] if qfmt == "raw" else []
    cmd = [tools / "disk_bench", "-d", 64] + args + extra
    if case.startswith("write"):
        cmd.append("-w")
    return measure(cmd + [image], nbytes)


def run_qemu(case, image, qfmt, size, count):
    args, nbytes = bench_args(case, size, count)
    cmd = ["qemu-img", "bench", "-f", qfmt, "-d", 64] + args
    if case.startswith("write"):
        cmd.append("-w")
    return measure(cmd + [image], nbytes)


def make_full_raw(path, size):
    """Random data everywhere (no zero 64 KiB granule), so every block of
    an image converted from it is allocated."""
    rnd = random.Random(1)
    chunk = rnd.randbytes(4 * MiB)
    with open(path, "wb") as f:
        for off in range(0, size, len(chunk)):
            f.write(chunk[: min(len(chunk), size - off)])


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.environ.get("CLOISON_BUILD", TOP / "build"))
    ap.add_argument("--size", default="512M")
    ap.add_argument("--count", type=int, default=75000, help="4 KiB requests per run")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default="/dev/shm",
                    help="where the images go (default tmpfs: this host's ext4 discards on unlink, which makes deleting 1 GiB files take minutes)")
    ap.add_argument("--formats", default="vhdx,vhd")
    a = ap.parse_args()
    build = pathlib.Path(a.build).resolve()
    cli, tools = build / "src/cli/cloison", build / "tests/tools"
    for p in (cli, tools / "disk_bench"):
        if not p.exists():
            sys.exit("%s is not built (ninja -C %s)" % (p, build))
    if not shutil.which("qemu-img"):
        sys.exit("qemu-img is not installed: it is the benchmark peer")
    units = {"K": 1024, "M": MiB, "G": 1024 * MiB}
    size = int(a.size[:-1]) * units[a.size[-1].upper()] if a.size[-1].isalpha() else int(a.size)

    work = pathlib.Path(tempfile.mkdtemp(prefix="disk-bench-", dir=a.dir))
    rows = []
    try:
        full_raw = work / "source.raw"
        make_full_raw(full_raw, size)
        fmts = [f for f in a.formats.split(",") if f]
        for fmt in ["raw"] + fmts:
            qfmt = {"vhdx": "vhdx", "vhd": "vpc", "raw": "raw"}[fmt]
            full = work / ("full." + fmt)
            if fmt == "raw":
                full = full_raw
            else:
                sh([cli, "disk", "convert", full_raw, full, "--type", "dynamic"])
            for case in ("write-4k-rand", "write-1m-seq", "read-4k-rand", "read-1m-seq"):
                src = full
                best = {"ours": 0.0, "qemu": 0.0}
                cpu = {"ours": 1e9, "qemu": 1e9}
                for _ in range(a.repeat):
                    for who in ("ours", "qemu"):
                        img = work / ("run-%s.%s" % (who, fmt))
                        if case.startswith("write"):
                            # a fresh empty image, made the same way each time
                            if img.exists():
                                img.unlink()
                            sh([cli, "disk", "create", img, "--size", size,
                                "--type", "dynamic"])
                        elif not img.exists():
                            shutil.copyfile(src, img)
                        if who == "ours":
                            v, c = run_ours(tools, case, img, qfmt, size, a.count)
                        else:
                            v, c = run_qemu(case, img, qfmt, size, a.count)
                        best[who] = max(best[who], v)
                        cpu[who] = min(cpu[who], c)
                for who in ("ours", "qemu"):
                    (work / ("run-%s.%s" % (who, fmt))).unlink()
                rows.append((fmt, case, best["ours"], best["qemu"], cpu["ours"], cpu["qemu"]))
                print("%-5s %-14s ours %8.1f MiB/s %6.3f s CPU  qemu-img %8.1f MiB/s %6.3f s CPU"
                      "  ours/qemu %5.2f (CPU %5.2f)" % (
                          fmt, case, best["ours"], cpu["ours"], best["qemu"], cpu["qemu"],
                          best["ours"] / best["qemu"], cpu["qemu"] / cpu["ours"]),
                      flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    raw = {case: (o, q, co, cq) for fmt, case, o, q, co, cq in rows if fmt == "raw"}
    print()
    print("| format | case | cloison MiB/s | qemu-img MiB/s | cloison/qemu-img | "
          "cloison/raw | CPU s cloison | CPU s qemu-img | CPU qemu-img/cloison | "
          "CPU raw/format (cloison) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for fmt, case, o, q, co, cq in rows:
        ro, rq, rco, rcq = raw[case]
        print("| %s | %s | %.0f | %.0f | %.2f | %.0f %% | %.3f | %.3f | %.2f | %.0f %% |" % (
            fmt, case, o, q, o / q, 100 * o / ro, co, cq, cq / co, 100 * rco / co))


if __name__ == "__main__":
    main()
