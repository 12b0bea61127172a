#!/usr/bin/python3
"""Virtual switch benchmark (issue 11): cloison VMs on cloisond switches
against QEMU guests on a plain Linux bridge set up as libvirt does it
(bridge + tap, STP off, forward delay 0), with the same test guest
(docs/testguest.md), in the same run, rounds alternated, medians.

Everything runs inside two network namespaces made here: "host-c", where
cloisond runs and makes its switches, and "host-q", where the libvirt-style
bridge and the QEMU guests live (so neither side's firewall tables are on
the other's path). The real host network is not touched.

  VM<->host  the namespace pings and UDP-echoes a guest (`ip= run=serve`):
             cloison VM on an internal switch (`cloison switch create`) vs
             QEMU (`-netdev tap,vhost=off -device virtio-net-pci`) on the bridge.
  VM<->VM    a client guest (`netbench=PEER`, guest/net.c) pings and
             UDP-echoes a server guest: two cloison VMs on one private switch
             vs two QEMU guests on the bridge.
  switches   `cloison switch create` time per type (private, internal, nat),
             then 50 VMs (test guest, 32 MiB) started on it with `vm start`
             each until all run, then removed.

Ratios: ours/qemu for rates, qemu/ours for times, so >= 1 means cloison at
or above QEMU.

usage: sudo bench/switch.py [--build DIR] [--rounds 3] [--secs 4] [--pings 200]
                            [--vms 50] [--skip-vms]
"""
import argparse
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

TOP = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TOP / "bench"))
sys.path.insert(0, str(TOP / "tests/system"))


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.environ.get("CLOISON_BUILD", str(TOP / "build")))
    ap.add_argument("--rounds", type=int, default=3, help="alternated rounds per side")
    ap.add_argument("--secs", type=int, default=4, help="seconds per UDP measurement")
    ap.add_argument("--pings", type=int, default=200)
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--vms", type=int, default=50, help="VMs started per switch type")
    ap.add_argument("--switch-reps", type=int, default=5, help="switch creations per type")
    ap.add_argument("--skip-vms", action="store_true", help="switch creation times without the VMs")
    ap.add_argument("--parts", default="host,vm,switches",
                    help="comma-separated: host (VM<->host), vm (VM<->VM), switches")
    ap.add_argument("--vmvm-type", default="private", choices=("private", "internal"),
                    help="diagnosis: the switch type of the VM<->VM part")
    ap.add_argument("--no-sandbox", action="store_true",
                    help="diagnosis only: cloisond --no-sandbox (workers as root, unjailed)")
    return ap.parse_args()


def snapshot(build):
    """Copies the binaries the run uses: other work on this host rebuilds
    build/ while the bench runs. World-readable, for the sandboxed workers."""
    snap = tempfile.mkdtemp(prefix="cloison-swbench-bin-")
    os.chmod(snap, 0o755)
    for sub, name in (("src/vmm", "cloison-vmm"), ("src/cli", "cloison"),
                      ("src/daemon", "cloisond"), ("guest", "cloison-testguest")):
        src = pathlib.Path(build) / sub / name
        if not src.exists():
            sys.exit("%s not built under %s: run ninja -C %s first" % (name, build, build))
        os.makedirs(os.path.join(snap, sub), mode=0o755, exist_ok=True)
        shutil.copy2(src, os.path.join(snap, sub, name))
    for root, dirs, _ in os.walk(snap):
        for x in dirs:
            os.chmod(os.path.join(root, x), 0o755)
    return snap


A = parse_args()
A.snapshot = snapshot(A.build)
os.environ["CLOISON_BUILD"] = A.snapshot
import net  # noqa: E402  (bench/net.py: ping, udp, start_peer, find)
from netns_util import NetNs  # noqa: E402
from test_daemon_switch import NsDaemon  # noqa: E402

# cloisond refuses less than 64 MiB (src/daemon/config.c), the 32 MiB asked for
# would need that limit lowered.
VM_MEMORY = "64M"
MAC_RANGE = "02:c1:0b:00:00:00-02:c1:0b:00:ff:ff"  # room for every VM of the run


def libvirt_bridge(ns):
    """What libvirt does for a <network> bridge: STP off, forward delay 0
    (NetNs made br0 with the host-side address)."""
    ns.ip("link", "set", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0")


def qemu_cmd(guest, tap, mac, cmdline):
    return ["qemu-system-x86_64", "-enable-kvm", "-cpu", "host,-arch-capabilities", "-M", "q35",
            "-m", "256M", "-smp", "1", "-kernel", guest, "-append", cmdline, "-display", "none",
            "-nodefaults", "-serial", "stdio", "-no-reboot",
            "-netdev", "tap,id=n0,ifname=%s,script=no,downscript=no,vhost=off" % tap,
            "-device", "virtio-net-pci,netdev=n0,mac=%s,disable-legacy=on" % mac]


def wait_log(path, needle, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with open(path, errors="replace") as f:
            text = f.read()
        if needle in text and "\n" in text.split(needle, 1)[1]:
            return text
        if proc.poll() is not None:
            sys.exit("QEMU exited:\n" + text[-2000:])
        time.sleep(0.05)
    proc.kill()
    sys.exit("QEMU never printed %r:\n%s" % (needle, open(path).read()[-2000:]))


def results(text):
    return {k: float(v) for k, v in re.findall(r"RESULT (netbench_\w+)=([0-9.]+)", text)}


def check_bench(side, text):
    if "RESULT netbench_error=" in text or "RESULT netbench_done=1" not in text:
        sys.exit("%s client failed:\n%s" % (side, text[-2000:]))
    r = results(text)
    return {"ping_min": r["netbench_ping_min_ns"] / 1000, "ping_avg": r["netbench_ping_avg_ns"] / 1000,
            "ping_loss": r["netbench_ping_lost"] * 100 / A.pings,
            "udp_rtt_pps": r["netbench_udp_rtt_per_s"], "udp_pps": r["netbench_udp_per_s"],
            "udp_mbps": r["netbench_udp_bytes_per_s"] / 1e6}


def host_round(ns, ip):
    pmin, pavg, loss = net.ping(ns, ip, A.pings)
    rtt = net.udp(ns, ip, 64, 1, A.secs)
    tput = net.udp(ns, ip, 1400, A.window, A.secs)
    return {"ping_min": pmin, "ping_avg": pavg, "ping_loss": loss, "udp_rtt_pps": rtt["pps"],
            "udp_pps": tput["pps"], "udp_mbps": tput["mbps"]}


class Bench:
    def __init__(self, d, cns, qns, guest, logdir):
        self.d, self.cns, self.qns, self.guest, self.logdir = d, cns, qns, guest, logdir
        self.procs = []
        self.n = 0

    def qemu(self, name, tap, mac, cmdline):
        log = os.path.join(self.logdir, name + ".serial")
        p = self.qns.popen(qemu_cmd(self.guest, tap, mac, cmdline), stdout=open(log, "w"),
                           stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p, log

    def stop_qemu(self, p):
        p.kill()
        p.wait()
        self.procs.remove(p)

    def vm(self, name, cmdline, switch, memory="256M"):
        self.d.ok("vm", "create", name, "--kernel", self.guest, "--cmdline", cmdline,
                  "--memory", memory, "--net", "switch=" + switch)
        self.d.ok("vm", "start", name)

    def vm_gone(self, name):
        self.d.ok("vm", "stop", name, "--turn-off")
        self.d.ok("vm", "remove", name)

    # 1. VM <-> host
    def vm_host(self):
        d = self.d
        d.ok("switch", "create", "swi", "--type", "internal", "--address", "10.230.1.1/24")
        self.vm("hc", "ip=10.230.1.2/24 run=serve", "swi")
        d.console_until("hc", "RESULT net_ip=")
        self.qns.add_tap("vnet0")
        q, log = self.qemu("hq", "vnet0", "52:54:00:0b:00:02", "ip=10.231.0.2/24 run=serve")
        wait_log(log, "RESULT net_ip=", q)
        res = {"ours": [], "qemu": []}
        for r in range(A.rounds):
            for side in (("qemu", "ours") if r % 2 == 0 else ("ours", "qemu")):
                if side == "ours":
                    res[side].append(host_round(self.cns, "10.230.1.2"))
                else:
                    res[side].append(host_round(self.qns, "10.231.0.2"))
                print("  VM<->host round %d %s: %s" % (r + 1, side, fmt_round(res[side][-1])),
                      flush=True)
        self.stop_qemu(q)
        self.vm_gone("hc")
        d.ok("switch", "remove", "swi")
        return res

    # 2. VM <-> VM
    def vm_vm(self):
        d = self.d
        client = "ip=%s/24 netbench=%s secs=%d"
        d.ok("switch", "create", "swp", "--type", A.vmvm_type)
        self.vm("ps", "ip=10.230.2.2/24 run=serve", "swp")
        d.console_until("ps", "RESULT net_ip=")
        self.qns.add_tap("vnet1")
        self.qns.add_tap("vnet2")
        qs, log = self.qemu("qs", "vnet1", "52:54:00:0b:00:12", "ip=10.231.0.12/24 run=serve")
        wait_log(log, "RESULT net_ip=", qs)
        res = {"ours": [], "qemu": []}
        timeout = A.pings * 0.01 + 2 * A.secs + 120
        for r in range(A.rounds):
            for side in (("qemu", "ours") if r % 2 == 0 else ("ours", "qemu")):
                if side == "ours":
                    name = "pc%d" % r
                    self.vm(name, client % ("10.230.2.3", "10.230.2.2", A.secs), "swp")
                    text = d.console_until(name, "RESULT netbench_done=", timeout=timeout)
                    self.vm_gone(name)
                else:
                    qc, log = self.qemu("qc%d" % r, "vnet2", "52:54:00:0b:00:13",
                                        client % ("10.231.0.13", "10.231.0.12", A.secs))
                    text = wait_log(log, "RESULT netbench_done=", qc, timeout=timeout)
                    self.stop_qemu(qc)
                res[side].append(check_bench(side, text))
                print("  VM<->VM round %d %s: %s" % (r + 1, side, fmt_round(res[side][-1])),
                      flush=True)
        self.stop_qemu(qs)
        self.vm_gone("ps")
        d.ok("switch", "remove", "swp")
        return res

    # 3. switch creation and 50 VMs on it
    def switches(self):
        d = self.d
        out = {}
        for kind, net3 in (("private", "10.232.0"), ("internal", "10.233.0"), ("nat", "10.234.0")):
            extra = {"internal": ["--address", net3 + ".1/24"],
                     "nat": ["--subnet", net3 + ".0/24"]}.get(kind, [])
            times = []
            for i in range(A.switch_reps):
                name = "sw%s%d" % (kind[0], i)
                t0 = time.perf_counter()
                d.ok("switch", "create", name, "--type", kind, *extra)
                times.append(time.perf_counter() - t0)
                if i < A.switch_reps - 1:
                    d.ok("switch", "remove", name)
            row = {"create_ms": [t * 1000 for t in times]}
            if not A.skip_vms:
                names = ["v%s%02d" % (kind[0], j) for j in range(A.vms)]
                for j, vm in enumerate(names):
                    d.ok("vm", "create", vm, "--kernel", self.guest, "--memory", VM_MEMORY,
                         "--cmdline", "ip=%s.%d/24 run=serve" % (net3, 10 + j),
                         "--net", "switch=" + name)
                t0 = time.perf_counter()
                for vm in names:
                    d.ok("vm", "start", vm)
                while True:
                    states = {v["name"]: v["state"] for v in d.json("vm", "list")}
                    if all(states.get(vm) == "running" for vm in names):
                        break
                    if time.perf_counter() - t0 > 600:
                        sys.exit("not all VMs running after 600 s: %s" % states)
                    time.sleep(0.05)
                row["start_s"] = time.perf_counter() - t0
                # They really are on the switch: the last one answers (not on private).
                if kind != "private":
                    pmin, _, loss = net.ping(self.cns, "%s.%d" % (net3, 10 + A.vms - 1), 3)
                    row["last_vm_ping_loss"] = loss
                t0 = time.perf_counter()
                for vm in names:
                    self.vm_gone(vm)
                row["remove_s"] = time.perf_counter() - t0
            d.ok("switch", "remove", name)
            out[kind] = row
            print("  switch %s: %s" % (kind, row), flush=True)
        return out

    def cleanup(self):
        for p in list(self.procs):
            self.stop_qemu(p)


def fmt_round(r):
    return "ping %.0f/%.0f us (loss %.0f%%), 64B rtt %.0f/s, 1400B %.0f/s %.1f MB/s" % (
        r["ping_min"], r["ping_avg"], r["ping_loss"], r["udp_rtt_pps"], r["udp_pps"], r["udp_mbps"])


def med(rounds, key):
    return statistics.median(r[key] for r in rounds)


def table(title, res):
    q, o = res["qemu"], res["ours"]
    rows = [("ping min RTT (us)", "ping_min", True, "%.1f"),
            ("ping avg RTT (us)", "ping_avg", True, "%.1f"),
            ("UDP 64B round trips/s", "udp_rtt_pps", False, "%.0f"),
            ("UDP 1400B echoed/s (w=%d)" % A.window, "udp_pps", False, "%.0f"),
            ("UDP 1400B MB/s each way", "udp_mbps", False, "%.2f")]
    print("\n%s (medians of %d alternated rounds)" % (title, A.rounds))
    print("| %-28s | %12s | %12s | %8s |" % ("metric", "qemu", "cloison", "ratio"))
    print("|%s|%s|%s|%s|" % ("-" * 30, "-" * 13 + ":", "-" * 13 + ":", "-" * 9 + ":"))
    verdict = []
    for label, key, lower_better, f in rows:
        qv, ov = med(q, key), med(o, key)
        ratio = (qv / ov if lower_better else ov / qv) if qv and ov else float("nan")
        print("| %-28s | %12s | %12s | %7.2fx |" % (label, f % qv, f % ov, ratio))
        verdict.append((label, ratio))
    loss = (max(r["ping_loss"] for r in q), max(r["ping_loss"] for r in o))
    print("ping loss (worst round): qemu %.1f %%, cloison %.1f %%" % loss)
    return verdict


def main():
    if os.geteuid():
        sys.exit("needs root (network namespaces, taps, cloisond's switches)")
    if not shutil.which("qemu-system-x86_64"):
        sys.exit("qemu-system-x86_64 is not installed: the QEMU side needs it")
    guest = str(net.find(A.snapshot, "cloison-testguest"))
    pid = os.getpid() % 100000
    print("bench/switch.py %s, uptime: %s" % (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                              subprocess.run(["uptime"], capture_output=True,
                                                             text=True).stdout.strip()), flush=True)
    with tempfile.TemporaryDirectory(prefix="cloison-swbench-") as tmp, \
            NetNs(prefix="10.230.0", name="clswc%d" % pid) as cns, \
            NetNs(prefix="10.231.0", name="clswq%d" % pid) as qns:
        cns.ip("link", "del", "br0")  # the cloison side's bridges are cloisond's
        libvirt_bridge(qns)
        d = NsDaemon(os.path.join(tmp, "state"), cns.name)
        if A.no_sandbox:
            d.extra_args.append("--no-sandbox")
        d.start()
        b = Bench(d, cns, qns, guest, tmp)
        try:
            d.ok("host", "set", "--mac-range", MAC_RANGE)
            parts = A.parts.split(",")
            host = b.vm_host() if "host" in parts else None
            vmvm = b.vm_vm() if "vm" in parts else None
            sw = b.switches() if "switches" in parts else {}
        finally:
            b.cleanup()
            d.cleanup()
            shutil.rmtree(A.snapshot, ignore_errors=True)
        verdict = []
        if host:
            verdict += table("VM <-> host: internal switch vs libvirt-style bridge", host)
        if vmvm:
            verdict += table("VM <-> VM: %s switch vs libvirt-style bridge" % A.vmvm_type, vmvm)
        if sw:
            print("\nswitch create (median of %d) and %d VMs (%s) started with `vm start` each"
                  % (A.switch_reps, A.vms, VM_MEMORY))
            print("| %-9s | %10s | %16s | %12s |" % ("type", "create ms", "%d VMs running s" % A.vms,
                                                     "remove s"))
            print("|%s|%s|%s|%s|" % ("-" * 11, "-" * 11 + ":", "-" * 17 + ":", "-" * 13 + ":"))
        for kind, row in sw.items():
            print("| %-9s | %10.1f | %16s | %12s |" % (
                kind, statistics.median(row["create_ms"]),
                "%.2f" % row["start_s"] if "start_s" in row else "-",
                "%.2f" % row["remove_s"] if "remove_s" in row else "-"))
        below = [label for label, r in verdict if not r >= 1]
        if verdict:
            print("\nrows at or above QEMU: %d of %d%s" % (
                len(verdict) - len(below), len(verdict),
                "; below: " + ", ".join(below) if below else ""))


if __name__ == "__main__":
    main()
