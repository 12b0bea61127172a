"""The VM Generation ID device (cloison-vmm --generation-id, hw/vmgenid.c):
the test guest runs with it, its memory and state are saved, and the saved
memory shows what the guest sees: the DSDT (disassembled with iasl when the
host has it) has \\_SB.VGEN whose ADDR names the buffer, and the buffer holds
the configured id in Microsoft's byte order. A restore with another id
writes the new one into the buffer and raises GPE0 bit 2 (the guest's
\\_GPE._E02 notifies VGEN with 0x80): a second save shows both. A restore
with the same id changes nothing and raises nothing."""
import os
import shutil
import struct
import subprocess
import uuid

import pytest

from vmmlib import Vmm

pytestmark = pytest.mark.usefixtures("kvm")

ID_A = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
ID_B = "6f1c2a9e-5d3b-4e7a-9c21-8a0b7e4f3d12"
VMGENID_GPA = 0xDF000
ACPI_BASE, ACPI_LEN = 0xE0000, 0x20000
SECTION_ACPI_PM, SECTION_VMGENID = 19, 21
GPE_VMGENID = 1 << 2


def save(vm, state_dir):
    r = vm.control().request("save", path=str(state_dir), timeout=120)
    assert r["ok"] is True, r
    assert vm.wait_exit(60) == 5, vm.tails()


def memory_file(state_dir):
    files = [p for p in state_dir.iterdir() if p.name.startswith("memory-")]
    assert len(files) == 1, list(state_dir.iterdir())
    return files[0]


def read_guest(state_dir, gpa, n):
    with open(memory_file(state_dir), "rb") as f:
        f.seek(gpa)
        return f.read(n)


def sections(state_dir):
    """{(type, instance): payload} of state.bin (docs/state.md)."""
    data = (state_dir / "state.bin").read_bytes()
    assert data[:8] == b"CLOISNST"
    hdr = struct.unpack_from("<I", data, 12)[0]
    count = struct.unpack_from("<I", data, 24)[0]
    off, out = hdr, {}
    for _ in range(count):
        typ, inst, _ver, length = struct.unpack_from("<IIII", data, off)
        out[(typ, inst)] = data[off + 16:off + 16 + length]
        off += 16 + ((length + 7) & ~7)
    return out


def gpe0_sts(state_dir):
    # ACPI PM record: pm1_sts, pm1_en, pm1_cnt, gpe0_sts, gpe0_en (u16 each), ...
    return struct.unpack_from("<H", sections(state_dir)[(SECTION_ACPI_PM, 0)], 6)[0]


def guest_dsdt(state_dir):
    area = read_guest(state_dir, ACPI_BASE, ACPI_LEN)
    at = area.find(b"DSDT")
    assert at >= 0, "no DSDT in the guest's ACPI area"
    length = struct.unpack_from("<I", area, at + 4)[0]
    return area[at:at + length]


def test_generation_id_seen_by_guest_and_changed_on_restore(vmm_bin, testguest, tmp_path):
    s1, s2, s3 = tmp_path / "s1", tmp_path / "s2", tmp_path / "s3"
    opts = dict(cmdline="count", memory="256M")
    with Vmm(vmm_bin, testguest, tmp_path / "a", extra=["--generation-id", ID_A], **opts) as vm:
        vm.wait_result("count", 60, count=2)
        save(vm, s1)
    assert read_guest(s1, VMGENID_GPA, 16) == uuid.UUID(ID_A).bytes_le
    assert sections(s1)[(SECTION_VMGENID, 0)] == uuid.UUID(ID_A).bytes_le
    assert not gpe0_sts(s1) & GPE_VMGENID

    dsdt = guest_dsdt(s1)
    assert b"VGEN" in dsdt and b"VM_Gen_Counter" in dsdt and b"ADDR" in dsdt
    if shutil.which("iasl"):
        (tmp_path / "dsdt.dat").write_bytes(dsdt)
        r = subprocess.run(["iasl", "-d", "dsdt.dat"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        dsl = (tmp_path / "dsdt.dsl").read_text()
        addr = dsl[dsl.index("Method (ADDR, 0"):]
        assert "0x000DF000" in addr[:400], addr[:400]
        assert "Notify (\\_SB.VGEN, 0x80)" in dsl

    # the same id again: nothing to tell the guest
    with Vmm(vmm_bin, testguest, tmp_path / "b", extra=["--restore", s1, "--generation-id", ID_A],
             **opts) as vm:
        vm.wait_result("count", 60, count=2)
        save(vm, s2)
    assert read_guest(s2, VMGENID_GPA, 16) == uuid.UUID(ID_A).bytes_le
    assert not gpe0_sts(s2) & GPE_VMGENID

    # another id: written for the guest, and GPE 2 raised
    with Vmm(vmm_bin, testguest, tmp_path / "c", extra=["--restore", s1, "--generation-id", ID_B],
             **opts) as vm:
        vm.wait_result("count", 60, count=2)
        save(vm, s3)
    assert "boot" not in [k for k, _ in vm.results()], vm.tails()
    assert read_guest(s3, VMGENID_GPA, 16) == uuid.UUID(ID_B).bytes_le
    assert sections(s3)[(SECTION_VMGENID, 0)] == uuid.UUID(ID_B).bytes_le
    assert gpe0_sts(s3) & GPE_VMGENID


def test_without_the_option_there_is_no_device(vmm_bin, testguest, tmp_path):
    s1 = tmp_path / "s1"
    with Vmm(vmm_bin, testguest, tmp_path / "a", cmdline="count", memory="256M") as vm:
        vm.wait_result("count", 60, count=2)
        save(vm, s1)
    assert b"VGEN" not in guest_dsdt(s1)
    assert (SECTION_VMGENID, 0) not in sections(s1)
    assert read_guest(s1, VMGENID_GPA, 16) == bytes(16)


@pytest.mark.parametrize("bad", ["nope", "00000000-0000-0000-0000-000000000000"])
def test_bad_generation_id_is_a_usage_error(vmm_bin, testguest, tmp_path, bad):
    r = subprocess.run([vmm_bin, "--kernel", testguest, "--generation-id", bad],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, r.stderr
    assert "--generation-id" in r.stderr and "GUID" in r.stderr
