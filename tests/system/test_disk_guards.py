"""Guards of the disk library seen through `cloison disk`: new images are
private (0600), and FIFOs are refused instead of hanging."""
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
