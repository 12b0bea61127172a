"""The control socket and the exit statuses, each checked against what the
test guest does, not just the reply."""
import hashlib
import json
import os
import re
import socket
import time

import pytest

from vmmlib import Vmm

pytestmark = pytest.mark.usefixtures("kvm")


def counts(vm):
    return [int(v) for v in vm.result_values("count")]


def test_status(vmm_bin, testguest, tmp_path):
    started = time.monotonic()
    with Vmm(vmm_bin, testguest, tmp_path, cmdline="run=serve", cpus=2, memory="384M",
             name="demo") as vm:
        vm.wait_result("boot")
        r = vm.control().request("status")
        assert r["id"] == 1 and r["ok"] is True
        res = r["result"]
        assert res["state"] == "running"
        assert res["name"] == "demo"
        assert res["vcpus"] == 2
        assert res["memory"] == 384 << 20
        assert res["pid"] == vm.proc.pid
        # uptime counts from the worker's start: more than nothing (the guest
        # has booted), at most the wall time since before the worker was spawned.
        lived_ms = (time.monotonic() - started) * 1000
        assert 0 < res["uptime_ms"] <= lived_ms + 50, (res["uptime_ms"], lived_ms)
        time.sleep(0.3)
        later = vm.control().request("status")["result"]["uptime_ms"]
        assert 250 <= later - res["uptime_ms"] <= 2000, (res["uptime_ms"], later)


def test_pause_stops_the_guest_and_resume_continues(vmm_bin, testguest, tmp_path):
    with Vmm(vmm_bin, testguest, tmp_path, cmdline="count") as vm:
        ctl = vm.control()
        vm.wait_result("count", 30, count=3)
        r = ctl.request("pause")
        assert r["ok"] is True, r
        ctl.wait_event(lambda e: e == {"event": "state", "state": "paused"})
        assert ctl.request("status")["result"]["state"] == "paused"
        time.sleep(0.3)  # output already in flight settles
        frozen = counts(vm)
        time.sleep(1.0)
        assert counts(vm) == frozen, "the guest kept counting while paused"
        r = ctl.request("resume")
        assert r["ok"] is True, r
        ctl.wait_event(lambda e: e == {"event": "state", "state": "running"})
        vm.wait_result("count", 30, count=len(frozen) + 3)
        assert counts(vm)[-1] > frozen[-1]
        assert ctl.request("status")["result"]["state"] == "running"


def guest_ram_digest(pid, size):
    """SHA-256 of the worker's guest RAM, read through /proc/PID/mem from
    the shared mapping of exactly the guest's size."""
    with open("/proc/%d/maps" % pid) as f:
        for line in f:
            addr, perms = line.split()[:2]
            lo, hi = (int(x, 16) for x in addr.split("-"))
            if hi - lo == size and perms.startswith("rw") and perms[3] == "s":
                break
        else:
            raise AssertionError("no mapping of the guest's RAM in /proc/%d/maps" % pid)
    h = hashlib.sha256()
    with open("/proc/%d/mem" % pid, "rb", buffering=0) as m:
        m.seek(lo)
        left = size
        while left:
            chunk = m.read(min(left, 8 << 20))
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


def test_paused_means_paused(vmm_bin, testguest, tmp_path):
    """With the guest rewriting 16 MiB on every vCPU, a pause freezes all
    of guest RAM and the console for seconds (no vCPU, device or timer
    touches it), and resume lets it change again."""
    size = 128 << 20
    with Vmm(vmm_bin, testguest, tmp_path, cmdline="dirty=16M", cpus=2, memory="128M") as vm:
        ctl = vm.control()
        vm.wait_result("dirty_passes", 60, count=2)
        assert ctl.request("pause")["ok"] is True
        ctl.wait_event(lambda e: e == {"event": "state", "state": "paused"})
        first = guest_ram_digest(vm.proc.pid, size)
        serial = len(vm.serial())
        time.sleep(2)
        assert guest_ram_digest(vm.proc.pid, size) == first, "guest RAM changed while paused"
        assert len(vm.serial()) == serial, "the console moved while paused"
        assert ctl.request("resume")["ok"] is True
        time.sleep(1)
        assert guest_ram_digest(vm.proc.pid, size) != first, "the guest did not run again"
        assert not vm.result_values("dirty_errors"), vm.tails()
        ctl.request("poweroff")
        assert vm.wait_exit(30) == 0


def test_invalid_state(vmm_bin, testguest, tmp_path):
    with Vmm(vmm_bin, testguest, tmp_path, cmdline="run=serve") as vm:
        ctl = vm.control()
        r = ctl.request("resume")
        assert r["ok"] is False and r["error"]["code"] == "invalid-state"
        assert ctl.request("pause")["ok"] is True
        r = ctl.request("pause")
        assert r["ok"] is False and r["error"]["code"] == "invalid-state"
        r = ctl.request("shutdown")
        assert r["ok"] is False and r["error"]["code"] == "invalid-state"
        assert ctl.request("resume")["ok"] is True


def test_bad_requests(vmm_bin, testguest, tmp_path):
    with Vmm(vmm_bin, testguest, tmp_path, cmdline="run=serve") as vm:
        ctl = vm.control()
        r = ctl.request("frobnicate")
        assert r["ok"] is False
        assert r["error"]["code"] == "unknown-command"
        assert "frobnicate" in r["error"]["message"]
        assert "status" in r["error"]["message"]
        for raw in (b"this is not json\n", b"[1,2]\n", b'{"id":7}\n', b'{"cmd":5}\n'):
            ctl.send_raw(raw)
            r = ctl.recv_response()
            assert r["ok"] is False and r["error"]["code"] == "bad-request", (raw, r)
        # The id is echoed whatever its type, and the client still works.
        ctl.send_raw(json.dumps({"id": "abc", "cmd": "status"}) + "\n")
        assert ctl.recv_response("abc")["ok"] is True
        # A line past 64 KiB is refused and the connection closed.
        ctl.send_raw(b"x" * (70 * 1024))
        r = ctl.recv_response()
        assert r["error"]["code"] == "bad-request"
        assert vm.running()
        assert vm.control().request("status")["ok"] is True


def test_poweroff(vmm_bin, testguest, tmp_path):
    with Vmm(vmm_bin, testguest, tmp_path, cmdline="count") as vm:
        vm.wait_result("count")
        ctl = vm.control()
        other = vm.control()
        assert ctl.request("poweroff")["ok"] is True
        for c in (ctl, other):
            ev = c.wait_event(lambda e: e.get("event") == "exit")
            assert ev["reason"] == "poweroff" and ev["status"] == 0
        assert vm.wait_exit(30) == 0
        assert not os.path.exists(vm.control_path)


def test_reset_reboots_in_place(vmm_bin, testguest, tmp_path):
    with Vmm(vmm_bin, testguest, tmp_path, cmdline="run=serve", cpus=2) as vm:
        vm.wait_result("boot")
        ctl = vm.control()
        assert ctl.request("reset")["ok"] is True
        ev = ctl.wait_event(lambda e: e.get("event") == "reset")
        assert ev["reason"] == "control"
        ctl.wait_event(lambda e: e == {"event": "state", "state": "running"})
        vm.wait_result("boot", 30, count=2)
        assert vm.result_values("cpus_online") == ["2", "2"]
        assert ctl.request("status")["result"]["state"] == "running"
        ctl.request("poweroff")
        assert vm.wait_exit(30) == 0


def test_reset_while_paused_runs_again(vmm_bin, testguest, tmp_path):
    with Vmm(vmm_bin, testguest, tmp_path, cmdline="count") as vm:
        vm.wait_result("count")
        ctl = vm.control()
        assert ctl.request("pause")["ok"] is True
        assert ctl.request("reset")["ok"] is True
        vm.wait_result("boot", 30, count=2)
        assert ctl.request("status")["result"]["state"] == "running"


def test_reset_with_no_reboot_exits_3(vmm_bin, testguest, tmp_path):
    with Vmm(vmm_bin, testguest, tmp_path, cmdline="run=serve", no_reboot=True) as vm:
        vm.wait_result("boot")
        ctl = vm.control()
        assert ctl.request("reset")["ok"] is True
        ev = ctl.wait_event(lambda e: e.get("event") == "exit")
        assert ev["status"] == 3
        assert vm.wait_exit(30) == 3


def test_shutdown_presses_the_power_button(vmm_bin, testguest, tmp_path):
    with Vmm(vmm_bin, testguest, tmp_path, cmdline="count") as vm:
        vm.wait_result("count")
        ctl = vm.control()
        assert ctl.request("shutdown")["ok"] is True
        ctl.wait_event(lambda e: e == {"event": "power-button"})
        assert vm.wait_exit(30) == 0, vm.tails()
        assert vm.result_values("power_button") == ["1"]
        assert vm.result_values("poweroff") == ["1"]


def test_shutdown_ignored_by_the_guest(vmm_bin, testguest, tmp_path):
    with Vmm(vmm_bin, testguest, tmp_path, cmdline="count acpi=ignore") as vm:
        vm.wait_result("count")
        ctl = vm.control()
        assert ctl.request("shutdown")["ok"] is True
        n = len(counts(vm))
        vm.wait_result("count", 30, count=n + 5)  # still counting
        assert vm.running()
        assert vm.result_values("power_button") == []
        assert ctl.request("poweroff")["ok"] is True
        assert vm.wait_exit(30) == 0


def test_guest_reboot(vmm_bin, testguest, tmp_path):
    # Without --no-reboot the guest reboots in place (and asks again).
    with Vmm(vmm_bin, testguest, tmp_path / "a", cmdline="reboot") as vm:
        ctl = vm.control()
        vm.wait_result("boot", 60, count=3)
        ev = ctl.wait_event(lambda e: e.get("event") == "reset")
        assert ev["reason"] == "guest"
        # Also while a reset is under way, poweroff is honoured.
        assert ctl.request("poweroff")["ok"] is True
        assert vm.wait_exit(30) == 0
    with Vmm(vmm_bin, testguest, tmp_path / "b", cmdline="reboot", no_reboot=True) as vm:
        assert vm.wait_exit(60) == 3, vm.tails()
        assert vm.result_values("boot") == ["ok"]


def test_guest_crash_exits_4_with_registers(vmm_bin, testguest, tmp_path):
    # The touch first gives the test time to connect before the crash.
    # --paused: the guest cannot crash before the test listens for the event.
    with Vmm(vmm_bin, testguest, tmp_path, cmdline="triplefault", extra=["--paused"]) as vm:
        ctl = vm.control()
        assert ctl.request("status")["result"]["state"] == "paused"
        assert vm.serial() == ""  # not a single guest instruction has run
        assert ctl.request("resume")["ok"]
        assert vm.wait_exit(60) == 4, vm.tails()
        err = vm.stderr()
        assert "vCPU 0 registers" in err
        assert "rip=" in err and "cr0=" in err and "cs " in err
        assert re.search(r"code at rip \(phys [0-9a-f]+\):( [0-9a-f]{2}){16}", err)
        assert "crash" in err
        ev = [e for e in ctl.events if e.get("event") == "exit"]
        if not ev:
            try:
                ev = [ctl.wait_event(lambda e: e.get("event") == "exit", 2)]
            except AssertionError:
                ev = []
        assert ev and ev[0]["status"] == 4 and ev[0]["reason"] == "crash"
        assert "vCPU 0" in ev[0]["detail"]


def test_control_path_in_use(vmm_bin, testguest, tmp_path):
    with Vmm(vmm_bin, testguest, tmp_path / "a", cmdline="run=serve") as vm:
        vm.wait_result("boot")
        with Vmm(vmm_bin, testguest, tmp_path / "b", control=False,
                 extra=["--control", vm.control_path]) as second:
            assert second.wait_exit(30) == 1
            assert "in use" in second.stderr()
            assert second.serial() == ""  # nothing started
        assert vm.control().request("status")["ok"] is True


def test_stale_control_socket_is_replaced(vmm_bin, testguest, tmp_path):
    path = str(tmp_path / "control.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.close()  # a socket file nobody listens on
    with Vmm(vmm_bin, testguest, tmp_path, cmdline="run=serve") as vm:
        assert vm.control().request("status")["ok"] is True


def test_control_path_not_a_socket(vmm_bin, testguest, tmp_path):
    path = tmp_path / "control.sock"
    path.write_text("precious")
    with Vmm(vmm_bin, testguest, tmp_path, cmdline="run=serve") as vm:
        assert vm.wait_exit(30) == 1
        assert "not a socket" in vm.stderr()
    assert path.read_text() == "precious"


def test_sigterm_stops_the_worker(vmm_bin, testguest, tmp_path):
    with Vmm(vmm_bin, testguest, tmp_path, cmdline="run=serve") as vm:
        vm.wait_result("boot")
        vm.kill(15)
        assert vm.wait_exit(30) == 1
        assert "signal" in vm.stderr()
        assert not os.path.exists(vm.control_path)


def test_repeated_resets_while_busy(vmm_bin, testguest, tmp_path):
    # Resets land at arbitrary points of the guest's I/O: a port or MMIO
    # access KVM has not completed yet must not leak into the new boot.
    with Vmm(vmm_bin, testguest, tmp_path, cmdline="count", cpus=2) as vm:
        ctl = vm.control()
        for i in range(2, 8):
            vm.wait_result("count", 30, count=len(counts(vm)) + 1)
            if i % 2:
                assert ctl.request("pause")["ok"] is True
            assert ctl.request("reset")["ok"] is True
            vm.wait_result("boot", 30, count=i)
        assert vm.result_values("cpus_online") == ["2"] * 7


def test_pause_resume_reset_rounds_two_vcpus(vmm_bin, testguest, tmp_path):
    # Once a rare hang: the rebooted 2-vCPU guest stopped for good in its
    # TSC-deadline sleep while bringing up the AP (the TSC was rewound on
    # in-place reset). Every round must come back with both CPUs.
    rounds = 10
    with Vmm(vmm_bin, testguest, tmp_path, cmdline="count", cpus=2) as vm:
        ctl = vm.control()
        for i in range(1, rounds + 1):
            vm.wait_result("boot", 30, count=i)
            vm.wait_result("count", 30, count=i)
            for cmd in ("pause", "resume", "reset"):
                assert ctl.request(cmd)["ok"] is True, (i, cmd)
        vm.wait_result("boot", 30, count=rounds + 1)
        assert vm.result_values("cpus_online") == ["2"] * (rounds + 1), vm.tails()
        ctl.request("poweroff")
        assert vm.wait_exit(30) == 0
