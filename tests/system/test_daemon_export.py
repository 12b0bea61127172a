"""Export and import (Hyper-V's Export-VM and Import-VM) through cloisond's
jobs. `cloison vm export NAME DIR` writes DIR/NAME/{Virtual Machines,
Virtual Hard Disks,Snapshots}; `cloison vm import DIR/NAME` registers it in
place, restores it (files copied, same id) or copies it (new id, new MACs).
The disk is a differencing VHDX over a VHDX converted from a patterned raw
image, so the whole chain has to travel and be re-pointed; each imported VM
boots the test guest's `blksum` and must see the very bytes of the pattern.
A saved VM is exported with its state and the import goes on counting. Bad
input is refused with nothing changed, and a kill -9 of cloisond in the
middle of an export or an import leaves no half result."""
import glob
import hashlib
import json
import os
import time

from conftest import run
from test_daemon_lib import Daemon, daemon  # noqa: F401 (fixture)
from test_daemon_saved_state import assert_goes_on, counting_then_saved

SIZE = 8 << 20
NOT_FOUND, CONFLICT, USAGE = 3, 4, 2


def pattern(size):
    block = bytes((i * 7 + i // 512) % 251 for i in range(1 << 16))
    return block * (size // len(block))


def chain_disk(d, tmp_path, size=SIZE):
    """base.vhdx (converted from a patterned raw image) and its empty
    differencing child; returns the child's path and the pattern's sha256."""
    raw = tmp_path / "pattern.raw"
    data = pattern(size)
    raw.write_bytes(data)
    # In two folders: the child's relative locator (../base/base.vhdx) does
    # not hold in the export, so only a re-pointed parent makes a chain.
    base = tmp_path / "base" / "base.vhdx"
    base.parent.mkdir()
    d.ok("disk", "convert", raw, base)
    raw.unlink()
    (tmp_path / "src").mkdir()
    child = tmp_path / "src" / "child.avhdx"
    d.ok("disk", "create", child, "--type", "differencing", "--parent", base)
    return str(child), hashlib.sha256(data).hexdigest()


def parent_of(d, disk):
    r = run([str(d.cli_bin), "disk", "info", "--json", disk])
    assert r.returncode == 0, r.stdout + r.stderr
    p = json.loads(r.stdout)["parent"]
    assert p["present"], p
    return p["path"]


def guest_sha(d, name):
    d.ok("vm", "start", name)
    out = d.console_until(name, "RESULT blk_sha256=", timeout=120)
    d.ok("vm", "stop", name, "--turn-off")
    return out.split("RESULT blk_sha256=")[1].split()[0]


def tree(path):
    """Every file below path with its size (what an export or import left)."""
    out = {}
    for root, _, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            out[os.path.relpath(p, path)] = os.path.getsize(p)
    return out


def jrun(d, *args):
    """A job verb with --json: JSON lines, progress events then the job."""
    lines = d.ok(*args, "--json").stdout.strip().splitlines()
    events = [json.loads(x) for x in lines[:-1]]
    assert events and all("event" in e for e in events), events
    return json.loads(lines[-1])


def job_of(d, kind):
    jobs = [j for j in d.json("job", "list") if j["kind"] == kind]
    assert jobs, d.json("job", "list")
    return jobs[0]


def test_export_then_import_three_ways(daemon, tmp_path):
    d = daemon
    child, want = chain_disk(d, tmp_path)
    d.create("web", "run=serve blksum", "--disk", child)
    src = d.vm("web")
    exp = tmp_path / "exp"
    exp.mkdir()
    before = tree(tmp_path / "src")

    e = jrun(d, "vm", "export", "web", exp)
    assert e["state"] == "completed" and e["kind"] == "export", e
    out = exp / "web"
    assert e["result"]["path"] == str(out) and e["result"]["saved_state"] is False, e
    assert e["bytes_done"] == e["bytes_total"] > 0, e
    files = tree(out)
    assert sorted(files) == sorted([
        "Virtual Machines/%s.json" % src["id"], "Virtual Hard Disks/base.vhdx",
        "Virtual Hard Disks/child.avhdx"]), files
    assert os.path.isdir(out / "Snapshots")
    # Holes kept: the dynamic base is copied at its size on disk, not bigger.
    b_src = os.stat(tmp_path / "base" / "base.vhdx").st_blocks
    assert os.stat(out / "Virtual Hard Disks" / "base.vhdx").st_blocks <= b_src + 8
    cfg = json.loads((out / "Virtual Machines" / ("%s.json" % src["id"])).read_text())
    assert cfg["disks"][0]["path"] == str(out / "Virtual Hard Disks" / "child.avhdx"), cfg
    # The exported chain stands on its own: the child finds its copied parent.
    assert parent_of(d, out / "Virtual Hard Disks" / "child.avhdx") == str(
        out / "Virtual Hard Disks" / "base.vhdx")
    assert tree(tmp_path / "src") == before and d.vm("web") == src  # source untouched
    assert not glob.glob(str(exp / ".web.export-*"))

    # A second export into the same folder is refused: DIR/NAME exists.
    r = d.cli("vm", "export", "web", exp)
    assert r.returncode == CONFLICT and "exists already" in r.stderr, r.stderr

    # register and restore keep the id, so the original must go first.
    d.ok("vm", "remove", "web")
    v = jrun(d, "vm", "import", out, "--register")
    assert v["result"]["mode"] == "register" and v["result"]["id"] == src["id"], v
    w = d.vm("web")
    assert w["id"] == src["id"] and w["state"] == "off", w
    assert w["disks"][0]["path"] == str(out / "Virtual Hard Disks" / "child.avhdx"), w
    assert guest_sha(d, "web") == want

    # The id is taken now: register and restore are refused and name it.
    for mode in ("--register", "--restore"):
        r = d.cli("vm", "import", out, mode, "--name", "other")
        assert r.returncode == CONFLICT, r.stderr
        assert "id %s exists already: 'web'" % src["id"] in r.stderr, r.stderr
    # A copy under the same name is refused too (the name is taken).
    r = d.cli("vm", "import", out, "--copy")
    assert r.returncode == CONFLICT and "named 'web' exists already" in r.stderr, r.stderr

    d.ok("vm", "remove", "web")
    v = jrun(d, "vm", "import", out, "--restore")
    w = d.vm("web")
    store = os.path.join(d.state_dir, "web", "Virtual Hard Disks")
    assert w["id"] == src["id"] and w["disks"][0]["path"] == os.path.join(store, "child.avhdx")
    assert sorted(os.listdir(store)) == ["base.vhdx", "child.avhdx"]
    assert parent_of(d, os.path.join(store, "child.avhdx")) == os.path.join(store, "base.vhdx")
    assert guest_sha(d, "web") == want

    # A copy: a new id, files copied (here into --vhd-dir);
    # the export is left as it was, so it can be imported again.
    vd = tmp_path / "vhds"
    vd.mkdir()
    v = jrun(d, "vm", "import", out, "--copy", "--name", "web2", "--vhd-dir", vd)
    c = d.vm("web2")
    assert c["id"] != src["id"] and v["result"]["id"] == c["id"], (c, v)
    assert c["disks"][0]["path"] == str(vd / "child.avhdx"), c
    assert sorted(os.listdir(vd)) == ["base.vhdx", "child.avhdx"]
    assert parent_of(d, vd / "child.avhdx") == str(vd / "base.vhdx")
    assert guest_sha(d, "web2") == want
    assert tree(out) == files


def test_copy_gets_new_macs_restore_keeps_them(daemon, tmp_path):
    d = daemon
    d.create("n", "", "--net", "tap=cltest0", "--net", "tap=cltest1,mac=02:00:00:00:00:07")
    src = d.vm("n")
    macs = [a["mac"] for a in src["network_adapters"]]
    d.ok("vm", "export", "n", tmp_path)
    c = jrun(d, "vm", "import", tmp_path / "n", "--copy", "--name", "n2")
    new = [a["mac"] for a in d.vm("n2")["network_adapters"]]
    assert len(new) == 2 and not set(new) & set(macs) and new[0] != new[1], (macs, new)
    assert c["result"]["id"] != src["id"]
    d.ok("vm", "remove", "n")
    d.ok("vm", "import", tmp_path / "n", "--restore")
    assert [a["mac"] for a in d.vm("n")["network_adapters"]] == macs


def test_adapter_on_a_missing_switch_is_imported_disconnected(daemon, tmp_path):
    """Hyper-V's import: an adapter whose switch this host lacks comes in
    disconnected, with a warning saying how to connect it."""
    d = daemon
    d.create("sw", "", "--net", "tap=cltest0")
    vid = d.vm("sw")["id"]
    d.ok("vm", "export", "sw", tmp_path)
    cfgp = tmp_path / "sw" / "Virtual Machines" / ("%s.json" % vid)
    cfg = json.loads(cfgp.read_text())
    mac = cfg["network_adapters"][0]["mac"]
    cfg["network_adapters"] = [{"switch": "nowhere", "mac": mac, "mac_auto": False,
                                "vlan": 5}]
    cfgp.write_text(json.dumps(cfg))
    r = d.ok("vm", "import", tmp_path / "sw", "--copy", "--name", "sw2")
    assert "warning: network adapter 0 was connected to switch 'nowhere'" in r.stderr, r.stderr
    assert "cloison vm set sw2 --connect 0=SWITCH" in r.stderr, r.stderr
    a = d.vm("sw2")["network_adapters"]
    assert len(a) == 1 and a[0]["switch"] is None and a[0].get("tap") is None, a
    j = jrun(d, "vm", "import", tmp_path / "sw", "--copy", "--name", "sw3")
    assert len(j["result"]["warnings"]) == 1 and "nowhere" in j["result"]["warnings"][0], j
    assert "import of VM sw3: network adapter 0" in d.log()


def test_saved_vm_export_import_goes_on_counting(daemon, tmp_path):
    d = daemon
    d.create("cnt", "count")
    last = counting_then_saved(d, "cnt")
    exp = tmp_path / "exp"
    exp.mkdir()
    e = jrun(d, "vm", "export", "cnt", exp)
    assert e["result"]["saved_state"] is True, e
    vid = d.vm("cnt")["id"]
    saved = exp / "cnt" / "Virtual Machines" / vid
    assert (saved / "state.bin").exists() and glob.glob(str(saved / "memory-*.bin"))
    assert d.state("cnt") == "saved"  # the source is still saved
    c = jrun(d, "vm", "import", exp / "cnt", "--copy", "--name", "cnt2")
    assert c["state"] == "completed", c
    assert d.state("cnt2") == "saved"
    d.ok("vm", "start", "cnt2")
    assert_goes_on(d, "cnt2", last)
    d.ok("vm", "stop", "cnt2", "--turn-off")


def test_checkpoint_tree_travels_with_the_export(daemon, tmp_path):
    """A tree with a branch: A, then B under A, then A applied and written
    again, so "now" sits under A beside B. The export carries the tree
    (Snapshots/checkpoints.json and each checkpoint's folder) and every
    disk of every checkpoint; a copy and a register import get the same
    tree, and applying each checkpoint there gives the data it held."""
    from test_daemon_checkpoint import content, fill, now_disk, disk_check, SIZE
    d = daemon
    base = tmp_path / "d.vhdx"
    d.ok("disk", "create", base, "--size", str(SIZE), "--type", "dynamic")
    d.create("t", "blkfill=17", "--disk", base)
    fill(d, "t", 17)
    d.ok("vm", "checkpoint", "t", "--name", "A")
    fill(d, "t", 34)
    d.ok("vm", "checkpoint", "t", "--name", "B")
    fill(d, "t", 51)
    d.ok("checkpoint", "apply", "t", "A")
    fill(d, "t", 68)
    src_tree = d.json("checkpoint", "list", "t")
    by_name = {c["name"]: c for c in src_tree["checkpoints"]}
    assert src_tree["current"] == by_name["A"]["id"]
    exp = tmp_path / "exp"
    exp.mkdir()
    e = jrun(d, "vm", "export", "t", exp)
    assert e["state"] == "completed", e
    out = exp / "t"
    t = json.loads((out / "Snapshots" / "checkpoints.json").read_text())
    assert sorted(c["name"] for c in t["checkpoints"]) == ["A", "B"], t
    for c in t["checkpoints"]:
        assert (out / "Snapshots" / c["id"] / "config.json").exists()
        cfg = json.loads((out / "Snapshots" / c["id"] / "config.json").read_text())
        for dk in c["disks"] + cfg["disks"]:
            assert dk["path"].startswith(str(out / "Virtual Hard Disks") + "/"), dk
            assert os.path.exists(dk["path"]), dk
    assert d.json("checkpoint", "list", "t") == src_tree  # the source is untouched

    def check(name):
        tr = d.json("checkpoint", "list", name)
        names = {c["name"]: c for c in tr["checkpoints"]}
        assert sorted(names) == ["A", "B"], tr
        assert names["A"]["parent"] is None and names["B"]["parent"] == names["A"]["id"], tr
        assert tr["current"] == names["A"]["id"], tr
        assert content(d, tmp_path, now_disk(d, name)) == {68}
        d.ok("checkpoint", "apply", name, "B")
        assert content(d, tmp_path, now_disk(d, name)) == {34}
        d.ok("checkpoint", "apply", name, "A")
        assert content(d, tmp_path, now_disk(d, name)) == {17}
        for c in d.json("checkpoint", "list", name)["checkpoints"]:
            for dk in c["disks"]:
                disk_check(dk["path"])

    d.ok("vm", "import", out, "--copy", "--name", "t2")
    store = os.path.join(d.state_dir, "t2")
    for c in d.json("checkpoint", "list", "t2")["checkpoints"]:
        assert c["dir"] == os.path.join(store, "Snapshots", c["id"]), c
        assert all(dk["path"].startswith(store + "/") for dk in c["disks"]), c
    check("t2")
    d.ok("vm", "remove", "t")
    d.ok("vm", "import", out, "--register", "--name", "t3")
    check("t3")
    # A damaged tree in an export: refused, naming the file, nothing made.
    for bad in ('{"version": 1, "checkpoints": [{"id": "../x", "name": "A", "disks": []}]}',
                '{"version": 2, "checkpoints": []}', "[1, 2"):
        (out / "Snapshots" / "checkpoints.json").write_text(bad)
        r = d.cli("vm", "import", out, "--copy", "--name", "t4")
        assert r.returncode != 0 and "not a checkpoint tree" in r.stderr, r.stderr
        assert "checkpoints.json" in r.stderr and "Snapshots folder away" in r.stderr
        assert all(v["name"] != "t4" for v in d.json("vm", "list"))
        assert not os.path.exists(os.path.join(d.state_dir, "t4"))


def test_running_vm_is_exported_from_a_temporary_checkpoint(daemon, tmp_path):
    """Hyper-V's live export: the VM keeps running (saved and started again
    around the temporary checkpoint, without booting), the export holds the
    disks as they were and the memory, the checkpoint is gone afterwards
    and the VM is back on its own disk; the copy imports saved and goes on
    counting from where the export found it."""
    d = daemon
    child, want = chain_disk(d, tmp_path)
    d.create("live", "count", "--disk", child)
    d.ok("vm", "start", "live")
    d.console_until("live", "RESULT count=", times=3)
    exp = tmp_path / "exp"
    exp.mkdir()
    e = jrun(d, "vm", "export", "live", exp)
    assert e["state"] == "completed", e
    res = e["result"]
    # no agent in this guest: the production checkpoint falls back to standard
    assert res["saved_state"] is True and res["checkpoint_type"] == "standard", res
    assert "merged while the VM ran" in res["note"], res  # a live merge
    # the source: running, not booted again, no checkpoint, its own disk
    assert d.state("live") == "running"
    out = d.console_until("live", "RESULT count=", times=3)
    assert "RESULT boot=" not in out, out[-2000:]
    assert d.json("checkpoint", "list", "live")["checkpoints"] == []
    assert d.vm("live")["disks"][0]["path"] == child
    assert sorted(os.listdir(tmp_path / "src")) == ["child.avhdx"]
    # the export: its chain, and the state
    vid = d.vm("live")["id"]
    ex = exp / "live"
    assert sorted(tree(ex / "Virtual Hard Disks")) == ["base.vhdx", "child.avhdx"]
    assert (ex / "Virtual Machines" / vid / "state.bin").exists()
    raw = tmp_path / "exported.raw"
    d.ok("disk", "convert", ex / "Virtual Hard Disks" / "child.avhdx", raw)
    assert hashlib.sha256(raw.read_bytes()).hexdigest() == want
    d.ok("vm", "stop", "live", "--turn-off")
    r = run([str(d.cli_bin), "disk", "check", child])
    assert r.returncode == 0, r.stdout + r.stderr
    c = jrun(d, "vm", "import", ex, "--copy", "--name", "live2")
    assert c["state"] == "completed" and d.state("live2") == "saved", c
    d.ok("vm", "start", "live2")
    out = d.console_until("live2", "RESULT count=", times=3)
    assert "RESULT boot=" not in out, out[-2000:]
    d.ok("vm", "stop", "live2", "--turn-off")


def test_bad_input_refused_nothing_changed(daemon, tmp_path):
    d = daemon
    child, _ = chain_disk(d, tmp_path)
    d.create("b", "blksum", "--disk", child)
    exp = tmp_path / "exp"
    exp.mkdir()
    d.ok("vm", "export", "b", exp)
    out = exp / "b"
    vid = d.vm("b")["id"]
    cfgp = out / "Virtual Machines" / ("%s.json" % vid)
    vms_before = d.json("vm", "list")
    state_before = sorted(os.listdir(d.state_dir))

    def refused(code, needle, *args):
        r = d.cli(*args)
        assert r.returncode == code and needle in r.stderr, (args, r.returncode, r.stderr)
        assert d.json("vm", "list") == vms_before
        assert sorted(os.listdir(d.state_dir)) == state_before

    # Missing folders.
    refused(NOT_FOUND, "No such file", "vm", "import", tmp_path / "nowhere", "--copy")
    refused(USAGE, "make it first", "vm", "export", "b", tmp_path / "nowhere")
    r = d.http("POST", "/v1/vms/import", {"path": str(tmp_path / "nowhere")})
    assert r[0] == 404 and "does not exist" in r[1]["error"]["message"], r
    r = d.http("POST", "/v1/vms/import", {"path": str(out), "mode": "move"})
    assert r[0] == 400 and "register, restore, copy" in r[1]["error"]["message"], r
    refused(NOT_FOUND, "holds no VM configuration", "vm", "import", exp, "--copy")
    # A running VM is exported from a temporary checkpoint: not when its
    # checkpoints are disabled.
    d.ok("vm", "set", "b", "--cmdline", "run=serve")
    d.ok("checkpoint", "settings", "b", "--type", "disabled")
    d.ok("vm", "start", "b")
    r = d.cli("vm", "export", "b", tmp_path)
    assert r.returncode == CONFLICT and "temporary checkpoint" in r.stderr, r.stderr
    assert "checkpoints are disabled" in r.stderr, r.stderr
    assert not os.path.exists(tmp_path / "b")
    assert d.state("b") == "running"
    d.ok("vm", "stop", "b", "--turn-off")
    d.ok("checkpoint", "settings", "b", "--type", "production")
    vms_before = d.json("vm", "list")
    # Duplicate id and name.
    refused(CONFLICT, "id %s exists already: 'b'" % vid, "vm", "import", out, "--restore",
            "--name", "z")
    refused(CONFLICT, "named 'b' exists already", "vm", "import", out, "--copy")
    # Corrupted JSON, and JSON the daemon's parser refuses.
    good = cfgp.read_text()
    cfgp.write_text(good[: len(good) // 2])
    r = d.cli("vm", "import", out, "--copy", "--name", "z")
    assert r.returncode != 0 and "is not valid JSON" in r.stderr, r.stderr
    assert d.json("vm", "list") == vms_before
    j = json.loads(good)
    j["memory"] = "lots"
    cfgp.write_text(json.dumps(j))
    r = d.cli("vm", "import", out, "--copy", "--name", "z")
    assert r.returncode != 0 and "not a VM configuration this cloisond reads" in r.stderr
    assert "memory" in r.stderr, r.stderr
    cfgp.write_text(good)
    # A missing disk, then a missing parent: each named.
    vhd = out / "Virtual Hard Disks"
    os.rename(vhd / "child.avhdx", tmp_path / "away.avhdx")
    os.rename(child, tmp_path / "away2.avhdx")  # nor at the config's path
    r = d.cli("vm", "import", out, "--copy", "--name", "z")
    assert r.returncode == NOT_FOUND and "'child.avhdx', is missing" in r.stderr, r.stderr
    os.rename(tmp_path / "away.avhdx", vhd / "child.avhdx")
    os.rename(tmp_path / "away2.avhdx", child)
    os.rename(vhd / "base.vhdx", tmp_path / "away.vhdx")
    r = d.cli("vm", "import", out, "--copy", "--name", "z")
    assert r.returncode != 0 and "base.vhdx" in r.stderr, r.stderr
    assert d.json("vm", "list") == vms_before
    assert sorted(os.listdir(d.state_dir)) == state_before


def kill_mid_job(d, args, kind, tmp_glob):
    """Starts a job with --no-wait, kills cloisond -9 once it has copied
    something but not all, and checks its temporary folder was there."""
    job = d.ok(*args, "--no-wait").stdout.strip()
    deadline = time.time() + 60
    while time.time() < deadline:
        st, j = d.http("GET", "/v1/jobs/" + job)
        assert st == 200, j
        if j["state"] != "running":
            break
        if 0 < j["bytes_done"] < j["bytes_total"]:
            d.kill9()
            assert glob.glob(tmp_glob), tmp_glob
            return job
        time.sleep(0.005)
    raise AssertionError("the %s job was never seen half done: %s" % (kind, j))


def test_kill9_during_export_and_import(tmp_path, kvm):
    d = Daemon(tmp_path / "state").start()
    try:
        big = 768 << 20
        raw = tmp_path / "big.raw"
        with open(raw, "wb") as f:
            block = os.urandom(1 << 20)
            for _ in range(big >> 20):
                f.write(block)
        d.create("k", "blksum", "--disk", raw)
        src = d.vm("k")
        exp = tmp_path / "exp"
        exp.mkdir()
        job = kill_mid_job(d, ("vm", "export", "k", exp), "export", str(exp / ".k.export-*"))
        d.start()
        j = d.json("job", "show", job)
        assert j["state"] == "failed" and j["error"]["code"] == "interrupted", j
        assert "partial folder" in j["error"]["message"] and "was removed" in j["note"], j
        assert os.listdir(exp) == []  # no half export
        assert d.vm("k") == src

        d.ok("vm", "export", "k", exp)
        d.ok("vm", "remove", "k")
        job = kill_mid_job(d, ("vm", "import", exp / "k", "--restore"), "import",
                           os.path.join(d.state_dir, ".k.import-*"))
        d.start()
        j = d.json("job", "show", job)
        assert j["state"] == "failed" and j["error"]["code"] == "interrupted", j
        assert "no VM 'k' was made" in j["note"], j
        assert d.json("vm", "list") == []
        left = [n for n in os.listdir(d.state_dir) if n == "k" or n.startswith(".k.")]
        assert left == [], os.listdir(d.state_dir)
        # What was interrupted can be done again.
        d.ok("vm", "import", exp / "k", "--restore")
        assert d.vm("k")["id"] == src["id"]
    finally:
        d.cleanup()


def test_kill9_during_a_running_export(tmp_path, kvm):
    """cloisond killed while it copies a running VM's temporary checkpoint:
    at the next start the partial export is removed, the VM (adopted, still
    running) is on the checkpoint's differencing disk with nothing lost, and
    the job's note says how to remove the checkpoint that stays; once it is
    removed the VM is back on its disk, which checks clean."""
    d = Daemon(tmp_path / "state").start()
    try:
        raw = tmp_path / "big.raw"
        with open(raw, "wb") as f:
            block = os.urandom(1 << 20)
            for _ in range(512):
                f.write(block)
        disk = tmp_path / "big.vhdx"
        d.ok("disk", "convert", raw, disk)
        raw.unlink()
        d.create("r", "count", "--disk", disk)
        d.ok("vm", "start", "r")
        d.console_until("r", "RESULT count=", times=2)
        exp = tmp_path / "exp"
        exp.mkdir()
        job = kill_mid_job(d, ("vm", "export", "r", exp), "export", str(exp / ".r.export-*"))
        d.start()
        j = d.json("job", "show", job)
        assert j["state"] == "failed" and j["error"]["code"] == "interrupted", j
        assert "was removed" in j["note"], j
        assert os.listdir(exp) == []
        assert d.state("r") == "running"
        cps = d.json("checkpoint", "list", "r")["checkpoints"]
        assert len(cps) == 1 and cps[0]["name"].startswith("Export (temporary)"), cps
        assert "cloison checkpoint remove r %s" % cps[0]["id"] in j["note"], j
        out = d.console_until("r", "RESULT count=", times=2)
        assert "RESULT boot=" not in out
        d.ok("checkpoint", "remove", "r", cps[0]["id"])
        assert d.vm("r")["disks"][0]["path"] == str(disk)
        d.ok("vm", "stop", "r", "--turn-off")
        r = run([str(d.cli_bin), "disk", "check", disk])
        assert r.returncode == 0, r.stdout + r.stderr
        assert [p for p in os.listdir(tmp_path) if p.endswith(".avhdx")] == []
    finally:
        d.cleanup()


def test_help(daemon):
    r = daemon.ok("vm", "export", "--help")
    assert "Virtual Hard Disks" in r.stdout and "--no-wait" in r.stdout
    r = daemon.ok("vm", "import", "--help")
    for w in ("--register", "--restore", "--copy", "--name", "--vhd-dir"):
        assert w in r.stdout, r.stdout
