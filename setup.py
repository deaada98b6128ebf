"""Build gnetpy with its optional compiled accelerator (README "Compiled accelerator").

The metadata is in pyproject.toml; this file only adds the extension modules: the
modules named in src/gnetpy/_compiled.py compiled by mypyc from the very same .py
files (one source of truth), placed beside them, and the small C helper _sysio.c.  Installing never fails because of
them: without mypyc, without a C compiler, or with GNETPY_NO_EXTENSIONS=1 set at build
time, the package installs as pure Python with a one-line notice.
"""

from __future__ import annotations

import glob
import os
import runpy
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
ACCEL = runpy.run_path(os.path.join(HERE, "src", "gnetpy", "_compiled.py"))


def notice(why: str) -> None:
    why = why.splitlines()[0] if why else why
    print(f"gnetpy: installing pure Python only ({why[:200]})", file=sys.stderr)


class OptionalBuildExt(build_ext):
    """build_ext that turns any failure into the pure-Python install.

    All or nothing: mypyc's per-module extensions import one shared library, so a
    partly built set would leave modules that fail to import; a failure removes
    whatever was built before it.
    """

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # a missing compiler, a compile or link error: CCompilerError, DistutilsError...
            self._remove_outputs()
            notice(f"building the mypyc extensions failed: {type(exc).__name__}: {exc}")

    def _remove_outputs(self) -> None:
        for path in self.get_outputs():
            if os.path.exists(path):
                os.remove(path)


def remove_in_place_builds() -> None:
    """A pure build of a checkout that holds an earlier in-place build (pip install -e .):
    delete those .so files, or the package would go on importing them."""
    src = os.path.join(HERE, "src")
    names = [os.path.join("gnetpy", name) for name in (*ACCEL["COMPILED_MODULES"], *ACCEL["C_HELPERS"])]
    for name in [*names, ACCEL["GROUP_LIBRARY"]]:
        for path in glob.glob(os.path.join(src, name) + ".*.so"):
            os.remove(path)


def extensions() -> list:  # type: ignore[type-arg]
    if ACCEL["disabled"]():
        notice(f"{ACCEL['SWITCH']} is set")
        remove_in_place_builds()
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        notice("mypyc is not installed")
        return []
    paths = [os.path.join("src", "gnetpy", f"{name}.py") for name in ACCEL["COMPILED_MODULES"]]
    try:
        compiled = mypycify(paths, opt_level="3", group_name="gnetpy")
    except BaseException as exc:  # mypyc reports a type error with SystemExit
        notice(f"mypyc failed: {type(exc).__name__}: {exc}")
        return []
    # The C helpers (gnetpy/_sysio.c: reads and writes that keep the GIL) are built with them.
    helpers = [Extension(f"gnetpy.{name}", [os.path.join("src", "gnetpy", f"{name}.c")])
               for name in ACCEL["C_HELPERS"]]
    return [*compiled, *helpers]


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
