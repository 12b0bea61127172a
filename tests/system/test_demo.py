"""The `demo` word (make run's embedded default): an interactive prompt on
COM1, driven here through --serial unix:."""
import os
import socket
import time

import pytest

from vmmlib import Vmm

pytestmark = pytest.mark.usefixtures("kvm")

PROMPT = b"cloison> "


class Console:
    def __init__(self, path, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX)
                self.s.connect(path)
                break
            except OSError:
                self.s.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.s.settimeout(0.5)
        self.data = b""

    def read_until(self, token, start, timeout=30):
        deadline = time.monotonic() + timeout
        while self.data.find(token, start) < 0:
            assert time.monotonic() < deadline, "no %r in %r" % (token, self.data[start:])
            try:
                chunk = self.s.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                break
            self.data += chunk
        i = self.data.find(token, start)
        assert i >= 0, "no %r in %r" % (token, self.data[start:])
        return self.data[start:i]

    def command(self, text, timeout=30):
        """Sends text and CR, returns what came back up to the next prompt."""
        start = len(self.data)
        self.s.sendall(text.encode() + b"\r")
        return self.read_until(PROMPT, start, timeout).decode(errors="replace")


def boot_demo(vmm_bin, testguest, tmp_path, disk=True):
    extra = []
    if disk:
        img = tmp_path / "demo.img"
        with open(img, "wb") as f:
            f.truncate(16 << 20)
        extra = ["--disk", "path=%s" % img]
    path = str(tmp_path / "serial.sock")
    vm = Vmm(vmm_bin, testguest, tmp_path, cmdline="demo", serial="unix:" + path, extra=extra)
    return vm, path


def test_demo_prompt(vmm_bin, testguest, tmp_path):
    vm, path = boot_demo(vmm_bin, testguest, tmp_path)
    with vm:
        con = Console(path)
        welcome = con.read_until(PROMPT, 0).decode(errors="replace")
        assert "RESULT boot=ok" in welcome
        assert "Welcome to cloison" in welcome
        assert "\r\n" in welcome

        out = con.command("help")
        assert out.startswith("help\r\n")  # echoed, then CR LF
        for cmd in ("facts", "disk", "net", "poweroff"):
            assert cmd in out

        out = con.command("facts")
        assert "CPUs online : 1" in out or "CPUs online :" in out
        assert "MiB usable RAM" in out
        assert "e820 map" in out and "RAM" in out
        assert "TSC at" in out

        out = con.command("disk")
        assert "RESULT demo_disk=ok" in out, out
        assert "all 512 bytes match" in out
        # A second round writes a different pattern and still verifies.
        out = con.command("disk")
        assert "round 2" in out and "RESULT demo_disk=ok" in out, out

        out = con.command("net")
        assert "no NIC" in out

        out = con.command("bogus")
        assert "unknown command 'bogus'" in out and "help" in out

        # Backspace edits the line: "helq<BS>p" is "help".
        out = con.command("helq\x7fp")
        assert "poweroff" in out and "unknown" not in out

        # CR LF counts as one Enter (no extra empty prompt).
        start = len(con.data)
        con.s.sendall(b"poweroff\r\n")
        assert vm.wait_exit(30) == 0, vm.tails()
        try:
            while True:
                chunk = con.s.recv(65536)
                if not chunk:
                    break
                con.data += chunk
        except OSError:
            pass
        assert b"RESULT poweroff=1" in con.data[start:]


def test_demo_without_disk_and_power_button(vmm_bin, testguest, tmp_path):
    vm, path = boot_demo(vmm_bin, testguest, tmp_path, disk=False)
    with vm:
        con = Console(path)
        con.read_until(PROMPT, 0)
        out = con.command("disk")
        assert "no disk" in out and "--disk" in out
        # The power button still works while the prompt waits for input.
        vm.control().request("poweroff")
        assert vm.wait_exit(30) == 0, vm.tails()
