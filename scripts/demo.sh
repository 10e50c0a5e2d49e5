#!/bin/bash
# The main job: a real container from the embedded default image, offline.
# Starts berthd on the default socket if none answers there (it keeps running, like
# dockerd; stop it with: kill $(cat /run/berth/berthd.pid)), then `berth run`.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.venv"
sock=/run/berth/berth.sock

if ! "$venv/bin/berth" version >/dev/null 2>&1; then
    mkdir -p /run/berth /var/log
    echo "demo: starting berthd (log: /var/log/berthd.log)"
    setsid "$venv/bin/berthd" >>/var/log/berthd.log 2>&1 < /dev/null &
    for _ in $(seq 100); do
        [ -S "$sock" ] && "$venv/bin/berth" version >/dev/null 2>&1 && break
        sleep 0.1
    done
    "$venv/bin/berth" version >/dev/null || { tail -5 /var/log/berthd.log >&2; exit 1; }
fi

echo "demo: berth run --rm busybox (the embedded default image, no registry needed)"
"$venv/bin/berth" run --rm --name "berth-demo-$$" busybox sh -c \
    'echo "Hello from $(hostname), a busybox container run by berthd and berth-runtime."; id; echo; ps'
