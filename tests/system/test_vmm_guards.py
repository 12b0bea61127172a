"""cloison-vmm never hangs on a special file and always ends on a
termination signal (issue 16 item 5): a FIFO, directory or device named as
kernel or initrd is refused at once (usage error, exit 2) instead of
blocking in open(); a set-up step that does block (COM1 on a FIFO nobody
reads) ends on SIGTERM."""
import os
import signal
import subprocess
import time

import pytest


def start(vmm_bin, *args):
    return subprocess.Popen([str(vmm_bin)] + [str(a) for a in args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(p, timeout):
    try:
        _, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        pytest.fail("cloison-vmm still running after %s s" % timeout)
    return p.returncode, err


@pytest.mark.parametrize("opt", ["--kernel", "--initrd"])
def test_fifo_boot_file_is_refused_without_blocking(vmm_bin, testguest, tmp_path, opt):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    args = ["--kernel", fifo] if opt == "--kernel" else ["--kernel", testguest, "--initrd", fifo]
    t0 = time.monotonic()
    status, err = finish(start(vmm_bin, *args, "--serial", "none"), 10)
    assert status == 2, err
    assert "%s %s is a FIFO, not a regular file" % (opt, fifo) in err
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize("path,kind", [("/dev/zero", "a character device"),
                                       ("/tmp", "a directory")])
def test_special_kernel_is_refused(vmm_bin, path, kind):
    status, err = finish(start(vmm_bin, "--kernel", path, "--serial", "none"), 10)
    assert status == 2, err
    assert "--kernel %s is %s, not a regular file" % (path, kind) in err


def test_sigterm_ends_a_blocked_set_up(vmm_bin, testguest, tmp_path, kvm):
    """COM1 on a FIFO with no reader blocks in open(); SIGTERM used to be
    blocked by then, so `timeout` could not stop the worker."""
    fifo = tmp_path / "com1"
    os.mkfifo(fifo)
    p = start(vmm_bin, "--kernel", testguest, "--serial", "file:%s" % fifo)
    time.sleep(1.5)
    assert p.poll() is None, "the worker should be waiting for a FIFO reader"
    p.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    status, err = finish(p, 10)
    assert time.monotonic() - t0 < 5
    assert status == 1, err
    assert "stopped by signal" in err
