#!/usr/bin/env python3
"""Start-up benchmark: cloison-vmm side by side with QEMU on the same test
guest, in the same run.

For each VMM, several runs of the test guest with an empty command line
(boot facts, then ACPI power-off) measure
  exec -> the guest's first byte on COM1, and exec -> the process exits;
then one run with `run=serve` measures the worker's memory overhead: its
PSS minus the resident part of guest RAM (the memfd mapping for cloison,
the RAM block for QEMU), read from /proc/PID/smaps once the guest booted.
As root, a second cloison row runs the worker in its sandbox (--jail, what
cloisond does): its overhead adds the supervisor's RSS to the jailed
worker's.

Prints a table with medians and QEMU/cloison ratios.

    bench/start.py [--build build] [--runs 5] [--qemu-runs 3] [--memory 256]
"""
import argparse
import os
import re
import select
import signal
import statistics
import subprocess
import sys
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def find(build, sub, name):
    p = os.path.join(build, sub, name)
    if not os.path.exists(p):
        sys.exit("bench/start.py: %s not built (run make, or pass --build)" % p)
    return p


def cloison_cmd(vmm, guest, mem, cmdline):
    return [vmm, "--kernel", guest, "--memory", "%dM" % mem, "--cpus", "1",
            "--cmdline", cmdline, "--serial", "stdio"]


QBOOT = "/usr/share/qemu/qboot.rom"


def qemu_cmd(guest, mem, cmdline, machine, bios=None):
    """QEMU with its default firmware (SeaBIOS) or, with bios=QBOOT, qboot:
    the fastest firmware QEMU ships, so the comparison is not just against
    a slow BIOS."""
    cmd = ["qemu-system-x86_64", "-enable-kvm", "-cpu", "host,-arch-capabilities", "-M", machine,
           "-m", str(mem), "-smp", "1", "-kernel", guest, "-append", cmdline,
           "-nodefaults", "-display", "none", "-serial", "stdio", "-no-reboot"]
    if bios:
        cmd += ["-bios", bios]
    return cmd


def timed_run(cmd, timeout=300):
    """exec -> first stdout byte, exec -> exit (seconds); checks the guest
    really booted and powered off."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    fd = p.stdout.fileno()
    first = None
    out = b""
    deadline = t0 + timeout
    while True:
        left = deadline - time.perf_counter()
        if left <= 0:
            p.kill()
            raise RuntimeError("%s: no power-off within %ss" % (cmd[0], timeout))
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        if first is None:
            first = time.perf_counter() - t0
        out += chunk
    p.wait()
    end = time.perf_counter() - t0
    text = out.decode("utf-8", "replace")
    if "RESULT boot=ok" not in text or "RESULT poweroff=1" not in text:
        raise RuntimeError("%s: the guest did not boot and power off:\n%s" % (cmd[0], text[-2000:]))
    if not text.startswith("cloison-testguest"):
        raise RuntimeError("%s: the first bytes were not the guest's: %r" % (cmd[0], text[:80]))
    return first, end


def smaps_rss(pid, guest_mapping):
    """(total PSS, PSS of guest RAM) in bytes from /proc/PID/smaps."""
    total = guest = 0
    cur_is_guest = False
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$", line)
            if m:
                size = int(m.group(2), 16) - int(m.group(1), 16)
                cur_is_guest = guest_mapping(size, m.group(3))
                continue
            # PSS: the sandbox's supervisor shares the binary and libc
            # pages with its worker; RSS would count them twice.
            if line.startswith("Pss:"):
                kb = int(line.split()[1]) * 1024
                total += kb
                if cur_is_guest:
                    guest += kb
    return total, guest


def overhead(cmd, guest_mapping, timeout=300):
    """Boots the guest with run=serve, then measures RSS - guest RAM RSS."""
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    out = b""
    deadline = time.perf_counter() + timeout
    try:
        while b"serving" not in out:
            if time.perf_counter() > deadline:
                raise RuntimeError("%s: the guest did not start serving" % cmd[0])
            r, _, _ = select.select([p.stdout], [], [], 1)
            if r:
                chunk = os.read(p.stdout.fileno(), 65536)
                if not chunk:
                    raise RuntimeError("%s exited early:\n%s" % (cmd[0], out.decode()[-2000:]))
                out += chunk
        time.sleep(0.5)
        total, guest = smaps_rss(p.pid, guest_mapping)
        try:  # --jail: p is the supervisor; the VM runs in its child
            with open("/proc/%d/task/%d/children" % (p.pid, p.pid)) as f:
                kids = [int(x) for x in f.read().split()]
        except OSError:
            kids = []
        for k in kids:
            t, g = smaps_rss(k, guest_mapping)
            total, guest = total + t, guest + g
        return total, guest
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()


def median(xs):
    return statistics.median(xs)


def fmt_ms(s):
    return "%.1f ms" % (s * 1000) if s < 10 else "%.2f s" % s


def fmt_mib(b):
    return "%.2f MiB" % (b / (1 << 20))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(TOP, "build"))
    ap.add_argument("--runs", type=int, default=5, help="cloison-vmm runs (median)")
    ap.add_argument("--qemu-runs", type=int, default=3, help="QEMU runs (median; each ~30 s "
                    "on hosts without VT-x/AMD-V)")
    ap.add_argument("--memory", type=int, default=256, help="guest MiB")
    ap.add_argument("--machine", default="pc", help="QEMU machine type (pc or q35)")
    args = ap.parse_args()

    vmm = find(args.build, "src/vmm", "cloison-vmm")
    guest = find(args.build, "guest", "cloison-testguest")
    mem = args.memory

    peers = {"cloison-vmm": lambda c: cloison_cmd(vmm, guest, mem, c)}
    if os.geteuid() == 0:
        peers["cloison-vmm --jail"] = lambda c: cloison_cmd(vmm, guest, mem, c) + ["--jail"]
    peers["QEMU (SeaBIOS)"] = lambda c: qemu_cmd(guest, mem, c, args.machine)
    if os.path.exists(QBOOT):
        peers["QEMU (qboot)"] = lambda c: qemu_cmd(guest, mem, c, args.machine, QBOOT)
    runs = {k: [] for k in peers}
    mine = [k for k in peers if k.startswith("cloison")]
    # cloison with and without the sandbox alternate, run by run
    for _ in range(args.runs):
        for name in mine:
            runs[name].append(timed_run(peers[name]("")))
    for name, cmd in peers.items():
        for _ in range(0 if name in mine else args.qemu_runs):
            runs[name].append(timed_run(cmd("")))

    def cloison_ram(size, name):
        # A memfd, or the unnamed file on the worker's own huge-page tmpfs.
        return "memfd:cloison-guest" in name or (size == mem << 20 and name.startswith("/#"))

    def qemu_ram(size, name):
        # QEMU's RAM block: one anonymous mapping of at least the guest's size.
        return name == "" and mem << 20 <= size <= (mem << 20) + (64 << 20)

    ov = {k: overhead(cmd("run=serve"), cloison_ram if k in mine else qemu_ram)
          for k, cmd in peers.items()}

    first = {k: median([r[0] for r in v]) for k, v in runs.items()}
    end = {k: median([r[1] for r in v]) for k, v in runs.items()}
    over = {k: v[0] - v[1] for k, v in ov.items()}
    qemus = [k for k in peers if k not in mine]

    print("test guest %s, %d MiB, 1 vCPU; medians of %d (cloison-vmm) and %d (QEMU -M %s) runs"
          % (os.path.relpath(guest, TOP), mem, args.runs, args.qemu_runs, args.machine))
    print()
    print("| metric | " + " | ".join(peers) + " | "
          + " | ".join("%s / cloison" % q for q in qemus) + " |")
    print("|---" * (1 + len(peers) + len(qemus)) + "|")

    def row(label, values, fmt):
        cells = [fmt(values[k]) for k in peers]
        ratios = ["%.0fx" % (values[q] / values["cloison-vmm"]) for q in qemus]
        print("| %s | %s | %s |" % (label, " | ".join(cells), " | ".join(ratios)))

    row("exec -> first serial byte", first, fmt_ms)
    row("exec -> power off (exit)", end, fmt_ms)
    row("worker PSS - guest RAM", over, fmt_mib)
    print()
    # The target is against the fastest QEMU configuration measured.
    best_qemu = min(first[q] for q in qemus)
    ok_start = best_qemu / first["cloison-vmm"] >= 20
    ok_mem = over["cloison-vmm"] <= 2 << 20
    print("targets: start >= 20x faster than the fastest QEMU: %s; overhead <= 2 MiB: %s"
          % ("met" if ok_start else "MISSED", "met" if ok_mem else "MISSED"))
    if "cloison-vmm --jail" in peers:
        j = "cloison-vmm --jail"
        dt = (first[j] - first["cloison-vmm"]) * 1000
        dm = (over[j] - over["cloison-vmm"]) / 1024
        print("sandbox cost: %+.2f ms to the first serial byte (target <= 1 ms: %s), "
              "%+.0f KiB overhead (target <= 256 KiB: %s)"
              % (dt, "met" if dt <= 1 else "MISSED", dm, "met" if dm <= 256 else "MISSED"))


if __name__ == "__main__":
    main()
