#!/usr/bin/python3
"""virtio-blk benchmark: the test guest's `blkbench` workload under
cloison-vmm and under QEMU (`-device virtio-blk-pci`, no vhost) on the
same raw file, in the same run, plus the host's own io_uring figure on that
file (bench/uring_ceiling.c) as the ceiling.

Cases (guest words bs=, qd=, secs=, blkbench=MODE; docs/testguest.md):

  4k-randread-qd1   4k-randread-qd32   4k-randwrite-qd1   4k-randwrite-qd32
  1m-seqread-qd8    1m-seqwrite-qd8

All three bypass the host page cache (cloison `--disk path=F,direct`, QEMU
`cache=none,aio=io_uring`, the ceiling O_DIRECT), so the figures are the
disk's and not memory copies. Each case runs --repeat times per peer,
interleaved, and the best run counts (the machine is shared). Prints
IOPS and MB/s, ours/qemu and ours/host.

With --image vhdx or vhd the guest disk is that image (made by qemu-img
from the raw file, every block allocated) for both cloison (the disk
library backend) and QEMU; the ceiling stays the raw file, and cloison
also runs on the raw file in the same rounds ("raw" columns), so the
image/raw ratio compares like with like.

--cache host runs all three through the host page cache instead (cloison
without `direct`, QEMU cache=writeback, the ceiling without O_DIRECT),
warmed by a first untimed run: the figures are then the I/O path's CPU
cost, not the disk's, which is where backends differ. --stat median
reports the median of the --repeat runs instead of the best.

usage: bench/disk_io.py [--build DIR] [--size 256M] [--secs 4] [--repeat 2]
                        [--dir /var/tmp] [--cases 4k-randread-qd1,...]
                        [--image raw|vhdx|vhd] [--cache none|host]
                        [--stat best|median]
"""
import argparse
import os
import pathlib
import re
import subprocess
import sys
import tempfile

TOP = pathlib.Path(__file__).resolve().parents[1]
MiB = 1024 * 1024

CASES = {
    "4k-randread-qd1": ("randread", "4K", 4096, 1),
    "4k-randread-qd32": ("randread", "4K", 4096, 32),
    "4k-randwrite-qd1": ("randwrite", "4K", 4096, 1),
    "4k-randwrite-qd32": ("randwrite", "4K", 4096, 32),
    "1m-seqread-qd8": ("seqread", "1M", MiB, 8),
    "1m-seqwrite-qd8": ("seqwrite", "1M", MiB, 8),
}


def find(build, name):
    for sub in ("src/vmm", "guest", "."):
        p = pathlib.Path(build) / sub / name
        if p.exists():
            return p
    sys.exit("%s not built under %s" % (name, build))


def results(text):
    return dict(re.findall(r"^RESULT ([a-z0-9_]+)=(.*?)\r?$", text, re.M))


def guest_cmdline(case, secs):
    mode, bs, _, qd = CASES[case]
    return "bs=%s qd=%d secs=%d blkbench=%s" % (bs, qd, secs, mode)


def run_guest(cmd, case, secs):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=secs * 10 + 120)
    r = results(p.stdout)
    if "blk_iops" not in r or r.get("blk_errors", "1") != "0":
        sys.exit("%s failed (status %d):\n%s\n%s" % (case, p.returncode, p.stdout[-2000:],
                                                    p.stderr[-2000:]))
    return int(r["blk_iops"]), int(r["blk_bytes"]) / (int(r["blk_ns"]) / 1e9) / 1e6


def run_cloison(vmm, guest, img, case, secs, cache="none"):
    disk = "path=%s" % img + (",direct" if cache == "none" else "")
    cmd = [vmm, "--kernel", guest, "--memory", "256M", "--serial", "stdio",
           "--cmdline", guest_cmdline(case, secs), "--disk", disk]
    return run_guest([str(c) for c in cmd], case, secs)


QEMU_FMT = {"raw": "raw", "vhdx": "vhdx", "vhd": "vpc"}


def run_qemu(guest, img, case, secs, fmt="raw", cache="none"):
    qcache = "none" if cache == "none" else "writeback"
    cmd = ["qemu-system-x86_64", "-enable-kvm", "-cpu", "host,-arch-capabilities", "-M", "q35", "-m", "256M",
           "-smp", "1", "-kernel", str(guest), "-append", guest_cmdline(case, secs),
           "-display", "none", "-nodefaults", "-serial", "stdio", "-no-reboot",
           "-drive", "file=%s,if=none,id=d0,format=%s,cache=%s,aio=io_uring" % (img, QEMU_FMT[fmt], qcache),
           "-device", "virtio-blk-pci,drive=d0,disable-legacy=on"]
    return run_guest(cmd, case, secs)


def run_host(tool, img, case, secs, cache="none"):
    mode, _, bs, qd = CASES[case]
    mode = {"seqread": "read", "seqwrite": "write"}.get(mode, mode)
    extra = ["direct"] if cache == "none" else []
    out = subprocess.run([str(tool), str(img), mode, str(bs), str(qd), str(secs)] + extra,
                         capture_output=True, text=True, check=True).stdout
    r = dict(re.findall(r"(\w+)=([0-9.]+)", out))
    return float(r["iops"]), float(r["mbps"])


def build_ceiling(workdir):
    tool = pathlib.Path(workdir) / "uring_ceiling"
    subprocess.run(["cc", "-O2", "-o", str(tool), str(TOP / "bench/uring_ceiling.c"), "-luring"],
                   check=True)
    return tool


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.environ.get("CLOISON_BUILD", str(TOP / "build")))
    ap.add_argument("--size", default="256M")
    ap.add_argument("--secs", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--image", default="raw", choices=sorted(QEMU_FMT))
    ap.add_argument("--cache", default="none", choices=("none", "host"))
    ap.add_argument("--stat", default="best", choices=("best", "median"))
    a = ap.parse_args()
    vmm, guest = find(a.build, "cloison-vmm"), find(a.build, "cloison-testguest")
    size = int(a.size[:-1]) * {"M": MiB, "G": 1024 * MiB}[a.size[-1]]
    cases = a.cases.split(",")
    with tempfile.TemporaryDirectory(dir=a.dir, prefix="cloison-diskio-") as wd:
        tool = build_ceiling(wd)
        img = pathlib.Path(wd) / "disk.raw"
        with open(img, "wb") as f:  # real data everywhere: no sparse shortcuts
            block = os.urandom(MiB)
            for _ in range(size // MiB):
                f.write(block)
        disk = img
        if a.image != "raw":
            disk = pathlib.Path(wd) / ("disk." + a.image)
            opts = "subformat=dynamic" + (",force_size=on" if a.image == "vhd" else "")
            subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", QEMU_FMT[a.image], "-o",
                            opts, str(img), str(disk)], check=True)
        print("guest disk %s (%s, %d MiB, %s), ceiling on the raw file, guest %s, "
              "%ds per run, %s of %d" % (disk, a.image, size // MiB,
                                         "O_DIRECT" if a.cache == "none" else "page cache",
                                         guest, a.secs, a.stat, a.repeat))
        if a.cache == "host":  # warm the page cache with both files
            for f in (img, disk):
                with open(f, "rb") as fh:
                    while fh.read(8 * MiB):
                        pass
        image = a.image != "raw"
        hdr = "%-18s %10s %10s %10s %8s %8s   %9s %9s %9s" % (
            "case", "host IOPS", "qemu IOPS", "ours IOPS", "ours/q", "ours/h",
            "host MB/s", "qemu MB/s", "ours MB/s")
        if image:
            hdr += " %10s %8s" % ("raw IOPS", "ours/raw")
        print(hdr)
        print("-" * len(hdr))
        for case in cases:
            peers = [("host", lambda: run_host(tool, img, case, a.secs, a.cache)),
                     ("qemu", lambda: run_qemu(guest, disk, case, a.secs, a.image, a.cache)),
                     ("ours", lambda: run_cloison(vmm, guest, disk, case, a.secs, a.cache))]
            if image:
                peers.append(("raw", lambda: run_cloison(vmm, guest, img, case, a.secs,
                                                         a.cache)))
            runs = {p: [] for p, _ in peers}
            for _ in range(a.repeat):
                for peer, fn in peers:
                    runs[peer].append(fn())
            if a.stat == "best":
                best = {p: max(r) for p, r in runs.items()}
            else:
                best = {p: sorted(r)[len(r) // 2] for p, r in runs.items()}
            h, q, o = best["host"], best["qemu"], best["ours"]
            line = "%-18s %10.0f %10.0f %10.0f %7.2fx %7.0f%%   %9.1f %9.1f %9.1f" % (
                case, h[0], q[0], o[0], o[0] / q[0] if q[0] else 0,
                100.0 * o[0] / h[0] if h[0] else 0, h[1], q[1], o[1])
            if image:
                r = best["raw"]
                line += " %10.0f %7.0f%%" % (r[0], 100.0 * o[0] / r[0] if r[0] else 0)
            print(line, flush=True)


if __name__ == "__main__":
    main()
