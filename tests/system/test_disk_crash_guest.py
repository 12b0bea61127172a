"""Crash consistency through the worker: the test guest writes numbered,
checksummed records into new blocks of its virtio-blk disk (`blkrec=SEED,EVERY`,
docs/testguest.md), flushing after every EVERY completed records while later
writes stay in flight, and prints `RESULT flushed=<n>` when a flush covering
records [0, n) is done. We SIGKILL cloison-vmm at a random moment, then:

1. `cloison disk check --json` is clean (a pending VHDX log is a note: the
   designed state after a crash, replayed in memory by the read-only check);
2. tests/tools/disk_record_check reads the image through the disk library
   (read-only) and finds every record below the last flushed=n intact,
   every later record intact, untouched or torn sector by sector (a write
   cut short), and nothing else anywhere on the disk: no garbage, no old
   data where a flushed record was;
3. after `cloison disk check --repair` writes any replay into the file, the
   records are still right, `cloison disk check` is clean and, for VHDX,
   so is `qemu-img check`.

Formats: a raw file, a dynamic VHDX (1 MiB blocks), a dynamic VHD (512 KiB
blocks) and a differencing VHDX (1 MiB blocks) over a VHDX holding random
data in every other 4 MiB, whose content is the "old data" there. Every
disk is 512 MiB, so blocks are still being allocated through most of a run
(the guest's records land in slots spread over the whole disk).

CLOISON_CRASH_GUEST_TRIALS sets the trials per format (default 5; `make
trials` runs 30); CLOISON_CRASH_SEED the random seed."""
import fcntl
import json
import os
import pathlib
import random
import re
import shutil
import signal
import tempfile
import zlib
import time

import pytest

from conftest import require_kvm, run, which
from test_disk_cli import disk, ok, tool
from vmmlib import Vmm

MiB = 1024 * 1024
SIZE = 512 * MiB
TRIALS = int(os.environ.get("CLOISON_CRASH_GUEST_TRIALS", "5"))
FLUSHED_RE = re.compile(r"^RESULT flushed=(\d+)\r?\n", re.M)

FORMATS = {
    "raw": None,
    "vhdx": ["--block-size", "1M"],
    "vhd": ["--block-size", "512K"],
    "diff-vhdx": ["--block-size", "1M"],
}


@pytest.fixture(scope="module")
def work():
    # SIGKILL of the worker (not power loss) is what is simulated, so what
    # counts is the page cache, the same on tmpfs; tmpfs spares this host's
    # slow discard-on-unlink of every trial's image.
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    d = pathlib.Path(tempfile.mkdtemp(prefix="cloison-crash-guest-", dir=base))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def parent(work):
    """The differencing disks' parent: random data in every other 4 MiB."""
    raw = work / "parent-src.raw"
    with open(raw, "wb") as f:
        f.truncate(SIZE)
        for off in range(0, SIZE, 8 * MiB):
            f.seek(off)
            f.write(os.urandom(4 * MiB))
    vhdx = work / "parent.vhdx"
    ok("convert", raw, vhdx, "--block-size", "1M")
    raw.unlink()
    return vhdx


def make_image(work, fmt, trial, parent):
    if fmt == "raw":
        img = work / ("t%d.raw" % trial)
        with open(img, "wb") as f:
            f.truncate(SIZE)
        return img
    ext = "vhd" if fmt == "vhd" else "vhdx"
    img = work / ("t%d-%s.%s" % (trial, fmt, ext))
    if fmt == "diff-vhdx":
        ok("create", img, "--parent", parent, *FORMATS[fmt])
    else:
        ok("create", img, "--size", str(SIZE), *FORMATS[fmt])
    return img


def last_flushed(vm):
    vals = [int(v) for v in FLUSHED_RE.findall(vm.serial())]
    return max(vals) if vals else 0


def kill_at_random(vm, rnd):
    """Waits until the guest starts writing, then SIGKILLs the worker at a
    random moment: half the trials at a random time into the run, half
    just after the k-th flush acknowledgement. Returns True when the guest
    had finished first."""
    vm.wait_result("blkrec_records", timeout=30)
    if rnd.random() < 0.5:
        deadline = time.monotonic() + rnd.uniform(0.0, 1.0)
        while time.monotonic() < deadline and vm.running():
            time.sleep(0.002)
    else:
        k = rnd.randrange(1, 60)
        deadline = time.monotonic() + 20
        while (len(FLUSHED_RE.findall(vm.serial())) < k and vm.running()
               and time.monotonic() < deadline):
            time.sleep(0.002)
        time.sleep(rnd.uniform(0, 0.003))
    finished = not vm.running() or "RESULT blkrec=ok" in vm.serial()
    vm.kill(signal.SIGKILL)
    status = vm.proc.wait(timeout=10)
    assert "RESULT blkrec=error" not in vm.serial(), vm.tails()
    if not finished:
        assert status == -signal.SIGKILL, "worker exited by itself (%s)\n%s" % (
            status, vm.tails())
    return finished


def wait_unlocked(img, timeout=10):
    """A SIGKILLed worker is reaped before the kernel has torn down its
    io_uring rings, which hold the image open (and its lock) until their
    in-flight requests end: wait for the write lock to be free, as the next
    opener would have to."""
    deadline = time.monotonic() + timeout
    fd = os.open(img, os.O_RDONLY)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise AssertionError("%s is still locked %ss after the worker was "
                                         "reaped" % (img, timeout))
                time.sleep(0.01)
    finally:
        os.close(fd)


def check_clean(img, what, replayed):
    """`cloison disk check` is clean: notes only (a pending log before the
    replay; a VHD's space past its last block that an allocation cut short
    left, which the next allocation reuses), and no pending log after."""
    r = disk("check", img, "--json")
    assert r.returncode == 0, "%s: check\n%s%s" % (what, r.stdout, r.stderr)
    c = json.loads(r.stdout)
    assert c["clean"] is True and c["problems"] == 0, "%s: check: %s" % (what, c)
    assert all("note:" in f for f in c["findings"]), "%s: check: %s" % (what, c)
    if replayed:
        assert not any("pending entr" in f for f in c["findings"]), "%s: check: %s" % (what, c)
    return c


def check_records(img, seed, flushed, base, what):
    cmd = [tool("disk_record_check"), img, seed, flushed]
    if base:
        cmd += ["--base", base]
    r = run(cmd)
    assert r.returncode == 0, "%s: records\n%s%s" % (what, r.stdout, r.stderr)
    return r.stdout


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_sigkill_worker_during_guest_writes(vmm_bin, testguest, work, parent, fmt):
    require_kvm()
    # qemu-img opens neither VHD consistency checks nor differencing VHDX
    qemu = which("qemu-img") if fmt == "vhdx" else None
    rnd = random.Random(int(os.environ.get("CLOISON_CRASH_SEED", "20261202")) ^ zlib.crc32(fmt.encode()))
    base = parent if fmt == "diff-vhdx" else None
    start = time.monotonic()
    finished = flushed_total = pending = torn = 0
    for trial in range(TRIALS):
        img = make_image(work, fmt, trial, parent)
        seed = rnd.getrandbits(40)
        every = rnd.choice([1, 4, 16, 64])
        qd = rnd.choice([1, 4, 16])
        cmdline = "blkrec=%d,%d qd=%d" % (seed, every, qd)
        vm = Vmm(vmm_bin, testguest, work / ("vm-%s-%d" % (fmt, trial)), cmdline=cmdline,
                 control=False, extra=["--disk", "path=%s" % img])
        with vm:
            finished += kill_at_random(vm, rnd)
            flushed = last_flushed(vm)
        wait_unlocked(img)
        flushed_total += flushed
        what = "%s trial %d (%s, flushed=%d)" % (fmt, trial, cmdline, flushed)

        before = os.stat(img).st_mtime_ns
        c = check_clean(img, what, replayed=False)
        pending += any("pending entr" in f for f in c["findings"])
        out = check_records(img, seed, flushed, base, what)
        torn += int(re.search(r"(\d+) torn", out).group(1))
        assert os.stat(img).st_mtime_ns == before, "%s: a read-only look wrote" % what

        r = disk("check", img, "--repair")
        assert r.returncode == 0, "%s: check --repair\n%s%s" % (what, r.stdout, r.stderr)
        check_records(img, seed, flushed, base, what + " after the replay")
        check_clean(img, what + " after the replay", replayed=True)
        if qemu:
            r = run([qemu, "check", "-f", "vhdx", img])
            assert r.returncode == 0, "%s: qemu-img check\n%s%s" % (what, r.stdout, r.stderr)
        img.unlink()
        shutil.rmtree(vm.workdir, ignore_errors=True)
    print("%s: %d trials in %.1f s, %d finished before the kill, %d flushed records verified, "
          "%d torn unflushed records, %d checks noted a pending log" % (
              fmt, TRIALS, time.monotonic() - start, finished, flushed_total, torn, pending))
    assert finished < TRIALS, "the worker was never killed mid-run: the test proves nothing"
    assert flushed_total > 0, "no flush was ever acknowledged: the test proves nothing"
