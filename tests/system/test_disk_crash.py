"""Crash consistency: tests/tools/disk_crash_writer does thousands of
random allocating writes into a dynamic VHDX / VHD, flushing every N and
printing each flushed index; we SIGKILL it at random moments and check
that the image reopens cleanly (read-only with an in-memory log replay,
where `cloison disk check` must be clean, noting the pending log; read-write
with the replay written back, after which `cloison disk check` and, for
VHDX, `qemu-img check` are clean), that every write flushed before the kill is
there, and that everything else holds old or new data, never garbage.

Each trial: a fresh 1 GiB dynamic image (VHDX 1 MiB blocks = 1024 blocks,
VHD 512 KiB = 2048), 10 000 writes of 4-64 KiB at random places, so blocks
are still being allocated through most of a run; killed within 0.6 s.
CLOISON_CRASH_TRIALS sets the trials per format (default 30)."""
import json
import os
import pathlib
import random
import select
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from conftest import run, which
from test_disk_cli import disk, ok, tool

COUNT = 10000
TRIALS = int(os.environ.get("CLOISON_CRASH_TRIALS", "30"))


def kill_at_random(proc, rnd, window):
    """Lets the writer run, kills it with SIGKILL at a random moment and
    returns the last flushed index it reported (-1 if none)."""
    last, buf = -1, b""
    deadline = time.monotonic() + rnd.uniform(0.005, window)
    # Half the trials aim just after a flush acknowledgement instead.
    after_flushes = rnd.randrange(1, 200) if rnd.random() < 0.5 else None
    seen = 0
    fd = proc.stdout.fileno()
    while True:
        timeout = deadline - time.monotonic()
        if timeout <= 0:
            break
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
        seen = buf.count(b"\n")
        if after_flushes is not None and seen >= after_flushes:
            time.sleep(rnd.uniform(0, 0.003))
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    buf += proc.stdout.read()
    for line in buf.decode().splitlines():
        if line.startswith("F "):
            last = max(last, int(line.split()[1]))
    return last


# window: the longest run before the kill, a little under the writer's full
# run time (COUNT writes take about 0.8 s on tmpfs here).
@pytest.mark.parametrize("fmt,opts,window", [
    ("vhdx", ["--block-size", "1M"], 0.6),
    ("vhd", ["--block-size", "512K"], 0.6),
])
def test_sigkill_during_allocating_writes(tmp_path, fmt, opts, window):
    # SIGKILL (not power loss) is what is simulated, so what counts is the
    # page cache, the same on tmpfs; tmpfs avoids this host's slow
    # discard-on-unlink of every trial's image.
    work = pathlib.Path(tempfile.mkdtemp(dir="/dev/shm")) if os.path.isdir("/dev/shm") \
        else tmp_path
    try:
        _trials(work, fmt, opts, window)
    finally:
        if work != tmp_path:
            shutil.rmtree(work, ignore_errors=True)


def _trials(tmp_path, fmt, opts, window):
    writer = tool("disk_crash_writer")
    qemu = which("qemu-img") if fmt == "vhdx" else None
    rnd = random.Random(int(os.environ.get("CLOISON_CRASH_SEED", "20261122")))
    start = time.monotonic()
    completed = flushed_total = pending_logs = 0
    for trial in range(TRIALS):
        img = tmp_path / ("t%d.%s" % (trial, fmt))
        ok("create", img, "--size", "1G", *opts)
        seed = rnd.getrandbits(48)
        flush_every = rnd.choice([2, 8, 32, 128])
        proc = subprocess.Popen([str(writer), "write", str(img), str(seed), str(COUNT),
                                 str(flush_every)], stdout=subprocess.PIPE)
        flushed = kill_at_random(proc, rnd, window)
        if proc.returncode == 0:
            completed += 1
        else:
            assert proc.returncode == -signal.SIGKILL, "writer failed by itself"
        flushed_total += flushed + 1
        what = "trial %d (%s, seed %d, flush every %d, flushed up to %d)" % (
            trial, fmt, seed, flush_every, flushed)

        # 1. read-only open: any pending log is replayed in memory only
        before = os.stat(img)
        r = run([writer, "verify", img, seed, COUNT, flushed])
        assert r.returncode == 0, "%s: read-only verify\n%s%s" % (what, r.stdout, r.stderr)
        assert os.stat(img).st_mtime_ns == before.st_mtime_ns, "read-only open wrote"
        # 2. cloison's own read-only check, before any replay: clean. A
        #    pending log is the designed state after a crash (validated and
        #    replayed in memory, the metadata checked as it will be): a note
        r = disk("check", img, "--json")
        assert r.returncode == 0, "%s: check\n%s%s" % (what, r.stdout, r.stderr)
        c = json.loads(r.stdout)
        assert c["clean"] is True and c["problems"] == 0, "%s: check: %s" % (what, c)
        assert all("note:" in f for f in c["findings"]), "%s: check: %s" % (what, c)
        i = json.loads(ok("info", img, "--json").stdout)
        pending = [f for f in c["findings"] if "pending entr" in f]
        pending_logs += bool(pending)
        assert bool(pending) == bool(i.get("log_replayed")), \
            "%s: check notes %s but info says log_replayed=%s" % (what, pending, i.get("log_replayed"))
        assert os.stat(img).st_mtime_ns == before.st_mtime_ns, "read-only check wrote"
        # 3. the replay is written into the file - by a read-write open, or
        #    on odd trials by `check --repair` - and the data is still right
        if trial % 2:
            r = disk("check", img, "--repair")
            assert r.returncode == 0, "%s: check --repair\n%s%s" % (what, r.stdout, r.stderr)
            r = run([writer, "verify", img, seed, COUNT, flushed])
        else:
            r = run([writer, "verify", img, seed, COUNT, flushed, "--rw"])
        assert r.returncode == 0, "%s: verify after replay\n%s%s" % (what, r.stdout, r.stderr)
        r = disk("check", img)
        assert r.returncode == 0, "%s: check after reopen\n%s%s" % (what, r.stdout, r.stderr)
        # 4. the independent peer agrees
        if qemu:
            r = run([qemu, "check", "-f", "vhdx", img])
            assert r.returncode == 0, "%s: qemu-img check\n%s%s" % (what, r.stdout, r.stderr)
        img.unlink()
    elapsed = time.monotonic() - start
    print("%s: %d trials in %.1f s, %d ran to completion, %d flushed writes verified, "
          "%d clean checks noted a pending log" % (
              fmt, TRIALS, elapsed, completed, flushed_total, pending_logs))
    assert completed < TRIALS, "the writer was never killed mid-run: the test proves nothing"
    if fmt == "vhdx":
        assert pending_logs, "no check ever saw a pending log: the note is untested"
