#!/usr/bin/env bash
# The main job: an echo server with load driven against it, side by side with
# asyncio, uvloop and a C epoll server (the benchmark suite).
#   ./bench.sh            # quick run, about three minutes: table + benchmarks/results/quick.{json,md,png}
#   ./bench.sh --full     # the full run (about 25 minutes): benchmarks/results/results.*
#   ./bench.sh --workloads W1 --reps 3    # any harness options
set -euo pipefail
cd "$(dirname "$0")"
source ./setup-venv.sh
if [ "${1:-}" = "--full" ]; then
    shift
    exec "$VENV"/bin/python -m gnetpy bench "$@"
fi
if [ $# -eq 0 ]; then
    set -- --quick
fi
exec "$VENV"/bin/python -m gnetpy bench "$@"
