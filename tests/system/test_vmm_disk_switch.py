"""A running worker's disk goes on in a new differencing child, the guest
writing all along (control "disk-share" then "disk-switch", the chain's
files passed as descriptors with SCM_RIGHTS, as a daemon does for a jailed
worker that cannot open paths). This is what live checkpoints and live
merges stand on (docs/vmm.md). The test plays the daemon: while the test
guest's random-write run goes on, it shares the image, makes the child with
`cloison disk create`, opens both files and sends them. After the switch
the parent does not change any more, the child takes the writes, the run
ends without an I/O error, and both images check clean. Bad requests are
refused and leave the disk as it was."""
import hashlib
import os


import pytest

from conftest import binary, run
from vmmlib import Vmm

pytestmark = pytest.mark.usefixtures("kvm")
SIZE = 16 << 20


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def cloison(*args):
    r = run([binary("cloison")] + [str(a) for a in args])
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r


@pytest.mark.parametrize("jail", [False, True], ids=["plain", "jailed"])
def test_disk_goes_on_in_a_new_child_while_the_guest_writes(vmm_bin, testguest, tmp_path, jail):
    """jailed: the worker in --jail (no host path to open, the seccomp
    filters armed) gets the same switch from the descriptors alone."""
    if jail and os.geteuid() != 0:
        pytest.skip("--jail needs root (it switches to an unprivileged uid)")
    base = tmp_path / "base.vhdx"
    child = tmp_path / "base_child.avhdx"
    cloison("disk", "create", base, "--size", str(SIZE), "--type", "dynamic")
    opts = dict(cmdline="bs=4K qd=8 secs=6 blkbench=randwrite", memory="256M",
                extra=["--disk", "path=%s" % base] + (["--jail"] if jail else []))
    with Vmm(vmm_bin, testguest, tmp_path / "a", **opts) as vm:
        vm.wait_result("boot")
        first = os.stat(base).st_mtime_ns
        vm.wait_for(lambda: os.stat(base).st_mtime_ns != first, 10, "the guest's writes")
        ctl = vm.control()
        r = ctl.request("disk-share", disk=0)
        assert r["ok"] is True, r
        # the worker writes on, and a child can be made of the image now
        cloison("disk", "create", child, "--type", "differencing", "--parent", base)
        child_size = os.stat(child).st_size  # empty
        cfd = os.open(child, os.O_RDWR)
        bfd = os.open(base, os.O_RDONLY)
        try:
            r = ctl.request("disk-switch", disk=0, files=[str(child), str(base)],
                            fds=[cfd, bfd])
        finally:
            os.close(cfd)
            os.close(bfd)
        assert r["ok"] is True and r["result"]["top"] == str(child), r
        at_switch = digest(base)
        assert not vm.result_values("blk_ops"), "the run ended before the switch"
        # the guest finishes its run on the child and powers off by itself
        assert vm.wait_exit(60) == 0, vm.tails()
        assert vm.result_values("blk_errors") == ["0"], vm.tails()
        assert int(vm.result_values("blk_ops")[0]) > 0
        assert "now on %s" % child in vm.stderr(), vm.stderr()
    assert digest(base) == at_switch, "the parent was written after the switch"
    assert os.stat(child).st_size > child_size, "the child took no writes"
    for p in (child, base):
        cloison("disk", "check", p)
    raw = tmp_path / "seen.raw"
    cloison("disk", "convert", child, raw)
    assert set(raw.read_bytes()) <= {0, 0xA5}, "bytes the guest never wrote"


def test_bad_switches_are_refused_and_change_nothing(vmm_bin, testguest, tmp_path):
    base = tmp_path / "b.vhdx"
    other = tmp_path / "other.vhdx"
    raw = tmp_path / "r.raw"
    cloison("disk", "create", base, "--size", str(SIZE), "--type", "dynamic")
    cloison("disk", "create", other, "--size", str(2 * SIZE), "--type", "dynamic")
    with open(raw, "wb") as f:
        f.truncate(SIZE)
    opts = dict(cmdline="run=serve", memory="256M",
                extra=["--disk", "path=%s" % base, "--disk", "path=%s" % raw])
    with Vmm(vmm_bin, testguest, tmp_path / "a", **opts) as vm:
        vm.wait_result("boot")
        ctl = vm.control()
        fd = os.open(other, os.O_RDWR)
        try:
            cases = [
                (dict(disk=0, files=[str(other)]), None, "bad-request", "fewer descriptors"),
                (dict(disk=7, files=[str(other)]), [fd], "no-device", "no disk 7"),
                (dict(disk=0, files=[str(other)]), [fd], "failed", "but the disk the guest has"),
                (dict(disk=1, files=[str(other)]), [fd], "unsupported", "raw image"),
                (dict(disk=0, files=[]), None, "bad-request", "disk-switch needs"),
            ]
            for fields, fds, code, words in cases:
                r = ctl.request("disk-switch", fds=fds, **fields)
                assert r["ok"] is False and r["error"]["code"] == code, (fields, r)
                assert words in r["error"]["message"], (fields, r)
        finally:
            os.close(fd)
        r = ctl.request("disk-share", disk=1)
        assert r["ok"] is False and r["error"]["code"] == "unsupported", r
        # the VM is as it was: its disk is the base, writable, and it runs
        assert ctl.request("status")["result"]["state"] == "running"
        ctl.request("poweroff")
        assert vm.wait_exit(30) == 0, vm.tails()
    cloison("disk", "check", base)

