#!/usr/bin/env bash
# `make demo`: a hive on a throw-away state dir, and a followed build of the
# bundled `cbuild` worker (make -j, ~15 s). Press Ctrl+C during the build: the
# keeper cancels it and prints the hive's teardown report.
set -uo pipefail
venv=${VENV:-.venv}
worker=${DEMO_WORKER:-cbuild}
state=$(mktemp -d -t hive-demo.XXXXXX)
log="$state/hive.log"

# The hive gets its own session, so the terminal's Ctrl+C reaches only the keeper.
setsid "$venv/bin/hive" serve --bind 127.0.0.1:0 --state-dir "$state" 2>"$log" &
hive_pid=$!
stop_hive() {
	kill -TERM "$hive_pid" 2>/dev/null && wait "$hive_pid"
	echo "demo: hive stopped; its log:" >&2
	sed 's/^/  | /' "$log" >&2
	rm -rf "$state"
}
trap stop_hive EXIT

url=""
for _ in $(seq 200); do
	url=$(sed -n 's/.*ready on \(http:[^ ]*\).*/\1/p' "$log")
	[[ -n $url ]] && break
	kill -0 "$hive_pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
	sleep 0.1
done
[[ -n $url ]] || { echo "demo: the hive did not start" >&2; exit 1; }

echo "demo: hive at $url; building '$worker' — press Ctrl+C to cancel the build" >&2
# The keeper finds the token of a local hive in $HIVE_STATE_DIR/token.
HIVE_STATE_DIR="$state" "$venv/bin/keeper" --hive "$url" download "$worker" --follow
rc=$?
echo "demo: keeper exited with $rc" >&2
exit "$rc"
