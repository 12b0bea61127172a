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
steps_failed=()

step() { echo; echo "=== $* ==="; }

step "dependencies"
./scripts/deps.sh || steps_failed+=("deps")

step "build (build/)"
if [ ! -f build/build.ninja ]; then meson setup build >/dev/null || steps_failed+=("setup build"); fi
ninja -C build || steps_failed+=("build")

step "build with ASan+UBSan (build-asan/)"
if [ ! -f build-asan/build.ninja ]; then
	meson setup build-asan -Db_sanitize=address,undefined -Db_lundef=false -Dguest=false \
		>/dev/null || steps_failed+=("setup build-asan")
fi
ninja -C build-asan || steps_failed+=("build-asan")

step "unit tests under ASan+UBSan"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	meson test -C build-asan --suite unit --print-errorlogs

if command -v clang >/dev/null; then
	step "fuzz targets, ${FUZZ_SECONDS}s each (build-fuzz/)"
	if [ ! -f build-fuzz/build.ninja ]; then
		CC=clang meson setup build-fuzz -Dfuzz=true -Dguest=false -Dtests=false \
			-Dwerror=true >/dev/null || steps_failed+=("setup build-fuzz")
	fi
	# Only the fuzz targets: the rest of the tree is built and tested above.
	ninja -C build-fuzz fuzz || steps_failed+=("build-fuzz")
	meson test -C build-fuzz --no-rebuild --suite fuzz --print-errorlogs
fi

step "system tests (pytest, real binaries)"
CLOISON_BUILD="$TOP/build" $PY -m pytest -p no:cacheprovider -rs \
	--junitxml="$TOP/build/pytest.xml" tests/system

step "summary"
$PY scripts/summary.py --steps-failed "${#steps_failed[@]}" \
	build-asan/meson-logs/testlog.json build-fuzz/meson-logs/testlog.json build/pytest.xml
