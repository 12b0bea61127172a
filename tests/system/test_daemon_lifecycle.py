"""cloisond end to end through the real CLI, socket, worker and test guest:
every lifecycle transition, illegal transitions, graceful stop (a guest that
powers off and one that ignores the button), crash detection, adoption
after SIGKILL of the daemon."""
import os
import signal
import time

from test_daemon_lib import Daemon, daemon  # noqa: F401 (fixture)

CONFLICT = 4
NOT_FOUND = 3


def test_every_transition(daemon, tmp_path):
    disk = tmp_path / "data.img"
    disk.write_bytes(b"\0" * (1 << 20))
    daemon.create("t1", "count", "--cpus", "2", "--disk", disk)
    v = daemon.vm("t1")
    assert v["state"] == "off" and v["cpus"] == 2 and v["disks"][0]["path"] == str(disk)
    # The configuration lives where DESIGN.md §5 says.
    cfg = os.path.join(daemon.state_dir, "t1", "Virtual Machines", v["id"] + ".json")
    assert os.path.exists(cfg)
    assert os.path.isdir(os.path.join(daemon.state_dir, "t1", "Virtual Hard Disks"))

    assert daemon.json("vm", "start", "t1")["state"] == "running"
    daemon.console_until("t1", "RESULT count=")
    assert daemon.json("vm", "pause", "t1")["state"] == "paused"
    assert daemon.json("vm", "resume", "t1")["state"] == "running"
    assert daemon.json("vm", "restart", "t1")["state"] == "running"
    # The guest boots again (the console replays the first boot too); press
    # the button only once it counts again, or the press is lost in boot.
    out = daemon.console_until("t1", "RESULT boot=ok", times=2)
    daemon.console_until("t1", "RESULT count=", times=out.count("RESULT count=") + 1)
    # count stops on the power button: a graceful stop ends in off.
    v = daemon.json("vm", "stop", "t1", "--timeout", "60")
    assert v["state"] == "off" and not v["turned_off"], (v, daemon.log(), daemon.worker_logs())
    assert daemon.json("vm", "start", "t1")["state"] == "running"
    v = daemon.json("vm", "stop", "t1", "--turn-off")
    assert v["state"] == "off" and v["reason"] == "turned off"
    assert daemon.worker_pids() == []
    daemon.ok("vm", "remove", "t1")
    assert daemon.cli("vm", "show", "t1").returncode == NOT_FOUND
    assert not os.path.exists(cfg)
    assert disk.exists(), "remove must never delete a virtual disk"


def test_illegal_transitions_refused(daemon):
    daemon.create("t2", "run=serve")
    for verb in (["stop"], ["stop", "--turn-off"], ["pause"], ["resume"], ["restart"]):
        r = daemon.cli("vm", *verb, "t2")
        assert r.returncode == CONFLICT, (verb, r.stderr)
        assert "is off" in r.stderr
    daemon.ok("vm", "start", "t2")
    r = daemon.cli("vm", "start", "t2")
    assert r.returncode == CONFLICT and "is running" in r.stderr
    for verb in (["resume"], ["remove"]):
        assert daemon.cli("vm", *verb, "t2").returncode == CONFLICT, verb
    r = daemon.cli("vm", "set", "t2", "--cpus", "2")
    assert r.returncode == CONFLICT and "only change while the VM is off" in r.stderr
    daemon.ok("vm", "set", "t2", "--notes", "notes may change while it runs")
    daemon.ok("vm", "pause", "t2")
    r = daemon.cli("vm", "stop", "t2")
    assert r.returncode == CONFLICT and "resume it first" in r.stderr
    assert daemon.cli("vm", "pause", "t2").returncode == CONFLICT
    assert daemon.json("vm", "stop", "t2", "--turn-off")["state"] == "off"
    for verb in ("start", "stop", "show", "remove"):
        r = daemon.cli("vm", verb, "no-such-vm")
        assert r.returncode == NOT_FOUND and "no-such-vm" in r.stderr


def test_graceful_stop_guest_powers_off(daemon):
    daemon.create("g1", "run=serve")
    daemon.ok("vm", "start", "g1")
    daemon.console_until("g1", "RESULT boot=ok")
    t0 = time.time()
    v = daemon.json("vm", "stop", "g1", "--timeout", "60")
    assert v["state"] == "off" and not v["turned_off"]
    assert v["reason"] == "the guest shut down"
    assert time.time() - t0 < 60


def test_graceful_stop_guest_ignores_button(daemon):
    daemon.create("g2", "run=serve acpi=ignore")
    daemon.ok("vm", "start", "g2")
    daemon.console_until("g2", "RESULT boot=ok")
    t0 = time.time()
    v = daemon.json("vm", "stop", "g2", "--timeout", "3")
    took = time.time() - t0
    assert v["state"] == "off" and v["turned_off"], v
    assert "did not shut down within 3 s" in v["reason"]
    assert 3 <= took < 20, took
    assert daemon.worker_pids() == []


def test_turn_off_cuts_a_graceful_stop_short(daemon):
    daemon.create("g3", "run=serve acpi=ignore")
    daemon.ok("vm", "start", "g3")
    daemon.console_until("g3", "RESULT boot=ok")
    import subprocess
    env = dict(os.environ, CLOISON_SOCKET=daemon.socket)
    slow = subprocess.Popen([str(daemon.cli_bin), "vm", "stop", "g3", "--timeout", "300"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    daemon.wait_state("g3", "stopping")
    t0 = time.time()
    daemon.ok("vm", "stop", "g3", "--turn-off")
    assert slow.wait(timeout=30) == 0
    assert time.time() - t0 < 20
    assert daemon.state("g3") == "off"


def test_worker_killed_means_crashed(daemon):
    daemon.create("k1", "count")
    v = daemon.json("vm", "start", "k1")
    os.kill(v["pid"], signal.SIGKILL)
    v = daemon.wait_state("k1", "crashed")
    assert "killed by signal 9 (SIGKILL)" in v["reason"], v
    # A crashed VM can be started again.
    assert daemon.json("vm", "start", "k1")["state"] == "running"
    daemon.ok("vm", "stop", "k1", "--turn-off")


def test_guest_crash_means_crashed(daemon):
    daemon.create("k2", "triplefault")
    daemon.cli("vm", "start", "k2")
    v = daemon.wait_state("k2", "crashed", timeout=60)
    assert "crashed" in v["reason"], v


def test_guest_poweroff_on_its_own_means_off(daemon):
    daemon.create("p1", "")  # boot facts, then power off
    daemon.cli("vm", "start", "p1")
    v = daemon.wait_state("p1", "off", timeout=60)
    assert v["reason"] == "the guest powered off", v


def test_daemon_sigkill_then_adoption(tmp_path, kvm):
    d = Daemon(tmp_path / "state").start()
    try:
        d.create("a1", "count")
        d.create("a2", "run=serve")
        d.ok("vm", "start", "a1")
        d.ok("vm", "start", "a2")
        d.ok("vm", "pause", "a2")
        pids = {n: d.vm(n)["pid"] for n in ("a1", "a2")}
        d.kill9()
        # The workers outlive the daemon.
        for pid in pids.values():
            os.kill(pid, 0)
        assert d.cli("vm", "list").returncode == 5  # unreachable
        d.start()
        v1, v2 = d.vm("a1"), d.vm("a2")
        assert (v1["state"], v1["pid"]) == ("running", pids["a1"]), v1
        assert (v2["state"], v2["pid"]) == ("paused", pids["a2"]), v2
        # Still controllable.
        d.ok("vm", "resume", "a2")
        d.ok("vm", "pause", "a1")
        d.ok("vm", "resume", "a1")
        d.console_until("a1", "RESULT count=")
        assert d.json("vm", "stop", "a1", "--turn-off")["state"] == "off"
        # An adopted worker killed: crashed, with a reason.
        os.kill(pids["a2"], signal.SIGKILL)
        v2 = d.wait_state("a2", "crashed")
        assert v2["reason"], v2
        # A worker that dies while no daemon runs: crashed at the next start.
        d.ok("vm", "start", "a1")
        pid = d.vm("a1")["pid"]
        d.kill9()
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        d.start()
        v1 = d.vm("a1")
        assert v1["state"] == "crashed" and "while cloisond was not running" in v1["reason"], v1
    finally:
        d.cleanup()


def test_sigquit_leaves_vms_running_sigterm_applies_stop_actions(tmp_path, kvm):
    d = Daemon(tmp_path / "state").start()
    try:
        d.create("s1", "count", "--automatic-stop-action", "turn-off")
        d.create("s2", "count")  # keep-running
        d.ok("vm", "start", "s1")
        d.ok("vm", "start", "s2")
        pid2 = d.vm("s2")["pid"]
        import subprocess
        watch = subprocess.Popen([str(d.cli_bin), "vm", "watch"], stderr=subprocess.PIPE,
                                 env=dict(os.environ, CLOISON_SOCKET=d.socket), text=True)
        time.sleep(0.3)
        t0 = time.time()
        assert d.stop(signal.SIGQUIT) == 0
        assert time.time() - t0 < 10, "a follower of the event stream held the daemon up"
        assert watch.wait(timeout=10) == 5 and "closed the event stream" in watch.stderr.read()
        assert len(d.worker_pids()) == 2
        d.start()
        assert d.state("s1") == "running" and d.state("s2") == "running"
        assert d.stop(signal.SIGTERM) == 0
        os.kill(pid2, 0)  # keep-running survived
        assert len(d.worker_pids()) == 1
        d.start()
        assert d.state("s1") == "off" and d.state("s2") == "running"
    finally:
        d.cleanup()


def test_autostart(tmp_path, kvm):
    d = Daemon(tmp_path / "state").start()
    try:
        d.create("auto", "count", "--automatic-start-action", "start")
        d.create("manual", "count")
        d.stop()
        d.start()
        d.wait_state("auto", "running")
        assert d.state("manual") == "off"
    finally:
        d.cleanup()


def test_detached_daemon(tmp_path, kvm):
    """--daemon returns once the socket serves; the daemon logs to its
    state dir and stops on SIGQUIT."""
    import subprocess
    from conftest import binary
    d = Daemon(tmp_path / "state")
    r = subprocess.run([str(binary("cloisond")), "--state-dir", d.state_dir, "--socket", d.socket,
                        "--vmm", str(d.vmm), "--daemon"], capture_output=True, text=True, timeout=30)
    pid = None
    try:
        assert r.returncode == 0, r.stderr
        host = d.json("host", "info")   # serving at once, no wait
        pid = host["cloisond_pid"]
        assert os.path.exists(os.path.join(d.state_dir, "cloisond.log"))
        # A second daemon on the same state dir or socket is refused.
        r2 = subprocess.run([str(binary("cloisond")), "--state-dir", d.state_dir, "--socket",
                             d.socket], capture_output=True, text=True, timeout=30)
        assert r2.returncode == 1 and "another cloisond uses this state directory" in r2.stderr
        r3 = subprocess.run([str(binary("cloisond")), "--state-dir", str(tmp_path / "other"),
                             "--socket", d.socket], capture_output=True, text=True, timeout=30)
        assert r3.returncode == 1 and "already serving this socket" in r3.stderr, r3.stderr
        os.kill(pid, signal.SIGQUIT)
        for _ in range(200):
            if not os.path.exists("/proc/%d" % pid):
                break
            time.sleep(0.05)
        assert not os.path.exists(d.socket)
        pid = None
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
        d.cleanup()
