#!/usr/bin/env bash
# The reliability suite (tests/reliability/) at full size: 100,000 hostile HTTP
# requests against a release `crossroads serve`, 20,000 cases per parser property,
# 10,000 requests through a pool whose first upstream fails, 25 kill -9 cycles under
# load per ledger durability setting, 60 reloads a second apart under load, SIGTERM
# under load, two replicas on PostgreSQL and Redis, a 30-minute soak. CI runs the same tests in
# a bounded form through `cargo test` (scripts/test). Figures go to RELIABILITY.md.
# Usage: scripts/reliability.sh [SEED]   (the seed replays a run)
set -euo pipefail
cd "$(dirname "$0")/.."

seed="${1:-$RANDOM$RANDOM}"
cargo build --locked --release --bin crossroads
echo "== $(date -u +%FT%TZ), $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs, seed $seed"
CROSSROADS_BIN=target/release/crossroads \
CROSSROADS_SEED="$seed" \
CROSSROADS_PROP_CASES=20000 \
CROSSROADS_FUZZ_REQUESTS=100000 \
CROSSROADS_FAULT_REQUESTS=10000 \
CROSSROADS_CRASH_CYCLES=25 \
CROSSROADS_RELOADS=60 \
CROSSROADS_RELOAD_MS=1000 \
CROSSROADS_SOAK_SECONDS=1800 \
CROSSROADS_SOAK_RATE=500 \
    cargo test --locked --release --test reliability -- --nocapture --test-threads 1 2>&1 |
    grep -E '^(property|http_fuzz|faults|crash|reload|sigterm|replicas|soak|test |test result)'
