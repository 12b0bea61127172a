#!/usr/bin/python3
"""API benchmark: cloisond + cloison against libvirtd + virsh on the same
test guest, in the same run.

  - `vm list` latency with 100 defined VMs (the CLI end to end, and for
    cloisond also the raw HTTP request on its socket);
  - `vm start` -> running latency (the command returns once the VM runs);
  - time to start 50 VMs at once (50 concurrent clients).

libvirt defines its domains with direct kernel boot of the same PVH test
guest (`<kernel>` + `<cmdline>`, QEMU with -cpu qemu64 minus svm, as the
nested host requires). QEMU runs as libvirt-qemu, so /dev/kvm gets an ACL
for that user for the run (removed afterwards).

usage: bench/api.py [--build DIR] [--vms 100] [--parallel 50] [--reps 10]
"""
import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LV = "qemu:///system"


def sh(cmd, check=True, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and r.returncode:
        sys.exit("bench: %s failed (%d): %s" % (" ".join(cmd), r.returncode, r.stderr.strip()))
    return r


def timed(cmd):
    t0 = time.perf_counter()
    sh(cmd)
    return time.perf_counter() - t0


def med_ms(xs):
    return statistics.median(xs) * 1000


class Unix(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=60)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self.path)


def parallel(fn, items):
    errs = []

    def run(x):
        try:
            fn(x)
        except SystemExit as e:
            errs.append(str(e))
    ts = [threading.Thread(target=run, args=(x,)) for x in items]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errs:
        sys.exit("bench: " + errs[0])
    return time.perf_counter() - t0


def domain_xml(name, kernel):
    return f"""<domain type='kvm'>
  <name>{name}</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><kernel>{kernel}</kernel><cmdline>run=serve</cmdline></os>
  <features><acpi/></features>
  <cpu mode='custom' match='exact' check='none'><model fallback='allow'>qemu64</model><feature policy='disable' name='svm'/></cpu>
  <on_poweroff>destroy</on_poweroff>
  <devices><serial type='pty'/><console type='pty'/><memballoon model='none'/></devices>
</domain>"""


def bench_cloison(a, guest, res):
    cli = os.path.join(a.build, "src/cli/cloison")
    tmp = tempfile.mkdtemp(prefix="cbench")
    sockp = os.path.join(tmp, "api.sock")
    env = dict(os.environ, CLOISON_SOCKET=sockp)
    d = subprocess.Popen([os.path.join(a.build, "src/daemon/cloisond"), "--state-dir",
                          os.path.join(tmp, "state"), "--socket", sockp, "--log-level", "warn"])
    os.environ["CLOISON_SOCKET"] = sockp
    try:
        while not os.path.exists(sockp):
            time.sleep(0.01)
        names = ["bench-%03d" % i for i in range(a.vms)]
        for n in names:
            sh([cli, "vm", "create", n, "--kernel", guest, "--cmdline", "run=serve",
                "--memory", "128M"], env=env)
        res["cloison list (CLI) ms"] = med_ms([timed([cli, "vm", "list", "--json"])
                                             for _ in range(a.reps)])
        api = []
        for _ in range(a.reps):
            c = Unix(sockp)
            t0 = time.perf_counter()
            c.request("GET", "/v1/vms")
            body = c.getresponse().read()
            api.append(time.perf_counter() - t0)
            c.close()
        assert len(json.loads(body)) == a.vms
        res["cloison list (raw HTTP) ms"] = med_ms(api)
        starts = []
        for n in names[:a.reps]:
            starts.append(timed([cli, "vm", "start", n]))
            st = json.loads(sh([cli, "vm", "show", n, "--json"]).stdout)["state"]
            assert st == "running", st
            sh([cli, "vm", "stop", n, "--turn-off"])  # one guest at a time on a shared host
        res["cloison start->running ms"] = med_ms(starts)
        batch = names[:a.parallel]
        res["cloison start %d at once s" % a.parallel] = parallel(
            lambda n: sh([cli, "vm", "start", n]), batch)
        vms = json.loads(sh([cli, "vm", "list", "--json"]).stdout)
        assert sum(v["state"] == "running" for v in vms) == len(batch)
        parallel(lambda n: sh([cli, "vm", "stop", n, "--turn-off"]), batch)
    finally:
        d.terminate()
        d.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def bench_libvirt(a, guest, res):
    if not shutil.which("virsh") or not shutil.which("libvirtd"):
        print("bench: virsh/libvirtd not installed (apt-get install libvirt-daemon-system "
              "libvirt-clients): libvirt column skipped")
        return
    started = []
    if sh(["virsh", "-c", LV, "version"], check=False).returncode:
        for daemon in ("virtlogd", "libvirtd"):
            sh([daemon, "-d"])
            started.append(daemon)
        time.sleep(1)
    acl = shutil.which("setfacl")
    if acl:
        sh([acl, "-m", "u:libvirt-qemu:rw", "/dev/kvm"], check=False)
    tmp = tempfile.mkdtemp(prefix="cbench-lv")
    os.chmod(tmp, 0o755)
    kernel = os.path.join(tmp, "cloison-testguest")
    shutil.copy(guest, kernel)
    os.chmod(kernel, 0o644)
    names = ["cbench-%03d" % i for i in range(a.vms)]
    try:
        for n in names:
            xml = os.path.join(tmp, n + ".xml")
            with open(xml, "w") as f:
                f.write(domain_xml(n, kernel))
            sh(["virsh", "-c", LV, "define", xml])
        res["virsh list (CLI) ms"] = med_ms([timed(["virsh", "-c", LV, "list", "--all"])
                                           for _ in range(a.reps)])
        starts = []
        for n in names[:a.reps]:
            starts.append(timed(["virsh", "-c", LV, "start", n]))
            sh(["virsh", "-c", LV, "destroy", n])
        res["virsh start->running ms"] = med_ms(starts)
        batch = names[:a.parallel]
        res["virsh start %d at once s" % a.parallel] = parallel(
            lambda n: sh(["virsh", "-c", LV, "start", n]), batch)
        parallel(lambda n: sh(["virsh", "-c", LV, "destroy", n], check=False), batch)
    finally:
        for n in names:
            sh(["virsh", "-c", LV, "destroy", n], check=False)
            sh(["virsh", "-c", LV, "undefine", n], check=False)
        if acl:
            sh([acl, "-x", "u:libvirt-qemu", "/dev/kvm"], check=False)
        for daemon in reversed(started):
            sh(["pkill", "-x", daemon], check=False)  # only the daemons this run started
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--build", default=os.environ.get("CLOISON_BUILD", os.path.join(TOP, "build")))
    p.add_argument("--vms", type=int, default=100)
    p.add_argument("--parallel", type=int, default=50)
    p.add_argument("--reps", type=int, default=10)
    a = p.parse_args()
    guest = os.path.realpath(os.path.join(a.build, "guest/cloison-testguest"))
    res = {}
    bench_cloison(a, guest, res)
    bench_libvirt(a, guest, res)
    print("\n%d defined VMs, test guest 'run=serve', 128 MiB, 1 vCPU; medians of %d" %
          (a.vms, a.reps))
    for k, v in res.items():
        print("  %-34s %10.2f" % (k, v))
    pairs = [("list (CLI) ms", "cloison list (CLI) ms", "virsh list (CLI) ms"),
             ("start->running ms", "cloison start->running ms", "virsh start->running ms"),
             ("start %d at once s" % a.parallel, "cloison start %d at once s" % a.parallel,
              "virsh start %d at once s" % a.parallel)]
    for label, ours, theirs in pairs:
        if ours in res and theirs in res:
            print("  ratio virsh/cloison %-22s %8.1fx" % (label, res[theirs] / res[ours]))


if __name__ == "__main__":
    main()
