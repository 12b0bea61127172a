"""Interoperability with peers no one here wrote: qemu-img (both
directions) and the files Windows/Hyper-V wrote in ../shared/testdata/hyperv."""
import gzip
import shutil

import pytest

from conftest import TESTDATA, run
from test_disk_cli import MiB, disk, info, io_write, ok, qemu_img, random_raw, sha256, to_raw

SIZE = 48 * MiB


@pytest.fixture(scope="module")
def source_raw(tmp_path_factory):
    """Random chunks, with [16M, 32M) all zeroes so that dynamic images with
    blocks up to 16 MiB must leave blocks unallocated."""
    p = random_raw(tmp_path_factory.mktemp("src") / "in.raw", SIZE, seed=42, fill=0.4)
    with open(p, "r+b") as f:
        f.seek(16 * MiB)
        f.write(b"\0" * 16 * MiB)
    return p


# ---- images cloison writes, checked by qemu-img ---------------------------

OURS = [
    ("vhdx", "dynamic", "1M"), ("vhdx", "dynamic", "8M"), ("vhdx", "dynamic", None),
    ("vhdx", "dynamic", "256M"), ("vhdx", "fixed", "2M"), ("vhdx", "fixed", None),
    ("vhd", "fixed", None), ("vhd", "dynamic", None), ("vhd", "dynamic", "512K"),
]


@pytest.mark.parametrize("fmt,typ,bs", OURS, ids=["%s-%s-%s" % c for c in OURS])
def test_our_images_pass_qemu_img(tmp_path, source_raw, fmt, typ, bs):
    q = qemu_img()
    out = tmp_path / ("out." + fmt)
    ok("convert", source_raw, out, "--type", typ, *(["--block-size", bs] if bs else []))
    i = info(out)
    assert i["format"] == fmt and i["type"] == typ and i["virtual_size"] == SIZE
    if bs:
        assert i["block_size"] == int(bs[:-1]) * (MiB if bs.endswith("M") else 1024)
    if typ == "dynamic" and i["block_size"] <= 16 * MiB:
        assert i["allocated"] <= SIZE - 16 * MiB, "zero blocks were copied into a dynamic image"
    qfmt = "vhdx" if fmt == "vhdx" else "vpc"
    if fmt == "vhdx":
        r = run([q, "check", "-f", "vhdx", out])
        assert r.returncode == 0, r.stdout + r.stderr
    r = run([q, "compare", "-f", qfmt, "-F", "raw", out, source_raw])
    assert r.returncode == 0, r.stdout + r.stderr
    # and what qemu reads is byte for byte what cloison reads
    r = run([q, "convert", "-f", qfmt, "-O", "raw", out, tmp_path / "q.raw"])
    assert r.returncode == 0, r.stderr
    assert sha256(tmp_path / "q.raw") == sha256(to_raw(out, tmp_path / "c.raw"))
    ok("check", out)


def test_4k_sector_vhdx_round_trip(tmp_path, source_raw):
    # qemu cannot read 4 KiB-sector VHDX; check the round trip ourselves.
    img = tmp_path / "s4k.vhdx"
    ok("create", img, "--size", "48M", "--sector-size", "4096", "--block-size", "1M")
    io_write(img, 0, source_raw.read_bytes(), tmp_path)
    copy = tmp_path / "copy.vhdx"
    ok("convert", img, copy)
    assert info(copy)["logical_sector_size"] == 4096
    assert sha256(to_raw(copy, tmp_path / "back.raw")) == sha256(source_raw)
    ok("check", copy)
    # VHD has 512-byte sectors only: the content carries over all the same
    vhd = tmp_path / "from4k.vhd"
    ok("convert", img, vhd)
    assert info(vhd)["logical_sector_size"] == 512
    assert sha256(to_raw(vhd, tmp_path / "back2.raw")) == sha256(source_raw)


# ---- images qemu-img writes, read by cloison ------------------------------

QEMU = [
    ("vhdx", "subformat=dynamic,block_size=1M"),
    ("vhdx", "subformat=dynamic,block_size=8M"),
    ("vhdx", "subformat=dynamic,block_size=32M"),
    ("vhdx", "subformat=fixed,block_size=8M"),
    ("vpc", "subformat=dynamic"),
    ("vpc", "subformat=fixed"),
    ("vpc", "subformat=dynamic,force_size=on"),
    ("vpc", "subformat=fixed,force_size=on"),
]


@pytest.mark.parametrize("qfmt,opts", QEMU, ids=["%s:%s" % c for c in QEMU])
def test_qemu_images_read_back(tmp_path, source_raw, qfmt, opts):
    q = qemu_img()
    img = tmp_path / ("q." + ("vhdx" if qfmt == "vhdx" else "vhd"))
    r = run([q, "convert", "-f", "raw", "-O", qfmt, "-o", opts, source_raw, img])
    assert r.returncode == 0, r.stderr
    # qemu's own reading is the reference (its vpc sizes follow its
    # conventions, e.g. CHS rounding without force_size)
    r = run([q, "convert", "-f", qfmt, "-O", "raw", img, tmp_path / "ref.raw"])
    assert r.returncode == 0, r.stderr
    back = to_raw(img, tmp_path / "back.raw")
    assert back.stat().st_size == (tmp_path / "ref.raw").stat().st_size
    assert sha256(back) == sha256(tmp_path / "ref.raw")
    if qfmt == "vhdx" or "force_size" in opts:
        assert sha256(back) == sha256(source_raw)
    i = info(img)
    assert i["format"] == ("vhdx" if qfmt == "vhdx" else "vhd")
    assert i["type"] == ("fixed" if "fixed" in opts else "dynamic")
    ok("check", img)


def test_qemu_vhdx_through_cloison_to_vhd_and_back(tmp_path, source_raw):
    q = qemu_img()
    r = run([q, "convert", "-O", "vhdx", source_raw, tmp_path / "a.vhdx"])
    assert r.returncode == 0
    ok("convert", tmp_path / "a.vhdx", tmp_path / "b.vhd")
    ok("convert", tmp_path / "b.vhd", tmp_path / "c.vhdx", "--type", "fixed")
    r = run([q, "compare", "-f", "vhdx", "-F", "raw", tmp_path / "c.vhdx", source_raw])
    assert r.returncode == 0, r.stdout + r.stderr


# ---- files written by Windows / Hyper-V -----------------------------------

HYPERV = {
    "fixed.vhdx": dict(format="vhdx", type="fixed", virtual_size=10485760, block_size=2 * MiB,
                       logical_sector_size=512, disk_id="4a49d245-db0a-4634-9818-9f93db5ba6c1",
                       sha="bc0be4623b15aa84216fb31ba24e3b621ec7f1c72d198c990ac0eced222d9f62"),
    "dynamic.vhdx": dict(format="vhdx", type="dynamic", virtual_size=10485760,
                         block_size=32 * MiB, logical_sector_size=512,
                         disk_id="788015f0-5e93-4bd2-a5de-b0cd8459db11",
                         sha="8e2b5e9265d694b42b81819e3bff29770eff4ed0f4f9f311693ff3dbdc93efac"),
    "fixed.vhd": dict(format="vhd", type="fixed", virtual_size=10485760,
                      sha="459325ab1fcd1d5ec9854cba790ee26378317cda177ffc1072008a1df88e6463"),
    "dynamic.vhd": dict(format="vhd", type="dynamic", virtual_size=10485760,
                        sha="ecff2ef6615a3cddc6a6885f1c6d9cf13a232697e1dc6575f2c2f01f57247784"),
}


def hyperv_file(tmp_path, name):
    gz = TESTDATA / "hyperv" / (name + ".gz")
    if not gz.exists():
        pytest.skip("the Hyper-V test files are not present at %s" % gz.parent)
    out = tmp_path / name
    with gzip.open(gz, "rb") as f, open(out, "wb") as g:
        shutil.copyfileobj(f, g)
    return out


@pytest.mark.parametrize("name", sorted(HYPERV))
def test_hyperv_files(tmp_path, name):
    facts = dict(HYPERV[name])
    img = hyperv_file(tmp_path, name)
    before = sha256(img)
    want = facts.pop("sha")
    i = info(img)
    for k, v in facts.items():
        assert i[k] == v, (k, i[k], v)
    assert i["parent"] is None
    raw = tmp_path / "out.raw"
    ok("convert", img, raw)
    assert raw.stat().st_size == facts["virtual_size"]
    assert sha256(raw) == want
    if name == "fixed.vhdx":
        data = raw.read_bytes()
        assert data[510:512] == b"\x55\xaa"
        assert data[0x200000:0x200200] == b"\xff" * 512
    ok("check", img)
    assert sha256(img) == before, "reading modified a Hyper-V file"


def test_hyperv_differencing_without_parent(tmp_path):
    img = hyperv_file(tmp_path, "differencing.avhdx")
    before = sha256(img)
    i = info(img)
    assert i["format"] == "vhdx" and i["type"] == "differencing"
    assert i["virtual_size"] == 8 * 1024 * MiB
    assert i["block_size"] == 2 * MiB
    assert i["logical_sector_size"] == 512 and i["physical_sector_size"] == 4096
    assert i["disk_id"] == "89ca62b5-b00d-4b8e-b79a-87e20cad5a40"
    assert i["parent_missing"] is True
    assert i["parent"]["linkage"] == "ff34003b-11ed-4cf8-a166-b2be05e20b80"
    assert i["parent"]["present"] is False
    assert "Generation 1_49C4BAF3-4B25-4406-8C4B-D39E65C32385.avhdx" in i["parent"]["path"]
    text = ok("info", img).stdout
    assert "MISSING" in text
    # Reading data needs the parent: a clear error naming it.
    r = disk("convert", img, tmp_path / "out.raw")
    assert r.returncode == 3, (r.returncode, r.stderr)
    assert "Generation 1_49C4BAF3" in r.stderr or "parent" in r.stderr.lower()
    assert not (tmp_path / "out.raw").exists()
    assert sha256(img) == before
