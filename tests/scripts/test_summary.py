"""scripts/summary.py and scripts/check-lib.sh: make check's closing line is
honest in every way a step can go wrong."""
import json
import os
import subprocess
import sys

import pytest

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SUMMARY = os.path.join(TOP, "scripts", "summary.py")
LIB = os.path.join(TOP, "scripts", "check-lib.sh")


def summary(*steps):
    args = [sys.executable, SUMMARY]
    for s in steps:
        args += ["--step", s]
    p = subprocess.run(args, capture_output=True, text=True)
    last = p.stdout.strip().splitlines()[-1]
    return p.returncode, last, p.stdout


def cmocka(*cases):
    """cmocka's output for cases given as (name, verdict or None)."""
    out = ["[==========] Running %d test(s)." % len(cases)]
    for name, verdict in cases:
        out.append("[ RUN      ] %s" % name)
        if verdict == "OK":
            out.append("[       OK ] %s" % name)
        elif verdict == "FAILED":
            out.append("[  FAILED  ] %s" % name)
        elif verdict == "SKIPPED":
            out.append("[  SKIPPED ] %s" % name)
    return "\n".join(out) + "\n"


def meson_log(path, *tests):
    """A meson testlog.json with tests given as (name, result, stdout)."""
    with open(path, "w") as f:
        for name, result, stdout in tests:
            f.write(json.dumps({"name": name, "result": result, "stdout": stdout,
                                "stderr": ""}) + "\n")
    return str(path)


def junit(path, passed=0, failed=0, skipped=0):
    cases = ['<testcase classname="t" name="p%d"/>' % i for i in range(passed)]
    cases += ['<testcase classname="t" name="f%d"><failure message="x"/></testcase>' % i
              for i in range(failed)]
    cases += ['<testcase classname="t" name="s%d"><skipped message="y"/></testcase>' % i
              for i in range(skipped)]
    with open(path, "w") as f:
        f.write('<testsuites><testsuite name="pytest">%s</testsuite></testsuites>' % "".join(cases))
    return str(path)


def test_counts_cmocka_cases_and_pytest_items_not_executables(tmp_path):
    log = meson_log(tmp_path / "t.json",
                    ("util", "OK", cmocka(("a", "OK"), ("b", "OK"), ("c", "OK"))),
                    ("disk", "OK", cmocka(("d", "OK"), ("e", "SKIPPED"))),
                    ("fuzz_vhd", "OK", "INFO: Done 1000 runs\n"))
    xml = junit(tmp_path / "p.xml", passed=4, skipped=1)
    rc, last, _ = summary("build:0", "unit:0:meson:" + log, "system:0:junit:" + xml)
    assert (rc, last) == (0, "9 passed, 0 failed, 2 skipped")


def test_cmocka_closing_lists_are_not_cases(tmp_path):
    out = cmocka(("a", "OK"), ("b", "SKIPPED"), ("c", "FAILED"))
    out += ("[==========] 3 test(s) run.\n[  PASSED  ] 1 test(s).\n"
            "[  SKIPPED ] 1 test(s), listed below:\n[  SKIPPED ] b\n"
            "[  FAILED  ] 1 test(s), listed below:\n[  FAILED  ] c\n"
            "[  ERROR   ] --- 0x1 != 0x2\n")
    log = meson_log(tmp_path / "t.json", ("vhd", "FAIL", out))
    rc, last, _ = summary("unit:1:meson:" + log)
    assert rc == 1 and last == "1 passed, 2 failed, 1 skipped"


def test_a_failed_case_is_named(tmp_path):
    log = meson_log(tmp_path / "t.json",
                    ("util", "FAIL", cmocka(("a", "OK"), ("b", "FAILED"))))
    rc, last, out = summary("unit:1:meson:" + log)
    assert rc == 1
    assert "FAILED: util::b" in out
    # the failed case, and the step's non-zero status
    assert last == "1 passed, 2 failed, 0 skipped"


def test_a_crash_inside_a_case_fails_that_case(tmp_path):
    log = meson_log(tmp_path / "t.json",
                    ("blk", "FAIL", cmocka(("a", "OK"), ("b", None))))
    rc, last, out = summary("unit:0:meson:" + log)
    assert rc == 1 and "FAILED: blk::b" in out
    assert last == "1 passed, 1 failed, 0 skipped"


def test_a_test_that_fails_after_its_cases_passed_is_a_failure(tmp_path):
    # e.g. LeakSanitizer at exit: every case OK, the executable fails
    log = meson_log(tmp_path / "t.json", ("vhdx", "FAIL", cmocka(("a", "OK"))))
    rc, last, out = summary("unit:0:meson:" + log)
    assert rc == 1 and "vhdx (FAIL after its cases)" in out
    assert last == "1 passed, 1 failed, 0 skipped"


def test_non_zero_exit_with_green_results_is_a_failure(tmp_path):
    # pytest killed after writing a green file, or an internal error
    xml = junit(tmp_path / "p.xml", passed=34)
    rc, last, out = summary("system:-9:junit:" + xml)
    assert rc == 1 and "step system exited with status -9" in out
    assert last == "34 passed, 1 failed, 0 skipped"


def test_a_missing_result_file_is_a_failure(tmp_path):
    rc, last, out = summary("system:0:junit:" + str(tmp_path / "none.xml"))
    assert rc == 1 and "left no result file" in out
    assert last == "0 passed, 1 failed, 0 skipped"


@pytest.mark.parametrize("content", ["", "<testsuites><testsuite>", "<testsuites/>"])
def test_an_empty_or_truncated_junit_file_is_a_failure(tmp_path, content):
    p = tmp_path / "p.xml"
    p.write_text(content)
    rc, last, _ = summary("system:0:junit:" + str(p))
    assert rc == 1 and last == "0 passed, 1 failed, 0 skipped"


@pytest.mark.parametrize("content", ["", '{"name": "x", "res'])
def test_an_empty_or_truncated_meson_log_is_a_failure(tmp_path, content):
    p = tmp_path / "t.json"
    p.write_text(content)
    rc, last, _ = summary("unit:0:meson:" + str(p))
    assert rc == 1 and last.endswith("1 failed, 0 skipped")


def test_a_failed_build_step_is_a_failure():
    rc, last, out = summary("build-asan:1")
    assert rc == 1 and "step build-asan exited with status 1" in out
    assert last == "0 passed, 1 failed, 0 skipped"


def test_no_steps_at_all_is_a_failure():
    p = subprocess.run([sys.executable, SUMMARY], capture_output=True, text=True)
    assert p.returncode == 1
    assert p.stdout.strip().splitlines()[-1] == "0 passed, 1 failed, 0 skipped"


def test_a_malformed_step_is_a_usage_error():
    p = subprocess.run([sys.executable, SUMMARY, "--step", "unit:zero"],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "NAME:STATUS" in p.stderr


def run_lib(tmp_path, body):
    """Runs body in bash with check-lib.sh sourced; returns (status, last line)."""
    script = ". %s\n%s\nsummary\n" % (LIB, body)
    p = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=tmp_path)
    return p.returncode, p.stdout.strip().splitlines()[-1], p.stdout


def test_an_earlier_runs_result_file_does_not_stand_in(tmp_path):
    """A green file left by an earlier run, then a step that dies before it
    writes a new one: the stale file is deleted first, so it counts as a
    failure rather than as 34 passes."""
    junit(tmp_path / "pytest.xml", passed=34)
    rc, last, out = run_lib(tmp_path, "run_tests system junit pytest.xml sh -c 'kill -9 $$'")
    assert rc == 1
    assert not (tmp_path / "pytest.xml").exists()
    assert "exited with status 137" in out and "left no result file" in out
    assert last == "0 passed, 2 failed, 0 skipped"


def test_run_tests_records_the_commands_status_and_results(tmp_path):
    xml = tmp_path / "r.xml"
    body = ("run_tests ok junit r.xml python3 -c \"open('r.xml','w').write("
            "'<testsuites><testsuite><testcase classname=\\\"a\\\" name=\\\"b\\\"/>"
            "</testsuite></testsuites>')\"\n"
            "run_tests bad junit r2.xml false\n"
            "record build 0")
    rc, last, out = run_lib(tmp_path, body)
    assert xml.exists()
    assert rc == 1 and "step bad exited with status 1" in out
    assert last == "1 passed, 2 failed, 0 skipped"


def test_a_spent_time_budget_fails_the_remaining_tests(tmp_path):
    """Past CLOISON_TEST_BUDGET_S every remaining system test fails at once,
    naming the budget, and the summary counts them as failures."""
    xml = tmp_path / "p.xml"
    env = dict(os.environ, CLOISON_TEST_BUDGET_S="0.000001")
    p = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                        "--junitxml=%s" % xml, os.path.join(TOP, "tests/system/test_vmm_cli.py")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 1, p.stdout
    assert "system-test budget" in p.stdout
    rc, last, _ = summary("system:%d:junit:%s" % (p.returncode, xml))
    assert rc == 1
    n = int(last.split(" failed")[0].split(", ")[1])
    assert n > 5 and last.startswith("0 passed"), last
