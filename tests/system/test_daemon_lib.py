"""Helpers for the cloisond system tests (imported by test_daemon_*.py and
test_cli_vm*.py): a daemon with a private state dir and socket, the real CLI
against it, raw HTTP over the unix socket, and console reading. No tests
here: pytest collects this module and finds none."""
import http.client
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import binary, run


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=60):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.path)
        self.sock = s


def _parent(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


class Daemon:
    """A cloisond on a private state dir; the socket lives in a short /tmp
    dir because sun_path holds 108 bytes."""

    def __init__(self, state_dir, extra_args=()):
        self.bin = binary("cloisond")
        self.cli_bin = binary("cloison")
        self.vmm = binary("cloison-vmm")
        self.guest = binary("cloison-testguest")
        self.state_dir = str(state_dir)
        self.sockdir = tempfile.mkdtemp(prefix="cld")
        os.chmod(self.sockdir, 0o755)
        self.socket = os.path.join(self.sockdir, "api.sock")
        self.extra_args = list(extra_args)
        self.proc = None
        self.log_path = os.path.join(self.sockdir, "cloisond.log")

    def start(self):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(self.bin), "--state-dir", self.state_dir, "--socket", self.socket,
             "--vmm", str(self.vmm)] + self.extra_args,
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                pytest.fail("cloisond exited with %d:\n%s" % (self.proc.returncode, self.log()))
            try:
                s = socket.socket(socket.AF_UNIX)
                s.connect(self.socket)
                s.close()
                return self
            except OSError:
                time.sleep(0.02)
        pytest.fail("cloisond did not listen on %s:\n%s" % (self.socket, self.log()))

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def stop(self, sig=signal.SIGQUIT, timeout=60):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def cli(self, *args, user=None, timeout=120, stdin=None):
        cmd = [str(self.cli_bin)] + [str(a) for a in args]
        env = dict(os.environ, CLOISON_SOCKET=self.socket)
        if user:
            cmd = ["setpriv", "--reuid=" + user, "--regid=" + user, "--init-groups",
                   "--reset-env", "env", "CLOISON_SOCKET=" + self.socket] + cmd
        return run(cmd, env=env, timeout=timeout, stdin=stdin)

    def worker_logs(self):
        """The tail of every VM's worker.log, for failure messages."""
        out = []
        for root, _, files in os.walk(self.state_dir):
            if "worker.log" in files:
                with open(os.path.join(root, "worker.log"), errors="replace") as f:
                    out.append("== %s\n%s" % (root, f.read()[-1500:]))
        return "\n".join(out)

    def ok(self, *args, **kw):
        r = self.cli(*args, **kw)
        assert r.returncode == 0, ("cloison %s -> %d\nstdout: %s\nstderr: %s\ndaemon log:\n%s\n"
                                   "worker logs:\n%s") % (
            " ".join(map(str, args)), r.returncode, r.stdout, r.stderr, self.log()[-3000:],
            self.worker_logs())
        return r

    def json(self, *args, **kw):
        return json.loads(self.ok(*(list(args) + ["--json"]), **kw).stdout)

    def vm(self, name):
        return self.json("vm", "show", name)

    def state(self, name):
        return self.vm(name)["state"]

    def wait_state(self, name, state, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            v = self.vm(name)
            if v["state"] == state:
                return v
            time.sleep(0.05)
        pytest.fail("VM %s did not reach %s: %s" % (name, state, self.vm(name)))

    def http(self, method, path, body=None, headers=None):
        c = UnixHTTPConnection(self.socket)
        hdrs = dict(headers or {})
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            hdrs.setdefault("Content-Type", "application/json")
        c.request(method, path, body=body, headers=hdrs)
        r = c.getresponse()
        data = r.read()
        c.close()
        try:
            return r.status, json.loads(data) if data else None
        except ValueError:
            return r.status, data

    def create(self, name, cmdline="", *extra):
        self.ok("vm", "create", name, "--kernel", self.guest, "--cmdline", cmdline,
                "--memory", "128M", *extra)

    def console_until(self, name, needle, timeout=60, times=1):
        """Attaches `cloison vm console` and reads until needle has appeared
        `times` times (the console replays earlier output, e.g. from before
        a restart); returns everything read."""
        env = dict(os.environ, CLOISON_SOCKET=self.socket)
        p = subprocess.Popen([str(self.cli_bin), "vm", "console", name], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        out = b""
        deadline = time.time() + timeout
        try:
            # Read until the needle and the end of its line.
            n = needle.encode()
            while time.time() < deadline and (
                    out.count(n) < times or b"\n" not in out.split(n)[times]):
                r, _, _ = select.select([p.stdout], [], [], 0.5)
                if r:
                    chunk = os.read(p.stdout.fileno(), 65536)
                    if not chunk:
                        break
                    out += chunk
        finally:
            p.kill()
            p.wait()
        text = out.decode(errors="replace")
        assert text.count(needle) >= times, (
            "console of %s never showed %r %d times; got:\n%s\nstderr: %s\nworker logs:\n%s" % (
                name, needle, times, text[-2000:], p.stderr.read().decode(errors="replace"),
                self.worker_logs()))
        return text

    def worker_pids(self):
        """The workers cloisond started (for a sandboxed one, its
        supervisor: the jailed process it forks is its child, and dies with
        it)."""
        pids = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open("/proc/%s/cmdline" % name, "rb") as f:
                    argv = f.read().split(b"\0")
                cwd = os.readlink("/proc/%s/cwd" % name)
            except OSError:
                continue
            if argv and argv[0].endswith(b"cloison-vmm") and cwd.startswith(self.state_dir):
                pids.append(int(name))
        return [p for p in pids if _parent(p) not in pids]

    def cleanup(self):
        """Stops the daemon and kills every worker it left (tests leave
        nothing running)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in self.worker_pids() + self._dnsmasq_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        shutil.rmtree(self.sockdir, ignore_errors=True)

    def _dnsmasq_pids(self):
        """The NAT switches' dnsmasq (it outlives a killed cloisond, which
        adopts it when it restarts): found by its lease file in the state
        dir."""
        pids = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open("/proc/%s/cmdline" % name, "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"dnsmasq") and \
                    any(self.state_dir.encode() in a for a in argv):
                pids.append(int(name))
        return pids


@pytest.fixture
def daemon(tmp_path, kvm):
    d = Daemon(tmp_path / "state").start()
    yield d
    d.cleanup()
