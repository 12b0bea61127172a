"""Drive cloison-vmm from system tests: start it with options, capture COM1
to a file, wait for the test guest's `RESULT key=value` lines, talk to the
control socket, and always clean up.

    from vmmlib import Vmm

    with Vmm(vmm_bin, testguest, tmp_path, cpus=2, cmdline="count") as vm:
        vm.wait_result("boot")                 # -> "ok"
        ctl = vm.control()                     # ControlClient
        ctl.request("pause")                   # -> response dict
        ctl.wait_event(lambda e: e.get("state") == "paused")
        status = vm.wait_exit(30)              # exit status

Everything that waits takes a timeout and raises VmmTimeout (an
AssertionError, so pytest shows it as a test failure) with the tail of the
serial log and stderr.
"""
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import time

# Only complete lines: a line still being printed (no newline yet) would
# otherwise match at the end of the log with half its value.
RESULT_RE = re.compile(r"^RESULT ([A-Za-z0-9_.-]+)=(.*?)\r?\n", re.M)


class VmmTimeout(AssertionError):
    pass


def parse_results(text):
    """[(key, value), ...] for every RESULT line in text, in order."""
    return [(m.group(1), m.group(2)) for m in RESULT_RE.finditer(text)]


class Vmm:
    """One cloison-vmm process. Serial goes to workdir/serial.log unless
    serial= says otherwise; the control socket is workdir/control.sock
    unless control=False."""

    def __init__(self, vmm_bin, kernel, workdir, *, cmdline=None, memory=None, cpus=None,
                 initrd=None, name=None, control=True, serial=None, no_reboot=False,
                 pidfile=None, extra=(), env=None):
        self.workdir = str(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.serial_path = os.path.join(self.workdir, "serial.log")
        self.stderr_path = os.path.join(self.workdir, "vmm.stderr")
        self.control_path = os.path.join(self.workdir, "control.sock") if control else None
        args = [str(vmm_bin), "--kernel", str(kernel)]
        if cmdline is not None:
            args += ["--cmdline", cmdline]
        if memory is not None:
            args += ["--memory", str(memory)]
        if cpus is not None:
            args += ["--cpus", str(cpus)]
        if initrd is not None:
            args += ["--initrd", str(initrd)]
        if name is not None:
            args += ["--name", name]
        if self.control_path:
            args += ["--control", self.control_path]
        if serial is None:
            serial = "file:" + self.serial_path
            if os.path.exists(self.serial_path):
                os.unlink(self.serial_path)
        args += ["--serial", serial]
        if no_reboot:
            args.append("--no-reboot")
        if pidfile:
            args += ["--pidfile", str(pidfile)]
        args += [str(a) for a in extra]
        self.args = args
        self.env = env
        self.proc = None
        self.t_start = None
        self._clients = []

    # ---- life cycle -------------------------------------------------
    def start(self):
        self._stderr = open(self.stderr_path, "wb")
        self.t_start = time.monotonic()
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self._stderr,
                                     env=self.env)
        return self

    def __enter__(self):
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc):
        self.cleanup()
        return False

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_exit(self, timeout=60):
        """Waits for the worker to exit; returns its status."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise VmmTimeout("cloison-vmm still running after %ss\n%s" % (timeout, self.tails()))

    def kill(self, sig=signal.SIGKILL):
        if self.running():
            self.proc.send_signal(sig)

    def cleanup(self):
        for c in self._clients:
            c.close()
        self._clients = []
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        if getattr(self, "_stderr", None):
            self._stderr.close()
            self._stderr = None

    # ---- output ------------------------------------------------------
    def serial(self):
        try:
            with open(self.serial_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stderr(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def tails(self, n=3000):
        return "--- serial (tail) ---\n%s\n--- stderr (tail) ---\n%s" % (
            self.serial()[-n:], self.stderr()[-n:])

    def results(self):
        return parse_results(self.serial())

    def result_values(self, key):
        return [v for k, v in self.results() if k == key]

    def wait_for(self, predicate, timeout, what):
        """Polls predicate() until it returns something truthy; fails early if
        the worker exits meanwhile (after one last look)."""
        deadline = time.monotonic() + timeout
        while True:
            got = predicate()
            if got:
                return got
            fatal = self.result_values("fatal")
            if fatal:
                # The guest faulted and powers off: what we wait for won't come.
                raise VmmTimeout("the test guest faulted (RESULT fatal=%s) before %s\n%s" % (
                    fatal[0], what, self.tails()))
            if not self.running():
                got = predicate()
                if got:
                    return got
                raise VmmTimeout("cloison-vmm exited (status %s) before %s\n%s" % (
                    self.proc.returncode if self.proc else None, what, self.tails()))
            if time.monotonic() > deadline:
                raise VmmTimeout("timed out after %ss waiting for %s\n%s" % (
                    timeout, what, self.tails()))
            time.sleep(0.02)

    def wait_result(self, key, timeout=60, count=1):
        """Waits until `RESULT key=...` appeared count times; returns the last
        value."""
        def pred():
            vals = self.result_values(key)
            return vals[count - 1:count] or None
        return self.wait_for(pred, timeout, "RESULT %s (x%d)" % (key, count))[0]

    def wait_serial(self, pattern, timeout=60):
        """Waits for a regular expression in the serial log; returns the match."""
        rx = re.compile(pattern, re.M)
        return self.wait_for(lambda: rx.search(self.serial()), timeout,
                             "serial output /%s/" % pattern)

    def boot_facts(self):
        """The test guest's boot facts as a dict (first occurrence of each)."""
        facts = {}
        for k, v in self.results():
            facts.setdefault(k, v)
        return facts

    # ---- control socket ----------------------------------------------
    def control(self, timeout=10):
        """Connects to the control socket (waiting for it to appear)."""
        def try_connect():
            if not self.control_path or not os.path.exists(self.control_path):
                return None
            try:
                return ControlClient(self.control_path)
            except OSError:
                return None
        c = self.wait_for(try_connect, timeout, "the control socket")
        self._clients.append(c)
        return c


class ControlClient:
    """A control-socket client: request() returns the response with the
    same id; events that arrive meanwhile are kept in .events."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.buf = b""
        self.events = []
        self.responses = []
        self.next_id = 1
        self.closed = False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send_raw(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def _read_messages(self, timeout):
        """Reads what arrives within timeout; sorts it into events and
        responses. Returns False once the peer has closed."""
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return True
        except OSError:
            chunk = b""
        if not chunk:
            self.closed = True
            return False
        self.buf += chunk
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            if not line.strip():
                continue
            msg = json.loads(line)
            if "event" in msg:
                self.events.append(msg)
            else:
                self.responses.append(msg)
        return True

    def recv_response(self, want_id=None, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            for i, r in enumerate(self.responses):
                if want_id is None or r.get("id") == want_id:
                    return self.responses.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise VmmTimeout("no response (id %s) within %ss" % (want_id, timeout))
            if not self._read_messages(min(left, 0.5)) and not self.responses:
                raise VmmTimeout("control socket closed before a response (id %s)" % want_id)

    def request(self, cmd, timeout=30, fds=None, **fields):
        """fds: descriptors sent with the request (SCM_RIGHTS), for the
        commands that take files."""
        rid = self.next_id
        self.next_id += 1
        msg = {"id": rid, "cmd": cmd}
        msg.update(fields)
        data = (json.dumps(msg) + "\n").encode()
        if fds:
            socket.send_fds(self.sock, [data], list(fds))
        else:
            self.send_raw(data)
        return self.recv_response(rid, timeout)

    def wait_event(self, predicate, timeout=30):
        """Returns the first event (seen so far or arriving) for which
        predicate(event) is true; each event is returned at most once."""
        deadline = time.monotonic() + timeout
        seen = getattr(self, "_consumed", 0)
        while True:
            for i in range(seen, len(self.events)):
                if predicate(self.events[i]):
                    self._consumed = i + 1
                    return self.events[i]
            left = deadline - time.monotonic()
            if left <= 0:
                raise VmmTimeout("no matching event within %ss; got %r" % (timeout, self.events))
            if not self._read_messages(min(left, 0.5)):
                for i in range(seen, len(self.events)):
                    if predicate(self.events[i]):
                        self._consumed = i + 1
                        return self.events[i]
                raise VmmTimeout("control socket closed; events %r" % self.events)


# ---- the memory map cloison-vmm gives a guest (src/vmm/boot/e820.c) ----
GiB = 1 << 30
MiB = 1 << 20
LOWMEM_END = 3 * GiB
HIGHMEM_START = 4 * GiB


def expected_e820(mem):
    """[(start, end_exclusive, type)] for a VM with mem bytes of RAM."""
    low = min(mem, LOWMEM_END)
    m = [(0, 0x9fc00, 1), (0x9fc00, 0xe0000, 2), (0xe0000, 0x100000, 3),
         (0x100000, low, 1), (0xe0000000, 0xe0100000, 2)]
    if mem > low:
        m.append((HIGHMEM_START, HIGHMEM_START + mem - low, 1))
    return m


def parse_guest_e820(value):
    """The test guest's `RESULT e820=` value as [(start, end, type)]."""
    out = []
    for item in value.split(","):
        rng, typ = item.split(":")
        a, b = rng.split("-")
        out.append((int(a, 16), int(b, 16), int(typ)))
    return out


def ram_bytes(e820):
    return sum(b - a for a, b, t in e820 if t == 1)


def guest_ram_base(pid, size):
    """Where the worker maps guest RAM: the one mapping of guest-RAM size,
    shared (the memfd or the huge-page tmpfs file) or, after a lazy restore,
    private of the saved memory file; from /proc/PID/maps. The kernel may
    show it as several adjacent entries (a huge-page or madvise split), so
    runs of contiguous entries of one file are summed."""
    with open("/proc/%d/maps" % pid) as f:
        entries = []
        for line in f:
            parts = line.split()
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            path = parts[5] if len(parts) > 5 else ""
            lazy = parts[1] == "rw-p" and "/memory-" in path
            if parts[1] == "rw-s" or lazy:
                entries.append((lo, hi, int(parts[2], 16), parts[4], path))
    spans, run = [], None
    for lo, hi, off, inode, path in entries:
        if run and lo == run[1] and inode == run[3] and path == run[4] and off == run[2]:
            run = (run[0], hi, off + (hi - lo), inode, path)
        else:
            if run:
                spans.append(run)
            run = (lo, hi, off + (hi - lo), inode, path)
    if run:
        spans.append(run)
    bases = [r[0] for r in spans if r[1] - r[0] == size]
    assert len(bases) == 1, "no single guest-RAM mapping of %d bytes in the worker: %s" % (
        size, [(hex(r[0]), r[1] - r[0], r[4]) for r in spans])
    return bases[0]


def guest_ram_read(pid, size, gpa, n):
    """n bytes of guest RAM at guest-physical address gpa (below the PCI
    hole), read from outside through /proc/PID/mem."""
    with open("/proc/%d/mem" % pid, "rb", buffering=0) as mem:
        mem.seek(guest_ram_base(pid, size) + gpa)
        return mem.read(n)


def guest_ram_digest(pid, size):
    """SHA-256 of the worker's guest RAM, read from outside through
    /proc/PID/mem."""
    base = guest_ram_base(pid, size)
    h = hashlib.sha256()
    with open("/proc/%d/mem" % pid, "rb", buffering=0) as mem:
        for off in range(0, size, (4 << 20)):
            mem.seek(base + off)
            h.update(mem.read((4 << 20)))
    return h.hexdigest()
