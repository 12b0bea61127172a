"""Processor resource controls (issue 12), Hyper-V's "Virtual machine
reserve", "limit" and "relative weight", on this host's cgroups through the
real daemon and CLI. The guest is the test guest spinning in ring 3
(`count idle=poll`), which runs natively and keeps a core busy. CPU time is
read from the worker's /proc/PID/stat (every thread's user and system
time); the worker's pid is the one `vm show` gives."""
import os
import subprocess
import time

import pytest

from test_daemon_lib import Daemon, daemon  # noqa: F401 (fixture)

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def cgroup_dirs(pid):
    """The worker's cgroup per hierarchy, from /proc/PID/cgroup."""
    out = {}
    with open("/proc/%d/cgroup" % pid) as f:
        for line in f:
            _, ctl, path = line.rstrip("\n").split(":", 2)
            out[ctl] = path
    return out


def spin_vm(d, name, *extra):
    d.create(name, "count idle=poll", *extra)
    d.ok("vm", "start", name)
    d.console_until(name, "RESULT count=")
    return d.vm(name)["pid"]


def usage_over(pids, secs):
    before = [cpu_seconds(p) for p in pids]
    t0 = time.monotonic()
    time.sleep(secs)
    wall = time.monotonic() - t0
    return [(cpu_seconds(p) - b) / wall for p, b in zip(pids, before)]


def test_limit_holds_a_spinning_guest_to_its_share(daemon):
    d = daemon
    pid = spin_vm(d, "lim", "--cpu-limit", "25")
    vm = d.vm("lim")
    assert (vm["cpu_limit"], vm["cpu_weight"], vm["cpu_reserve"]) == (25, 100, 0), vm
    groups = cgroup_dirs(pid)
    assert any(p.endswith("/cloison/" + vm["id"]) for p in groups.values()), groups
    [share] = usage_over([pid], 5)
    print("limited to 25 %%: %.1f %% of a core" % (share * 100))
    assert 0.15 < share <= 0.27, "a guest limited to 25 %% used %.1f %% of a core" % (share * 100)
    # Raised while it runs: the cgroup follows at once.
    d.ok("vm", "set", "lim", "--cpu-limit", "60")
    [share] = usage_over([pid], 3)
    print("limited to 60 %%: %.1f %% of a core" % (share * 100))
    assert 0.45 < share <= 0.63, share
    d.ok("vm", "stop", "lim", "--turn-off")


def test_weights_share_one_core_two_to_one(daemon):
    d = daemon
    heavy = spin_vm(d, "w100", "--cpu-weight", "100")
    light = spin_vm(d, "w50", "--cpu-weight", "50")
    # Both on CPU 0, every thread: they compete for that one core.
    for pid in (heavy, light):
        subprocess.run(["taskset", "-a", "-p", "1", str(pid)], check=True,
                       stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    a, b = usage_over([heavy, light], 5)
    print("weights 100 and 50 on one core: %.1f %% and %.1f %%" % (a * 100, b * 100))
    assert a + b > 0.8, "the two guests did not keep the core busy: %.2f + %.2f" % (a, b)
    assert abs(a / b - 2.0) <= 0.2, "weights 100:50 gave %.2f:1" % (a / b)
    d.ok("vm", "stop", "w100", "--turn-off")
    d.ok("vm", "stop", "w50", "--turn-off")


def test_reserve_that_does_not_fit_is_refused(daemon):
    d = daemon
    host = os.cpu_count()
    # One VM reserving 60 % of as many vCPUs as the host has CPUs leaves 40 %.
    # run=serve: the guest stays up until it is stopped.
    d.create("r1", "run=serve", "--cpus", str(host), "--cpu-reserve", "60")
    d.create("r2", "run=serve", "--cpus", str(host), "--cpu-reserve", "50")
    d.ok("vm", "start", "r1")
    r = d.cli("vm", "start", "r2")
    assert r.returncode != 0
    assert "cannot start 'r2'" in r.stderr and "CPU reserve" in r.stderr, r.stderr
    assert "--cpu-reserve" in r.stderr, r.stderr
    assert d.state("r2") == "off"
    # A running VM's reserve is held: raising it past what is left is
    # refused too (60 % of the host is taken; r1 may go to 100, not past).
    d.ok("vm", "set", "r2", "--cpu-reserve", "50")  # off: no check
    d.create("r3", "run=serve", "--cpus", str(host), "--cpu-reserve", "30")
    d.ok("vm", "start", "r3")  # 60 + 30 fits
    r = d.cli("vm", "set", "r3", "--cpu-reserve", "41")
    assert r.returncode != 0, r.stdout
    assert "cannot raise the CPU reserve of running VM 'r3'" in r.stderr, r.stderr
    assert d.vm("r3")["cpu_reserve"] == 30
    d.ok("vm", "set", "r3", "--cpu-reserve", "40")  # exactly the host: fits
    d.ok("vm", "set", "r3", "--cpu-reserve", "10")  # lowering always does
    d.ok("vm", "stop", "r3", "--turn-off")
    # Once the first one stops, it fits.
    d.ok("vm", "stop", "r1", "--turn-off")
    d.ok("vm", "start", "r2")
    d.ok("vm", "stop", "r2", "--turn-off")


@pytest.mark.parametrize("args,words", [
    (["--cpu-limit", "0"], "--cpu-limit 0"),
    (["--cpu-limit", "101"], "percentage"),
    (["--cpu-weight", "0"], "relative weight"),
    (["--cpu-weight", "10001"], "relative weight"),
    (["--cpu-reserve", "x"], "--cpu-reserve x"),
    (["--cpu-reserve", "80", "--cpu-limit", "50"], "cannot be above the CPU limit"),
])
def test_bad_settings_are_refused_and_change_nothing(daemon, args, words):
    d = daemon
    d.create("bad", "")
    before = d.vm("bad")
    r = d.cli("vm", "set", "bad", *args)
    assert r.returncode != 0 and words in r.stderr, r.stderr
    after = d.vm("bad")
    assert [after[k] for k in ("cpu_reserve", "cpu_limit", "cpu_weight")] == \
        [before[k] for k in ("cpu_reserve", "cpu_limit", "cpu_weight")] == [0, 100, 100]
