"""Saved state through the worker: control "save" writes guest memory and
the state of KVM, every vCPU and every device; `cloison-vmm --restore`
goes on from it. The test guest proves it: its counting loop continues
where it stopped, and a damaged or foreign state file is refused with an
error while the files stay as they were."""
import hashlib
import os
import struct
import subprocess

import pytest

from vmmlib import Vmm

pytestmark = pytest.mark.usefixtures("kvm")


def counts(vm):
    return [int(v) for v in vm.result_values("count")]


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def save(vm, state_dir):
    ctl = vm.control()
    r = ctl.request("save", path=str(state_dir), timeout=120)
    assert r["ok"] is True, r
    assert vm.wait_exit(60) == 5, vm.tails()
    return r["result"]


@pytest.mark.parametrize("cpus,memory", [(1, "256M"), (2, "384M"), (4, "256M"), (1, "5G")],
                         ids=["1cpu", "2cpu", "4cpu", "above-4g"])
def test_counting_goes_on_after_restore(vmm_bin, testguest, tmp_path, cpus, memory):
    state = tmp_path / "state"
    opts = dict(cmdline="count", cpus=cpus, memory=memory)
    with Vmm(vmm_bin, testguest, tmp_path / "a", **opts) as vm:
        vm.wait_result("count", 60, count=3)
        res = save(vm, state)
        before = counts(vm)
    assert res["memory_bytes"] == int(memory[:-1]) << (30 if memory.endswith("G") else 20)
    # untouched RAM is not written: a 5 GiB guest's save is mostly holes
    assert res["data_bytes"] < res["memory_bytes"]
    assert os.path.exists(state / "state.bin")
    assert [p.name for p in state.iterdir() if p.name.startswith("memory-")], list(state.iterdir())

    with Vmm(vmm_bin, testguest, tmp_path / "b", extra=["--restore", state], **opts) as vm:
        vm.wait_result("count", 60, count=3)
        after = counts(vm)
        ctl = vm.control()
        assert ctl.request("status")["result"]["state"] == "running"
        ctl.request("poweroff")
        assert vm.wait_exit(30) == 0, vm.tails()
    # the restored guest did not boot again: its first count follows the
    # last one before the save (the loop may have advanced by the one that
    # was being printed)
    assert "boot" not in [k for k, _ in vm.results()], vm.tails()
    assert after[0] in (before[-1] + 1, before[-1] + 2), (before, after)
    assert after == list(range(after[0], after[0] + len(after))), after


def test_memory_pattern_verifies_after_restore(vmm_bin, testguest, tmp_path):
    """dirty= keeps rewriting 32 MiB with (address, pass) and checks every
    page still holds what it wrote the pass before: across a save and a
    restore, no page went back in time."""
    state = tmp_path / "state"
    opts = dict(cmdline="dirty=32M", cpus=2, memory="256M")
    with Vmm(vmm_bin, testguest, tmp_path / "a", **opts) as vm:
        vm.wait_result("dirty_passes", 60, count=2)
        save(vm, state)
        assert not vm.result_values("dirty_errors"), vm.tails()
    with Vmm(vmm_bin, testguest, tmp_path / "b", extra=["--restore", state], **opts) as vm:
        vm.wait_result("dirty_passes", 60, count=3)
        assert not vm.result_values("dirty_errors"), vm.tails()
        vm.control().request("poweroff")
        assert vm.wait_exit(30) == 0, vm.tails()


def ram_mapping(pid, size):
    """The permissions and file of the worker's guest-RAM mapping of size
    bytes (the low region), from /proc/PID/maps."""
    with open("/proc/%d/maps" % pid) as f:
        for line in f:
            parts = line.split(None, 5)
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if hi - lo == size:
                return parts[1], parts[5].strip() if len(parts) > 5 else ""
    raise AssertionError("no guest-RAM mapping of %d bytes" % size)


def test_lazy_restore_maps_the_file_and_saves_what_the_guest_wrote(vmm_bin, testguest,
                                                                    tmp_path):
    """A lazy restore (the default) maps the memory file copy-on-write; the
    guest goes on rewriting its 32 MiB, and a save of that lazily restored
    VM holds both the pages it copied and the ones it never touched: the
    next restore (eager, then lazy again) still verifies every page, and a
    reset gives the VM its own RAM back and boots."""
    s1, s2, s3 = tmp_path / "s1", tmp_path / "s2", tmp_path / "s3"
    opts = dict(cmdline="dirty=32M", cpus=2, memory="256M")
    with Vmm(vmm_bin, testguest, tmp_path / "a", **opts) as vm:
        vm.wait_result("dirty_passes", 60, count=2)
        save(vm, s1)
    [mem1] = [p for p in s1.iterdir() if p.name.startswith("memory-")]
    with Vmm(vmm_bin, testguest, tmp_path / "b", extra=["--restore", s1], **opts) as vm:
        vm.wait_result("dirty_passes", 60, count=2)
        perms, path = ram_mapping(vm.proc.pid, 256 << 20)
        assert perms == "rw-p" and path == str(mem1), (perms, path)
        res = save(vm, s2)
        assert not vm.result_values("dirty_errors"), vm.tails()
    assert res["data_bytes"] >= 32 << 20, res
    s1_bytes = mem1.read_bytes()
    with Vmm(vmm_bin, testguest, tmp_path / "c",
             extra=["--restore", s2, "--restore-memory", "eager"], **opts) as vm:
        vm.wait_result("dirty_passes", 60, count=2)
        perms, _ = ram_mapping(vm.proc.pid, 256 << 20)
        assert perms == "rw-s", perms
        assert not vm.result_values("dirty_errors"), vm.tails()
        save(vm, s3)
    # the lazily mapped file was never written
    assert mem1.read_bytes() == s1_bytes
    with Vmm(vmm_bin, testguest, tmp_path / "d", extra=["--restore", s3], **opts) as vm:
        vm.wait_result("dirty_passes", 60, count=2)
        assert not vm.result_values("dirty_errors"), vm.tails()
        ctl = vm.control()
        assert ctl.request("reset")["ok"] is True
        vm.wait_result("boot", 30)
        perms, path = ram_mapping(vm.proc.pid, 256 << 20)
        assert perms == "rw-s" and not path.startswith(str(s3)), (perms, path)
        vm.wait_result("dirty_passes", 60, count=3)
        assert not vm.result_values("dirty_errors"), vm.tails()
        ctl.request("poweroff")
        assert vm.wait_exit(30) == 0, vm.tails()


def test_restore_memory_option_is_checked(vmm_bin, testguest, tmp_path):
    for args, words in [(["--restore", tmp_path, "--restore-memory", "later"], "lazy or eager"),
                        (["--restore-memory", "eager"], "goes with --restore")]:
        r = subprocess.run([vmm_bin, "--kernel", testguest] + [str(a) for a in args],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 2 and words in r.stderr, (args, r.returncode, r.stderr)


def test_disk_writes_in_flight_complete_after_restore(vmm_bin, testguest, tmp_path):
    """A save in the middle of a random-write run: the requests in flight
    are finished before the state is taken, and the restored guest's run
    completes without an error on the same disk."""
    img = tmp_path / "d.raw"
    with open(img, "wb") as f:
        f.truncate(16 << 20)
    state = tmp_path / "state"
    opts = dict(cmdline="bs=4K qd=16 secs=6 blkbench=randwrite", memory="256M",
                extra=["--disk", "path=%s" % img])
    with Vmm(vmm_bin, testguest, tmp_path / "a", **opts) as vm:
        vm.wait_result("boot")
        first = os.stat(img).st_mtime_ns
        vm.wait_for(lambda: os.stat(img).st_mtime_ns != first, 10, "the guest's writes")
        save(vm, state)
        assert not vm.result_values("blk_ops"), "the run ended before the save"
    opts["extra"] = opts["extra"] + ["--restore", state]
    with Vmm(vmm_bin, testguest, tmp_path / "b", **opts) as vm:
        # the guest finishes its run and powers off by itself
        assert vm.wait_exit(60) == 0, vm.tails()
        assert vm.result_values("blk_errors") == ["0"], vm.tails()
        assert int(vm.result_values("blk_ops")[0]) > 0
    data = img.read_bytes()
    assert set(data) <= {0, 0xa5}, "bytes the guest never wrote"


def test_bad_state_refused_and_files_kept(vmm_bin, testguest, tmp_path):
    state = tmp_path / "state"
    with Vmm(vmm_bin, testguest, tmp_path / "a", cmdline="count", memory="256M") as vm:
        vm.wait_result("count", 60, count=2)
        save(vm, state)
    files = {p.name: digest(p) for p in state.iterdir()}
    sb = state / "state.bin"
    good = sb.read_bytes()

    def restore(*extra, memory="256M", cpus=None):
        vm = Vmm(vmm_bin, testguest, tmp_path / "b", cmdline="count", memory=memory,
                 cpus=cpus, extra=["--restore", state] + list(extra))
        with vm:
            status = vm.wait_exit(60)
        return status, vm.stderr()

    cases = [
        ("truncated", good[:len(good) // 2], "cut short"),
        ("bit flip", good[:100] + bytes([good[100] ^ 1]) + good[101:], "CRC-32C"),
        ("not a state file", b"hello" * 20, "not a cloison state file"),
        ("newer format", good[:8] + b"\x09" + good[9:], None),
    ]
    for what, data, words in cases:
        sb.write_bytes(data)
        status, err = restore()
        assert status == 1, (what, status, err)
        if words:
            assert words in err, (what, err)
        assert not [k for k in vm_results(tmp_path / "b")], what
    sb.write_bytes(good)
    # state of a VM with another configuration: fingerprint
    status, err = restore(memory="384M")
    assert status == 1 and "another configuration" in err, err
    status, err = restore(cpus=2)
    assert status == 1 and "another configuration" in err, err
    # nothing in the save directory changed
    assert {p.name: digest(p) for p in state.iterdir()} == files


def vm_results(workdir):
    try:
        with open(os.path.join(str(workdir), "serial.log"), errors="replace") as f:
            return [l for l in f.read().splitlines() if l.startswith("RESULT count=")]
    except FileNotFoundError:
        return []


def test_save_needs_a_path_and_a_failed_save_changes_nothing(vmm_bin, testguest, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with Vmm(vmm_bin, testguest, tmp_path / "a", cmdline="count", memory="256M") as vm:
        vm.wait_result("count", 60, count=2)
        ctl = vm.control()
        r = ctl.request("save")
        assert r["ok"] is False and r["error"]["code"] == "bad-request", r
        r = ctl.request("save", path=str(blocker / "sub"))
        assert r["ok"] is False and r["error"]["code"] == "failed", r
        # still running, and still counting
        assert ctl.request("status")["result"]["state"] == "running"
        n = len(counts(vm))
        vm.wait_result("count", 30, count=n + 2)
        ctl.request("poweroff")
        assert vm.wait_exit(30) == 0


def _crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def _sections(d):
    off, n = 32, struct.unpack_from("<I", d, 24)[0]
    for _ in range(n):
        t, inst, ver, ln = struct.unpack_from("<IIII", d, off)
        yield t, inst, off + 16, ln
        off += 16 + ((ln + 7) & ~7)


def test_virtqueue_outside_ram_in_a_state_file_means_needs_reset(vmm_bin, testguest, tmp_path):
    """A state file (CRC made good) whose virtio-blk queue points far
    outside RAM: the restore maps the ring through the same checks as a
    driver's queue_enable, so the device goes to needs-reset and the
    worker and the guest go on."""
    img = tmp_path / "d.raw"
    with open(img, "wb") as f:
        f.truncate(8 << 20)
    state = tmp_path / "state"
    opts = dict(cmdline="blksum count", memory="256M", extra=["--disk", "path=%s" % img])
    with Vmm(vmm_bin, testguest, tmp_path / "a", **opts) as vm:
        vm.wait_result("count", 60, count=2)
        save(vm, state)
    sb = state / "state.bin"
    d = bytearray(sb.read_bytes())
    patched = 0
    for t, inst, at, ln in _sections(d):
        if t != 33:  # STATE_SECTION_VIRTIO
            continue
        q0 = at + 36  # after the transport fields: the first queue
        if d[q0 + 4] == 1:  # enabled
            struct.pack_into("<Q", d, q0 + 5, 0xfff00000000)
            patched += 1
    assert patched, "no virtio device had an enabled queue"
    struct.pack_into("<I", d, len(d) - 4, _crc32c(bytes(d[:-4])))
    sb.write_bytes(bytes(d))
    opts["extra"] = opts["extra"] + ["--restore", state]
    with Vmm(vmm_bin, testguest, tmp_path / "b", **opts) as vm:
        vm.wait_result("count", 60, count=2)
        assert "needs a reset" in vm.stderr(), vm.stderr()
        ctl = vm.control()
        assert ctl.request("status")["result"]["state"] == "running"
        ctl.request("poweroff")
        assert vm.wait_exit(30) == 0, vm.tails()


def test_jailed_worker_saves_into_its_jail_dir_only(vmm_bin, testguest, tmp_path):
    """In --jail the worker sees no host directory but its --jail-dir,
    bind-mounted read-write: it saves there (a path elsewhere is refused
    with an error naming the directory, and the VM runs on), and the state
    restores, in the jail again, where the counting stopped."""
    if os.geteuid() != 0:
        pytest.skip("--jail needs root (it switches to an unprivileged uid)")
    jd = tmp_path / "jail"
    jd.mkdir()
    os.chown(jd, 900000, 900000)
    os.chmod(jd, 0o700)
    state = jd / "Saved"
    jail = ["--jail", "--jail-dir", str(jd)]
    with Vmm(vmm_bin, testguest, tmp_path / "a", cmdline="count", memory="256M",
             extra=jail) as vm:
        vm.wait_result("count", 60, count=2)
        ctl = vm.control()
        r = ctl.request("save", path=str(tmp_path / "elsewhere"))
        assert r["ok"] is False and r["error"]["code"] == "unsupported", r
        assert str(jd) in r["error"]["message"], r
        r = ctl.request("save", path=str(jd) + "/../escape")
        assert r["ok"] is False, r
        assert ctl.request("status")["result"]["state"] == "running"
        assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "escape").exists()
        save(vm, state)
        before = counts(vm)
    assert (state / "state.bin").stat().st_uid == 900000
    with Vmm(vmm_bin, testguest, tmp_path / "b", cmdline="count", memory="256M",
             extra=jail + ["--restore", state]) as vm:
        vm.wait_result("count", 60, count=2)
        after = counts(vm)
        vm.control().request("poweroff")
        assert vm.wait_exit(30) == 0, vm.tails()
    assert after[0] in (before[-1] + 1, before[-1] + 2), (before, after)
