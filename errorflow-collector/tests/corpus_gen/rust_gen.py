"""Generates the Rust part of the labelled grouping corpus with the official
`sentry` crate (0.49, the version of examples/sentry-rust-client).

Regenerate with (from the repository root; needs cargo and the crates of
the workspace's Cargo.lock, which it reuses):

    python3 errorflow-collector/tests/corpus_gen/rust_gen.py \
        > errorflow-collector/tests/fixtures/corpus/rust.jsonl

How it works: as python_gen.py. `rust/main.rs.in` (a small shop whose bug
sites are anyhow chains, typed errors through `capture_error`, panics
reported by sentry-panic, `tracing::error!` through sentry-tracing and
`capture_message`) is rendered into two "deploys" whose blank lines differ,
each built as a crate named `shop` (outside the workspace, sharing
`target/corpus-gen`), and run as two services: `rust-shop` with the SDK's
defaults, `rust-worker` with `attach_stacktrace = true`. The transport is a
`sentry::Transport` that writes each envelope's event with the site's label
(a scope tag, removed) instead of sending it. `RUST_BACKTRACE=1`, as in
production services that want anyhow backtraces.
"""

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile

from corpus_common import render, slim

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "../../.."))

CARGO_TOML = """[package]
name = "shop"
version = "0.1.0"
edition = "2021"
publish = false

[workspace]

[dependencies]
sentry = { version = "0.49", default-features = false, features = ["backtrace", "contexts", "panic", "tracing", "anyhow"] }
anyhow = "1"
serde_json = "1"
tracing = "0.1"
tracing-subscriber = "0.3"
"""

SITES = [
    "orders.place_order", "orders.cancel_order", "orders.import", "orders.parse_quantity",
    "orders.line_item", "orders.transition", "inventory.find_price", "inventory.find_weight",
    "inventory.sync", "inventory.restock", "inventory.audit", "users.load_user",
    "users.load_team", "users.register", "users.warm_cache",
]
SERVICES = [("rust-shop", False), ("rust-worker", True)]
DEPLOYS = [("3.1.0", 0), ("3.1.1", 4)]


def main():
    rng = random.Random(6)
    source = open(os.path.join(HERE, "rust/main.rs.in")).read()
    target = os.path.join(REPO, "target/corpus-gen")
    with tempfile.TemporaryDirectory(prefix="errorflow-corpus-rust-") as root:
        out_path = os.path.join(root, "events.jsonl")
        for release, shift in DEPLOYS:
            deploy = os.path.join(root, f"shop-{release}")
            os.makedirs(os.path.join(deploy, "src"))
            with open(os.path.join(deploy, "Cargo.toml"), "w") as f:
                f.write(CARGO_TOML)
            shutil.copy(os.path.join(REPO, "Cargo.lock"), deploy)
            with open(os.path.join(deploy, "src/main.rs"), "w") as f:
                f.write(render(source, shift))
            env = dict(os.environ, CARGO_TARGET_DIR=target)
            subprocess.run(["nice", "-n", "15", "cargo", "build", "--quiet"],
                           cwd=deploy, env=env, check=True)
            binary = os.path.join(target, "debug/shop")
            for service, attach in SERVICES:
                args = [f"{s}={rng.randint(2, 6)}" for s in SITES]
                run_env = dict(os.environ, CORPUS_OUT=out_path, CORPUS_SERVICE=service,
                               CORPUS_RELEASE=release, CORPUS_ATTACH="1" if attach else "0",
                               CORPUS_SEED=str(rng.randint(1, 10**12)), RUST_BACKTRACE="1")
                subprocess.run([binary, *args], cwd=deploy, env=run_env, check=True)
        with open(out_path) as f:
            for line in f:
                record = json.loads(line)
                record["event"] = slim(record["event"])
                sys.stdout.write(json.dumps(record, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
