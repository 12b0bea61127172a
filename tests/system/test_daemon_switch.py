"""Virtual switches owned by cloisond, through the real CLI and daemon.

cloisond runs inside a network namespace made here (it stands for the
host); an "outside" namespace sits behind a veth where a physical network
would be. VMs run the test guest with `ip=ADDR/LEN` (it answers ARP, ICMP
echo and UDP echo on port 7). The real host network is never touched."""
import json
import os
import re
import signal
import subprocess
import time

import pytest

from netns_util import can_make_netns, rate_by_source, sh, NETNS_NEEDS, UDP_RATE
from test_daemon_lib import Daemon

pytestmark = pytest.mark.skipif(not can_make_netns(), reason=NETNS_NEEDS)

UDP_ECHO = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1)
got = 0
for i in range(3):
    s.sendto(b'cloison-fwd-%d' % i, (sys.argv[1], int(sys.argv[2])))
    try:
        if s.recv(100).startswith(b'cloison-fwd-'):
            got += 1
    except socket.timeout:
        pass
print(got)
"""


# The outside host's UDP echo (port 7): answers every datagram and writes
# each sender's address to a file, so the test sees what the masquerade
# made of the guest's source.
UDP_ECHO_SERVER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
seen = set()
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(data, peer)
    if peer[0] not in seen:
        seen.add(peer[0])
        with open(sys.argv[3], "w") as f:
            f.write(" ".join(sorted(seen)))
"""


# Counts, on the host side of a switch (its bridge), the frames the test
# guest's netsend= words send, by kind; prints them as JSON on SIGTERM.
GUARD_COUNT = r"""
import json, signal, socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((sys.argv[1], 0))
vm_mac = bytes.fromhex(sys.argv[2].replace(':', ''))
n = {"honest": 0, "spoof": 0, "dhcpoffer": 0, "ra": 0}
def done(*a):
    print(json.dumps(n), flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, done)
print("ready", flush=True)
while True:
    f = s.recv(4096)
    kind = f[12:14]
    if kind == b'\x88\xb5' and b'cloison-test-frame' in f:
        n["honest" if f[6:12] == vm_mac else "spoof"] += 1
    elif kind == b'\x08\x00' and f[23] == 17 and f[34:38] == b'\x00\x43\x00\x44':
        n["dhcpoffer"] += 1
    elif kind == b'\x86\xdd' and f[20] == 58 and f[54] == 134:
        n["ra"] += 1
"""


class Lab:
    """The host namespace (cloisond runs there) and an outside one."""

    def __init__(self):
        tag = "%d" % (os.getpid() % 100000)
        self.host, self.out = "cldh" + tag, "cldo" + tag

    def __enter__(self):
        for ns in (self.host, self.out):
            sh(["ip", "netns", "del", ns], check=False)
            sh(["ip", "netns", "add", ns])
            self.ip(ns, "link", "set", "lo", "up")
            self.run(ns, ["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"])
        self.run(self.host, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        return self

    def __exit__(self, *exc):
        for ns in (self.host, self.out):
            sh(["ip", "netns", "del", ns], check=False)
        return False

    def ip(self, ns, *args, check=True):
        return sh(["ip", "-n", ns] + list(args), check=check)

    def run(self, ns, cmd, check=True, **kw):
        return sh(["ip", "netns", "exec", ns] + list(cmd), check=check, **kw)

    def veth(self, host_if, host_addr, out_addr):
        """A veth from the host to the outside namespace, addressed."""
        peer = host_if + "o"
        self.ip(self.host, "link", "add", host_if, "type", "veth", "peer", "name", peer,
                "netns", self.out)
        self.ip(self.host, "addr", "add", host_addr, "dev", host_if)
        self.ip(self.host, "link", "set", host_if, "up")
        self.ip(self.out, "addr", "add", out_addr, "dev", peer)
        self.ip(self.out, "link", "set", peer, "up")

    def ping(self, ns, addr, count=2):
        return self.run(ns, ["ping", "-c", str(count), "-i", "0.2", "-W", "1", addr],
                        check=False).returncode == 0

    def link(self, name):
        r = self.ip(self.host, "-j", "-d", "link", "show", name, check=False)
        return json.loads(r.stdout)[0] if r.returncode == 0 else None

    def addrs(self, name):
        r = self.ip(self.host, "-j", "addr", "show", "dev", name, check=False)
        if r.returncode:
            return []
        return ["%s/%d" % (a["local"], a["prefixlen"]) for a in json.loads(r.stdout)[0]["addr_info"]
                if a["family"] == "inet"]


class NsDaemon(Daemon):
    """A cloisond started inside the lab's host namespace (`ip netns exec`
    execs it, so the process is cloisond itself)."""

    def __init__(self, state_dir, ns):
        super().__init__(state_dir)
        self.ns = ns
        wrapper = os.path.join(self.sockdir, "cloisond-in-ns")
        with open(wrapper, "w") as f:
            f.write("#!/bin/sh\nexec ip netns exec %s %s \"$@\"\n" % (ns, self.bin))
        os.chmod(wrapper, 0o755)
        self.bin = wrapper

    def restart(self):
        """SIGQUIT (VMs keep running), wait until it is gone, start again."""
        assert self.stop(signal.SIGQUIT) == 0, self.log()
        return self.start()

    def fails(self, *args):
        r = self.cli(*args)
        assert r.returncode != 0, "cloison %s succeeded: %s" % (" ".join(args), r.stdout)
        return r

    def switches(self):
        return {s["name"]: s for s in self.json("switch", "list")}


@pytest.fixture(scope="module")
def lab():
    with Lab() as lab:
        yield lab


@pytest.fixture
def daemon(lab, tmp_path, kvm):
    d = NsDaemon(tmp_path / "state", lab.host).start()
    yield d
    d.cleanup()


def start_vm(d, name, ip, *nets):
    d.create(name, "ip=" + ip, *[a for n in nets for a in ("--net", n)])
    d.ok("vm", "start", name)
    d.console_until(name, "RESULT net_ip=")


def test_internal_switch_survives_a_daemon_restart_with_a_ping_running(lab, daemon):
    d = daemon
    d.ok("switch", "create", "swint", "--type", "internal", "--address", "10.77.0.1/24")
    start_vm(d, "vi", "10.77.0.2/24", "switch=swint")
    nic = d.vm("vi")["network_adapters"][0]
    assert nic["switch"] == "swint" and nic["tap"], nic
    tap, bridge = lab.link(nic["tap"]), lab.link("cls-swint")
    assert tap["master"] == "cls-swint"
    assert lab.ping(lab.host, "10.77.0.2"), "the host cannot reach the VM on an internal switch"

    ping = subprocess.Popen(["ip", "netns", "exec", lab.host, "ping", "-i", "0.1", "-W", "1",
                             "10.77.0.2"], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1)
        d.restart()
        time.sleep(1.5)
    finally:
        ping.send_signal(signal.SIGINT)
        out = ping.communicate(timeout=10)[0]
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m and int(m.group(1)) >= 20, out
    assert m.group(1) == m.group(2), "pings lost across the daemon restart:\n" + out
    assert "switch swint (internal): adopted cls-swint" in d.log()
    # Adopted, not rebuilt: the same bridge and tap, the VM still running.
    assert lab.link("cls-swint")["ifindex"] == bridge["ifindex"]
    assert lab.link(nic["tap"])["ifindex"] == tap["ifindex"]
    assert d.state("vi") == "running"

    # A switch with adapters is kept unless --force, which disconnects them.
    r = d.fails("switch", "remove", "swint")
    assert r.returncode == 4 and "VM 'vi' adapter 0" in r.stderr and "--force" in r.stderr
    assert "swint" in d.switches()
    d.ok("vm", "stop", "vi", "--turn-off")
    assert lab.link(nic["tap"]) is None, "the tap outlived the VM"
    assert lab.link("cls-swint") is not None
    out = d.json("switch", "remove", "swint", "--force")
    assert out["disconnected"] == [{"vm": "vi", "adapter": 0}]
    assert d.vm("vi")["network_adapters"][0]["switch"] is None
    assert lab.link("cls-swint") is None and "swint" not in d.switches()


def test_private_switch_keeps_the_host_out(lab, daemon):
    d = daemon
    d.ok("switch", "create", "swpriv", "--type", "private")
    start_vm(d, "vp", "10.78.0.2/24", "switch=swpriv")
    # Even with an address on the bridge, the host does not reach the VM.
    lab.ip(lab.host, "addr", "add", "10.78.0.1/24", "dev", "cls-swpriv")
    assert not lab.ping(lab.host, "10.78.0.2"), "the host reached a VM on a private switch"
    d.ok("vm", "stop", "vp", "--turn-off")
    d.ok("switch", "remove", "swpriv", "--force")


def test_nat_switch_dhcp_supervised_and_port_forward(lab, daemon, tmp_path):
    d = daemon
    lab.veth("up0", "10.80.0.1/24", "10.80.0.2/24")
    try:
        sw = d.json("switch", "create", "swnat", "--type", "nat", "--subnet", "10.79.0.0/24")
        assert sw["gateway"] == "10.79.0.1" and sw["dhcp"]["running"], sw
        assert "10.79.0.1/24" in lab.addrs("cls-swnat")
        # dnsmasq is supervised: killed, it comes back.
        pid = sw["dhcp"]["pid"]
        os.kill(pid, signal.SIGKILL)
        deadline = time.time() + 10
        while time.time() < deadline:
            dhcp = d.json("switch", "show", "swnat")["dhcp"]
            if dhcp["running"] and dhcp["pid"] != pid:
                break
            time.sleep(0.2)
        assert dhcp["pid"] != pid and dhcp["restarts"] == 1, dhcp
        assert d.json("switch", "leases", "swnat") == []

        # The guest takes its address from the switch's dnsmasq (ip=dhcp),
        # then reaches the outside host through the masquerade: the outside
        # host sees the NAT address (the host's 10.80.0.1), not the guest's.
        seen = tmp_path / "seen"
        echo = subprocess.Popen(["ip", "netns", "exec", lab.out, "python3", "-c", UDP_ECHO_SERVER,
                                 "10.80.0.2", "7", str(seen)])
        try:
            d.create("vn", "ip=dhcp secs=1 netbench=10.80.0.2", "--net", "switch=swnat")
            # A VM without a lease cannot be named: the error says what to give.
            r = d.fails("switch", "nat", "forward", "add", "swnat", "udp", "7007", "vn:7")
            assert "no DHCP lease" in r.stderr and "IPv4 address" in r.stderr
            d.ok("vm", "start", "vn")
            out = d.console_until("vn", "RESULT netbench_done=", timeout=90)
        finally:
            echo.terminate()
            echo.wait(10)
        results = dict(re.findall(r"RESULT (\w+)=(\S+)", out))
        assert results.get("net_dhcp") == "ok", out[-2000:]
        assert results.get("net_gw") == "10.79.0.1", results
        addr = results["net_ip"].split("/")[0]
        assert results["net_ip"].endswith("/24") and addr.startswith("10.79.0."), results
        assert int(results["netbench_ping_lost"]) < 200, results
        assert int(results["netbench_udp_rtt_per_s"]) > 0, results
        sources = set(seen.read_text().split()) if seen.exists() else set()
        assert sources == {"10.80.0.1"}, "the outside host saw %s, not the NAT address" % sources
        assert lab.ping(lab.host, addr)
        # The lease dnsmasq wrote shows in the leases, in vm show, and
        # names the VM for a forward.
        mac = d.vm("vn")["network_adapters"][0]["mac"]
        assert [(l["mac"], l["address"]) for l in d.json("switch", "leases", "swnat")] == \
            [(mac, addr)]
        assert d.vm("vn")["network_adapters"][0]["ip_addresses"] == [addr]
        assert "IP %s" % addr in d.ok("vm", "show", "vn").stdout
        fw = d.json("switch", "nat", "forward", "add", "swnat", "udp", "7007", "vn:7")
        assert fw == [{"proto": "udp", "host_port": 7007, "address": addr, "vm_port": 7,
                       "vm": "vn"}], fw
        got = lab.run(lab.out, ["python3", "-c", UDP_ECHO, "10.80.0.1", "7007"]).stdout.strip()
        assert got == "3", "the port forward did not reach the guest's UDP echo: %s" % got
        assert d.json("switch", "nat", "forward", "list", "swnat") == fw
        fw2 = d.json("switch", "nat", "forward", "add", "swnat", "tcp", "7008", "%s:7" % addr)
        assert {"proto": "tcp", "host_port": 7008, "address": addr, "vm_port": 7} in fw2, fw2
        d.ok("switch", "nat", "forward", "remove", "swnat", "tcp", "7008")
        # The forward survives a daemon restart (kept in switches.json).
        d.restart()
        assert d.json("switch", "nat", "forward", "list", "swnat") == fw
        d.ok("switch", "nat", "forward", "remove", "swnat", "udp", "7007")
        got = lab.run(lab.out, ["python3", "-c", UDP_ECHO, "10.80.0.1", "7007"]).stdout.strip()
        assert got == "0", "a removed forward still answers"
        d.ok("vm", "stop", "vn", "--turn-off")
        d.ok("switch", "remove", "swnat", "--force")
    finally:
        lab.ip(lab.host, "link", "del", "up0", check=False)


def test_external_switch_shares_the_adapter_and_gives_it_back(lab, daemon):
    d = daemon
    lab.veth("ext0", "10.81.0.1/24", "10.81.0.2/24")
    try:
        d.ok("switch", "create", "swext", "--type", "external", "--adapter", "ext0")
        assert lab.link("ext0")["master"] == "cls-swext"
        assert "10.81.0.1/24" in lab.addrs("cls-swext") and not lab.addrs("ext0")
        assert lab.ping(lab.host, "10.81.0.2"), "the host lost its network on the adapter"
        start_vm(d, "ve", "10.81.0.3/24", "switch=swext")
        assert lab.ping(lab.out, "10.81.0.3"), "the outside host cannot reach the VM"
        d.ok("switch", "remove", "swext", "--force")
        assert "10.81.0.1/24" in lab.addrs("ext0"), "the adapter did not get its address back"
        assert lab.ping(lab.host, "10.81.0.2")
        d.ok("vm", "stop", "ve", "--turn-off")
    finally:
        lab.ip(lab.host, "link", "del", "ext0", check=False)


def test_bad_input_is_refused_and_changes_nothing(lab, daemon):
    d = daemon
    d.ok("switch", "create", "swok", "--type", "internal")
    before = d.switches()
    links = lab.ip(lab.host, "-br", "link").stdout
    # A route of the host's (no dummy driver here: a veth pair does).
    lab.ip(lab.host, "link", "add", "dum0", "type", "veth", "peer", "name", "dum0p")
    lab.ip(lab.host, "addr", "add", "10.90.0.1/16", "dev", "dum0")
    lab.ip(lab.host, "link", "set", "dum0", "up")
    try:
        cases = [
            (["switch", "show", "nope"], 3, "no switch named 'nope'"),
            (["switch", "create", "swok", "--type", "private"], 4, "exists already"),
            (["switch", "create", "swb", "--type", "nat", "--subnet", "10.5.0.0/33"], 2,
             "field 'subnet'"),
            (["switch", "create", "swb", "--type", "nat", "--subnet", "10.5.0.1/24"], 2,
             "no host bits"),
            (["switch", "create", "swb", "--type", "external", "--adapter", "nosuch0"], 2,
             "adapter nosuch0 does not exist"),
            (["switch", "create", "swb", "--type", "external"], 2, "needs an adapter"),
            (["switch", "create", "swb", "--type", "nat", "--subnet", "10.90.4.0/24"], 2,
             "10.90.0.0/16"),
            (["switch", "create", "swb", "--type", "private", "--subnet", "10.5.0.0/24"], 2,
             "for nat switches only"),
            (["switch", "create", "bad-name", "--type", "private"], 2, "bad switch name"),
            (["vm", "create", "vx", "--kernel", d.guest, "--net", "switch=nope"], 3,
             "no switch named 'nope'"),
            (["switch", "nat", "forward", "add", "swok", "tcp", "80", "10.0.0.2:80"], 2,
             "port forwards are for nat switches"),
        ]
        for args, rc, msg in cases:
            r = d.fails(*args)
            assert r.returncode == rc and msg in r.stderr, (args, r.returncode, r.stderr)
        assert d.switches() == before
        assert lab.ip(lab.host, "-br", "link").stdout.count("cls-") == links.count("cls-")
        assert d.json("vm", "list") == []
    finally:
        lab.ip(lab.host, "link", "del", "dum0", check=False)
        d.ok("switch", "remove", "swok")


def test_mac_pool_range_in_order_never_twice_and_exhausted(lab, daemon):
    d = daemon
    pool = d.json("host", "info")["mac_pool"]
    # The default: a locally administered prefix, two bytes of the host, one of range.
    assert pool["min"].startswith("02:c1:05:") and pool["min"].endswith(":00"), pool
    assert pool["max"] == pool["min"][:-2] + "ff" and pool["remaining"] == 256, pool
    r = d.fails("host", "set", "--mac-range", "02:aa:00:00:00:09-02:aa:00:00:00:01")
    assert r.returncode == 2 and "MIN must not be above MAX" in r.stderr
    assert d.json("host", "info")["mac_pool"] == pool
    d.ok("host", "set", "--mac-range", "02:aa:00:00:00:00-02:aa:00:00:00:01")
    d.ok("switch", "create", "swmac", "--type", "private")
    try:
        d.create("m1", "", "--net", "switch=swmac")
        d.create("m2", "", "--net", "switch=swmac")
        macs = [d.vm(n)["network_adapters"][0]["mac"] for n in ("m1", "m2")]
        assert macs == ["02:aa:00:00:00:00", "02:aa:00:00:00:01"]
        r = d.fails("vm", "create", "m3", "--kernel", d.guest, "--net", "switch=swmac")
        assert "02:aa:00:00:00:00-02:aa:00:00:00:01 is exhausted" in r.stderr, r.stderr
        # A removed VM's address is not handed out again, even after a restart.
        d.ok("vm", "remove", "m1")
        d.restart()
        r = d.fails("vm", "create", "m3", "--kernel", d.guest, "--net", "switch=swmac")
        assert "is exhausted" in r.stderr
        assert d.json("host", "info")["mac_pool"]["remaining"] == 0
        # A static MAC needs no pool.
        d.create("m3", "", "--net", "switch=swmac,mac=02:bb:00:00:00:01")
        assert d.vm("m3")["network_adapters"][0]["mac"] == "02:bb:00:00:00:01"
    finally:
        d.ok("switch", "remove", "swmac", "--force")


def test_connect_and_disconnect_a_running_vm_the_guest_sees_its_link(lab, daemon):
    d = daemon
    d.ok("switch", "create", "swa", "--type", "internal", "--address", "10.76.0.1/24")
    d.ok("switch", "create", "swb", "--type", "internal", "--address", "10.76.0.254/24")
    try:
        start_vm(d, "vc", "10.76.0.2/24", "switch=swa")
        tap = d.vm("vc")["network_adapters"][0]["tap"]
        # The daemon opened the tap and the worker inherited it (fd 3): the
        # worker was never asked to open a network device by name.
        pid = d.vm("vc")["pid"]
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            argv = f.read().split(b"\0")
        nets = [argv[i + 1] for i, a in enumerate(argv) if a == b"--net"]
        assert len(nets) == 1 and nets[0].startswith(b"fd=3,mac="), argv
        assert os.readlink("/proc/%d/fd/3" % pid) == "/dev/net/tun"
        d.console_until("vc", "RESULT net_link=1")
        assert lab.ping(lab.host, "10.76.0.2")

        d.ok("vm", "set", "vc", "--disconnect", "0")
        d.console_until("vc", "RESULT net_link=0")
        nic = d.vm("vc")["network_adapters"][0]
        assert nic["switch"] is None and lab.link(tap).get("master") is None, nic
        assert not lab.ping(lab.host, "10.76.0.2", count=1)

        d.ok("vm", "set", "vc", "--connect", "0=swb")
        d.console_until("vc", "RESULT net_link=1", times=2)
        assert lab.link(tap)["master"] == "cls-swb"
        assert d.vm("vc")["network_adapters"][0]["switch"] == "swb"
        lab.run(lab.host, ["ip", "neigh", "flush", "all"], check=False)
        assert lab.run(lab.host, ["ping", "-c", "2", "-i", "0.2", "-W", "1", "-I", "cls-swb",
                                  "10.76.0.2"], check=False).returncode == 0
        # Moves from one switch to another directly, too.
        d.ok("vm", "set", "vc", "--connect", "0=swa")
        assert lab.link(tap)["master"] == "cls-swa"
        r = d.fails("vm", "set", "vc", "--connect", "0=nope")
        assert r.returncode == 3 and "no switch named 'nope'" in r.stderr
        r = d.fails("vm", "set", "vc", "--connect", "5=swa")
        assert r.returncode == 3 and "has no network adapter 5" in r.stderr
        assert lab.link(tap)["master"] == "cls-swa"
        d.ok("vm", "stop", "vc", "--turn-off")
    finally:
        d.ok("switch", "remove", "swa", "--force")
        d.ok("switch", "remove", "swb", "--force")


@pytest.mark.parametrize("guards", ["on", "off"])
def test_port_guards_judge_the_guests_own_frames(lab, daemon, guards):
    """The test guest sends 5 frames of each kind a guard exists for; the
    host side of the switch counts what passed. Guards on: only the honest
    frames; off (mac_spoofing allowed, DHCP and router guards off): all."""
    d = daemon
    d.ok("switch", "create", "swg", "--type", "internal", "--address", "10.74.0.1/24")
    try:
        opts = ("mac_spoofing=off,dhcp_guard=on,router_guard=on" if guards == "on" else
                "mac_spoofing=on,dhcp_guard=off,router_guard=off")
        d.create("vg", "ip=10.74.0.2/24 netsend=honest netsend=spoof netsend=dhcpoffer "
                 "netsend=ra", "--net", "switch=swg," + opts)
        nic = d.vm("vg")["network_adapters"][0]
        assert nic["mac_spoofing"] == (guards == "off") and nic["dhcp_guard"] == (guards == "on")
        counter = subprocess.Popen(["ip", "netns", "exec", lab.host, "python3", "-c",
                                    GUARD_COUNT, "cls-swg", nic["mac"]],
                                   stdout=subprocess.PIPE, text=True)
        try:
            assert counter.stdout.readline().strip() == "ready"
            d.ok("vm", "start", "vg")
            out = d.console_until("vg", "RESULT netsend=ra:5")
            for kind in ("honest", "spoof", "dhcpoffer", "ra"):
                assert "RESULT netsend=%s:5" % kind in out, out[-1500:]
            time.sleep(0.5)
        finally:
            counter.terminate()
            got = json.loads(counter.communicate(timeout=10)[0].strip().splitlines()[-1])
        want = {"honest": 5, "spoof": 0, "dhcpoffer": 0, "ra": 0} if guards == "on" else \
            {"honest": 5, "spoof": 5, "dhcpoffer": 5, "ra": 5}
        assert got == want, "guards %s: the host side counted %s" % (guards, got)
        d.ok("vm", "stop", "vg", "--turn-off")
    finally:
        d.ok("switch", "remove", "swg", "--force")


@pytest.mark.parametrize("cap", [20_000_000, 0])
def test_bandwidth_max_caps_the_guests_udp_flood(lab, daemon, cap):
    """The test guest floods UDP at the host side of an internal switch as
    fast as its ring goes; with bandwidth_max the host receives the cap
    (within 10 %), without it clearly more."""
    d = daemon
    d.ok("switch", "create", "swbw", "--type", "internal", "--address", "10.73.0.1/24")
    try:
        net = "switch=swbw" + (",bandwidth_max=%d" % cap if cap else "")
        d.create("vb", "ip=10.73.0.2/24 secs=5 netflood=10.73.0.1", "--net", net)
        assert d.vm("vb")["network_adapters"][0]["bandwidth_max"] == cap
        rx = subprocess.Popen(["ip", "netns", "exec", lab.host, "python3", "-c", UDP_RATE,
                               "2.5", "9"], stdout=subprocess.PIPE, text=True)
        try:
            assert rx.stdout.readline().strip() == "ready"
            d.ok("vm", "start", "vb")
            out, _ = rx.communicate(timeout=120)
        finally:
            rx.kill()
        assert rx.returncode == 0, out
        rate = float(out.split()[-1])
        print("bandwidth_max %d: the host received %.1f Mbit/s" % (cap, rate / 1e6))
        if cap:
            assert abs(rate - cap) <= cap * 0.10, \
                "%.1f Mbit/s against a cap of %.1f" % (rate / 1e6, cap / 1e6)
        else:
            assert rate > 20_000_000 * 1.5, "the uncapped flood reached only %.1f Mbit/s" % (
                rate / 1e6)
        d.console_until("vb", "RESULT netflood_done=1")
        d.ok("vm", "stop", "vb", "--turn-off")
    finally:
        d.ok("switch", "remove", "swbw", "--force")




def test_bandwidth_weight_shares_the_external_uplink(lab, daemon):
    """Two test guests flood an outside host through an external switch
    whose uplink counts as 20 Mbit/s (--uplink-bandwidth): with
    bandwidth_weight 75 and 25 the outside host receives about 3/4 and 1/4
    of it from each. Bad values are refused."""
    d = daemon
    lab.veth("ext1", "10.82.0.1/24", "10.82.0.2/24")
    try:
        d.ok("switch", "create", "swwt", "--type", "external", "--adapter", "ext1",
             "--uplink-bandwidth", "20000000")
        assert d.json("switch", "show", "swwt")["uplink_bandwidth"] == 20_000_000
        for name, ip, w in (("wa", "10.82.0.3/24", 75), ("wb", "10.82.0.4/24", 25)):
            d.create(name, "ip=%s secs=9 netflood=10.82.0.2" % ip, "--net",
                     "switch=swwt,bandwidth_weight=%d" % w)
            assert d.vm(name)["network_adapters"][0]["bandwidth_weight"] == w
        rx = subprocess.Popen(["ip", "netns", "exec", lab.out, "python3", "-c",
                               UDP_RATE, "3", "9", "3"], stdout=subprocess.PIPE,
                              text=True)
        try:
            assert rx.stdout.readline().strip() == "ready"
            d.ok("vm", "start", "wa")
            d.ok("vm", "start", "wb")
            out, _ = rx.communicate(timeout=120)
        finally:
            rx.kill()
        assert rx.returncode == 0, out
        got = rate_by_source(out)
        ra, rb = got.get("10.82.0.3", 0), got.get("10.82.0.4", 0)
        print("bandwidth_weight 75/25: %.1f and %.1f Mbit/s" % (ra / 1e6, rb / 1e6))
        assert abs(ra + rb - 20e6) <= 2e6, "%.1f Mbit/s through 20" % ((ra + rb) / 1e6)
        assert 0.65 <= ra / (ra + rb) <= 0.85, "%.1f and %.1f Mbit/s for weights 75 and 25" % (
            ra / 1e6, rb / 1e6)
        classes = lab.run(lab.host, ["tc", "class", "show", "dev", "ext1"]).stdout
        assert classes.count("class htb") == 4, classes
        for name in ("wa", "wb"):
            d.console_until(name, "RESULT netflood_done=1")
            d.ok("vm", "stop", name, "--turn-off")
        # the ports went with the VMs, and the tree with them
        assert "htb" not in lab.run(lab.host, ["tc", "qdisc", "show", "dev", "ext1"]).stdout
        for args, msg in (
                (["vm", "create", "wx", "--kernel", d.guest, "--net",
                  "switch=swwt,bandwidth_weight=101"], "bandwidth_weight"),
                (["vm", "create", "wx", "--kernel", d.guest, "--net",
                  "switch=swwt,bandwidth_weight=x"], "must be a number"),
                (["switch", "create", "swx", "--type", "private", "--uplink-bandwidth", "1000000"],
                 "for external switches only"),
                (["switch", "create", "swx", "--type", "external", "--adapter", "ext1",
                  "--uplink-bandwidth", "10"], "uplink_bandwidth")):
            r = d.cli(*args)
            assert r.returncode != 0 and msg in r.stderr, (args, r.stderr)
        assert "wx" not in [v["name"] for v in d.json("vm", "list")]
    finally:
        d.ok("switch", "remove", "swwt", "--force")
        lab.ip(lab.host, "link", "del", "ext1", check=False)


# Counts, on a tap's host side, the ICMP frames to or from an address for
# a while (the frames the bridge sends toward that port's VM).
COUNT_ICMP_ON = r"""
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((sys.argv[1], 0))
s.settimeout(0.2)
ip = bytes(map(int, sys.argv[3].split('.')))
n, end = 0, time.time() + float(sys.argv[2])
print('ready', flush=True)
while time.time() < end:
    try:
        f = s.recv(2048)
        if f[12:14] == b'\x08\x00' and f[23] == 1 and ip in (f[26:30], f[30:34]):
            n += 1
    except socket.timeout:
        pass
print(n, flush=True)
"""


@pytest.mark.parametrize("mirror", ["source", "none"])
def test_port_mirroring_from_the_vm_settings(lab, daemon, mirror):
    """Hyper-V's port mirroring as a VM adapter setting: with `ms` a source
    and `md` a destination on one switch, md's port gets a copy of both
    directions of the host's pings of ms; with ms not a source, nothing."""
    d = daemon
    d.ok("switch", "create", "swm", "--type", "internal", "--address", "10.75.0.1/24")
    try:
        start_vm(d, "ms", "10.75.0.2/24", "switch=swm,port_mirroring=" + mirror)
        start_vm(d, "md", "10.75.0.3/24", "switch=swm,port_mirroring=destination")
        src, dst = d.vm("ms")["network_adapters"][0], d.vm("md")["network_adapters"][0]
        assert (src["port_mirroring"], dst["port_mirroring"]) == (mirror, "destination")
        if mirror == "source":
            assert "port mirroring source" in d.ok("vm", "show", "ms").stdout
        assert lab.ping(lab.host, "10.75.0.2")  # MACs learned: unicast from now on
        counter = subprocess.Popen(["ip", "netns", "exec", lab.host, "python3", "-c",
                                    COUNT_ICMP_ON, dst["tap"], "3", "10.75.0.2"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert counter.stdout.readline().strip() == "ready", counter.stderr.read()
        assert lab.run(lab.host, ["ping", "-c", "5", "-i", "0.2", "-W", "1", "10.75.0.2"],
                       check=False).returncode == 0
        out, err = counter.communicate(timeout=20)
        seen = int(out.split()[-1])
        # 5 requests to ms and 5 replies from it
        assert seen == (10 if mirror == "source" else 0), (seen, err)
        for name in ("ms", "md"):
            d.ok("vm", "stop", name, "--turn-off")
    finally:
        d.ok("switch", "remove", "swm", "--force")


def test_port_mirroring_bad_values_are_refused(lab, daemon):
    d = daemon
    r = d.cli("vm", "create", "pm", "--kernel", d.guest, "--net", "switch=x,port_mirroring=both")
    assert r.returncode == 2 and "port_mirroring must be none, source or destination" in \
        r.stderr, r.stderr
    st, body = d.http("POST", "/v1/vms", {"name": "pm", "kernel": str(d.guest),
                                          "network_adapters": [{"switch": "swx",
                                                                "port_mirroring": 1}]})
    assert st == 400 and "port_mirroring" in json.dumps(body), (st, body)
    assert d.http("GET", "/v1/vms/pm")[0] == 404


def test_bash_completion_of_switches(daemon):
    from test_cli_vm import complete
    assert complete(daemon, ["cloison", "sw"]) == ["switch"]
    assert complete(daemon, ["cloison", "switch", "create", "x", "--type", ""]) == \
        ["external", "internal", "nat", "private"]
    daemon.ok("switch", "create", "compl", "--type", "private")
    assert complete(daemon, ["cloison", "switch", "show", "co"]) == ["compl"]
    assert complete(daemon, ["cloison", "switch", "nat", "forward", ""]) == ["add", "list", "remove"]
    assert "--connect" in complete(daemon, ["cloison", "vm", "set", "x", "--con"])
    daemon.ok("switch", "remove", "compl")


def test_private_switches_and_vlans_vm_to_vm(lab, daemon):
    """VMs on one private switch reach each other, not one on another
    private switch; in VLAN 10 they reach each other, and neither VLAN 20
    nor an untagged VM reaches them (the test guest's netbench=PEER client
    pings its peer, or says no ARP reply came)."""
    d = daemon
    d.ok("switch", "create", "swp1", "--type", "private")
    d.ok("switch", "create", "swp2", "--type", "private")
    try:
        servers = [("pa", "10.60.0.1/24", "switch=swp1"),
                   ("pd", "10.60.0.4/24", "switch=swp1,vlan=10")]
        clients = [  # name, ip, net, peer, reaches
            ("pb", "10.60.0.2/24", "switch=swp1", "10.60.0.1", True),
            ("pc", "10.60.0.3/24", "switch=swp2", "10.60.0.1", False),
            ("pe", "10.60.0.5/24", "switch=swp1,vlan=10", "10.60.0.4", True),
            ("pf", "10.60.0.6/24", "switch=swp1,vlan=20", "10.60.0.4", False),
            ("pg", "10.60.0.7/24", "switch=swp1", "10.60.0.4", False),
        ]
        for name, ip, net in servers:
            start_vm(d, name, ip, net)
        for name, ip, net, peer, _ in clients:
            d.create(name, "ip=%s netbench=%s secs=1" % (ip, peer), "--net", net)
            d.ok("vm", "start", name)
        for name, ip, net, peer, reaches in clients:
            out = d.console_until(name, "RESULT netbench_done=1" if reaches
                                  else "RESULT netbench_error=", timeout=90)
            if reaches:
                assert "netbench_error" not in out and "netbench_ping_lost=0" in out, (name, out)
            else:
                assert "no ARP reply" in out and "netbench_ping_min_ns" not in out, (name, out)
        for name in [s[0] for s in servers] + [c[0] for c in clients]:
            d.ok("vm", "stop", name, "--turn-off")
    finally:
        d.ok("switch", "remove", "swp1", "--force")
        d.ok("switch", "remove", "swp2", "--force")
