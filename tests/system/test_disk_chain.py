"""Differencing chains through the real binary: write through a
three-level chain, read back, merge level by level, flatten with
--into, re-point with set-parent (and refuse a wrong parent)."""
import os
import random
import shutil

import pytest

from test_disk_cli import MiB, disk, info, io_read, io_write, ok, qemu_img, sha256, to_raw
from conftest import run

SIZE = 32 * MiB
FORMATS = [("vhdx", "avhdx", ["--block-size", "1M"]), ("vhd", "vhd", [])]


class Model:
    """What the disk should read as: a bytearray we apply every write to."""

    def __init__(self, size):
        self.data = bytearray(size)

    def write(self, image, off, payload, tmp):
        io_write(image, off, payload, tmp)
        self.data[off:off + len(payload)] = payload

    def check(self, image, tmp, name="check.raw"):
        raw = to_raw(image, tmp / name)
        assert raw.read_bytes() == bytes(self.data), "%s reads wrong" % image
        raw.unlink()


def scatter(model, image, rnd, tmp, n, max_len=96 * 1024):
    """n writes at random 4 KiB-aligned places (many partial blocks, so
    sector bitmaps and parent fall-through both matter)."""
    for _ in range(n):
        length = rnd.randrange(1, max_len // 4096 + 1) * 4096
        off = rnd.randrange(0, (SIZE - length) // 4096 + 1) * 4096
        model.write(image, off, rnd.randbytes(length), tmp)


def build_chain(tmp, ext, dext, opts, seed):
    rnd = random.Random(seed)
    base, mid, top = tmp / ("base." + ext), tmp / ("mid." + dext), tmp / ("top." + dext)
    m = Model(SIZE)
    ok("create", base, "--size", str(SIZE), *opts)
    scatter(m, base, rnd, tmp, 12)
    levels = [bytes(m.data)]
    ok("create", mid, "--parent", base)
    scatter(m, mid, rnd, tmp, 12)
    levels.append(bytes(m.data))
    ok("create", top, "--parent", mid)
    scatter(m, top, rnd, tmp, 12)
    return base, mid, top, m, levels


@pytest.mark.parametrize("ext,dext,opts", FORMATS, ids=[f[0] for f in FORMATS])
def test_three_level_chain_write_read_merge(tmp_path, ext, dext, opts):
    base, mid, top, m, levels = build_chain(tmp_path, ext, dext, opts, seed=1)
    m.check(top, tmp_path)
    # each level still reads as it did before its children were written
    assert to_raw(mid, tmp_path / "mid.raw").read_bytes() == levels[1]
    assert to_raw(base, tmp_path / "base.raw").read_bytes() == levels[0]
    # spot reads through the library too
    assert io_read(top, 4096, 8192) == bytes(m.data[4096:4096 + 8192])

    i = info(top)
    assert i["type"] == "differencing" and i["parent"]["present"] is True
    assert [os.path.basename(c["path"]) for c in i["chain"]] == [mid.name, base.name]
    assert [c["format"] for c in i["chain"]] == [ext, ext]
    assert i["chain"][0]["type"] == "differencing"
    assert 0 < i["allocated"] < SIZE
    for p in (base, mid, top):
        ok("check", p)

    base_before = sha256(base)
    ok("merge", top)
    assert not top.exists(), "merge keeps no stale child"
    m.check(mid, tmp_path)
    assert sha256(base) == base_before, "merging top into mid touched base"
    ok("check", mid)

    ok("merge", mid)
    assert not mid.exists()
    m.check(base, tmp_path)
    assert info(base)["type"] == "dynamic"
    ok("check", base)
    if ext == "vhdx":
        q = qemu_img()
        r = run([q, "check", "-f", "vhdx", base])
        assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("ext,dext,opts", FORMATS, ids=[f[0] for f in FORMATS])
@pytest.mark.parametrize("into", ["flat.vhdx", "flat.vhd", "flat.raw"])
def test_merge_into_new_image_leaves_chain_alone(tmp_path, ext, dext, opts, into):
    base, mid, top, m, _ = build_chain(tmp_path, ext, dext, opts, seed=2)
    sums = {p: sha256(p) for p in (base, mid, top)}
    flat = tmp_path / into
    ok("merge", top, "--into", flat)
    i = info(flat)
    assert i["parent"] is None and i["virtual_size"] == SIZE
    assert i["format"] == into.split(".")[1]
    m.check(flat, tmp_path)
    assert {p: sha256(p) for p in sums} == sums, "merge --into modified the chain"
    r = disk("merge", top, "--into", flat)
    assert r.returncode == 4, "merge --into overwrote an existing file"


def test_merge_refuses_non_differencing(tmp_path):
    p = tmp_path / "plain.vhdx"
    ok("create", p, "--size", "8M")
    before = sha256(p)
    r = disk("merge", p)
    assert r.returncode == 4 and "not a differencing disk" in r.stderr
    assert sha256(p) == before


@pytest.mark.parametrize("ext,dext,opts", FORMATS, ids=[f[0] for f in FORMATS])
def test_set_parent_after_move_and_refusal_of_wrong_parent(tmp_path, ext, dext, opts):
    rnd = random.Random(7)
    base, child = tmp_path / ("base." + ext), tmp_path / ("child." + dext)
    m = Model(SIZE)
    ok("create", base, "--size", str(SIZE), *opts)
    scatter(m, base, rnd, tmp_path, 6)
    ok("create", child, "--parent", base)
    scatter(m, child, rnd, tmp_path, 6)
    m.check(child, tmp_path)

    # Move the parent away: the child no longer opens for data, info still works.
    moved_dir = tmp_path / "elsewhere" / "deeper"
    moved_dir.mkdir(parents=True)
    moved = moved_dir / ("renamed." + ext)
    shutil.move(base, moved)
    i = info(child)
    assert i["parent_missing"] is True
    r = disk("convert", child, tmp_path / "x.raw")
    assert r.returncode == 3 and "set-parent" in r.stderr, r.stderr

    # A different disk of the same size is refused; the child is unchanged.
    other = tmp_path / ("other." + ext)
    ok("create", other, "--size", str(SIZE), *opts)
    before = sha256(child)
    r = disk("set-parent", child, other)
    assert r.returncode == 4, (r.returncode, r.stderr)
    assert str(child) in r.stderr or child.name in r.stderr
    assert sha256(child) == before
    if ext == "vhdx":
        # ... and so is a copy of the right parent that has since been
        # written to (its DataWriteGuid changed).
        changed = tmp_path / ("changed." + ext)
        shutil.copy(moved, changed)
        io_write(changed, 0, b"\x01" * 4096, tmp_path)
        r = disk("set-parent", child, changed)
        assert r.returncode == 4, (r.returncode, r.stderr)
        assert sha256(child) == before

    ok("set-parent", child, moved)
    i = info(child)
    assert i["parent_missing"] is False
    assert os.path.realpath(i["chain"][0]["path"]) == os.path.realpath(moved)
    m.check(child, tmp_path)
    ok("check", child)

    # Moving child and parent together keeps working (relative locator).
    together = tmp_path / "together"
    together.mkdir()
    shutil.move(tmp_path / "elsewhere", together / "elsewhere")
    shutil.move(child, together / child.name)
    m.check(together / child.name, tmp_path)


def test_merge_child_larger_than_parent_grows_the_parent(tmp_path):
    base, child = tmp_path / "base.vhdx", tmp_path / "child.avhdx"
    ok("create", base, "--size", "8M", "--block-size", "1M")
    io_write(base, 0, b"\x11" * 4096, tmp_path)
    ok("create", child, "--parent", base)
    ok("resize", child, "--size", "16M")
    io_write(child, 12 * MiB, b"\x42" * 4096, tmp_path)
    assert io_read(child, 0, 4096) == b"\x11" * 4096
    ok("merge", child)
    assert not child.exists()
    assert info(base)["virtual_size"] == 16 * MiB
    assert io_read(base, 12 * MiB, 4096) == b"\x42" * 4096
    assert io_read(base, 0, 4096) == b"\x11" * 4096
    ok("check", base)
