"""The test guest under cloison-vmm: boot facts, SMP, memory layout, serial
back ends, pidfile."""
import os
import re
import socket
import time

import pytest

from vmmlib import Vmm, expected_e820, parse_guest_e820, ram_bytes, GiB, MiB

pytestmark = pytest.mark.usefixtures("kvm")


@pytest.mark.parametrize("cpus", [1, 2, 4, 64, 255])
def test_boots_with_all_cpus_online(vmm_bin, testguest, tmp_path, cpus):
    with Vmm(vmm_bin, testguest, tmp_path, cpus=cpus) as vm:
        assert vm.wait_exit(60) == 0, vm.tails()
        facts = vm.boot_facts()
        assert facts["boot"] == "ok"
        assert int(facts["cpus_online"]) == cpus
        assert facts["cmdline"] == ""
        assert facts.get("poweroff") == "1"


def test_memory_map_256m(vmm_bin, testguest, tmp_path):
    with Vmm(vmm_bin, testguest, tmp_path, memory="256M") as vm:
        assert vm.wait_exit(60) == 0, vm.tails()
        facts = vm.boot_facts()
        e820 = parse_guest_e820(facts["e820"])
        assert e820 == expected_e820(256 * MiB)
        assert int(facts["mem_total"]) == ram_bytes(e820)


def test_5g_hole_and_high_memory(vmm_bin, testguest, tmp_path):
    with Vmm(vmm_bin, testguest, tmp_path, memory="5G", cmdline="touchlast") as vm:
        assert vm.wait_exit(120) == 0, vm.tails()
        facts = vm.boot_facts()
        e820 = parse_guest_e820(facts["e820"])
        assert e820 == expected_e820(5 * GiB)
        # Nothing listed as RAM in the hole; 2 GiB of RAM from 4 GiB.
        assert not [r for r in e820 if r[2] == 1 and r[0] < 4 * GiB and r[1] > 3 * GiB]
        assert (4 * GiB, 6 * GiB, 1) in e820
        assert int(facts["mem_total"]) == 5 * GiB - (0x100000 - 0x9fc00)
        assert int(facts["last_page"], 16) == 6 * GiB - 4096
        assert facts["touch_ok"] == "1"


def test_touch_range_above_4g(vmm_bin, testguest, tmp_path):
    with Vmm(vmm_bin, testguest, tmp_path, memory="4608M",
             cmdline="touch=0x100000000-0x101000000") as vm:
        assert vm.wait_exit(120) == 0, vm.tails()
        facts = vm.boot_facts()
        assert facts["touch_ok"] == "1"
        assert int(facts["touch_pages"]) == 4096


def test_exact_command_line(vmm_bin, testguest, tmp_path):
    cmdline = "hello  world x=1,2 quote=\"a b\" \u00e9t\u00e9 last"
    with Vmm(vmm_bin, testguest, tmp_path, cmdline=cmdline) as vm:
        assert vm.wait_exit(60) == 0, vm.tails()
        assert vm.boot_facts()["cmdline"] == cmdline


def test_pidfile_written_while_running(vmm_bin, testguest, tmp_path):
    pidfile = tmp_path / "vmm.pid"
    with Vmm(vmm_bin, testguest, tmp_path, cmdline="run=serve", pidfile=pidfile) as vm:
        vm.wait_result("boot")
        vm.wait_for(lambda: pidfile.exists(), 10, "the pidfile")
        assert int(pidfile.read_text()) == vm.proc.pid
        vm.control().request("poweroff")
        assert vm.wait_exit(30) == 0
        assert not pidfile.exists()


def test_serial_unix_replays_to_late_client(vmm_bin, testguest, tmp_path):
    path = str(tmp_path / "serial.sock")
    with Vmm(vmm_bin, testguest, tmp_path, cmdline="run=serve", serial="unix:" + path) as vm:
        ctl = vm.control()
        deadline = time.monotonic() + 30
        data = b""
        # Connect after the guest booted: the replay must hold the boot facts.
        time.sleep(0.5)
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        s.settimeout(1)
        while b"RESULT boot=ok" not in data and time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                break
            data += chunk
        assert b"RESULT boot=ok" in data
        assert data.startswith(b"cloison-testguest")
        # A second client gets the same replay.
        s2 = socket.socket(socket.AF_UNIX)
        s2.connect(path)
        s2.settimeout(5)
        first = s2.recv(65536)
        assert first.startswith(b"cloison-testguest")
        ctl.request("poweroff")
        assert vm.wait_exit(30) == 0
        assert not os.path.exists(path)


def test_serial_pty(vmm_bin, testguest, tmp_path):
    with Vmm(vmm_bin, testguest, tmp_path, cmdline="run=serve", serial="pty") as vm:
        m = vm.wait_for(lambda: re.search(r"serial console on (/dev/pts/\d+)", vm.stderr()),
                        20, "the pty path on stderr")
        fd = os.open(m.group(1), os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            vm.control().request("reset")  # boot again so output arrives while we read
            data = b""
            deadline = time.monotonic() + 30
            while b"RESULT boot=ok" not in data and time.monotonic() < deadline:
                try:
                    data += os.read(fd, 65536)
                except BlockingIOError:
                    time.sleep(0.05)
            assert b"RESULT boot=ok" in data
        finally:
            os.close(fd)


def test_serial_none_and_file_append(vmm_bin, testguest, tmp_path):
    with Vmm(vmm_bin, testguest, tmp_path / "a", serial="none") as vm:
        assert vm.wait_exit(60) == 0
        assert vm.serial() == ""
    log = tmp_path / "append.log"
    log.write_text("previous line\n")
    with Vmm(vmm_bin, testguest, tmp_path / "b", serial="file:%s" % log) as vm:
        assert vm.wait_exit(60) == 0
    text = log.read_text()
    assert text.startswith("previous line\n")
    assert "RESULT boot=ok" in text


@pytest.mark.parametrize("size,last", [("64G", 65 * GiB - 4096), ("64M", 64 * MiB - 4096)])
def test_memory_extremes(vmm_bin, testguest, tmp_path, size, last):
    with Vmm(vmm_bin, testguest, tmp_path, memory=size, cmdline="touchlast") as vm:
        assert vm.wait_exit(120) == 0, vm.tails()
        facts = vm.boot_facts()
        assert int(facts["last_page"], 16) == last
        assert facts["touch_ok"] == "1"


def test_serial_stdio_on_a_terminal(vmm_bin, testguest, tmp_path):
    """On a tty, stdio is put in raw mode while the VM runs and restored at
    exit; Ctrl-A x powers the VM off."""
    import pty
    import subprocess
    import termios

    master, slave = pty.openpty()
    before = termios.tcgetattr(slave)
    assert before[3] & termios.ICANON
    p = subprocess.Popen([str(vmm_bin), "--kernel", str(testguest), "--cmdline", "run=serve",
                          "--serial", "stdio"], stdin=slave, stdout=slave, stderr=slave,
                         close_fds=True)
    try:
        out = b""
        deadline = time.monotonic() + 30
        while b"RESULT boot=ok" not in out and time.monotonic() < deadline:
            r = __import__("select").select([master], [], [], 0.5)[0]
            if r:
                out += os.read(master, 65536)
        assert b"RESULT boot=ok" in out
        during = termios.tcgetattr(slave)
        assert not during[3] & termios.ICANON and not during[3] & termios.ECHO
        os.write(master, b"\x01x")
        assert p.wait(timeout=30) == 0
        after = termios.tcgetattr(slave)
        assert after[3] == before[3] and after[0] == before[0]
    finally:
        if p.poll() is None:
            p.kill()
        os.close(master)
        os.close(slave)


def test_ring0_instructions_kvm_cannot_emulate(vmm_bin, testguest, tmp_path):
    """INT3, LOCK CMPXCHG16B (plain and GS-relative), POPCNT, STAC/CLAC, FWAIT
    and LDMXCSR/STMXCSR
    executed in guest ring 0. On hardware virtualization the CPU runs them;
    on a software-nested host KVM's emulator gives up on them and the worker
    finishes them (src/vmm/emulate.c). Either way each must do what the
    manual says and the guest must run on to a clean power-off; the
    instructions the CPU does not claim are reported absent."""
    with Vmm(vmm_bin, testguest, tmp_path, cmdline="insntest") as vm:
        assert vm.wait_exit(60) == 0, vm.tails()
        got = {k[len("insn_"):]: v for k, v in vm.results() if k.startswith("insn_")}
    assert set(got) == {"int3", "cmpxchg16b_eq", "cmpxchg16b_ne", "cmpxchg16b_gs", "popcnt",
                        "stac_clac", "fwait", "mxcsr"}, got
    assert got["int3"] == "1"
    failed = {k: v for k, v in got.items() if v not in ("1", "absent")}
    assert not failed, got


def test_guest_ram_gets_huge_pages(vmm_bin, testguest, tmp_path):
    """Guest RAM is a shared file mapping of exactly the guest's size that
    the kernel may back with transparent huge pages, whatever the host's
    shmem_enabled says (the worker mounts its own huge=within_size tmpfs;
    docs/vmm.md). Without THP in the kernel there is nothing to check."""
    if not os.path.exists("/sys/kernel/mm/transparent_hugepage/enabled"):
        pytest.skip("this kernel has no transparent huge pages")
    if os.geteuid() != 0:
        pytest.skip("an unprivileged worker falls back to a memfd (no mount)")
    with Vmm(vmm_bin, testguest, tmp_path, memory="256M", cmdline="run=serve") as vm:
        vm.wait_result("boot")
        with open("/proc/%d/smaps" % vm.proc.pid) as f:
            maps = f.read().split("\n")
        vm.control().request("poweroff")
        assert vm.wait_exit(30) == 0
    ram = None
    for i, line in enumerate(maps):
        m = re.match(r"([0-9a-f]+)-([0-9a-f]+) rw-s ", line)
        if m and int(m.group(2), 16) - int(m.group(1), 16) == 256 * MiB:
            ram = maps[i:i + 40]
            break
    assert ram, "no 256 MiB shared mapping in the worker"
    assert not ram[0].rstrip().endswith("memfd:cloison-guest (deleted)"), ram[0]
    assert any(re.match(r"THPeligible:\s+1$", l) for l in ram), ram
    pmd = [int(l.split()[1]) for l in ram if l.startswith("ShmemPmdMapped:")]
    assert pmd and pmd[0] >= 2048, ram  # at least one 2 MiB page is in use


def test_unexpected_fault_reports_fatal_and_powers_off(vmm_bin, testguest, tmp_path):
    """An unexpected exception in the guest ends the run at once: one RESULT
    fatal= line with the vector, error code and addresses, then an ACPI
    power-off. A test waiting for another RESULT stops on it, not on its
    timeout."""
    from vmmlib import VmmTimeout
    with Vmm(vmm_bin, testguest, tmp_path, cmdline="fault") as vm:
        t0 = time.monotonic()
        with pytest.raises(VmmTimeout, match="faulted"):
            vm.wait_result("never_printed", timeout=120)
        assert time.monotonic() - t0 < 30
        assert vm.wait_exit(30) == 0, vm.tails()
        fatal = vm.result_values("fatal")
        assert len(fatal) == 1, vm.tails()
        assert re.match(r"vector:0x0*e error=0x0*4 rip=0x[0-9a-f]+ cs=0x0*2b "
                        r"rsp=0x[0-9a-f]+ cr2=0x00007f0000000000$", fatal[0]), fatal


def test_serial_lines_end_in_crlf(vmm_bin, testguest, tmp_path):
    """The guest writes CR LF, as real guests do on a serial console, so a
    terminal in raw mode does not staircase."""
    with Vmm(vmm_bin, testguest, tmp_path) as vm:
        assert vm.wait_exit(60) == 0, vm.tails()
        with open(vm.serial_path, "rb") as f:
            text = f.read()
    assert text.count(b"\r\n") >= 5, text
    assert text.count(b"\n") == text.count(b"\r\n"), text
