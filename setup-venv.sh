# Sourced by test.sh and bench.sh: make .venv hold gnetpy (editable) with its
# test and bench extras, rebuilding it when pyproject.toml changes.
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ] || [ ! -f .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ]; then
    echo "setting up .venv with $($PYTHON --version) ..." >&2
    "$PYTHON" -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e '.[test,bench]'
    touch .venv/.installed
fi
