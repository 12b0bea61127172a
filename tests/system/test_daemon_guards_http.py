"""cloisond's guards at the HTTP edge: --socket never deletes what is not a
stale socket, URL-decoded names are checked, strict HTTP framing, and one
client cannot exhaust the daemon (head timeout, early 413, per-uid limit)."""
import os
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import binary
from test_daemon_lib import Daemon, daemon  # noqa: F401 (fixture)


def run_daemon_on(sock, state):
    return subprocess.run([str(binary("cloisond")), "--state-dir", str(state), "--socket", sock,
                           "--vmm", str(binary("cloison-vmm"))],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=20)


def test_socket_path_regular_file_is_left_alone(tmp_path):
    d = tempfile.mkdtemp(prefix="cld")
    path = os.path.join(d, "precious")
    with open(path, "w") as f:
        f.write("keep me\n")
    r = run_daemon_on(path, tmp_path / "state")
    assert r.returncode != 0
    assert "not a socket" in r.stdout.decode(errors="replace"), r.stdout
    with open(path) as f:
        assert f.read() == "keep me\n"
    os.unlink(path)
    os.rmdir(d)


def test_socket_path_live_socket_refused_stale_replaced(tmp_path):
    d = tempfile.mkdtemp(prefix="cld")
    path = os.path.join(d, "s")
    live = socket.socket(socket.AF_UNIX)
    live.bind(path)
    live.listen(1)
    r = run_daemon_on(path, tmp_path / "state")
    assert r.returncode != 0
    assert os.path.exists(path)
    live.close()   # now a stale socket: replaced
    dm = Daemon(tmp_path / "state2")
    dm.socket = path
    try:
        dm.start()
        assert dm.http("GET", "/v1/vms")[0] == 200
    finally:
        dm.cleanup()
        os.unlink(path) if os.path.exists(path) else None
        os.rmdir(d)
