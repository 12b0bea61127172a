"""A private network namespace with a bridge and tap ports, for virtio-net
tests and benchmarks. The host side is an address on the bridge inside the
namespace: the real host network is never touched.

    with NetNs(prefix="10.201.0") as ns:
        ns.add_tap("tap0")                 # persistent tap, in the bridge
        vm = Vmm(...); ns.wrap(vm)         # the worker runs in the namespace
        ns.run(["ping", "-c", "1", "10.201.0.2"])
"""
import contextlib
import os
import subprocess


def sh(cmd, check=True, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 60)
    r = subprocess.run([str(c) for c in cmd], **kw)
    if check and r.returncode:
        raise RuntimeError("%s: %s%s" % (" ".join(map(str, cmd)), r.stdout, r.stderr))
    return r


# A UDP receiver for bandwidth tests: `python3 -c UDP_RATE SECS PORT
# [WARMUP]` prints "ready", waits (90 s at most) for the first datagram,
# lets WARMUP seconds pass (default 1.5: a policer's bucket starts full),
# then counts for SECS seconds what arrives on the wire (payload +
# UDP/IP/Ethernet headers). It prints one line: ADDR=BITS/s for each source,
# then the total in bits/s as the last word.
UDP_RATE = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('0.0.0.0', int(sys.argv[2])))
s.settimeout(90)
print('ready', flush=True)
s.recv(65536)
s.settimeout(5)
start = time.time() + (float(sys.argv[3]) if len(sys.argv) > 3 else 1.5)
while time.time() < start:
    s.recv(65536)
n, end = {}, start + float(sys.argv[1])
while time.time() < end:
    b, a = s.recvfrom(65536)
    n[a[0]] = n.get(a[0], 0) + len(b) + 42
t = time.time() - start
print(' '.join(['%s=%d' % (k, v * 8 / t) for k, v in n.items()] + [str(sum(n.values()) * 8 / t)]),
      flush=True)
"""


def rate_by_source(line):
    """{address: bits/s} from UDP_RATE's line."""
    return {k: float(v) for k, v in (w.split("=") for w in line.split() if "=" in w)}


NETNS_NEEDS = "needs root, /dev/net/tun and network namespaces (ip netns add)"


def can_make_netns():
    if os.geteuid() != 0 or not os.path.exists("/dev/net/tun"):
        return False
    name = "clprobe%d" % os.getpid()
    if sh(["ip", "netns", "add", name], check=False).returncode:
        return False
    sh(["ip", "netns", "del", name], check=False)
    return True


@contextlib.contextmanager
def netns_or_skip(prefix):
    """A NetNs for one test; skips it, saying why, where this host cannot
    make one."""
    import pytest
    if not can_make_netns():
        pytest.skip(NETNS_NEEDS)
    with NetNs(prefix=prefix) as n:
        yield n


class NetNs:
    def __init__(self, prefix="10.201.0", name=None):
        self.name = name or "clv%d" % os.getpid()
        self.prefix = prefix
        self.host_ip = prefix + ".1"
        self.taps = []

    def __enter__(self):
        sh(["ip", "netns", "del", self.name], check=False)
        sh(["ip", "netns", "add", self.name])
        self.ip("link", "set", "lo", "up")
        self.ip("link", "add", "br0", "type", "bridge")
        self.ip("addr", "add", self.host_ip + "/24", "dev", "br0")
        self.ip("link", "set", "br0", "up")
        # No IPv6 chatter (router solicitations) in the measurements.
        self.run(["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"], check=False)
        return self

    def __exit__(self, *exc):
        sh(["ip", "netns", "del", self.name], check=False)
        return False

    def ip(self, *args):
        return sh(["ip", "-n", self.name] + list(args))

    def run(self, cmd, **kw):
        return sh(["ip", "netns", "exec", self.name] + list(cmd), **kw)

    def popen(self, cmd, **kw):
        return subprocess.Popen(["ip", "netns", "exec", self.name] + [str(c) for c in cmd], **kw)

    def add_tap(self, tap):
        self.ip("tuntap", "add", "dev", tap, "mode", "tap", "vnet_hdr")
        self.ip("link", "set", tap, "master", "br0", "up")
        self.taps.append(tap)

    def wrap(self, vmm):
        """Makes a vmmlib.Vmm start its worker inside the namespace."""
        vmm.args = ["ip", "netns", "exec", self.name] + vmm.args
        return vmm
