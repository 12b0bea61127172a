"""cloisond's guards at the HTTP edge and in its roles (issue 16, items 6,
10, 11, 14, 16): one user cannot exhaust the daemon (per-user connection
limit, head and idle timeouts, 413 before the body), URL-decoded names are
checked, HTTP framing is strict, a withdrawn delegation ends a console
session, and an operator cannot tell which VM names exist, sees only their
own VMs on /v1/host and receives the `removed` event of their own VM."""
import json
import os
import pwd
import select
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import which
from test_daemon_lib import Daemon, daemon  # noqa: F401 (fixture)

OP_USER = "cloisonop"
OTHER_USER = "cloisonnobody"
PER_UID_LIMIT = 64  # GATE_PER_UID in src/daemon/api/gate.h
HEAD_TIMEOUT_S = 10  # GATE_HEAD_TIMEOUT_S
IDLE_TIMEOUT_S = 30  # API_IDLE_TIMEOUT_S in src/daemon/api/api.h


def need_users():
    if os.geteuid() != 0 or not which("useradd") or not which("setpriv"):
        pytest.skip("needs root, useradd and setpriv to create and act as a test user")
    for name in (OP_USER, OTHER_USER):
        if subprocess.run(["getent", "group", "cloison"], capture_output=True).returncode:
            subprocess.run(["groupadd", "-r", "cloison"], check=True)
        try:
            pwd.getpwnam(name)
        except KeyError:
            subprocess.run(["useradd", "-M", "-r", "-s", "/usr/sbin/nologin", "-G", "cloison",
                            name], check=True)
        subprocess.run(["usermod", "-a", "-G", "cloison", name], check=True)


def as_user(user, argv):
    if user is None:
        return argv
    return ["setpriv", "--reuid=" + user, "--regid=" + user, "--init-groups"] + argv


# Run by a test user (or root): HTTP requests over the socket, one per
# connection; prints [[status, body], ...].
REQUESTS = r'''
import http.client, json, socket, sys
class C(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX); self.sock.settimeout(30)
        self.sock.connect(sys.argv[1])
out = []
for method, path in json.loads(sys.argv[2]):
    c = C("localhost"); c.request(method, path, body=b"" if method != "GET" else None)
    r = c.getresponse(); data = r.read(); c.close()
    try:
        out.append([r.status, json.loads(data)])
    except ValueError:
        out.append([r.status, data.decode(errors="replace")])
print(json.dumps(out))
'''

# Run by a test user (or root): opens N connections, sends nothing, and
# reports how many the daemon kept open and how many it answered 429;
# holds the kept ones until its stdin closes.
HOG = r'''
import json, select, socket, sys, time
path, n = sys.argv[1], int(sys.argv[2])
socks = []
for _ in range(n):
    s = socket.socket(socket.AF_UNIX); s.connect(path); socks.append(s)
time.sleep(1.0)
held, refused, busy, other = [], 0, 0, []
for s in socks:
    p = select.poll(); p.register(s, select.POLLIN)
    if not p.poll(0):
        held.append(s); continue
    data = s.recv(4096)
    if b" 429 " in data.split(b"\r\n")[0] and b"too-many-connections" in data:
        refused += 1
    elif b" 503 " in data.split(b"\r\n")[0] and b"too-many-connections" in data:
        busy += 1
    else:
        other.append(data[:200].decode(errors="replace"))
    s.close()
print(json.dumps({"held": len(held), "refused": refused, "busy": busy, "other": other[:3]}),
      flush=True)
sys.stdin.read()
'''


def requests_as(d, user, reqs):
    r = subprocess.run(as_user(user, [sys.executable, "-c", REQUESTS, d.socket, json.dumps(reqs)]),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def start_hog(d, user, n):
    p = subprocess.Popen(as_user(user, [sys.executable, "-c", HOG, d.socket, str(n)]),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    r, _, _ = select.select([p.stdout], [], [], 60)
    line = p.stdout.readline() if r else ""
    if not line:
        p.kill()
        pytest.fail("the client holding %d connections did not report: %s\n%s" % (
            n, p.stderr.read(), d.log()[-2000:]))
    return p, json.loads(line)


def stop_hog(p):
    p.stdin.close()
    p.wait(timeout=30)


def timed_list(d):
    t = time.monotonic()
    r = d.cli("vm", "list", "--json", timeout=30)
    return time.monotonic() - t, r


def raw_exchange(path, data, wait=5.0):
    """Sends data on a new connection and reads until the daemon closes it
    or wait seconds pass; returns (bytes read, closed, seconds)."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    t = time.monotonic()
    s.sendall(data)
    out, closed = b"", False
    s.settimeout(0.2)
    while time.monotonic() - t < wait:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            closed = True
            break
        if not chunk:
            closed = True
            break
        out += chunk
    s.close()
    return out, closed, time.monotonic() - t


def status_of(resp):
    line = resp.split(b"\r\n", 1)[0].split()
    return int(line[1]) if len(line) >= 2 and line[1].isdigit() else None


def body_of(resp):
    return json.loads(resp.split(b"\r\n\r\n", 1)[1])


# ---- item 6: one client cannot exhaust the daemon ----

def test_1000_idle_connections_do_not_starve_the_admin(tmp_path, kvm):
    """1,000 idle connections from one unprivileged user: it keeps its 64,
    the rest are answered 429, and root's `vm list` answers within 1 s; the
    user's slots come back when they close. Then 1,100 idle connections from
    root itself (no per-user limit for root): `vm list` still answers
    within 1 s."""
    need_users()
    d = Daemon(tmp_path / "state").start()
    try:
        d.create("v1")
        hog, got = start_hog(d, OP_USER, 1000)
        try:
            assert got["held"] == PER_UID_LIMIT and got["refused"] == 1000 - PER_UID_LIMIT, got
            secs, r = timed_list(d)
            assert r.returncode == 0, r.stderr
            assert [v["name"] for v in json.loads(r.stdout)] == ["v1"]
            assert secs < 1.0, "vm list took %.2f s with 1,000 idle connections" % secs
            # Another user is not crowded out either.
            st = requests_as(d, OTHER_USER, [["GET", "/v1/vms"]])
            assert st[0][0] == 200, st
        finally:
            stop_hog(hog)
        # The user's slots came back when its connections closed.
        deadline = time.time() + 10
        while True:
            st = requests_as(d, OP_USER, [["GET", "/v1/vms"]] * 3)
            if all(s[0] == 200 for s in st) or time.time() > deadline:
                break
            time.sleep(0.2)
        assert all(s[0] == 200 for s in st), st

        # Root has no per-user limit; past FD_SETSIZE (1,024) descriptors
        # select() could not serve anyone, poll() does.
        hog, got = start_hog(d, None, 1100)
        try:
            assert got["held"] == 1100, got
            secs, r = timed_list(d)
            assert r.returncode == 0, r.stderr
            assert secs < 1.0, "vm list took %.2f s with 1,100 idle root connections" % secs
        finally:
            stop_hog(hog)
    finally:
        d.cleanup()


def test_many_users_cannot_lock_root_out_under_a_low_fd_limit(tmp_path, kvm):
    """cloisond under RLIMIT_NOFILE 250 (hard, so it cannot raise it) keeps
    descriptors for itself and for root: it takes 250 / 2 = 125 connections,
    of which users other than root get 125 - 125 / 4 = 94 (the rest 503), and
    root's `vm list` answers within 1 s. Before, the users' connections took
    every descriptor and root could not connect at all."""
    need_users()
    d = Daemon(tmp_path / "state")
    # The limit is lowered in the daemon's own process, just before exec.
    wrapper = tmp_path / "cloisond-nofile-250"
    wrapper.write_text("#!%s\nimport os, resource, sys\n"
                       "resource.setrlimit(resource.RLIMIT_NOFILE, (250, 250))\n"
                       "os.execv(%r, [%r] + sys.argv[1:])\n" % (sys.executable, str(d.bin),
                                                                 str(d.bin)))
    wrapper.chmod(0o755)
    d.bin = wrapper
    d.start()
    hogs = []
    try:
        hog, a = start_hog(d, OP_USER, 200)
        hogs.append(hog)
        hog, b = start_hog(d, OTHER_USER, 200)
        hogs.append(hog)
        assert a["held"] == PER_UID_LIMIT and a["refused"] == 200 - PER_UID_LIMIT, a
        assert b["held"] == 94 - PER_UID_LIMIT and b["busy"] == 200 - b["held"], b
        secs, r = timed_list(d)
        assert r.returncode == 0, r.stderr
        assert secs < 1.0, secs
        assert "allows 125 API connections" in d.log(), d.log()
    finally:
        for hog in hogs:
            stop_hog(hog)
        d.cleanup()


def test_head_and_idle_timeouts(daemon):
    """A connection that sends nothing, and one that trickles its head a
    byte a second, are answered 408 and closed once the head timeout
    (10 s) has passed since they connected; a kept-alive connection after a
    request is closed once it has been idle for 30 s."""
    results = {}

    def silent():
        results["silent"] = raw_exchange(daemon.socket, b"", wait=HEAD_TIMEOUT_S + 8)

    def trickle():
        s = socket.socket(socket.AF_UNIX)
        s.connect(daemon.socket)
        t = time.monotonic()
        head = b"GET /v1/vms HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
        out, closed = b"", False
        for i in range(len(head)):
            try:
                s.sendall(head[i:i + 1])
            except OSError:
                closed = True
                break
            r, _, _ = select.select([s], [], [], 1.0)
            if r:
                try:
                    chunk = s.recv(4096)
                except ConnectionResetError:
                    chunk = b""
                out += chunk
                if not chunk:
                    closed = True
                    break
            if time.monotonic() - t > HEAD_TIMEOUT_S + 8:
                break
        s.close()
        results["trickle"] = (out, closed, time.monotonic() - t)

    def keepalive():
        s = socket.socket(socket.AF_UNIX)
        s.connect(daemon.socket)
        s.sendall(b"GET /v1/vms HTTP/1.1\r\nHost: x\r\n\r\n")
        t = time.monotonic()
        out, closed = b"", False
        s.settimeout(0.5)
        while time.monotonic() - t < IDLE_TIMEOUT_S + 10:
            try:
                chunk = s.recv(4096)
            except socket.timeout:
                continue
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                closed = True
                break
            out += chunk
            t_resp = time.monotonic()
        s.close()
        results["keepalive"] = (out, closed, time.monotonic() - t_resp if out else None)

    threads = [threading.Thread(target=f) for f in (silent, trickle, keepalive)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out, closed, secs = results["silent"]
    assert closed and status_of(out) == 408, results["silent"]
    assert HEAD_TIMEOUT_S - 1 <= secs <= HEAD_TIMEOUT_S + 3, secs
    out, closed, secs = results["trickle"]
    assert closed and status_of(out) == 408, results["trickle"]
    assert secs <= HEAD_TIMEOUT_S + 3, secs
    out, closed, idle = results["keepalive"]
    assert status_of(out) == 200, out
    assert closed and IDLE_TIMEOUT_S - 2 <= idle <= IDLE_TIMEOUT_S + 5, results["keepalive"]


def test_oversized_content_length_refused_before_the_body(daemon):
    """A declared 1 GB body is answered 413 at once, no byte of it sent, and
    the connection is closed; a client that waits for 100-continue gets the
    413 instead; a small declared body is still read."""
    out, closed, secs = raw_exchange(
        daemon.socket,
        b"POST /v1/vms HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000000000\r\n\r\n", wait=10)
    assert status_of(out) == 413 and body_of(out)["error"]["code"] == "too-large", out
    assert closed and secs < 3, (closed, secs)
    out, closed, secs = raw_exchange(
        daemon.socket,
        b"POST /v1/vms HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        b"Content-Length: 2000000\r\n\r\n", wait=10)
    assert status_of(out) == 413 and b"100 Continue" not in out, out
    assert closed and secs < 3
    out, closed, secs = raw_exchange(
        daemon.socket, b"POST /v1/vms HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
        wait=3)
    assert status_of(out) == 400 and "'name' is required" in out.decode(), out


# ---- item 10: URL-decoded names ----

def test_decoded_names_with_nul_slash_or_bad_utf8_are_refused(daemon):
    daemon.create("ct1")
    cases = ["/v1/vms/ct1%00..%2f..%2fjunk", "/v1/vms/ct1%00", "/v1/vms/ct1%2f..",
             "/v1/vms/%ff", "/v1/vms/%c3%28", "/v1/vms/%ed%a0%80", "/v1/vms/%c0%af"]
    for path in cases:
        for method in ("DELETE", "GET", "POST"):
            p = path + "/start" if method == "POST" else path
            st, body = daemon.http(method, p)
            assert st == 400, (method, p, st, body)
            assert body["error"]["code"] == "invalid-name", (method, p, body)
            assert "out of memory" not in body["error"]["message"]
    # A malformed escape is a bad request too.
    st, body = daemon.http("GET", "/v1/vms/ct%zz")
    assert st == 400, body
    # ct1 was never acted on, and a well-formed name still works.
    st, body = daemon.http("GET", "/v1/vms/ct1")
    assert st == 200 and body["name"] == "ct1"
    st, body = daemon.http("GET", "/v1/vms/%63t1")
    assert st == 200 and body["name"] == "ct1"
    # Valid UTF-8 that is no VM name: an ordinary 404 that names it.
    st, body = daemon.http("GET", "/v1/vms/%c3%a9t%c3%a9")
    assert st == 404 and body["error"]["code"] == "not-found", body
    assert "\u00e9t\u00e9" in body["error"]["message"]


# ---- item 11: strict framing ----

def test_strict_http_framing(daemon):
    """Two Content-Length headers, Content-Length with Transfer-Encoding, a
    binary request line, a TLS hello (no line end at all) and a line that is
    no request line: each gets a 400 at once and the connection is closed."""
    cases = [
        b"POST /v1/vms HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 30\r\n\r\n{}",
        b"POST /v1/vms HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n{}",
        b"\x00\x01\x02\xff\xfe garbage\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"GET\x00 /v1/vms HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GE\xffT /v1/vms HTTP/1.1\r\n\r\n",
        b"GET /v1/vms\x00\x01 HTTP/1.1\r\n\r\n",
        b"garbage\r\n\r\n",
        b"GET /v1/vms HTTP/9.9\r\n\r\n",
        b"GET /v1/vms HTTP/1.1\r\nHost: x\r\nX-Bad: a\x00b\r\n\r\n",
    ]
    for data in cases:
        out, closed, secs = raw_exchange(daemon.socket, data, wait=5)
        assert status_of(out) == 400, (data, out)
        assert body_of(out)["error"]["code"] == "bad-request", (data, out)
        assert closed and secs < 3, (data, closed, secs)
    # A well-formed request on the same socket still works.
    out, closed, _ = raw_exchange(daemon.socket, b"GET /v1/vms HTTP/1.1\r\nHost: x\r\n"
                                  b"Connection: close\r\n\r\n", wait=5)
    assert status_of(out) == 200 and closed, out


# ---- item 14: a withdrawn delegation ends the console session ----

def test_withdrawn_delegation_ends_console_session(tmp_path, kvm):
    need_users()
    d = Daemon(tmp_path / "state").start()
    con = None
    try:
        d.create("cs", "count", "--operator", OP_USER)
        d.ok("vm", "start", "cs")
        con = subprocess.Popen(
            as_user(OP_USER, ["env", "CLOISON_SOCKET=" + d.socket, str(d.cli_bin), "vm",
                              "console", "cs"]),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out = b""
        deadline = time.time() + 60
        while time.time() < deadline and len(out) < 64:
            r, _, _ = select.select([con.stdout], [], [], 0.5)
            if r:
                chunk = os.read(con.stdout.fileno(), 65536)
                if not chunk:
                    break
                out += chunk
        assert len(out) >= 64 and con.poll() is None, (
            "the operator's console did not stream: %r %s" % (out, d.worker_logs()))
        d.ok("vm", "set", "cs", "--remove-operator", OP_USER)
        t = time.monotonic()
        try:
            con.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pytest.fail("the console session went on after the delegation was withdrawn")
        rest = con.stdout.read()
        assert time.monotonic() - t < 3
        assert b"no longer an operator of VM 'cs'" in rest, rest[-300:]
        # And a new attach is refused like a missing VM.
        r = d.cli("vm", "console", "cs", user=OP_USER, timeout=30)
        assert r.returncode == 3 and "no VM named 'cs'" in r.stderr, (r.returncode, r.stderr)
        d.ok("vm", "stop", "cs", "--turn-off")
    finally:
        if con and con.poll() is None:
            con.kill()
            con.wait()
        d.cleanup()


# ---- item 16: what an operator can learn ----

def test_operator_cannot_probe_names_sees_own_counts_and_own_removed_event(tmp_path, kvm):
    need_users()
    d = Daemon(tmp_path / "state").start()
    follower = None
    try:
        d.create("mine", "count", "--operator", OP_USER)
        d.create("theirs", "count")
        d.create("third", "count")
        # The same answer for a VM they may not see as for a missing VM.
        for verb in ("GET", "POST-start", "POST-stop", "POST-console"):
            method, _, action = verb.partition("-")
            suffix = "/" + action if action else ""
            got = requests_as(d, OP_USER, [[method, "/v1/vms/theirs" + suffix],
                                           [method, "/v1/vms/nosuch" + suffix]])
            (st1, b1), (st2, b2) = got
            assert st1 == st2 == 404, (verb, got)
            assert b1 == json.loads(json.dumps(b2).replace("nosuch", "theirs")), (verb, got)
        for method in ("PATCH", "DELETE"):
            got = requests_as(d, OP_USER, [[method, "/v1/vms/theirs"],
                                           [method, "/v1/vms/nosuch"]])
            assert got[0][0] == got[1][0] == 403, got
            assert got[0][1] == got[1][1], got
        # /v1/host counts only their VMs; the admin sees all three.
        (st, host), = requests_as(d, OP_USER, [["GET", "/v1/host"]])
        assert st == 200 and host["vms"]["total"] == 1 and host["vms"]["off"] == 1, host
        assert host["vms_scope"] == "delegated"
        admin_host = d.json("host", "info")
        assert admin_host["vms"]["total"] == 3, admin_host

        # The event stream: their VM's events, its `removed` included,
        # and nothing of the others.
        follower = subprocess.Popen(
            as_user(OP_USER, [sys.executable, "-c", r'''
import json, socket, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.settimeout(1)
s.sendall(b"GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
buf, t = b"", time.time()
print("ready", flush=True)
while time.time() - t < 30 and b"event: removed" not in buf:
    try:
        c = s.recv(65536)
    except socket.timeout:
        continue
    if not c:
        break
    buf += c
time.sleep(1.0)  # anything after the removed event would show here
s.settimeout(0.2)
try:
    buf += s.recv(65536)
except OSError:
    pass
events = [json.loads(l[6:]) for l in buf.decode().split("\n") if l.startswith("data: ")]
print(json.dumps(events), flush=True)
''', d.socket]), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert follower.stdout.readline().strip() == "ready", follower.stderr.read()
        time.sleep(0.5)
        d.ok("vm", "set", "theirs", "--notes", "not for the operator")
        d.ok("vm", "set", "mine", "--notes", "for the operator")
        d.ok("vm", "remove", "theirs")
        d.ok("vm", "remove", "mine")
        d.ok("vm", "set", "third", "--notes", "after")
        out, err = follower.communicate(timeout=60)
        events = json.loads(out.strip().splitlines()[-1])
        seen = [(e["type"], e.get("vm")) for e in events]
        assert ("removed", "mine") in seen, (seen, err)
        assert ("config", "mine") in seen, seen
        assert all(vm == "mine" for _, vm in seen), seen
    finally:
        if follower and follower.poll() is None:
            follower.kill()
            follower.wait()
        d.cleanup()
