"""Checkpoints in cloisond, with Hyper-V's behaviour: a checkpoint turns the
running disk into a read-only parent and the VM goes on in a new
`<disk>_<GUID>.avhdx`; apply goes back to it (memory too for a standard
checkpoint of a running VM); remove merges the differencing disk so no data
is lost. The test guest's `blkfill=N` fills its disk with byte N and powers
off; the host reads the disk back through `cloison disk convert`."""
import glob
import os
import re
import subprocess

from conftest import binary, run
from test_daemon_lib import daemon  # noqa: F401 (fixture)

CONFLICT = 4
NOT_FOUND = 3
SIZE = 4 << 20


def content(d, tmp_path, disk, size=SIZE):
    """The bytes the guest sees on disk (its whole chain), as a set."""
    out = tmp_path / "read.raw"
    if out.exists():
        out.unlink()
    d.ok("disk", "convert", disk, out)
    data = out.read_bytes()
    assert len(data) == size
    return set(data)


def fill(d, name, value):
    d.ok("vm", "set", name, "--cmdline", "blkfill=%d" % value)
    d.ok("vm", "start", name)
    v = d.wait_state(name, "off", timeout=120)
    assert v["reason"] == "the guest powered off", v


def now_disk(d, name):
    return d.vm(name)["disks"][0]["path"]


def avhdx(tmp_path):
    return sorted(glob.glob(str(tmp_path / "*.avhdx")))


def checkpoints(d, name):
    return d.json("checkpoint", "list", name)


def disk_check(path):
    r = run([binary("cloison"), "disk", "check", path])
    assert r.returncode == 0, r.stdout + r.stderr


def test_tree_apply_and_remove_offline(daemon, tmp_path):
    d = daemon
    base = tmp_path / "d.vhdx"
    d.ok("disk", "create", base, "--size", str(SIZE), "--type", "dynamic")
    d.create("t", "blkfill=17", "--disk", base)
    fill(d, "t", 17)

    r = d.ok("vm", "checkpoint", "t", "--name", "A")
    assert "Created checkpoint 'A' (production)" in r.stdout, r.stdout
    child = now_disk(d, "t")
    assert re.fullmatch(re.escape(str(tmp_path)) + r"/d_[0-9A-F-]{36}\.avhdx", child), child
    tree = checkpoints(d, "t")
    a = tree["checkpoints"][0]
    assert a["name"] == "A" and a["disks"][0]["path"] == str(base) and a["parent"] is None
    assert tree["current"] == a["id"] and a["saved_state"] is False, tree
    fill(d, "t", 34)  # X, after A
    d.ok("vm", "checkpoint", "t", "--name", "B")
    fill(d, "t", 51)  # Y, after B
    assert content(d, tmp_path, now_disk(d, "t")) == {51}
    assert len(avhdx(tmp_path)) == 2

    out = d.ok("checkpoint", "list", "t", "--tree").stdout
    assert re.search(r"^A .*\n   \+- B .*\n      \+- > Now$", out, re.M), out

    # Apply A: the disk as it was at A (and A's command line).
    d.ok("checkpoint", "apply", "t", "A")
    assert content(d, tmp_path, now_disk(d, "t")) == {17}
    v = d.vm("t")
    assert v["cmdline"] == "blkfill=17" and v["state"] == "off", v
    assert "checkpoint 'A' applied" in v["reason"], v
    # The state after B (Y) was thrown away with its disk; B's stays.
    assert len(avhdx(tmp_path)) == 2
    d.ok("checkpoint", "apply", "t", "B")
    assert content(d, tmp_path, now_disk(d, "t")) == {34}
    assert checkpoints(d, "t")["current"] == [c for c in checkpoints(d, "t")["checkpoints"]
                                              if c["name"] == "B"][0]["id"]

    # Remove B: "now" is merged into B's disk, one .avhdx fewer, same data.
    before = avhdx(tmp_path)
    r = d.ok("checkpoint", "remove", "t", "B")
    assert "Removed 1 checkpoint(s)" in r.stdout, r.stdout
    assert len(avhdx(tmp_path)) == len(before) - 1
    assert content(d, tmp_path, now_disk(d, "t")) == {34}
    for p in avhdx(tmp_path):
        disk_check(p)
    # Remove A: its child is merged into d.vhdx, which the VM uses again.
    d.ok("checkpoint", "remove", "t", "A")
    assert avhdx(tmp_path) == []
    assert now_disk(d, "t") == str(base)
    assert content(d, tmp_path, str(base)) == {34}
    disk_check(base)
    r = subprocess.run(["qemu-img", "check", "-f", "vhdx", str(base)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert checkpoints(d, "t")["checkpoints"] == []
    fill(d, "t", 68)  # the VM still runs on its disk
    assert content(d, tmp_path, str(base)) == {68}


def counts(text):
    return [int(n) for n in re.findall(r"RESULT count=(\d+)\r?\n", text)]


def test_standard_checkpoint_of_running_vm_and_apply(daemon, tmp_path):
    """A running VM's checkpoint keeps its memory: the VM goes on (no boot),
    and applying it later takes the guest back to the count it had."""
    d = daemon
    base = tmp_path / "r.vhdx"
    d.ok("disk", "create", base, "--size", str(SIZE), "--type", "dynamic")
    d.create("r", "count", "--disk", base)
    d.ok("vm", "start", "r")
    d.console_until("r", "RESULT count=", times=3)
    d.ok("vm", "pause", "r")
    job = d.json("vm", "checkpoint", "r", "--name", "mem")
    res = job["result"]
    assert job["state"] == "completed" and res["type"] == "standard", job
    assert res["saved_state"] is True and "integration services" in res["note"], job
    v = d.vm("r")
    assert v["state"] == "running" and v["disks"][0]["path"].endswith(".avhdx"), v
    out = d.console_until("r", "RESULT count=", times=3)
    assert "RESULT boot=" not in out, out[-2000:]
    at_checkpoint = counts(out)[0]
    cp = checkpoints(d, "r")["checkpoints"][0]
    assert cp["type"] == "standard" and cp["saved_state"] is True, cp
    assert os.path.exists(os.path.join(cp["dir"], "state.bin")), cp
    assert os.path.exists(os.path.join(cp["dir"], "config.json")), cp
    # Let it count on, then go back.
    later = counts(d.console_until("r", "RESULT count=%d" % (at_checkpoint + 20), timeout=60))
    assert max(later) >= at_checkpoint + 20
    job = d.json("checkpoint", "apply", "r", "mem")
    assert job["state"] == "completed", job
    assert d.state("r") == "running"
    out = d.console_until("r", "RESULT count=", times=3)
    after = counts(out)
    assert "RESULT boot=" not in out, out[-2000:]
    assert after[0] <= at_checkpoint + 2, (at_checkpoint, after)
    d.ok("vm", "stop", "r", "--turn-off")


def test_types_names_and_refusals(daemon, tmp_path):
    d = daemon
    raw = tmp_path / "x.raw"
    d.ok("disk", "create", raw, "--size", str(SIZE))
    d.create("raw", "count", "--disk", raw)
    r = d.cli("vm", "checkpoint", "raw")
    assert r.returncode != 0 and "raw image" in r.stderr and "VHDX or VHD" in r.stderr, r.stderr
    assert d.json("job", "list") == []

    base = tmp_path / "n.vhdx"
    d.ok("disk", "create", base, "--size", str(SIZE), "--type", "dynamic")
    d.create("n", "count", "--disk", base)
    d.ok("checkpoint", "settings", "n", "--type", "disabled")
    r = d.cli("vm", "checkpoint", "n")
    assert r.returncode == CONFLICT and "checkpoints are disabled" in r.stderr, r.stderr
    r = d.cli("checkpoint", "settings", "n", "--type", "sometimes")
    assert r.returncode == 2 and "production-only" in r.stderr, r.stderr
    d.ok("checkpoint", "settings", "n", "--type", "production-only")
    d.ok("vm", "start", "n")
    r = d.cli("vm", "checkpoint", "n")
    assert r.returncode == CONFLICT and "cannot freeze its file systems" in r.stderr, r.stderr
    d.ok("vm", "stop", "n", "--turn-off")
    # Off, a production-only checkpoint is the disks alone.
    d.ok("vm", "checkpoint", "n", "--name", "one")
    d.ok("checkpoint", "rename", "n", "one", "first")
    cps = checkpoints(d, "n")["checkpoints"]
    assert [c["name"] for c in cps] == ["first"] and cps[0]["type"] == "production", cps
    r = d.cli("checkpoint", "apply", "n", "one")
    assert r.returncode == NOT_FOUND and "has no checkpoint 'one'" in r.stderr, r.stderr
    # --no-wait gives the job; the job shows the result.
    jid = d.ok("vm", "checkpoint", "n", "--name", "two", "--no-wait").stdout.strip()
    d.ok("job", "wait", jid)
    j = d.json("job", "show", jid)
    assert j["state"] == "completed" and j["kind"] == "checkpoint-create", j
    assert j["result"]["name"] == "two", j
    # remove --tree takes "first" and everything under it.
    r = d.ok("checkpoint", "remove", "n", "first", "--tree")
    assert "Removed 2 checkpoint(s)" in r.stdout, r.stdout
    assert checkpoints(d, "n")["checkpoints"] == []
    assert avhdx(tmp_path) == [] and now_disk(d, "n") == str(base)
    disk_check(base)


def test_remove_cancelled_before_its_merge(daemon, tmp_path):
    """A remove is cancellable between its merges: the removal of a tree of
    three checkpoints of a running VM, cancelled at once, finishes the
    merge it is in (a merge that wrote into its parent cannot be undone)
    and merges nothing more. The checkpoints not reached stay, the data is
    the guest's, and the VM goes on running. A save job is not
    cancellable."""
    d = daemon
    size = 64 << 20
    base = tmp_path / "c.vhdx"
    d.ok("disk", "create", base, "--size", str(size), "--type", "dynamic")
    d.create("c", "blkfill=5", "--disk", base)
    # Each child holds a whole disk of data, so that each merge takes time.
    d.ok("vm", "checkpoint", "c", "--name", "one")
    fill(d, "c", 6)
    d.ok("vm", "checkpoint", "c", "--name", "two")
    fill(d, "c", 7)
    d.ok("vm", "set", "c", "--cmdline", "count")
    d.ok("vm", "start", "c")
    d.console_until("c", "RESULT count=", times=2)
    d.ok("vm", "checkpoint", "c", "--name", "three")
    jid = d.ok("checkpoint", "remove", "c", "one", "--tree", "--no-wait").stdout.strip()
    r = d.ok("job", "cancel", jid)
    assert "Asked job" in r.stdout, r.stdout
    r = d.cli("job", "wait", jid)
    assert r.returncode == 1 and "cancelled before checkpoint" in r.stderr, r.stderr
    j = d.json("job", "show", jid)
    assert j["state"] == "cancelled" and j["error"]["code"] == "cancelled", j
    left = [c["name"] for c in checkpoints(d, "c")["checkpoints"]]
    assert left in (["one"], ["one", "two"]), left
    assert d.state("c") == "running"
    out = d.console_until("c", "RESULT count=", times=2)
    assert "RESULT boot=" not in out
    d.ok("vm", "pause", "c")
    sid = d.ok("vm", "save", "c", "--no-wait").stdout.strip()
    r = d.cli("job", "cancel", sid)
    assert r.returncode == CONFLICT and ("cannot be cancelled" in r.stderr or
                                         "already" in r.stderr), r.stderr
    d.ok("job", "wait", sid)
    assert d.state("c") == "saved"
    # Saved, no worker holds the images: they are checked and read.
    refs = {now_disk(d, "c")} | {k["path"] for c in checkpoints(d, "c")["checkpoints"]
                                 for k in c["disks"]}
    assert set(avhdx(tmp_path)) <= refs, (avhdx(tmp_path), refs)
    for p in refs:
        disk_check(p)
    assert content(d, tmp_path, now_disk(d, "c"), size) == {7}


def test_production_checkpoint_freezes_through_the_agent(daemon, tmp_path):
    """With the guest's agent (its backup service), a production checkpoint
    of a running VM freezes the guest's file systems, keeps no memory, and
    is split live: the worker goes on in the new child (disk-share, then
    disk-switch), with no save and no restore, and the guest is thawed by
    the host; production-only then works too."""
    from test_daemon_agent import AGENT, agent_ready
    d = daemon
    base = tmp_path / "p.vhdx"
    d.ok("disk", "create", base, "--size", str(SIZE), "--type", "dynamic")
    d.create("p", AGENT, "--disk", base)
    d.ok("vm", "start", "p")
    agent_ready(d, "p")
    job = d.json("vm", "checkpoint", "p", "--name", "prod")
    res = job["result"]
    assert res["type"] == "production" and res["saved_state"] is False, job
    assert "standard checkpoint was made" not in res["note"], job
    # The guest was frozen and thawed by the host, never stopped: no
    # restore (no transport reset), no boot.
    out = d.console_until("p", "RESULT agent_thawed=")
    assert "RESULT agent_frozen=1" in out and "RESULT agent_thawed=host" in out, out[-2000:]
    assert "vsock_transport_reset" not in out and out.count("RESULT boot=") == 1, out[-2000:]
    isv = agent_ready(d, "p")
    assert isv.get("frozen") is False, isv
    child = now_disk(d, "p")
    assert child.endswith(".avhdx"), child
    assert "now on %s" % child in d.worker_logs(), d.worker_logs()[-2000:]
    cp = checkpoints(d, "p")["checkpoints"][0]
    assert cp["type"] == "production" and not os.path.exists(os.path.join(cp["dir"],
                                                                          "state.bin")), cp
    assert d.state("p") == "running"
    agent_ready(d, "p")
    d.ok("checkpoint", "settings", "p", "--type", "production-only")
    job = d.json("vm", "checkpoint", "p", "--name", "only")
    assert job["result"]["type"] == "production", job
    # Applying a production checkpoint leaves the VM off, with its disks.
    d.ok("checkpoint", "apply", "p", "prod")
    v = d.vm("p")
    assert v["state"] == "off" and "checkpoint 'prod' applied" in v["reason"], v


FLUSHED_RE = re.compile(r"RESULT flushed=(\d+)\r?\n")


def test_live_merge_keeps_every_write_of_the_running_guest(daemon, tmp_path):
    """Remove while the VM runs is a live merge (Hyper-V's): the guest
    writes numbered, checksummed records (blkrec=, docs/testguest.md) all
    along, into the checkpoint's child, then into the spare child the
    worker switched to, and after the merge into the base disk itself. It
    never stops running (no save: no second boot, no saved-state note),
    the VM ends on the base disk with no .avhdx left, and every record the
    guest saw flushed is intact there (tests/tools/disk_record_check), with
    `cloison disk check` and `qemu-img check` clean."""
    from test_disk_cli import tool
    d = daemon
    size = 256 << 20
    seed = 4242
    base = tmp_path / "live.vhdx"
    d.ok("disk", "create", base, "--size", str(size), "--type", "dynamic", "--block-size", "1M")
    d.create("lm", "blkrec=%d,8 qd=4" % seed, "--disk", base)
    d.ok("vm", "checkpoint", "lm", "--name", "A")  # off: the VM goes on in a child
    child = now_disk(d, "lm")
    assert child.endswith(".avhdx"), child
    d.ok("vm", "start", "lm")
    before = d.console_until("lm", "RESULT flushed=", times=20, timeout=120)
    assert "RESULT blkrec=" not in before, before[-1000:]
    job = d.json("checkpoint", "remove", "lm", "A")
    assert job["state"] == "completed", job
    note = job["result"]["note"]
    assert "merged while the VM ran" in note and "saved" not in note, job  # live
    print("live merge: %s; flushed before: %s" % (note, FLUSHED_RE.findall(before)[-1]))
    v = d.vm("lm")
    assert v["state"] == "running" and v["disks"][0]["path"] == str(base), v
    assert avhdx(tmp_path) == [], avhdx(tmp_path)
    seen = FLUSHED_RE.findall(before)
    # The guest writes on, now into the base disk.
    out = d.console_until("lm", "RESULT flushed=", times=len(seen) + 20, timeout=120)
    assert out.count("RESULT boot=") == 1, out[-2000:]
    assert "RESULT blkrec=error" not in out, out[-2000:]
    flushed = max(int(n) for n in FLUSHED_RE.findall(out))
    assert flushed > max(int(n) for n in seen), (seen[-3:], flushed)
    d.ok("vm", "stop", "lm", "--turn-off")
    r = run([tool("disk_record_check"), str(base), str(seed), str(flushed)])
    assert r.returncode == 0, r.stdout + r.stderr
    disk_check(str(base))
    r = subprocess.run(["qemu-img", "check", "-f", "vhdx", str(base)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert checkpoints(d, "lm")["checkpoints"] == []


def test_vm_checkpoint_takes_the_verbs(daemon, tmp_path):
    """`cloison vm checkpoint VERB NAME ...` is `cloison checkpoint VERB NAME
    ...`, beside `vm checkpoint NAME` (create); a VM named like a verb is
    reached with the verb spelled out."""
    d = daemon
    base = tmp_path / "v.vhdx"
    d.ok("disk", "create", base, "--size", str(SIZE), "--type", "dynamic")
    d.create("list", "count", "--disk", base)  # a VM named like a verb
    d.ok("vm", "checkpoint", "list", "--name", "one")  # create, on VM 'list'
    d.ok("vm", "checkpoint", "create", "list", "--name", "two")
    out = d.ok("vm", "checkpoint", "list", "list", "--tree").stdout
    assert re.search(r"^one .*\n   \+- two .*\n      \+- > Now$", out, re.M), out
    d.ok("vm", "checkpoint", "rename", "list", "two", "deux")
    r = d.ok("vm", "checkpoint", "remove", "list", "one", "--subtree")
    assert "Removed 2 checkpoint(s)" in r.stdout, r.stdout
    assert checkpoints(d, "list")["checkpoints"] == []
    assert now_disk(d, "list") == str(base)
    r = d.cli("vm", "checkpoint", "remove", "list")
    assert r.returncode == 2 and "a VM name and a checkpoint" in r.stderr, r.stderr
    assert "create|list|apply" in d.ok("vm", "--help").stdout
    assert "remove VM CP [--subtree]" in d.ok("vm", "checkpoint", "--help").stdout
