#!/usr/bin/env python3
"""How fast memory comes back from a guest (issue 12): the test guest's
virtio-balloon driver (`balloon=SIZE,free=SIZE`, docs/testguest.md) under
cloison-vmm (--balloon on) and under QEMU (-device virtio-balloon-pci with
free-page-reporting=on), the same guest binary, memory size and host, runs
alternated.

The guest fills SIZE of RAM, waits for the host's target, inflates SIZE
worth of 4 KiB page numbers (1024 per buffer, one buffer in flight, as
Linux's driver sends 256) and times it from the target it saw to the last
buffer the device gave back (RESULT balloon_inflate_us); the device returns
each page to the host before it answers (cloison: fallocate PUNCH_HOLE on
the memfd; QEMU: ram_block_discard_range). Then it fills FREE more and
reports it free in 4 MiB segments (RESULT balloon_report_us). Each run also
reads the VMM's RSS before and after the inflate: the memory really left.
GiB/s = bytes returned / time, median of the runs; ratio = cloison / QEMU
(above 1: cloison returns memory faster).

Usage: bench/balloon.py [RUNS] [SIZE_MIB]   (default 5 runs, 1024 MiB)
"""
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("CLOISON_BUILD", os.path.join(TOP, "build"))
VMM = os.path.join(BUILD, "src", "vmm", "cloison-vmm")
GUEST = os.path.join(BUILD, "guest", "cloison-testguest")
QEMU = "qemu-system-x86_64"
QBOOT = "/usr/share/qemu/qboot.rom"
MiB = 1 << 20
RESULT_RE = re.compile(r"^RESULT ([a-z0-9_]+)=(.*?)\r?$", re.M)


def results(path):
    try:
        with open(path, errors="replace") as f:
            return dict(RESULT_RE.findall(f.read()))
    except OSError:
        return {}


def wait_key(path, key, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = results(path)
        if key in r:
            return r
        if proc.poll() is not None:
            raise RuntimeError("the VMM exited (%s) before %s:\n%s" % (
                proc.returncode, key, open(path, errors="replace").read()[-2000:]))
        time.sleep(0.01)
    raise RuntimeError("no %s within %ss:\n%s" % (key, timeout, open(path).read()[-2000:]))


def rss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Line:
    """One JSON-lines (cloison) or QMP (QEMU) control connection."""

    def __init__(self, path, qmp=False):
        deadline = time.time() + 30
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX)
                self.s.connect(path)
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.01)
        self.f = self.s.makefile("rw")
        if qmp:
            self.f.readline()  # greeting
            self.call({"execute": "qmp_capabilities"})

    def call(self, msg):
        self.f.write(json.dumps(msg) + "\n")
        self.f.flush()
        while True:
            r = json.loads(self.f.readline())
            if "event" not in r:
                return r

    def close(self):
        self.s.close()


def run_one(kind, size, free, ram, tmp):
    serial = os.path.join(tmp, "%s.serial" % kind)
    ctl = os.path.join(tmp, "%s.sock" % kind)
    for p in (serial, ctl):
        if os.path.exists(p):
            os.unlink(p)
    word = "balloon=%dM,free=%dM count" % (size // MiB, free // MiB)
    if kind == "cloison":
        cmd = [VMM, "--kernel", GUEST, "--cmdline", word, "--memory", "%dM" % (ram // MiB),
               "--serial", "file:" + serial, "--control", ctl, "--balloon", "on"]
    else:
        cmd = [QEMU, "-enable-kvm", "-cpu", "host,-arch-capabilities", "-M", "q35",
               "-m", "%dM" % (ram // MiB), "-kernel", GUEST, "-append", word, "-display", "none",
               "-nodefaults", "-no-reboot", "-serial", "file:" + serial,
               "-qmp", "unix:%s,server=on,wait=off" % ctl,
               "-device", "virtio-balloon-pci,disable-legacy=on,free-page-reporting=on"]
        if os.path.exists(QBOOT):
            cmd += ["-bios", QBOOT]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_key(serial, "balloon_touched", p)
        c = Line(ctl, qmp=kind == "qemu")
        before = rss(p.pid)

        def target(assigned):
            if kind == "cloison":
                r = c.call({"cmd": "balloon", "assigned": assigned})
                assert r.get("ok"), r
            else:
                r = c.call({"execute": "balloon", "arguments": {"value": assigned}})
                assert "return" in r, r

        target(ram - size)
        r = wait_key(serial, "balloon_inflated", p)
        after = rss(p.pid)
        inflate_us = int(r["balloon_inflate_us"])
        target(ram)
        wait_key(serial, "balloon_free_touched", p)
        before_report = rss(p.pid)
        target(ram - free)
        r = wait_key(serial, "balloon_reported", p)
        report_us = int(r["balloon_report_us"])
        reported = before_report - rss(p.pid)
        target(ram)
        wait_key(serial, "balloon_done", p)
        if int(r["balloon_inflated"]) * 4096 != size:
            raise RuntimeError("%s: inflated %s pages" % (kind, r["balloon_inflated"]))
        c.close()
        return inflate_us, report_us, before - after, reported
    finally:
        p.kill()
        p.wait()


def gibs(nbytes, us):
    return nbytes / (1 << 30) / (us / 1e6)


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    size = (int(sys.argv[2]) if len(sys.argv) > 2 else 1024) * MiB
    free = size // 2
    ram = size + free + 512 * MiB
    if not shutil.which(QEMU):
        sys.exit("%s is not installed (Debian package qemu-system-x86)" % QEMU)
    tmp = tempfile.mkdtemp(prefix="bal")
    res = {"cloison": [], "qemu": []}
    try:
        for i in range(runs):
            for kind in (("cloison", "qemu") if i % 2 == 0 else ("qemu", "cloison")):
                inf, rep, dropped, reported = run_one(kind, size, free, ram, tmp)
                res[kind].append((inf, rep, dropped, reported))
                print("run %d %-7s inflate %5d MiB in %7.1f ms (%.2f GiB/s, RSS -%d MiB), "
                      "report %d MiB in %7.1f ms (%.2f GiB/s, RSS -%d MiB)" % (
                          i + 1, kind, size // MiB, inf / 1000, gibs(size, inf), dropped // MiB,
                          free // MiB, rep / 1000, gibs(free, rep), reported // MiB),
                      flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    med = {}
    for kind in res:
        inf = statistics.median(r[0] for r in res[kind])
        rep = statistics.median(r[1] for r in res[kind])
        drop = statistics.median(r[2] for r in res[kind])
        rdrop = statistics.median(r[3] for r in res[kind])
        med[kind] = (gibs(size, inf), gibs(free, rep))
        print("%-7s median: inflate %.2f GiB/s (%.1f ms for %d MiB; RSS fell %d MiB), "
              "free page reporting %.2f GiB/s (%.1f ms for %d MiB; RSS fell %d MiB)" % (
                  kind, med[kind][0], inf / 1000, size // MiB, drop // MiB, med[kind][1],
                  rep / 1000, free // MiB, rdrop // MiB))
    print("ratio cloison/QEMU: inflate %.2fx, free page reporting %.2fx" % (
        med["cloison"][0] / med["qemu"][0], med["cloison"][1] / med["qemu"][1]))


if __name__ == "__main__":
    main()
