# Sourced by scripts/check.sh (and by tests/scripts/test_summary.py): how a
# step of make check is run and recorded, so that it fails closed.
# shellcheck shell=bash

steps=() # --step NAME:STATUS[:KIND:RESULTFILE] arguments for scripts/summary.py

step() { echo; echo "=== $* ==="; }

# record NAME STATUS [KIND FILE]: one step's outcome, for the summary.
record() { steps+=("--step" "$(IFS=:; echo "$*")"); }

# run_tests NAME KIND FILE COMMAND...: deletes FILE (so an earlier run's
# results cannot stand in), runs COMMAND, records its status and FILE.
run_tests() {
	local name=$1 kind=$2 file=$3
	shift 3
	rm -f "$file"
	"$@"
	record "$name" $? "$kind" "$file"
}

# summary: the one closing line; the exit status of make check.
summary() { python3 "$(dirname "${BASH_SOURCE[0]}")/summary.py" "${steps[@]}"; }
