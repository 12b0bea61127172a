#!/bin/bash
# make run: the way a user would do it by hand -- start cloisond on a private
# state directory, create a dynamic VHDX, create a VM named "demo" from the
# built-in test guest with that disk, start it and attach its console. The
# guest's `demo` word answers on the console: try help, facts, disk, net,
# poweroff (DEMO_CMDLINE=count for the old counter).
# Every command is printed before it runs; everything is cleaned up on exit.
set -eu
cd "$(dirname "$0")/.."
BUILD=${CLOISON_BUILD:-build}
CLOISOND=$BUILD/src/daemon/cloisond
CLOISON=$BUILD/src/cli/cloison
GUEST=$(realpath "$BUILD/guest/cloison-testguest")
DEMO_CMDLINE=${DEMO_CMDLINE:-demo}

for f in "$CLOISOND" "$CLOISON" "$BUILD/src/vmm/cloison-vmm" "$GUEST"; do
	[ -x "$f" ] || [ -f "$f" ] || { echo "run-demo: $f is not built (run make)" >&2; exit 1; }
done

TMP=$(mktemp -d /tmp/cloison-demo.XXXXXX)
STATE=$TMP/state
export CLOISON_SOCKET=$TMP/cloisond.sock
DAEMON_PID=

show() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

cleanup() {
	set +e
	trap - EXIT INT TERM
	if [ -n "$DAEMON_PID" ]; then
		if "$CLOISON" vm show demo --json >/dev/null 2>&1; then
			case $("$CLOISON" vm show demo --json | sed -n 's/.*"state": "\([a-z]*\)".*/\1/p') in
			running) show "$CLOISON" vm stop demo --timeout 10 ;;
			paused) show "$CLOISON" vm stop demo --turn-off ;;
			esac
			show "$CLOISON" vm remove demo
		fi
		printf '\n\033[1m$ kill -TERM %s   # stop cloisond\033[0m\n' "$DAEMON_PID"
		kill -TERM "$DAEMON_PID" 2>/dev/null
		wait "$DAEMON_PID" 2>/dev/null
	fi
	rm -rf "$TMP"
	echo "run-demo: cleaned up $TMP"
}
trap cleanup EXIT INT TERM

printf '\033[1m$ %s --state-dir %s --socket %s &\033[0m\n' "$CLOISOND" "$STATE" "$CLOISON_SOCKET"
"$CLOISOND" --state-dir "$STATE" --socket "$CLOISON_SOCKET" 2>"$TMP/cloisond.log" &
DAEMON_PID=$!
for _ in $(seq 100); do
	[ -S "$CLOISON_SOCKET" ] && break
	kill -0 "$DAEMON_PID" 2>/dev/null || { cat "$TMP/cloisond.log" >&2; exit 1; }
	sleep 0.05
done
echo "(cloisond pid $DAEMON_PID, log in $TMP/cloisond.log)"

show "$CLOISON" host info
DISK="$STATE/demo/Virtual Hard Disks/demo.vhdx"
mkdir -p "$(dirname "$DISK")"
show "$CLOISON" disk create "$DISK" --size 1G --type dynamic
show "$CLOISON" vm create demo --kernel "$GUEST" --cpus 2 --memory 256M \
	--cmdline "$DEMO_CMDLINE" --disk "$DISK"
show "$CLOISON" vm start demo
show "$CLOISON" vm list
if [ -t 0 ]; then
	echo "(type help at the cloison> prompt; detach from the console with Ctrl-])"
	show "$CLOISON" vm console demo || true
else
	echo "(no terminal: typing help, facts and disk at the prompt, then 5 seconds of console)"
	printf '\n\033[1m$ (sleep 1; printf "help\\rfacts\\rdisk\\r"; sleep 4) | timeout 5 %s vm console demo\033[0m\n' "$CLOISON"
	(sleep 1; printf 'help\rfacts\rdisk\r'; sleep 4) | timeout 5 "$CLOISON" vm console demo || true
fi
show "$CLOISON" vm show demo
