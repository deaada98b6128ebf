# Sourced by test.sh and bench.sh: make .venv hold gnetpy (editable) with its
# test and bench extras, rebuilding it when pyproject.toml or setup.py changes, and
# when a module the compiled accelerator compiles changed since (its .so would be
# stale: gnetpy would warn and run it as pure Python).
PYTHON="${PYTHON:-python3}"
VENV="${GNETPY_VENV:-.venv}"  # another interpreter gets its own (.ci/run: .venv-3.12, ...)
_gnetpy_compiled_sources() {  # the .py of COMPILED_MODULES and the .c of C_HELPERS in _compiled.py
    sed -n 's/^COMPILED_MODULES = (\(.*\))/\1/p' src/gnetpy/_compiled.py | tr -d '",' | tr ' ' '\n' | sed '/^$/d; s|^|src/gnetpy/|; s|$|.py|'
    sed -n 's/^C_HELPERS = (\(.*\))/\1/p' src/gnetpy/_compiled.py | tr -d '",' | tr ' ' '\n' | sed '/^$/d; s|^|src/gnetpy/|; s|$|.c|'
}
_gnetpy_venv_stale() {
    [ ! -x $VENV/bin/python ] || [ ! -f $VENV/.installed ] || [ pyproject.toml -nt $VENV/.installed ] \
        || [ setup.py -nt $VENV/.installed ] || [ src/gnetpy/_compiled.py -nt $VENV/.installed ] && return 0
    [ -n "${GNETPY_NO_EXTENSIONS:-}" ] && [ "${GNETPY_NO_EXTENSIONS}" != 0 ] && return 1  # pure: no build to refresh
    for f in $(_gnetpy_compiled_sources); do
        [ "$f" -nt $VENV/.installed ] && return 0
    done
    return 1
}
if _gnetpy_venv_stale; then
    echo "setting up $VENV with $($PYTHON --version) ..." >&2
    "$PYTHON" -m venv "$VENV"
    $VENV/bin/python -m pip install --quiet --upgrade pip
    # Always the compiled build here: GNETPY_NO_EXTENSIONS=1 ./test.sh switches it off at import time.
    env -u GNETPY_NO_EXTENSIONS $VENV/bin/python -m pip install --quiet -e '.[test,bench,examples]'
    touch $VENV/.installed
fi
