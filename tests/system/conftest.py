"""Shared fixtures for the system tests: they drive the real binaries built
in $CLOISON_BUILD (default: build/ at the top of the tree)."""
import os
import pathlib
import shutil
import subprocess
import time

import pytest

TOP = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("CLOISON_BUILD", TOP / "build")).resolve()
TESTDATA = (TOP / ".." / "shared" / "testdata").resolve()


def binary(name):
    """Path of a built binary, wherever meson put it under BUILD."""
    for sub in ("src/vmm", "src/cli", "src/daemon", "guest", "."):
        p = BUILD / sub / name
        if p.exists():
            return p
    pytest.fail("%s not built under %s: run make first" % (name, BUILD))


def have_kvm():
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
        os.close(fd)
        return True
    except OSError:
        return False


def require_kvm():
    if not have_kvm():
        pytest.skip("this host has no usable /dev/kvm: the test needs KVM")


def require_root():
    if os.geteuid() != 0:
        pytest.skip("the test needs root (network namespaces, taps)")


@pytest.fixture(scope="session")
def build_dir():
    return BUILD


@pytest.fixture(scope="session")
def vmm_bin():
    return binary("cloison-vmm")


@pytest.fixture(scope="session")
def cli_bin():
    return binary("cloison")


@pytest.fixture(scope="session")
def daemon_bin():
    return binary("cloisond")


@pytest.fixture(scope="session")
def testguest():
    return binary("cloison-testguest")


@pytest.fixture(scope="session")
def testdata():
    return TESTDATA


@pytest.fixture
def kvm():
    require_kvm()


def run(cmd, **kw):
    """subprocess.run with text output captured, never raising on status."""
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 120)
    return subprocess.run([str(c) for c in cmd], **kw)


def which(name):
    return shutil.which(name)


# make check's time budget for the system tests (scripts/check.sh sets it):
# once it is spent, each remaining test fails at once, naming the budget,
# so a run with many hung tests still ends in time and says what it did not
# run. Unset, there is no budget.
_BUDGET_S = float(os.environ.get("CLOISON_TEST_BUDGET_S", "0") or 0)
_SESSION_START = None


def pytest_sessionstart(session):
    global _SESSION_START
    _SESSION_START = time.monotonic()


def pytest_runtest_setup(item):
    if _BUDGET_S and time.monotonic() - _SESSION_START > _BUDGET_S:
        pytest.fail("not run: make check's system-test budget of %d s was spent "
                    "(CLOISON_TEST_BUDGET_S)" % _BUDGET_S, pytrace=False)
