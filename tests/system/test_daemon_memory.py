"""Dynamic memory through the real daemon and CLI (issue 12): Hyper-V's
startup, minimum, maximum, buffer and weight. The guest is the test
guest's resident balloon driver (`dynmem=USED[,touch=SIZE]`,
docs/testguest.md): it reports USED bytes in use and follows whatever
target the balancer sets. The worker boots at the maximum with the balloon
holding the rest (docs/decisions.md), so a guest can grow above its
startup memory; what the guest gives up leaves the worker (its RSS, read
from /proc)."""
import json
import os
import time

import pytest

from test_daemon_lib import Daemon, daemon  # noqa: F401 (fixture)

MiB = 1 << 20


def start_daemon(tmp_path, **config):
    state = tmp_path / "state"
    state.mkdir()
    config.setdefault("balancer_interval_ms", 200)
    (state / "cloisond.json").write_text(json.dumps(dict(schema_version=1, **config)))
    return Daemon(state).start()


@pytest.fixture
def fast(tmp_path, kvm):
    d = start_daemon(tmp_path)
    yield d
    d.cleanup()


def rss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def wait_memory(d, name, pred, what, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        vm = d.vm(name)
        if vm["memory_assigned"] is not None and pred(vm):
            return vm
        time.sleep(0.1)
    pytest.fail("VM %s: %s never happened: %s\n%s" % (name, what, d.vm(name), d.log()[-2000:]))


def dyn_vm(d, name, used, startup, minimum, maximum, *extra):
    d.create(name, "dynmem=%dM,touch=%dM" % (used, min(used + 200, startup)), "--memory",
             "%dM" % startup, "--dynamic-memory", "on", "--memory-minimum", "%dM" % minimum,
             "--memory-maximum", "%dM" % maximum, *extra)
    d.ok("vm", "start", name)


def test_demand_plus_buffer_within_minimum_and_maximum(fast):
    d = fast
    dyn_vm(d, "dm", 100, 384, 128, 640)
    vm = d.vm("dm")
    assert (vm["dynamic_memory"], vm["memory"], vm["memory_minimum"], vm["memory_maximum"],
            vm["memory_buffer"], vm["memory_weight"]) == (True, 384 * MiB, 128 * MiB,
                                                          640 * MiB, 20, 50), vm
    # 100 MiB in use + 20 % is below the minimum: the guest gets 128 MiB
    vm = wait_memory(d, "dm", lambda v: v["memory_assigned"] == 128 * MiB, "assigned 128 MiB")
    assert vm["memory_demand"] == 100 * MiB and vm["memory_target"] == 128 * MiB, vm
    # the guest filled 300 MiB at boot; the balloon took all of it back
    # from the worker (the rest of its RSS is its own and the guest's)
    resident = rss(vm["pid"])
    print("worker RSS at 128 MiB assigned: %d MiB" % (resident >> 20))
    assert resident < 300 * MiB - 0.8 * 300 * MiB + 40 * MiB, resident
    out = d.ok("vm", "show", "dm").stdout
    assert "Dynamic memory: on (minimum 128 MiB, maximum 640 MiB, buffer 20%, weight 50)" in out
    assert "Assigned memory: 128 MiB" in out and "Memory demand: 100 MiB" in out, out

    # settings that change while it runs: a higher minimum, then a buffer
    # that takes it above its startup memory, up to the maximum
    d.ok("vm", "set", "dm", "--memory-minimum", "200M")
    wait_memory(d, "dm", lambda v: v["memory_assigned"] == 200 * MiB, "assigned 200 MiB")
    d.ok("vm", "set", "dm", "--memory-buffer", "400")
    wait_memory(d, "dm", lambda v: v["memory_assigned"] == 500 * MiB, "assigned 500 MiB")
    d.ok("vm", "set", "dm", "--memory-buffer", "2000")
    wait_memory(d, "dm", lambda v: v["memory_assigned"] == 640 * MiB, "the maximum")
    d.ok("vm", "stop", "dm", "--turn-off")
    vm = d.vm("dm")
    assert vm["memory_assigned"] is None and vm["memory_demand"] is None, vm


def test_two_guests_under_pressure_give_back_by_weight(tmp_path, kvm):
    # both want 250 MiB + 20 % = 300 MiB; the pool has 500: 100 MiB short
    d = start_daemon(tmp_path, memory_pool=500 * MiB)
    try:
        dyn_vm(d, "heavy", 250, 384, 64, 512, "--memory-weight", "100")
        dyn_vm(d, "light", 250, 384, 64, 512, "--memory-weight", "50")

        def settled(_):
            a, b = d.vm("heavy"), d.vm("light")
            return (a["memory_assigned"] is not None and b["memory_assigned"] is not None and
                    a["memory_assigned"] == a["memory_target"] and
                    b["memory_assigned"] == b["memory_target"] and
                    a["memory_target"] + b["memory_target"] <= 500 * MiB)
        wait_memory(d, "heavy", settled, "both at their targets within the pool")
        a, b = d.vm("heavy")["memory_assigned"], d.vm("light")["memory_assigned"]
        gave_a, gave_b = 300 * MiB - a, 300 * MiB - b
        print("under a 500 MiB pool: weight 100 has %d MiB (gave %d), weight 50 has %d MiB "
              "(gave %d)" % (a >> 20, gave_a >> 20, b >> 20, gave_b >> 20))
        assert a + b >= 495 * MiB, (a, b)
        assert abs(gave_b / gave_a - 2.0) <= 0.3, (gave_a, gave_b)  # 2:1, +-15 %
        # the light one is stopped: the heavy one gets all it wants
        d.ok("vm", "stop", "light", "--turn-off")
        wait_memory(d, "heavy", lambda v: v["memory_assigned"] == 300 * MiB, "300 MiB")
        d.ok("vm", "stop", "heavy", "--turn-off")
    finally:
        d.cleanup()


def test_a_guest_without_a_driver_keeps_its_target(fast):
    """With no balloon driver the guest has all of its maximum, and `vm show`
    says so; the balancer has no demand to go by and leaves the target at
    the startup memory, for a driver that loads later."""
    d = fast
    d.create("nodrv", "count", "--memory", "256M", "--dynamic-memory", "on",
             "--memory-minimum", "64M", "--memory-maximum", "512M")
    d.ok("vm", "start", "nodrv")
    vm = wait_memory(d, "nodrv", lambda v: True, "a balancer round")
    time.sleep(1)
    vm = d.vm("nodrv")
    assert vm["memory_assigned"] == 512 * MiB and vm["memory_demand"] is None, vm
    assert vm["memory_target"] == 256 * MiB, vm
    d.ok("vm", "stop", "nodrv", "--turn-off")


@pytest.mark.parametrize("args,words", [
    (["--memory-buffer", "3"], "--memory-buffer 3: expected a percentage from 5 to 2000"),
    (["--memory-weight", "101"], "--memory-weight 101: expected a weight from 0 to 100"),
    (["--dynamic-memory", "yes"], "--dynamic-memory yes: expected on or off"),
    (["--memory-minimum", "lots"], "expected a size like 512M or 2G, or startup"),
    (["--dynamic-memory", "on", "--memory-minimum", "512M"],
     "the minimum memory (512 MiB) cannot be above the startup memory (128 MiB)"),
    (["--dynamic-memory", "on", "--memory-maximum", "64M"],
     "the maximum memory (64 MiB) cannot be below the startup memory (128 MiB)"),
    (["--memory-minimum", "16M"], "between"),
])
def test_bad_memory_settings_are_refused_and_change_nothing(daemon, args, words):
    d = daemon
    d.create("bad", "")
    keys = ("dynamic_memory", "memory_minimum", "memory_maximum", "memory_buffer",
            "memory_weight")
    before = [d.vm("bad")[k] for k in keys]
    r = d.cli("vm", "set", "bad", *args)
    assert r.returncode != 0 and words in r.stderr, r.stderr
    assert [d.vm("bad")[k] for k in keys] == before == [False, None, None, 20, 50]


def test_api_and_running_vm_refusals(fast):
    d = fast
    st, body = d.http("PATCH", "/v1/vms/none", {"memory_weight": 5})
    assert st == 404, (st, body)
    d.create("run", "count", "--dynamic-memory", "on", "--memory-maximum", "256M")
    for patch, words in [({"memory_weight": "high"}, "'memory_weight' must be a whole number"),
                         ({"memory_buffer": 1}, "'memory_buffer' must be a whole percentage"),
                         ({"dynamic_memory": 1}, "'dynamic_memory' must be true or false"),
                         ({"memory_maximum": -5}, "'memory_maximum'")]:
        st, body = d.http("PATCH", "/v1/vms/run", patch)
        assert st == 400 and words in json.dumps(body), (patch, st, body)
    d.ok("vm", "start", "run")
    # turning dynamic memory off, or a new maximum, needs the VM off
    for args in (["--dynamic-memory", "off"], ["--memory-maximum", "1G"]):
        r = d.cli("vm", "set", "run", *args)
        assert r.returncode != 0 and "running" in r.stderr, r.stderr
    vm = d.vm("run")
    assert vm["dynamic_memory"] is True and vm["memory_maximum"] == 256 * MiB, vm
    d.ok("vm", "stop", "run", "--turn-off")


def test_bad_daemon_settings_stop_the_start(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "cloisond.json").write_text(json.dumps({"balancer_interval_ms": 5}))
    d = Daemon(state)
    with pytest.raises(BaseException):
        d.start()
    assert "'balancer_interval_ms' must be 100-60000 milliseconds" in d.log(), d.log()
    d.cleanup()
    assert not os.path.exists(d.socket)
