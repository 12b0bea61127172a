"""The test guest's VM-to-VM client (`netbench=PEER`, guest/net.c, used by
bench/switch.py): two cloison-vmm guests on one bridge in a private network
namespace, one serving (`ip= run=serve`), one measuring against it.

- every ping comes back, the round-trip figures are plausible and the flood
  is echoed (only the peer's echo server can answer: the host side of the
  namespace has no UDP echo on port 7);
- a peer nobody answers ARP for is a clear error line, and the guest goes on
  serving."""
import pytest

from conftest import require_kvm
from netns_util import netns_or_skip
from vmmlib import Vmm


@pytest.fixture
def ns():
    require_kvm()
    with netns_or_skip("10.205.0") as n:
        yield n


def guest(ns, vmm_bin, testguest, tmp_path, tap, mac, cmdline, name):
    ns.add_tap(tap)
    vm = Vmm(vmm_bin, testguest, tmp_path / name, cmdline=cmdline,
             extra=["--net", "tap=%s,mac=%s" % (tap, mac)])
    ns.wrap(vm)
    vm.start()
    return vm


def test_netbench_measures_against_the_peer(ns, vmm_bin, testguest, tmp_path):
    server = guest(ns, vmm_bin, testguest, tmp_path, "tnb0", "02:c1:00:00:05:02",
                   "ip=10.205.0.2/24 run=serve", "server")
    client = None
    try:
        server.wait_result("net_ip", timeout=60)
        client = guest(ns, vmm_bin, testguest, tmp_path, "tnb1", "02:c1:00:00:05:03",
                       "ip=10.205.0.3/24 netbench=10.205.0.2 secs=1", "client")
        client.wait_result("netbench_done", timeout=120)
        r = dict(client.results())
        assert "netbench_error" not in r, client.tails()
        assert r["netbench_ping_lost"] == "0", client.tails()
        assert 0 < int(r["netbench_ping_min_ns"]) <= int(r["netbench_ping_avg_ns"]) < 10**9
        assert int(r["netbench_udp_rtt_per_s"]) > 0
        assert int(r["netbench_udp_per_s"]) > 0
        assert int(r["netbench_udp_bytes_per_s"]) == pytest.approx(
            int(r["netbench_udp_per_s"]) * 1400, rel=0.01)
    finally:
        for vm in (client, server):
            if vm:
                vm.cleanup()


def test_netbench_without_a_peer_says_so(ns, vmm_bin, testguest, tmp_path):
    client = guest(ns, vmm_bin, testguest, tmp_path, "tnb2", "02:c1:00:00:05:04",
                   "ip=10.205.0.4/24 netbench=10.205.0.99 secs=1", "lonely")
    try:
        client.wait_result("netbench_error", timeout=120)
        assert "no ARP reply" in client.serial(), client.tails()
        assert not client.result_values("netbench_done")
        # It still serves: the host reaches it.
        assert ns.run(["ping", "-c", "2", "-W", "2", "10.205.0.4"], check=False).returncode == 0
    finally:
        client.cleanup()
