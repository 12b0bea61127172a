"""cloison-vmm's command line: --help, --version, --check-host, and a usage
error (exit 2, a message naming the option, nothing started) for every bad
option value and every malformed kernel."""
import json
import os
import re
import struct

import pytest

from conftest import run


def vmm(vmm_bin, *args, **kw):
    return run([vmm_bin] + [str(a) for a in args], **kw)


def test_help_and_version(vmm_bin):
    r = vmm(vmm_bin, "--help")
    assert r.returncode == 0
    for opt in ("--kernel", "--initrd", "--cmdline", "--memory", "--cpus", "--serial",
                "--control", "--name", "--disk", "--net", "--no-reboot", "--paused", "--pidfile",
                "--check-host", "Exit status"):
        assert opt in r.stdout
    r = vmm(vmm_bin, "--version")
    assert r.returncode == 0
    assert re.match(r"cloison-vmm \d+\.\d+\.\d+", r.stdout)


def test_check_host_text(vmm_bin, kvm):
    r = vmm(vmm_bin, "--check-host")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "/dev/kvm: ok" in r.stdout
    assert "KVM API version: 12 (ok)" in r.stdout
    assert re.search(r"KVM_CAP_IRQCHIP\s+ok", r.stdout)
    assert re.search(r"max vCPUs: \d+", r.stdout)
    assert "virtualization:" in r.stdout
    with open("/proc/cpuinfo") as f:
        hw = bool(re.search(r"^flags\s*:.*\b(vmx|svm)\b", f.read(), re.M))
    assert ("very slowly" in r.stdout) == (not hw)
    assert "cloison can run" in r.stdout


def test_check_host_json(vmm_bin, kvm):
    r = vmm(vmm_bin, "--check-host", "--json")
    assert r.returncode == 0
    j = json.loads(r.stdout)
    assert j["kvm_device"]["ok"] is True
    assert j["api_version"] == 12
    assert j["can_run"] is True
    assert j["max_vcpus"] >= 1
    caps = {c["name"]: c for c in j["capabilities"]}
    assert caps["KVM_CAP_IRQCHIP"]["ok"] and caps["KVM_CAP_IRQCHIP"]["required"]
    assert j["virtualization"] in ("hardware", "software-nested", "none")
    assert (j["warning"] is None) == j["hardware_virtualization"]


def usage_error(vmm_bin, tmp_path, args, *expect):
    """Runs with args (a file serial is put first unless given);
    wants exit 2, each expected text in stderr, and nothing started."""
    serial = tmp_path / "serial.log"
    full = list(args)
    if "--serial" not in full:
        full = ["--serial", "file:%s" % serial] + full
    r = vmm(vmm_bin, *full, timeout=30)
    assert r.returncode == 2, (args, r.returncode, r.stderr)
    for e in expect:
        assert e in r.stderr, (args, r.stderr)
    assert not serial.exists() or serial.read_text() == ""
    return r


BAD_OPTIONS = [
    ([], ["--kernel PATH is required"]),
    (["--kernel", "K", "--frobnicate"], ["unknown option", "--frobnicate"]),
    (["--kernel", "K", "--paused"], ["--paused needs --control"]),
    (["--kernel", "K", "stray"], ["unexpected argument", "stray"]),
    (["--kernel"], ["needs a value"]),
    (["--kernel", ""], ["--kernel", "empty"]),
    (["--kernel", "K", "--kernel", "K"], ["--kernel given twice"]),
    (["--kernel", "K", "--memory", "abc"], ["--memory abc", "not a size"]),
    (["--kernel", "K", "--memory", "12Q"], ["--memory 12Q"]),
    (["--kernel", "K", "--memory", "-5"], ["--memory -5"]),
    (["--kernel", "K", "--memory", "0"], ["--memory 0", "too small"]),
    (["--kernel", "K", "--memory", "32M"], ["--memory 32M", "too small", "64M"]),
    (["--kernel", "K", "--memory", "2T"], ["--memory 2T", "too large", "1T"]),
    (["--kernel", "K", "--memory", "99999999999999999999"], ["--memory", "too large"]),
    (["--kernel", "K", "--memory", "100001K"], ["--memory 100001K", "4 KiB"]),
    (["--kernel", "K", "--cpus", "0"], ["--cpus 0", "1 to 255"]),
    (["--kernel", "K", "--cpus", "256"], ["--cpus 256", "1 to 255"]),
    (["--kernel", "K", "--cpus", "two"], ["--cpus two"]),
    (["--kernel", "K", "--cpus", "1.5"], ["--cpus 1.5"]),
    (["--kernel", "K", "--cpus", "-1"], ["--cpus -1"]),
    (["--kernel", "K", "--serial", "tty"], ["--serial", "'tty'", "stdio, file:PATH"]),
    (["--kernel", "K", "--serial", "file:"], ["--serial", "file:PATH"]),
    (["--kernel", "K", "--serial", "unix:/" + "x" * 200], ["--serial", "too long"]),
    (["--kernel", "K", "--control", ""], ["--control", "empty"]),
    (["--kernel", "K", "--control", "/" + "c" * 200], ["--control", "too long"]),
    (["--kernel", "K", "--name", ""], ["--name"]),
    (["--kernel", "K", "--name", "n" * 200], ["--name", "1 to 128"]),
    (["--kernel", "K", "--name", "bad\"name"], ["--name", "quotes"]),
    (["--kernel", "K", "--pidfile", ""], ["--pidfile", "empty"]),
    (["--kernel", "K", "--initrd", ""], ["--initrd", "empty"]),
    (["--kernel", "K", "--cmdline", "x" * 65536], ["--cmdline", "65535"]),
    (["--kernel", "K", "--boot-protocol", "uefi"], ["--boot-protocol uefi", "auto, linux or pvh"]),
    (["--kernel", "K", "--disk", "nonsense"], ["--disk"]),
    (["--kernel", "K", "--net", "nonsense"], ["--net"]),
    (["--kernel", "K", "--json"], ["--json goes with --check-host"]),
]


@pytest.mark.parametrize("args,expect", BAD_OPTIONS, ids=[" ".join(a)[:40] or "none"
                                                          for a, _ in BAD_OPTIONS])
def test_bad_option(vmm_bin, tmp_path, args, expect):
    usage_error(vmm_bin, tmp_path, args, *expect)


# ---- malformed kernels and initrds --------------------------------------

def write(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def fake_bzimage(version=0x20f, total=0x1400):
    img = bytearray(total)
    img[0x1f1] = 4
    struct.pack_into("<H", img, 0x1fe, 0xaa55)
    img[0x200], img[0x201] = 0xeb, 0x66
    struct.pack_into("<I", img, 0x202, 0x53726448)
    struct.pack_into("<H", img, 0x206, version)
    img[0x211] = 1
    struct.pack_into("<H", img, 0x236, 1)
    struct.pack_into("<I", img, 0x238, 2047)
    return bytes(img)


def elf64(paddr, entry, cls=2, machine=62, phnum=1, filesz=0x100, memsz=0x100):
    eh = bytearray(64)
    eh[0:4] = b"\x7fELF"
    eh[4], eh[5], eh[6] = cls, 1, 1
    struct.pack_into("<HHIQQQIHHHHHH", eh, 16, 2, machine, 1, entry, 64, 0, 0, 64, 56,
                     phnum, 64, 0, 0)
    ph = struct.pack("<IIQQQQQQ", 1, 7, 0x1000, paddr, paddr, filesz, memsz, 0x1000)
    img = bytearray(eh + ph * phnum)
    img += bytes(0x1000 - len(img)) + b"\x90" * 0x100
    return bytes(img)


MALFORMED = {
    "empty": (b"", ["is empty"]),
    "garbage": (os.urandom(8192).replace(b"\x7fELF", b"xxxx"), ["not a kernel"]),
    "text": (b"#!/bin/sh\necho not a kernel\n" * 100, ["not a kernel"]),
    "bzimage-truncated": (fake_bzimage(total=0x600), ["bzImage truncated"]),
    "bzimage-old-protocol": (fake_bzimage(version=0x204), ["2.06"]),
    "elf-outside-ram": (elf64(0x40000000, 0x40000000), ["outside guest RAM"]),
    "elf-below-1m": (elf64(0x8000, 0x8000), ["outside guest RAM"]),
    "elf-entry-outside": (elf64(0x200000, 0x900000), ["entry"]),
    "elf-32bit": (elf64(0x200000, 0x200000, cls=1), ["ELF"]),
    "elf-arm": (elf64(0x200000, 0x200000, machine=183), ["not x86-64"]),
    "elf-no-segments": (elf64(0x200000, 0x200000, phnum=0), ["program headers"]),
    "elf-segment-past-eof": (elf64(0x200000, 0x200000, filesz=0x10000, memsz=0x10000),
                             ["outside the file"]),
    "elf-truncated": (elf64(0x200000, 0x200000)[:40], ["truncated"]),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_kernel(vmm_bin, tmp_path, kvm, name):
    data, expect = MALFORMED[name]
    k = write(tmp_path, name, data)
    usage_error(vmm_bin, tmp_path, ["--kernel", k, "--memory", "64M"], "kernel", *expect)


def test_elf32_without_pvh_note(vmm_bin, tmp_path, kvm):
    eh = bytearray(52)
    eh[0:4] = b"\x7fELF"
    eh[4], eh[5], eh[6] = 1, 1, 1
    struct.pack_into("<HHIIIIIHHHHHH", eh, 16, 2, 3, 1, 0x200000, 52, 0, 0, 52, 32, 1, 40, 0, 0)
    ph = struct.pack("<IIIIIIII", 1, 0x1000, 0x200000, 0x200000, 0x100, 0x100, 7, 0x1000)
    img = bytes(eh + ph) + bytes(0x1000 - 84) + b"\x90" * 0x100
    k = write(tmp_path, "elf32", img)
    usage_error(vmm_bin, tmp_path, ["--kernel", k], "32-bit ELF without a PVH note")


def test_missing_and_unreadable_files(vmm_bin, tmp_path, testguest, kvm):
    usage_error(vmm_bin, tmp_path, ["--kernel", tmp_path / "nope"], "cannot open the kernel",
                "No such file")
    usage_error(vmm_bin, tmp_path, ["--kernel", tmp_path], "not a regular file")
    usage_error(vmm_bin, tmp_path, ["--kernel", testguest, "--initrd", tmp_path / "nope"],
                "cannot open the initrd")
    usage_error(vmm_bin, tmp_path, ["--kernel", testguest, "--initrd",
                                    write(tmp_path, "empty-initrd", b"")], "initrd", "empty")
    if os.geteuid() != 0:
        k = write(tmp_path, "noread", b"x")
        k.chmod(0)
        usage_error(vmm_bin, tmp_path, ["--kernel", k], "Permission denied")


def test_initrd_too_large_for_memory(vmm_bin, tmp_path, testguest, kvm):
    big = tmp_path / "big.img"
    with open(big, "wb") as f:
        f.truncate(80 << 20)
    usage_error(vmm_bin, tmp_path, ["--kernel", testguest, "--initrd", big, "--memory", "64M"],
                "initrd", "does not fit")


def test_pvh_protocol_on_bzimage(vmm_bin, tmp_path, kvm):
    k = write(tmp_path, "bz", fake_bzimage())
    usage_error(vmm_bin, tmp_path, ["--kernel", k, "--boot-protocol", "pvh"], "no PVH entry")


def test_too_many_vcpus_for_host(vmm_bin, tmp_path, testguest, kvm):
    r = vmm(vmm_bin, "--check-host", "--json")
    limit = json.loads(r.stdout)["max_vcpus"]
    if limit >= 255:
        pytest.skip("this host's KVM allows all 255 vCPUs cloison supports")
    usage_error(vmm_bin, tmp_path, ["--kernel", testguest, "--cpus", limit + 1],
                "this host's KVM allows 1 to %d" % limit)


def test_pidfile_in_missing_directory(vmm_bin, tmp_path, testguest, kvm):
    r = vmm(vmm_bin, "--kernel", testguest, "--serial", "none",
            "--pidfile", tmp_path / "no" / "such" / "dir" / "pid", timeout=60)
    assert r.returncode == 1
    assert "--pidfile" in r.stderr
