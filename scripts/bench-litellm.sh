#!/usr/bin/env bash
# LiteLLM's proxy as the comparison point of the load benchmark (benches/load.rs).
#
#   scripts/bench-litellm.sh install                  install litellm[proxy] into its own
#                                                     venv in the cache (idempotent)
#   scripts/bench-litellm.sh start UPSTREAM PORT [LOG] start the proxy on 127.0.0.1:PORT in
#                                                     front of the OpenAI-compatible base
#                                                     URL UPSTREAM (e.g. http://127.0.0.1:9000/v1),
#                                                     wait until it answers, print "PID URL"
#   scripts/bench-litellm.sh stop PID                 stop a proxy started by `start`
#   scripts/bench-litellm.sh upstream PORT            a scripted upstream (Python stdlib) on
#                                                     127.0.0.1:PORT; prints its PID
#   scripts/bench-litellm.sh measure URL [C] [SECONDS] wrk -t2 -cC against a proxy started by
#                                                     `start` (URL as printed), with its CPU
#                                                     time per request and peak RSS
#   scripts/bench-litellm.sh paths                    print where things live
#
# The proxy serves the models "auto" and "gpt-4.1", both openai/gpt-4.1 at UPSTREAM, so
# the benchmark's request body works unchanged. Clients must send
# "Authorization: Bearer $LITELLM_MASTER_KEY" (default sk-crossroads-bench). No database,
# logging at ERROR, the bundled model price map (the machine reaches no GitHub).
# LITELLM_WORKERS (default 1) sets --num_workers.
set -euo pipefail

LITELLM_VERSION="1.108.7"
CACHE="${CROSSROADS_CACHE:-$HOME/.cache/crossroads}"
VENV="$CACHE/litellm-venv"
MARKER="$VENV/.crossroads-built"
MARKER_TEXT="litellm[proxy]==$LITELLM_VERSION"
PYTHON="${PYTHON:-python3}"
export LITELLM_MASTER_KEY="${LITELLM_MASTER_KEY:-sk-crossroads-bench}"

log() { echo "bench-litellm: $*" >&2; }

# True when URL answers 2xx.
answers() {
    "$PYTHON" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$1" 2>/dev/null
}

venv_ok() {
    [[ -f "$MARKER" ]] && [[ "$(cat "$MARKER")" == "$MARKER_TEXT" ]] && [[ -x "$VENV/bin/litellm" ]]
}

cmd_install() {
    mkdir -p "$CACHE"
    exec 9>"$CACHE/.litellm.lock"
    flock 9
    if venv_ok; then
        log "reusing $VENV"
    else
        log "installing litellm[proxy]==$LITELLM_VERSION into $VENV (a minute or two)"
        rm -rf "$VENV"
        "$PYTHON" -m venv "$VENV"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
            "litellm[proxy]==$LITELLM_VERSION"
        LITELLM_LOCAL_MODEL_COST_MAP=True "$VENV/bin/python" -c 'import litellm.proxy.proxy_cli'
        # Written last: an interrupted install leaves no marker and is redone.
        printf '%s' "$MARKER_TEXT" >"$MARKER"
        log "installed $VENV"
    fi
    flock -u 9
}

cmd_start() {
    local upstream="${1:?usage: start UPSTREAM_BASE_URL PORT [LOGFILE]}"
    local port="${2:?usage: start UPSTREAM_BASE_URL PORT [LOGFILE]}"
    local logfile="${3:-$CACHE/litellm-$port.log}"
    venv_ok || { log "not installed; run: $0 install"; exit 1; }
    local dir
    dir="$(mktemp -d "${TMPDIR:-/tmp}/litellm-bench.XXXXXX")"
    # The upstream ignores the key, but the OpenAI client wants one.
    cat >"$dir/config.yaml" <<EOF
model_list:
  - model_name: auto
    litellm_params:
      model: openai/gpt-4.1
      api_base: $upstream
      api_key: sk-upstream-not-checked
  - model_name: gpt-4.1
    litellm_params:
      model: openai/gpt-4.1
      api_base: $upstream
      api_key: sk-upstream-not-checked
litellm_settings:
  drop_params: true
  turn_off_message_logging: true
general_settings:
  master_key: os.environ/LITELLM_MASTER_KEY
EOF
    # setsid: its own process group, so `stop` ends it and any worker processes.
    # --timeout_worker_healthcheck: with several workers, uvicorn (0.54) kills a worker
    # that is not ready within 5 s, and importing the proxy takes longer than that on a
    # busy machine: the workers would be restarted forever.
    # DATABASE_URL unset: no database, no spend logs.
    (
        cd "$dir"
        exec env -u DATABASE_URL \
            LITELLM_LOG=ERROR LITELLM_LOCAL_MODEL_COST_MAP=True PYTHONUNBUFFERED=1 \
            setsid "$VENV/bin/litellm" --config "$dir/config.yaml" \
            --host 127.0.0.1 --port "$port" --num_workers "${LITELLM_WORKERS:-1}" \
            --timeout_worker_healthcheck 120 \
            </dev/null >"$logfile" 2>&1
    ) &
    local pid=$!
    # Importing the proxy takes several seconds, more on a busy machine.
    local deadline=$((SECONDS + 120))
    until answers "http://127.0.0.1:$port/health/liveliness"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "proxy exited during start; log follows"
            cat "$logfile" >&2
            exit 1
        fi
        if ((SECONDS > deadline)); then
            log "proxy did not answer /health/liveliness within 120 s; log follows"
            cat "$logfile" >&2
            cmd_stop "$pid"
            exit 1
        fi
        sleep 0.25
    done
    log "litellm $LITELLM_VERSION on 127.0.0.1:$port -> $upstream (pid $pid, config $dir/config.yaml, log $logfile)"
    echo "$pid http://127.0.0.1:$port"
}

cmd_stop() {
    local pid="${1:?usage: stop PID}"
    # The temporary config directory `start` made, removed once the proxy is gone.
    local config
    config="$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -x -A1 -- --config | tail -n1)" || true
    kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -9 -- "-$pid" 2>/dev/null || kill -9 "$pid" 2>/dev/null || true
    fi
    case "$config" in
    */litellm-bench.*/config.yaml) rm -rf "$(dirname "$config")" ;;
    esac
}

# The same completion benches/load.rs's upstream returns, from a threaded stdlib server
# with keep-alive: a few thousand requests/s, far more than the proxy under test needs.
cmd_upstream() {
    local port="${1:?usage: upstream PORT}"
    setsid "$PYTHON" - "$port" >/dev/null 2>&1 <<'EOF' &
import http.server, sys
BODY = b'{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4.1","choices":[{"index":0,"message":{"role":"assistant","content":"Paris is the capital of France."},"finish_reason":"stop"}],"usage":{"prompt_tokens":24,"completion_tokens":8,"total_tokens":32}}'
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without TCP_NODELAY, Nagle's algorithm and
    # the client's delayed ACK hold the body back 40 ms.
    disable_nagle_algorithm = True
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer.daemon_threads = True
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
EOF
    local pid=$!
    for _ in $(seq 50); do
        "$PYTHON" -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' "$port" 2>/dev/null && {
            echo "$pid"
            return 0
        }
        sleep 0.1
    done
    log "upstream did not start"
    exit 1
}

# utime+stime (clock ticks) of PID and every descendant, and the sum of their VmHWM (kB).
# Children that already exited and were reaped are counted in their parent's cutime and
# cstime; LiteLLM's workers live as long as the proxy, so none are missed here.
tree_stats() {
    "$PYTHON" - "$1" <<'EOF'
import os, sys
root = int(sys.argv[1])
children = {}
for p in os.listdir("/proc"):
    if p.isdigit():
        try:
            stat = open(f"/proc/{p}/stat").read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        children.setdefault(int(fields[1]), []).append((int(p), fields))
ticks, hwm, todo = 0, 0, [root]
own = open(f"/proc/{root}/stat").read()
own = own[own.rfind(")") + 2:].split()
ticks += int(own[11]) + int(own[12])
while todo:
    pid = todo.pop()
    try:
        hwm += int(next(l.split()[1] for l in open(f"/proc/{pid}/status") if l.startswith("VmHWM:")))
    except (OSError, StopIteration):
        pass
    for child, fields in children.get(pid, []):
        ticks += int(fields[11]) + int(fields[12])
        todo.append(child)
print(ticks, hwm)
EOF
}

cmd_measure() {
    local url="${1:?usage: measure URL [CONNECTIONS] [SECONDS] (URL and PID from start: PID=... $0 measure URL)}"
    local c="${2:-16}" secs="${3:-10}"
    local pid="${PID:?set PID to the pid printed by start}"
    local dir
    dir="$(mktemp -d "${TMPDIR:-/tmp}/litellm-wrk.XXXXXX")"
    cat >"$dir/post.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $LITELLM_MASTER_KEY"
wrk.body = '{"model":"auto","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"What is the capital of France? Answer in one sentence."}],"temperature":0.2,"max_tokens":64}'
EOF
    # Warm up (connection pools, first-request imports), then measure.
    wrk -t2 -c"$c" -d2s --timeout 30s -s "$dir/post.lua" "$url/v1/chat/completions" >/dev/null
    local before after
    before="$(tree_stats "$pid")"
    # --timeout 30s: at c=64 the proxy's latency passes wrk's 2 s default, and timed-out
    # requests would drop out of the latency figures.
    wrk -t2 -c"$c" -d"${secs}s" --timeout 30s --latency -s "$dir/post.lua" \
        "$url/v1/chat/completions" | tee "$dir/wrk.txt"
    after="$(tree_stats "$pid")"
    local hz
    hz="$(getconf CLK_TCK)"
    "$PYTHON" - "$dir/wrk.txt" "$before" "$after" "$hz" "$c" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
t0, _ = map(int, sys.argv[2].split()); t1, hwm = map(int, sys.argv[3].split())
hz, c = int(sys.argv[4]), sys.argv[5]
def ms(label):
    v = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    return float(v.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[v.group(2)]
requests = int(re.search(r"(\d+) requests in", text).group(1))
rps = float(re.search(r"Requests/sec:\s*([\d.]+)", text).group(1))
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
sock = re.search(r"Socket errors: (.*)", text)
cpu_ms = (t1 - t0) * 1000 / hz / max(requests, 1)
print()
print("| target | connections | requests/s | p50 ms | p99 ms | CPU ms/request | peak RSS MB | non-2xx | socket errors |")
print("|---|---|---|---|---|---|---|---|---|")
print(f"| litellm | {c} | {rps:.0f} | {ms('50%'):.2f} | {ms('99%'):.2f} | {cpu_ms:.2f} | "
      f"{hwm / 1024:.0f} | {errors.group(1) if errors else 0} | {sock.group(1) if sock else 'none'} |")
EOF
    rm -rf "$dir"
}

cmd_paths() {
    echo "cache=$CACHE"
    echo "venv=$VENV"
    echo "litellm=$VENV/bin/litellm"
    echo "master_key=$LITELLM_MASTER_KEY"
}

case "${1:-}" in
install) cmd_install ;;
start) shift; cmd_start "$@" ;;
stop) shift; cmd_stop "$@" ;;
upstream) shift; cmd_upstream "$@" ;;
measure) shift; cmd_measure "$@" ;;
paths) cmd_paths ;;
*)
    # The comment block at the top of this file.
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit 2
    ;;
esac
