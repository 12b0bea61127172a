#!/bin/bash
# `make fuzz`: builds the libFuzzer targets (build-fuzz/) and runs each for
# FUZZ_SECONDS seconds (default 300), one after another on one core,
# starting from the checked-in seeds (tests/fuzz/corpus/<target>/) and
# the corpus earlier runs grew (build-fuzz/fuzz-corpus/<target>/).
# FUZZ_TARGETS="fuzz_a fuzz_b" picks targets. Crashing inputs land in
# build-fuzz/fuzz-artifacts/; the log of each run in build-fuzz/fuzz-logs/.
# Prints one line per target (executions, seconds, crashes) and exits
# non-zero if any target crashed.
set -u
cd "$(dirname "$0")/../.."
SECONDS_EACH=${FUZZ_SECONDS:-300}
B=build-fuzz
if [ ! -f $B/build.ninja ]; then
	CC=clang meson setup $B -Dfuzz=true -Dguest=false -Dtests=false -Dwerror=true >/dev/null ||
		exit 1
fi
ninja -C $B fuzz >/dev/null || { echo "make fuzz: the fuzz build failed (ninja -C $B fuzz)"; exit 1; }
targets=${FUZZ_TARGETS:-$(cd $B/tests/fuzz && ls fuzz_* | grep -v '\.' | sort)}
mkdir -p $B/fuzz-logs $B/fuzz-artifacts
failed=0
for t in $targets; do
	exe=$B/tests/fuzz/$t
	[ -x "$exe" ] || { echo "make fuzz: no target $t in $B/tests/fuzz"; failed=1; continue; }
	mkdir -p $B/fuzz-corpus/$t
	seeds=()
	[ -d tests/fuzz/corpus/$t ] && seeds=(tests/fuzz/corpus/$t)
	log=$B/fuzz-logs/$t.log
	start=$(date +%s)
	"$exe" -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -print_final_stats=1 \
		-artifact_prefix=$B/fuzz-artifacts/$t- $B/fuzz-corpus/$t "${seeds[@]}" >"$log" 2>&1
	rc=$?
	secs=$(( $(date +%s) - start ))
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
	crashes=0
	if [ $rc -ne 0 ]; then
		crashes=1
		failed=1
	fi
	printf '%-22s %12s executions %6s s  %d crash(es)%s\n' "$t" "${execs:-?}" "$secs" \
		"$crashes" "$([ $rc -ne 0 ] && echo "  (see $log)")"
done
exit $failed
