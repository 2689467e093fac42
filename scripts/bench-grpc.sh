#!/usr/bin/env bash
# DESIGN §9's server rows, measured with the release binaries on this machine:
#   - import through gRPC ImportRelationships (a fresh embedded store), its time;
#   - resident memory of the server before and after, per relationship;
#   - cold start: process start to the ready line, reopening that store;
#   - gRPC Check, open loop at RATE/s, server pinned to core 0 and the load generator
#     to core 1, and the same for the empty unary call (the health check).
# Usage: scripts/bench-grpc.sh RELATIONSHIPS [RATE] [DURATION]
#   e.g. scripts/bench-grpc.sh 1000000 20000 30s;  scripts/bench-grpc.sh 10000000 '' ''
# (an empty RATE skips the open-loop runs). Build first:
#   cargo build --release --workspace --all-targets
set -euo pipefail

N=${1:?usage: scripts/bench-grpc.sh RELATIONSHIPS [RATE] [DURATION]}
RATE=${2-20000}
DURATION=${3-30s}
T=${CARGO_TARGET_DIR:-$HOME/.cache/arbiter-target}/release
ARBITER=$T/arbiter
LOADTEST=$T/arbiter-loadtest
for b in "$ARBITER" "$LOADTEST"; do
  [ -x "$b" ] || { echo "error: $b is missing: cargo build --release --workspace --all-targets" >&2; exit 1; }
done
WORK=${BENCH_WORK:-/tmp/arbiter-bench-grpc}
DS=$WORK/dataset-$N
DATA=$WORK/data-$N
OUT=$WORK/out-$N
mkdir -p "$WORK" "$OUT"
# Below the ephemeral range (32768-60999), where a client connection in TIME_WAIT can hold the port.
PORT=${BENCH_PORT:-20151}
HTTP=${BENCH_HTTP_PORT:-20152}
ENDPOINT=http://127.0.0.1:$PORT

if [ ! -f "$DS/manifest.json" ]; then
  echo "== gen $N relationships into $DS"
  "$LOADTEST" gen --relationships "$N" --seed 1 --out "$DS"
fi

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

SERVER_PID=
stop_server() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=; fi
}
trap stop_server EXIT

# Starts the server pinned to core 0 and waits for its ready line; READY is the seconds
# from process start to ready.
start_server() {
  local log=$OUT/server.log
  : >"$log"
  local started
  started=$(date +%s.%N)
  taskset -c 0 "$ARBITER" serve --data-dir "$DATA" --grpc-addr "127.0.0.1:$PORT" --http-addr "127.0.0.1:$HTTP" \
    --max-message-size $((64 << 20)) >"$log" 2>"$OUT/server.err" &
  SERVER_PID=$!
  until grep -q 'arbiter ready' "$log"; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then echo "error: the server exited: $(cat "$OUT/server.err")" >&2; exit 1; fi
    sleep 0.01
  done
  READY=$(echo "$(date +%s.%N) $started" | awk '{printf "%.2f", $1 - $2}')
}

# CPU time (user + system, in clock ticks) the server has used so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# Waits until the server used at most 2% of a core over a whole second (at most 300 s).
settle() {
  local started prev now tick
  started=$(date +%s.%N)
  tick=$(getconf CLK_TCK)
  prev=$(cpu_ticks "$SERVER_PID")
  for _ in $(seq 1 300); do
    sleep 1
    now=$(cpu_ticks "$SERVER_PID")
    if [ $(( (now - prev) * 50 )) -le "$tick" ]; then break; fi
    prev=$now
  done
  echo "idle after $(echo "$(date +%s.%N) $started" | awk '{printf "%.0f", $1 - $2}') s"
}

rm -rf "$DATA"
echo "== import $N relationships through ImportRelationships into a fresh store"
start_server
BEFORE=$(rss_kib "$SERVER_PID")
IMPORT_START=$(date +%s.%N)
taskset -c 1 "$LOADTEST" run --endpoint "$ENDPOINT" --dataset "$DS" --load --rate 1 --duration 1s >"$OUT/load.txt" 2>&1
IMPORT_END=$(date +%s.%N)
sleep 2
AFTER=$(rss_kib "$SERVER_PID")
IMPORT_SECS=$(echo "$IMPORT_END $IMPORT_START" | awk '{printf "%.1f", $1 - $2}')
grep -i 'loaded\|import' "$OUT/load.txt" | tail -2 || true
echo "import: ${IMPORT_SECS} s (including the schema write and a 1 s run)"
echo "server RSS: before ${BEFORE} KiB, after ${AFTER} KiB: $(( (AFTER - BEFORE) * 1024 / N )) bytes per relationship (history of the import's revisions included)"
stop_server

echo "== cold start: reopen the store"
start_server
sleep 1
RSS=$(rss_kib "$SERVER_PID")
echo "cold start to ready: ${READY} s; RSS after reopen ${RSS} KiB: $(( RSS * 1024 / N )) bytes per relationship (whole process)"

if [ -n "$RATE" ]; then
  # A fresh import leaves RocksDB flushing and compacting for a while on the server's
  # one core; the open-loop rows are the steady state after that.
  echo "== settle: wait until the server is idle (RocksDB done compacting the import)"
  settle
  echo "== warm-up: 5 s of checks at $RATE/s (discarded)"
  taskset -c 1 "$LOADTEST" run --endpoint "$ENDPOINT" --dataset "$DS" --rate "$RATE" --duration 5s >/dev/null 2>&1
  echo "== open loop: Check at $RATE/s for $DURATION (server on core 0, generator on core 1)"
  taskset -c 1 "$LOADTEST" run --endpoint "$ENDPOINT" --dataset "$DS" --rate "$RATE" --duration "$DURATION" \
    --json "$OUT/check.json" --plot "$OUT/check.svg" 2>/dev/null | tail -12
  echo "== open loop: the empty unary call (health check) at $RATE/s for $DURATION"
  taskset -c 1 "$LOADTEST" run --endpoint "$ENDPOINT" --dataset "$DS" --rate "$RATE" --duration "$DURATION" \
    --mix empty=100 --json "$OUT/empty.json" 2>/dev/null | tail -12
  echo "== JSON: $OUT/check.json $OUT/empty.json"
  cat "$OUT/check.json"; echo; cat "$OUT/empty.json"; echo
fi
