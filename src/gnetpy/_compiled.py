"""The compiled accelerator: which modules setup.py compiles, and the switch that keeps them pure.

setup.py compiles the modules named in ``COMPILED_MODULES`` with mypyc (it reads this
file, so the list has one home).  The extension modules then sit beside their ``.py``
sources, and CPython's path finder prefers an extension module to a source file of the
same name.  ``GNETPY_NO_EXTENSIONS`` set to anything but "" or "0" when gnetpy is first
imported puts a finder in front of it that loads those modules from their ``.py``
files instead: the same package, pure Python, without reinstalling.

Only the standard library is imported here: setup.py runs this file before gnetpy
is installed, and the package imports it before any module that may be compiled.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import warnings
from types import ModuleType
from typing import Literal, Mapping, Sequence

# The hot path of every message (the loop, the connection and its buffers, opening and
# closing): what mypyc compiles.  Modules outside this list stay interpreted.
COMPILED_MODULES = ("buffer", "conn", "eventloop", "lifecycle")

SWITCH = "GNETPY_NO_EXTENSIONS"
STALE_MARGIN_S = 5.0


def disabled(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for pure Python (at build time and at import time)."""
    return environ.get(SWITCH, "") not in ("", "0")


class SourceFinder:
    """A meta-path finder that loads the compilable modules of one package from their ``.py`` files."""

    def __init__(self, package: str, directory: str) -> None:
        self._names = {f"{package}.{name}": os.path.join(directory, f"{name}.py") for name in COMPILED_MODULES}

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        source = self._names.get(fullname)
        if source is None or not os.path.exists(source):
            return None  # not ours, or no source to fall back on: the ordinary finders decide
        return importlib.util.spec_from_file_location(fullname, source)


def install_switch(package: str, directory: str) -> None:
    """Called by the package's ``__init__`` before it imports anything that may be compiled."""
    if any(isinstance(f, SourceFinder) for f in sys.meta_path):
        return
    if not disabled():
        stale = stale_builds(directory)
        if not stale:
            return
        # An in-place build older than its source (an edit or a pull since `pip install -e .`).
        warnings.warn(f"gnetpy: {', '.join(stale)} older than the source beside it; using pure Python "
                      f"(rebuild: pip install -e .)", RuntimeWarning, stacklevel=3)
    sys.meta_path.insert(0, SourceFinder(package, directory))


def stale_builds(directory: str) -> list[str]:
    """The compiled modules whose ``.py`` is newer than the extension module beside it.

    A margin of a few seconds: an installed wheel writes both files at the same moment,
    in either order; an edit or a checkout after an in-place build comes later than that.
    """
    stale = []
    for name in COMPILED_MODULES:
        source = os.path.join(directory, f"{name}.py")
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            built = os.path.join(directory, name + suffix)
            try:
                if os.stat(source).st_mtime > os.stat(built).st_mtime + STALE_MARGIN_S:
                    stale.append(name + suffix)
            except OSError:
                continue  # no such build (or no source): nothing to compare
    return stale


def backend(package: str) -> Literal["mypyc", False]:
    """``"mypyc"`` when every module of ``COMPILED_MODULES`` was loaded compiled, else False."""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    files = [getattr(sys.modules.get(f"{package}.{name}"), "__file__", None) or "" for name in COMPILED_MODULES]
    return "mypyc" if all(f.endswith(suffixes) for f in files) else False
