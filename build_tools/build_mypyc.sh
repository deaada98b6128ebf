#!/bin/sh
# Compile gnetpy's hot modules with mypyc, in place under src/ (PYTHONPATH=src then imports the .so files).
set -e
cd "$(dirname "$0")/../src"
rm -rf build
MODS=${GNETPY_MYPYC_MODULES:-"gnetpy/eventloop.py gnetpy/buffer.py gnetpy/conn.py gnetpy/lifecycle.py"}
exec ../.venv/bin/mypyc $MODS
