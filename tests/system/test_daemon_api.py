"""cloisond's API edges: malformed JSON and unknown fields, 50 concurrent
clients, the event stream, roles (a VM operator refused on a VM not
delegated to them) and crash-safe configuration writes."""
import json
import os
import pwd
import grp
import random
import signal
import subprocess
import threading
import time

import pytest

from conftest import which
from test_daemon_lib import Daemon, UnixHTTPConnection, daemon  # noqa: F401 (fixture)


def test_malformed_json_and_unknown_fields(daemon):
    guest = str(daemon.guest)
    st, body = daemon.http("POST", "/v1/vms", '{"name": "x", "kernel": ')
    assert st == 400 and body["error"]["code"] == "malformed-json"
    assert "line 1" in body["error"]["message"], body
    st, body = daemon.http("POST", "/v1/vms", "[1, 2]")
    assert st == 400 and "must be a JSON object" in body["error"]["message"]
    st, body = daemon.http("POST", "/v1/vms", {"name": "x", "kernel": guest, "colour": "red"})
    assert st == 400 and "unknown field 'colour'" in body["error"]["message"], body
    st, body = daemon.http("POST", "/v1/vms", {"name": "x", "kernel": guest, "cpus": "two"})
    assert st == 400 and "'cpus' must be an integer" in body["error"]["message"]
    st, body = daemon.http("POST", "/v1/vms", {"name": "x", "kernel": guest, "cpus": 0})
    assert st == 400 and "'cpus' must be between 1 and 255" in body["error"]["message"]
    st, body = daemon.http("POST", "/v1/vms", {"name": "x", "kernel": guest, "memory": 1000})
    assert st == 400 and "'memory'" in body["error"]["message"]
    st, body = daemon.http("POST", "/v1/vms", {"name": "../etc", "kernel": guest})
    assert st == 400 and "not a valid VM name" in body["error"]["message"]
    st, body = daemon.http("POST", "/v1/vms", {"name": "x", "kernel": "relative/path"})
    assert st == 400 and "absolute path" in body["error"]["message"]
    st, body = daemon.http("POST", "/v1/vms", {"name": "x", "kernel": "/nonexistent/k"})
    assert st == 400 and "cannot read the kernel" in body["error"]["message"]
    st, body = daemon.http("POST", "/v1/vms", {"name": "x"})
    assert st == 400 and "'kernel' is required" in body["error"]["message"]
    st, body = daemon.http("POST", "/v1/vms", {"name": "x", "kernel": guest,
                                               "disks": [{"path": guest, "size": 1}]})
    assert st == 400 and "unknown field 'disks[0].size'" in body["error"]["message"]
    st, body = daemon.http("POST", "/v1/vms", '{"name": "x", "name": "y", "kernel": "%s"}' % guest)
    assert st == 400 and "duplicate" in body["error"]["message"]
    st, body = daemon.http("POST", "/v1/vms", b'{"name": "\xff"}')
    assert st == 400
    # Nothing was created by any of those.
    assert daemon.json("vm", "list") == []

    daemon.create("ok1")
    st, body = daemon.http("PATCH", "/v1/vms/ok1", {"cpus": 2, "bogus": True})
    assert st == 400 and "unknown field 'bogus'" in body["error"]["message"]
    assert daemon.vm("ok1")["cpus"] == 1, "a refused set must change nothing"
    st, body = daemon.http("PATCH", "/v1/vms/ok1", "{,}")
    assert st == 400 and body["error"]["code"] == "malformed-json"
    st, body = daemon.http("POST", "/v1/vms/ok1/stop", {"turn_off": "yes"})
    assert st == 400 and "'turn_off' must be a boolean" in body["error"]["message"]
    st, body = daemon.http("POST", "/v1/vms/ok1/stop", {"force": True})
    assert st == 400 and "unknown field 'force'" in body["error"]["message"]
    st, body = daemon.http("POST", "/v1/vms/ok1/start", {"now": 1})
    assert st == 400 and "unknown field 'now'" in body["error"]["message"]
    st, body = daemon.http("POST", "/v1/vms/ok1/explode")
    assert st == 404 and "unknown VM action" in body["error"]["message"]
    st, body = daemon.http("GET", "/v2/nothing")
    assert st == 404 and body["error"]["code"] == "no-such-endpoint"
    st, body = daemon.http("PUT", "/v1/vms")
    assert st == 405 and body["error"]["code"] == "method-not-allowed"
    st, body = daemon.http("POST", "/v1/vms", b"{" + b" " * (2 << 20) + b"}")
    assert st == 413
    st, body = daemon.http("POST", "/v1/vms", {"name": "ok1", "kernel": guest})
    assert st == 409 and "already exists" in body["error"]["message"]


def test_50_concurrent_clients(daemon):
    names = ["c%02d" % i for i in range(10)]
    for n in names:
        daemon.create(n, "count")
    results = []
    lock = threading.Lock()

    def client(i):
        name = names[i % len(names)]
        if i < len(names):
            r = daemon.cli("vm", "start", name)   # 10 VMs start in parallel
        elif i % 3 == 0:
            r = daemon.cli("vm", "show", name, "--json")
        else:
            r = daemon.cli("vm", "list", "--json")
        with lock:
            results.append((i, r.returncode, r.stderr))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(50)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 50
    bad = [r for r in results if r[1] != 0]
    assert not bad, bad
    assert time.time() - t0 < 120
    vms = daemon.json("vm", "list")
    assert sorted(v["name"] for v in vms) == names
    assert all(v["state"] == "running" for v in vms), vms
    # Operations on one VM are serialized: 10 concurrent pause/resume pairs
    # leave it consistent and never in an impossible state.
    codes = []

    def flip(i):
        r = daemon.cli("vm", "pause" if i % 2 == 0 else "resume", "c00")
        codes.append(r.returncode)
    ts = [threading.Thread(target=flip, args=(i,)) for i in range(10)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert set(codes) <= {0, 4}, codes
    assert daemon.state("c00") in ("running", "paused")
    for n in names:
        daemon.ok("vm", "stop", n, "--turn-off")


def test_event_stream(daemon):
    env = dict(os.environ, CLOISON_SOCKET=daemon.socket)
    watch = subprocess.Popen([str(daemon.cli_bin), "vm", "watch", "e1", "--json", "--count", "4"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    daemon.create("e1", "count")
    daemon.create("e2", "count")   # filtered out
    daemon.ok("vm", "start", "e1")
    daemon.ok("vm", "stop", "e1", "--turn-off")
    out, err = watch.communicate(timeout=30)
    assert watch.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    states = [(e["previous"], e["state"]) for e in events if e["type"] == "state"]
    assert states == [("off", "starting"), ("starting", "running"),
                      ("running", "stopping"), ("stopping", "off")], events
    assert all(e["vm"] == "e1" for e in events)
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs)
    # Raw SSE framing, replayed from a sequence number.
    c = UnixHTTPConnection(daemon.socket, timeout=10)
    c.request("GET", "/v1/events?since=0")
    r = c.getresponse()
    assert r.status == 200 and r.getheader("Content-Type") == "text/event-stream"
    first = r.readline().decode()
    assert first.startswith("id: "), first
    c.close()


TEST_USER = "cloisonop"
OTHER_USER = "cloisonnobody"


def ensure_user(name):
    if subprocess.run(["getent", "group", "cloison"], capture_output=True).returncode:
        subprocess.run(["groupadd", "-r", "cloison"], check=True)
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "-M", "-r", "-s", "/usr/sbin/nologin", "-G", "cloison", name],
                       check=True)
    subprocess.run(["usermod", "-a", "-G", "cloison", name], check=True)


def test_operator_roles(tmp_path, kvm):
    if os.geteuid() != 0 or not which("useradd") or not which("setpriv"):
        pytest.skip("needs root, useradd and setpriv to create and act as a test user")
    ensure_user(TEST_USER)
    ensure_user(OTHER_USER)
    d = Daemon(tmp_path / "state").start()
    try:
        st = os.stat(d.socket)
        assert st.st_mode & 0o777 == 0o660
        assert st.st_uid == 0 and st.st_gid == grp.getgrnam("cloison").gr_gid
        d.create("mine", "count", "--operator", TEST_USER)
        d.create("theirs", "count")
        # The operator sees only what is delegated to them.
        r = d.cli("vm", "list", "--json", user=TEST_USER)
        assert r.returncode == 0, r.stderr
        assert [v["name"] for v in json.loads(r.stdout)] == ["mine"]
        # A VM not delegated to them is answered like a missing one (404).
        for verb in ("start", "show", "stop", "console"):
            r = d.cli("vm", verb, "theirs", user=TEST_USER)
            assert r.returncode == 3, (verb, r.returncode, r.stderr)
            assert "no VM named 'theirs' is delegated to user" in r.stderr, r.stderr
        st_, body = None, None
        # Host administration stays with administrators.
        r = d.cli("vm", "create", "new", "--kernel", d.guest, user=TEST_USER)
        assert r.returncode == 6 and "host administrator" in r.stderr
        r = d.cli("vm", "set", "mine", "--operator", OTHER_USER, user=TEST_USER)
        assert r.returncode == 6
        r = d.cli("vm", "remove", "mine", user=TEST_USER)
        assert r.returncode == 6
        # What is delegated works.
        r = d.cli("vm", "start", "mine", user=TEST_USER)
        assert r.returncode == 0, r.stderr
        assert d.cli("vm", "pause", "mine", user=TEST_USER).returncode == 0
        assert d.cli("vm", "resume", "mine", user=TEST_USER).returncode == 0
        assert d.cli("vm", "stop", "mine", "--turn-off", user=TEST_USER).returncode == 0
        # Another user of the cloison group sees nothing.
        r = d.cli("vm", "list", "--json", user=OTHER_USER)
        assert r.returncode == 0 and json.loads(r.stdout) == []
        # Withdrawing the delegation takes effect at once.
        d.ok("vm", "set", "mine", "--remove-operator", TEST_USER)
        assert d.cli("vm", "start", "mine", user=TEST_USER).returncode == 3
    finally:
        d.cleanup()


def test_config_valid_after_kill9_during_set(tmp_path, kvm):
    d = Daemon(tmp_path / "state").start()
    try:
        d.create("cfg", "count", "--notes", "n-initial")
        cfgfile = d.vm("cfg")["config_path"]
        written = {"n-initial"}
        for round_ in range(8):
            stop = threading.Event()

            def hammer():
                i = 0
                while not stop.is_set():
                    note = "n-%d-%d-%s" % (round_, i, "x" * random.randint(0, 3000))
                    written.add(note)
                    try:
                        d.http("PATCH", "/v1/vms/cfg", {"notes": note, "cpus": 1 + i % 4})
                    except OSError:
                        return
                    i += 1
            ts = [threading.Thread(target=hammer) for _ in range(4)]
            for t in ts:
                t.start()
            time.sleep(random.uniform(0.05, 0.4))
            d.kill9()
            stop.set()
            for t in ts:
                t.join()
            with open(cfgfile) as f:
                cfg = json.load(f)  # must parse: never a torn file
            assert cfg["schema_version"] == 1 and cfg["name"] == "cfg"
            assert cfg["notes"] in written
            d.start()
            v = d.vm("cfg")
            assert v["notes"] == cfg["notes"]
    finally:
        d.cleanup()


def test_garbage_on_the_socket_does_not_hurt(daemon):
    """Random bytes, truncated requests, absurd headers and abrupt closes on
    the API socket: the daemon keeps serving."""
    import socket as socketmod
    rnd = random.Random(5)
    blobs = [b"\x00" * 100, b"GET\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
             b"POST /v1/vms HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n{",
             b"POST /v1/vms HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
             b"GET /v1/vms/" + b"a" * 10000 + b" HTTP/1.1\r\n\r\n",
             b"GET /v1/vms/%00%ff HTTP/1.1\r\nHost: x\r\n\r\n",
             b"PATCH /v1/vms/x HTTP/1.1\r\nContent-Length: 5\r\n\r\n{\"a\"",
             b"GET /v1/events?since=abc HTTP/1.1\r\nHost: x\r\n\r\n",
             b"POST /v1/vms/x/console HTTP/1.1\r\nUpgrade: other\r\nConnection: Upgrade\r\n\r\n"]
    blobs += [bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 2000))) for _ in range(100)]
    for b in blobs:
        s = socketmod.socket(socketmod.AF_UNIX)
        s.settimeout(2)
        s.connect(daemon.socket)
        try:
            s.sendall(b)
            s.shutdown(socketmod.SHUT_WR)
            s.recv(65536)
        except OSError:
            pass
        s.close()
    assert daemon.proc.poll() is None, daemon.log()[-2000:]
    assert daemon.json("vm", "list") == []
    st, body = daemon.http("GET", "/v1/events?since=abc")
    assert st == 400 and "sequence number" in body["error"]["message"]
