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


def need_qemu():
    if not which(QEMU):
        pytest.skip("%s is not installed (Debian package qemu-system-x86)" % QEMU)
    require_kvm()


def boot(guest, cmdline, machine="q35", memory="256M", cpus=1, extra=(), timeout=180):
    """Boots the guest; returns (exit status, serial output, RESULT dict).
    Repeated keys keep their last value; all values are in results['_all']."""
    need_qemu()
    cmd = [QEMU, "-enable-kvm", "-cpu", "EPYC", "-M", machine, "-m", memory,
           "-smp", str(cpus), "-kernel", str(guest), "-append", cmdline,
           "-display", "none", "-nodefaults", "-serial", "stdio", "-no-reboot"]
    cmd += list(extra)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    results = {"_all": []}
    for line in p.stdout.splitlines():
        m = re.match(r"^RESULT ([a-z0-9_]+)=(.*)$", line)
        if m:
            results[m.group(1)] = m.group(2)
            results["_all"].append((m.group(1), m.group(2)))
    return p.returncode, p.stdout, results


def e820_ranges(value):
    out = []
    for item in value.split(","):
        rng, typ = item.split(":")
        start, end = rng.split("-")
        out.append((int(start, 16), int(end, 16), int(typ)))
    return out


@pytest.mark.parametrize("cpus", [1, 2, 4])
def test_boot_facts_cmdline_and_cpus(testguest, cpus):
    cmdline = "x=1 unusual-word=a,b:c  two  spaces"
    rc, out, r = boot(testguest, cmdline, cpus=cpus)
    assert rc == 0, out
    assert out.splitlines()[0].startswith("cloison-testguest"), out
    assert r["cmdline"] == cmdline, out
    assert r["cpus_online"] == str(cpus), out
    assert r["boot"] == "ok", out
    assert r["poweroff"] == "1", out
    # Unknown words are reported, not fatal.
    assert ("unknown_word", "two") in r["_all"], out
    ram = sum(e - s for s, e, t in e820_ranges(r["e820"]) if t == 1)
    assert int(r["mem_total"]) == ram
    assert 250 << 20 < ram <= 256 << 20


def test_empty_cmdline_powers_off_on_pc_machine(testguest):
    rc, out, r = boot(testguest, "", machine="pc", cpus=2)
    assert rc == 0, out
    assert r["cmdline"] == ""
    assert r["cpus_online"] == "2"
    assert r["poweroff"] == "1"


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
