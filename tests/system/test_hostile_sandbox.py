"""The test guest's hostile driver (`hostile=DEV`, docs/testguest.md)
against every virtio device of a jailed worker (issue 14): a descriptor
loop, a buffer far outside RAM, an overlong chain, a garbage avail index
and three broken indirect tables, each posted to a freshly reset device.
Every step must put the device into DEVICE_NEEDS_RESET with a log line
that says why, the watched other device must keep serving, the worker must
power off normally inside its sandbox, and a second jailed VM beside it
must run on untouched."""
import os

import pytest

from conftest import require_kvm, require_root
from netns_util import netns_or_skip
from vmmlib import Vmm

STEPS = ("loop", "badaddr", "overlong", "badidx", "indirect_loop", "indirect_nested",
         "indirect_badlen")
DEVICES = ("blk", "net", "rng", "console", "vsock", "balloon")


@pytest.fixture
def ns():
    with netns_or_skip("10.212.0") as n:
        yield n


@pytest.mark.parametrize("dev", DEVICES)
def test_hostile_driver_against_each_jailed_device(vmm_bin, testguest, tmp_path, dev, request):
    require_kvm()
    require_root()
    disk = tmp_path / "d.raw"
    with open(disk, "wb") as f:
        f.truncate(8 << 20)
    extra = ["--jail", "--disk", "path=%s" % disk, "--console", "file:%s" % (tmp_path / "con"),
             "--vsock", "cid=3,socket=%s" % (tmp_path / "v.sock"), "--balloon", "on"]
    netns = None
    if dev == "net":
        netns = request.getfixturevalue("ns")
        netns.add_tap("hst0")
        extra += ["--net", "tap=hst0"]
    bystander = Vmm(vmm_bin, testguest, tmp_path / "b", cmdline="count", memory="64M",
                    extra=["--jail"])
    vm = Vmm(vmm_bin, testguest, tmp_path / "h", cmdline="indirect hostile=" + dev,
             memory="128M", extra=extra)
    if netns:
        netns.wrap(vm)
    with bystander, vm:
        bystander.wait_result("count")
        assert vm.wait_exit(120) == 0, vm.tails()
        r = dict(vm.results())
        assert r.get("hostile_target") == dev, vm.tails()
        assert r.get("hostile_done") == "1", vm.tails()
        assert r.get("hostile_other_baseline_ok") == "1", vm.tails()
        assert r.get("hostile_other") in ("rng", "blk0", "blk1"), vm.tails()
        for step in STEPS:
            assert r.get("hostile_%s_needs_reset" % step) == "1", (step, vm.tails())
            assert r.get("hostile_%s_used" % step) == "0", (step, vm.tails())
            assert r.get("hostile_%s_other_ok" % step) == "1", (step, vm.tails())
        assert vm.stderr().count("the device needs a reset") >= len(STEPS), vm.stderr()
        # the VM beside it did not notice
        n = len(bystander.result_values("count"))
        bystander.wait_result("count", 30, count=n + 1)
        st = bystander.control().request("status")
        assert st["ok"] and st["result"]["state"] == "running", st
