"""cloisond runs every worker in the sandbox (issue 14, docs/sandbox.md):
its own uid per running VM, new namespaces, no capabilities, no_new_privs,
seccomp. A call outside the lists kills the worker and the VM shows crashed
with the call's name; the worker cannot open host files; a hostile guest
driver leaves the other VMs running; `--no-sandbox` is the loud exception.

The debug-* control commands exist in test builds only (-Dtest_hooks); the
test speaks to the worker's control socket directly, as nothing in the API
reaches them."""
import json
import os
import socket
import time

import pytest

from conftest import require_root
from test_daemon_lib import Daemon, daemon  # noqa: F401 (fixture)

NAMESPACES = ("mnt", "pid", "ipc", "uts", "net")


def status_fields(pid):
    fields = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            fields[k] = v.strip()
    return fields


def control(d, name, cmd):
    """One request on the VM's worker control socket; the reply, or None
    if the worker closed the connection without one (it died)."""
    # the runtime dir is longer than sun_path allows: go through an fd
    dfd = os.open(d.vm(name)["runtime_dir"], os.O_PATH | os.O_DIRECTORY)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(20)
    try:
        s.connect("/proc/self/fd/%d/control.sock" % dfd)
    finally:
        os.close(dfd)
    s.sendall((json.dumps({"id": 7, "cmd": cmd}) + "\n").encode())
    buf = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return None
            buf += chunk
            for line in buf.split(b"\n")[:-1]:
                msg = json.loads(line)
                if msg.get("id") == 7:
                    return msg
    finally:
        s.close()


def start(d, name, cmdline="count", *extra):
    d.create(name, cmdline, *extra)
    d.ok("vm", "start", name)
    return d.wait_state(name, "running")


def test_every_worker_is_sandboxed_under_its_own_uid(daemon):
    require_root()
    a = start(daemon, "sa")
    b = start(daemon, "sb")
    host = daemon.json("host", "info")
    assert host["sandbox"]["enabled"] is True, host
    assert "Sandbox:         on" in daemon.ok("host", "info").stdout
    uids = []
    for v in (a, b):
        sb = v["sandbox"]
        assert sb["enabled"] is True and sb["uid"] >= 900000, v
        assert sb["supervisor_pid"] != v["pid"], v
        st = status_fields(v["pid"])
        assert st["Name"] == "cloison-vmm"
        assert st["Uid"].split() == [str(sb["uid"])] * 4, st["Uid"]
        assert st["Gid"].split() == [str(sb["uid"])] * 4, st["Gid"]
        assert st["CapEff"] == "0000000000000000" and st["CapBnd"] == "0000000000000000"
        assert st["NoNewPrivs"] == "1" and st["Seccomp"] == "2", st
        assert st["NSpid"].split()[-1] == "1", st["NSpid"]  # PID 1 of its own namespace
        for ns in NAMESPACES:
            assert os.readlink("/proc/%d/ns/%s" % (daemon.proc.pid, ns)) != \
                os.readlink("/proc/%d/ns/%s" % (v["pid"], ns)), ns
        uids.append(sb["uid"])
        # the worker's own status names its pid as the host sees it
        r = control(daemon, v["name"], "status")
        assert r["ok"] and r["result"]["pid"] == v["pid"], (r, v["pid"])
        # the only host directory it may write: its own, 0700
        sd = os.path.join(daemon.state_dir, v["name"], "Sandbox")
        assert os.stat(sd).st_uid == sb["uid"] and os.stat(sd).st_mode & 0o777 == 0o700
    assert uids[0] != uids[1], uids
    # memory admission and `vm show` count the worker, not its supervisor
    assert status_fields(a["pid"])["VmRSS"] != status_fields(a["sandbox"]["supervisor_pid"])["VmRSS"]
    # the uid goes back to the pool when the VM stops
    daemon.ok("vm", "stop", "sa", "--turn-off")
    v = daemon.wait_state("sa", "off")
    assert v["sandbox"] is None and v["pid"] is None, v


def test_workers_share_the_hosts_cpuid_cache(daemon):
    """Every worker gets --cpuid-cache in the host's cache directory, not
    in the state directory, and a worker that finds the file damaged
    replaces it with KVM's answer (cpuid_cache.c; the codec's own tests
    are tests/unit/vmm/test_cpuid_cache.c)."""
    require_root()
    path = "/var/cache/cloison/kvm-cpuid.cache"
    with open(path, "wb") as f:  # damaged: the next worker must replace it
        f.write(b"not a cache file")
    v = start(daemon, "cc")
    # the supervisor has the worker's command line (the worker's own is
    # the same process image after fork)
    with open("/proc/%d/cmdline" % v["sandbox"]["supervisor_pid"], "rb") as f:
        argv = f.read().split(b"\0")
    assert argv[argv.index(b"--cpuid-cache") + 1] == path.encode(), argv
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"CLCPUID1" and len(data) > 100, data[:64]
    assert "kvm-cpuid.cache" not in os.listdir(daemon.state_dir)
    daemon.ok("vm", "stop", "cc", "--turn-off")


def test_forbidden_call_crashes_the_vm_naming_it(daemon):
    require_root()
    victim = start(daemon, "sv")
    other = start(daemon, "so")
    assert control(daemon, "sv", "debug-execve") is None  # it died before answering
    v = daemon.wait_state("sv", "crashed", timeout=30)
    assert "execve" in v["reason"] and "seccomp" in v["reason"], v["reason"]
    assert not os.path.exists("/proc/%d" % victim["pid"])
    # the other VM did not notice
    assert daemon.vm("so")["state"] == "running"
    out = daemon.console_until("so", "RESULT count=", times=2)
    assert "RESULT count=" in out
    assert daemon.vm("so")["pid"] == other["pid"]
    # and the crashed VM starts again, sandboxed
    daemon.ok("vm", "start", "sv")
    assert daemon.wait_state("sv", "running")["sandbox"]["enabled"] is True


def test_worker_cannot_open_host_files(daemon):
    require_root()
    start(daemon, "sf")
    r = control(daemon, "sf", "debug-open-host")
    assert r and r["ok"], r
    assert r["result"]["opened"] is False, r
    assert r["result"]["error"] == "No such file or directory", r
    assert daemon.vm("sf")["state"] == "running"


def test_save_and_start_from_saved_in_the_sandbox(daemon):
    """The sandboxed worker saves into <vm>/Sandbox/Saved; the VM's Saved
    directory has it once the worker is gone, and the start goes on from it
    in a new sandbox."""
    require_root()
    start(daemon, "ss")
    daemon.console_until("ss", "RESULT count=", times=2)
    daemon.ok("vm", "save", "ss")
    daemon.wait_state("ss", "saved")
    saved = os.path.join(daemon.state_dir, "ss", "Saved")
    assert os.path.exists(os.path.join(saved, "state.bin")), os.listdir(saved)
    assert not os.path.exists(os.path.join(daemon.state_dir, "ss", "Sandbox", "Saved"))
    daemon.ok("vm", "start", "ss")
    v = daemon.wait_state("ss", "running")
    assert v["sandbox"]["enabled"] is True
    out = daemon.console_until("ss", "RESULT count=", times=1)
    assert "RESULT boot=ok" not in out.split("RESULT count=")[-1]


def test_hostile_driver_leaves_the_other_vms_running(daemon, tmp_path):
    """The test guest's hostile virtio-blk driver against a sandboxed
    worker: the worker refuses each step and lives on, or dies alone with a
    reason; the VM beside it keeps running throughout."""
    require_root()
    disk = tmp_path / "h.raw"
    with open(disk, "wb") as f:
        f.truncate(8 << 20)
    other = start(daemon, "hn")
    # count after hostile=blk keeps the guest up, so its console can be read
    start(daemon, "hh", "hostile=blk count", "--disk", str(disk))
    out = daemon.console_until("hh", "RESULT count=", timeout=120)
    v = daemon.vm("hh")
    assert v["state"] == "running", (v, daemon.worker_logs())
    assert "RESULT hostile_done=1" in out, out
    # each step was refused (the device needs a reset) and said why
    assert "the device needs a reset" in daemon.worker_logs()
    for line in out.splitlines():
        if line.startswith("RESULT hostile_") and line.endswith("_other_ok=0"):
            pytest.fail("the other device stopped answering: " + line)
    assert daemon.vm("hn")["state"] == "running"
    assert daemon.vm("hn")["pid"] == other["pid"]


def test_no_sandbox_is_loud_and_shown(tmp_path, kvm):
    require_root()
    d = Daemon(tmp_path / "state", extra_args=["--no-sandbox"]).start()
    try:
        assert "WORKERS RUN AS ROOT" in d.log()
        h = d.json("host", "info")
        assert h["sandbox"]["enabled"] is False, h
        assert "Sandbox:         OFF" in d.ok("host", "info").stdout
        v = start(d, "ns")
        assert v["sandbox"] == {"enabled": False}, v
        assert status_fields(v["pid"])["Uid"].split()[0] == "0"
        assert "WARNING: --no-sandbox" in d.worker_logs()
    finally:
        d.cleanup()
