#!/bin/bash
# make check: install what is missing, build (plain, ASan+UBSan, fuzz),
# run unit tests under the sanitizers, fuzz targets for a bounded time and
# the system tests against the real binaries. Ends with one summary line.
set -u
cd "$(dirname "$0")/.."
TOP=$(pwd)
PY=/usr/bin/python3
FUZZ_SECONDS=${FUZZ_SECONDS:-20}
export FUZZ_SECONDS
. scripts/check-lib.sh

step "dependencies"
./scripts/deps.sh; record deps $?

step "build (build/)"
rc=0
[ -f build/build.ninja ] || meson setup build >/dev/null || rc=$?
[ $rc -ne 0 ] || ninja -C build || rc=$?
record build $rc

step "build with ASan+UBSan (build-asan/)"
rc=0
[ -f build-asan/build.ninja ] || meson setup build-asan -Db_sanitize=address,undefined \
	-Db_lundef=false -Dguest=false >/dev/null || rc=$?
[ $rc -ne 0 ] || ninja -C build-asan || rc=$?
record build-asan $rc

step "unit tests under ASan+UBSan"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	run_tests unit meson build-asan/meson-logs/testlog.json \
	meson test -C build-asan --suite unit --print-errorlogs

# clang is a dependency (scripts/deps.sh): without it this step fails, it is
# not skipped.
step "fuzz targets, ${FUZZ_SECONDS}s each (build-fuzz/)"
rc=0
[ -f build-fuzz/build.ninja ] || CC=clang meson setup build-fuzz -Dfuzz=true -Dguest=false \
	-Dtests=false -Dwerror=true >/dev/null || rc=$?
# Only the fuzz targets: the rest of the tree is built and tested above.
[ $rc -ne 0 ] || ninja -C build-fuzz fuzz || rc=$?
record build-fuzz $rc
run_tests fuzz meson build-fuzz/meson-logs/testlog.json \
	meson test -C build-fuzz --no-rebuild --suite fuzz --print-errorlogs

step "make check's own summary (pytest, tests/scripts)"
run_tests scripts junit build/scripts.xml \
	$PY -m pytest -p no:cacheprovider -q --junitxml="$TOP/build/scripts.xml" tests/scripts

# A green run takes about 8 minutes here. The budget keeps a red one (tests
# that hang until their 300 s timeout) inside 45 minutes: past it each
# remaining test fails at once; timeout(1) is the backstop.
step "system tests (pytest, real binaries)"
CLOISON_BUILD="$TOP/build" CLOISON_TEST_BUDGET_S=${CLOISON_TEST_BUDGET_S:-1800} \
	run_tests system junit build/pytest.xml timeout -k 30 2100 $PY -m pytest -p no:cacheprovider -rs --junitxml="$TOP/build/pytest.xml" tests/system

step "summary"
summary
