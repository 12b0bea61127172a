"""Configuration versions and the VM Generation ID through cloisond (issue
10), as Hyper-V has them: `cloison host versions` (Get-VMHostSupportedVersion)
lists what this build supports; a new VM gets the default version, an older
one on request (`vm create --config-version`, New-VM -Version), and
`cloison vm upgrade-version` (Update-VMVersion) moves an off VM up, for
good. The Generation ID device arrives with 8.0: a VM at 5.0 has none and
`vm show` says what to do. The id is passed to the worker, and the test
reads it where the guest reads it (guest RAM at the device's buffer,
through /proc/PID/mem). It changes when a checkpoint is applied (a running
VM's restored worker hands the guest the new one) and when a VM is imported
as a copy; a restore-import keeps it. A version newer than this build, on
create or in a configuration file at daemon start, is refused with what to
do, and the file is left as it was."""
import hashlib
import json
import os
import re
import uuid

from test_daemon_lib import Daemon, daemon  # noqa: F401 (fixture)
from vmmlib import guest_ram_read

VMGENID_GPA = 0xDF000
MEM = 128 << 20  # Daemon.create's --memory
USAGE, CONFLICT = 2, 4


def worker_args(pid):
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        return [a.decode() for a in f.read().split(b"\0") if a]


def genid_seen_by_guest(d, name):
    """The id in the device's buffer, as the guest's driver reads it
    (Microsoft's byte order: the GUID's little-endian form)."""
    raw = guest_ram_read(d.vm(name)["pid"], MEM, VMGENID_GPA, 16)
    return str(uuid.UUID(bytes_le=raw))


def test_host_versions_lists_what_this_build_supports(daemon):
    d = daemon
    j = d.json("host", "versions")
    names = [v["name"] for v in j["versions"]]
    assert names == ["5.0", "8.0"] and j["default"] == "8.0" and j["oldest"] == "5.0", j
    assert [v["default"] for v in j["versions"]] == [False, True], j
    out = d.ok("host", "versions").stdout
    assert re.search(r"^8\.0\s+yes\s+adds the VM Generation ID device", out, re.M), out
    assert re.search(r"^5\.0\s+the first", out, re.M), out
    assert "Get-VMHostSupportedVersion" in d.ok("host", "--help").stdout


def test_new_vm_has_the_default_version_and_its_guest_sees_the_id(daemon):
    d = daemon
    d.create("g", "run=serve")
    v = d.vm("g")
    assert v["version"] == "8.0", v
    gid = v["generation_id"]
    assert uuid.UUID(gid) and v["features"]["generation_id_device"]["present"] is True, v
    show = d.ok("vm", "show", "g").stdout
    assert "Version:       8.0" in show and "Generation ID: " + gid in show, show
    d.ok("vm", "start", "g")
    d.console_until("g", "serving until powered off")
    args = worker_args(d.vm("g")["pid"])
    assert args[args.index("--generation-id") + 1] == gid, args
    assert genid_seen_by_guest(d, "g") == gid
    d.ok("vm", "stop", "g", "--turn-off")
    # persisted: the same after a daemon restart
    d.stop()
    d.start()
    assert (d.vm("g")["version"], d.vm("g")["generation_id"]) == ("8.0", gid)


def test_an_older_version_has_no_device_until_it_is_upgraded(daemon):
    d = daemon
    d.create("old", "run=serve", "--config-version", "5.0")
    v = d.vm("old")
    assert v["version"] == "5.0" and v["generation_id"] is None, v
    dev = v["features"]["generation_id_device"]
    assert dev["present"] is False and dev["since_version"] == "8.0", dev
    assert "cloison vm upgrade-version old" in dev["why"], dev
    assert "no device: needs configuration version 8.0" in d.ok("vm", "show", "old").stdout
    d.ok("vm", "start", "old")
    d.console_until("old", "serving until powered off")
    assert "--generation-id" not in worker_args(d.vm("old")["pid"])
    assert genid_seen_by_guest(d, "old") == str(uuid.UUID(int=0))
    # only while off: a running machine does not change under its guest
    r = d.cli("vm", "upgrade-version", "old", "--yes")
    assert r.returncode == CONFLICT and "only while it is off" in r.stderr, r.stderr
    assert d.vm("old")["version"] == "5.0"
    d.ok("vm", "stop", "old", "--turn-off")
    r = d.ok("vm", "upgrade-version", "old", "--yes")
    assert "cannot be undone" in r.stderr, r.stderr
    assert "upgraded from configuration version 5.0 to 8.0" in r.stdout, r.stdout
    v = d.vm("old")
    assert v["version"] == "8.0" and uuid.UUID(v["generation_id"]), v
    assert v["features"]["generation_id_device"]["present"] is True, v
    again = d.json("vm", "upgrade-version", "old", "--yes")
    assert again["upgraded"] is False and again["generation_id"] == v["generation_id"], again
    d.ok("vm", "start", "old")
    d.console_until("old", "serving until powered off")
    assert genid_seen_by_guest(d, "old") == v["generation_id"]
    d.ok("vm", "stop", "old", "--turn-off")
    d.stop()
    d.start()
    assert d.vm("old")["version"] == "8.0"


def set_version(path, version):
    with open(path) as f:
        cfg = json.load(f)
    cfg["version"] = version
    with open(path, "w") as f:
        json.dump(cfg, f)
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_versions_it_does_not_support_are_refused(daemon, tmp_path):
    d = daemon
    for ver, words in [("9.0", "newer than this cloisond supports (at most 8.0)"),
                       ("abc", "not a configuration version"),
                       ("6.0", "not one this cloisond knows"),
                       ("08.0", "not a configuration version")]:
        r = d.cli("vm", "create", "x", "--kernel", d.guest, "--config-version", ver)
        assert r.returncode == USAGE and words in r.stderr, (ver, r.stderr)
    assert d.json("vm", "list") == [] or all(v["name"] != "x" for v in d.json("vm", "list"))
    d.create("v", "")
    for field, val in (("version", "5.0"), ("generation_id", str(uuid.uuid4()))):
        st, body = d.http("PATCH", "/v1/vms/v", {field: val})
        assert st == 400 and "cannot be set" in body["error"]["message"], (st, body)
    st, body = d.http("POST", "/v1/vms/v/upgrade-version", {"version": "5.0"})
    assert st == 400 and "takes no fields" in body["error"]["message"], (st, body)
    st, body = d.http("POST", "/v1/vms/nope/upgrade-version")
    assert st == 404, (st, body)
    vm = d.vm("v")
    # An export from a newer cloison: the import is refused, nothing made.
    d.ok("vm", "export", "v", tmp_path)
    set_version(tmp_path / "v" / "Virtual Machines" / (vm["id"] + ".json"), "99.0")
    r = d.cli("vm", "import", tmp_path / "v", "--copy", "--name", "v2")
    assert r.returncode != 0 and "newer than this cloisond supports" in r.stderr, r.stderr
    assert all(x["name"] != "v2" for x in d.json("vm", "list"))
    # A configuration file of a newer cloison: skipped at start, untouched.
    d.stop()
    path = os.path.join(d.state_dir, "v", "Virtual Machines", vm["id"] + ".json")
    before = set_version(path, "99.0")
    d.start()
    assert all(v["name"] != "v" for v in d.json("vm", "list"))
    assert re.search(r"skipped: the VM's configuration version 99\.0 is newer than this "
                     r"cloisond supports \(at most 8\.0\): run the VM on a host", d.log()), d.log()
    assert hashlib.sha256(open(path, "rb").read()).hexdigest() == before


def test_generation_id_changes_on_apply_and_on_a_copy_import(daemon, tmp_path):
    d = daemon
    disk = tmp_path / "c.vhdx"
    d.ok("disk", "create", disk, "--size", "8M", "--type", "dynamic")
    d.create("c", "run=serve", "--disk", disk)
    first = d.vm("c")["generation_id"]
    # off: apply gives the VM a new id
    d.ok("vm", "checkpoint", "c", "--name", "off")
    assert d.vm("c")["generation_id"] == first  # taking one changes nothing
    d.ok("checkpoint", "apply", "c", "off")
    second = d.vm("c")["generation_id"]
    assert second != first and uuid.UUID(second)
    # running, with memory: the restored worker tells the guest the new id
    d.ok("vm", "start", "c")
    d.console_until("c", "serving until powered off")
    assert genid_seen_by_guest(d, "c") == second
    d.ok("vm", "checkpoint", "c", "--name", "mem")
    job = d.json("checkpoint", "apply", "c", "mem")
    assert job["state"] == "completed" and d.state("c") == "running", job
    third = d.vm("c")["generation_id"]
    assert third not in (first, second)
    assert genid_seen_by_guest(d, "c") == third
    args = worker_args(d.vm("c")["pid"])
    assert "--restore" in args and args[args.index("--generation-id") + 1] == third, args
    d.ok("vm", "stop", "c", "--turn-off")
    # export; a copy is a new VM to its guest, a restore is the same VM
    exp = tmp_path / "exp"
    exp.mkdir()
    d.ok("vm", "export", "c", exp)
    d.ok("vm", "import", exp / "c", "--copy", "--name", "c2")
    c2 = d.vm("c2")
    assert c2["generation_id"] not in (first, second, third) and c2["id"] != d.vm("c")["id"]
    d.ok("vm", "remove", "c2")
    d.ok("vm", "remove", "c")
    # (under another name: the removed VM's folder keeps its disks)
    d.ok("vm", "import", exp / "c", "--restore", "--name", "c3")
    assert d.vm("c3")["generation_id"] == third
