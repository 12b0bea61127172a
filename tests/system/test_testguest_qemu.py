"""The test guest under QEMU (docs/testguest.md): QEMU is the peer that
proves the guest itself is right, so cloison-vmm's tests can trust it.

Each test boots build*/guest/cloison-testguest with
`qemu-system-x86_64 -enable-kvm -kernel` and checks the RESULT lines it prints
on COM1 against what the host knows."""
import hashlib
import os
import re
import subprocess

import pytest

from conftest import require_kvm, which

QEMU = "qemu-system-x86_64"
# The peer's vCPU is exactly what this host's KVM supports
# (KVM_GET_SUPPORTED_CPUID), as cloison-vmm's is: no named model, whose
# features a host of this kind may lack (AMD EPYC hosts here have no 1 GiB
# pages, SSE4, XSAVE or AVX under KVM) or have beyond it. Less
# IA32_ARCH_CAPABILITIES: KVM lists that MSR on these hosts but refuses
# QEMU's write of it ("failed to set MSR 0x10a"), and QEMU aborts.
QEMU_CPU = "host,-arch-capabilities"
# qboot boots the PVH guest in about a second where SeaBIOS takes 10-30 s
# on nested hosts (its ring-0 code is emulated). It leaves PCI BARs
# unassigned, so it also exercises the guest's own BAR placement; a few
# tests keep SeaBIOS for firmware-placed BARs.
QBOOT = "/usr/share/qemu/qboot.rom"


def firmware_args(firmware):
    if firmware == "qboot" and os.path.exists(QBOOT):
        return ["-bios", QBOOT]
    return []


def need_qemu():
    if not which(QEMU):
        pytest.skip("%s is not installed (Debian package qemu-system-x86)" % QEMU)
    require_kvm()


def boot(guest, cmdline, machine="q35", memory="256M", cpus=1, extra=(), timeout=180,
         firmware="qboot"):
    """Boots the guest; returns (exit status, serial output, RESULT dict).
    Repeated keys keep their last value; all values are in results['_all']."""
    need_qemu()
    cmd = [QEMU, "-enable-kvm", "-cpu", QEMU_CPU, "-M", machine, "-m", memory,
           "-smp", str(cpus), "-kernel", str(guest), "-append", cmdline,
           "-display", "none", "-nodefaults", "-serial", "stdio", "-no-reboot"]
    cmd += firmware_args(firmware)
    cmd += list(extra)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    results = {"_all": []}
    for line in p.stdout.splitlines():
        m = re.match(r"^RESULT ([a-z0-9_]+)=(.*)$", line)
        if m:
            results[m.group(1)] = m.group(2)
            results["_all"].append((m.group(1), m.group(2)))
    if "fatal" in results and "fault" not in cmdline.split():
        pytest.fail("the test guest faulted: RESULT fatal=%s\n%s" % (results["fatal"], p.stdout))
    return p.returncode, p.stdout, results


def e820_ranges(value):
    out = []
    for item in value.split(","):
        rng, typ = item.split(":")
        start, end = rng.split("-")
        out.append((int(start, 16), int(end, 16), int(typ)))
    return out


@pytest.mark.parametrize("cpus,machine,cmdline,firmware", [
    (1, "pc", "", "seabios"),  # an empty command line: boot facts, then power off
    (2, "q35", "x=1 unusual-word=a,b:c  two  spaces", "qboot"),
    (4, "q35", "x=1 unusual-word=a,b:c  two  spaces", "qboot"),
])
def test_boot_facts_cmdline_and_cpus(testguest, cpus, machine, cmdline, firmware):
    rc, out, r = boot(testguest, cmdline, machine=machine, cpus=cpus, firmware=firmware)
    assert rc == 0, out
    assert out.splitlines()[0].startswith("cloison-testguest"), out
    assert r["cmdline"] == cmdline, out
    assert r["cpus_online"] == str(cpus), out
    assert r["boot"] == "ok", out
    assert r["poweroff"] == "1", out
    if cmdline:
        # Unknown words are reported, not fatal.
        assert ("unknown_word", "two") in r["_all"], out
    ram = sum(e - s for s, e, t in e820_ranges(r["e820"]) if t == 1)
    assert int(r["mem_total"]) == ram
    assert 250 << 20 < ram <= 256 << 20


def test_touchlast_above_4g(testguest):
    rc, out, r = boot(testguest, "touchlast touch=0x100000000-0x104000000",
                      memory="5G", cpus=2)
    assert rc == 0, out
    ranges = e820_ranges(r["e820"])
    high = [(s, e) for s, e, t in ranges if t == 1 and s >= 1 << 32]
    assert high, out
    assert int(r["last_page"], 16) == max(e for s, e in high) - 4096
    assert int(r["last_page"], 16) > 1 << 32
    assert r["touch_pages"] == str(0x4000000 // 4096), out
    oks = [v for k, v in r["_all"] if k == "touch_ok"]
    assert oks == ["1", "1"], out
    assert int(r["mem_total"]) > 4 << 30


def disk_args(path, readonly=False, idx=0):
    ro = ",readonly=on" if readonly else ""
    return ["-drive", "file=%s,format=raw,if=none,id=d%d%s" % (path, idx, ro),
            "-device", "virtio-blk-pci,drive=d%d,disable-legacy=on" % idx]


RNG = ["-device", "virtio-rng-pci,disable-legacy=on"]


def test_blksum_blkfill_round_trip(testguest, tmp_path):
    disk = tmp_path / "disk.img"
    # Not a multiple of the guest's 1 MiB request size: the tail matters.
    original = os.urandom((8 << 20) + 3 * 512)
    disk.write_bytes(original)
    # SeaBIOS: BARs placed by the firmware, config space through ECAM.
    rc, out, r = boot(testguest, "blksum blkfill=171 blksum", extra=disk_args(disk),
                      firmware="seabios")
    assert rc == 0, out
    sums = [v for k, v in r["_all"] if k == "blk_sha256"]
    filled = disk.read_bytes()
    assert len(filled) == len(original)
    assert set(filled) == {171}, "the guest's fill did not reach the file"
    assert sums == [hashlib.sha256(original).hexdigest(), hashlib.sha256(filled).hexdigest()], out
    assert r["blkfill"] == "ok", out
    assert r["blk_capacity"] == str(len(original))


def test_blkverify_and_bench(testguest, tmp_path):
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\0" * (4 << 20))
    rc, out, r = boot(testguest, "blkverify blkbench=randread qd=4 secs=1", extra=disk_args(disk))
    assert rc == 0, out
    assert r["blkverify"] == "ok", out
    assert int(r["blk_ops"]) > 0 and r["blk_errors"] == "0", out
    assert int(r["blk_bytes"]) == int(r["blk_ops"]) * 4096
    assert 0.9e9 < int(r["blk_ns"]) < 5e9
    # The pattern really is on the disk, sector by sector different.
    data = disk.read_bytes()
    assert data[:512] != data[512:1024] and data.count(b"\0" * 512) == 0


def test_readonly_disk_refuses_writes_pc_machine(testguest, tmp_path):
    """-M pc has no MCFG: config space goes through 0xCF8 system calls."""
    disk = tmp_path / "ro.img"
    content = os.urandom(1 << 20)
    disk.write_bytes(content)
    rc, out, r = boot(testguest, "blkro blksum", machine="pc",
                      extra=disk_args(disk, readonly=True))
    assert rc == 0, out
    assert r["blk_readonly"] == "1", out
    assert r["blk_read_status"] == "0", out
    assert r["blk_write_status"] == "1", out  # VIRTIO_BLK_S_IOERR
    assert r["blk_sha256"] == hashlib.sha256(content).hexdigest()
    assert disk.read_bytes() == content


def test_rng(testguest):
    rc, out, r = boot(testguest, "rng", extra=RNG)
    assert rc == 0, out
    assert r["rng_bytes"] == "4096", out
    assert r["rng_ok"] == "1", out
    assert int(r["rng_distinct"]) > 200
    assert r["rng_sample"] != "0" * 32


def test_no_device_is_reported_not_fatal(testguest):
    rc, out, r = boot(testguest, "blksum rng")
    assert rc == 0, out
    assert "blk_error" in r and r["rng_ok"] == "0", out
    assert r["poweroff"] == "1"


@pytest.mark.parametrize("other", ["rng", "blk1"])
def test_hostile_driver_leaves_other_device_working(testguest, tmp_path, other):
    disk = tmp_path / "victim.img"
    disk.write_bytes(b"\0" * (1 << 20))
    second = tmp_path / "other.img"
    second.write_bytes(b"\1" * (1 << 20))
    extra = RNG if other == "rng" else disk_args(second, idx=1)
    # With rng as the witness, also negotiate EVENT_IDX and INDIRECT_DESC,
    # which adds the broken-indirect-table steps.
    words = "eventidx indirect hostile=blk" if other == "rng" else "hostile=blk"
    rc, out, r = boot(testguest, words, extra=disk_args(disk) + extra)
    assert rc == 0, out
    assert r["hostile_other"] == other
    assert r["hostile_other_baseline_ok"] == "1"
    steps = ["loop", "badaddr", "overlong", "badidx"]
    if other == "rng":
        steps += ["indirect_loop", "indirect_nested", "indirect_badlen"]
    else:
        assert "hostile_indirect_loop_used" not in r, out
    for step in steps:
        assert r["hostile_%s_other_ok" % step] == "1", out
        assert r["hostile_%s_used" % step] in ("0", "1"), out
        if step == "badaddr":
            # QEMU maps a buffer outside RAM through a bounce buffer onto
            # unassigned memory and completes the request: allowed.
            continue
        # Otherwise the device refused the chain (needs reset) or completed
        # it with an error status; never success.
        refused = r["hostile_%s_needs_reset" % step] == "1"
        failed = r.get("hostile_%s_req_status" % step, "0") not in ("0",)
        assert refused or failed, (step, out)
    assert r["hostile_done"] == "1"


def test_net_ping_and_udp_echo(testguest, tmp_path):
    """In a private network namespace: a tap with 10.99.0.1/24, the guest on
    10.99.0.2 answers ping and echoes UDP port 7."""
    need_qemu()
    if os.geteuid() != 0 or not which("ip"):
        pytest.skip("needs root and iproute2 for a network namespace with a tap")
    ns = "cg-tg-%d" % os.getpid()
    serial = tmp_path / "serial.txt"
    sh = lambda *a: subprocess.run(["ip", "netns", "exec", ns] + list(a),
                                   capture_output=True, text=True, timeout=60)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    qemu = None
    try:
        sh("ip", "link", "set", "lo", "up")
        assert sh("ip", "tuntap", "add", "dev", "cgtap0", "mode", "tap").returncode == 0
        sh("ip", "addr", "add", "10.99.0.1/24", "dev", "cgtap0")
        sh("ip", "link", "set", "cgtap0", "up")
        qemu = subprocess.Popen(
            ["ip", "netns", "exec", ns, QEMU, "-enable-kvm", "-cpu", QEMU_CPU, "-M", "q35",
             "-m", "256M", "-kernel", str(testguest), "-append", "ip=10.99.0.2/24",
             "-display", "none", "-nodefaults", "-serial", "file:%s" % serial, "-no-reboot",
             "-netdev", "tap,id=n0,ifname=cgtap0,script=no,downscript=no",
             "-device", "virtio-net-pci,netdev=n0,disable-legacy=on"] + firmware_args("qboot"),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import time
        deadline = time.time() + 120
        while time.time() < deadline:
            if serial.exists() and "RESULT net_ip=" in serial.read_text():
                break
            time.sleep(0.3)
        text = serial.read_text()
        assert "RESULT net_ip=10.99.0.2/24" in text, text
        ping = sh("ping", "-c", "3", "-i", "0.2", "-W", "2", "10.99.0.2")
        assert ping.returncode == 0 and " 0% packet loss" in ping.stdout, ping.stdout
        echo = sh("python3", "-c", """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
for i in range(20):
    msg = b"cloison-%d" % i * (i + 1)
    s.sendto(msg, ("10.99.0.2", 7))
    data, addr = s.recvfrom(4096)
    assert data == msg and addr == ("10.99.0.2", 7), (data, addr)
s.sendto(b"not echoed", ("10.99.0.2", 9))
try:
    s.recvfrom(4096)
    raise SystemExit("port 9 must not echo")
except socket.timeout:
    pass
print("ok")
""")
        assert echo.stdout.strip() == "ok", echo.stderr
    finally:
        if qemu:
            qemu.kill()
            qemu.wait()
        subprocess.run(["ip", "netns", "del", ns])


@pytest.mark.parametrize("word,line", [("reboot", "reboot: 0xfe to port 0x64"),
                                       ("triplefault", "triplefault: empty IDT, then a #GP")])
def test_reset_words_end_the_run_without_power_off(testguest, word, line):
    """With -no-reboot QEMU exits on the guest's reset; without it the guest
    would boot again. Either way the guest must not claim a power-off."""
    rc, out, r = boot(testguest, word)
    assert rc == 0, out
    assert r["boot"] == "ok" and line in out, out
    assert "poweroff" not in r, out
    assert "RESULT fatal=" not in out, out


def monitor_run(guest, cmdline, tmp_path, after_count=3, wait=10, cpus=1, until=None):
    """Boots with a QEMU monitor socket; once `count` printed after_count
    lines, presses the ACPI power button; returns (status, serial text)."""
    import socket
    import time
    need_qemu()
    serial, mon = tmp_path / "serial.txt", tmp_path / "mon.sock"
    q = subprocess.Popen(
        [QEMU, "-enable-kvm", "-cpu", QEMU_CPU, "-M", "q35", "-m", "256M", "-smp", str(cpus),
         "-kernel", str(guest),
         "-append", cmdline, "-display", "none", "-nodefaults", "-no-reboot",
         "-serial", "file:%s" % serial, "-monitor", "unix:%s,server=on,wait=off" % mon]
        + firmware_args("qboot"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            text = serial.read_text() if serial.exists() else ""
            if (until or "RESULT count=%d\n" % after_count) in text:
                break
            time.sleep(0.2)
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(mon))
        s.sendall(b"system_powerdown\n")
        try:
            return q.wait(timeout=wait), serial.read_text()
        except subprocess.TimeoutExpired:
            return None, serial.read_text()
    finally:
        if q.poll() is None:
            q.kill()
            q.wait()


def test_count_then_power_button_powers_off(testguest, tmp_path):
    rc, text = monitor_run(testguest, "count", tmp_path)
    counts = [int(l.split("=")[1]) for l in text.splitlines() if l.startswith("RESULT count=")]
    assert counts[:3] == [1, 2, 3], text
    assert "RESULT power_button=1" in text and "RESULT poweroff=1" in text, text
    assert rc == 0, text


def test_acpi_ignore_keeps_counting(testguest, tmp_path):
    rc, text = monitor_run(testguest, "count acpi=ignore", tmp_path, wait=5)
    assert rc is None, text  # still running 5 s after the button
    assert "power button ignored" in text and "power_button=1" not in text, text
    counts = [int(l.split("=")[1]) for l in text.splitlines() if l.startswith("RESULT count=")]
    assert counts[-1] >= 3 + 25, text  # ~10 per second kept coming


@pytest.mark.parametrize("cpus", [1, 3])
def test_dirty_keeps_memory_dirty_without_lost_writes(testguest, tmp_path, cpus):
    rc, text = monitor_run(testguest, "dirty=16M", tmp_path, cpus=cpus,
                           until="RESULT dirty_passes=", wait=20)
    assert rc == 0, text
    assert "RESULT dirty_bytes=16777216" in text, text
    passes = [int(l.split("=")[1]) for l in text.splitlines()
              if l.startswith("RESULT dirty_passes=")]
    assert passes and passes[0] > 0, text
    assert "dirty_errors" not in text, text
    assert "RESULT power_button=1" in text


def test_event_idx_and_indirect_descriptors(testguest, tmp_path):
    """The same data path with VIRTIO_F_EVENT_IDX and INDIRECT_DESC."""
    disk = tmp_path / "disk.img"
    original = os.urandom(3 << 20)
    disk.write_bytes(original)
    rc, out, r = boot(testguest, "eventidx indirect blksum blkverify rng "
                      "blkbench=randread qd=32 secs=1", extra=disk_args(disk) + RNG)
    assert rc == 0, out
    m = re.search(r"^blk0: .* features 0x([0-9a-f]+)", out, re.M)
    assert m and int(m.group(1), 16) & (3 << 28) == 3 << 28, out
    assert r["blk_sha256"] == hashlib.sha256(original).hexdigest(), out
    assert r["blkverify"] == "ok" and r["rng_ok"] == "1", out
    assert r["blk_errors"] == "0" and int(r["blk_ops"]) > 0, out


def test_virtio_console_greets_and_echoes(testguest, tmp_path):
    import socket
    import time
    need_qemu()
    sock, mon, serial = tmp_path / "con.sock", tmp_path / "mon.sock", tmp_path / "serial.txt"
    q = subprocess.Popen(
        [QEMU, "-enable-kvm", "-cpu", QEMU_CPU, "-M", "q35", "-m", "256M", "-kernel", str(testguest),
         "-append", "console", "-display", "none", "-nodefaults", "-no-reboot",
         "-serial", "file:%s" % serial, "-monitor", "unix:%s,server=on,wait=off" % mon,
         # wait=on: QEMU starts the guest only once we are connected, so the
         # greeting cannot be written to nobody.
         "-chardev", "socket,id=c0,path=%s,server=on,wait=on" % sock,
         "-device", "virtio-serial-pci,disable-legacy=on", "-device", "virtconsole,chardev=c0"]
        + firmware_args("qboot"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not sock.exists() and time.time() < deadline:
            time.sleep(0.1)
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(sock))
        s.settimeout(60)
        got = b""
        while b"\n" not in got:
            got += s.recv(256)
        assert got == b"cloison-testguest console: echoing\n", got
        msg = b"hello, console \x01\xff\n" * 20
        s.sendall(msg)
        echo = b""
        while len(echo) < len(msg):
            echo += s.recv(4096)
        assert echo == msg
        m = socket.socket(socket.AF_UNIX)
        m.connect(str(mon))
        m.sendall(b"system_powerdown\n")
        assert q.wait(timeout=30) == 0
        text = serial.read_text()
        assert "RESULT console_ready=1" in text and "RESULT power_button=1" in text, text
    finally:
        if q.poll() is None:
            q.kill()
            q.wait()


def test_blk_multiqueue_from_every_cpu(testguest, tmp_path):
    """blkmq: one queue per vCPU, each driven by its own CPU."""
    disk = tmp_path / "disk.img"
    disk.write_bytes(os.urandom(2 << 20))
    rc, out, r = boot(testguest, "blkmq blkbench=randread qd=4 secs=1 blkverify", cpus=3,
                      extra=["-drive", "file=%s,format=raw,if=none,id=d0" % disk,
                             "-device", "virtio-blk-pci,drive=d0,disable-legacy=on,num-queues=3"])
    assert rc == 0, out
    assert r["blk_queues"] == "3", out
    assert r["blk_errors"] == "0" and int(r["blk_ops"]) > 0, out
    assert int(r["blk_kicks"]) > 0
    assert r["blkverify"] == "ok", out


def test_unexpected_fault_reports_and_powers_off(testguest):
    """An unexpected exception ends the run at once with RESULT fatal= (vector,
    error code, addresses) and an ACPI power-off, not a hang or a reset loop."""
    rc, out, r = boot(testguest, "fault", timeout=60)
    assert rc == 0, out
    m = re.match(r"vector:0x0*e error=0x0*4 rip=0x[0-9a-f]+ cs=0x0*2b rsp=0x[0-9a-f]+ "
                 r"cr2=0x00007f0000000000$", r["fatal"])
    assert m, out
    assert "\r\n" in out or "\n" in out
