"""cloisond's jobs: a save runs as a job under /v1/jobs with its progress,
`cloison job list|show|wait|cancel` follow it, `vm save --no-wait` returns
its id, and a job that a kill -9 of cloisond interrupts is finished or
rolled back at the next start and shown with the reason. The worker is
held with SIGSTOP so that the daemon is killed while the job surely runs."""
import json
import os
import signal
import time

from test_daemon_lib import Daemon, daemon  # noqa: F401 (fixture)

CONFLICT = 4
MEMORY = 128 << 20


def saved_dir(d, name):
    return os.path.join(d.state_dir, name, "Saved")


def sandbox_saved(d, name):
    return os.path.join(d.state_dir, name, "Sandbox", "Saved")


def job_records(d):
    top = os.path.join(d.state_dir, ".jobs")
    return sorted(f for f in os.listdir(top) if f.endswith(".json"))


def running_vm(d, name):
    d.create(name, "count")
    d.ok("vm", "start", name)
    d.console_until(name, "RESULT count=", times=2)
    return d.vm(name)["pid"]


def test_save_job_progress_list_show_wait(daemon):
    d = daemon
    running_vm(d, "j1")
    job = d.json("vm", "save", "j1", "--no-wait")
    assert job["kind"] == "save" and job["vm"] == "j1", job
    assert job["state"] in ("running", "completed") and job["cancellable"] is False, job
    r = d.ok("job", "wait", job["id"], "--json")
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert events and events[-1]["event"] == "end", events
    end = events[-1]
    assert end["state"] == "completed" and end["percent"] == 100, end
    # The progress is what the worker wrote against the guest's memory.
    assert end["bytes_total"] == MEMORY and end["bytes_done"] == MEMORY, end
    assert all(e["event"] == "progress" and e["state"] == "running" for e in events[:-1])
    pcts = [e["percent"] for e in events]
    assert pcts == sorted(pcts), pcts
    assert d.state("j1") == "saved"
    assert os.path.exists(os.path.join(saved_dir(d, "j1"), "state.bin"))

    listed = d.json("job", "list")
    assert [j["id"] for j in listed] == [job["id"]], listed
    assert d.json("job", "list", "--vm", "j1")[0]["id"] == job["id"]
    assert d.json("job", "list", "--vm", "other") == []
    shown = d.ok("job", "show", job["id"]).stdout
    assert "State:     completed" in shown and "Kind:      save" in shown, shown
    status, body = d.http("GET", "/v1/jobs/" + job["id"])
    assert status == 200 and body["state"] == "completed" and body["error"] is None, body
    # A finished job cannot be cancelled; an unknown one is not found.
    r = d.cli("job", "cancel", job["id"])
    assert r.returncode == CONFLICT and "completed already" in r.stderr, r.stderr
    r = d.cli("job", "show", "00000000-0000-4000-8000-000000000000")
    assert r.returncode == 3 and "no job with id" in r.stderr, r.stderr

    # The synchronous form (what scripts and the old CLI relied on) is a job too.
    d.ok("vm", "start", "j1")
    status, body = d.http("POST", "/v1/vms/j1/save", {"wait": True})
    assert status == 200 and body["state"] == "saved" and body["job"], body
    assert d.json("job", "show", body["job"])["state"] == "completed"
    status, body = d.http("POST", "/v1/vms/j1/save", {"wait": "no"})
    assert status == 400 and "'wait' must be a boolean" in body["error"]["message"], body
    # The history survives a restart of cloisond.
    d.stop()
    d.start()
    assert [j["id"] for j in d.json("job", "list")][1] == job["id"]
    d.ok("vm", "discard-saved-state", "j1")


def test_save_job_refused_or_failed(daemon):
    d = daemon
    d.create("j2", "count")
    # Refused in the VM's state: at once, and no job is made.
    r = d.cli("vm", "save", "j2", "--no-wait")
    assert r.returncode == CONFLICT and "is off" in r.stderr, r.stderr
    assert d.json("job", "list") == []
    d.ok("vm", "start", "j2")
    d.console_until("j2", "RESULT count=")
    with open(saved_dir(d, "j2"), "w") as f:
        f.write("in the way\n")
    # A save that fails is a failed job with the operation's error.
    r = d.cli("vm", "save", "j2")
    assert r.returncode == 1 and "cannot save VM 'j2'" in r.stderr, r.stderr
    job = d.json("job", "list")[0]
    assert job["state"] == "failed" and job["error"]["code"] == "failed", job
    assert "cannot save VM 'j2'" in job["error"]["message"], job
    r = d.cli("job", "wait", job["id"])
    assert r.returncode == 1 and "cannot save VM 'j2'" in r.stderr, r.stderr
    assert d.state("j2") == "running"
    os.unlink(saved_dir(d, "j2"))
    d.ok("vm", "stop", "j2", "--turn-off")


def kill_during_save(d, name):
    """Holds the worker (SIGSTOP) so the save cannot end, starts the save
    job, and kills cloisond while the job runs. Returns the job and the
    worker's pid."""
    pid = running_vm(d, name)
    os.kill(pid, signal.SIGSTOP)
    job = d.json("vm", "save", name, "--no-wait")
    time.sleep(0.5)
    assert d.json("job", "show", job["id"])["state"] == "running"
    with open(os.path.join(d.state_dir, ".jobs", job["id"] + ".json")) as f:
        assert json.load(f)["state"] == "running"
    d.kill9()
    return job, pid


def test_kill9_during_save_rolls_back(tmp_path, kvm):
    """The worker dies too (a host crash): the next cloisond finds the job
    running in its record, removes the partial saved state and shows the
    job failed with the reason. The VM is crashed, its disks as they were,
    and it boots again."""
    d = Daemon(tmp_path / "state").start()
    try:
        job, pid = kill_during_save(d, "k1")
        # The save had begun: the worker's directory for it is made (the
        # sandbox's when the worker is sandboxed).
        partial = [p for p in (saved_dir(d, "k1"), sandbox_saved(d, "k1")) if os.path.isdir(p)]
        assert partial, d.log()
        os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            if not os.path.exists("/proc/%d" % pid):
                break
            time.sleep(0.05)
        d.start()
        j = d.json("job", "show", job["id"])
        assert j["state"] == "failed" and j["error"]["code"] == "interrupted", j
        assert "cloisond stopped" in j["error"]["message"], j
        assert "partial saved state was removed" in j["note"], j
        assert not os.path.exists(saved_dir(d, "k1"))
        assert not os.path.exists(sandbox_saved(d, "k1"))
        assert d.state("k1") == "crashed"
        r = d.cli("job", "wait", job["id"])
        assert r.returncode == 1 and "cloisond stopped" in r.stderr, r.stderr
        d.ok("vm", "start", "k1")
        out = d.console_until("k1", "RESULT boot=")
        assert "RESULT boot=" in out
        d.ok("vm", "stop", "k1", "--turn-off")
    finally:
        d.cleanup()


def test_kill9_during_save_finished_by_worker(kvm):
    """The worker lives on and finishes the save while no daemon runs: the
    next cloisond shows the job completed (with a note) and the VM saved,
    and it goes on from there."""
    import shutil
    import tempfile
    top = tempfile.mkdtemp(prefix="cj")  # short: the control socket's path must fit
    d = Daemon(os.path.join(top, "s")).start()
    try:
        job, pid = kill_during_save(d, "k2")
        os.kill(pid, signal.SIGCONT)
        for _ in range(400):
            if not os.path.exists("/proc/%d" % pid):
                break
            time.sleep(0.05)
        assert not os.path.exists("/proc/%d" % pid)
        d.start()
        j = d.json("job", "show", job["id"])
        assert j["state"] == "completed" and j["error"] is None, j
        assert "worker had finished the save" in j["note"], j
        assert d.state("k2") == "saved"
        d.ok("job", "wait", job["id"])
        assert d.json("vm", "start", "k2")["state"] == "running"
        out = d.console_until("k2", "RESULT count=", times=2)
        assert "RESULT boot=" not in out, out[-2000:]
        d.ok("vm", "stop", "k2", "--turn-off")
        assert len(job_records(d)) == 1
    finally:
        d.cleanup()
        shutil.rmtree(top, ignore_errors=True)


def test_help(daemon):
    r = daemon.cli("job", "--help")
    assert r.returncode == 0 and "usage: cloison job" in r.stdout, r.stderr
    r = daemon.cli("job", "frob")
    assert r.returncode == 2 and "unknown verb 'job frob'" in r.stderr, r.stderr
    r = daemon.cli("job", "show")
    assert r.returncode == 2 and "exactly one job id" in r.stderr, r.stderr
    r = daemon.cli("vm", "save", "--help")
    assert r.returncode == 0 and "--no-wait" in r.stdout, r.stderr


def test_operator_sees_the_jobs_of_their_vms_only(tmp_path, kvm):
    import pytest
    from shutil import which
    from test_daemon_api import TEST_USER, ensure_user
    if os.geteuid() != 0 or not which("useradd") or not which("setpriv"):
        pytest.skip("needs root, useradd and setpriv to create and act as a test user")
    ensure_user(TEST_USER)
    d = Daemon(tmp_path / "state").start()
    try:
        for name in ("mine", "theirs"):
            disk = tmp_path / (name + ".vhdx")
            d.ok("disk", "create", disk, "--size", "4M", "--type", "dynamic")
            extra = ["--disk", disk] + (["--operator", TEST_USER] if name == "mine" else [])
            d.create(name, "count", *extra)
        theirs = d.json("vm", "checkpoint", "theirs")
        r = d.cli("vm", "checkpoint", "mine", "--name", "op", "--json", user=TEST_USER)
        assert r.returncode == 0, r.stderr
        mine = json.loads(r.stdout)
        assert mine["result"]["name"] == "op", mine
        r = d.cli("job", "list", "--json", user=TEST_USER)
        assert r.returncode == 0, r.stderr
        assert [j["id"] for j in json.loads(r.stdout)] == [mine["id"]], r.stdout
        r = d.cli("job", "show", theirs["id"], user=TEST_USER)
        assert r.returncode == 3 and "no job with id" in r.stderr, r.stderr
        assert {j["id"] for j in d.json("job", "list")} == {mine["id"], theirs["id"]}
        r = d.cli("checkpoint", "settings", "mine", "--type", "standard", user=TEST_USER)
        assert r.returncode == 6 and "host administrator" in r.stderr, r.stderr
        r = d.cli("checkpoint", "list", "theirs", user=TEST_USER)
        assert r.returncode == 3, r.stderr
    finally:
        d.cleanup()
