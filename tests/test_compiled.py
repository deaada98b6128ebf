"""The compiled accelerator's switch: GNETPY_NO_EXTENSIONS=1 loads the compilable modules from source.

Each case imports gnetpy in a fresh interpreter: the switch acts when gnetpy is first
imported, and this process has imported it already.
"""

from __future__ import annotations

import importlib.machinery
import json
import logging
import os
import subprocess
import sys
from typing import Any

import pytest

import gnetpy
from gnetpy import _compiled

PROBE = """
import json, os, sys
import gnetpy
from gnetpy import _compiled, syscalls
files = {name: sys.modules["gnetpy." + name].__file__ for name in _compiled.COMPILED_MODULES}
os_calls = syscalls.read is os.read and syscalls.write is os.write
print(json.dumps({"compiled": gnetpy.compiled, "files": files, "os_calls": os_calls}))
"""

PACKAGE_DIR = os.path.dirname(gnetpy.__file__)


def probe(**env: str) -> dict[str, object]:
    environ = {k: v for k, v in os.environ.items() if k != _compiled.SWITCH}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**environ, **env}, capture_output=True, text=True,
                         check=True, timeout=60)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def built_modules() -> list[str]:
    """The extension modules of the compilable modules that sit beside their sources here."""
    return [name + suffix for name in _compiled.COMPILED_MODULES for suffix in importlib.machinery.EXTENSION_SUFFIXES
            if os.path.exists(os.path.join(PACKAGE_DIR, name + suffix))]


def test_switch_loads_every_compilable_module_from_source() -> None:
    result = probe(GNETPY_NO_EXTENSIONS="1")
    assert result["compiled"] is False
    assert result["os_calls"] is True  # the C helper is hidden too: os.read and os.write
    files = result["files"]
    assert isinstance(files, dict) and sorted(files) == sorted(_compiled.COMPILED_MODULES)
    for name, path in files.items():
        assert path == os.path.join(PACKAGE_DIR, f"{name}.py")


@pytest.mark.parametrize("value", ["", "0"])
def test_switch_off_values_keep_the_build(value: str) -> None:
    assert probe(GNETPY_NO_EXTENSIONS=value)["compiled"] == probe()["compiled"]


def test_without_the_switch_a_build_present_is_used() -> None:
    built = built_modules()
    if not built:
        pytest.skip("no compiled build beside the sources (pure install: no mypyc or no C compiler at install time)")
    if _compiled.stale_builds(PACKAGE_DIR):
        pytest.skip(f"the compiled build is older than the sources: {_compiled.stale_builds(PACKAGE_DIR)}")
    result = probe()
    assert result["compiled"] == "mypyc"
    assert result["os_calls"] is False  # _sysio's read and write
    files = result["files"]
    assert isinstance(files, dict)
    for name, path in files.items():
        assert path.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), (name, path)


def test_compiled_names_the_build_of_this_process() -> None:
    switch = _compiled.disabled()
    assert gnetpy.compiled in ("mypyc", False)
    if switch:
        assert gnetpy.compiled is False
    assert gnetpy.compiled == _compiled.backend("gnetpy")


def test_source_finder_ignores_other_modules() -> None:
    finder = _compiled.SourceFinder("gnetpy", PACKAGE_DIR)
    assert finder.find_spec("gnetpy.options") is None
    assert finder.find_spec("json") is None
    spec = finder.find_spec("gnetpy.conn")
    assert spec is not None and spec.origin == os.path.join(PACKAGE_DIR, "conn.py")


def test_a_build_older_than_its_source_is_stale(tmp_path: Any) -> None:
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    source, built = tmp_path / "conn.py", tmp_path / f"conn{suffix}"
    source.write_text("")
    built.write_bytes(b"")
    os.utime(built, (1000.0, 1000.0))
    os.utime(source, (1000.0 + _compiled.STALE_MARGIN_S / 2, 1000.0 + _compiled.STALE_MARGIN_S / 2))
    assert _compiled.stale_builds(str(tmp_path)) == []  # written together: a wheel's files, in either order
    os.utime(source, (2000.0, 2000.0))
    assert _compiled.stale_builds(str(tmp_path)) == [f"conn{suffix}"]


def test_the_start_up_line_names_the_build(serve: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="gnetpy"):
        serve(gnetpy.EventHandler())
    lines = [r.getMessage() for r in caplog.records if " event loop in " in r.getMessage()]
    build = f"compiled: {gnetpy.compiled}" if gnetpy.compiled else "pure Python"
    assert len(lines) == 1 and lines[0].startswith(f"gnetpy ({build}): serving "), lines


def test_bench_prints_the_build() -> None:
    out = subprocess.run([sys.executable, "-m", "gnetpy", "bench", "--help"], capture_output=True, text=True,
                         timeout=60)
    assert f"gnetpy bench: gnetpy.compiled = {gnetpy.compiled!r}" in out.stderr.splitlines()
