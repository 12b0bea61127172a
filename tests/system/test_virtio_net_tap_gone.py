"""A tap deleted under a running VM (`ip link del` in the namespace).

Reads of a deleted tap fail with EBADFD and epoll reports EPOLLERR on it
whatever is watched; the worker used to retry such reads forever with the
device lock held, on its only event-loop thread. Now it must:

- keep answering its control socket;
- not spin: over 2 s no thread but the vCPUs uses most of a core, and
  once the disk bench is over they are nearly idle;
- take the NIC's link down: the guest, which negotiates
  VIRTIO_NET_F_STATUS, reports `RESULT net_link=0` after `net_link=1`;
- keep the other device (a virtio-blk under blkbench) working: the bench
  finishes with operations done and no errors."""
import os
import time

import pytest

from conftest import require_kvm
from netns_util import netns_or_skip
from vmmlib import Vmm

MiB = 1 << 20


@pytest.fixture
def ns():
    require_kvm()
    with netns_or_skip("10.202.0") as n:
        yield n


def thread_cpu(pid):
    """{tid: (name, utime+stime in seconds)} for every thread of pid."""
    hz = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        out[int(tid)] = (name, (int(fields[11]) + int(fields[12])) / hz)
    return out


def check_not_spinning(pid, limit, vm):
    """Over 2 s, no thread but the vCPUs (named vcpuN; they may be busy in
    the guest) used more than limit seconds of CPU."""
    before = thread_cpu(pid)
    time.sleep(2.0)
    after = thread_cpu(pid)
    deltas = {tid: (after[tid][0], after[tid][1] - before[tid][1])
              for tid in after if tid in before}
    for tid, (name, used) in deltas.items():
        if name.startswith("vcpu"):
            continue
        assert used < limit, ("thread %d (%s) used %.2fs of CPU in 2s" % (tid, name, used),
                              deltas, vm.tails())


def test_tap_deleted_under_running_vm(ns, vmm_bin, testguest, tmp_path):
    img = tmp_path / "disk.raw"
    with open(img, "wb") as f:
        f.truncate(16 * MiB)
    ns.add_tap("tapgone")
    vm = Vmm(vmm_bin, testguest, tmp_path / "vm",
             cmdline="ip=10.202.0.2/24 bs=4K qd=4 secs=10 blkbench=randwrite",
             extra=["--net", "tap=tapgone", "--disk", "path=%s" % img])
    ns.wrap(vm)
    with vm:
        vm.wait_result("net_ip", timeout=60)
        assert vm.result_values("net_link") == ["1"], vm.tails()
        ctl = vm.control()
        assert ctl.request("status", timeout=5).get("result"), vm.tails()

        ns.ip("link", "del", "tapgone")
        ns.taps.remove("tapgone")
        time.sleep(0.5)

        # The control socket keeps answering, promptly, several times.
        for _ in range(5):
            t0 = time.monotonic()
            r = ctl.request("status", timeout=3)
            assert "result" in r, (r, vm.tails())
            assert time.monotonic() - t0 < 2.5, vm.tails()
            time.sleep(0.2)

        # No thread spins on the dead tap: while blkbench runs the event
        # loop does disk work too (about half a core here), a spin would
        # be all of it.
        check_not_spinning(vm.proc.pid, 1.7, vm)

        # With the bench over the guest only serves the (dead) NIC: every
        # thread but the vCPUs must be nearly idle (before the fix the event
        # loop thread spun on the tap's EPOLLERR here).
        vm.wait_result("blk_ops", timeout=120)
        check_not_spinning(vm.proc.pid, 0.5, vm)

        # The guest saw the link go down (config change, status bit 0).
        vm.wait_for(lambda: "0" in vm.result_values("net_link"), 60, "net_link=0")
        assert vm.result_values("net_link") == ["1", "0"], vm.tails()

        # The disk kept working throughout.
        assert int(vm.result_values("blk_ops")[-1]) > 0, vm.tails()
        assert vm.result_values("blk_errors") == ["0"], vm.tails()
        assert vm.running(), vm.tails()
        assert "is gone" in vm.stderr(), vm.stderr()
        assert "result" in ctl.request("status", timeout=3)
