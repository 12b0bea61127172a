"""Guards of the disk library seen through `cloison disk`: new images are
private (0600), FIFOs are refused instead of hanging, and a file cut short
is reported as such."""
import os
import stat

import pytest

from test_disk_cli import disk, ok


def mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


def test_new_images_are_0600_whatever_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        made = []
        for name, args in [
            ("f.vhdx", ["--type", "fixed"]), ("d.vhdx", ["--type", "dynamic"]),
            ("f.vhd", ["--type", "fixed"]), ("d.vhd", ["--type", "dynamic"]),
            ("f.raw", []),
        ]:
            ok("create", tmp_path / name, "--size", "4M", *args)
            made.append(name)
        ok("create", tmp_path / "c.avhdx", "--parent", tmp_path / "d.vhdx")
        ok("create", tmp_path / "c.avhd", "--parent", tmp_path / "d.vhd")
        made += ["c.avhdx", "c.avhd"]
        for src, dst in [("d.vhdx", "o.vhd"), ("d.vhd", "o.vhdx"), ("c.avhdx", "o.raw")]:
            ok("convert", tmp_path / src, tmp_path / dst)
            made.append(dst)
    finally:
        os.umask(old)
    for name in made:
        assert mode(tmp_path / name) == 0o600, "%s has mode %o" % (name, mode(tmp_path / name))


FIFO_CMDS = [["info"], ["check"], ["convert", "OUT"]]


def run_fifo(args, path, tmp_path):
    args = [str(tmp_path / "out.vhdx") if a == "OUT" else a for a in args]
    argv = [args[0], path] + args[1:]
    r = disk(*argv, timeout=10)
    return r


@pytest.mark.parametrize("cmd", FIFO_CMDS, ids=lambda c: c[0])
def test_fifo_as_image_is_refused(tmp_path, cmd):
    f = tmp_path / "pipe.vhdx"
    os.mkfifo(f)
    r = run_fifo(cmd, f, tmp_path)
    assert r.returncode != 0
    assert "is a FIFO, not a disk image" in r.stdout + r.stderr, r.stdout + r.stderr
    assert not (tmp_path / "out.vhdx").exists()


@pytest.mark.parametrize("cmd", FIFO_CMDS, ids=lambda c: c[0])
def test_fifo_as_parent_is_refused(tmp_path, cmd):
    ok("create", tmp_path / "base.vhdx", "--size", "4M")
    ok("create", tmp_path / "child.avhdx", "--parent", tmp_path / "base.vhdx")
    os.rename(tmp_path / "base.vhdx", tmp_path / "base.moved")
    os.mkfifo(tmp_path / "base.vhdx")
    r = run_fifo(cmd, tmp_path / "child.avhdx", tmp_path)
    # info shows a child whose parent is unusable and exits 0 by design
    # (as for a moved parent); the others fail.
    assert r.returncode != 0 or cmd[0] == "info"
    assert "is a FIFO, not a disk image" in r.stdout + r.stderr, r.stdout + r.stderr
    assert not (tmp_path / "out.vhdx").exists()


def _hold(path, exclusive):
    """Holds path the way another cloison process would (the disk library's
    flock scheme: exclusive for a writer, shared for readers)."""
    import fcntl
    fd = os.open(path, os.O_RDWR if exclusive else os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
    return fd


def _digest(p):
    import hashlib
    return hashlib.sha256(open(p, "rb").read()).hexdigest()


@pytest.mark.parametrize("fmt", ["vhdx", "vhd"])
def test_image_in_use_is_refused(tmp_path, fmt):
    base = tmp_path / ("base." + fmt)
    child = tmp_path / ("child.avhd" + ("x" if fmt == "vhdx" else ""))
    ok("create", base, "--size", "4M")
    ok("create", child, "--parent", base)
    before = {p: _digest(p) for p in (base, child)}
    fd = _hold(child, True)
    try:
        for args in (["merge", child], ["resize", child, "--size", "8M"], ["compact", child],
                     ["set-parent", child, base]):
            r = disk(*args, timeout=10)
            assert r.returncode != 0, args
            assert "in use by another process" in r.stderr, (args, r.stderr)
        # a reader of the parent stops a writer of the parent (merge)
        os.close(fd)
        fd = _hold(base, False)
        r = disk("merge", child, timeout=10)
        assert r.returncode != 0
        assert "in use by another process" in r.stderr, r.stderr
        # while a writer holds the child, readers are refused too
        os.close(fd)
        fd = _hold(child, True)
        r = disk("convert", child, tmp_path / "out.raw", timeout=10)
        assert r.returncode != 0 and "in use" in r.stderr, r.stderr
    finally:
        os.close(fd)
    assert child.exists() and base.exists()
    assert {p: _digest(p) for p in (base, child)} == before
    ok("merge", child)
    assert not child.exists()


@pytest.mark.parametrize("cut", [2, 100, 504, 511])
def test_fixed_vhd_cut_short_is_reported(tmp_path, cut):
    """A fixed VHD that lost part of its footer is not silently raw: info,
    check and convert all say it is a VHD cut short, and how to go on."""
    img = tmp_path / "cut.vhd"
    ok("create", img, "--size", "1M", "--type", "fixed")
    os.truncate(img, os.path.getsize(img) - cut)
    for args in (["info", img], ["check", img], ["convert", img, tmp_path / "o.vhdx"]):
        r = disk(*args)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert "looks like a VHD cut short" in r.stderr, r.stderr
        assert "truncate -s %d" % (1 << 20) in r.stderr, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.vhd"]


def test_raw_with_a_partial_sector_is_a_check_finding(tmp_path):
    """A footer lost whole and more leaves a size that is no whole number of
    sectors: check counts it as a problem instead of 'no problems found'."""
    img = tmp_path / "cut.vhd"
    ok("create", img, "--size", "1M", "--type", "fixed")
    os.truncate(img, os.path.getsize(img) - 700)
    r = disk("check", img)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "not a multiple of 512" in r.stdout and "1 problem found" in r.stdout, r.stdout


@pytest.mark.parametrize("size", [0, 1, 511])
def test_file_smaller_than_a_sector_is_no_disk(tmp_path, size):
    """0 to 511 bytes: check fails and convert names the source, not its own
    temporary file, and leaves nothing behind."""
    src = tmp_path / "tiny.img"
    src.write_bytes(b"x" * size)
    for args in (["check", src], ["info", src], ["convert", src, tmp_path / "o.vhdx"]):
        r = disk(*args)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert "tiny.img: %d bytes is too small for a disk image" % size in r.stderr, r.stderr
        assert ".tmp-" not in r.stderr, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.img"]
