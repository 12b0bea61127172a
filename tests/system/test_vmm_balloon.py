"""Dynamic memory's device: virtio-balloon (docs/virtio.md). The test
guest's driver (`balloon=SIZE[,free=SIZE]`, docs/testguest.md) fills RAM,
then inflates to the target the host sets over the control socket, deflates
when it is lifted, and reports a second filled region free. The worker's
resident memory, read from /proc, must fall by what the guest gave back,
and the pages must really be gone (they read back as zeros). The target
and the balloon survive a save and a lazy restore; bad options and
requests are refused with errors that say what is expected."""
import subprocess

import pytest

from conftest import require_root
from vmmlib import Vmm

pytestmark = pytest.mark.usefixtures("kvm")

MiB = 1 << 20


def rss(vm):
    """The worker's resident bytes (anonymous, file and shared): the
    process that runs the VM, the jailed child under --jail."""
    pid = vm.control().request("status")["result"]["pid"]
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS for the worker")


def balloon(ctl, **kw):
    r = ctl.request("balloon", **kw)
    assert r["ok"] is True, r
    return r["result"]


def inflate_to(vm, ctl, assigned, what="balloon_inflated"):
    before = rss(vm)
    b = balloon(ctl, assigned=assigned)
    assert b["target"] == assigned, b
    vm.wait_result(what, 60)
    return before, rss(vm)


@pytest.mark.parametrize("jail", [False, True], ids=["plain", "jailed"])
def test_inflate_and_free_page_reporting_give_memory_back(vmm_bin, testguest, tmp_path, jail):
    """Jailed, the worker's seccomp lists hold: memory is returned on the
    event loop's thread, never on the vCPU whose write enabled a queue."""
    if jail:
        require_root()
    with Vmm(vmm_bin, testguest, tmp_path / "a", memory="512M",
             cmdline="balloon=256M,free=128M count",
             extra=["--balloon", "on"] + (["--jail"] if jail else [])) as vm:
        vm.wait_result("balloon_touched", 60)
        r = dict(vm.results())
        assert r["balloon_features"] == "stats,reporting", vm.tails()
        ctl = vm.control()
        b = balloon(ctl)
        assert (b["memory"], b["target"], b["assigned"]) == (512 * MiB,) * 3, b
        assert b["driver"] is True, b
        # the driver's statistics buffer: what it sent, unknown tags skipped
        assert b["stats"]["total"] == int(r["mem_total"]), b
        assert set(b["stats"]) == {"total", "free"}, b
        assert b["stats_age_ms"] is not None and b["stats_age_ms"] < 60000, b

        touched, after = inflate_to(vm, ctl, 256 * MiB)
        assert touched >= 256 * MiB, touched
        assert int(vm.result_values("balloon_inflated")[0]) == 65536, vm.tails()
        # at least 80 % of what the guest gave up left the worker
        assert touched - after >= 0.8 * 256 * MiB, (touched, after)
        b = balloon(ctl)
        assert b["assigned"] == 256 * MiB and b["target"] == 256 * MiB, b
        assert b["discarded"] >= 256 * MiB, b

        balloon(ctl, assigned=512 * MiB)
        vm.wait_result("balloon_kept", 60)
        # the deflated pages were really dropped: they read back as zeros
        assert vm.result_values("balloon_kept") == ["0"], vm.tails()
        assert balloon(ctl)["assigned"] == 512 * MiB

        vm.wait_result("balloon_free_touched", 60)
        touched, after = inflate_to(vm, ctl, 400 * MiB, "balloon_reported")
        assert int(vm.result_values("balloon_reported")[0]) == 128 * MiB, vm.tails()
        assert touched - after >= 0.8 * 128 * MiB, (touched, after)
        balloon(ctl, assigned=512 * MiB)
        vm.wait_result("balloon_report_kept", 60)
        assert vm.result_values("balloon_report_kept") == ["0"], vm.tails()
        vm.wait_result("balloon_done", 60)
        b = balloon(ctl)
        assert b["reported"] == 128 * MiB, b
        assert b["discarded"] == 384 * MiB, b
        assert int(vm.result_values("balloon_stats_updates")[0]) >= 1, vm.tails()
        assert ctl.request("status")["result"]["state"] == "running"


def test_target_and_balloon_survive_save_and_lazy_restore(vmm_bin, testguest, tmp_path):
    state = tmp_path / "state"
    opts = dict(memory="512M", cmdline="balloon=192M,free=64M count",
                extra=["--balloon", "assigned=384M"])
    with Vmm(vmm_bin, testguest, tmp_path / "a", **opts) as vm:
        # the first target was there before the driver came
        vm.wait_result("balloon_inflated", 60)
        assert vm.result_values("balloon_inflated") == [str(128 * MiB // 4096)], vm.tails()
        ctl = vm.control()
        b = balloon(ctl)
        assert (b["target"], b["assigned"]) == (384 * MiB, 384 * MiB), b
        r = ctl.request("save", path=str(state), timeout=120)
        assert r["ok"] is True, r
        assert vm.wait_exit(60) == 5, vm.tails()
    opts["extra"] = opts["extra"] + ["--restore", state]
    with Vmm(vmm_bin, testguest, tmp_path / "b", **opts) as vm:
        ctl = vm.control()
        b = balloon(ctl)
        assert (b["target"], b["assigned"]) == (384 * MiB, 384 * MiB), b
        assert b["discarded"] == 128 * MiB and b["driver"] is True, b
        # the restored driver goes on: deflate, then report through the
        # lazy mapping of the saved memory
        balloon(ctl, assigned=512 * MiB)
        vm.wait_result("balloon_kept", 60)
        assert vm.result_values("balloon_kept") == ["0"], vm.tails()
        vm.wait_result("balloon_free_touched", 60)
        touched, after = inflate_to(vm, ctl, 448 * MiB, "balloon_reported")
        assert touched - after >= 0.8 * 64 * MiB, (touched, after)
        balloon(ctl, assigned=512 * MiB)
        vm.wait_result("balloon_done", 60)
        assert vm.result_values("balloon_report_kept") == ["0"], vm.tails()
        assert balloon(ctl)["reported"] == 64 * MiB


@pytest.mark.parametrize("args,expect", [
    (["--balloon", "maybe"], "expected \"on\" or \"assigned=SIZE\""),
    (["--balloon", "assigned=lots"], "expected \"on\" or \"assigned=SIZE\""),
    (["--balloon", "assigned=0"], "1 MiB to the VM's memory"),
    (["--balloon", "on", "--balloon", "on"], "--balloon given twice"),
    (["--memory", "256M", "--balloon", "assigned=1G"], "1 MiB to the VM's memory (--memory, 256 MiB)"),
], ids=["word", "size", "zero", "twice", "over-memory"])
def test_bad_balloon_options_are_refused(vmm_bin, testguest, tmp_path, args, expect):
    r = subprocess.run([str(vmm_bin), "--kernel", str(testguest), "--serial", "none"] + args,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0, r
    assert expect in r.stderr, r.stderr


def test_bad_balloon_requests_are_refused(vmm_bin, testguest, tmp_path):
    with Vmm(vmm_bin, testguest, tmp_path / "n", memory="128M", cmdline="count") as vm:
        vm.wait_result("count", 60)
        r = vm.control().request("balloon")
        assert r["ok"] is False and r["error"]["code"] == "no-device", r
        assert "--balloon on" in r["error"]["message"], r
    with Vmm(vmm_bin, testguest, tmp_path / "b", memory="128M", cmdline="count",
             extra=["--balloon", "on"]) as vm:
        vm.wait_result("count", 60)
        ctl = vm.control()
        for bad in ("64M", -1, 1.5, 1024, 129 * MiB, True):
            r = ctl.request("balloon", assigned=bad)
            assert r["ok"] is False and r["error"]["code"] == "bad-request", (bad, r)
            assert "1 MiB to the VM's memory" in r["error"]["message"], r
        b = balloon(ctl)
        # nothing changed, and the test guest has no driver for it
        assert (b["target"], b["assigned"], b["driver"]) == (128 * MiB, 128 * MiB, False), b
        assert b["stats"] == {} and b["stats_age_ms"] is None, b
        assert ctl.request("status")["result"]["state"] == "running"
