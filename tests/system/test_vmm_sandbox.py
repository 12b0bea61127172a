"""cloison-vmm --jail (docs/sandbox.md, issue 14): the worker runs as PID 1
of its own PID namespace, in new mount, IPC, UTS and network namespaces, on
an empty root, unprivileged, without capabilities, with no_new_privs and
seccomp allow-lists; a forbidden system call kills it with SIGSYS; it
cannot open host files; and the test guest's devices work inside.

The debug-* control commands exist in test builds only (-Dtest_hooks)."""
import os
import signal
import subprocess
import time

import pytest

from conftest import require_kvm, require_root, run
from netns_util import netns_or_skip
from vmmlib import Vmm

MiB = 1024 * 1024
NAMESPACES = ("mnt", "pid", "ipc", "uts", "net")


def jailed(vmm_bin, testguest, workdir, cmdline="run=serve", extra=(), **kw):
    require_kvm()
    require_root()
    return Vmm(vmm_bin, testguest, workdir, cmdline=cmdline, extra=["--jail"] + list(extra),
               **kw)


def worker_pid(vm, pidfile):
    """The jailed worker's pid (as this namespace sees it) from --pidfile,
    which the supervisor writes once the VM runs."""
    text = vm.wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 30,
                       "the pidfile")
    return int(text)


def status_fields(pid):
    fields = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            fields[k] = v.strip()
    return fields


def test_jailed_worker_is_unprivileged_filtered_and_namespaced(vmm_bin, cli_bin, testguest,
                                                              tmp_path):
    pidfile = tmp_path / "vm.pid"
    vhdx = tmp_path / "d.vhdx"
    make_vhdx(cli_bin, vhdx, "16M")
    with jailed(vmm_bin, testguest, tmp_path / "vm", pidfile=pidfile, memory="1G",
                extra=["--disk", "path=%s" % vhdx]) as vm:
        vm.wait_result("boot")
        pid = worker_pid(vm, pidfile)
        assert pid != vm.proc.pid  # the supervisor forked it
        st = status_fields(pid)
        uids = st["Uid"].split()
        assert uids == ["900000"] * 4, st["Uid"]
        assert st["Gid"].split() == ["900000"] * 4, st["Gid"]
        assert st["CapEff"] == "0000000000000000"
        assert st["CapPrm"] == "0000000000000000"
        assert st["CapBnd"] == "0000000000000000"
        assert st["NoNewPrivs"] == "1"
        assert st["Seccomp"] == "2"
        # PID 1 of its own namespace.
        assert st["NSpid"].split() == [str(pid), "1"], st["NSpid"]
        for ns in NAMESPACES:
            mine = os.readlink("/proc/self/ns/%s" % ns)
            theirs = os.readlink("/proc/%d/ns/%s" % (pid, ns))
            assert mine != theirs, (ns, mine, theirs)
        # Every thread is filtered and unprivileged, not only the main one;
        # the main thread, each vCPU, the event loop and the VHDX disk's
        # threads (made before the jail, narrowed when it went up) carry
        # their own list on top of the base filter.
        narrowed = disk_threads = 0
        for tid in os.listdir("/proc/%d/task" % pid):
            t = status_fields(int(tid))
            assert t["Seccomp"] == "2" and t["CapEff"] == "0000000000000000", (tid, t)
            assert t["Uid"].split()[0] == "900000"
            if t["Name"] in ("vcpu0", "disk-io") or int(tid) == pid:
                assert t["Seccomp_filters"] == "2", (tid, t)
            narrowed += t["Seccomp_filters"] == "2"
            disk_threads += t["Name"] == "disk-io"
        assert disk_threads == 4
        assert narrowed >= 3 + disk_threads  # main, vcpu0, event loop, disk threads
        with open("/proc/%d/limits" % pid) as f:
            limits = f.read()
        assert "Max core file size        0 " in limits, limits
        # Address space: what is mapped (guest RAM, 1 GiB here, included)
        # plus a bounded headroom (a sanitizer build maps terabytes of
        # shadow, so the bound is relative to VmSize).
        as_limit = [int(l.split()[3]) for l in limits.splitlines()
                    if l.startswith("Max address space")][0]
        vm_size = int(status_fields(pid)["VmSize"].split()[0]) * 1024
        assert as_limit > 1024 * MiB and 0 < as_limit - vm_size < 1024 * MiB, (
            as_limit, vm_size)
        nofile = [int(l.split()[3]) for l in limits.splitlines()
                  if l.startswith("Max open files")][0]
        assert nofile < 1024, limits
        ctl = vm.control()
        assert ctl.request("poweroff")["ok"] is True
        assert vm.wait_exit(30) == 0
    # The supervisor removes what the jailed worker cannot reach by name.
    assert not pidfile.exists()
    assert not os.path.exists(vm.control_path)


def test_jail_uid_and_gid_options(vmm_bin, testguest, tmp_path):
    pidfile = tmp_path / "vm.pid"
    with jailed(vmm_bin, testguest, tmp_path / "vm", pidfile=pidfile,
                extra=["--jail-uid", "123457", "--jail-gid", "123458"]) as vm:
        st = status_fields(worker_pid(vm, pidfile))
        assert st["Uid"].split()[0] == "123457" and st["Gid"].split()[0] == "123458"


def test_execve_kills_the_jailed_worker_with_sigsys(vmm_bin, testguest, tmp_path):
    with jailed(vmm_bin, testguest, tmp_path / "vm") as vm:
        vm.wait_result("boot")
        ctl = vm.control()
        ctl.send_raw('{"id": 1, "cmd": "debug-execve"}\n')
        status = vm.wait_exit(30)
        assert status == -signal.SIGSYS, (status, vm.tails())
        err = vm.stderr()
        assert "killed by signal SYS" in err
        assert "seccomp allow-list" in err
        # The supervisor names the call from the kernel's audit line when
        # the kernel log has it (root, no auditd taking the lines).
        if os.access("/dev/kmsg", os.R_OK) and not os.path.exists("/run/auditd.pid"):
            assert "system call execve (59) is outside" in err, err


def test_forbidden_ioctl_kills_the_jailed_worker(vmm_bin, testguest, tmp_path):
    """ioctl is filtered by request number: the event loop may make the
    KVM and tap calls its devices need, not TIOCSTI (debug-ioctl)."""
    with jailed(vmm_bin, testguest, tmp_path / "vm") as vm:
        vm.wait_result("boot")
        vm.control().send_raw('{"id": 1, "cmd": "debug-ioctl"}\n')
        status = vm.wait_exit(30)
        assert status == -signal.SIGSYS, (status, vm.tails())
        err = vm.stderr()
        assert "killed by signal SYS" in err and "seccomp allow-list" in err, err
        if os.access("/dev/kmsg", os.R_OK) and not os.path.exists("/run/auditd.pid"):
            assert "system call ioctl (16) is outside" in err, err
    require_kvm()
    with Vmm(vmm_bin, testguest, tmp_path / "free", cmdline="run=serve") as vm:
        r = vm.control().request("debug-ioctl")
        assert r["ok"] is False and "Bad file descriptor" in r["error"]["message"], r
        assert vm.running()


def test_execve_debug_command_answers_unjailed(vmm_bin, testguest, tmp_path):
    """The control for the test above: without the jail the same command
    only fails (the path does not exist) and the worker lives on."""
    require_kvm()
    with Vmm(vmm_bin, testguest, tmp_path / "vm", cmdline="run=serve") as vm:
        ctl = vm.control()
        r = ctl.request("debug-execve")
        assert r["ok"] is False and "No such file" in r["error"]["message"], r
        assert vm.running()


def test_host_files_are_out_of_reach(vmm_bin, testguest, tmp_path):
    require_kvm()
    with Vmm(vmm_bin, testguest, tmp_path / "free", cmdline="run=serve") as vm:
        r = vm.control().request("debug-open-host")
        assert r["ok"] is True and r["result"]["opened"] is True, r
    with jailed(vmm_bin, testguest, tmp_path / "vm") as vm:
        r = vm.control().request("debug-open-host")
        assert r["ok"] is True, r
        assert r["result"]["path"] == "/etc/passwd"
        assert r["result"]["opened"] is False, r
        assert r["result"]["error"] == "No such file or directory", r
        assert vm.running()


def make_vhdx(cli_bin, path, size):
    r = run([cli_bin, "disk", "create", path, "--size", size])
    assert r.returncode == 0, r.stderr


def test_disks_console_rng_work_jailed(vmm_bin, cli_bin, testguest, tmp_path):
    """virtio-blk on a VHDX and a raw file, virtio-console, virtio-rng and
    COM1, all inside the sandbox."""
    vhdx = tmp_path / "d.vhdx"
    raw = tmp_path / "r.raw"
    make_vhdx(cli_bin, vhdx, "16M")
    with open(raw, "wb") as f:
        f.truncate(8 * MiB)
    console = tmp_path / "console.log"
    with jailed(vmm_bin, testguest, tmp_path / "vm", cmdline="rng blkverify", cpus=2,
                extra=["--disk", "path=%s" % vhdx, "--disk", "path=%s" % raw,
                       "--console", "file:%s" % console]) as vm:
        status = vm.wait_exit(120)
        assert status == 0, vm.tails()
        assert vm.result_values("boot") == ["ok"]
        assert vm.result_values("rng_ok") == ["1"], vm.tails()
        assert vm.result_values("blkverify") == ["ok"], vm.tails()
    # The raw disk, through io_uring, jailed: the guest fills it.
    with jailed(vmm_bin, testguest, tmp_path / "vm2", cmdline="blkfill=165",
                extra=["--disk", "path=%s" % raw]) as vm:
        assert vm.wait_exit(120) == 0, vm.tails()
    assert open(raw, "rb").read() == bytes([165]) * (8 * MiB)
    with jailed(vmm_bin, testguest, tmp_path / "vm3", cmdline="console",
                extra=["--console", "file:%s" % console]) as vm:
        vm.wait_result("console_ready")
        vm.wait_for(lambda: b"echoing" in console.read_bytes(), 30, "the console greeting")
        assert vm.control().request("poweroff")["ok"] is True
        assert vm.wait_exit(30) == 0


def test_in_place_reset_reloads_the_kernel_jailed(vmm_bin, testguest, tmp_path):
    """A reset reloads the kernel from its path: the jail bind-mounts it."""
    with jailed(vmm_bin, testguest, tmp_path / "vm") as vm:
        vm.wait_result("boot")
        ctl = vm.control()
        assert ctl.request("reset")["ok"] is True
        vm.wait_result("boot", count=2)
        assert vm.result_values("boot") == ["ok", "ok"]
        assert ctl.request("poweroff")["ok"] is True
        assert vm.wait_exit(30) == 0


def test_sigterm_reaches_the_jailed_worker(vmm_bin, testguest, tmp_path):
    with jailed(vmm_bin, testguest, tmp_path / "vm") as vm:
        vm.wait_result("boot")
        vm.kill(signal.SIGTERM)
        assert vm.wait_exit(30) == 1
        assert "stopped by signal" in vm.stderr()


def test_net_works_jailed(vmm_bin, testguest, tmp_path):
    require_kvm()
    with netns_or_skip("10.202.0") as ns:
        ns.add_tap("tap0")
        vm = jailed(vmm_bin, testguest, tmp_path / "vm", cmdline="ip=10.202.0.2/24 run=serve",
                    extra=["--net", "tap=tap0"])
        ns.wrap(vm)
        with vm:
            vm.wait_result("net_ip", timeout=60)
            r = ns.run(["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.202.0.2"], check=False)
            assert r.returncode == 0, r.stdout + r.stderr + vm.tails()


def test_no_sandbox_is_loud_and_excludes_jail(vmm_bin, testguest, tmp_path):
    require_kvm()
    with Vmm(vmm_bin, testguest, tmp_path / "vm", cmdline="", no_reboot=True,
             extra=["--no-sandbox"]) as vm:
        assert vm.wait_exit(60) == 0, vm.tails()
        assert "WARNING: --no-sandbox" in vm.stderr()
    r = run([vmm_bin, "--kernel", testguest, "--jail", "--no-sandbox"])
    assert r.returncode == 2 and "exclude each other" in r.stderr
    r = run([vmm_bin, "--kernel", testguest, "--jail-uid", "5"])
    assert r.returncode == 2 and "go with --jail" in r.stderr
    r = run([vmm_bin, "--kernel", testguest, "--jail", "--jail-uid", "0"])
    assert r.returncode == 2 and "--jail-uid 0" in r.stderr


def test_hostile_guest_jailed(vmm_bin, testguest, tmp_path):
    """The test guest's hostile virtio-blk driver against a jailed worker:
    the device goes to DEVICE_NEEDS_RESET with a log line (the error paths
    run inside the allow-lists), the other disk keeps serving, and the
    worker powers off normally."""
    bad = tmp_path / "bad.raw"
    good = tmp_path / "good.raw"
    for p in (bad, good):
        with open(p, "wb") as f:
            f.write(os.urandom(MiB))
    with jailed(vmm_bin, testguest, tmp_path / "vm", cmdline="hostile=blk",
                extra=["--disk", "path=%s" % bad, "--disk", "path=%s" % good]) as vm:
        assert vm.wait_exit(120) == 0, vm.tails()
        r = dict(vm.results())
        assert r.get("hostile_done") == "1", vm.tails()
        for step in ("loop", "badaddr", "overlong", "badidx"):
            assert r.get("hostile_%s_needs_reset" % step) == "1", (step, vm.tails())
            assert r.get("hostile_%s_other_ok" % step) == "1", (step, vm.tails())
        assert vm.stderr().count("needs a reset") >= 4, vm.stderr()


def test_one_jailed_worker_dying_leaves_another_running(vmm_bin, testguest, tmp_path):
    """A worker killed by seccomp dies alone: a second jailed VM keeps
    running and still answers on its control socket."""
    with jailed(vmm_bin, testguest, tmp_path / "a") as a, \
            jailed(vmm_bin, testguest, tmp_path / "b") as b:
        a.wait_result("boot")
        b.wait_result("boot")
        a.control().send_raw('{"id": 1, "cmd": "debug-execve"}\n')
        assert a.wait_exit(30) == -signal.SIGSYS
        r = b.control().request("status")
        assert r["ok"] is True and r["result"]["state"] == "running", r


def test_kill_9_of_the_supervisor_ends_the_worker(vmm_bin, testguest, tmp_path):
    """The pid a daemon knows is the supervisor's: a kill -9 there must not
    leave a worker running on, holding its disks."""
    pidfile = tmp_path / "vm.pid"
    with jailed(vmm_bin, testguest, tmp_path / "vm", pidfile=pidfile) as vm:
        vm.wait_result("boot")
        pid = worker_pid(vm, pidfile)
        vm.kill(signal.SIGKILL)
        vm.wait_exit(10)
        deadline = time.monotonic() + 10
        while True:
            try:
                state = status_fields(pid)["State"].split()[0]
            except (FileNotFoundError, ProcessLookupError):
                break
            if state in ("Z", "X"):
                break
            assert time.monotonic() < deadline, "the jailed worker outlived its supervisor"
            time.sleep(0.05)
