"""cloisond's saved state (Hyper-V's Save): `cloison vm save` takes a VM
through saving to saved and ends its worker, `vm start` goes on from the
state, `vm discard-saved-state` drops it. A saved VM survives a kill -9 of
the daemon, refuses hardware changes, and a damaged state file fails the
start without losing anything. The test guest's `count` loop prints
`RESULT count=N` every 100 ms, so a restore that goes on where it stopped is
visible on COM1."""
import os
import re
import select
import subprocess
import time

from conftest import run
from test_daemon_lib import Daemon, daemon  # noqa: F401 (fixture)

CONFLICT = 4


def saved_dir(d, name):
    return os.path.join(d.state_dir, name, "Saved")


def console_for(d, name, seconds):
    """Everything `vm console` shows within `seconds` (the worker replays
    the last 64 KiB of COM1 first)."""
    env = dict(os.environ, CLOISON_SOCKET=d.socket)
    p = subprocess.Popen([str(d.cli_bin), "vm", "console", name], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out = b""
    deadline = time.time() + seconds
    try:
        while time.time() < deadline:
            r, _, _ = select.select([p.stdout], [], [], 0.2)
            if r:
                chunk = os.read(p.stdout.fileno(), 65536)
                if not chunk:
                    break
                out += chunk
    finally:
        p.kill()
        p.wait()
    return out.decode(errors="replace")


def counts(text):
    return [int(n) for n in re.findall(r"RESULT count=(\d+)\r?\n", text)]


def counting_then_saved(d, name):
    """Starts the VM, lets it count, pauses it (so COM1 holds still), reads
    the last count and saves it. Returns that count."""
    d.ok("vm", "start", name)
    d.console_until(name, "RESULT count=", times=3)
    d.ok("vm", "pause", name)
    before = counts(console_for(d, name, 1.5))
    assert len(before) >= 3, before
    pid = d.vm(name)["pid"]
    v = d.json("vm", "save", name)
    assert v["state"] == "saved" and v["pid"] is None, v
    assert os.path.exists(os.path.join(saved_dir(d, name), "state.bin"))
    # The worker is gone (it exited 5 after writing the state).
    for _ in range(100):
        if not os.path.exists("/proc/%d" % pid):
            break
        time.sleep(0.05)
    assert not os.path.exists("/proc/%d" % pid)
    assert d.worker_pids() == []
    return before[-1]


def assert_goes_on(d, name, last):
    """The restored guest did not boot again: its first count follows the
    last one before the save (or the one after, being printed at the save)."""
    out = d.console_until(name, "RESULT count=", times=3)
    after = counts(out)
    assert "RESULT boot=" not in out, out[-2000:]
    assert after[0] in (last + 1, last + 2), (last, after)
    assert after == list(range(after[0], after[0] + len(after))), after


def test_save_start_goes_on_then_discard(daemon):
    d = daemon
    d.create("s1", "count")
    last = counting_then_saved(d, "s1")
    v = d.vm("s1")
    assert v["state"] == "saved" and "Saved" in v["reason"], v
    # What a saved VM refuses, and what it allows.
    for verb in (["stop"], ["pause"], ["resume"], ["save"]):
        r = d.cli("vm", *verb, "s1")
        assert r.returncode == CONFLICT and "is saved" in r.stderr, (verb, r.stderr)

    v = d.json("vm", "start", "s1")
    assert v["state"] == "running", v
    assert_goes_on(d, "s1", last)
    # The state is behind the guest now: gone, and a later start boots.
    assert not os.path.exists(saved_dir(d, "s1"))

    # A save of a running (not paused) VM, then discard.
    d.json("vm", "save", "s1")
    assert d.state("s1") == "saved"
    r = d.cli("vm", "discard-saved-state", "s1")
    assert r.returncode == 0 and "off" in r.stdout, r.stderr
    v = d.vm("s1")
    assert v["state"] == "off" and v["reason"] == "the saved state was discarded", v
    assert not os.path.exists(saved_dir(d, "s1"))
    r = d.cli("vm", "discard-saved-state", "s1")
    assert r.returncode == CONFLICT and "only a saved VM" in r.stderr, r.stderr
    # Off again: the next start boots.
    d.ok("vm", "start", "s1")
    d.console_until("s1", "RESULT boot=")
    d.ok("vm", "stop", "s1", "--turn-off")


def test_rest_routes(daemon):
    d = daemon
    d.create("r1", "count")
    status, body = d.http("POST", "/v1/vms/r1/save")
    assert status == 409 and "is off" in body["error"]["message"], body
    d.ok("vm", "start", "r1")
    status, body = d.http("POST", "/v1/vms/r1/save")
    assert status == 200 and body["state"] == "saved", body
    status, body = d.http("DELETE", "/v1/vms/r1/saved-state")
    assert status == 200 and body["state"] == "off", body
    status, body = d.http("DELETE", "/v1/vms/r1/saved-state")
    assert status == 409, body


def test_saved_survives_daemon_kill9(tmp_path, kvm):
    d = Daemon(tmp_path / "state").start()
    try:
        d.create("k1", "count")
        last = counting_then_saved(d, "k1")
        d.kill9()
        d.start()
        v = d.vm("k1")
        assert v["state"] == "saved", (v, d.log())
        assert d.worker_pids() == []
        assert d.json("vm", "start", "k1")["state"] == "running"
        assert_goes_on(d, "k1", last)
        d.ok("vm", "stop", "k1", "--turn-off")
    finally:
        d.cleanup()


def test_hardware_set_refused_while_saved_and_remove_takes_the_state(daemon, tmp_path):
    d = daemon
    disk = tmp_path / "d.img"
    disk.write_bytes(b"\0" * (1 << 20))
    d.create("h1", "count")
    d.ok("vm", "start", "h1")
    d.ok("vm", "save", "h1")
    for opt in (["--cpus", "2"], ["--memory", "256M"], ["--add-disk", disk],
                ["--net", "tap=tap-h1"]):
        r = d.cli("vm", "set", "h1", *opt)
        assert r.returncode == CONFLICT, (opt, r.stderr)
        assert "discard the saved state first" in r.stderr, (opt, r.stderr)
    assert d.vm("h1")["cpus"] == 1
    # Settings that are not hardware still change.
    d.ok("vm", "set", "h1", "--notes", "saved for later")
    state = saved_dir(d, "h1")
    assert os.path.isdir(state)
    d.ok("vm", "remove", "h1")
    assert not os.path.exists(state)
    assert not os.path.exists(os.path.join(d.state_dir, "h1"))
    assert disk.exists()


def test_corrupted_state_fails_start_and_keeps_it(daemon):
    d = daemon
    d.create("c1", "count")
    last = counting_then_saved(d, "c1")
    sb = os.path.join(saved_dir(d, "c1"), "state.bin")
    with open(sb, "rb") as f:
        good = f.read()
    bad = good[:100] + bytes([good[100] ^ 1]) + good[101:]
    with open(sb, "wb") as f:
        f.write(bad)
    files = sorted(os.listdir(saved_dir(d, "c1")))
    r = d.cli("vm", "start", "c1")
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "saved state" in r.stderr and "CRC-32C" in r.stderr, r.stderr
    v = d.vm("c1")
    assert v["state"] == "saved", v
    assert "the worker failed (exit status 1)" in v["reason"] and "CRC-32C" in v["reason"], v
    # Nothing was deleted: the same files, the bad bytes untouched.
    assert sorted(os.listdir(saved_dir(d, "c1"))) == files
    with open(sb, "rb") as f:
        assert f.read() == bad
    assert d.worker_pids() == []
    # Mended, the state starts.
    with open(sb, "wb") as f:
        f.write(good)
    assert d.json("vm", "start", "c1")["state"] == "running"
    assert_goes_on(d, "c1", last)
    d.ok("vm", "stop", "c1", "--turn-off")


def test_save_failure_leaves_vm_running(daemon):
    d = daemon
    d.create("f1", "count")
    d.ok("vm", "start", "f1")
    pid = d.vm("f1")["pid"]
    # Something that is not a directory where the state would go.
    with open(saved_dir(d, "f1"), "w") as f:
        f.write("in the way\n")
    r = d.cli("vm", "save", "f1")
    assert r.returncode == 1 and "cannot save VM 'f1'" in r.stderr, r.stderr
    v = d.vm("f1")
    assert v["state"] == "running" and v["pid"] == pid, v
    os.unlink(saved_dir(d, "f1"))
    d.ok("vm", "pause", "f1")
    assert d.json("vm", "save", "f1")["state"] == "saved"


def test_help(daemon):
    for verb in ("save", "discard-saved-state"):
        r = run([str(daemon.cli_bin), "vm", verb, "--help"])
        assert r.returncode == 0 and "usage: cloison vm " + verb in r.stdout, r.stderr


def test_automatic_stop_action_save(tmp_path, kvm):
    """On SIGTERM (host shutdown) a VM whose automatic stop action is save is
    saved, a paused one too, and the next cloisond starts them where they
    were; keep-running still leaves its VM running."""
    import signal
    d = Daemon(tmp_path / "state").start()
    try:
        d.create("a1", "count", "--automatic-stop-action", "save")
        d.create("a2", "count", "--automatic-stop-action", "save")
        d.create("a3", "count")
        assert d.vm("a1")["automatic_stop_action"] == "save"
        r = d.cli("vm", "set", "a3", "--automatic-stop-action", "hibernate")
        assert r.returncode == 2, (r.returncode, r.stderr)
        assert "save" in r.stderr, r.stderr
        d.ok("vm", "start", "a1")
        d.ok("vm", "start", "a2")
        d.ok("vm", "start", "a3")
        d.console_until("a1", "RESULT count=", times=2)
        d.ok("vm", "pause", "a2")
        keep = d.vm("a3")["pid"]
        assert d.stop(signal.SIGTERM) == 0, d.log()
        os.kill(keep, 0)  # keep-running survived
        d.start()
        assert d.state("a1") == "saved" and d.state("a2") == "saved", d.log()
        assert d.vm("a3")["pid"] == keep
        for name in ("a1", "a2"):
            assert d.json("vm", "start", name)["state"] == "running"
            out = d.console_until(name, "RESULT count=", times=2)
            assert "RESULT boot=" not in out, out[-2000:]
            d.ok("vm", "stop", name, "--turn-off")
        d.ok("vm", "stop", "a3", "--turn-off")
    finally:
        d.cleanup()


def test_saved_while_no_daemon_ran(kvm):
    """A worker that is saved while cloisond is down (its exit 5 kept by the
    watcher in worker.exit) is found saved by the next cloisond, and starts
    from there."""
    import json
    import shutil
    import socket
    import tempfile
    top = tempfile.mkdtemp(prefix="cs")  # short: the control socket's path must fit
    d = Daemon(os.path.join(top, "s"))
    d.start()
    try:
        d.create("n1", "count")
        v = d.json("vm", "start", "n1")
        d.console_until("n1", "RESULT count=", times=2)
        d.kill9()
        # Where cloisond has its sandboxed workers save (the worker can
        # write nowhere else); the next cloisond moves it to Saved.
        into = os.path.join(d.state_dir, "n1", "Sandbox", "Saved")
        os.mkdir(into)
        os.chown(into, v["sandbox"]["uid"], v["sandbox"]["uid"])
        s = socket.socket(socket.AF_UNIX)
        s.connect(os.path.join(v["runtime_dir"], "control.sock"))
        s.sendall((json.dumps({"id": 1, "cmd": "save", "path": into}) + "\n").encode())
        f = s.makefile("r")
        while True:
            m = json.loads(f.readline())
            if m.get("id") == 1:
                break
        assert m["ok"], m
        s.close()
        for _ in range(200):
            if not os.path.exists("/proc/%d" % v["pid"]):
                break
            time.sleep(0.05)
        d.start()
        v = d.vm("n1")
        assert v["state"] == "saved", (v, d.log())
        assert os.path.exists(os.path.join(saved_dir(d, "n1"), "state.bin"))
        assert not os.path.exists(into)
        assert d.json("vm", "start", "n1")["state"] == "running"
        out = d.console_until("n1", "RESULT count=", times=2)
        assert "RESULT boot=" not in out, out[-2000:]
        d.ok("vm", "stop", "n1", "--turn-off")
    finally:
        d.cleanup()
        shutil.rmtree(top, ignore_errors=True)
