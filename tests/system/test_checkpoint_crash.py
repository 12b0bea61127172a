"""Kill trials for checkpoints and exports: cloisond is killed with SIGKILL
at a random moment of a checkpoint create, apply or remove, or of an
export (the moment is drawn uniformly over the operation's measured
duration, so some kills land before the job begins, most within it, some
after), started again, and the result must be the old or the new tree with
nothing half made (an export is whole or absent, check_export):

- no job is left running; an interrupted one is failed (rolled back) or
  completed (finished at the start), with a note;
- every checkpoint's disk and the VM's disk exist, `cloison disk check`
  accepts every image, and no .avhdx is left that nothing uses;
- the guest's data is what it was before or after the operation (no flushed
  write lost: the merge of remove keeps the data).

Each trial starts from the same pristine copy of the state and disks:
base.vhdx (byte 17) <- checkpoint A <- child (byte 34) <- checkpoint B <-
now (byte 51). Each operation is tried on the VM off, on the VM running a
guest without the agent ("running": a create saves it and starts it again
around the split), and on the VM running the test guest's agent ("agent":
a create is production, frozen and split live); a remove of a running VM
is a live merge either way. The worker is adopted or not by the restarted
daemon; before the checks the VM is turned off or its saved state
discarded, so that no worker holds an image.
CLOISON_CHECKPOINT_TRIALS sets the trials per operation and state
(default 4; `make trials` runs 30). Figures: docs/state.md."""
import glob
import json
import os
import random
import shutil
import socket
import time

import pytest

from conftest import require_kvm
from test_daemon_agent import AGENT, agent_ready
from test_daemon_lib import Daemon

TRIALS = int(os.environ.get("CLOISON_CHECKPOINT_TRIALS", "4"))
SIZE = 32 << 20
OPS = ("create", "apply", "remove", "export")
MODES = ("off", "running", "agent")


def fill(d, name, value):
    d.ok("vm", "set", name, "--cmdline", "blkfill=%d" % value)
    d.ok("vm", "start", name)
    v = d.wait_state(name, "off", timeout=180)
    assert v["reason"] == "the guest powered off", v


def content(d, work, disk):
    out = os.path.join(work, "read.raw")
    if os.path.exists(out):
        os.unlink(out)
    d.ok("disk", "convert", disk, out)
    with open(out, "rb") as f:
        data = f.read()
    os.unlink(out)
    assert len(data) == SIZE
    return set(data)


def request(d, op, ids):
    if op == "create":
        return "POST", "/v1/vms/t/checkpoints", {"name": "C", "wait": False}
    if op == "apply":
        return "POST", "/v1/vms/t/checkpoints/%s/apply" % ids["A"], {"wait": False}
    if op == "remove":
        return "DELETE", "/v1/vms/t/checkpoints/%s?wait=0" % ids["B"], None
    return "POST", "/v1/vms/t/export", {"dir": os.path.join(os.path.dirname(d.state_dir), "exp"),
                                        "wait": False}


def send_raw(d, method, path, body):
    """Sends the request and returns at once (the daemon may die before it
    answers)."""
    data = json.dumps(body) if body is not None else ""
    s = socket.socket(socket.AF_UNIX)
    s.connect(d.socket)
    s.sendall(("%s %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               "Content-Length: %d\r\n\r\n%s" % (method, path, len(data), data)).encode())
    return s


def start_serving(d, mode):
    """The VM running a guest that leaves its disk alone: run=serve (its
    checkpoints are standard: saved around the split), or the test guest's
    agent (production: frozen, split live), once cloisond hears it."""
    d.ok("vm", "set", "t", "--cmdline", "run=serve" if mode == "running" else AGENT)
    d.ok("vm", "start", "t")
    if mode == "agent":
        agent_ready(d, "t")


def settle(d):
    """After the restart: the VM off, its worker gone, so that every image
    can be checked; returns the state it was found in."""
    deadline = time.time() + 120
    while any(j["state"] == "running" for j in d.json("job", "list")):
        assert time.time() < deadline, d.json("job", "list")
        time.sleep(0.1)
    state = d.state("t")
    if state == "crashed":
        print("the VM was found crashed:", d.vm("t")["reason"])
    found = state
    # A worker found paused may be finishing a save the last daemon asked
    # for: it can become saved between the look and the turn-off.
    while state in ("running", "paused", "saving", "starting", "stopping"):
        assert time.time() < deadline, d.vm("t")
        r = d.cli("vm", "stop", "t", "--turn-off")
        if r.returncode:
            time.sleep(0.1)
        state = d.state("t")
    if state == "saved":
        d.ok("vm", "discard-saved-state", "t")
    return found


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """The VM and its tree, made once; each trial copies it."""
    require_kvm()
    top = tmp_path_factory.mktemp("cpcrash")
    work = str(top / "w")
    os.makedirs(work)
    d = Daemon(os.path.join(work, "state")).start()
    try:
        os.makedirs(os.path.join(work, "exp"))
        base = os.path.join(work, "base.vhdx")
        d.ok("disk", "create", base, "--size", str(SIZE), "--type", "dynamic")
        d.create("t", "blkfill=17", "--disk", base)
        fill(d, "t", 17)
        d.ok("vm", "checkpoint", "t", "--name", "A")
        fill(d, "t", 34)
        d.ok("vm", "checkpoint", "t", "--name", "B")
        fill(d, "t", 51)
        ids = {c["name"]: c["id"] for c in d.json("checkpoint", "list", "t")["checkpoints"]}
        # How long each operation takes, for the kill moments: on the VM
        # off, and running (saved and started again around the disks).
        durations = {}
        d.stop()
        for op in OPS:
            for running in MODES:
                restore(top, work)
                d.start()
                if running != "off":
                    start_serving(d, running)
                method, path, body = request(d, op, ids)
                # The same request, answered when the job ends.
                path = path.replace("wait=0", "wait=1")
                body = dict(body, wait=True) if body else None
                t0 = time.time()
                status, job = d.http(method, path, body)
                durations[op, running] = time.time() - t0
                assert status == 200 and job["state"] == "completed", job
                if op == "create" and running == "agent":  # the live split
                    assert job["result"]["type"] == "production", job
                if running != "off":
                    settle(d)
                d.stop()
        restore(top, work)
    finally:
        d.cleanup()
    return top, work, ids, durations


def snapshot_dir(top):
    return str(top / "pristine")


def restore(top, work):
    snap = snapshot_dir(top)
    if not os.path.exists(snap):
        # A worker's leftover sockets cannot be copied (and mean nothing).
        shutil.copytree(work, snap, symlinks=True, ignore=shutil.ignore_patterns("*.sock"))
        return
    shutil.rmtree(work)
    shutil.copytree(snap, work, symlinks=True)


def referenced(d, tree):
    paths = {disk["path"] for disk in d.vm("t")["disks"]}
    for c in tree["checkpoints"]:
        paths |= {disk["path"] for disk in c["disks"]}
    return paths


def check_consistent(d, work, op, ids):
    jobs = d.json("job", "list")
    assert all(j["state"] != "running" for j in jobs), jobs
    for j in jobs:
        if j["error"] and j["error"]["code"] == "interrupted":
            assert j["state"] == "failed" and j["note"], j
    tree = d.json("checkpoint", "list", "t")
    names = sorted(c["name"] for c in tree["checkpoints"])
    now = d.vm("t")["disks"][0]["path"]
    refs = referenced(d, tree)
    for p in refs:
        assert os.path.exists(p), (p, tree)
        r = d.cli("disk", "check", p)
        assert r.returncode == 0, "%s:\n%s%s\ntree: %s\njobs: %s" % (p, r.stdout, r.stderr,
                                                                 tree, jobs)
    left = set(glob.glob(os.path.join(work, "*.avhdx"))) - refs
    assert not left, ("differencing disks nothing uses", left, tree)
    data = content(d, work, now)
    if op == "create":
        assert names in (["A", "B"], ["A", "B", "C"]), names
        assert data == {51}
        new = names == ["A", "B", "C"]
    elif op == "apply":
        assert names == ["A", "B"]
        new = tree["current"] == ids["A"]
        assert data == ({17} if new else {51}), (data, tree)
        assert new or tree["current"] == ids["B"]
    elif op == "remove":
        assert names in (["A", "B"], ["A"]), names
        assert data == {51}, data
        new = names == ["A"]
    else:
        new = check_export(d, work, tree, names, data)
    # Only a job that a restart recovered has a note.
    interrupted = any(j["note"] for j in jobs)
    return new, interrupted


def check_export(d, work, tree, names, data):
    """An export is whole or absent: no partial folder; a finished one holds
    the VM's configuration and disks (the chain checks clean and reads the
    data the VM had). A running VM's temporary checkpoint is gone, or stays
    named in the tree when the daemon died before its merge began (the
    job's note says how to remove it)."""
    exp = os.path.join(work, "exp")
    assert data == {51}, data
    assert names[:2] == ["A", "B"] and len(names) <= 3, names
    if len(names) == 3:
        assert names[2].startswith("Export"), names
    left = sorted(os.listdir(exp))
    assert left in ([], ["t"]), left  # no .t.export-* half export
    if not left:
        return False
    vms = os.path.join(exp, "t", "Virtual Machines")
    cfgs = [f for f in os.listdir(vms) if f.endswith(".json")]
    assert len(cfgs) == 1, os.listdir(vms)
    with open(os.path.join(vms, cfgs[0])) as f:
        disk = json.load(f)["disks"][0]["path"]
    assert disk.startswith(os.path.join(exp, "t", "Virtual Hard Disks")), disk
    for img in glob.glob(os.path.join(exp, "t", "Virtual Hard Disks", "*")):
        r = d.cli("disk", "check", img)
        assert r.returncode == 0, "%s:\n%s%s" % (img, r.stdout, r.stderr)
    assert content(d, work, disk) == {51}
    return True


@pytest.mark.parametrize("running", MODES)
@pytest.mark.parametrize("op", OPS)
def test_kill9_during_checkpoint_op(pristine, op, running):
    """running, agent: the VM runs a guest while the operation splits or
    merges its disks (saving it and starting it again, or live); cloisond
    is killed at any point of that, and the worker (adopted, or gone) must
    not matter."""
    top, work, ids, durations = pristine
    rng = random.Random(int(os.environ.get("CLOISON_TRIAL_SEED", "0")) or None)
    figures = {"old": 0, "new": 0, "interrupted": 0}
    found = {}
    for trial in range(TRIALS):
        restore(top, work)
        d = Daemon(os.path.join(work, "state")).start()
        delay = 0.0
        try:
            if running != "off":
                start_serving(d, running)
            method, path, body = request(d, op, ids)
            delay = rng.uniform(0, durations[op, running] * 1.2)
            s = send_raw(d, method, path, body)
            time.sleep(delay)
            d.kill9()
            s.close()
            d.start()
            if running != "off":
                st = settle(d)
                found[st] = found.get(st, 0) + 1
            new, interrupted = check_consistent(d, work, op, ids)
            figures["new" if new else "old"] += 1
            figures["interrupted"] += interrupted
            d.stop()
        except BaseException:
            print("trial %d of %s (%s), kill after %.4f s; daemon log:\n%s" % (
                trial, op, running, delay, d.log()[-4000:]))
            raise
        finally:
            d.cleanup()
    print("\ncheckpoint %s, VM %s: %d trials (operation %.3f s): %d old tree, %d new tree, "
          "%d jobs found interrupted at the restart%s" % (
              op, running, TRIALS, durations[op, running],
              figures["old"], figures["new"], figures["interrupted"],
              "; the VM found " + ", ".join("%s %d" % kv for kv in sorted(found.items()))
              if running != "off" else ""))
