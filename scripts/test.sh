#!/usr/bin/env bash
# Runs every test of the workspace, Postgres included.
#
# Postgres: uses ERRORFLOW_TEST_PG_URL (default postgres://postgres@127.0.0.1:5432/postgres).
# When nothing answers there and Debian's `initdb`/`pg_ctl` are installed, it
# starts a throwaway cluster in a temporary directory for this run and stops it
# afterwards. Each test creates and drops its own database; nothing is skipped:
# a test that cannot reach Postgres fails.
set -euo pipefail
cd "$(dirname "$0")/.."

default_url="postgres://postgres@127.0.0.1:5432/postgres"
export ERRORFLOW_TEST_PG_URL="${ERRORFLOW_TEST_PG_URL:-$default_url}"

pg_ready() {
  # `pg_isready` ships with the client; fall back to bash's /dev/tcp.
  if command -v pg_isready >/dev/null 2>&1; then
    pg_isready -q -d "$1" -t 2
  else
    local hostport=${1#*@}; hostport=${hostport%%/*}
    timeout 2 bash -c "exec 3<>/dev/tcp/${hostport%:*}/${hostport##*:}" 2>/dev/null
  fi
}

cleanup=""
if ! pg_ready "$ERRORFLOW_TEST_PG_URL"; then
  pg_bin=""
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && pg_bin=$d; done
  if [ -z "$pg_bin" ] && command -v initdb >/dev/null 2>&1; then pg_bin=$(dirname "$(command -v initdb)"); fi
  if [ -z "$pg_bin" ]; then
    echo "error: no Postgres answers at $ERRORFLOW_TEST_PG_URL and initdb is not installed." >&2
    echo "       Install Debian's 'postgresql' package or set ERRORFLOW_TEST_PG_URL." >&2
    exit 1
  fi
  pgdir=$(mktemp -d /tmp/errorflow-pg.XXXXXX)
  port=$(( 20000 + RANDOM % 20000 ))
  echo "starting a throwaway Postgres cluster in $pgdir on port $port"
  runas=()
  if [ "$(id -u)" = 0 ]; then chown -R postgres "$pgdir"; runas=(runuser -u postgres --); fi
  "${runas[@]}" "$pg_bin/initdb" -D "$pgdir/data" -U postgres -A trust >/dev/null
  "${runas[@]}" "$pg_bin/pg_ctl" -D "$pgdir/data" -l "$pgdir/log" -w \
    -o "-p $port -k $pgdir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" start >/dev/null
  cleanup="$pg_bin/pg_ctl -D $pgdir/data -m immediate stop"
  trap '"${runas[@]}" $cleanup >/dev/null 2>&1 || true; rm -rf "$pgdir"' EXIT
  export ERRORFLOW_TEST_PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
fi
echo "Postgres for tests: $ERRORFLOW_TEST_PG_URL"

cargo test --workspace "$@"

# The API documentation builds without a broken or private link.
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
