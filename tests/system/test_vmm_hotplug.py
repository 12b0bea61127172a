"""Hot add and hot remove of disks and NICs through ACPI PCI hotplug
(docs/vmm.md "Hot add and hot remove"): the control socket's device-add
and device-remove, the test guest's `hotplug` word (docs/testguest.md)
seeing the GPE, bringing the new function up and ejecting it.

- a hot-added disk is written and read back by the guest, and the bytes
  are in the image on the host;
- a hot-added NIC answers ping, in a network namespace the test makes;
- after a remove the function is gone for the guest (its config space
  reads all-ones) and for the host (status, the worker's open files);
- a guest that does not release the device: the result says "pending",
  and the device is still there and working;
- bad input: no such slot, a device from the command line, full slots,
  a bad path, kind or MAC; a jailed worker refuses a hot add instead of
  dying on a system call its filters forbid;
- hot-added devices and the hotplug registers survive save and restore."""
import os
import re
import time

import pytest

from conftest import require_kvm, require_root
from netns_util import netns_or_skip
from vmmlib import Vmm

MAC = "02:c1:00:00:00:5a"


@pytest.fixture(autouse=True)
def kvm():
    require_kvm()


def image(tmp_path, name="hot.img", size=1 << 20):
    p = tmp_path / name
    with open(p, "wb") as f:
        f.truncate(size)
    return p


def start(vmm_bin, testguest, workdir, cmdline, extra=(), cpus=None):
    vm = Vmm(vmm_bin, testguest, workdir, cmdline=cmdline, extra=list(extra), cpus=cpus)
    vm.start()
    vm.wait_result("hotplug_ready", timeout=60)
    return vm


def open_files(pid):
    out = []
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            out.append(os.readlink("/proc/%d/fd/%s" % (pid, fd)))
        except OSError:
            pass
    return out


def devices(ctl):
    r = ctl.request("status")
    assert r["ok"], r
    return {d["slot"]: d for d in r["result"]["devices"]}


def add_disk(vm, ctl, path, **kw):
    r = ctl.request("device-add", kind="disk", path=str(path), **kw)
    assert r["ok"], r
    return r["result"]["slot"]


def test_hot_added_disk_is_written_and_read_back(vmm_bin, testguest, tmp_path):
    img = image(tmp_path)
    with start(vmm_bin, testguest, tmp_path / "vm", "hotplug") as vm:
        ctl = vm.control()
        slots_before = devices(ctl)
        slot = add_disk(vm, ctl, img)
        assert slot not in slots_before
        d = devices(ctl)[slot]
        assert d["kind"] == "disk" and d["hot_added"] and not d["releasing"], d
        vm.wait_result("hotplug_blk", timeout=30)
        assert vm.result_values("hotplug_add") == ["slot:%d,kind:blk" % slot], vm.tails()
        blk = vm.result_values("hotplug_blk")[0]
        assert blk.startswith("slot:%d,ok," % slot), blk
        # what the guest wrote is in the image
        data = open(img, "rb").read(4096)
        line = b"cloison hotplug slot %d\n" % slot
        assert data.startswith(line * 4), data[:80]
        assert str(img) in open_files(vm.proc.pid)


@pytest.mark.parametrize("cpus", [1, 2])
def test_removed_disk_is_gone_on_both_sides(vmm_bin, testguest, tmp_path, cpus):
    """With two vCPUs the teardown parks both (the second sits in hlt)."""
    img = image(tmp_path)
    with start(vmm_bin, testguest, tmp_path / "vm", "hotplug", cpus=cpus) as vm:
        ctl = vm.control()
        slot = add_disk(vm, ctl, img)
        vm.wait_result("hotplug_blk", timeout=30)
        t0 = time.monotonic()
        r = ctl.request("device-remove", slot=slot, timeout=60)
        elapsed = time.monotonic() - t0
        assert r["ok"], r
        assert r["result"] == {"slot": slot, "removed": True}, r
        ev = ctl.wait_event(lambda e: e.get("event") == "device-removed", timeout=5)
        assert ev["slot"] == slot
        # the guest released it when asked, then saw the function go
        vm.wait_result("hotplug_gone", timeout=10)
        assert vm.result_values("hotplug_release") == ["slot:%d" % slot], vm.tails()
        assert vm.result_values("hotplug_gone") == ["slot:%d,vendor:0xffff" % slot]
        # and the host: no device in the slot, the image closed
        assert slot not in devices(ctl)
        assert str(img) not in open_files(vm.proc.pid)
        assert elapsed < 20, elapsed
        # the slot takes a device again
        img2 = image(tmp_path, "second.img")
        assert add_disk(vm, ctl, img2) == slot
        vm.wait_result("hotplug_blk", timeout=30, count=2)
        assert vm.result_values("hotplug_blk")[1].startswith("slot:%d,ok," % slot)
        line = b"cloison hotplug slot %d\n" % slot
        assert open(img2, "rb").read(len(line)) == line


def test_guest_that_keeps_the_device_gets_pending(vmm_bin, testguest, tmp_path):
    img = image(tmp_path)
    with start(vmm_bin, testguest, tmp_path / "vm", "hotplug=keep") as vm:
        ctl = vm.control()
        slot = add_disk(vm, ctl, img)
        vm.wait_result("hotplug_blk", timeout=30)
        r = ctl.request("device-remove", slot=slot, timeout_ms=1500)
        assert r["ok"], r
        res = r["result"]
        assert res["slot"] == slot and res["removed"] is False and res["pending"] is True, res
        assert "has not released" in res["message"]
        vm.wait_result("hotplug_keep", timeout=10)
        # nothing was torn out: still listed, still open, and asked again
        # the request is refused only while one waits
        d = devices(ctl)[slot]
        assert d["hot_added"] and d["releasing"], d
        assert str(img) in open_files(vm.proc.pid)
        assert vm.running()
        r = ctl.request("device-remove", slot=slot, timeout_ms=500)
        assert r["ok"] and r["result"]["pending"], r


def test_bad_input_gets_clear_errors(vmm_bin, testguest, tmp_path):
    cold = image(tmp_path, "cold.img")
    with start(vmm_bin, testguest, tmp_path / "vm", "hotplug",
               extra=["--disk", "path=%s" % cold]) as vm:
        ctl = vm.control()
        before = devices(ctl)
        cold_slot = [s for s, d in before.items() if d["kind"] == "disk"][0]

        r = ctl.request("device-remove", slot=27)
        assert not r["ok"] and r["error"]["code"] == "no-device", r
        assert "no device in slot 27" in r["error"]["message"]

        r = ctl.request("device-remove", slot=cold_slot)
        assert not r["ok"] and r["error"]["code"] == "not-removable", r
        assert "command line" in r["error"]["message"]

        r = ctl.request("device-remove")
        assert not r["ok"] and r["error"]["code"] == "bad-request", r
        assert "slot" in r["error"]["message"]

        r = ctl.request("device-add", kind="disk", path=str(tmp_path / "missing.img"))
        assert not r["ok"] and r["error"]["code"] == "bad-request", r
        assert "missing.img" in r["error"]["message"], r

        r = ctl.request("device-add", kind="floppy", path=str(cold))
        assert not r["ok"] and r["error"]["code"] == "bad-request", r
        assert '"disk" or "net"' in r["error"]["message"]

        r = ctl.request("device-add", kind="disk")
        assert not r["ok"] and "path" in r["error"]["message"], r

        r = ctl.request("device-add", kind="net", tap="cloisontap9", mac="02:zz")
        assert not r["ok"] and r["error"]["code"] == "bad-request", r
        assert "mac" in r["error"]["message"].lower(), r

        r = ctl.request("device-add", kind="net")
        assert not r["ok"] and "tap" in r["error"]["message"], r

        # nothing changed
        assert devices(ctl) == before

        # fill every free slot, then one more
        free = 32 - len(before)
        imgs = [image(tmp_path, "f%d.img" % i, 4096) for i in range(free + 1)]
        for i in range(free):
            add_disk(vm, ctl, imgs[i])
        r = ctl.request("device-add", kind="disk", path=str(imgs[free]))
        assert not r["ok"] and r["error"]["code"] == "no-slot", r
        assert "every hotplug slot is in use" in r["error"]["message"]
        assert len(devices(ctl)) == 32


@pytest.fixture
def ns():
    with netns_or_skip("10.203.0") as n:
        yield n


def ping(ns, ip, count=3):
    return ns.run(["ping", "-c", str(count), "-i", "0.2", "-W", "2", ip], check=False)


def test_hot_added_nic_answers_ping_and_goes(ns, vmm_bin, testguest, tmp_path):
    ns.add_tap("tap0")
    vm = Vmm(vmm_bin, testguest, tmp_path / "vm", cmdline="ip=10.203.0.2/24 hotplug")
    ns.wrap(vm)
    vm.start()
    with vm:
        vm.wait_result("hotplug_ready", timeout=60)
        # no NIC at boot: nothing answers
        assert vm.result_values("net_error"), vm.tails()
        assert ping(ns, "10.203.0.2", 1).returncode != 0
        ctl = vm.control()
        r = ctl.request("device-add", kind="net", tap="tap0", mac=MAC)
        assert r["ok"], r
        slot = r["result"]["slot"]
        vm.wait_result("hotplug_net", timeout=30)
        assert vm.result_values("hotplug_net") == ["slot:%d,up" % slot], vm.tails()
        assert vm.result_values("net_mac") == [MAC]
        p = ping(ns, "10.203.0.2", 5)
        assert p.returncode == 0 and " 0% packet loss" in p.stdout, p.stdout + vm.tails()

        r = ctl.request("device-remove", slot=slot, timeout=60)
        assert r["ok"] and r["result"]["removed"], r
        vm.wait_result("hotplug_gone", timeout=10)
        assert vm.result_values("hotplug_gone") == ["slot:%d,vendor:0xffff" % slot]
        assert slot not in devices(ctl)
        assert ping(ns, "10.203.0.2", 2).returncode != 0


def test_kept_nic_still_answers_after_pending(ns, vmm_bin, testguest, tmp_path):
    ns.add_tap("tap0")
    vm = Vmm(vmm_bin, testguest, tmp_path / "vm", cmdline="ip=10.203.0.2/24 hotplug=keep")
    ns.wrap(vm)
    vm.start()
    with vm:
        vm.wait_result("hotplug_ready", timeout=60)
        ctl = vm.control()
        r = ctl.request("device-add", kind="net", tap="tap0", mac=MAC)
        assert r["ok"], r
        slot = r["result"]["slot"]
        vm.wait_result("hotplug_net", timeout=30)
        r = ctl.request("device-remove", slot=slot, timeout_ms=1500)
        assert r["ok"] and r["result"]["pending"] is True, r
        vm.wait_result("hotplug_keep", timeout=10)
        p = ping(ns, "10.203.0.2", 3)
        assert p.returncode == 0 and " 0% packet loss" in p.stdout, p.stdout + vm.tails()


def test_hot_added_disk_survives_save_and_restore(vmm_bin, testguest, tmp_path):
    state = tmp_path / "state"
    first, second, third = (image(tmp_path, n) for n in ("a.img", "b.img", "c.img"))
    with start(vmm_bin, testguest, tmp_path / "a", "hotplug") as vm:
        ctl = vm.control()
        s1 = add_disk(vm, ctl, first)
        vm.wait_result("hotplug_blk", timeout=30)
        s2 = add_disk(vm, ctl, second)
        vm.wait_result("hotplug_blk", timeout=30, count=2)
        # a hole below the second disk: it must come back in its own slot
        r = ctl.request("device-remove", slot=s1, timeout=60)
        assert r["ok"] and r["result"]["removed"], r
        vm.wait_result("hotplug_gone", timeout=10)
        r = ctl.request("save", path=str(state), timeout=120)
        assert r["ok"], r
        assert vm.wait_exit(60) == 5, vm.tails()

    with Vmm(vmm_bin, testguest, tmp_path / "b", cmdline="hotplug",
             extra=["--restore", state]) as vm:
        ctl = vm.control()
        devs = vm.wait_for(lambda: devices(ctl), 30, "status")
        assert s1 not in devs, devs
        assert devs[s2]["kind"] == "disk" and devs[s2]["hot_added"], devs
        assert str(second) in open_files(vm.proc.pid)
        assert "boot" not in [k for k, _ in vm.results()], vm.tails()
        # the restored guest still drives hotplug: a new disk in the free
        # slot is written, and the restored one is released when asked
        s3 = add_disk(vm, ctl, third)
        assert s3 == s1
        vm.wait_result("hotplug_blk", timeout=30)
        assert vm.result_values("hotplug_blk")[0].startswith("slot:%d,ok," % s3), vm.tails()
        r = ctl.request("device-remove", slot=s2, timeout=60)
        assert r["ok"] and r["result"]["removed"], r
        vm.wait_result("hotplug_gone", timeout=10)
        assert vm.result_values("hotplug_gone") == ["slot:%d,vendor:0xffff" % s2]
        assert str(second) not in open_files(vm.proc.pid)


def test_jailed_worker_refuses_hot_add_and_keeps_running(vmm_bin, testguest, tmp_path):
    require_root()
    img = image(tmp_path)
    with start(vmm_bin, testguest, tmp_path / "vm", "hotplug", extra=["--jail"]) as vm:
        ctl = vm.control()
        before = devices(ctl)
        for req in (dict(kind="disk", path=str(img)), dict(kind="net", tap="cloisonhp0")):
            r = ctl.request("device-add", **req)
            assert not r["ok"] and r["error"]["code"] == "unsupported", r
            assert "--jail" in r["error"]["message"]
        assert vm.running()
        assert devices(ctl) == before


def test_reset_with_a_release_pending_removes_the_device(vmm_bin, testguest, tmp_path):
    """A rebooting guest holds no device: a release it was asked for and
    did not give is taken as given when the VM resets."""
    img = image(tmp_path)
    with start(vmm_bin, testguest, tmp_path / "vm", "hotplug=keep") as vm:
        ctl = vm.control()
        slot = add_disk(vm, ctl, img)
        vm.wait_result("hotplug_blk", timeout=30)
        r = ctl.request("device-remove", slot=slot, timeout_ms=500)
        assert r["ok"] and r["result"]["pending"], r
        assert ctl.request("reset")["ok"]
        ev = ctl.wait_event(lambda e: e.get("event") == "device-removed", timeout=30)
        assert ev["slot"] == slot
        assert slot not in devices(ctl)
        assert str(img) not in open_files(vm.proc.pid)
        # the guest came back up, and the slot takes a device again
        vm.wait_result("hotplug_ready", timeout=60, count=2)
        assert add_disk(vm, ctl, image(tmp_path, "again.img")) == slot
        vm.wait_result("hotplug_blk", timeout=30, count=2)


def test_client_gone_before_the_reply(vmm_bin, testguest, tmp_path):
    """The reply to device-remove comes later, to the client that asked; if
    that client left, the reply is dropped and nobody else gets it."""
    img = image(tmp_path)
    with start(vmm_bin, testguest, tmp_path / "vm", "hotplug=keep") as vm:
        ctl = vm.control()
        slot = add_disk(vm, ctl, img)
        vm.wait_result("hotplug_blk", timeout=30)
        asker = vm.control()
        asker.send_raw('{"id":77,"cmd":"device-remove","slot":%d,"timeout_ms":1500}\n' % slot)
        time.sleep(0.2)
        asker.close()
        time.sleep(0.3)
        # a new client, likely in the freed entry, connects before the
        # timeout and must not get the stale reply
        other = vm.control()
        r = other.request("status")
        assert r["ok"] and r["id"] != 77, r
        time.sleep(2)
        for c in (ctl, other):
            c._read_messages(0.5)
            assert not c.responses, c.responses
        assert devices(other)[slot]["releasing"]
        assert vm.running()


def test_hot_added_readonly_disk_refuses_writes(vmm_bin, testguest, tmp_path):
    img = image(tmp_path)
    with start(vmm_bin, testguest, tmp_path / "vm", "hotplug") as vm:
        ctl = vm.control()
        slot = add_disk(vm, ctl, img, readonly=True)
        vm.wait_result("hotplug_blk", timeout=30)
        blk = vm.result_values("hotplug_blk")[0]
        assert blk.startswith("slot:%d,bad,write:" % slot) and ",write:0," not in blk, blk
        assert open(img, "rb").read() == bytes(1 << 20)
        r = ctl.request("device-add", kind="disk", path=str(img), readonly="yes")
        assert not r["ok"] and "readonly" in r["error"]["message"], r
