"""virtio-blk end to end: cloison-vmm with --disk, the test guest's
virtio-blk driver (docs/testguest.md words blkfill=N, blksum, blkverify,
blkro, hostile=blk) and the host looking at the same files.

- the guest fills a disk, the host finds every byte;
- the host writes random data, the guest's SHA-256 matches the host's;
- a read-only disk answers writes with VIRTIO_BLK_S_IOERR and stays intact;
- the same with VHDX and VHD images (the disk library behind virtio-blk),
  checked against qemu-img, a peer no one here wrote;
- a guest posting malformed rings puts that disk into DEVICE_NEEDS_RESET
  with a log line while the worker and its other devices keep serving."""
import hashlib
import os
import subprocess
import time

import pytest

from conftest import require_kvm, which
from vmmlib import Vmm, guest_ram_digest

MiB = 1024 * 1024


def run_guest(vmm_bin, testguest, tmp_path, cmdline, disks, cpus=1, timeout=120, name="vm"):
    """Boots the guest with the disks; returns (exit status, results dict,
    Vmm) after it powered off."""
    require_kvm()
    extra = []
    for d in disks:
        extra += ["--disk", d]
    vm = Vmm(vmm_bin, testguest, tmp_path / name, cmdline=cmdline, cpus=cpus, extra=extra)
    with vm:
        status = vm.wait_exit(timeout)
        res = {}
        for k, v in vm.results():
            res[k] = v
        return status, res, vm


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(MiB), b""):
            h.update(chunk)
    return h.hexdigest()


def random_file(path, size):
    with open(path, "wb") as f:
        f.write(os.urandom(size))


def test_guest_fills_disk_host_reads_it(vmm_bin, testguest, tmp_path):
    img = tmp_path / "fill.raw"
    with open(img, "wb") as f:
        f.truncate(8 * MiB)
    status, r, vm = run_guest(vmm_bin, testguest, tmp_path, "blkfill=165", ["path=%s" % img])
    assert status == 0, vm.tails()
    assert r.get("blkfill") == "ok", vm.tails()
    assert r.get("blk_capacity") == str(8 * MiB)
    data = img.read_bytes()
    assert len(data) == 8 * MiB
    assert data.count(165) == len(data), "bytes other than 165 in the file"


def test_host_writes_guest_reads_back(vmm_bin, testguest, tmp_path):
    img = tmp_path / "sum.raw"
    random_file(img, 6 * MiB + 512 * 3)  # not a round size
    status, r, vm = run_guest(vmm_bin, testguest, tmp_path, "blksum", ["path=%s" % img])
    assert status == 0, vm.tails()
    assert r.get("blk_sha256") == sha256_file(img), vm.tails()


def test_multiqueue_two_vcpus(vmm_bin, testguest, tmp_path):
    img = tmp_path / "mq.raw"
    random_file(img, 4 * MiB)
    status, r, vm = run_guest(vmm_bin, testguest, tmp_path, "blksum", ["path=%s" % img],
                              cpus=2)
    assert status == 0, vm.tails()
    assert "2 queues" in vm.stderr(), vm.stderr()
    assert r.get("blk_sha256") == sha256_file(img)


def test_read_only_disk_refuses_writes(vmm_bin, testguest, tmp_path):
    img = tmp_path / "ro.raw"
    random_file(img, 2 * MiB)
    before = sha256_file(img)
    status, r, vm = run_guest(vmm_bin, testguest, tmp_path, "blkro",
                              ["path=%s,readonly" % img])
    assert status == 0, vm.tails()
    assert r.get("blk_readonly") == "1", vm.tails()  # VIRTIO_BLK_F_RO offered
    assert r.get("blk_read_status") == "0", vm.tails()
    assert r.get("blk_write_status") == "1", vm.tails()  # VIRTIO_BLK_S_IOERR
    assert sha256_file(img) == before


def test_direct_io_and_serial_options(vmm_bin, testguest, tmp_path):
    img = tmp_path / "direct.raw"
    random_file(img, 4 * MiB)
    status, r, vm = run_guest(vmm_bin, testguest, tmp_path, "blksum",
                              ["path=%s,direct,serial=CLOISON-SN-01" % img])
    assert status == 0, vm.tails()
    assert "O_DIRECT" in vm.stderr()
    assert r.get("blk_sha256") == sha256_file(img)


def qemu_img():
    q = which("qemu-img")
    if not q:
        pytest.skip("qemu-img is not installed (Debian package qemu-utils)")
    return q


@pytest.mark.parametrize("fmt,qfmt", [("vhdx", "vhdx"), ("vhd", "vpc")])
def test_image_formats_both_ways(vmm_bin, testguest, tmp_path, fmt, qfmt):
    """A VHDX/VHD image made by qemu-img from random data: the guest's sum
    matches; then the guest fills it and qemu-img reads back the fill."""
    q = qemu_img()
    raw = tmp_path / "src.raw"
    random_file(raw, 8 * MiB)
    img = tmp_path / ("disk." + fmt)
    opts = ["-o", "subformat=dynamic"]
    if fmt == "vhd":
        opts = ["-o", "subformat=dynamic,force_size=on"]
    subprocess.run([q, "convert", "-f", "raw", "-O", qfmt] + opts + [str(raw), str(img)],
                   check=True)
    status, r, vm = run_guest(vmm_bin, testguest, tmp_path, "blksum", ["path=%s" % img],
                              name="sum")
    assert status == 0, vm.tails()
    assert fmt in vm.stderr().lower(), vm.stderr()
    assert r.get("blk_capacity") == str(8 * MiB), vm.tails()
    assert r.get("blk_sha256") == sha256_file(raw), vm.tails()

    status, r, vm = run_guest(vmm_bin, testguest, tmp_path, "blkfill=90", ["path=%s" % img],
                              name="fill")
    assert status == 0, vm.tails()
    assert r.get("blkfill") == "ok", vm.tails()
    out = tmp_path / "back.raw"
    subprocess.run([q, "convert", "-f", qfmt, "-O", "raw", str(img), str(out)], check=True)
    data = out.read_bytes()
    assert len(data) == 8 * MiB
    assert data.count(90) == len(data)
    if fmt == "vhdx":  # qemu-img cannot check VHD
        chk = subprocess.run([q, "check", "-f", qfmt, str(img)], capture_output=True, text=True)
        assert chk.returncode == 0, chk.stdout + chk.stderr


def test_read_only_vhdx(vmm_bin, testguest, tmp_path):
    q = qemu_img()
    img = tmp_path / "ro.vhdx"
    subprocess.run([q, "create", "-f", "vhdx", str(img), "4M"], check=True, capture_output=True)
    before = sha256_file(img)
    status, r, vm = run_guest(vmm_bin, testguest, tmp_path, "blkro",
                              ["path=%s,readonly" % img])
    assert status == 0, vm.tails()
    assert r.get("blk_write_status") == "1", vm.tails()
    assert sha256_file(img) == before


def test_bad_disk_specs_are_usage_errors(vmm_bin, testguest, tmp_path):
    for spec in ["readonly", "path=/x,bogus", "path=/x,serial=" + "s" * 21]:
        p = subprocess.run([str(vmm_bin), "--kernel", str(testguest), "--disk", spec],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 2, (spec, p.stderr)
        assert "--disk" in p.stderr


def test_missing_image_is_a_vmm_error(vmm_bin, testguest, tmp_path):
    require_kvm()
    missing = tmp_path / "nope.raw"
    p = subprocess.run([str(vmm_bin), "--kernel", str(testguest), "--serial", "none",
                        "--disk", "path=%s" % missing], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 1, p.stderr
    assert str(missing) in p.stderr


def test_hostile_guest_marks_device_others_keep_serving(vmm_bin, testguest, tmp_path):
    """Malformed chains on disk 0: each step must leave that device in
    DEVICE_NEEDS_RESET (status bit 0x40) without completing the request,
    the worker must log why, and the second disk and the rng must keep
    serving; afterwards the same worker still reads disk 1 correctly."""
    bad = tmp_path / "bad.raw"
    good = tmp_path / "good.raw"
    random_file(bad, 1 * MiB)
    random_file(good, 1 * MiB)
    status, r, vm = run_guest(vmm_bin, testguest, tmp_path, "hostile=blk",
                              ["path=%s" % bad, "path=%s" % good])
    assert status == 0, vm.tails()
    assert r.get("hostile_done") == "1", vm.tails()
    assert r.get("hostile_other_baseline_ok") == "1", vm.tails()
    for step in ("loop", "badaddr", "overlong", "badidx"):
        assert r.get("hostile_%s_needs_reset" % step) == "1", (step, vm.tails())
        assert r.get("hostile_%s_used" % step) == "0", (step, vm.tails())
        assert r.get("hostile_%s_other_ok" % step) == "1", (step, vm.tails())
    err = vm.stderr()
    assert err.count("needs a reset") >= 4, err
    # The loop step's chain comes back to its readable head after writable
    # descriptors: whichever rule trips first, the log names it.
    assert "longer than the queue size" in err or "readable descriptor after a writable" in err
    for words in ("outside guest RAM", "available index jumped"):
        assert words in err, (words, err)


def _mtime_changes(path, within):
    """True once the file's mtime moves within `within` seconds: the guest
    is writing it now."""
    first = os.stat(path).st_mtime_ns
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        time.sleep(0.02)
        if os.stat(path).st_mtime_ns != first:
            return True
    return False


def test_pause_resume_and_reset_during_io(vmm_bin, testguest, tmp_path):
    """Pause with the guest's writes in flight: once the pause is answered
    the file is not written again until resume (devices quiesced, vCPUs
    stopped). Resume: the writes go on. Then a hard reset while the guest
    is still hammering the disk: the rebooted guest finds the disk working
    (its second run finishes without errors) and the file holds only what
    the guest wrote."""
    require_kvm()
    img = tmp_path / "busy.raw"
    with open(img, "wb") as f:
        f.truncate(16 * MiB)
    vm = Vmm(vmm_bin, testguest, tmp_path / "vm", cmdline="bs=4K qd=16 secs=10 blkbench=randwrite",
             memory=256, extra=["--disk", "path=%s" % img])
    with vm:
        ctl = vm.control()
        vm.wait_result("boot")
        assert _mtime_changes(img, 5), "the guest's writes never reached the file"
        assert ctl.request("pause")["ok"]
        ctl.wait_event(lambda e: e == {"event": "state", "state": "paused"})
        st = ctl.request("status")["result"]
        assert st["state"] == "paused"
        frozen = os.stat(img).st_mtime_ns
        disk = sha256_file(img)
        ram = guest_ram_digest(vm.proc.pid, 256 * MiB)
        serial = len(vm.serial())
        time.sleep(2.5)
        assert os.stat(img).st_mtime_ns == frozen, "the disk was written while paused"
        assert sha256_file(img) == disk, "the disk's bytes changed while paused"
        assert guest_ram_digest(vm.proc.pid, 256 * MiB) == ram, "guest RAM changed while paused"
        assert len(vm.serial()) == serial, "the guest ran while paused"
        paused_st = ctl.request("status")["result"]
        assert paused_st["interrupts"] == st["interrupts"], \
            "interrupts raised while paused: %r then %r" % (st["interrupts"], paused_st["interrupts"])
        assert ctl.request("resume")["ok"]
        assert _mtime_changes(img, 3), "the writes did not go on after resume"
        assert ctl.request("reset")["ok"]
        assert vm.wait_exit(120) == 0, vm.tails()
        # The first run was cut short by the reset; the second one completes.
        assert vm.result_values("boot") == ["ok", "ok"], vm.tails()
        assert vm.result_values("blk_errors") == ["0"], vm.tails()
        assert "needs a reset" not in vm.stderr(), vm.stderr()
    data = img.read_bytes()
    assert set(data) <= {0, 0xa5}, "bytes the guest never wrote"
    assert data.count(0xa5) > 0


def test_disk_works_again_after_in_place_reset(vmm_bin, testguest, tmp_path):
    """An in-place reset puts PCI config space back to power-on (BARs,
    command register, MSI-X off and masked) before the device models
    reset: the rebooted guest, which probes the disk from scratch,
    reads it whole and gets the same SHA-256 as before and as the host."""
    require_kvm()
    img = tmp_path / "twice.raw"
    random_file(img, 2 * MiB + 512 * 5)
    want = sha256_file(img)
    vm = Vmm(vmm_bin, testguest, tmp_path / "vm", cmdline="blksum run=serve", cpus=2,
             extra=["--disk", "path=%s" % img])
    with vm:
        ctl = vm.control()
        vm.wait_result("blk_sha256", 60)
        assert ctl.request("reset")["ok"] is True
        vm.wait_result("blk_sha256", 60, count=2)
        assert vm.result_values("boot") == ["ok", "ok"], vm.tails()
        assert vm.result_values("blk_sha256") == [want, want], vm.tails()
        ctl.request("poweroff")
        assert vm.wait_exit(30) == 0, vm.tails()
