#!/usr/bin/env bash
# Runs the whole test suite in a project-local virtualenv (created on first use).
#   ./test.sh                 # everything
#   ./test.sh tests/test_conn.py -k peek    # any pytest arguments
set -euo pipefail
cd "$(dirname "$0")"
source ./setup-venv.sh
exec "$VENV"/bin/python -m pytest "$@"
