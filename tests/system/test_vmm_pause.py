"""Paused means paused (issue 10): with input arriving for the guest, a
paused worker takes none of it in, raises no interrupt and leaves guest
RAM alone; on resume the input goes through. The disk side of the same
rule (writes in flight at the pause) is test_virtio_blk.py's
test_pause_resume_and_reset_during_io."""
import time

from conftest import require_kvm
from test_virtio_console import connect_unix, read_until
from vmmlib import Vmm, guest_ram_digest

MiB = 1 << 20


def test_pause_takes_no_console_input_and_raises_no_interrupt(vmm_bin, testguest, tmp_path):
    require_kvm()
    path = str(tmp_path / "console.sock")
    with Vmm(vmm_bin, testguest, tmp_path / "vm", cmdline="console", memory=256,
             extra=["--console", "unix:%s" % path]) as vm:
        ctl = vm.control()
        s = connect_unix(path)
        try:
            vm.wait_result("console_ready", 60)
            # One echo first: the guest's receive queue is armed and its
            # MSI-X vector has fired, so the counters below are live.
            s.sendall(b"before\n")
            got = read_until(s, b"before\n")
            assert got.endswith(b"before\n"), (got, vm.tails())
            before = ctl.request("status")["result"]["interrupts"]
            assert before["msi"] > 0, before

            assert ctl.request("pause")["ok"]
            ctl.wait_event(lambda e: e == {"event": "state", "state": "paused"})
            st = ctl.request("status")["result"]
            assert st["state"] == "paused"
            ram = guest_ram_digest(vm.proc.pid, 256 * MiB)
            s.sendall(b"while paused\n")
            s.settimeout(2.5)
            try:
                early = s.recv(4096)
            except TimeoutError:
                early = b""
            assert early == b"", "the paused guest echoed %r" % early
            assert guest_ram_digest(vm.proc.pid, 256 * MiB) == ram, \
                "guest RAM changed while paused (the console took input in)"
            after = ctl.request("status")["result"]["interrupts"]
            assert after == st["interrupts"], \
                "interrupts raised while paused: %r then %r" % (st["interrupts"], after)

            assert ctl.request("resume")["ok"]
            got = read_until(s, b"while paused\n")
            assert got == b"while paused\n", (got, vm.tails())
            assert ctl.request("status")["result"]["interrupts"]["msi"] > after["msi"]
        finally:
            s.close()
        assert ctl.request("poweroff")["ok"] is True
        assert vm.wait_exit(30) == 0, vm.tails()
