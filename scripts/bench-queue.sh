#!/usr/bin/env bash
# Queue mode against one process, on the shared ingest workload
# (/work/shared/bench/ingest; BENCHMARKS.md, "Queue mode"). Three runs in one
# go, each on a fresh Postgres database and stream, on the same machine:
#   1. one process (`serve` on Postgres);
#   2. one ingest node and one writer (`serve --queue`, `writer --queue`);
#   3. backlog drain: the ingest node alone takes the events into the
#      stream, then one writer starts and drains them.
# For each: events/s acknowledged, events/s stored, and each process's CPU
# time per event (utime+stime from /proc, so the load generator's own CPU is
# not counted).
#
#   scripts/bench-queue.sh [N]        N events (default 20000)
#
# Needs: a release build (cargo build --release -p errorflow-collector), the
# load generator built as /work/shared/bench/ingest/README.md says (into
# /tmp/ingest-bench-target), Postgres at ERRORFLOW_BENCH_PG (default
# postgres://postgres@127.0.0.1:5432) and NATS at ERRORFLOW_BENCH_NATS
# (default nats://127.0.0.1:4222).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20000}
BIN=target/release/errorflow-collector
LOADGEN=/tmp/ingest-bench-target/release/loadgen
PG=${ERRORFLOW_BENCH_PG:-postgres://postgres@127.0.0.1:5432}
NATS=${ERRORFLOW_BENCH_NATS:-nats://127.0.0.1:4222}
[ -x "$BIN" ] || { echo "build first: cargo build --release -p errorflow-collector" >&2; exit 2; }
[ -x "$LOADGEN" ] || { echo "build the load generator first (see /work/shared/bench/ingest/README.md)" >&2; exit 2; }
work=$(mktemp -d /tmp/errorflow-bench-queue.XXXXXX)
pids=()
dbs=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for d in "${dbs[@]}"; do psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $d WITH (FORCE)" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT

events="$work/events.bin"
"$LOADGEN" gen --n "$N" --out "$events" --seed 7 >/dev/null

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

# A fresh database with one project; prints "DBURL KEY ID".
fresh_db() {
  local name="errorflow_bench_$(date +%s%N)"
  psql "$PG/postgres" -qc "CREATE DATABASE $name" >/dev/null
  dbs+=("$name")
  local url="$PG/$name"
  local project
  project=$(DATABASE_URL=$url ERRORFLOW_LOG=warn "$BIN" project create bench --json)
  echo "$url $(echo "$project" | python3 -c 'import json,sys; p=json.load(sys.stdin); print(p["key"], p["id"])')"
}

# Starts `$BIN ARGS…` on DATABASE_URL=$1; waits for the line with prefix $2
# and prints "PID URL".
start() {
  local db=$1 prefix=$2; shift 2
  local log="$work/$(date +%s%N).log"
  DATABASE_URL=$db ERRORFLOW_LOG=warn ERRORFLOW_KEY_EVENTS_PER_SECOND=0 "$BIN" "$@" >"$log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  for _ in $(seq 300); do
    if grep -q "^$prefix" "$log"; then
      echo "$pid $(grep "^$prefix" "$log" | head -1 | sed "s|^$prefix||; s|/readyz$||; s|/$||")"
      return
    fi
    sleep 0.1
  done
  echo "did not start: $*" >&2; cat "$log" >&2; exit 1
}

stored() { psql "$1" -Atc "SELECT count(*) FROM errors"; }

wait_stored() {
  local db=$1
  for _ in $(seq 6000); do
    [ "$(stored "$db")" -ge "$N" ] && return
    sleep 0.05
  done
  echo "only $(stored "$db") of $N stored" >&2; exit 1
}

send() {
  local url=$1 key=$2 id=$3
  "$LOADGEN" send --file "$events" --url "$url/api/$id/envelope/" --key "$key" --c 64 --gzip \
    --json "$work/send.json" >/dev/null
}

# Deletes a stream through JetStream's API (no NATS CLI needed).
delete_stream() {
  python3 -c '
import socket, sys, time
host, port = sys.argv[1].removeprefix("nats://").split(":")
s = socket.create_connection((host, int(port)))
s.recv(4096)
s.sendall(("CONNECT {}\r\nPUB $JS.API.STREAM.DELETE." + sys.argv[2] + " 0\r\n\r\n").encode())
time.sleep(0.3)
' "$NATS" "$1" >/dev/null 2>&1 || true
}

report() { # name seconds_ack seconds_stored cpu_ticks…
  local name=$1 ack=$2 st=$3; shift 3
  printf '%-28s ack %8.0f ev/s  stored %8.0f ev/s' "$name" \
    "$(echo "$N / $ack" | bc -l)" "$(echo "$N / $st" | bc -l)"
  for t in "$@"; do printf '  cpu %.3f ms/ev' "$(echo "$t * 1000 / $hz / $N" | bc -l)"; done
  echo
}

now() { date +%s.%N; }

# 1. One process.
read -r db key id < <(fresh_db)
read -r pid url < <(start "$db" "dashboard: " serve --listen 127.0.0.1:0)
c0=$(cpu_ticks "$pid"); t0=$(now)
send "$url" "$key" "$id" >/dev/null
t1=$(now); wait_stored "$db"; t2=$(now); c1=$(cpu_ticks "$pid")
report "one process" "$(echo "$t1 - $t0" | bc -l)" "$(echo "$t2 - $t0" | bc -l)" "$((c1 - c0))"
kill "$pid"

# 2. One ingest node and one writer.
stream="bench_$(date +%s%N)"
read -r db key id < <(fresh_db)
read -r wpid _ < <(start "$db" "writer: " writer --listen 127.0.0.1:0 --queue "$NATS" --queue-stream "$stream")
read -r npid url < <(start "$db" "dashboard: " serve --listen 127.0.0.1:0 --queue "$NATS" --queue-stream "$stream")
sleep 3   # the writer takes its partitions
n0=$(cpu_ticks "$npid"); w0=$(cpu_ticks "$wpid"); t0=$(now)
send "$url" "$key" "$id" >/dev/null
t1=$(now); wait_stored "$db"; t2=$(now)
n1=$(cpu_ticks "$npid"); w1=$(cpu_ticks "$wpid")
report "ingest node + writer" "$(echo "$t1 - $t0" | bc -l)" "$(echo "$t2 - $t0" | bc -l)" "$((n1 - n0))" "$((w1 - w0))"
kill "$npid" "$wpid"
delete_stream "$stream"

# 3. Backlog drain: the node alone, then the writer.
stream="bench_$(date +%s%N)"
read -r db key id < <(fresh_db)
read -r npid url < <(start "$db" "dashboard: " serve --listen 127.0.0.1:0 --queue "$NATS" --queue-stream "$stream")
n0=$(cpu_ticks "$npid"); t0=$(now)
send "$url" "$key" "$id" >/dev/null
t1=$(now); n1=$(cpu_ticks "$npid")
read -r wpid _ < <(start "$db" "writer: " writer --listen 127.0.0.1:0 --queue "$NATS" --queue-stream "$stream")
w0=$(cpu_ticks "$wpid"); d0=$(now)
wait_stored "$db"; d1=$(now); w1=$(cpu_ticks "$wpid")
report "node alone, then drain" "$(echo "$t1 - $t0" | bc -l)" "$(echo "$d1 - $d0" | bc -l)" "$((n1 - n0))" "$((w1 - w0))"
kill "$npid" "$wpid"
delete_stream "$stream"
echo "(columns: acknowledged rate, stored rate (drain: from the writer's start), CPU per event of each process in order)"
