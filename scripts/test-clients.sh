#!/usr/bin/env bash
# End to end with real parts: the official OpenAI SDKs (Python and Node) talk to
# a real Crossroads process, which routes to a real local model (SmolLM2 on
# llama.cpp's server, and a second instance serving its embeddings) and to a
# scripted OpenAI-wire upstream standing in for the frontier API (this machine
# reaches no model API).
#
#   scripts/test-clients.sh            build, install what is missing, run both suites
#   scripts/test-clients.sh python     only the Python suite (or: node)
#   scripts/test-clients.sh ttft       streaming time to first token, gateway vs
#                                      llama.cpp directly (scripts/ttft.py)
#   scripts/test-clients.sh --serve    start the stack, print its environment, wait
#                                      for Ctrl-C (to run one test by hand)
#
# Environment: CROSSROADS_CACHE (where installs go), CROSSROADS_BIN (a gateway
# binary to use instead of building target/release/crossroads), SUITE_TIMEOUT
# (seconds per suite, default 900), KEEP_WORK=1 (keep the temp dir: config,
# ledger, logs).
#
# Installs go to ${CROSSROADS_CACHE:-$HOME/.cache/crossroads} (llama.cpp venv,
# model, Python client venv) and tests/clients/node/node_modules; a second run
# reuses them. Every process started here is stopped on exit, failure or Ctrl-C.
# Exits non-zero when any suite fails.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CROSSROADS_CACHE="${CROSSROADS_CACHE:-$HOME/.cache/crossroads}"
PYTHON="${PYTHON:-python3}"
# Leave no __pycache__ in the work tree.
export PYTHONDONTWRITEBYTECODE=1
CLIENTS="$ROOT/tests/clients"
# A hung request must not eat CI's whole budget: each suite gets this long.
SUITE_TIMEOUT="${SUITE_TIMEOUT:-900}"

SUITES=()
SERVE=0
for arg in "$@"; do
    case "$arg" in
    python | node | ttft) SUITES+=("$arg") ;;
    --serve) SERVE=1 ;;
    *) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
    esac
done
((${#SUITES[@]})) || SUITES=(python node)

step() { printf '\n== %s (at %d s)\n' "$*" "$((SECONDS - started))"; }
started=$SECONDS

WORK="$(mktemp -d "${TMPDIR:-/tmp}/crossroads-clients.XXXXXX")"
PIDS=()
LOGS=()

# Stops everything this script started. Each service runs in its own process
# group (setsid), so the group kill also reaches any child it forked.
# shellcheck disable=SC2317  # reached through the trap below
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    done
    if ((rc != 0)); then
        # The services' own words are usually the quickest diagnosis.
        for log in "${LOGS[@]}"; do
            [[ -s "$log" ]] || continue
            echo "--- last lines of $(basename "$log")"
            tail -n 20 "$log"
        done
    fi
    if [[ -n "${KEEP_WORK:-}" ]]; then
        echo "kept $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until URL answers 2xx, failing early if PID died.
wait_for() {
    local url="$1" pid="$2" what="$3" deadline=$((SECONDS + 60))
    until "$PYTHON" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$url" 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || { echo "$what exited during start" >&2; exit 1; }
        ((SECONDS < deadline)) || { echo "$what did not answer $url within 60 s" >&2; exit 1; }
        sleep 0.2
    done
}

sha() { sha256sum "$1" | cut -d' ' -f1; }

# --- Build and install (all idempotent) ------------------------------------------

# CROSSROADS_BIN=path uses a binary built elsewhere (e.g. the debug one that
# `cargo test` left) instead of building the release one.
if [[ -n "${CROSSROADS_BIN:-}" ]]; then
    BIN="$CROSSROADS_BIN"
else
    step "build the gateway"
    # A no-op when the binary is up to date.
    (cd "$ROOT" && cargo build --release --locked --quiet)
    BIN="$ROOT/target/release/crossroads"
fi

step "local model (llama.cpp + SmolLM2)"
"$ROOT/scripts/local-model.sh" install

if [[ " ${SUITES[*]} " == *" python "* ]]; then
    step "Python client deps"
    # Keyed on the requirements file: change a pin and the venv is rebuilt.
    PYVENV="$CROSSROADS_CACHE/clients-venv"
    REQS="$CLIENTS/python/requirements.txt"
    if [[ "$(cat "$PYVENV/.requirements-sha256" 2>/dev/null)" != "$(sha "$REQS")" ]] ||
        ! "$PYVENV/bin/python" -c 'import openai, anthropic, pytest' 2>/dev/null; then
        rm -rf "$PYVENV"
        "$PYTHON" -m venv "$PYVENV"
        "$PYVENV/bin/python" -m pip install --quiet -r "$REQS"
        sha "$REQS" >"$PYVENV/.requirements-sha256"
    fi
    echo "openai $("$PYVENV/bin/python" -c 'import openai; print(openai.__version__)') in $PYVENV"
fi

if [[ " ${SUITES[*]} " == *" node "* ]]; then
    step "Node client deps"
    NODE_DIR="$CLIENTS/node"
    STAMP="$NODE_DIR/node_modules/.package-lock-sha256"
    if [[ "$(cat "$STAMP" 2>/dev/null)" != "$(sha "$NODE_DIR/package-lock.json")" ]]; then
        # --loglevel=error: the SDK declares node >= 22 and npm warns on Node 20,
        # where the suite passes; the warning would only be noise here.
        (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error)
        sha "$NODE_DIR/package-lock.json" >"$STAMP"
    fi
    echo "openai $(node -p "require('$NODE_DIR/node_modules/openai/package.json').version") in $NODE_DIR/node_modules"
fi

# --- Start the stack ------------------------------------------------------------------

step "start llama.cpp, the scripted upstream and the gateway"
LLAMA_PORT="$(free_port)"
LOGS+=("$WORK/llama.log")
LLAMA_PID="$("$ROOT/scripts/local-model.sh" start "$LLAMA_PORT" "$WORK/llama.log")"
PIDS+=("$LLAMA_PID")

# The same model in embeddings mode, for /v1/embeddings.
EMBED_PORT="$(free_port)"
LOGS+=("$WORK/llama-embed.log")
EMBED_PID="$("$ROOT/scripts/local-model.sh" start-embeddings "$EMBED_PORT" "$WORK/llama-embed.log")"
PIDS+=("$EMBED_PID")

UPSTREAM_PORT="$(free_port)"
LOGS+=("$WORK/upstream.log")
setsid "$PYTHON" "$CLIENTS/scripted_upstream.py" --port "$UPSTREAM_PORT" \
    </dev/null >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)
wait_for "http://127.0.0.1:$UPSTREAM_PORT/v1/models" "$!" "the scripted upstream"

# A port nobody listens on: the `broken` deployment's connections are refused.
REFUSED_PORT="$(free_port)"
GATEWAY_PORT="$(free_port)"
LEDGER="$WORK/ledger.db"
CONFIG="$WORK/crossroads.toml"
cat >"$CONFIG" <<EOF
# Generated by scripts/test-clients.sh for the client suites.
[server]
listen = "127.0.0.1:$GATEWAY_PORT"
# The local model writes ~45 tokens/s on one thread and serves one request at
# a time, so a request may wait behind another: deadlines are generous.
request_timeout_ms = 180000

[accounting]
reference_model = "gpt-4.1"

[ledger]
url = "sqlite://$LEDGER"

[[deployments]]
id = "local-smollm2"
provider = "openai_compatible"
base_url = "http://127.0.0.1:$LLAMA_PORT/v1"
model = "smollm2"
tier = "local"
connect_timeout_ms = 1000
first_byte_timeout_ms = 120000
idle_timeout_ms = 60000
price = { input = 0, output = 0, source = "self-hosted" }

[[deployments]]
id = "local-smollm2-embed"
provider = "openai_compatible"
api = "embeddings"
base_url = "http://127.0.0.1:$EMBED_PORT/v1"
model = "smollm2-embed"
tier = "local"
connect_timeout_ms = 1000
first_byte_timeout_ms = 60000
price = { input = 0.10, output = 0, source = "self-hosted estimate" }

[[deployments]]
id = "frontier-scripted"
provider = "openai_compatible"
base_url = "http://127.0.0.1:$UPSTREAM_PORT/v1"
model = "gpt-4.1"
tier = "frontier"
connect_timeout_ms = 1000
first_byte_timeout_ms = 10000
idle_timeout_ms = 10000

[[deployments]]
id = "broken"
provider = "openai_compatible"
base_url = "http://127.0.0.1:$REFUSED_PORT/v1"
model = "gpt-4.1"
tier = "frontier"
connect_timeout_ms = 500
first_byte_timeout_ms = 1000

# No fallbacks: a test that asks for a pool must see that pool answer.
[[pools]]
id = "local"
deployments = ["local-smollm2"]

[[pools]]
id = "frontier"
deployments = ["frontier-scripted"]

[[pools]]
id = "broken"
deployments = ["broken"]

[[pools]]
id = "embed"
deployments = ["local-smollm2-embed"]

[[aliases]]
name = "local"
pool = "local"
description = "SmolLM2-135M on llama.cpp"

[[aliases]]
name = "frontier"
pool = "frontier"
description = "the scripted frontier upstream"

[[aliases]]
name = "blocked"
pool = "frontier"
description = "always rejected with 429 by the rule below"

[[aliases]]
name = "embed"
pool = "embed"
description = "SmolLM2-135M embeddings (mean-pooled) on llama.cpp"

[[aliases]]
name = "broken"
pool = "broken"
description = "a deployment whose port refuses connections: 502"

[[rules]]
id = "blocked"
when = { alias = ["blocked"] }
reject = { status = 429, message = "the blocked alias is rejected by the test config" }

[[rules]]
id = "code-local"
when = { label = ["coding"], min_confidence = 0.5 }
pool = "local"

[[rules]]
id = "default"
pool = "frontier"

[[prices]]
model = "gpt-4.1"
input = 2.00
cached_input = 0.50
output = 8.00
source = "https://openai.com/api/pricing"
as_of = "2026-06-21"
EOF
"$BIN" check "$CONFIG" >/dev/null

LOGS+=("$WORK/gateway.log")
setsid "$BIN" serve --config "$CONFIG" </dev/null >"$WORK/gateway.log" 2>&1 &
GATEWAY_PID=$!
PIDS+=("$GATEWAY_PID")
wait_for "http://127.0.0.1:$GATEWAY_PORT/readyz" "$GATEWAY_PID" "the gateway"

# What the suites read (see tests/clients/python/conftest.py, node/*.test.js).
export CROSSROADS_URL="http://127.0.0.1:$GATEWAY_PORT"
export CROSSROADS_METRICS_URL="$CROSSROADS_URL/metrics"
export CROSSROADS_LEDGER="$LEDGER"
export CROSSROADS_LLAMA_URL="http://127.0.0.1:$LLAMA_PORT"
export CROSSROADS_LLAMA_EMBED_URL="http://127.0.0.1:$EMBED_PORT"
export CROSSROADS_UPSTREAM_URL="http://127.0.0.1:$UPSTREAM_PORT"
echo "gateway $CROSSROADS_URL, llama.cpp $CROSSROADS_LLAMA_URL, scripted upstream $CROSSROADS_UPSTREAM_URL"

if ((SERVE)); then
    env | grep '^CROSSROADS_' | sed 's/^/export /'
    echo "serving; Ctrl-C stops everything"
    # Until the gateway exits or a signal arrives (`wait` returns at once on a
    # trapped signal, where a foreground sleep would delay the trap).
    wait "$GATEWAY_PID"
    echo "the gateway exited" >&2
    exit 1
fi

# --- Run the suites -------------------------------------------------------------------

declare -A SUMMARY
failed=0
passed_total=0
failed_total=0

# The first number before WORD in FILE's line matching PATTERN (0 if none).
count() { grep -E "$1" "$3" | tail -n1 | grep -oE "[0-9]+ $2" | head -n1 | cut -d' ' -f1 || true; }

if [[ -n "${PYVENV:-}" ]]; then
    step "Python suite (openai $("$PYVENV/bin/python" -c 'import openai; print(openai.__version__)'))"
    set +e
    timeout "$SUITE_TIMEOUT" "$PYVENV/bin/python" -m pytest "$CLIENTS/python" -v \
        -p no:cacheprovider 2>&1 | tee "$WORK/pytest.out"
    rc=${PIPESTATUS[0]}
    set -e
    line='^=+ .*(passed|failed|error|no tests ran).* =+$'
    SUMMARY[python]="$(grep -E "$line" "$WORK/pytest.out" | tail -n1)"
    p="$(count "$line" passed "$WORK/pytest.out")"
    f="$(count "$line" failed "$WORK/pytest.out")"
    e="$(count "$line" error "$WORK/pytest.out")"
    passed_total=$((passed_total + ${p:-0}))
    failed_total=$((failed_total + ${f:-0} + ${e:-0}))
    ((rc == 0)) || failed=1
fi

if [[ -n "${NODE_DIR:-}" ]]; then
    step "Node suite (openai $(node -p "require('$NODE_DIR/node_modules/openai/package.json').version"))"
    set +e
    (cd "$NODE_DIR" && timeout "$SUITE_TIMEOUT" node --test --test-reporter=spec) 2>&1 |
        tee "$WORK/node.out"
    rc=${PIPESTATUS[0]}
    set -e
    SUMMARY[node]="$(grep -E '^ℹ (tests|pass|fail|cancelled|skipped) ' "$WORK/node.out" | tr '\n' ' ')"
    p="$(grep -oE '^ℹ pass [0-9]+' "$WORK/node.out" | tail -n1 | grep -oE '[0-9]+' || true)"
    passed_total=$((passed_total + ${p:-0}))
    for f in $(grep -oE '^ℹ (fail|cancelled) [0-9]+' "$WORK/node.out" | grep -oE '[0-9]+$'); do
        failed_total=$((failed_total + f))
    done
    ((rc == 0)) || failed=1
fi

if [[ " ${SUITES[*]} " == *" ttft "* ]]; then
    step "streaming time to first token"
    "$PYTHON" "$ROOT/scripts/ttft.py" | tee "$WORK/ttft.out"
    SUMMARY[ttft]="$(grep -- '- direct' "$WORK/ttft.out" | tr '\n' ' ')"
fi

step "summary"
for suite in "${SUITES[@]}"; do
    echo "$suite: ${SUMMARY[$suite]:-no summary (did the suite start?)}"
done
if [[ -n "${PYVENV:-}${NODE_DIR:-}" ]]; then
    # A suite that died before its summary counts as a failure here too.
    ((failed == 0 || failed_total > 0)) || failed_total=1
    echo "clients: $passed_total passed, $failed_total failed"
fi
exit "$failed"
