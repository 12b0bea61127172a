"""cloisond's guards around the VM lifecycle (issue 16): a differencing
chain shared by two VMs, a daemon that dies while it starts, stops or writes
a VM, a `vm set` that cannot be written, boot files and disks that are not
regular files, memory admission, leftovers after a crash or a remove."""
import os
import signal
import time

from test_daemon_lib import Daemon, daemon  # noqa: F401 (fixture)
from test_disk_cli import disk, ok as disk_ok

CONFLICT = 4


# ---- item 1: the disk-conflict check covers the differencing chain ----

def _chain(tmp_path):
    base = tmp_path / "base.vhdx"
    mid = tmp_path / "mid.avhdx"
    child = tmp_path / "child.avhdx"
    disk_ok("create", base, "--size", "8M")
    disk_ok("create", mid, "--parent", base)
    disk_ok("create", child, "--parent", mid)
    return base, mid, child


def test_parent_of_a_used_disk_is_read_only_for_every_vm(daemon, tmp_path):
    base, mid, child = _chain(tmp_path)
    daemon.create("ca", "run=serve", "--disk", base)
    daemon.create("cd", "run=serve", "--disk", child)
    daemon.create("cr", "run=serve", "--disk", str(base) + ",readonly")
    # ca writes the grandparent of cd's disk: cd may not start.
    daemon.ok("vm", "start", "ca")
    r = daemon.cli("vm", "start", "cd")
    assert r.returncode == CONFLICT, (r.returncode, r.stderr)
    assert "VM 'ca'" in r.stderr and str(base) in r.stderr and "read-only" in r.stderr, r.stderr
    assert daemon.state("cd") == "off"
    daemon.ok("vm", "stop", "ca", "--turn-off")
    # The other way round: cd runs, so nobody may write base (any depth).
    daemon.ok("vm", "start", "cd")
    r = daemon.cli("vm", "start", "ca")
    assert r.returncode == CONFLICT, (r.returncode, r.stderr)
    assert "VM 'cd'" in r.stderr and str(base) in r.stderr, r.stderr
    assert daemon.state("ca") == "off"
    # Reading the parent is fine next to a child that uses it.
    daemon.ok("vm", "start", "cr")
    assert daemon.state("cr") == "running"
    # A VM's chain holds every image: the disk verbs that write refuse.
    for args in (["merge", child], ["merge", mid], ["resize", base, "--size", "16M"],
                 ["compact", mid], ["set-parent", child, mid]):
        r = disk(*args, timeout=20)
        assert r.returncode != 0 and "in use by another process" in r.stderr, (args, r.stderr)
    assert child.exists() and mid.exists()
    daemon.ok("vm", "stop", "cd", "--turn-off")
    daemon.ok("vm", "stop", "cr", "--turn-off")
    # With nothing running the writer may start again.
    daemon.ok("vm", "start", "ca")
    daemon.ok("vm", "stop", "ca", "--turn-off")


def test_chain_conflict_survives_a_daemon_restart(tmp_path, kvm):
    base, mid, child = _chain(tmp_path)
    d = Daemon(tmp_path / "state").start()
    try:
        d.create("ca", "run=serve", "--disk", base)
        d.create("cd", "run=serve", "--disk", child)
        d.ok("vm", "start", "cd")
        d.kill9()
        d.start()
        assert d.state("cd") == "running"
        r = d.cli("vm", "start", "ca")
        assert r.returncode == CONFLICT and "VM 'cd'" in r.stderr, (r.returncode, r.stderr)
    finally:
        d.cleanup()


# ---- item 3: no worker runs unmanaged after the daemon dies in `vm start` ----

def _kill_daemon_at_spawn(tmp_path, real_vmm):
    """A --vmm that kills cloisond right after it spawned the worker, the
    first time only, and drops the record the daemon may have written: the
    daemon died before it recorded the worker."""
    w = tmp_path / "vmm-kills-daemon"
    mark = tmp_path / "killed-once"
    w.write_text("#!/bin/sh\n"
                 "if [ ! -e %s ]; then : > %s; kill -9 $PPID; sleep 0.3; rm -f worker.json; fi\n"
                 "exec %s \"$@\"\n" % (mark, mark, real_vmm))
    w.chmod(0o755)
    return w


def _wait_no_workers(d, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline and d.worker_pids():
        time.sleep(0.05)
    return d.worker_pids()


def test_daemon_killed_between_spawn_and_record(tmp_path, kvm):
    data = tmp_path / "data.img"
    data.write_bytes(b"\0" * (1 << 20))
    d = Daemon(tmp_path / "state")
    real = d.vmm
    d.vmm = _kill_daemon_at_spawn(tmp_path, real)
    d.start()
    try:
        d.create("o1", "run=serve", "--disk", data)
        r = d.cli("vm", "start", "o1")
        assert r.returncode != 0  # the daemon died under the request
        d.proc.wait(timeout=10)
        # The worker lives on, unrecorded.
        deadline = time.time() + 10
        while time.time() < deadline and not d.worker_pids():
            time.sleep(0.05)
        orphans = d.worker_pids()
        assert len(orphans) == 1, orphans
        # It never let the guest run: nothing reached the serial console's log.
        d.vmm = real
        d.start()
        v = d.vm("o1")
        assert _wait_no_workers(d) == [], "an unrecorded worker still runs: %s" % v
        assert v["state"] == "off" and v["pid"] is None, v
        assert "had not recorded" in v["reason"] and str(orphans[0]) in v["reason"], v
        # The VM starts again on its disk (no second writer), and remove
        # leaves no worker behind.
        assert d.json("vm", "start", "o1")["state"] == "running"
        d.console_until("o1", "RESULT boot=ok")
        d.ok("vm", "stop", "o1", "--turn-off")
        d.ok("vm", "remove", "o1")
        assert _wait_no_workers(d) == []
    finally:
        d.cleanup()


def test_remove_ends_a_worker_the_daemon_does_not_know(daemon, tmp_path):
    import subprocess
    daemon.create("o2", "run=serve")
    rundir = daemon.vm("o2")["runtime_dir"]
    os.makedirs(rundir, exist_ok=True)
    # A worker started by hand in the VM's runtime dir, as an old daemon
    # would have (and never recorded).
    p = subprocess.Popen([str(daemon.vmm), "--kernel", str(daemon.guest), "--cmdline",
                          "run=serve", "--memory", "64M", "--control", "stray.sock",
                          "--paused"], cwd=rundir, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while time.time() < deadline and p.pid not in daemon.worker_pids():
            time.sleep(0.05)
        assert p.pid in daemon.worker_pids()
        daemon.ok("vm", "remove", "o2")
        assert p.wait(timeout=10) == -signal.SIGKILL
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


# ---- item 4: a `vm set` that cannot be written does not take effect ----

def test_failed_set_on_a_full_state_fs_changes_nothing(tmp_path, kvm):
    import subprocess
    if os.geteuid() != 0:
        import pytest
        pytest.skip("mounting a small tmpfs as the state dir needs root")
    state = tmp_path / "state"
    state.mkdir()
    d = Daemon(state)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(state)], check=True)
    try:
        d.start()
        d.create("f1", "run=serve", "--cpus", "1")
        filler = state / "filler"
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        r = d.cli("vm", "set", "f1", "--cpus", "2", "--notes", "never")
        assert r.returncode != 0 and "No space left" in r.stderr, (r.returncode, r.stderr)
        v = d.vm("f1")
        assert v["cpus"] == 1 and v["notes"] == "", v
        filler.unlink()
        # What starts is what the file says.
        d.ok("vm", "start", "f1")
        pid = d.vm("f1")["pid"]
        argv = open("/proc/%d/cmdline" % pid, "rb").read().split(b"\0")
        assert argv[argv.index(b"--cpus") + 1] == b"1", argv
        d.ok("vm", "stop", "f1", "--turn-off")
        d.stop()
        d.start()
        assert d.vm("f1")["cpus"] == 1
    finally:
        d.cleanup()
        subprocess.run(["umount", "-l", str(state)])


# ---- item 15: notes and operators do not wait for a graceful stop ----

def test_set_notes_during_a_graceful_stop_answers_at_once(daemon):
    import subprocess
    daemon.create("n1", "run=serve acpi=ignore")
    daemon.ok("vm", "start", "n1")
    daemon.console_until("n1", "RESULT boot=ok")
    env = dict(os.environ, CLOISON_SOCKET=daemon.socket)
    slow = subprocess.Popen([str(daemon.cli_bin), "vm", "stop", "n1", "--timeout", "30"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        daemon.wait_state("n1", "stopping")
        t0 = time.time()
        daemon.ok("vm", "set", "n1", "--notes", "changed while stopping")
        daemon.ok("vm", "set", "n1", "--operator", "nobody")
        took = time.time() - t0
        v = daemon.vm("n1")
        assert took < 3, took
        assert v["state"] == "stopping" and v["notes"] == "changed while stopping", v
        assert "nobody" in v["operators"]
        daemon.ok("vm", "stop", "n1", "--turn-off")
        assert slow.wait(timeout=30) == 0
    finally:
        if slow.poll() is None:
            slow.kill()
            slow.wait()


# ---- item 9: create-time checks of boot files and cmdline; the worker's own error ----

def test_boot_files_must_be_regular_files(daemon, tmp_path):
    fifo = tmp_path / "kernel.fifo"
    os.mkfifo(fifo)
    for kernel, kind in ((tmp_path, "is a directory"), ("/dev/zero", "character device"),
                         (fifo, "is a FIFO")):
        t0 = time.time()
        r = daemon.cli("vm", "create", "b1", "--kernel", kernel, timeout=20)
        assert time.time() - t0 < 5
        assert r.returncode != 0 and kind in r.stderr, (kernel, r.stderr)
        r = daemon.cli("vm", "create", "b1", "--kernel", daemon.guest, "--initrd", kernel,
                       timeout=20)
        assert r.returncode != 0 and "initrd" in r.stderr and kind in r.stderr, (kernel, r.stderr)
    assert daemon.cli("vm", "show", "b1").returncode == 3
    # The worker takes a command line of at most 65,535 bytes; so does create.
    r = daemon.cli("vm", "create", "b1", "--kernel", daemon.guest, "--cmdline", "a" * 65536)
    assert r.returncode != 0 and "65535" in r.stderr, r.stderr
    daemon.ok("vm", "create", "b1", "--kernel", daemon.guest, "--cmdline", "a" * 65535)
    # A boot file replaced after create: the start refuses it by name.
    k = tmp_path / "k"
    k.write_bytes(open(daemon.guest, "rb").read())
    daemon.ok("vm", "create", "b2", "--kernel", k)
    k.unlink()
    os.mkfifo(k)
    r = daemon.cli("vm", "start", "b2", timeout=20)
    assert r.returncode != 0 and "is a FIFO" in r.stderr, r.stderr
    assert daemon.state("b2") == "off"


def test_start_failure_carries_the_workers_error(tmp_path, kvm):
    d = Daemon(tmp_path / "state")
    fake = tmp_path / "fake-vmm"
    fake.write_text("#!/bin/sh\n"
                    "echo 'cloison-vmm: error: --disk path=x: the worker says exactly this' >&2\n"
                    "echo '(see cloison-vmm --help)' >&2\n"
                    "exit 2\n")
    fake.chmod(0o755)
    real = d.vmm
    d.vmm = fake
    d.start()
    try:
        d.create("w1", "run=serve")
        r = d.cli("vm", "start", "w1")
        assert r.returncode != 0 and "the worker says exactly this" in r.stderr, r.stderr
        v = d.vm("w1")
        assert v["state"] == "off" and "the worker says exactly this" in v["reason"], v
        d.stop()
        d.vmm = real
        d.start()
        # A regular file that is no kernel: the worker's reason, not a hint.
        notk = tmp_path / "not-a-kernel"
        notk.write_text("hello\n")
        d.ok("vm", "create", "w2", "--kernel", notk)
        r = d.cli("vm", "start", "w2")
        assert r.returncode != 0 and "not a kernel" in r.stderr, r.stderr
        assert "not a kernel" in d.vm("w2")["reason"]
    finally:
        d.cleanup()


# ---- item 5 (daemon part): a FIFO as disk or parent never blocks a create ----

def _threads(pid):
    return len(os.listdir("/proc/%d/task" % pid))


def _settled_threads(pid):
    """The thread count once the daemon is serving and idle: its socket
    answers before its HTTP threads exist, so a count taken at once can be
    the main thread's alone (seen on CI: 1, then 4 once serving)."""
    last, same = -1, 0
    deadline = time.time() + 10
    while same < 5 and time.time() < deadline:
        n = _threads(pid)
        same = same + 1 if n == last else 0
        last = n
        time.sleep(0.1)
    return last


def test_fifo_disk_or_parent_answers_at_once(daemon, tmp_path):
    daemon.ok("vm", "list")  # serving
    threads = _settled_threads(daemon.proc.pid)
    fifo = tmp_path / "disk.vhdx"
    os.mkfifo(fifo)
    base = tmp_path / "base.vhdx"
    child = tmp_path / "child.avhdx"
    disk_ok("create", base, "--size", "4M")
    disk_ok("create", child, "--parent", base)
    os.rename(base, tmp_path / "base.moved")
    os.mkfifo(base)
    for d_arg in (fifo, child):
        t0 = time.time()
        r = daemon.cli("vm", "create", "p1", "--kernel", daemon.guest, "--disk", d_arg,
                       timeout=20)
        assert time.time() - t0 < 5, d_arg
        assert r.returncode != 0 and "FIFO" in r.stderr, (d_arg, r.stderr)
    assert daemon.cli("vm", "show", "p1").returncode == 3
    # No connection thread stays behind, blocked in open().
    deadline = time.time() + 5
    while time.time() < deadline and _threads(daemon.proc.pid) > threads:
        time.sleep(0.1)
    assert _threads(daemon.proc.pid) <= threads


# ---- item 7: memory admission at start, and the OOM scores ----

def _meminfo():
    info = {}
    for line in open("/proc/meminfo"):
        k, v = line.split(":")
        info[k] = int(v.split()[0]) * 1024
    return info


def test_start_that_does_not_fit_in_memory_is_refused(daemon):
    total = _meminfo()["MemTotal"]
    big = ((total >> 20) + 1024)  # MiB: more than the host has
    daemon.create("m1", "run=serve", "--memory", "%dM" % big)
    r = daemon.cli("vm", "start", "m1")
    assert r.returncode == CONFLICT, (r.returncode, r.stderr)
    assert "not enough memory" in r.stderr and "needs %d MiB" % big in r.stderr, r.stderr
    assert "available" in r.stderr and "kept for the host" in r.stderr, r.stderr
    assert daemon.state("m1") == "off" and daemon.worker_pids() == []
    # Two VMs that fit one at a time but not together: the second is refused
    # although the first has not touched its memory yet.
    half = (_meminfo()["MemAvailable"] >> 20) * 6 // 10
    daemon.create("m2", "run=serve", "--memory", "%dM" % half)
    daemon.create("m3", "run=serve", "--memory", "%dM" % half)
    daemon.ok("vm", "start", "m2")
    r = daemon.cli("vm", "start", "m3")
    assert r.returncode == CONFLICT and "not enough memory" in r.stderr, r.stderr
    daemon.ok("vm", "stop", "m2", "--turn-off")


def test_daemon_oom_score_below_its_workers(daemon):
    daemon.create("s1", "run=serve")
    daemon.ok("vm", "start", "s1")
    pid = daemon.vm("s1")["pid"]

    def score(p):
        return int(open("/proc/%d/oom_score_adj" % p).read())
    assert score(daemon.proc.pid) < score(pid), (score(daemon.proc.pid), score(pid))
    assert score(pid) > 0
    if _may_lower_oom_score():
        assert score(daemon.proc.pid) < 0
    else:
        assert "cannot lower cloisond's OOM score" in daemon.log()


def _may_lower_oom_score():
    """Lowering needs CAP_SYS_RESOURCE, which a container's root may lack."""
    import subprocess
    r = subprocess.run(["sh", "-c", "echo -1 > /proc/self/oom_score_adj"],
                       stderr=subprocess.DEVNULL)
    return r.returncode == 0


# ---- item 17: no temporary files or VM directories left behind ----

def _dead_pid():
    pid = 4000000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid -= 1


def test_stale_tmp_files_cleaned_and_remove_takes_the_directory(tmp_path, kvm):
    d = Daemon(tmp_path / "state").start()
    try:
        disk = tmp_path / "state" / "k1" / "Virtual Hard Disks" / "k1.vhdx"
        d.create("k1", "run=serve")
        disk_ok("create", disk, "--size", "4M")
        d.ok("vm", "set", "k1", "--add-disk", disk)
        d.create("k2", "run=serve")
        v1, v2 = d.vm("k1"), d.vm("k2")
        dead = _dead_pid()
        # What kill -9 in the middle of atomic writes leaves.
        stale = [v1["config_path"] + ".tmp.%d" % dead,
                 os.path.join(v1["runtime_dir"], "status.json.tmp.%d" % dead),
                 v2["config_path"] + ".tmp.%d" % dead,
                 os.path.join(d.state_dir, "cloisond.json.tmp.%d" % dead)]
        # A live writer's file is its own business (a worker writing worker.pid).
        live = os.path.join(v2["runtime_dir"], "worker.pid.tmp.%d" % os.getpid())
        for p in stale + [live]:
            with open(p, "w") as f:
                f.write("{")
        d.kill9()
        d.start()
        assert [p for p in stale if os.path.exists(p)] == []
        assert os.path.exists(live)
        assert d.vm("k1")["state"] == "off"
        # remove takes everything the daemon made, and never a disk.
        with open(v1["config_path"] + ".tmp.%d" % dead, "w") as f:
            f.write("{")
        d.ok("vm", "start", "k2")
        d.ok("vm", "stop", "k2", "--turn-off")
        d.ok("vm", "remove", "k2")
        assert not os.path.exists(os.path.join(d.state_dir, "k2"))
        d.ok("vm", "remove", "k1")
        assert disk.exists()
        left = sorted(os.path.relpath(os.path.join(r, f), d.state_dir)
                      for r, _, fs in os.walk(os.path.join(d.state_dir, "k1")) for f in fs)
        assert left == ["k1/Virtual Hard Disks/k1.vhdx"], left
        assert not os.path.exists(os.path.join(d.state_dir, "k1", "Virtual Machines"))
    finally:
        d.cleanup()


# ---- item 18: a graceful stop in flight when the daemon dies ----

def _alive(pid):
    try:
        st = open("/proc/%d/stat" % pid).read()
    except OSError:
        return False
    return st[st.rindex(")") + 2] not in "ZX"


def test_graceful_stop_finishes_while_the_daemon_is_down(tmp_path, kvm):
    import subprocess
    d = Daemon(tmp_path / "state").start()
    try:
        d.create("g1", "run=serve")
        d.ok("vm", "start", "g1")
        d.console_until("g1", "RESULT boot=ok")
        pid = d.vm("g1")["pid"]
        # Follow the worker's events to kill the daemon right after it
        # pressed the power button.
        import socket
        ctl = socket.socket(socket.AF_UNIX)
        rund = os.open(d.vm("g1")["runtime_dir"], os.O_PATH)
        ctl.connect("/proc/self/fd/%d/control.sock" % rund)  # sun_path is short
        os.close(rund)
        ctl.settimeout(30)
        env = dict(os.environ, CLOISON_SOCKET=d.socket)
        stop = subprocess.Popen([str(d.cli_bin), "vm", "stop", "g1", "--timeout", "60"],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seen = b""
        while b"power-button" not in seen:
            chunk = ctl.recv(4096)
            assert chunk, seen
            seen += chunk
        d.kill9()
        stop.wait(timeout=10)
        ctl.close()
        # The guest shuts down while no daemon runs.
        deadline = time.time() + 30
        while time.time() < deadline and _alive(pid):
            time.sleep(0.05)
        assert not _alive(pid)
        d.start()
        v = d.vm("g1")
        assert (v["state"], v["reason"]) == ("off", "the guest shut down"), (d.log()[-2000:],
                                                                         d.worker_logs())
        # An off VM keeps its reason across another restart.
        d.stop()
        d.start()
        v = d.vm("g1")
        assert v["state"] == "off" and v["reason"] == "the guest shut down", v
    finally:
        d.cleanup()


def test_crash_while_the_daemon_is_down_keeps_the_workers_reason(tmp_path, kvm):
    d = Daemon(tmp_path / "state").start()
    try:
        d.create("g3", "run=serve")
        d.ok("vm", "start", "g3")
        pid = d.vm("g3")["pid"]
        d.kill9()
        os.kill(pid, signal.SIGKILL)  # no exit event: what is known is said
        time.sleep(0.3)
        d.start()
        v = d.vm("g3")
        assert v["state"] == "crashed" and "while cloisond was not running" in v["reason"], v
    finally:
        d.cleanup()


def test_recorded_worker_that_cannot_be_controlled_is_ended(tmp_path, kvm):
    d = Daemon(tmp_path / "state").start()
    try:
        d.create("u1", "run=serve")
        d.ok("vm", "start", "u1")
        v = d.vm("u1")
        d.kill9()
        os.unlink(os.path.join(v["runtime_dir"], "control.sock"))
        d.start()
        assert _wait_no_workers(d) == []
        v = d.vm("u1")
        assert v["state"] == "crashed" and "does not answer" in v["reason"], v
        assert "cloisond ended it (pid %d)" % v["pid"] in v["reason"] if v["pid"] else \
            "cloisond ended it" in v["reason"], v
        d.ok("vm", "start", "u1")
        d.ok("vm", "stop", "u1", "--turn-off")
    finally:
        d.cleanup()
