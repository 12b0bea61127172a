"""cloisond's guards around the VM lifecycle (issue 16): a differencing
chain shared by two VMs, a daemon that dies while it starts, stops or writes
a VM, a `vm set` that cannot be written, boot files and disks that are not
regular files, memory admission, leftovers after a crash or a remove."""
import os
import signal
import time

from test_daemon_lib import Daemon, daemon  # noqa: F401 (fixture)
from test_disk_cli import disk, ok as disk_ok

CONFLICT = 4


# ---- item 1: the disk-conflict check covers the differencing chain ----

def _chain(tmp_path):
    base = tmp_path / "base.vhdx"
    mid = tmp_path / "mid.avhdx"
    child = tmp_path / "child.avhdx"
    disk_ok("create", base, "--size", "8M")
    disk_ok("create", mid, "--parent", base)
    disk_ok("create", child, "--parent", mid)
    return base, mid, child


def test_parent_of_a_used_disk_is_read_only_for_every_vm(daemon, tmp_path):
    base, mid, child = _chain(tmp_path)
    daemon.create("ca", "run=serve", "--disk", base)
    daemon.create("cd", "run=serve", "--disk", child)
    daemon.create("cr", "run=serve", "--disk", str(base) + ",readonly")
    # ca writes the grandparent of cd's disk: cd may not start.
    daemon.ok("vm", "start", "ca")
    r = daemon.cli("vm", "start", "cd")
    assert r.returncode == CONFLICT, (r.returncode, r.stderr)
    assert "VM 'ca'" in r.stderr and str(base) in r.stderr and "read-only" in r.stderr, r.stderr
    assert daemon.state("cd") == "off"
    daemon.ok("vm", "stop", "ca", "--turn-off")
    # The other way round: cd runs, so nobody may write base (any depth).
    daemon.ok("vm", "start", "cd")
    r = daemon.cli("vm", "start", "ca")
    assert r.returncode == CONFLICT, (r.returncode, r.stderr)
    assert "VM 'cd'" in r.stderr and str(base) in r.stderr, r.stderr
    assert daemon.state("ca") == "off"
    # Reading the parent is fine next to a child that uses it.
    daemon.ok("vm", "start", "cr")
    assert daemon.state("cr") == "running"
    # A VM's chain holds every image: the disk verbs that write refuse.
    for args in (["merge", child], ["merge", mid], ["resize", base, "--size", "16M"],
                 ["compact", mid], ["set-parent", child, mid]):
        r = disk(*args, timeout=20)
        assert r.returncode != 0 and "in use by another process" in r.stderr, (args, r.stderr)
    assert child.exists() and mid.exists()
    daemon.ok("vm", "stop", "cd", "--turn-off")
    daemon.ok("vm", "stop", "cr", "--turn-off")
    # With nothing running the writer may start again.
    daemon.ok("vm", "start", "ca")
    daemon.ok("vm", "stop", "ca", "--turn-off")


def test_chain_conflict_survives_a_daemon_restart(tmp_path, kvm):
    base, mid, child = _chain(tmp_path)
    d = Daemon(tmp_path / "state").start()
    try:
        d.create("ca", "run=serve", "--disk", base)
        d.create("cd", "run=serve", "--disk", child)
        d.ok("vm", "start", "cd")
        d.kill9()
        d.start()
        assert d.state("cd") == "running"
        r = d.cli("vm", "start", "ca")
        assert r.returncode == CONFLICT and "VM 'cd'" in r.stderr, (r.returncode, r.stderr)
    finally:
        d.cleanup()
