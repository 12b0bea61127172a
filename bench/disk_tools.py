#!/usr/bin/python3
"""`cloison disk` against the qemu-img equivalents, wall time per run:

  convert   raw -> VHDX, VHDX -> raw, raw -> VHD, VHD -> raw
            (qemu-img convert -O vhdx|raw|vpc; the same block sizes: VHDX
            32 MiB, VHD 2 MiB, dynamic targets)
  create    an empty dynamic VHDX / VHD of the image size
  compact   a dynamic VHDX of the data whose second half was zeroed in place
            (qemu-img does not compact VHDX: it is timed with `qemu-img
            convert` to a new file, which is how one gets a compacted image
            from it)
  (merge has no peer: qemu-img opens neither a differencing VHDX nor a
  differencing VHD, so `qemu-img commit` cannot run on them)

on random data (every byte written) and sparse data (one random 64 KiB
every 1 MiB, the rest holes). Runs alternate (cloison, qemu-img, cloison,
...), each from freshly made inputs outside the timing, with the page cache
warm (inputs just written); the medians are printed with the ratio
qemu-img / cloison (> 1: cloison faster). The host may be shared: print
`uptime` beside the figures.

usage: bench/disk_tools.py [--build DIR] [--sizes 256M,4G] [--runs 5] [--dir /dev/shm]
                          [--data random,sparse] [--only SUBSTRING]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

MiB = 1 << 20


def parse_size(s):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(s[:-1]) * units[s[-1].upper()] if s[-1].upper() in units else int(s)


def sh(cmd):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if r.returncode:
        sys.exit("failed: %s\n%s%s" % (" ".join(map(str, cmd)), r.stdout, r.stderr))


def timed(cmd):
    t = time.monotonic()
    sh(cmd)
    return time.monotonic() - t


def make_raw(path, size, kind):
    with open(path, "wb") as f:
        f.truncate(size)
        if kind == "random":
            for off in range(0, size, 16 * MiB):
                f.seek(off)
                f.write(os.urandom(min(16 * MiB, size - off)))
        else:
            for off in range(0, size, MiB):
                f.seek(off)
                f.write(os.urandom(64 * 1024))


def cases(cl, q, w, raw, size):
    """(name, setup(), cloison cmd, qemu cmd, cleanup paths) per case."""
    vhdx, vhd = w + "/in.vhdx", w + "/in.vhd"
    out = w + "/out"

    def convert_in():
        for p in (vhdx, vhd):
            if not os.path.exists(p):
                sh([cl, "disk", "convert", raw, p, "--type", "dynamic"])

    def zeroed_vhdx():
        rm(w + "/cmp.vhdx")
        sh([cl, "disk", "convert", raw, w + "/cmp.vhdx", "--type", "dynamic"])
        sh([tools_io(cl), "write", w + "/cmp.vhdx", size // 2, w + "/zero.bin"])

    yield ("convert raw->vhdx", convert_in,
           [cl, "disk", "convert", raw, out + ".vhdx", "--block-size", "32M"],
           [q, "convert", "-f", "raw", "-O", "vhdx", "-o", "block_size=32M,subformat=dynamic",
            raw, out + ".vhdx"], [out + ".vhdx"])
    yield ("convert vhdx->raw", convert_in, [cl, "disk", "convert", vhdx, out + ".raw"],
           [q, "convert", "-f", "vhdx", "-O", "raw", vhdx, out + ".raw"], [out + ".raw"])
    yield ("convert raw->vhd", convert_in,
           [cl, "disk", "convert", raw, out + ".vhd", "--block-size", "2M"],
           [q, "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=dynamic", raw,
            out + ".vhd"], [out + ".vhd"])
    yield ("convert vhd->raw", convert_in, [cl, "disk", "convert", vhd, out + ".raw"],
           [q, "convert", "-f", "vpc", "-O", "raw", vhd, out + ".raw"], [out + ".raw"])
    yield ("create vhdx", None, [cl, "disk", "create", out + ".vhdx", "--size", str(size)],
           [q, "create", "-f", "vhdx", "-o", "block_size=32M", out + ".vhdx", str(size)],
           [out + ".vhdx"])
    yield ("create vhd", None, [cl, "disk", "create", out + ".vhd", "--size", str(size)],
           [q, "create", "-f", "vpc", "-o", "subformat=dynamic", out + ".vhd", str(size)],
           [out + ".vhd"])
    yield ("compact vhdx (qemu: convert)", zeroed_vhdx, [cl, "disk", "compact", w + "/cmp.vhdx"],
           [q, "convert", "-f", "vhdx", "-O", "vhdx", w + "/cmp.vhdx", out + ".vhdx"],
           [out + ".vhdx"])


_IO = {}


def tools_io(cl):
    """tests/tools/disk_io: writes a file into an image through the library."""
    return _IO["path"]


def rm(*paths):
    for p in paths:
        if os.path.exists(p):
            os.unlink(p)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(os.path.dirname(__file__), "..", "build"))
    ap.add_argument("--sizes", default="256M,4G")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    ap.add_argument("--only", default="", help="substring of the case names to run")
    ap.add_argument("--data", default="random,sparse")
    a = ap.parse_args()
    cl = os.path.join(a.build, "src", "cli", "cloison")
    _IO["path"] = os.path.join(a.build, "tests", "tools", "disk_io")
    q = shutil.which("qemu-img") or sys.exit("qemu-img is not installed (qemu-utils)")
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print("%-30s %-7s %-7s %10s %10s %7s" % ("case", "size", "data", "cloison", "qemu-img",
                                             "ratio"))
    for size_s in a.sizes.split(","):
        size = parse_size(size_s)
        for kind in a.data.split(","):
            w = tempfile.mkdtemp(prefix="disk-tools-", dir=a.dir)
            try:
                raw = w + "/src.raw"
                make_raw(raw, size, kind)
                with open(w + "/zero.bin", "wb") as f:
                    f.truncate(size // 2)
                for name, setup, ccmd, qcmd, outs in cases(cl, q, w, raw, size):
                    if a.only and a.only not in name:
                        continue
                    t = {"c": [], "q": []}
                    for i in range(2 * a.runs):
                        who = "c" if i % 2 == 0 else "q"
                        if setup:
                            setup()
                        rm(*outs)
                        t[who].append(timed(ccmd if who == "c" else qcmd))
                    mc, mq = statistics.median(t["c"]), statistics.median(t["q"])
                    print("%-30s %-7s %-7s %8.0f ms %8.0f ms %6.2fx" % (
                        name, size_s, kind, mc * 1000, mq * 1000, mq / mc), flush=True)
            finally:
                shutil.rmtree(w, ignore_errors=True)
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
