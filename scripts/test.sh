#!/usr/bin/env bash
# The README's test command: sets up what the tests need, then runs every test
# of the workspace (Postgres included), compiles the benchmarks and builds the
# API documentation.
#
#   ./scripts/test.sh                 set up, then test
#   ./scripts/test.sh --setup-only    set up only (installs what is missing, compiles nothing)
#   ./scripts/test.sh ARGS…           ARGS go to `cargo test`, e.g. `-- --test-threads=2`
#
# Set-up, each step only when needed:
# - Debian packages, when run as root: `chromium` and `chromium-driver` (the
#   dashboard's browser test), `postgresql` (when no Postgres answers),
#   `python3`/`python3-venv`, `nodejs`/`npm`.
# - The pinned Python tools of scripts/test-requirements.txt in a virtual
#   environment at target/test-venv, exported to the tests as
#   ERRORFLOW_TEST_VENV (they never use the system Python's site-packages).
# - The Node Sentry SDK: `npm ci` in errorflow-collector/tests/sentry_clients.
# What it cannot install (not root, not Debian) it lists, with the commands to
# run, and stops before compiling anything. The tests themselves fail, never
# skip, when a tool is missing.
#
# Postgres: uses ERRORFLOW_TEST_PG_URL (default postgres://postgres@127.0.0.1:5432/postgres).
# When nothing answers there and Debian's `initdb`/`pg_ctl` are installed, it
# starts a throwaway cluster in a temporary directory for this run and stops it
# afterwards. Each test creates and drops its own database; nothing is skipped:
# a test that cannot reach Postgres fails.
#
# NATS (queue mode's tests): uses ERRORFLOW_TEST_NATS_URL (default
# nats://127.0.0.1:4222); when nothing answers there, it starts a throwaway
# `nats-server -js` for this run (Debian package `nats-server`, installed as
# root when missing; the NATS restart test always runs a private one). Each
# test creates and deletes its own stream.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

setup_only=false
if [ "${1:-}" = "--setup-only" ]; then
  setup_only=true
  shift
fi

default_url="postgres://postgres@127.0.0.1:5432/postgres"
export ERRORFLOW_TEST_PG_URL="${ERRORFLOW_TEST_PG_URL:-$default_url}"
export ERRORFLOW_TEST_NATS_URL="${ERRORFLOW_TEST_NATS_URL:-nats://127.0.0.1:4222}"
venv="$root/target/test-venv"
requirements=scripts/test-requirements.txt
clients=errorflow-collector/tests/sentry_clients

have() { command -v "$1" >/dev/null 2>&1; }

pg_ready() {
  # `pg_isready` ships with the client; fall back to bash's /dev/tcp.
  if have pg_isready; then
    pg_isready -q -d "$1" -t 2
  else
    local hostport=${1#*@}; hostport=${hostport%%/*}
    timeout 2 bash -c "exec 3<>/dev/tcp/${hostport%:*}/${hostport##*:}" 2>/dev/null
  fi
}

pg_bin_dir() {
  local d found=""
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && found=$d; done
  if [ -z "$found" ] && have initdb; then found=$(dirname "$(command -v initdb)"); fi
  echo "$found"
}

# The same places tests/dashboard_browser.rs looks in.
have_chromium() {
  have chromium || have chromium-browser || have google-chrome ||
    [ -x /usr/bin/chromium ] || [ -x /usr/lib/chromium/chromium ]
}
have_chromedriver() {
  have chromedriver || [ -x /usr/bin/chromedriver ] || [ -x /usr/lib/chromium/chromedriver ]
}

stamp_of() { sha256sum "$1" | cut -d' ' -f1; }
venv_current() {
  [ -x "$venv/bin/python3" ] &&
    [ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" = "$(stamp_of "$requirements")" ]
}
node_modules_current() {
  [ -d "$clients/node_modules/@sentry/node" ] &&
    [ "$(cat "$clients/node_modules/.errorflow-lock.sha256" 2>/dev/null)" = "$(stamp_of "$clients/package-lock.json")" ]
}

# The failing tests of a `cargo test` output, one "target: test" a line. Each
# test binary's second `failures:` block lists its failing tests, one
# indented name a line, just before `test result: FAILED`.
failing_tests() {
  awk '
    /^ *Running / { sub(/^ *Running /, ""); target = $0; next }
    /^ *Doc-tests / { sub(/^ *Doc-tests /, ""); target = "doc-tests " $0; next }
    /^failures:$/ { collecting = 1; buf = ""; next }
    /^test result: FAILED/ { if (buf != "") printf "%s", buf; collecting = 0; buf = ""; next }
    collecting && /^$/ { next }
    collecting && /^    [^ ]/ { sub(/^    /, ""); buf = buf "  " target ": " $0 "\n"; next }
    collecting { collecting = 0; buf = "" }
  ' "$1"
}

have_nats_server() { have nats-server || [ -x /usr/sbin/nats-server ]; }
nats_server_bin() { command -v nats-server 2>/dev/null || echo /usr/sbin/nats-server; }
# Whether something accepts TCP connections at a nats://HOST:PORT URL.
nats_ready() {
  local hostport=${1#nats://}
  hostport=${hostport%%,*}
  timeout 2 bash -c "exec 3<>/dev/tcp/${hostport%:*}/${hostport##*:}" 2>/dev/null
}

# ---- what is missing (fast: no network, no compiling) ----
packages=()   # Debian packages
why=()        # what each is for, for the message
need() { packages+=("$1"); why+=("$1: $2"); }

rust_missing=false
have cargo || rust_missing=true
have_chromium || need chromium "the dashboard's browser test"
have_chromedriver || need chromium-driver "chromedriver, which drives Chromium in that test"
if ! pg_ready "$ERRORFLOW_TEST_PG_URL" && [ -z "$(pg_bin_dir)" ]; then
  need postgresql "no Postgres answers at $ERRORFLOW_TEST_PG_URL; its initdb starts a throwaway cluster"
fi
if ! venv_current; then
  if ! have python3; then
    need python3 "the Python Sentry SDK and the OpenAPI validator run on it"
    need python3-venv "for the virtual environment target/test-venv"
  elif ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    need python3-venv "python3 -m venv, for the virtual environment target/test-venv"
  fi
fi
have git || need git "the GitHub tests build a repository with a known history (tests/github.rs)"
have_nats_server || need nats-server "queue mode's tests run NATS JetStream (tests/queue.rs)"
have node || need nodejs "the Node Sentry SDK's test"
if ! node_modules_current && ! have npm; then need npm "npm ci installs the Node Sentry SDK"; fi

debian=false
[ -f /etc/debian_version ] && have apt-get && debian=true
if [ ${#packages[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && $debian && ! $rust_missing; then
  echo "installing Debian packages: ${packages[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${packages[@]}" >/dev/null
  packages=()
fi

if [ ${#packages[@]} -gt 0 ] || $rust_missing; then
  {
    echo "error: the tests need tools that ./scripts/test.sh cannot install here; nothing was compiled."
    echo
    if $rust_missing; then
      echo "  - cargo (Rust): not found"
    fi
    for w in "${why[@]}"; do echo "  - $w"; done
    echo
    echo "Run:"
    if $rust_missing; then
      echo "  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh"
    fi
    if [ ${#packages[@]} -gt 0 ]; then
      if $debian; then
        sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo "
        echo "  ${sudo}apt-get update && ${sudo}apt-get install -y ${packages[*]}"
      else
        echo "  (not Debian: install the equivalents of the Debian packages ${packages[*]}"
        echo "   with your system's package manager)"
      fi
    fi
    echo "  ./scripts/test.sh"
    echo
    echo "./scripts/test.sh then installs the rest itself, into the project's directories:"
    echo "  python3 -m venv target/test-venv && target/test-venv/bin/pip install -r $requirements"
    echo "  (cd $clients && npm ci)"
  } >&2
  exit 2
fi

if ! venv_current; then
  echo "installing the pinned Python test tools ($requirements) into target/test-venv"
  mkdir -p "$root/target"
  python3 -m venv --clear "$venv"
  "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  stamp_of "$requirements" >"$venv/.requirements.sha256"
fi
export ERRORFLOW_TEST_VENV="$venv"

if ! node_modules_current; then
  echo "installing the Node Sentry SDK (npm ci in $clients)"
  (cd "$clients" && npm ci --no-audit --no-fund --silent)
  stamp_of "$clients/package-lock.json" >"$clients/node_modules/.errorflow-lock.sha256"
fi

if $setup_only; then
  echo "set-up complete: ERRORFLOW_TEST_VENV=$ERRORFLOW_TEST_VENV"
  exit 0
fi

# What to stop and remove when the script ends, however it ends.
on_exit=()
trap 'for c in "${on_exit[@]}"; do eval "$c"; done' EXIT

# ---- Postgres ----
if ! pg_ready "$ERRORFLOW_TEST_PG_URL"; then
  pg_bin=$(pg_bin_dir)
  pgdir=$(mktemp -d /tmp/errorflow-pg.XXXXXX)
  port=$(( 20000 + RANDOM % 20000 ))
  echo "starting a throwaway Postgres cluster in $pgdir on port $port"
  runas=()
  if [ "$(id -u)" = 0 ]; then chown -R postgres "$pgdir"; runas=(runuser -u postgres --); fi
  "${runas[@]}" "$pg_bin/initdb" -D "$pgdir/data" -U postgres -A trust >/dev/null
  "${runas[@]}" "$pg_bin/pg_ctl" -D "$pgdir/data" -l "$pgdir/log" -w \
    -o "-p $port -k $pgdir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" start >/dev/null
  cleanup="$pg_bin/pg_ctl -D $pgdir/data -m immediate stop"
  on_exit+=("${runas[*]} $cleanup >/dev/null 2>&1 || true; rm -rf '$pgdir'")
  export ERRORFLOW_TEST_PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
fi
echo "Postgres for tests: $ERRORFLOW_TEST_PG_URL"

# ---- NATS ----
if ! nats_ready "$ERRORFLOW_TEST_NATS_URL"; then
  natsdir=$(mktemp -d /tmp/errorflow-nats.XXXXXX)
  nport=$(( 20000 + RANDOM % 20000 ))
  echo "starting a throwaway NATS JetStream server in $natsdir on port $nport"
  "$(nats_server_bin)" -js -a 127.0.0.1 -p "$nport" -sd "$natsdir" >"$natsdir/log" 2>&1 &
  nats_pid=$!
  on_exit+=("kill $nats_pid 2>/dev/null || true; rm -rf '$natsdir'")
  export ERRORFLOW_TEST_NATS_URL="nats://127.0.0.1:$nport"
  for _ in $(seq 100); do nats_ready "$ERRORFLOW_TEST_NATS_URL" && break; sleep 0.1; done
fi
echo "NATS for tests: $ERRORFLOW_TEST_NATS_URL"

# ---- tests ----
# --no-fail-fast: a failing target does not keep the others from running. The
# output is kept so that the summary can list every failing test.
log="$root/target/test-output.log"
failed=()
set +e
cargo test --workspace --no-fail-fast "$@" 2>&1 | tee "$log"
tests_status=${PIPESTATUS[0]}
set -e
[ "$tests_status" = 0 ] || failed+=("cargo test")

# A benchmark that no longer compiles fails the run too.
if ! cargo test --workspace --benches --no-run --quiet; then
  failed+=("benchmarks do not compile (cargo test --workspace --benches --no-run)")
fi

# The API documentation builds without a broken or private link.
if ! RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet; then
  failed+=("cargo doc (broken or private link)")
fi

echo
echo "==== summary ===="
failing=$(failing_tests "$log")
if [ -n "$failing" ]; then
  echo "failing tests:"
  echo "$failing"
fi
# cargo names targets that failed to build or run.
grep -a -E '^error: (could not compile|[0-9]+ targets? failed)' -A20 "$log" | grep -E '^(error|    `)' || true
if [ ${#failed[@]} -eq 0 ]; then
  echo "all tests passed; benchmarks compile; cargo doc is clean"
  exit 0
fi
for f in "${failed[@]}"; do echo "FAILED: $f"; done
echo "(full output: $log)"
exit 1
