#!/usr/bin/python3
"""virtio-net benchmark: the test guest answering ICMP echo and UDP echo
(`ip=ADDR/PREFIX run=serve`, docs/testguest.md) under cloison-vmm and under
QEMU (`-device virtio-net-pci` on a tap, vhost=off), in the same run, each
on its own tap in one bridge inside a private network namespace; the host
side is an address on that bridge (the real host network is not touched).

  ping     ICMP echo round trip: min / avg over --pings pings 5 ms apart
  udp-rtt  one 64-byte datagram in flight: round trips per second
  udp-tput 1400-byte datagrams, --window in flight, for --secs: echoed
           datagrams per second and MB/s (each way)

Prints ours/qemu ratios (for RTT, qemu/ours: above 1 means we are faster).

usage: sudo bench/net.py [--build DIR] [--secs 4] [--pings 200] [--window 32]
"""
import argparse
import os
import pathlib
import re
import subprocess
import sys
import time

TOP = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TOP / "tests/system"))
from netns_util import NetNs  # noqa: E402

UDP_CLIENT = r"""
import os, select, socket, sys, time
ip, size, window, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.connect((ip, 7))
s.setblocking(False)
msg = os.urandom(size)
for _ in range(20):                     # warm up: ARP, caches
    s.send(msg); select.select([s], [], [], 0.5)
    try: s.recv(65536)
    except BlockingIOError: pass
got = out = 0
t0 = time.monotonic(); end = t0 + secs; last = t0
while True:
    now = time.monotonic()
    if now >= end: break
    while out - got < window:
        s.send(msg); out += 1
    r, _, _ = select.select([s], [], [], 0.2)
    if not r:
        out = got                        # lost ones: refill the window
        continue
    while True:
        try:
            if len(s.recv(65536)) == size: got += 1
        except BlockingIOError:
            break
t = time.monotonic() - t0
print("echoed=%d seconds=%.3f pps=%.0f mbps=%.2f" % (got, t, got / t, got * size / t / 1e6))
"""


def find(build, name):
    for sub in ("src/vmm", "guest", "."):
        p = pathlib.Path(build) / sub / name
        if p.exists():
            return p
    sys.exit("%s not built under %s" % (name, build))


def start_peer(ns, peer, vmm, guest, tap, ip, mac, logdir):
    ns.add_tap(tap)
    log = open(os.path.join(logdir, peer + ".serial"), "w")
    cmdline = "ip=%s/24 run=serve" % ip
    if peer == "ours":
        cmd = [vmm, "--kernel", guest, "--memory", "256M", "--serial", "stdio",
               "--cmdline", cmdline, "--net", "tap=%s,mac=%s" % (tap, mac)]
    else:
        cmd = ["qemu-system-x86_64", "-enable-kvm", "-cpu", "host,-arch-capabilities", "-M", "q35", "-m", "256M",
               "-smp", "1", "-kernel", guest, "-append", cmdline, "-display", "none",
               "-nodefaults", "-serial", "stdio", "-no-reboot",
               "-netdev", "tap,id=n0,ifname=%s,script=no,downscript=no,vhost=off" % tap,
               "-device", "virtio-net-pci,netdev=n0,mac=%s,disable-legacy=on" % mac]
    p = ns.popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    path = log.name
    for _ in range(600):
        with open(path) as f:
            if "RESULT net_ip=" in f.read():
                return p
        if p.poll() is not None:
            sys.exit("%s exited:\n%s" % (peer, open(path).read()[-2000:]))
        time.sleep(0.1)
    p.kill()
    sys.exit("%s never brought its NIC up:\n%s" % (peer, open(path).read()[-2000:]))


def ping(ns, ip, count):
    r = ns.run(["ping", "-q", "-c", str(count), "-i", "0.005", "-W", "1", ip], check=False,
               timeout=count + 60)
    m = re.search(r"= ([0-9.]+)/([0-9.]+)/([0-9.]+)", r.stdout)
    loss = re.search(r"([0-9.]+)% packet loss", r.stdout)
    if not m:
        sys.exit("ping %s failed:\n%s%s" % (ip, r.stdout, r.stderr))
    return float(m.group(1)) * 1000, float(m.group(2)) * 1000, float(loss.group(1))


def udp(ns, ip, size, window, secs):
    r = ns.run([sys.executable, "-c", UDP_CLIENT, ip, str(size), str(window), str(secs)],
               timeout=secs + 60)
    return {k: float(v) for k, v in re.findall(r"(\w+)=([0-9.]+)", r.stdout)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.environ.get("CLOISON_BUILD", str(TOP / "build")))
    ap.add_argument("--secs", type=float, default=4)
    ap.add_argument("--pings", type=int, default=200)
    ap.add_argument("--window", type=int, default=32)
    a = ap.parse_args()
    if os.geteuid():
        sys.exit("needs root (network namespace, taps)")
    vmm, guest = str(find(a.build, "cloison-vmm")), str(find(a.build, "cloison-testguest"))
    import tempfile
    with tempfile.TemporaryDirectory(prefix="cloison-net-") as logdir, \
            NetNs(prefix="10.202.0", name="clbench%d" % os.getpid()) as ns:
        peers = {}
        try:
            peers["ours"] = start_peer(ns, "ours", vmm, guest, "tapc", "10.202.0.2",
                                       "02:c1:00:00:01:02", logdir)
            peers["qemu"] = start_peer(ns, "qemu", vmm, guest, "tapq", "10.202.0.3",
                                       "02:c1:00:00:01:03", logdir)
            ips = {"ours": "10.202.0.2", "qemu": "10.202.0.3"}
            res = {}
            for peer in ("qemu", "ours", "qemu", "ours"):  # interleaved, best counts
                ip = ips[peer]
                pmin, pavg, loss = ping(ns, ip, a.pings)
                rtt = udp(ns, ip, 64, 1, a.secs)
                tput = udp(ns, ip, 1400, a.window, a.secs)
                cur = {"ping_min": pmin, "ping_avg": pavg, "ping_loss": loss,
                       "udp_rtt_pps": rtt["pps"], "udp_pps": tput["pps"],
                       "udp_mbps": tput["mbps"]}
                best = res.setdefault(peer, cur)
                for k in cur:
                    if k.startswith("ping"):
                        best[k] = min(best[k], cur[k])
                    else:
                        best[k] = max(best[k], cur[k])
            q, o = res["qemu"], res["ours"]
            print("%-28s %12s %12s %8s" % ("metric", "qemu", "ours", "ratio"))
            print("%-28s %12.1f %12.1f %7.2fx" % ("ping min RTT (us)", q["ping_min"],
                                                  o["ping_min"], q["ping_min"] / o["ping_min"]))
            print("%-28s %12.1f %12.1f %7.2fx" % ("ping avg RTT (us)", q["ping_avg"],
                                                  o["ping_avg"], q["ping_avg"] / o["ping_avg"]))
            print("%-28s %12.0f %12.0f %7.2fx" % ("UDP 64B round trips/s", q["udp_rtt_pps"],
                                                  o["udp_rtt_pps"],
                                                  o["udp_rtt_pps"] / q["udp_rtt_pps"]))
            print("%-28s %12.0f %12.0f %7.2fx" % ("UDP 1400B echoed/s (w=%d)" % a.window,
                                                  q["udp_pps"], o["udp_pps"],
                                                  o["udp_pps"] / q["udp_pps"]))
            print("%-28s %12.2f %12.2f %7.2fx" % ("UDP 1400B MB/s each way", q["udp_mbps"],
                                                  o["udp_mbps"], o["udp_mbps"] / q["udp_mbps"]))
        finally:
            for p in peers.values():
                p.kill()
                p.wait()


if __name__ == "__main__":
    main()
