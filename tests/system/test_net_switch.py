"""Virtual switches through the real host-networking library (src/net/,
driven by tests/tools/cloison-netctl). Everything happens in network
namespaces made here: one stands for the host, one per "VM" (a veth whose
far end is the VM's eth0, attached to the switch where a tap would be), and
one for an outside host behind the host's uplink. The real host network is
never touched."""
import json
import os
import subprocess
import time

import pytest

from conftest import BUILD
from netns_util import can_make_netns, rate_by_source, sh, NETNS_NEEDS, UDP_RATE

NETCTL = BUILD / "tests" / "tools" / "cloison-netctl"

pytestmark = pytest.mark.skipif(not can_make_netns(), reason=NETNS_NEEDS)


# Raw-frame helpers run inside a VM namespace with `python3 -c`.
SEND_FRAMES = r"""
import socket, sys
src = bytes.fromhex(sys.argv[1].replace(':', ''))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(('eth0', 0))
for i in range(5):
    s.send(b'\xff' * 6 + src + b'\x88\xb5' + b'cloison-test-frame' + bytes(40))
"""

COUNT_FRAMES = r"""
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88b5))
s.bind(('eth0', 0))
s.settimeout(0.2)
n, end = 0, time.time() + float(sys.argv[1])
print('ready', flush=True)
while time.time() < end:
    try:
        if b'cloison-test-frame' in s.recv(2048):
            n += 1
    except socket.timeout:
        pass
print(n, flush=True)
"""

SEND_OFFER = r"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b'eth0')
s.bind(('0.0.0.0', 67))
offer = bytes([2, 1, 6, 0]) + bytes(232) + bytes([99, 130, 83, 99, 53, 1, 2, 255])
for i in range(5):
    s.sendto(offer, ('255.255.255.255', 68))
"""

COUNT_UDP68 = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', 68))
s.settimeout(0.2)
n, end = 0, time.time() + float(sys.argv[1])
print('ready', flush=True)
while time.time() < end:
    try:
        s.recv(2048)
        n += 1
    except socket.timeout:
        pass
print(n, flush=True)
"""

SEND_RA = r"""
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b'eth0')
ra = bytes([134, 0, 0, 0, 64, 0, 0, 0]) + bytes(8)
idx = socket.if_nametoindex('eth0')
for i in range(5):
    s.sendto(ra, ('ff02::1', 0, 0, idx))
"""

COUNT_RA = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.settimeout(0.2)
n, end = 0, time.time() + float(sys.argv[1])
print('ready', flush=True)
while time.time() < end:
    try:
        if s.recv(2048)[0] == 134:
            n += 1
    except socket.timeout:
        pass
print(n, flush=True)
"""

COUNT_ICMP = r"""
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
s.bind(('eth0', 0))
s.settimeout(0.2)
n, end = 0, time.time() + float(sys.argv[1])
print('ready', flush=True)
while time.time() < end:
    try:
        f = s.recv(2048)
        ip = bytes(map(int, sys.argv[2].split('.')))
        if f[23] == 1 and ip in (f[26:30], f[30:34]):
            n += 1
    except socket.timeout:
        pass
print(n, flush=True)
"""

UDP_FLOOD = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
b, end = bytes(1400), time.time() + float(sys.argv[2])
while time.time() < end:
    try:
        s.sendto(b, (sys.argv[1], 9000))
    except OSError:
        pass
"""


TCP_SERVE_PEER = r"""
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', int(sys.argv[1])))
s.listen(1)
print('ready', flush=True)
s.settimeout(20)
c, peer = s.accept()
c.sendall(('peer=%s reply=%s\n' % (peer[0], sys.argv[2])).encode())
c.close()
"""

TCP_CONNECT = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
print(s.recv(200).decode().strip())
"""


class Lab:
    """A host namespace and the VM and outside namespaces around it."""

    def __init__(self):
        self.tag = "%d" % (os.getpid() % 100000)
        self.host = "clsh" + self.tag
        self.spaces = []
        self.procs = []

    def __enter__(self):
        self.add_ns(self.host)
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        for ns in reversed(self.spaces):
            sh(["ip", "netns", "del", ns], check=False)
        return False

    def add_ns(self, name):
        sh(["ip", "netns", "del", name], check=False)
        sh(["ip", "netns", "add", name])
        self.spaces.append(name)
        sh(["ip", "-n", name, "link", "set", "lo", "up"])
        return name

    def run(self, ns, cmd, check=True, **kw):
        return sh(["ip", "netns", "exec", ns] + [str(c) for c in cmd], check=check, **kw)

    def popen(self, ns, cmd):
        p = subprocess.Popen(["ip", "netns", "exec", ns] + [str(c) for c in cmd],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        return p

    def netctl(self, *args, check=True):
        r = self.run(self.host, [NETCTL] + list(args), check=False)
        if check and r.returncode:
            raise AssertionError("cloison-netctl %s: %s" % (" ".join(map(str, args)), r.stderr))
        return r

    def vm(self, name, addr=None, gw=None, mac=None, ipv6=False):
        """A VM namespace whose eth0 is the far end of veth `name`p in the host."""
        ns = self.add_ns("cls" + name + self.tag)
        if not ipv6:
            self.run(ns, ["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"])
        else:
            self.run(ns, ["sysctl", "-q", "-w", "net.ipv6.conf.default.accept_dad=0"])
        sh(["ip", "-n", self.host, "link", "add", name + "p", "type", "veth",
            "peer", "name", "eth0", "netns", ns])
        if mac:
            sh(["ip", "-n", ns, "link", "set", "eth0", "address", mac])
        sh(["ip", "-n", ns, "link", "set", "eth0", "up"])
        if addr:
            sh(["ip", "-n", ns, "addr", "add", addr, "dev", "eth0"])
        if gw:
            sh(["ip", "-n", ns, "route", "add", "default", "via", gw])
        return ns

    def mac_of(self, ns, dev="eth0"):
        return json.loads(sh(["ip", "-n", ns, "-j", "link", "show", dev]).stdout)[0]["address"]

    def ping(self, ns, addr, count=1):
        return self.run(ns, ["ping", "-c", count, "-W", "1", "-i", "0.2", addr],
                        check=False).returncode == 0

    def attach(self, switch, name, *opts, ns=None):
        mac = self.mac_of(ns) if ns else None
        args = ["port-attach", switch, name + "p"]
        if mac:
            args += ["--mac", mac]
        self.netctl(*(args + list(opts)))
        self.wait_carrier("cls-" + switch)

    def wait_carrier(self, bridge, timeout=10):
        """The kernel tells a bridge its port is up through linkwatch, which
        may hold the event up to a second (longer on a busy host): until
        then the bridge has no carrier and the host's first packets wait."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            got = json.loads(sh(["ip", "-n", self.host, "-j", "link", "show", bridge]).stdout)
            if "LOWER_UP" in got[0]["flags"]:
                return
            time.sleep(0.05)
        raise AssertionError("bridge %s has no carrier %d s after a port came up" % (bridge, timeout))


@pytest.fixture
def lab():
    with Lab() as l:
        yield l


def test_private_vms_reach_each_other_not_the_host_nor_another_switch(lab):
    lab.netctl("switch-create", "p1", "private")
    lab.netctl("switch-create", "p2", "private")
    vm1 = lab.vm("v1", "10.77.0.2/24")
    vm2 = lab.vm("v2", "10.77.0.3/24")
    vm3 = lab.vm("v3", "10.77.0.4/24")
    lab.attach("p1", "v1", ns=vm1)
    lab.attach("p1", "v2", ns=vm2)
    lab.attach("p2", "v3", ns=vm3)
    assert lab.ping(vm1, "10.77.0.3"), "two VMs on a private switch cannot ping each other"
    # Even an address someone puts on the bridge by hand gives the host no reach.
    sh(["ip", "-n", lab.host, "addr", "add", "10.77.0.1/24", "dev", "cls-p1"])
    assert not lab.ping(lab.host, "10.77.0.2"), "the host reached a VM on a private switch"
    assert not lab.ping(vm1, "10.77.0.1"), "a VM on a private switch reached the host"
    assert not lab.ping(vm3, "10.77.0.2"), "a VM on another private switch reached p1's VM"
    lab.netctl("switch-remove", "p1")
    links = sh(["ip", "-n", lab.host, "-j", "link"]).stdout
    assert "cls-p1" not in links
    tables = lab.run(lab.host, ["nft", "list", "tables"]).stdout
    assert "cloison_p1" not in tables and "cloison_p2" in tables


def test_internal_host_and_vm_ping_each_other(lab):
    out = json.loads(lab.netctl("switch-create", "i1", "internal", "--addr", "10.78.0.1/24").stdout)
    assert out["gateway"] == "10.78.0.1" and not out["adopted"]
    vm = lab.vm("v1", "10.78.0.2/24")
    lab.attach("i1", "v1", ns=vm)
    assert lab.ping(lab.host, "10.78.0.2")
    assert lab.ping(vm, "10.78.0.1")
    # A second create adopts the bridge: traffic keeps flowing, nothing doubles.
    out = json.loads(lab.netctl("switch-create", "i1", "internal", "--addr", "10.78.0.1/24").stdout)
    assert out["adopted"]
    assert lab.ping(vm, "10.78.0.1")
    ruleset = lab.run(lab.host, ["nft", "list", "table", "inet", "cloison_i1"]).stdout
    assert ruleset.count("drop") == 1, ruleset


def test_vm_on_internal_switch_does_not_route_to_another_switch(lab):
    lab.netctl("switch-create", "i1", "internal", "--addr", "10.78.0.1/24")
    lab.netctl("switch-create", "i2", "internal", "--addr", "10.79.0.1/24")
    lab.run(lab.host, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    vm1 = lab.vm("v1", "10.78.0.2/24", gw="10.78.0.1")
    vm2 = lab.vm("v2", "10.79.0.2/24", gw="10.79.0.1")
    lab.attach("i1", "v1", ns=vm1)
    lab.attach("i2", "v2", ns=vm2)
    assert lab.ping(vm2, "10.79.0.1")
    assert not lab.ping(vm1, "10.79.0.2"), "the host routed between two switches"


def nat_lab(lab):
    """A NAT switch; the host's uplink 203.0.113.1 leads to an outside host .2."""
    out = lab.add_ns("clso" + lab.tag)
    sh(["ip", "-n", lab.host, "link", "add", "uplink", "type", "veth", "peer", "name", "eth0",
        "netns", out])
    sh(["ip", "-n", lab.host, "addr", "add", "203.0.113.1/24", "dev", "uplink"])
    sh(["ip", "-n", lab.host, "link", "set", "uplink", "up"])
    sh(["ip", "-n", out, "addr", "add", "203.0.113.2/24", "dev", "eth0"])
    sh(["ip", "-n", out, "link", "set", "eth0", "up"])
    sub = json.loads(lab.netctl("subnet-choose").stdout)["subnet"]
    sw = json.loads(lab.netctl("switch-create", "n1", "nat", "--subnet", sub).stdout)
    return out, sub, sw["gateway"]


def wait_ready(p):
    line = p.stdout.readline()
    assert line.strip() == "ready", p.stderr.read()


def test_nat_masquerade_and_port_forward(lab):
    outside, sub, gw = nat_lab(lab)
    assert gw.endswith(".1")
    vmaddr = gw[:-1] + "50"
    vm = lab.vm("v1", vmaddr + "/24", gw=gw)
    lab.attach("n1", "v1", ns=vm)
    assert lab.ping(vm, "203.0.113.2"), "the VM does not reach the outside host through NAT"
    # The outside host sees the host's address, not the VM's.
    srv = lab.popen(outside, ["python3", "-c", TCP_SERVE_PEER, "7000", "out"])
    wait_ready(srv)
    r = lab.run(vm, ["python3", "-c", TCP_CONNECT, "203.0.113.2", "7000"])
    assert r.stdout.strip() == "peer=203.0.113.1 reply=out"
    # The outside cannot open a connection into the subnet unforwarded.
    assert not lab.ping(outside, vmaddr)
    lab.netctl("forward-add", "n1", "tcp", "8080", vmaddr, "80")
    r = lab.netctl("forward-add", "n1", "tcp", "8080", vmaddr, "80", check=False)
    assert r.returncode == 1 and "forwarded already" in r.stderr
    srv = lab.popen(vm, ["python3", "-c", TCP_SERVE_PEER, "80", "vm"])
    wait_ready(srv)
    r = lab.run(outside, ["python3", "-c", TCP_CONNECT, "203.0.113.1", "8080"])
    assert r.stdout.strip() == "peer=203.0.113.2 reply=vm"
    lab.netctl("forward-remove", "n1", "tcp", "8080")
    srv = lab.popen(vm, ["python3", "-c", TCP_SERVE_PEER, "80", "vm"])
    wait_ready(srv)
    r = lab.run(outside, ["python3", "-c", TCP_CONNECT, "203.0.113.1", "8080"], check=False)
    assert r.returncode != 0, "a removed forward still reached the VM"


def test_nat_bad_input_changes_nothing(lab):
    nat_lab(lab)
    before = lab.run(lab.host, ["nft", "-s", "list", "ruleset"]).stdout
    r = lab.netctl("switch-create", "n2", "nat", "--subnet", "203.0.113.0/24", check=False)
    assert r.returncode == 1 and "overlaps the host's route to 203.0.113.0/24" in r.stderr
    r = lab.netctl("switch-create", "n2", "nat", "--subnet", "10.1.2.3/24", check=False)
    assert r.returncode == 1 and "no host bits" in r.stderr
    r = lab.netctl("switch-create", "e1", "external", "--adapter", "nosuch0", check=False)
    assert r.returncode == 1 and "adapter nosuch0 does not exist" in r.stderr
    r = lab.netctl("switch-create", "bad-name", "private", check=False)
    assert r.returncode == 1 and "bad switch name" in r.stderr
    r = lab.netctl("forward-add", "nosuch", "tcp", "80", "10.0.0.1", "80", check=False)
    assert r.returncode == 1 and "no NAT switch" in r.stderr
    r = lab.netctl("switch-remove", "nosuch", check=False)
    assert r.returncode == 1 and "no switch" in r.stderr
    assert lab.run(lab.host, ["nft", "-s", "list", "ruleset"]).stdout == before
    links = json.loads(sh(["ip", "-n", lab.host, "-j", "link"]).stdout)
    assert sorted(l["ifname"] for l in links) == ["cls-n1", "lo", "uplink"]


def test_dnsmasq_hands_a_lease_to_udhcpc(lab, tmp_path):
    outside, sub, gw = nat_lab(lab)
    vm = lab.vm("v1", mac="52:54:00:aa:bb:01")
    lab.attach("n1", "v1", ns=vm)
    leases = tmp_path / "n1.leases"
    log = tmp_path / "dnsmasq.log"
    out = json.loads(lab.netctl("dhcp-start", "cls-n1", sub, leases, log, "dns").stdout)
    try:
        script = tmp_path / "udhcpc.sh"
        script.write_text("#!/bin/sh\n[ \"$1\" = bound ] && ip addr add $ip/${mask:-24} dev $interface"
                          " && ip route add default via $router\nexit 0\n")
        script.chmod(0o755)
        r = lab.run(vm, ["busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "5", "-T", "1",
                         "-x", "hostname:guest1", "-s", script], check=False, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr + log.read_text()
        got = lab.run(vm, ["ip", "-j", "-4", "addr", "show", "eth0"]).stdout
        addr = json.loads(got)[0]["addr_info"][0]["local"]
        assert addr.rsplit(".", 1)[0] == gw.rsplit(".", 1)[0]
        # The lease is in dnsmasq's file and the reader finds it.
        for _ in range(20):
            ls = json.loads(lab.netctl("leases", leases).stdout)["leases"]
            if ls:
                break
            time.sleep(0.1)
        assert [(l["mac"], l["ip"], l["hostname"]) for l in ls] == [
            ("52:54:00:aa:bb:01", addr, "guest1")]
        # DNS on the gateway knows the guest by the name it gave.
        r = lab.run(vm, ["busybox", "nslookup", "guest1", gw], check=False)
        assert addr in r.stdout, r.stdout + r.stderr
        # With the lease's route the VM reaches the outside through NAT.
        assert lab.ping(vm, "203.0.113.2")
    finally:
        os.kill(out["pid"], 15)


def count_between(lab, sender, receiver, send_src, count_src, *send_args):
    p = lab.popen(receiver, ["python3", "-c", count_src, "2"])
    wait_ready(p)
    lab.run(sender, ["python3", "-c", send_src] + list(send_args))
    out, err = p.communicate(timeout=20)
    assert p.returncode == 0, err
    return int(out.split()[-1])


@pytest.mark.parametrize("guard", ["on", "off"])
def test_mac_spoofing_guard(lab, guard):
    """mac_spoofing off (the default) drops frames whose source is not the adapter's."""
    lab.netctl("switch-create", "p1", "private")
    vm1 = lab.vm("v1", mac="52:54:00:00:01:01")
    vm2 = lab.vm("v2", mac="52:54:00:00:01:02")
    spoof = "off" if guard == "on" else "on"
    lab.attach("p1", "v1", "--mac-spoofing", spoof, ns=vm1)
    lab.attach("p1", "v2", ns=vm2)
    forged = count_between(lab, vm1, vm2, SEND_FRAMES, COUNT_FRAMES, "52:54:00:66:66:66")
    honest = count_between(lab, vm1, vm2, SEND_FRAMES, COUNT_FRAMES, "52:54:00:00:01:01")
    assert honest == 5
    assert forged == (0 if guard == "on" else 5)


@pytest.mark.parametrize("guard", ["on", "off"])
def test_dhcp_guard(lab, guard):
    lab.netctl("switch-create", "p1", "private")
    vm1 = lab.vm("v1", "10.80.0.2/24")
    vm2 = lab.vm("v2", "10.80.0.3/24")
    lab.attach("p1", "v1", "--dhcp-guard", guard, ns=vm1)
    lab.attach("p1", "v2", ns=vm2)
    n = count_between(lab, vm1, vm2, SEND_OFFER, COUNT_UDP68)
    assert n == (0 if guard == "on" else 5)
    assert lab.ping(vm1, "10.80.0.3"), "the DHCP guard dropped ordinary traffic"


@pytest.mark.parametrize("guard", ["on", "off"])
def test_router_guard(lab, guard):
    lab.netctl("switch-create", "p1", "private")
    vm1 = lab.vm("v1", ipv6=True)
    vm2 = lab.vm("v2", ipv6=True)
    lab.attach("p1", "v1", "--router-guard", guard, ns=vm1)
    lab.attach("p1", "v2", ns=vm2)
    n = count_between(lab, vm1, vm2, SEND_RA, COUNT_RA)
    assert n == (0 if guard == "on" else 5)


def test_vlans_isolate_without_bridge_vlan_filtering(lab):
    lab.netctl("switch-create", "p1", "private")
    a = lab.vm("va", "10.81.0.2/24")
    b = lab.vm("vb", "10.81.0.3/24")
    c = lab.vm("vc", "10.81.0.4/24")
    u = lab.vm("vu", "10.81.0.5/24")
    lab.attach("p1", "va", "--vlan", "10", ns=a)
    lab.attach("p1", "vb", "--vlan", "10", ns=b)
    lab.attach("p1", "vc", "--vlan", "20", ns=c)
    lab.attach("p1", "vu", ns=u)
    assert lab.ping(a, "10.81.0.3"), "two VMs in VLAN 10 cannot reach each other"
    assert not lab.ping(a, "10.81.0.4"), "VLAN 10 reached VLAN 20"
    assert not lab.ping(u, "10.81.0.2"), "an untagged VM reached VLAN 10"
    assert not lab.ping(u, "10.81.0.4"), "an untagged VM reached VLAN 20"
    # Moving vc into VLAN 10 (re-attach) lets it in; detaching clears its rules.
    lab.attach("p1", "vc", "--vlan", "10", ns=c)
    # va's ARP entry for vc is FAILED from the refused ping above, and a
    # FAILED entry makes the next send fail at once, before any frame
    # leaves: forget it, so that the ping tests the switch, not the cache.
    lab.run(a, ["ip", "neigh", "flush", "to", "10.81.0.4"])
    assert lab.ping(a, "10.81.0.4")
    lab.netctl("port-detach", "p1", "vcp")
    table = lab.run(lab.host, ["nft", "list", "table", "bridge", "cloison_p1"]).stdout
    assert "vcp" not in table


def test_tap_is_persistent_attached_and_removed(lab):
    lab.netctl("switch-create", "i1", "internal", "--addr", "10.82.0.1/24")
    out = json.loads(lab.netctl("tap-create", "i1", "vm1tap", "--mac", "52:54:00:00:02:01",
                                "--dhcp-guard", "on").stdout)
    assert out["fd"] >= 3
    link = json.loads(sh(["ip", "-n", lab.host, "-j", "-d", "link", "show", "vm1tap"]).stdout)[0]
    assert link["master"] == "cls-i1" and "UP" in link["flags"]
    assert link["linkinfo"]["info_kind"] == "tun"
    r = lab.netctl("tap-create", "i1", "vm1tap", "--mac", "52:54:00:00:02:01", check=False)
    assert r.returncode == 1 and "exists already" in r.stderr
    lab.netctl("tap-remove", "i1", "vm1tap")
    assert sh(["ip", "-n", lab.host, "link", "show", "vm1tap"], check=False).returncode != 0
    table = lab.run(lab.host, ["nft", "list", "table", "bridge", "cloison_i1"]).stdout
    assert "vm1tap" not in table


def uplink_lab(lab):
    """The host's "physical" adapter: a veth to an outside host, with an
    address and a route through it the switch must carry over."""
    out = lab.add_ns("clso" + lab.tag)
    sh(["ip", "-n", lab.host, "link", "add", "uplink", "type", "veth", "peer", "name", "eth0",
        "netns", out])
    sh(["ip", "-n", lab.host, "addr", "add", "203.0.113.1/24", "dev", "uplink"])
    sh(["ip", "-n", lab.host, "link", "set", "uplink", "up"])
    sh(["ip", "-n", out, "addr", "add", "203.0.113.2/24", "dev", "eth0"])
    sh(["ip", "-n", out, "addr", "add", "198.51.100.1/32", "dev", "lo"])
    sh(["ip", "-n", out, "link", "set", "eth0", "up"])
    sh(["ip", "-n", lab.host, "route", "add", "198.51.100.0/24", "via", "203.0.113.2"])
    return out


def addrs(ns, dev):
    got = json.loads(sh(["ip", "-n", ns, "-j", "-4", "addr", "show", dev]).stdout)
    return ["%s/%d" % (a["local"], a["prefixlen"]) for a in got[0]["addr_info"]] if got else []


def route_dev(ns, dst):
    got = json.loads(sh(["ip", "-n", ns, "-j", "route", "show", dst]).stdout)
    return got[0]["dev"] if got else None


def test_external_switch_shares_the_adapter_with_the_host(lab):
    uplink_lab(lab)
    lab.netctl("switch-create", "e1", "external", "--adapter", "uplink",
               "--allow-management-os", "on")
    assert addrs(lab.host, "cls-e1") == ["203.0.113.1/24"]
    assert addrs(lab.host, "uplink") == []
    assert route_dev(lab.host, "198.51.100.0/24") == "cls-e1"
    link = json.loads(sh(["ip", "-n", lab.host, "-j", "link", "show", "uplink"]).stdout)[0]
    assert link["master"] == "cls-e1"
    assert lab.ping(lab.host, "203.0.113.2"), "the host lost the outside host"
    assert lab.ping(lab.host, "198.51.100.1"), "the host lost its route through the adapter"
    vm = lab.vm("v1", "203.0.113.50/24")
    lab.attach("e1", "v1", ns=vm)
    assert lab.ping(vm, "203.0.113.2"), "the VM does not reach the outside host"
    lab.netctl("switch-remove", "e1")
    assert addrs(lab.host, "uplink") == ["203.0.113.1/24"]
    assert route_dev(lab.host, "198.51.100.0/24") == "uplink"
    assert lab.ping(lab.host, "198.51.100.1"), "the host lost the outside after switch remove"


def test_external_switch_without_management_os_gives_the_adapter_to_vms(lab):
    uplink_lab(lab)
    lab.netctl("switch-create", "e1", "external", "--adapter", "uplink")
    vm = lab.vm("v1", "203.0.113.50/24")
    lab.attach("e1", "v1", ns=vm)
    assert lab.ping(vm, "203.0.113.2"), "the VM does not reach the outside host"
    assert addrs(lab.host, "cls-e1") == []
    assert not lab.ping(lab.host, "203.0.113.50"), "the host reached a VM through a dedicated adapter"
    # An adapter already taken is refused, and changes nothing.
    r = lab.netctl("switch-create", "e2", "external", "--adapter", "uplink", check=False)
    assert r.returncode == 1 and "already a port of another bridge" in r.stderr
    assert "cls-e2" not in sh(["ip", "-n", lab.host, "-j", "link"]).stdout


def test_adopt_and_reattach_lose_no_ping(lab):
    """What a restarted daemon does (create again, re-attach every port) does
    not cut traffic: a fast ping through the switch loses nothing."""
    lab.netctl("switch-create", "i1", "internal", "--addr", "10.83.0.1/24")
    vm1 = lab.vm("v1", "10.83.0.2/24")
    vm2 = lab.vm("v2", "10.83.0.3/24")
    lab.attach("i1", "v1", "--dhcp-guard", "on", ns=vm1)
    lab.attach("i1", "v2", "--dhcp-guard", "on", ns=vm2)
    assert lab.ping(vm1, "10.83.0.3")
    p = lab.popen(vm1, ["ping", "-q", "-c", "300", "-i", "0.01", "-W", "1", "10.83.0.3"])
    for _ in range(3):
        out = json.loads(lab.netctl("switch-create", "i1", "internal", "--addr", "10.83.0.1/24").stdout)
        assert out["adopted"]
        lab.attach("i1", "v1", "--dhcp-guard", "on", "--router-guard", "on", ns=vm1)
        lab.attach("i1", "v2", "--dhcp-guard", "on", ns=vm2)
    out, err = p.communicate(timeout=60)
    assert "300 packets transmitted, 300 received" in out, out + err
    # Re-attaching replaced the rules rather than stacking them.
    table = lab.run(lab.host, ["nft", "list", "chain", "bridge", "cloison_i1", "p_v1p"]).stdout
    assert table.count("udp sport") == 1 and table.count("nd-router-advert") == 1, table


@pytest.mark.parametrize("cap", [20_000_000, 0])
def test_bandwidth_max_caps_a_udp_flood_from_the_vm(lab, cap):
    lab.netctl("switch-create", "p1", "private")
    vm1 = lab.vm("v1", "10.84.0.2/24")
    vm2 = lab.vm("v2", "10.84.0.3/24")
    lab.attach("p1", "v1", "--bandwidth-max", str(cap), ns=vm1)
    lab.attach("p1", "v2", ns=vm2)
    rx = lab.popen(vm2, ["python3", "-c", UDP_RATE, "2", "9000"])
    wait_ready(rx)
    lab.run(vm1, ["python3", "-c", UDP_FLOOD, "10.84.0.3", "4.5"])
    out, err = rx.communicate(timeout=30)
    assert rx.returncode == 0, err
    rate = float(out.split()[-1])
    print("bandwidth_max %d: received %.1f Mbit/s" % (cap, rate / 1e6))
    if cap:
        assert abs(rate - cap) <= cap * 0.10, "%.1f Mbit/s against a cap of %.1f" % (rate / 1e6, cap / 1e6)
    else:
        assert rate > 20_000_000 * 1.5, "uncapped flood only %.1f Mbit/s" % (rate / 1e6)




def flood_two(lab, out, vms, secs=4.5):
    rx = lab.popen(out, ["python3", "-c", UDP_RATE, "2.5", "9000"])
    wait_ready(rx)
    tx = [lab.popen(vm, ["python3", "-c", UDP_FLOOD, "203.0.113.2", secs]) for vm in vms]
    for p in tx:
        p.communicate(timeout=60)
    o, err = rx.communicate(timeout=30)
    assert rx.returncode == 0, err
    return rate_by_source(o)


@pytest.mark.parametrize("weights", [(75, 25), (0, 0)])
def test_bandwidth_weight_shares_a_busy_uplink(lab, weights):
    """Two VMs flood an outside host through an external switch whose uplink
    is 20 Mbit/s: with weights 75 and 25 they get about 3/4 and 1/4 of it
    (HTB on the uplink's egress, classes from the ports' weights); without
    weights there is no tree on the uplink and nothing is shared out."""
    out = uplink_lab(lab)
    lab.netctl("switch-create", "e1", "external", "--adapter", "uplink",
               "--allow-management-os", "off", "--uplink-bandwidth", "20000000")
    a = lab.vm("v1", "203.0.113.51/24")
    b = lab.vm("v2", "203.0.113.52/24")
    if not weights[0]:
        # a qdisc the administrator put on the uplink is not the switch's to take
        lab.run(lab.host, ["tc", "qdisc", "add", "dev", "uplink", "root", "handle", "5:",
                           "pfifo"])
    lab.attach("e1", "v1", "--bandwidth-weight", str(weights[0]), ns=a)
    lab.attach("e1", "v2", "--bandwidth-weight", str(weights[1]), ns=b)
    for v in ("v1p", "v2p"):  # no warning: the tree was built
        r = lab.netctl("port-attach", "e1", v, "--mac", lab.mac_of(a if v == "v1p" else b),
                       "--bandwidth-weight", str(weights[v == "v2p"]))
        assert r.stderr == "", r.stderr
    qdisc = lab.run(lab.host, ["tc", "qdisc", "show", "dev", "uplink"]).stdout
    assert ("htb" in qdisc) == bool(weights[0]), qdisc
    got = flood_two(lab, out, [a, b])
    ra, rb = got.get("203.0.113.51", 0), got.get("203.0.113.52", 0)
    print("weights %s: %.1f and %.1f Mbit/s" % (weights, ra / 1e6, rb / 1e6))
    if weights[0]:
        assert abs(ra + rb - 20e6) <= 2e6, "%.1f Mbit/s through a 20 Mbit/s uplink" % ((ra + rb) / 1e6)
        assert 0.65 <= ra / (ra + rb) <= 0.85, "shares %.1f / %.1f Mbit/s for weights 75 / 25" % (
            ra / 1e6, rb / 1e6)
        classes = lab.run(lab.host, ["tc", "class", "show", "dev", "uplink"]).stdout
        assert classes.count("class htb") == 4, classes  # link, default flow, two ports
        # the weight off one port: its class goes; off both: the tree goes
        lab.attach("e1", "v2", ns=b)
        classes = lab.run(lab.host, ["tc", "class", "show", "dev", "uplink"]).stdout
        assert classes.count("class htb") == 3, classes
        lab.netctl("port-detach", "e1", "v1p")
        qdisc = lab.run(lab.host, ["tc", "qdisc", "show", "dev", "uplink"]).stdout
        assert "htb" not in qdisc, qdisc
    else:
        assert ra + rb > 30e6, "without weights the uplink was capped: %.1f Mbit/s" % ((ra + rb) / 1e6)
    # a weight above 100 is refused and changes nothing
    r = lab.netctl("port-attach", "e1", "v2p", "--mac", lab.mac_of(b), "--bandwidth-weight",
                   "101", check=False)
    assert r.returncode == 1 and "bad bandwidth_weight 101: use 0 to 100" in r.stderr, r.stderr
    lab.netctl("port-detach", "e1", "v2p")
    lab.netctl("switch-remove", "e1")
    qdisc = lab.run(lab.host, ["tc", "qdisc", "show", "dev", "uplink"]).stdout
    assert "htb" not in qdisc, qdisc
    if not weights[0]:
        assert "qdisc pfifo 5: root" in qdisc, qdisc


@pytest.mark.parametrize("mirror", ["source", "none"])
def test_port_mirroring_copies_a_source_ports_frames_to_the_destination(lab, mirror):
    lab.netctl("switch-create", "p1", "private")
    a = lab.vm("va", "10.85.0.2/24")
    b = lab.vm("vb", "10.85.0.3/24")
    c = lab.vm("vc", "10.85.0.4/24")
    lab.attach("p1", "va", "--mirror", mirror, ns=a)
    lab.attach("p1", "vb", "--mirror", "destination", ns=b)
    lab.attach("p1", "vc", ns=c)
    assert lab.ping(a, "10.85.0.4")  # MACs learned: the echo frames are unicast from now on
    p = lab.popen(b, ["python3", "-c", COUNT_ICMP, "2.5", "10.85.0.2"])
    wait_ready(p)
    assert lab.ping(a, "10.85.0.4", count=5)
    out, err = p.communicate(timeout=20)
    assert p.returncode == 0, err
    seen = int(out.split()[-1])
    # Both directions of a's traffic: 5 requests from it, 5 replies to it.
    assert seen == (10 if mirror == "source" else 0), seen
    lab.netctl("port-detach", "p1", "vap")
    assert "netdev cloison_p1" not in lab.run(lab.host, ["nft", "list", "tables"]).stdout
