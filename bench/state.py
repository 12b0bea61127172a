#!/usr/bin/env python3
"""Saved-state benchmark: cloison-vmm side by side with QEMU on the same test
guest, in the same run, cloison and QEMU runs alternating.

Each run boots the test guest with `touch=START-END count` (it writes every
page of 256 MiB, so the save has real data, then prints `RESULT count=N`
every 100 ms of running time) and, just after a count line arrived:

  save     cloison: control `save` {"path": DIR}, timed from the request to
           the worker's exit (status 5). QEMU: QMP `stop` then `migrate` to
           "exec:cat > FILE" (the counterpart of `virsh save`: pause, then
           stream to a file; max-bandwidth unlimited), timed from `stop` to
           the MIGRATION event `completed`.
           A second row: cloison's own elapsed_us (its save ends with
           fdatasync) against QEMU's time to completed plus an fdatasync of
           FILE, so both sides end with the data on disk.
  size     what the save left on disk: allocated (st_blocks * 512) and
           apparent (st_size), every file of DIR for cloison, FILE for QEMU.
  restore  exec of the worker -> the guest's next byte on COM1 (the next
           `RESULT count=` line), stdout a pipe. cloison: `--restore DIR`
           with the same options, twice from the same save: --restore-memory
           lazy and eager, the order alternating. QEMU: `-incoming
           "exec:cat FILE"` without -S; the source ran with
           migration.store-global-state=off, so the destination runs as soon
           as the incoming migration is complete. Each restore is checked:
           its first count follows the last one before the save. A third
           row has cloison-vmm's own figure, main() to the vCPUs running
           (its "restored: the guest runs N ms" line on stderr). Every
           cloison-vmm gets --cpuid-cache FILE, as cloisond's workers do;
           the boot before the save writes FILE, the restores read it.

  echo     (mode echo, the default besides count) the same save of a guest
           booted with `touch=START-END demo`, at its prompt; the restore
           is timed from exec to the prompt's answer to a CR written to
           COM1 every 2 ms from exec on (a byte that arrives while the VMM
           is still loading the saved UART may be dropped, so it repeats).
           The demo polls the UART every 2 ms.

The saved files were just written, so restores read them from the page
cache on both sides. The guest's count deadline passes while it is saved
(its clock runs on), so the next count line comes right after the
restored vCPU runs: the count and keystroke rows measure the same thing.

    bench/state.py [--build build] [--runs 5] [--big-runs 5] [--sizes 512,4096]
                   [--touch 256] [--modes count,echo] [--dir DIR]
"""
import argparse
import json
import os
import re
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QEMU = "qemu-system-x86_64"
QBOOT = "/usr/share/qemu/qboot.rom"
TOUCH_START = 16 << 20  # above the guest's own image, stacks and page tables
COUNT_RE = re.compile(rb"RESULT count=(\d+)\r?\n")
PERIOD = 0.100  # the guest's count period (running time)


def find(build, sub, name):
    p = os.path.join(build, sub, name)
    if not os.path.exists(p):
        sys.exit("bench/state.py: %s not built (run ninja -C build, or pass --build)" % p)
    return p


class Serial:
    """The guest's COM1 on the worker's stdout (a pipe)."""

    def __init__(self, proc, name):
        self.proc = proc
        self.name = name
        self.fd = proc.stdout.fileno()
        self.buf = b""
        self.first = None  # perf_counter() of the first byte
        self.counts = []  # (count, perf_counter() when its line arrived)

    def pump(self, timeout):
        """Reads what is there: True (data), None (nothing in time), False (EOF)."""
        r, _, _ = select.select([self.fd], [], [], timeout)
        if not r:
            return None
        chunk = os.read(self.fd, 65536)
        now = time.perf_counter()
        if not chunk:
            return False
        if self.first is None:
            self.first = now
        self.buf += chunk
        for m in COUNT_RE.finditer(self.buf, self._scanned()):
            self.counts.append((int(m.group(1)), now))
            self._scan_at = m.end()
        return True

    def _scanned(self):
        return getattr(self, "_scan_at", 0)

    def text(self):
        return self.buf.decode("utf-8", "replace")

    def wait(self, pred, timeout, what):
        deadline = time.perf_counter() + timeout
        while not pred():
            if b"RESULT fatal=" in self.buf or b"touch_ok=0" in self.buf:
                raise RuntimeError("%s: the guest failed:\n%s" % (self.name, self.text()[-2000:]))
            left = deadline - time.perf_counter()
            if left <= 0:
                raise RuntimeError("%s: %s within %ss did not come:\n%s"
                                   % (self.name, what, timeout, self.text()[-2000:]))
            if self.pump(min(left, 1.0)) is False:
                raise RuntimeError("%s exited (%s) waiting for %s:\n%s"
                                   % (self.name, self.proc.wait(), what, self.text()[-2000:]))

    def drain(self):
        """After the process exited: the rest of its output."""
        while self.pump(1.0):
            pass

    def wait_new_count(self, timeout, what="a count line"):
        """Waits for a count line newer than those already seen."""
        n = len(self.counts)
        self.wait(lambda: len(self.counts) > n, timeout, what)
        return self.counts[-1]


class Lines:
    """One JSON object a line over a unix socket (cloison control, QMP)."""

    def __init__(self, path, timeout=30):
        deadline = time.perf_counter() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                self.sock.close()
                if time.perf_counter() > deadline:
                    raise RuntimeError("%s did not appear" % path)
                time.sleep(0.01)
        self.buf = b""
        self.events = []

    def send(self, obj):
        self.sock.sendall(json.dumps(obj).encode() + b"\n")

    def recv(self, timeout=120):
        deadline = time.perf_counter() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.perf_counter()
            if left <= 0:
                raise RuntimeError("no message within %ss" % timeout)
            r, _, _ = select.select([self.sock], [], [], left)
            if r:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise RuntimeError("socket closed")
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def until(self, pred, timeout=300):
        while True:
            m = self.recv(timeout)
            if pred(m):
                return m
            self.events.append(m)

    def close(self):
        self.sock.close()


class Qmp(Lines):
    def __init__(self, path):
        super().__init__(path)
        self.recv()  # greeting
        self.cmd("qmp_capabilities")

    def cmd(self, name, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.send(msg)
        r = self.until(lambda m: "return" in m or "error" in m)
        if "error" in r:
            raise RuntimeError("QMP %s: %s" % (name, r["error"]))
        return r["return"]


def disk_usage(paths):
    alloc = apparent = 0
    for p in paths:
        st = os.stat(p)
        alloc += st.st_blocks * 512
        apparent += st.st_size
    return alloc, apparent


def stop(proc):
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def check_continues(serial, before, name):
    """The restored guest did not boot again: its first count follows the
    last one before the save (one more may have been in print)."""
    serial.wait(lambda: serial.counts, 60, "the first count after the restore")
    k = serial.counts[0][0]
    if k not in (before + 1, before + 2) or b"RESULT boot=ok" in serial.buf:
        raise RuntimeError("%s: restored count %d after %d:\n%s" % (name, k, before, serial.text()))


PROMPT = b"cloison> "


def ready(ser, mode):
    """Boots to the point of the save: after the touch, just after a count
    line (mode count) or at the demo prompt (mode echo). Returns (last count
    or 0, perf_counter() of that line)."""
    if mode == "count":
        ser.wait(lambda: b"RESULT touch_ok=1" in ser.buf and ser.counts, 600,
                 "touch and the first count")
        return ser.wait_new_count(10)
    ser.wait(lambda: b"RESULT touch_ok=1" in ser.buf and ser.buf.endswith(PROMPT), 600,
             "touch and the demo prompt")
    return 0, time.perf_counter()


def restore(cmd, mode, before, name, timeout, internal=None):
    """exec -> the first byte on COM1 (seconds). Mode count: the next count
    line, checked to follow `before`. Mode echo: a CR written to COM1 every
    2 ms from exec on (a byte that arrives while the VMM still loads the
    saved UART could be dropped, so it is repeated); the first byte is the
    demo prompt's answer."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE if mode == "echo" else subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        ser = Serial(p, name)
        if mode == "count":
            ser.wait(lambda: ser.first is not None, timeout, "the first serial byte")
            check_continues(ser, before, name)
        else:
            os.set_blocking(p.stdin.fileno(), False)
            deadline = t0 + timeout
            while ser.first is None:
                if time.perf_counter() > deadline:
                    raise RuntimeError("%s: no answer to a keystroke within %ss" % (name, timeout))
                try:
                    os.write(p.stdin.fileno(), b"\r")
                except BlockingIOError:
                    pass
                if ser.pump(0.002) is False:
                    raise RuntimeError("%s exited (%s)" % (name, p.wait()))
            ser.wait(lambda: PROMPT in ser.buf, 10, "the prompt again")
            if b"RESULT boot=ok" in ser.buf or not ser.buf.lstrip(b"\r").startswith(b"\n"):
                raise RuntimeError("%s: not the demo prompt's answer: %r" % (name, ser.buf[:200]))
    except RuntimeError as e:
        stop(p)
        raise RuntimeError("%s\nstderr: %s" % (e, p.stderr.read().decode()[-2000:]))
    stop(p)
    if internal is not None:
        # cloison-vmm's own figure: main() to the vCPUs running
        m = re.search(r"restored: the guest runs ([0-9.]+) ms", p.stderr.read().decode())
        internal.append(float(m.group(1)) / 1000 if m else float("nan"))
    return ser.first - t0


def cloison_round(vmm, guest, mem, cmdline, work, mode, run):
    """One save and one restore; returns a dict of figures."""
    state = os.path.join(work, "state")
    # the CPUID cache as cloisond gives every worker one (the boot below
    # fills it, so the restores read it)
    base = [vmm, "--kernel", guest, "--memory", "%dM" % mem, "--cpus", "1",
            "--cmdline", cmdline, "--serial", "stdio",
            "--cpuid-cache", os.path.join(work, "kvm-cpuid.cache")]
    ctl_a = os.path.join(work, "a.sock")
    p = subprocess.Popen(base + ["--control", ctl_a], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        ser = Serial(p, "cloison-vmm")
        ctl = Lines(ctl_a)
        before, t_line = ready(ser, mode)
        t0 = time.perf_counter()
        ctl.send({"id": 1, "cmd": "save", "path": state})
        reply = ctl.until(lambda m: m.get("id") == 1)
        if not reply.get("ok"):
            raise RuntimeError("cloison save failed: %s" % reply)
        rc = p.wait()
        t1 = time.perf_counter()
        if rc != 5:
            raise RuntimeError("cloison-vmm exited %d after save, not 5" % rc)
        ctl.close()
        ser.drain()  # a count line printed before the pause
        before = max([c for c, _ in ser.counts] or [0])
    finally:
        stop(p)
    files = [os.path.join(state, f) for f in os.listdir(state)]
    alloc, apparent = disk_usage(files)

    # Both memory modes from the same save (a restore leaves the files as
    # they were), the order alternating with the run.
    ctl_b = os.path.join(work, "b.sock")
    times, running = {}, {}
    for kind in (("lazy", "eager") if run % 2 == 0 else ("eager", "lazy")):
        own = []
        times[kind] = restore(base + ["--control", ctl_b, "--restore", state,
                                      "--restore-memory", kind], mode, before,
                              "cloison-vmm --restore (%s)" % kind, 120, own)
        running[kind] = own[0]
    shutil.rmtree(state)
    return {"save": t1 - t0, "save_reported": reply["result"]["elapsed_us"] / 1e6,
            "alloc": alloc, "apparent": apparent, "restore": times["lazy"],
            "restore_eager": times["eager"], "running_lazy": running["lazy"],
            "running_eager": running["eager"], "residual": max(0.0, PERIOD - (t0 - t_line))}


def qemu_base(guest, mem, cmdline):
    cmd = [QEMU, "-accel", "kvm", "-cpu", "host,-arch-capabilities", "-M", "pc",
           "-m", "%dM" % mem, "-smp", "1", "-kernel", guest, "-append", cmdline,
           "-nodefaults", "-display", "none", "-serial", "stdio", "-no-reboot"]
    if os.path.exists(QBOOT):
        cmd += ["-bios", QBOOT]
    return cmd


def qemu_round(guest, mem, cmdline, work, mode):
    path = os.path.join(work, "qemu.state")
    qmp_path = os.path.join(work, "qmp.sock")
    base = qemu_base(guest, mem, cmdline)
    p = subprocess.Popen(base + ["-qmp", "unix:%s,server=on,wait=off" % qmp_path,
                                 "-global", "migration.store-global-state=off"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    try:
        ser = Serial(p, "QEMU")
        qmp = Qmp(qmp_path)
        qmp.cmd("migrate-set-capabilities",
                capabilities=[{"capability": "events", "state": True}])
        qmp.cmd("migrate-set-parameters", **{"max-bandwidth": 1 << 40})
        before, t_line = ready(ser, mode)
        t0 = time.perf_counter()
        qmp.cmd("stop")
        qmp.cmd("migrate", uri="exec:cat > %s" % path)
        qmp.until(lambda m: m.get("event") == "MIGRATION"
                  and m["data"]["status"] in ("completed", "failed"))
        t1 = time.perf_counter()
        # cloison's save ends with its data on disk (fdatasync); QEMU's does
        # not: the same end for QEMU's file, for the second row
        fd = os.open(path, os.O_RDONLY)
        os.fdatasync(fd)
        os.close(fd)
        t1s = time.perf_counter()
        st = qmp.cmd("query-migrate")
        if st.get("status") != "completed":
            raise RuntimeError("QEMU migration: %s" % st)
        qmp.cmd("quit")
        p.wait()
        ser.drain()
        before = max([c for c, _ in ser.counts] or [0])
    finally:
        stop(p)
    # cat may still be writing the tail: wait for the size to settle
    last = -1
    while os.path.getsize(path) != last:
        last = os.path.getsize(path)
        time.sleep(0.2)
    alloc, apparent = disk_usage([path])

    t_restore = restore(base + ["-incoming", "exec:cat %s" % path], mode, before,
                        "QEMU -incoming", 300)
    os.unlink(path)
    return {"save": t1 - t0, "save_synced": t1s - t0, "alloc": alloc, "apparent": apparent,
            "restore": t_restore, "residual": max(0.0, PERIOD - (t0 - t_line))}


def fmt_ms(s):
    return "%.1f ms" % (s * 1000) if s < 10 else "%.2f s" % s


def fmt_mib(b):
    return "%.1f MiB" % (b / (1 << 20))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.environ.get("CLOISON_BUILD", os.path.join(TOP, "build")))
    ap.add_argument("--runs", type=int, default=5, help="runs per side and mode (median), "
                    "sizes below 4 GiB")
    ap.add_argument("--big-runs", type=int, default=5, help="the same for sizes >= 4 GiB")
    ap.add_argument("--sizes", default="512,4096", help="guest sizes in MiB")
    ap.add_argument("--touch", type=int, default=256, help="MiB the guest writes before the save")
    ap.add_argument("--modes", default="count,echo", help="restore measurements: count (the "
                    "next count line), echo (the answer to a keystroke)")
    ap.add_argument("--dir", default=None, help="where the saves go (default: a temporary "
                    "directory under /var/tmp, a disk, not a tmpfs)")
    args = ap.parse_args()
    if not shutil.which(QEMU):
        sys.exit("bench/state.py: %s not installed (Debian package qemu-system-x86)" % QEMU)

    vmm = find(args.build, "src/vmm", "cloison-vmm")
    guest = find(args.build, "guest", "cloison-testguest")
    sizes = [int(s) for s in args.sizes.split(",")]
    modes = args.modes.split(",")
    if not set(modes) <= {"count", "echo"} or "count" not in modes:
        sys.exit("bench/state.py: --modes is count or count,echo")
    touch = "touch=%#x-%#x" % (TOUCH_START, TOUCH_START + (args.touch << 20))
    cmdlines = {"count": touch + " count", "echo": touch + " demo"}
    work = tempfile.mkdtemp(prefix="cloison-bench-state.", dir=args.dir or "/var/tmp")
    results = {}
    try:
        for mem in sizes:
            n = args.runs if mem < 4096 else args.big_runs
            res = {(m, side): [] for m in modes for side in ("cloison", "qemu")}
            for i in range(n):
                for m in modes:
                    res[m, "cloison"].append(cloison_round(vmm, guest, mem, cmdlines[m], work, m, i))
                    res[m, "qemu"].append(qemu_round(guest, mem, cmdlines[m], work, m))
                    print("%d MiB %s run %d: cloison %s | QEMU %s" % (
                        mem, m, i + 1,
                        " ".join("%s=%.4g" % kv for kv in res[m, "cloison"][-1].items()),
                        " ".join("%s=%.4g" % kv for kv in res[m, "qemu"][-1].items())),
                        file=sys.stderr, flush=True)
            results[mem] = (n, res)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    qv = subprocess.run([QEMU, "--version"], capture_output=True, text=True).stdout
    print("test guest %s, 1 vCPU, cmdline '%s' (and '%s' for the keystroke rows); QEMU %s "
          "-M pc%s; medians, cloison and QEMU runs alternating"
          % (os.path.relpath(guest, TOP), cmdlines["count"], cmdlines["echo"],
             qv.split("\n")[0].replace("QEMU emulator version ", ""),
             " + qboot" if os.path.exists(QBOOT) else ""))
    print()
    print("| guest | metric | cloison-vmm | QEMU | QEMU / cloison |")
    print("|---|---|---|---|---|")
    summary = {}
    for mem, (n, res) in results.items():

        def med(mode, side, key):
            return statistics.median(r[key] for r in res[mode, side])

        def row(label, mode, key, fmt, ckey=None):
            c = med(mode, "cloison", ckey or key)
            q = med(mode, "qemu", key)
            summary[mem, label] = (c, q)
            print("| %d MiB (%d runs) | %s | %s | %s | %.2fx |" % (
                mem, n, label, fmt(c), fmt(q), q / c if c else float("inf")))

        row("save: request -> worker exit / migration completed", "count", "save", fmt_ms)
        row("save to data on disk: cloison's elapsed_us / QEMU completed + fdatasync",
            "count", "save_synced", fmt_ms, ckey="save_reported")
        row("save size, allocated (st_blocks*512)", "count", "alloc", fmt_mib)
        row("save size, apparent (st_size)", "count", "apparent", fmt_mib)
        row("restore (lazy): exec -> next serial byte (next count line)", "count", "restore",
            fmt_ms)
        row("restore (eager): exec -> next serial byte (next count line)", "count", "restore",
            fmt_ms, ckey="restore_eager")
        for kind in ("lazy", "eager"):
            c = med("count", "cloison", "running_" + kind)
            print("| %d MiB (%d runs) | restore (%s): worker start -> vCPUs running "
                  "(cloison-vmm's own log line; QEMU has no counterpart) | %s | | |"
                  % (mem, n, kind, fmt_ms(c)))
        if "echo" in modes:
            row("restore (lazy): exec -> answer to a keystroke (demo prompt)", "echo",
                "restore", fmt_ms)
            row("restore (eager): exec -> answer to a keystroke (demo prompt)", "echo",
                "restore", fmt_ms, ckey="restore_eager")
    print()
    if 512 in results:
        # The target is "to running": the worker's own figure, over
        # every restore of the run (count and echo). The ratio to QEMU needs
        # a byte both sides print: the keystroke's answer (or the count).
        n, res = results[512]
        running = statistics.median(r["running_lazy"] for (mode, side), rs in res.items()
                                    if side == "cloison" for r in rs)
        label = ("restore (lazy): exec -> answer to a keystroke (demo prompt)" if "echo" in modes
                 else "restore (lazy): exec -> next serial byte (next count line)")
        c, q = summary[512, label]
        b, _ = summary[512, "restore (lazy): exec -> next serial byte (next count line)"]
        print("target (512 MiB): lazy restore to running <= 2 ms (worker start -> vCPUs "
              "running, median of every lazy restore): %s (%s; exec -> next serial byte %s, "
              "exec -> keystroke answer %s); >= 20x faster than QEMU (%s): %s (%.1fx)"
              % ("met" if running <= 0.002 else "MISSED", fmt_ms(running), fmt_ms(b),
                 fmt_ms(c) if "echo" in modes else "not run", label.split(": ", 1)[1],
                 "met" if q / c >= 20 else "MISSED", q / c))

if __name__ == "__main__":
    main()
