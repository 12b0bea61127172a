"""virtio-net end to end, in a private network namespace with a bridge:
cloison-vmm runs in the namespace with --net tap=NAME, the test guest
answers ARP, ICMP echo and UDP echo (docs/testguest.md `ip=ADDR/PREFIX`).

- the host (an address on the bridge) pings the guest;
- a UDP datagram to port 7 comes back unchanged;
- two guests on one bridge reach each other: one datagram, injected once
  with guest A as its source, then bounces between the two guests' UDP
  echo ports — every later copy was sent by a guest and received by the
  other one;
- the NIC's MAC and the tap passed as an inherited fd."""
import os
import re
import subprocess
import sys
import time

import pytest

from conftest import require_kvm
from netns_util import netns_or_skip
from vmmlib import Vmm

MAC_A = "02:c1:00:00:00:0a"
MAC_B = "02:c1:00:00:00:0b"


@pytest.fixture
def ns():
    require_kvm()
    with netns_or_skip("10.201.0") as n:
        yield n


def start_guest(ns, vmm_bin, testguest, tmp_path, tap, ip, mac, name):
    ns.add_tap(tap)
    vm = Vmm(vmm_bin, testguest, tmp_path / name, cmdline="ip=%s/24 run=serve" % ip,
             extra=["--net", "tap=%s,mac=%s" % (tap, mac)])
    ns.wrap(vm)
    vm.start()
    vm.wait_result("net_ip", timeout=60)
    return vm


UDP_ECHO = r"""
import socket, sys, os
ip, n = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
ok = 0
for i in range(n):
    msg = os.urandom(16) + bytes([i % 256]) * (100 + i * 37 % 1300)
    s.sendto(msg, (ip, 7))
    try:
        data, peer = s.recvfrom(4096)
    except socket.timeout:
        continue
    if data == msg and peer == (ip, 7):
        ok += 1
print("ok=%d" % ok)
"""


def test_host_pings_guest(ns, vmm_bin, testguest, tmp_path):
    vm = start_guest(ns, vmm_bin, testguest, tmp_path, "tap0", "10.201.0.2", MAC_A, "a")
    with vm:
        assert vm.result_values("net_mac") == [MAC_A], vm.tails()
        r = ns.run(["ping", "-c", "5", "-i", "0.2", "-W", "2", "10.201.0.2"], check=False)
        assert r.returncode == 0, r.stdout + r.stderr + vm.tails()
        assert " 0% packet loss" in r.stdout, r.stdout
        # The guest's ARP answer came from the MAC we configured.
        neigh = ns.ip("neigh", "show", "10.201.0.2").stdout
        assert MAC_A in neigh, neigh


def test_udp_echo_round_trips(ns, vmm_bin, testguest, tmp_path):
    vm = start_guest(ns, vmm_bin, testguest, tmp_path, "tap0", "10.201.0.2", MAC_A, "a")
    with vm:
        r = ns.run([sys.executable, "-c", UDP_ECHO, "10.201.0.2", "40"], check=False)
        assert r.returncode == 0, r.stderr
        ok = int(re.search(r"ok=(\d+)", r.stdout).group(1))
        assert ok >= 38, (r.stdout, vm.tails())  # a couple may be lost to ARP


PING_PONG = r"""
import socket, struct, sys, time
tap_a, tap_b, mac_a, mac_b, ip_a, ip_b = sys.argv[1:7]
ETH_P_ALL, PACKET_OUTGOING = 3, 4
mac = lambda m: bytes(int(x, 16) for x in m.split(":"))
ipb = lambda a: socket.inet_aton(a)
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
marker = b"cloison-ping-pong"
udp = struct.pack("!HHHH", 7, 7, 8 + len(marker), 0) + marker
iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, ipb(ip_a), ipb(ip_b))
iph = iph[:10] + struct.pack("!H", csum(iph)) + iph[12:]
frame = mac(mac_b) + mac(mac_a) + b"\x08\x00" + iph + udp
def sniffer(ifname):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((ifname, 0))
    s.settimeout(0.05)
    return s
sa, sb = sniffer(tap_a), sniffer(tap_b)
inj = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
inj.bind(("br0", 0))
inj.send(frame)
sent = {"a": 0, "b": 0}
end = time.time() + 2
while time.time() < end:
    for who, s, src in (("a", sa, mac(mac_a)), ("b", sb, mac(mac_b))):
        try:
            data, addr = s.recvfrom(4096)
        except socket.timeout:
            continue
        # Incoming on a tap = written by that guest's worker.
        if addr[2] != PACKET_OUTGOING and data[6:12] == src and marker in data:
            sent[who] += 1
print("a_sent=%d b_sent=%d" % (sent["a"], sent["b"]))
"""


def test_two_guests_reach_each_other(ns, vmm_bin, testguest, tmp_path):
    a = start_guest(ns, vmm_bin, testguest, tmp_path, "tap0", "10.201.0.2", MAC_A, "a")
    with a:
        b = start_guest(ns, vmm_bin, testguest, tmp_path, "tap1", "10.201.0.3", MAC_B, "b")
        with b:
            # Guest A's MAC stays on A's port even though the first copy of
            # the datagram is injected on the bridge with A as its source.
            ns.run(["bridge", "fdb", "replace", MAC_A, "dev", "tap0", "master", "static",
                    "sticky"])
            r = ns.run([sys.executable, "-c", PING_PONG, "tap0", "tap1", MAC_A, MAC_B,
                        "10.201.0.2", "10.201.0.3"], check=False)
            assert r.returncode == 0, r.stderr
            m = re.search(r"a_sent=(\d+) b_sent=(\d+)", r.stdout)
            a_sent, b_sent = int(m.group(1)), int(m.group(2))
            # B echoed what A sent and A echoed what B sent, many times.
            assert b_sent >= 2 and a_sent >= 2, (r.stdout, a.tails(), b.tails())


def test_tap_passed_as_fd(ns, vmm_bin, testguest, tmp_path):
    """An unprivileged-style start: the tap is opened by whoever starts the
    worker and handed over as fd 3."""
    ns.add_tap("tapfd")
    opener = r"""
import fcntl, os, struct, sys
fd = os.open("/dev/net/tun", os.O_RDWR)
TUNSETIFF, IFF_TAP, IFF_NO_PI, IFF_VNET_HDR = 0x400454ca, 0x2, 0x1000, 0x4000
fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", b"tapfd", IFF_TAP | IFF_NO_PI | IFF_VNET_HDR))
if fd != 3:
    os.dup2(fd, 3)
os.set_inheritable(3, True)
os.execv(sys.argv[1], sys.argv[1:])
"""
    vm = Vmm(vmm_bin, testguest, tmp_path / "fd", cmdline="ip=10.201.0.5/24 run=serve",
             extra=["--net", "fd=3,mac=02:c1:00:00:00:0f"])
    vm.args = [sys.executable, "-c", opener] + vm.args
    ns.wrap(vm)
    with vm:
        vm.wait_result("net_ip", timeout=60)
        r = ns.run(["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.201.0.5"], check=False)
        assert r.returncode == 0, r.stdout + vm.tails()


def test_bad_net_specs(vmm_bin, testguest, tmp_path):
    for spec in ["", "tap=a,fd=3", "mac=02:00:00:00:00:01", "tap=t,mac=01:00:00:00:00:01",
                 "tap=t,bogus", "fd=notanumber"]:
        p = subprocess.run([str(vmm_bin), "--kernel", str(testguest), "--net", spec],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 2, (spec, p.stderr)
        assert "--net" in p.stderr, p.stderr


def test_not_a_tap_fd_is_refused(vmm_bin, testguest, tmp_path):
    require_kvm()
    p = subprocess.run([str(vmm_bin), "--kernel", str(testguest), "--serial", "none",
                        "--net", "fd=0"], capture_output=True, text=True, timeout=30,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 1, p.stderr
    assert "not a tap" in p.stderr, p.stderr
