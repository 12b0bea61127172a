"""`cloison disk` through the real binary: help, bad arguments (exit 2),
missing files (exit 3), refusal to overwrite, resize and compact rules,
corrupt images. The helpers at the top are shared by the other
test_disk_*.py files."""
import hashlib
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import time

import pytest

from conftest import BUILD, TESTDATA, run, which

MiB = 1024 * 1024
VERBS = ["create", "info", "check", "convert", "resize", "compact", "merge", "set-parent"]


# ---- helpers shared by the disk tests ------------------------------------

def cli():
    for sub in ("src/cli", "."):
        p = BUILD / sub / "cloison"
        if p.exists():
            return p
    pytest.fail("cloison not built under %s: run make first" % BUILD)


def tool(name):
    p = BUILD / "tests" / "tools" / name
    if not p.exists():
        pytest.fail("%s not built under %s (tests/tools)" % (name, BUILD))
    return p


def disk(*args, **kw):
    """Runs `cloison disk ARGS`; never raises on the exit status."""
    return run([cli(), "disk"] + [str(a) for a in args], **kw)


def ok(*args, **kw):
    r = disk(*args, **kw)
    assert r.returncode == 0, "cloison disk %s -> %d\n%s%s" % (
        " ".join(map(str, args)), r.returncode, r.stdout, r.stderr)
    return r


def info(path):
    return json.loads(ok("info", path, "--json").stdout)


def qemu_img():
    q = which("qemu-img")
    if not q:
        pytest.skip("qemu-img is not installed on this host (needed as the interop peer)")
    return q


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def random_raw(path, size, seed, fill=0.5, chunk=256 * 1024):
    """A raw file of size bytes: random chunks (fraction fill) between
    zero chunks, so copies must both skip zeroes and carry data."""
    rnd = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(size)
        for off in range(0, size, chunk):
            if rnd.random() < fill:
                f.seek(off)
                f.write(rnd.randbytes(min(chunk, size - off)))
    return path


def to_raw(image, out):
    """The content cloison reads from image, as a raw file."""
    if os.path.exists(out):
        os.unlink(out)
    ok("convert", image, out)
    return out


def io_write(image, offset, data, tmp):
    src = pathlib.Path(tmp) / ("w-%d.bin" % random.getrandbits(32))
    src.write_bytes(data)
    r = run([tool("disk_io"), "write", image, offset, src])
    src.unlink()
    assert r.returncode == 0, r.stderr


def io_read(image, offset, length):
    r = run([tool("disk_io"), "read", image, offset, length], text=False)
    assert r.returncode == 0, r.stderr
    return r.stdout


# ---- help ----------------------------------------------------------------

def test_noun_help_lists_every_verb():
    r = disk("--help")
    assert r.returncode == 0
    for v in VERBS:
        assert v in r.stdout
    r = run([cli(), "disk"])
    assert r.returncode == 2 and "missing verb" in r.stderr


@pytest.mark.parametrize("verb", VERBS)
def test_verb_help(verb):
    for form in ([verb, "--help"], [verb, "-h"], ["help", verb]):
        r = disk(*form)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("usage: cloison disk %s" % verb)


# ---- bad command lines: exit 2, a message, nothing created ----------------

BAD = [
    (["frobnicate"], "unknown verb"),
    (["create"], "missing FILE"),
    (["create", "x.vhdx"], "missing --size"),
    (["create", "x.vhdx", "--size"], "needs a value"),
    (["create", "x.vhdx", "--size", "abc"], "not a size"),
    (["create", "x.vhdx", "--size", "0"], "larger than zero"),
    (["create", "x.vhdx", "--size", "99999999999T"], "too large"),
    (["create", "x.vhdx", "--size", "1000"], "multiple"),
    (["create", "x.vhdx", "--size", "10M", "--type", "sparse"], "--type"),
    (["create", "x.qcow2", "--size", "10M"], "extension"),
    (["create", "noext", "--size", "10M"], "extension"),
    (["create", "x.vhdx", "--size", "10M", "--bogus"], "unknown option '--bogus'"),
    (["create", "x.vhdx", "--size", "10M", "-q"], "unknown option '-q'"),
    (["create", "x.vhdx", "--size", "10M", "--sector-size", "1000"], "512 or 4096"),
    (["create", "x.vhdx", "--size", "10M", "--physical-sector-size", "2048"], "512 or 4096"),
    (["create", "x.vhdx", "--size", "10M", "--block-size", "3M"], "power of two"),
    (["create", "x.vhdx", "--size", "10M", "--type", "differencing"], "--parent"),
    (["create", "x.raw", "--size", "1M", "--block-size", "1M"], "block-size"),
    (["create", "x.vhdx", "y.vhdx", "--size", "1M"], "unexpected argument"),
    (["create", "x.vhdx", "--size", "1M", "--format", "qcow2"], "--format"),
    (["info"], "missing FILE"),
    (["info", "--bogus", "SRC"], "unknown option"),
    (["info", "SRC", "SRC"], "unexpected argument"),
    (["check"], "missing FILE"),
    (["check", "SRC", "--fix"], "unknown option"),
    (["convert"], "missing SRC and DST"),
    (["convert", "SRC"], "missing DST"),
    (["convert", "SRC", "out.qcow2"], "extension"),
    (["convert", "SRC", "out.vhdx", "--type", "differencing"], "--type"),
    (["convert", "SRC", "out.vhdx", "--block-size", "huge"], "not a size"),
    (["convert", "SRC", "out.vhdx", "--block-size", "3M"], "power of two"),
    (["convert", "SRC", "out.raw", "--block-size", "1M"], "block size"),
    (["convert", "SRC", "out.vhdx", "extra"], "unexpected argument"),
    (["resize"], "missing FILE"),
    (["resize", "SRC"], "missing --size"),
    (["resize", "SRC", "--size", "-5M"], "not a size"),
    (["resize", "SRC", "--size", "1Q"], "not a size"),
    (["resize", "SRC", "--size", "1000"], "multiple"),
    (["compact"], "missing FILE"),
    (["compact", "SRC", "--all"], "unknown option"),
    (["merge"], "missing CHILD"),
    (["merge", "SRC", "--type", "fixed"], "--into"),
    (["merge", "SRC", "--into", "flat.qcow2"], "extension"),
    (["merge", "SRC", "--into"], "needs a value"),
    (["set-parent"], "missing CHILD and PARENT"),
    (["set-parent", "SRC"], "missing PARENT"),
    (["set-parent", "SRC", "SRC", "SRC"], "unexpected argument"),
]


@pytest.mark.parametrize("args,msg", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_arguments_exit_2(tmp_path, args, msg):
    src = tmp_path / "src.raw"
    src.write_bytes(b"\0" * MiB)
    before = sha256(src)
    args = [str(src) if a == "SRC" else a for a in args]
    r = disk(*args, cwd=tmp_path)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "error" in r.stderr and msg in r.stderr, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.raw"], "something was created"
    assert sha256(src) == before


@pytest.mark.parametrize("args", [
    ["info", "MISSING"], ["check", "MISSING"], ["convert", "MISSING", "out.vhdx"],
    ["resize", "MISSING", "--size", "1M"], ["compact", "MISSING"], ["merge", "MISSING"],
    ["merge", "MISSING", "--into", "out.vhdx"], ["set-parent", "MISSING", "MISSING"],
    ["create", "x.vhdx", "--parent", "MISSING"],
], ids=lambda a: " ".join(a))
def test_missing_file_exit_3(tmp_path, args):
    missing = str(tmp_path / "nope.vhdx")
    r = disk(*[missing if a == "MISSING" else a for a in args], cwd=tmp_path)
    assert r.returncode == 3, (r.returncode, r.stderr)
    assert "nope.vhdx" in r.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("ext", ["vhdx", "vhd", "raw"])
def test_create_refuses_existing_file(tmp_path, ext):
    p = tmp_path / ("a." + ext)
    p.write_bytes(b"precious")
    r = disk("create", p, "--size", "1M")
    assert r.returncode == 4 and "already exists" in r.stderr
    assert p.read_bytes() == b"precious"
    q = tmp_path / "q.raw"
    random_raw(q, MiB, 1)
    r = disk("convert", q, p)
    assert r.returncode == 4 and p.read_bytes() == b"precious"
    ok("convert", q, p, "--force")
    assert to_raw(p, tmp_path / "back.raw") and sha256(tmp_path / "back.raw") == sha256(q)


# ---- create / info -------------------------------------------------------

@pytest.mark.parametrize("name,args,facts", [
    ("d.vhdx", [], {"format": "vhdx", "type": "dynamic", "block_size": 32 * MiB,
                    "logical_sector_size": 512, "physical_sector_size": 4096}),
    ("f.vhdx", ["--type", "fixed", "--block-size", "1M"],
     {"format": "vhdx", "type": "fixed", "block_size": MiB}),
    ("s.vhdx", ["--sector-size", "4096", "--block-size", "8M"],
     {"format": "vhdx", "logical_sector_size": 4096, "block_size": 8 * MiB}),
    ("p.vhdx", ["--physical-sector-size", "512"], {"physical_sector_size": 512}),
    ("d.vhd", [], {"format": "vhd", "type": "dynamic", "block_size": 2 * MiB,
                   "logical_sector_size": 512}),
    ("f.vhd", ["--type", "fixed"], {"format": "vhd", "type": "fixed"}),
    ("r.raw", [], {"format": "raw", "allocated": 64 * MiB}),
    ("i.img", ["--type", "dynamic"], {"format": "raw"}),
    ("x.disk", ["--format", "vhdx"], {"format": "vhdx"}),
])
def test_create_and_info(tmp_path, name, args, facts):
    p = tmp_path / name
    ok("create", p, "--size", "64M", *args)
    i = info(p)
    assert i["virtual_size"] == 64 * MiB
    assert i["file_size"] == p.stat().st_size
    assert i["parent"] is None and i["chain"] == []
    for k, v in facts.items():
        assert i[k] == v, (k, i)
    if i["format"] != "raw":
        assert len(i["disk_id"]) == 36
        if i["type"] == "dynamic":
            assert i["allocated"] == 0
    text = ok("info", p).stdout
    assert "virtual size:" in text and i["format"] in text
    c = json.loads(ok("check", p, "--json").stdout)
    assert c["clean"] is True and c["problems"] == 0 and c["findings"] == []


def test_create_json_prints_info(tmp_path):
    r = ok("create", tmp_path / "j.vhdx", "--size", "8M", "--json")
    assert json.loads(r.stdout)["virtual_size"] == 8 * MiB


# ---- resize --------------------------------------------------------------

@pytest.mark.parametrize("name,args", [("g.vhdx", ["--block-size", "1M"]), ("g.vhd", []),
                                       ("g.raw", [])])
def test_resize_grow_and_shrink_rules(tmp_path, name, args):
    p = tmp_path / name
    ok("create", p, "--size", "16M", *args)
    data = random.Random(5).randbytes(MiB)
    io_write(p, 2 * MiB, data, tmp_path)

    ok("resize", p, "--size", "32M")
    assert info(p)["virtual_size"] == 32 * MiB
    ok("resize", p, "--size", "+16M")
    assert info(p)["virtual_size"] == 48 * MiB
    assert io_read(p, 2 * MiB, MiB) == data
    assert io_read(p, 40 * MiB, MiB) == b"\0" * MiB

    # The tail past 8M is unused: shrinking there is allowed.
    ok("resize", p, "--size", "8M")
    assert info(p)["virtual_size"] == 8 * MiB
    assert io_read(p, 2 * MiB, MiB) == data
    ok("check", p)

    # Cutting into data is refused and changes nothing.
    before = sha256(p)
    r = disk("resize", p, "--size", "2M")
    assert r.returncode == 4, r.stderr
    assert str(p) in r.stderr and "nothing was changed" in r.stderr
    assert sha256(p) == before
    assert info(p)["virtual_size"] == 8 * MiB


# ---- compact -------------------------------------------------------------

@pytest.mark.parametrize("name,bs", [("c.vhdx", "1M"), ("c.vhd", None)])
def test_compact_gives_back_zero_blocks(tmp_path, name, bs):
    p = tmp_path / name
    ok("create", p, "--size", "64M", *(["--block-size", bs] if bs else []))
    block = info(p)["block_size"]
    rnd = random.Random(9)
    # Blocks 0, 3, 7 get data; blocks 1, 2, 5 get data that is then
    # overwritten with zeroes - those are what compact must give back.
    for b in (0, 3, 7):
        io_write(p, b * block + 4096, rnd.randbytes(64 * 1024), tmp_path)
    for b in (1, 2, 5):
        io_write(p, b * block, rnd.randbytes(block), tmp_path)
        io_write(p, b * block, b"\0" * block, tmp_path)
    before = info(p)
    content = sha256(to_raw(p, tmp_path / "before.raw"))
    assert before["allocated"] == 6 * block
    usage_before = p.stat().st_blocks

    r = json.loads(ok("compact", p, "--json").stdout)
    assert r["blocks_given_back"] == 3
    after = info(p)
    # Either the blocks left the block table (allocation shrinks) or their
    # space went back to the host (holes): both count, nothing else does.
    unmapped = before["allocated"] - after["allocated"]
    freed = (usage_before - p.stat().st_blocks) * 512
    assert unmapped == 3 * block or freed >= 3 * block, (unmapped, freed)
    assert r["blocks_unmapped"] * block == unmapped
    assert r["disk_usage_after"] < r["disk_usage_before"]
    assert sha256(to_raw(p, tmp_path / "after.raw")) == content
    ok("check", p)
    if unmapped:
        # Nothing more to do the second time.
        assert json.loads(ok("compact", p, "--json").stdout)["blocks_given_back"] == 0


def test_compact_differencing_keeps_zeroes_that_hide_parent_data(tmp_path):
    base, child = tmp_path / "base.vhdx", tmp_path / "child.avhdx"
    ok("create", base, "--size", "16M", "--block-size", "1M")
    io_write(base, 0, b"\x77" * MiB, tmp_path)          # parent data in block 0
    ok("create", child, "--parent", base)
    for off in (0, 4 * MiB):
        io_write(child, off, b"\1" * MiB, tmp_path)
        io_write(child, off, b"\0" * MiB, tmp_path)
    # block 0: zeroes hiding parent data, must stay; block 4: may go
    content = sha256(to_raw(child, tmp_path / "c1.raw"))
    r = json.loads(ok("compact", child, "--json").stdout)
    assert r["blocks_given_back"] == 1
    assert sha256(to_raw(child, tmp_path / "c2.raw")) == content
    assert io_read(child, 0, 4096) == b"\0" * 4096


def test_compact_raw_punches_holes(tmp_path):
    p = tmp_path / "r.raw"
    data = bytearray(random.Random(8).randbytes(16 * MiB))
    data[4 * MiB:10 * MiB] = bytes(6 * MiB)  # written zeroes, not a hole
    p.write_bytes(bytes(data))
    os.sync()
    usage = p.stat().st_blocks * 512
    ok("compact", p)
    assert p.read_bytes() == bytes(data)
    assert p.stat().st_size == 16 * MiB
    assert usage - p.stat().st_blocks * 512 >= 5 * MiB, "no space went back to the host"


def test_compact_fixed_is_a_no_op(tmp_path):
    p = tmp_path / "f.vhdx"
    ok("create", p, "--size", "8M", "--type", "fixed", "--block-size", "1M")
    before = sha256(p)
    assert "nothing to give back" in ok("compact", p).stdout
    assert sha256(p) == before


# ---- corrupt images: a clean error, never a crash --------------------------

def _corrupt_cases(tmp_path):
    """(name, path) of damaged images built from good ones."""
    cases = []
    good = tmp_path / "good.vhdx"
    ok("create", good, "--size", "64M", "--block-size", "1M")
    io_write(good, 0, random.Random(3).randbytes(2 * MiB), tmp_path)

    t = tmp_path / "truncated.vhdx"
    shutil.copy(good, t)
    os.truncate(t, 100 * 1024)  # inside the headers/region area
    cases.append(("truncated-head", t))

    t2 = tmp_path / "truncated-data.vhdx"
    shutil.copy(good, t2)
    os.truncate(t2, good.stat().st_size - MiB)  # BAT points past the end
    cases.append(("truncated-data", t2))

    h = tmp_path / "headers.vhdx"
    shutil.copy(good, h)
    with open(h, "r+b") as f:
        for off in (64 * 1024 + 100, 128 * 1024 + 100):  # both headers, past the checksum
            f.seek(off)
            b = f.read(1)
            f.seek(off)
            f.write(bytes([b[0] ^ 0xff]))
    cases.append(("both-header-checksums", h))

    rt = tmp_path / "regions.vhdx"
    shutil.copy(good, rt)
    with open(rt, "r+b") as f:
        for off in (192 * 1024 + 40, 256 * 1024 + 40):  # both region tables
            f.seek(off)
            f.write(b"\xde\xad\xbe\xef")
    cases.append(("region-table-checksums", rt))

    sig = tmp_path / "signature-only.vhdx"
    sig.write_bytes(b"vhdxfile" + b"\0" * (300 * 1024))
    cases.append(("signature-only", sig))

    vhd = tmp_path / "good.vhd"
    ok("create", vhd, "--size", "16M")
    bad = tmp_path / "footer.vhd"
    shutil.copy(vhd, bad)
    size = bad.stat().st_size
    with open(bad, "r+b") as f:
        for off in (0, size - 512):  # the footer and its copy: damage the checksum
            f.seek(off + 64)
            f.write(b"\xff\xff\xff\xff")
    cases.append(("vhd-footer-checksums", bad))

    vt = tmp_path / "truncated.vhd"
    shutil.copy(vhd, vt)
    os.truncate(vt, 1024 + 256)
    with open(vt, "ab") as f:  # a footer copy at the end that points at nothing
        f.write(open(vhd, "rb").read(512))
    cases.append(("vhd-truncated", vt))
    return cases


def test_corrupt_images_fail_cleanly(tmp_path):
    for name, p in _corrupt_cases(tmp_path):
        before = sha256(p)
        for args in (["info", p], ["check", p], ["convert", p, tmp_path / (name + ".raw")]):
            r = disk(*args)
            assert r.returncode > 0, "%s %s: exit %d (crash if negative)\n%s%s" % (
                name, args[0], r.returncode, r.stdout, r.stderr)
            assert r.returncode != 2, (name, r.stderr)
            assert "error" in (r.stderr + r.stdout).lower() or args[0] == "check", (name, r.stderr)
            assert "AddressSanitizer" not in r.stderr and "runtime error" not in r.stderr
        assert not (tmp_path / (name + ".raw")).exists(), "a failed convert left its output"
        assert not list(tmp_path.glob(name + ".raw.tmp-*")), "a failed convert left a temp file"
        assert sha256(p) == before, "%s: a read-only command modified the file" % name


# ---- convert: progress, and nothing left behind when interrupted ----------

def test_convert_progress_on_request(tmp_path):
    src = random_raw(tmp_path / "p.raw", 64 * MiB, 11, fill=0.9)
    r = ok("convert", src, tmp_path / "p.vhdx", "--progress")
    lines = [l for l in r.stderr.splitlines() if l.startswith("convert:")]
    assert lines and lines[-1].endswith("100%"), r.stderr
    # not a tty and not asked: quiet
    r = ok("convert", src, tmp_path / "q.vhdx")
    assert r.stderr == ""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_convert_interrupted_leaves_nothing(tmp_path, sig):
    src = tmp_path / "big.raw"
    with open(src, "wb") as f:
        block = os.urandom(4 * MiB)
        for _ in range(256):  # 1 GiB of data to copy
            f.write(block)
    dst = tmp_path / "big.vhdx"
    p = subprocess.Popen([str(cli()), "disk", "convert", str(src), str(dst), "--progress"],
                         stderr=subprocess.PIPE, text=True)
    # wait until the copy is under way, then interrupt it
    first = p.stderr.readline()
    assert first.startswith("convert:"), first
    p.send_signal(sig)
    err = first + p.stderr.read()
    p.wait(timeout=60)
    # 1 GiB cannot be copied between the first progress line and the
    # signal; an exit 0 means the signal was ignored.
    assert p.returncode == 1, (p.returncode, err)
    assert "interrupted" in err
    assert sorted(x.name for x in tmp_path.iterdir()) == ["big.raw"]


# ---- hand-damaged VHDX metadata (parsed here, independently of the library) -

import struct
import uuid

REGION_BAT = uuid.UUID("2DC27766-F623-4200-9D64-115E9BFD4A08")
REGION_METADATA = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")
META_VIRTUAL_SIZE = uuid.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
META_FILE_PARAMETERS = uuid.UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")


def vhdx_regions(data):
    """{guid: (offset, length)} from the first region table (64 KiB at 192 KiB)."""
    rt = data[192 * 1024: 256 * 1024]
    assert rt[:4] == b"regi"
    count = struct.unpack_from("<I", rt, 8)[0]
    out = {}
    for i in range(count):
        g, off, length, _ = struct.unpack_from("<16sQII", rt, 16 + 32 * i)
        out[uuid.UUID(bytes_le=g)] = (off, length)
    return out


def vhdx_metadata_items(data):
    """{guid: (absolute file offset, length, entry offset)}."""
    moff, _ = vhdx_regions(data)[REGION_METADATA]
    assert data[moff:moff + 8] == b"metadata"
    count = struct.unpack_from("<H", data, moff + 10)[0]
    out = {}
    for i in range(count):
        e = moff + 32 + 32 * i
        g, off, length, _ = struct.unpack_from("<16sIII", data, e)
        out[uuid.UUID(bytes_le=g)] = (moff + off, length, e)
    return out


def damaged_copy(tmp_path, good, name, patch):
    p = tmp_path / name
    data = bytearray(good.read_bytes())
    patch(data)
    p.write_bytes(bytes(data))
    return p


@pytest.fixture
def good_vhdx(tmp_path):
    g = tmp_path / "good.vhdx"
    ok("create", g, "--size", "64M", "--block-size", "1M")
    io_write(g, 0, random.Random(4).randbytes(MiB), tmp_path)
    return g


def _absurd_size(data):
    off, _, _ = vhdx_metadata_items(data)[META_VIRTUAL_SIZE]
    struct.pack_into("<Q", data, off, 1 << 62)


def _zero_size(data):
    off, _, _ = vhdx_metadata_items(data)[META_VIRTUAL_SIZE]
    struct.pack_into("<Q", data, off, 0)


def _bad_block_size(data):
    off, _, _ = vhdx_metadata_items(data)[META_FILE_PARAMETERS]
    struct.pack_into("<I", data, off, 3 * MiB)  # not a power of two


def _unknown_required_item(data):
    _, _, e = vhdx_metadata_items(data)[META_FILE_PARAMETERS]
    data[e:e + 16] = uuid.uuid4().bytes_le  # flags keep IsRequired


def _item_past_region(data):
    _, _, e = vhdx_metadata_items(data)[META_VIRTUAL_SIZE]
    struct.pack_into("<I", data, e + 16, 0x7FFFFFF0)


@pytest.mark.parametrize("patch", [_absurd_size, _zero_size, _bad_block_size,
                                   _unknown_required_item, _item_past_region],
                         ids=lambda f: f.__name__.strip("_"))
def test_damaged_vhdx_metadata_is_refused(tmp_path, good_vhdx, patch):
    bad = damaged_copy(tmp_path, good_vhdx, "bad.vhdx", patch)
    before = sha256(bad)
    for args in (["info", bad], ["check", bad], ["convert", bad, tmp_path / "out.raw"]):
        r = disk(*args)
        assert r.returncode == 1, (patch.__name__, args[0], r.returncode, r.stdout, r.stderr)
        assert "bad.vhdx" in r.stderr + r.stdout
    assert not (tmp_path / "out.raw").exists()
    assert sha256(bad) == before


def test_vhdx_bat_entry_past_the_end(tmp_path, good_vhdx):
    def patch(data):
        boff, _ = vhdx_regions(data)[REGION_BAT]
        # block 1: FULLY_PRESENT (6) at a file offset far past the end
        struct.pack_into("<Q", data, boff + 8, (0xFFFFF << 20) | 6)
    bad = damaged_copy(tmp_path, good_vhdx, "bat.vhdx", patch)
    before = sha256(bad)
    r = disk("check", bad)
    assert r.returncode == 1 and "bat.vhdx" in r.stdout + r.stderr, r.stdout + r.stderr
    r = disk("convert", bad, tmp_path / "out.raw")
    assert r.returncode == 1 and "bat.vhdx" in r.stderr, r.stderr
    assert not (tmp_path / "out.raw").exists()
    assert sha256(bad) == before


# ---- hand-damaged VHD metadata (checksums recomputed so parsing goes deep) ---

def vhd_checksum(block, at):
    s = sum(block[:at]) + sum(block[at + 4:])
    return (~s) & 0xFFFFFFFF


def vhd_fix(data, off, length, at):
    struct.pack_into(">I", data, off + at, vhd_checksum(data[off:off + length], at))


def vhd_patch_footers(data, fn):
    for off in (0, len(data) - 512):
        fn(data, off)
        vhd_fix(data, off, 512, 64)


def vhd_dyn_header(data):
    return struct.unpack_from(">Q", data, len(data) - 512 + 16)[0]


def _vhd_absurd_size(data):
    def f(d, off):
        struct.pack_into(">Q", d, off + 48, 1 << 62)
    vhd_patch_footers(data, f)


def _vhd_bad_block_size(data):
    h = vhd_dyn_header(data)
    struct.pack_into(">I", data, h + 32, 3 * MiB)
    vhd_fix(data, h, 1024, 36)


def _vhd_absurd_table(data):
    h = vhd_dyn_header(data)
    struct.pack_into(">I", data, h + 28, 0xFFFFFFF0)
    vhd_fix(data, h, 1024, 36)


def _vhd_table_past_end(data):
    h = vhd_dyn_header(data)
    struct.pack_into(">Q", data, h + 16, 1 << 40)
    vhd_fix(data, h, 1024, 36)


@pytest.mark.parametrize("patch", [_vhd_absurd_size, _vhd_bad_block_size, _vhd_absurd_table,
                                   _vhd_table_past_end],
                         ids=lambda f: f.__name__.strip("_"))
def test_damaged_vhd_metadata_is_refused(tmp_path, patch):
    good = tmp_path / "good.vhd"
    ok("create", good, "--size", "16M")
    io_write(good, 0, random.Random(6).randbytes(MiB), tmp_path)
    bad = damaged_copy(tmp_path, good, "bad.vhd", patch)
    before = sha256(bad)
    for args in (["info", bad], ["check", bad], ["convert", bad, tmp_path / "out.raw"]):
        r = disk(*args)
        assert r.returncode == 1, (patch.__name__, args[0], r.returncode, r.stdout, r.stderr)
        assert "bad.vhd" in r.stderr + r.stdout
    assert not (tmp_path / "out.raw").exists()
    assert sha256(bad) == before


def test_vhd_bat_entry_past_the_end(tmp_path):
    good = tmp_path / "good.vhd"
    ok("create", good, "--size", "16M")
    io_write(good, 0, random.Random(6).randbytes(4 * MiB), tmp_path)

    def patch(data):
        h = vhd_dyn_header(data)
        bat = struct.unpack_from(">Q", data, h + 16)[0]
        struct.pack_into(">I", data, bat + 4, 0x7FFFFF00)  # block 1, far past the end
    bad = damaged_copy(tmp_path, good, "bat.vhd", patch)
    before = sha256(bad)
    r = disk("check", bad)
    assert r.returncode == 1 and "bat.vhd" in r.stdout + r.stderr, r.stdout + r.stderr
    r = disk("convert", bad, tmp_path / "out.raw")
    assert r.returncode == 1 and "bat.vhd" in r.stderr, r.stderr
    assert not (tmp_path / "out.raw").exists()
    assert sha256(bad) == before
