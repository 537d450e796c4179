#!/usr/bin/env bash
# Browser test of the web console: seeds a SQLite ledger with synthetic traffic routed
# by the shipped routes.toml (plus two team budgets and a key's), serves it with
# `crossroads serve`, and has headless Chromium check every view against what was
# seeded and against /v1/spend (scripts/test-console.py). Debian's Chromium is
# installed when missing. Screenshots and DOM dumps are kept in target/console-test/.
#
#   scripts/test-console.sh            # after `cargo test`, which builds both binaries
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bin=${CROSSROADS_BIN:-target/debug/crossroads}
seed=${SEED_BIN:-target/debug/examples/seed_ledger}
[ -x "$bin" ] || cargo build --locked --bin crossroads
[ -x "$seed" ] || cargo build --locked --example seed_ledger

if [ ! -x /usr/bin/chromium ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

out=target/console-test
rm -rf "$out" && mkdir -p "$out"
work=$(mktemp -d)
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

team_key=ck-console-test-search
console_key=console-test-key
sed "s|^model = \"models/|model = \"$root/models/|" routes.toml >"$work/routes.toml"
cat >>"$work/routes.toml" <<TOML

[[teams]]
id = "search"
budget = { usd = 40, period = "month" }

[[teams]]
id = "ads"
budget = { usd = 6, period = "day" }

[[keys]]
id = "search-prod"
team = "search"
sha256 = "$("$bin" keys hash "$team_key")"
budget = { usd = 25, period = "month" }
TOML

"$seed" --config "$work/routes.toml" --out "$work/ledger.db" --requests 20000 --days 14 \
  --expect "$out/expect.json"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
CROSSROADS__LEDGER__URL="sqlite://$work/ledger.db" \
  CROSSROADS__SERVER__LISTEN="127.0.0.1:$port" \
  CROSSROADS__SERVER__CONSOLE_KEY_ENV=CROSSROADS_CONSOLE_TEST_KEY \
  CROSSROADS_CONSOLE_TEST_KEY="$console_key" \
  "$bin" serve --config "$work/routes.toml" >"$out/gateway.log" 2>&1 &
server=$!
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && break
  sleep 0.1
done

python3 scripts/test-console.py --base "http://127.0.0.1:$port" --key "$console_key" \
  --expect "$out/expect.json" --out "$out"
