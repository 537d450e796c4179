#!/usr/bin/env bash
# Installs the load generators benches/load.rs drives, when they are missing:
#   wrk  closed-loop load, from Debian (apt-get install wrk: seconds)
#   oha  fixed-rate (open-loop) load, from crates.io (cargo install oha --locked:
#        a few minutes of compiling on 2 cores; Debian 12 has no package)
# Then: cargo bench --bench load
set -euo pipefail

if ! command -v wrk >/dev/null; then
    if [[ $(id -u) -eq 0 ]]; then
        apt-get install -y wrk || { apt-get update && apt-get install -y wrk; }
    else
        sudo apt-get install -y wrk
    fi
fi
if ! command -v oha >/dev/null; then
    cargo install oha --locked
fi
echo "wrk: $(wrk --version 2>&1 | head -n1)"
echo "oha: $(oha --version)"
