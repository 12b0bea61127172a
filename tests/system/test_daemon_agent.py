"""Issue 12's integration services through cloisond: the daemon talks to the
agent protocol (docs/agent.md) over the worker's virtio-vsock; the test
guest's word `agent` implements it in ring 3 and reports each service as a
RESULT agent_* line on COM1.

- `vm stop` asks the agent first: with `acpi=ignore` only the agent's
  shutdown can stop the guest cleanly; a guest without an agent still stops
  through the power button.
- The heartbeat: OK, then lost within the configured interval once the
  guest stops answering (agent_hb_stop=).
- KVP both ways: the guest's hostname, OS, kernel and IP addresses in
  `vm show`; `vm kvp set` reaches the guest; size limits refused.
- `vm copy-file`: the guest's SHA-256 of what arrived is the file's; refused
  while the service is off (the default).
- Time: after a save and restore the guest clock is set to the host's
  (the guest's reading, printed when it is set, is within 1 s of the host's).
- Backup: a freeze the caller never thaws is thawed by the daemon.
- Bad input on every new route and option: a clear error, nothing changed.
"""
import hashlib
import os
import re
import select
import subprocess
import time

import pytest

from conftest import binary, run
from test_daemon_lib import Daemon, daemon  # noqa: F401 (fixture)

AGENT = "agent acpi=ignore ip=10.9.8.7/24"


def agent_ready(d, name, timeout=30):
    """Waits until cloisond has heard the agent's HELLO."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        isv = d.vm(name)["integration_services"]
        if isv.get("agent_version") and isv.get("heartbeat") == "ok":
            return isv
        time.sleep(0.1)
    pytest.fail("no agent contact in %s: %s\n%s" % (name, d.vm(name), d.log()[-2000:]))


def console_while(d, name, action, timeout=30):
    """Runs action() with `vm console` attached and returns its result and
    everything COM1 showed until the worker ended (or timeout)."""
    env = dict(os.environ, CLOISON_SOCKET=d.socket)
    p = subprocess.Popen([str(d.cli_bin), "vm", "console", name], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out = b""
    try:
        time.sleep(0.5)  # attached (it replays what COM1 showed before)
        result = action()
        deadline = time.time() + timeout
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
    return result, out.decode(errors="replace")


def started_with_agent(d, name, *extra):
    d.create(name, AGENT, *extra)
    d.ok("vm", "start", name)
    return agent_ready(d, name)


def test_shutdown_through_the_agent(daemon):
    d = daemon
    isv = started_with_agent(d, "a1")
    assert isv["agent_version"] == "1"
    assert set(isv["agent_services"]) >= {"shutdown", "heartbeat", "kvp"}
    t = time.time()
    v, text = console_while(d, "a1", lambda: d.json("vm", "stop", "a1", "--timeout", "20"))
    assert v["state"] == "off" and v["turned_off"] is False, v
    assert time.time() - t < 15
    assert "RESULT agent_shutdown=1" in text and "RESULT poweroff=1" in text, text
    assert "power_button" not in text, text


def test_no_agent_stops_by_the_power_button(daemon):
    d = daemon
    d.create("pb", "run=serve")
    d.ok("vm", "start", "pb")
    v = d.vm("pb")
    assert v["integration_services"]["heartbeat"] == "no_contact", v
    v, text = console_while(d, "pb", lambda: d.json("vm", "stop", "pb", "--timeout", "20"))
    assert v["state"] == "off" and v["turned_off"] is False, v
    assert "RESULT power_button=1" in text, text


def test_shutdown_service_off_uses_the_power_button(daemon):
    """With the shutdown service off, the agent is not asked: the guest
    (acpi=ignore) ignores the button and is turned off at the timeout."""
    d = daemon
    started_with_agent(d, "so", "--integration", "shutdown=off")
    v = d.json("vm", "stop", "so", "--timeout", "3")
    assert v["state"] == "off" and v["turned_off"] is True, v


def test_heartbeat_lost_within_the_interval(daemon):
    d = daemon
    d.create("hb", AGENT + " agent_hb_stop=3", "--heartbeat-interval", "2")
    d.ok("vm", "start", "hb")
    isv = agent_ready(d, "hb")
    assert isv["last_heartbeat"], isv
    # heartbeats stop being answered 3 s after the agent starts; lost must
    # show within the 2 s interval (plus the quarter-interval beat period)
    deadline = time.time() + 3 + 2 + 1.5
    while time.time() < deadline:
        isv = d.vm("hb")["integration_services"]
        if isv["heartbeat"] == "lost":
            break
        time.sleep(0.1)
    assert isv["heartbeat"] == "lost", isv
    d.ok("vm", "stop", "hb", "--turn-off")


def test_heartbeat_not_lost_while_paused(daemon):
    """A paused guest cannot answer; its heartbeat stays ok through a pause
    longer than the interval, and keeps going after the resume."""
    d = daemon
    started_with_agent(d, "hp", "--heartbeat-interval", "1")
    d.ok("vm", "pause", "hp")
    time.sleep(2.5)
    assert d.vm("hp")["integration_services"]["heartbeat"] == "ok"
    d.ok("vm", "resume", "hp")
    time.sleep(2)
    isv = d.vm("hp")["integration_services"]
    assert isv["heartbeat"] == "ok", isv
    # and the resume set the clock again
    d.console_until("hp", "RESULT agent_time_set=", times=2)
    d.ok("vm", "stop", "hp")


def test_kvp_both_ways(daemon):
    d = daemon
    started_with_agent(d, "kv")
    deadline = time.time() + 10
    while time.time() < deadline and not d.vm("kv")["integration_services"]["guest"]:
        time.sleep(0.1)
    g = d.vm("kv")["integration_services"]["guest"]
    assert g["hostname"] == "cloison-testguest", g
    assert g["os"].startswith("cloison-testguest"), g
    assert g["kernel"], g
    assert g["ip_addresses"] == {"eth0": ["10.9.8.7"]}, g
    text = d.ok("vm", "show", "kv").stdout
    assert "Guest hostname cloison-testguest" in text and "10.9.8.7" in text, text
    d.ok("vm", "kvp", "set", "kv", "role", "web server")
    d.console_until("kv", "RESULT agent_kvp=role=web server")
    assert d.vm("kv")["integration_services"]["host_kvp"] == {"role": "web server"}
    # the limits: key length, '=' in a key, value length; nothing reaches the guest
    for key, value in (("k" * 256, "v"), ("a=b", "v"), ("", "v"), ("ok", "v" * 2048)):
        r = d.cli("vm", "kvp", "set", "kv", key, value)
        assert r.returncode == 2 or r.returncode == 1, r
        assert "KVP" in r.stderr, r.stderr
    assert d.vm("kv")["integration_services"]["host_kvp"] == {"role": "web server"}
    d.ok("vm", "stop", "kv")


def test_copy_file_byte_identical_and_refused_when_off(daemon, tmp_path):
    d = daemon
    started_with_agent(d, "cf")
    src = tmp_path / "payload.bin"
    data = os.urandom(300 * 1024 + 17)
    src.write_bytes(data)
    r = d.cli("vm", "copy-file", "cf", str(src), "/tmp/payload.bin")
    assert r.returncode == 6 and "integration copy=on" in r.stderr, r
    assert "agent_file=" not in d.console_until("cf", "RESULT agent_ready=1")
    d.ok("vm", "set", "cf", "--integration", "copy=on")
    d.ok("vm", "copy-file", "cf", str(src), "/tmp/payload.bin")
    want = "RESULT agent_file=dest:/tmp/payload.bin,size:%d,sha256:%s" % (
        len(data), hashlib.sha256(data).hexdigest())
    d.console_until("cf", want)
    for args, msg in ((["cf", str(tmp_path), "/x"], "not a regular file"),
                      (["cf", str(src), "relative"], "absolute guest path"),
                      (["cf", str(tmp_path / "nope"), "/x"], "No such file")):
        r = d.cli("vm", "copy-file", *args)
        assert r.returncode != 0 and msg in r.stderr, (args, r)
    d.ok("vm", "stop", "cf")


def test_time_set_after_restore(daemon):
    d = daemon
    started_with_agent(d, "ts")
    d.console_until("ts", "RESULT agent_time_set=")
    d.json("vm", "save", "ts")
    time.sleep(3)  # the guest's clock stands still while it is saved
    d.ok("vm", "start", "ts")
    # the console replays the restored worker's COM1: the reset event, the
    # new connection and the clock set on it
    text = d.console_until("ts", "RESULT agent_time_jump_ms=")
    host_at_read = time.time_ns()
    assert "RESULT vsock_transport_reset=1" in text, text
    guest = int(re.findall(r"RESULT agent_time_set=(\d+)", text)[-1])
    # the guest clock, as set, is the host's (the line is read a little later)
    assert 0 <= host_at_read - guest < 1_000_000_000, (host_at_read, guest)
    d.ok("vm", "stop", "ts")


def test_thaw_enforced_when_never_sent(daemon):
    d = daemon
    started_with_agent(d, "fz")
    st, v = d.http("POST", "/v1/vms/fz/freeze", {"timeout": 2})
    assert st == 200 and v["integration_services"]["frozen"] is True, (st, v)
    d.console_until("fz", "RESULT agent_frozen=1")
    t = time.time()
    text = d.console_until("fz", "RESULT agent_thawed=", timeout=10)
    assert "RESULT agent_thawed=host" in text, text  # the daemon's, not the guest's own
    assert time.time() - t < 5
    assert d.vm("fz")["integration_services"]["frozen"] is False
    st, v = d.http("POST", "/v1/vms/fz/freeze", {"timeout": 5})
    assert st == 200
    st, v = d.http("POST", "/v1/vms/fz/thaw", {})
    assert st == 200 and v["integration_services"]["frozen"] is False
    d.console_until("fz", "RESULT agent_thawed=host", times=2)
    d.ok("vm", "stop", "fz")


def test_bad_input(daemon):
    d = daemon
    d.create("bad", "run=serve")
    before = d.vm("bad")
    for args, msg in (
            (["--integration", "copy"], "NAME=on or NAME=off"),
            (["--integration", "copy=maybe"], "NAME=on or NAME=off"),
            (["--integration", "teleport=on"], "unknown service 'teleport'"),
            (["--heartbeat-interval", "0"], "seconds from 1 to 3600"),
            (["--heartbeat-interval", "x"], "seconds from 1 to 3600")):
        r = d.cli("vm", "set", "bad", *args)
        assert r.returncode in (1, 2) and msg in r.stderr, (args, r)
    assert d.vm("bad") == before
    for body, msg in (({"integration": {"kvp": 1}}, "'kvp' must be true or false"),
                      ({"integration": []}, "must be an object"),
                      ({"heartbeat_interval": 3601}, "from 1 to 3600")):
        st, v = d.http("PATCH", "/v1/vms/bad", body)
        assert st == 400 and msg in v["error"]["message"], (body, st, v)
    assert d.vm("bad") == before
    # the routes: the VM is off (no agent), fields checked first
    for path, body, code, msg in (
            ("kvp", {"key": "k"}, 400, "field 'value' is required"),
            ("kvp", {"key": "k", "value": 1}, 400, "must be a string"),
            ("kvp", {"key": "k", "value": "v", "x": "y"}, 400, "unknown field 'x'"),
            ("kvp", {"key": "k", "value": "v"}, 409, "not running"),
            ("copy-file", {"source": "/etc/hostname"}, 400, "'destination' is required"),
            ("copy-file", {"source": "/etc/hostname", "destination": "/x"}, 403,
             "integration copy=on"),
            ("freeze", {"timeout": 0}, 400, "from 1 to 600"),
            ("freeze", {"wait": 1}, 400, "unknown field 'wait'"),
            ("freeze", {}, 409, "not running"),
            ("thaw", {"now": True}, 400, "takes no fields")):
        st, v = d.http("POST", "/v1/vms/bad/" + path, body)
        assert st == code and msg in v["error"]["message"], (path, body, st, v)
    r = d.cli("vm", "kvp", "get", "bad", "k", "v")
    assert r.returncode == 2 and "vm kvp set NAME KEY VALUE" in r.stderr, r
    r = d.cli("vm", "copy-file", "bad", "/etc/hostname")
    assert r.returncode == 2 and "copy-file NAME SRC DEST" in r.stderr, r
    assert d.vm("bad") == before


def test_vmm_vsock_option_errors(tmp_path):
    """cloison-vmm's --vsock: each bad spec is a usage error that says what
    is expected (a sandboxed worker implies host-only: test_vsock checks
    that the guest's connections are then refused)."""
    vmm, guest = str(binary("cloison-vmm")), str(binary("cloison-testguest"))
    for spec, msg in (("cid=2,socket=%s/v" % tmp_path, "cid '2' is not a whole number"),
                      ("socket=%s/v" % tmp_path, "missing cid=N"),
                      ("cid=3", "missing socket=PATH"),
                      ("cid=3,socket=%s/v,fast" % tmp_path, "unknown option 'fast'"),
                      ("cid=3,socket=/" + "x" * 100, "1 to 96 bytes")):
        r = run([vmm, "--kernel", guest, "--no-sandbox", "--vsock", spec], timeout=30)
        assert r.returncode == 2 and msg in r.stderr, (spec, r.returncode, r.stderr)
    r = run([vmm, "--kernel", guest, "--no-sandbox", "--vsock", "cid=3,socket=%s/v" % tmp_path,
             "--vsock", "cid=4,socket=%s/w" % tmp_path], timeout=30)
    assert r.returncode == 2 and "--vsock given twice" in r.stderr, r.stderr
