#!/usr/bin/env python3
"""The cost of the integration services' round trips (issue 12): the test
guest (`agent acpi=ignore`, ring 3) under cloison-vmm with --vsock, the host
side a unix socket speaking docs/agent.md as cloisond does.

  heartbeat  HEARTBEAT -> HEARTBEAT_REPLY, one at a time
  kvp        KVP_SET (a 32-byte key, a 256-byte value) -> KVP_ACK
  kvp-small  the same with a 1-byte key and value: the test guest prints
             every item it gets on COM1 (RESULT agent_kvp=K=V), one port
             write and VM exit per byte, which is most of the kvp row
  copy       a 16 MiB FILE_BEGIN/DATA/END -> FILE_RESULT (MB/s, 10^6 bytes)

Medians and 95th percentiles over N round trips (default 2000, after 100
to warm up), in microseconds. Usage: bench/agent.py [N]   (needs /dev/kvm)
"""
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("CLOISON_BUILD", os.path.join(TOP, "build"))


def frame(t, body):
    return struct.pack("<HHI", t, 0, len(body)) + body


def recv_frame(s):
    h = b""
    while len(h) < 8:
        h += s.recv(8 - len(h))
    t, _, n = struct.unpack("<HHI", h)
    b = b""
    while len(b) < n:
        b += s.recv(n - len(b))
    return t, b


def timed(s, t, body, want, n):
    out = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        s.sendall(frame(t, body))
        got, b = recv_frame(s)
        out.append((time.perf_counter_ns() - t0) / 1000)
        assert got == want, (got, b)
    return out


def row(name, us):
    us.sort()
    print("%-10s median %8.1f us   p95 %8.1f us   (%d round trips)" % (
        name, statistics.median(us), us[int(len(us) * 0.95)], len(us)))


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    d = tempfile.mkdtemp(prefix="agentbench")
    vs = os.path.join(d, "v.sock")
    serial = os.path.join(d, "serial")
    p = subprocess.Popen([os.path.join(BUILD, "src/vmm/cloison-vmm"), "--kernel",
                          os.path.join(BUILD, "guest/cloison-testguest"), "--cmdline",
                          "agent acpi=ignore", "--serial", "file:" + serial, "--no-sandbox",
                          "--vsock", "cid=3,socket=" + vs], stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            if os.path.exists(serial) and "agent_ready" in open(serial).read():
                break
            time.sleep(0.05)
        s = socket.socket(socket.AF_UNIX)
        s.connect(vs)
        s.sendall(b"CONNECT 5300\n")
        line = b""
        while not line.endswith(b"\n"):
            line += s.recv(1)
        assert line.startswith(b"OK "), line
        s.sendall(frame(1, b"version=1\nservices=heartbeat,kvp,copy\n"))
        recv_frame(s)
        recv_frame(s)
        timed(s, 2, b"seq=0\n", 3, 100)
        row("heartbeat", timed(s, 2, b"seq=1\n", 3, n))
        kvp = b"key=" + b"k" * 32 + b"\nvalue=" + b"v" * 256 + b"\n"
        timed(s, 9, kvp, 10, 100)
        row("kvp", timed(s, 9, kvp, 10, n))
        small = b"key=k\nvalue=v\n"
        row("kvp-small", timed(s, 9, small, 10, n))
        data = os.urandom(60 * 1024)
        total = 16 << 20
        t0 = time.perf_counter()
        s.sendall(frame(11, b"dest=/bench\nsize=%d\n" % total))
        for _ in range(total // len(data)):
            s.sendall(frame(12, data))
        s.sendall(frame(12, data[:total % len(data)]))
        s.sendall(frame(13, b""))
        t, b = recv_frame(s)
        secs = time.perf_counter() - t0
        assert t == 14 and b"ok=1" in b, b
        print("%-10s %.1f MB/s (16 MiB through vsock into the guest, SHA-256 there)" % (
            "copy", total / secs / 1e6))
        s.sendall(frame(4, b""))
        recv_frame(s)
        p.wait(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
        p.wait()


if __name__ == "__main__":
    main()
