"""The `cloison vm` and `cloison host` CLI: --help on every verb, usage
errors, exit codes scripts rely on, human and JSON output, disks in every
format served through the daemon, the console."""
import hashlib
import json
import os

import pytest

from conftest import binary, run
from test_daemon_lib import daemon  # noqa: F401 (fixture)

VERBS = ["create", "list", "show", "set", "start", "stop", "pause", "resume", "restart",
         "remove", "console", "watch"]


def test_help_on_every_verb(cli_bin):
    r = run([cli_bin, "vm", "--help"])
    assert r.returncode == 0
    for v in VERBS:
        assert v in r.stdout
        h = run([cli_bin, "vm", v, "--help"])
        assert h.returncode == 0, (v, h.stderr)
        assert h.stdout.startswith("usage: cloison vm " + v), h.stdout
        assert "--json" in h.stdout and "--socket" in h.stdout
    r = run([cli_bin, "host", "info", "--help"])
    assert r.returncode == 0 and "usage: cloison host info" in r.stdout


def test_usage_errors_exit_2(cli_bin, tmp_path):
    env = dict(os.environ, CLOISON_SOCKET=str(tmp_path / "none.sock"))
    cases = [
        ["vm"],
        ["vm", "frobnicate"],
        ["vm", "start"],
        ["vm", "start", "a", "b"],
        ["vm", "create", "x"],                                # no --kernel
        ["vm", "create", "x", "--kernel", "/k", "--memory", "lots"],
        ["vm", "create", "x", "--kernel", "/k", "--cpus", "-1"],
        ["vm", "create", "x", "--kernel", "/k", "--net", "bridge=br0"],
        ["vm", "stop", "x", "--timeout", "soon"],
        ["vm", "set", "x"],                                   # nothing to change
        ["vm", "list", "--bogus"],
        ["vm", "watch", "--count", "0"],
        ["host"],
        ["host", "info", "extra"],
    ]
    for c in cases:
        r = run([cli_bin] + c, env=env)
        assert r.returncode == 2, (c, r.returncode, r.stderr)
        assert "cloison: error:" in r.stderr, (c, r.stderr)


def test_daemon_unreachable_exit_5(cli_bin, tmp_path):
    for args in (["vm", "list"], ["vm", "start", "x"], ["host", "info"], ["vm", "watch"],
                 ["vm", "console", "x"]):
        r = run([cli_bin] + args + ["--socket", str(tmp_path / "nobody.sock")])
        assert r.returncode == 5, (args, r.stderr)
        assert "cannot reach cloisond" in r.stderr


def test_human_and_json_output(daemon):
    assert "no VMs" in daemon.ok("vm", "list").stdout
    daemon.create("web", "count", "--cpus", "2", "--notes", "front end")
    daemon.create("db", "count")
    out = daemon.ok("vm", "list").stdout.splitlines()
    assert out[0].split()[:5] == ["NAME", "STATE", "CPUS", "MEMORY", "UPTIME"]
    assert [l.split()[0] for l in out[1:]] == ["db", "web"]
    vms = daemon.json("vm", "list")
    assert [(v["name"], v["state"]) for v in vms] == [("db", "off"), ("web", "off")]
    assert all(len(v["id"]) == 36 for v in vms)
    show = daemon.ok("vm", "show", "web").stdout
    assert "Processors:    2" in show and "Notes:         front end" in show
    # --socket beats $CLOISON_SOCKET.
    r = run([daemon.cli_bin, "vm", "list", "--json", "--socket", daemon.socket],
            env=dict(os.environ, CLOISON_SOCKET="/nonexistent.sock"))
    assert r.returncode == 0 and len(json.loads(r.stdout)) == 2
    host = daemon.json("host", "info")
    assert host["vms"]["total"] == 2 and host["vms"]["off"] == 2
    assert host["resources"]["cpus"] >= 1 and host["resources"]["memory_total"] > 0
    assert host["virtualization"]["can_run"] is True
    human = daemon.ok("host", "info").stdout
    assert "VMs:             2" in human and "Virtualization:  KVM API %d" % (
        host["virtualization"]["api_version"]) in human
    caps = host["virtualization"]["capabilities"]
    assert "KVM features:    %d of %d present" % (
        sum(c["ok"] for c in caps), len(caps)) in human
    assert "Can run VMs:     yes" in human


def test_create_refuses_missing_files(daemon, tmp_path):
    r = daemon.cli("vm", "create", "x", "--kernel", tmp_path / "nope")
    assert r.returncode == 2 and "nope" in r.stderr
    r = daemon.cli("vm", "create", "x", "--kernel", daemon.guest, "--disk", "/nonexistent.vhdx")
    assert r.returncode == 2 and "/nonexistent.vhdx" in r.stderr
    bad = tmp_path / "bad.vhdx"
    bad.write_bytes(b"vhdxfile" + b"\0" * 4096)   # VHDX signature, no valid headers
    r = daemon.cli("vm", "create", "x", "--kernel", daemon.guest, "--disk", bad)
    assert r.returncode == 2 and "bad.vhdx" in r.stderr, r.stderr
    assert daemon.json("vm", "list") == []


@pytest.mark.parametrize("fmt", ["vhdx", "vhd", "raw", "avhdx"])
def test_disk_served_through_the_daemon(daemon, tmp_path, fmt):
    """A disk of each format, created by `cloison disk create`, attached with
    `vm create --disk`: the guest fills it, then a second boot reads it back.
    avhdx: a differencing VHDX whose parent is a dynamic VHDX."""
    path = tmp_path / ("d." + fmt)
    size = 8 << 20
    if fmt == "avhdx":
        parent = tmp_path / "parent.vhdx"
        daemon.ok("disk", "create", parent, "--size", str(size), "--type", "dynamic")
        daemon.ok("disk", "create", path, "--type", "differencing", "--parent", parent)
    else:
        daemon.ok("disk", "create", path, "--size", str(size), "--type", "dynamic")
    daemon.create("fill", "blkfill=171", "--disk", path)
    daemon.ok("vm", "start", "fill")
    v = daemon.wait_state("fill", "off", timeout=120)
    assert v["reason"] == "the guest powered off", v
    daemon.ok("vm", "set", "fill", "--cmdline", "run=serve blksum")
    daemon.ok("vm", "start", "fill")
    out = daemon.console_until("fill", "RESULT blk_sha256=", timeout=120)
    got = out.split("RESULT blk_sha256=")[1].split()[0]
    assert got == hashlib.sha256(b"\xab" * size).hexdigest()
    daemon.ok("vm", "stop", "fill", "--turn-off")
    daemon.ok("vm", "remove", "fill")
    assert path.exists()
    r = run([binary("cloison"), "disk", "check", path])
    assert r.returncode == 0, r.stdout + r.stderr


def test_console_needs_a_running_vm(daemon):
    daemon.create("c1", "count")
    r = daemon.cli("vm", "console", "c1")
    assert r.returncode == 4 and "is off" in r.stderr
    assert daemon.cli("vm", "console", "zzz").returncode == 3
    daemon.ok("vm", "start", "c1")
    out = daemon.console_until("c1", "RESULT count=3")
    assert "RESULT boot=ok" in out   # replayed from the start
    # Two consoles at once both see the output.
    daemon.console_until("c1", "RESULT count=")
    daemon.ok("vm", "stop", "c1", "--turn-off")


def test_set_and_remove_keep_disks(daemon, tmp_path):
    a, b = tmp_path / "a.img", tmp_path / "b.img"
    for p in (a, b):
        p.write_bytes(b"\0" * (1 << 20))
    daemon.create("s", "", "--disk", a)
    daemon.ok("vm", "set", "s", "--add-disk", str(b) + ",readonly", "--memory", "256M",
              "--cpus", "3", "--operator", "nobody", "--automatic-start-action", "start")
    v = daemon.vm("s")
    assert [(d["path"], d["readonly"]) for d in v["disks"]] == [(str(a), False), (str(b), True)]
    assert v["memory"] == 256 << 20 and v["cpus"] == 3 and v["operators"] == ["nobody"]
    assert v["automatic_start_action"] == "start"
    daemon.ok("vm", "set", "s", "--remove-disk", a)
    assert [d["path"] for d in daemon.vm("s")["disks"]] == [str(b)]
    r = daemon.cli("vm", "set", "s", "--automatic-stop-action", "explode")
    assert r.returncode == 2 and "keep-running" in r.stderr
    out = daemon.ok("vm", "remove", "s").stdout
    assert "Kept its disk " + str(b) in out
    assert a.exists() and b.exists()


def complete(daemon, words):
    """Runs the bash completion for `words` (the last is being typed)."""
    script = ("source %s; COMP_WORDS=(%s); COMP_CWORD=%d; _cloison; printf '%%s\\n' \"${COMPREPLY[@]}\""
              % (os.path.join(os.path.dirname(__file__), "..", "..", "completions", "cloison.bash"),
                 " ".join("'%s'" % w for w in words), len(words) - 1))
    env = dict(os.environ, CLOISON_SOCKET=daemon.socket,
               PATH=os.path.dirname(str(daemon.cli_bin)) + ":" + os.environ["PATH"])
    r = run(["bash", "-c", script], env=env)
    assert r.returncode == 0, r.stderr
    return sorted(w for w in r.stdout.split("\n") if w)


def test_bash_completion(daemon):
    assert complete(daemon, ["cloison", "v"]) == ["vm"]
    assert complete(daemon, ["cloison", "vm", "st"]) == ["start", "stop"]
    assert "--turn-off" in complete(daemon, ["cloison", "vm", "stop", "--"])
    daemon.create("alpha")
    daemon.create("beta")
    assert complete(daemon, ["cloison", "vm", "start", ""]) == ["alpha", "beta"]
    assert complete(daemon, ["cloison", "vm", "show", "al"]) == ["alpha"]
    assert complete(daemon, ["cloison", "vm", "set", "x", "--automatic-stop-action", ""]) == \
        ["keep-running", "save", "shutdown", "turn-off"]
    assert complete(daemon, ["cloison", "vm", "up"]) == ["upgrade-version"]
    assert complete(daemon, ["cloison", "host", "v"]) == ["versions"]
    assert "--config-version" in complete(daemon, ["cloison", "vm", "create", "x", "--con"])


def test_a_disk_is_not_written_by_two_running_vms(daemon, tmp_path):
    disk = tmp_path / "shared.img"
    disk.write_bytes(b"\0" * (1 << 20))
    link = tmp_path / "alias.img"
    os.symlink(disk, link)
    daemon.create("one", "run=serve", "--disk", disk)
    daemon.create("two", "run=serve", "--disk", link)            # same file, other path
    daemon.create("ro1", "run=serve", "--disk", str(disk) + ",readonly")
    daemon.ok("vm", "start", "one")
    r = daemon.cli("vm", "start", "two")
    assert r.returncode == 4 and "in use by VM 'one'" in r.stderr, r.stderr
    assert daemon.cli("vm", "start", "ro1").returncode == 4   # one writes it
    daemon.ok("vm", "stop", "one", "--turn-off")
    daemon.ok("vm", "set", "one", "--remove-disk", disk, "--add-disk", str(disk) + ",readonly")
    daemon.ok("vm", "start", "one")
    daemon.ok("vm", "start", "ro1")                            # two readers are fine
    for n in ("one", "ro1"):
        daemon.ok("vm", "stop", n, "--turn-off")


def test_network_adapter_with_automatic_mac(daemon):
    """--net tap=NAME: the daemon allocates a MAC from its pool, passes the
    adapter to the worker, and the guest answers ping with that MAC."""
    from conftest import require_root, which
    require_root()
    if not which("ip") or not which("ping"):
        pytest.skip("needs iproute2 and ping")
    tap, host_ip, guest_ip = "cltap%d" % (os.getpid() % 1000), "10.199.77.1", "10.199.77.2"
    r = run(["ip", "tuntap", "add", "mode", "tap", "name", tap])
    if r.returncode:
        pytest.skip("cannot create a tap device here: " + r.stderr.strip())
    try:
        run(["ip", "addr", "add", host_ip + "/24", "dev", tap])
        run(["ip", "link", "set", tap, "up"])
        daemon.create("n1", "ip=%s/24 run=serve" % guest_ip, "--net", "tap=" + tap)
        mac = daemon.vm("n1")["network_adapters"][0]["mac"]
        assert mac.startswith("02:c1:05:")
        daemon.create("n2", "", "--net", "tap=%s,mac=02:AA:00:00:00:01" % tap)
        nic = daemon.vm("n2")["network_adapters"][0]
        assert nic == {"tap": tap, "mac": "02:aa:00:00:00:01", "mac_auto": False}
        daemon.ok("vm", "start", "n1")
        daemon.console_until("n1", "RESULT boot=ok")
        r = run(["ping", "-c", "3", "-W", "5", guest_ip])
        assert " 0% packet loss" in r.stdout or ", 0% packet loss" in r.stdout, r.stdout
        neigh = run(["ip", "neigh", "show", "dev", tap]).stdout
        assert mac in neigh, neigh
        daemon.ok("vm", "stop", "n1", "--turn-off")
    finally:
        run(["ip", "link", "del", tap])
