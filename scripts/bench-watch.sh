#!/usr/bin/env bash
# Watcher benchmarks: detection latency, idle cost, full rescan. Prints figures.
#   scripts/bench-watch.sh [latency|idle|rescan|all] [--idle-secs N] [--dir DIR]
# PROFILE=release for an optimised build (the default dev profile already
# optimises dependencies; the figures differ little since the work is syscalls).
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --quiet --profile "${PROFILE:-dev}" --example watch_bench -- "${@:-all}"
