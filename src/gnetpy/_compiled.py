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

# The hot path of every message (the loop, the connection and its buffers), the loop's
# components, TLS and UDP: what mypyc compiles.  Modules outside this list stay interpreted.
# tls and udp are here because TlsConn and DatagramConn subclass the compiled Conn: left
# interpreted, their every read of a Conn slot goes through a getset descriptor that CPython
# does not specialise (W10 was slower compiled than pure: docs/architecture.md).  closing,
# frames and limits are the loop's components.  runloop stays interpreted: it runs once per
# loop, and its frames are what running_callback walks to name a callback that blocks.
# framing is the codecs' per-frame work; codec.py, their public face, is not
# compiled: mypyc's argument checks on entry would replace the constructors' messages that
# name the argument (framing.py's docstring; benchmarks/results/2026-11-27-udp-frames.md).
COMPILED_MODULES = ("buffer", "conn", "eventloop", "closing", "frames", "limits", "tls", "udp", "framing", "tally")
# Built from C beside them (syscalls.py uses it when it is there): reads and writes
# of non-blocking sockets that keep the GIL, and epoll_wait.  No .py source: the switch hides it.
C_HELPERS = ("_sysio",)

SWITCH = "GNETPY_NO_EXTENSIONS"
# mypyc's shared library for the compiled modules (setup.py: group_name="gnetpy"), beside the package.
GROUP_LIBRARY = "gnetpy__mypyc"
STALE_MARGIN_S = 5.0


def disabled(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for pure Python (at build time and at import time)."""
    return environ.get(SWITCH, "") not in ("", "0")


class SourceFinder:
    """A meta-path finder that loads the compilable modules of one package from their ``.py`` files."""

    def __init__(self, package: str, directory: str) -> None:
        self._names = {f"{package}.{name}": os.path.join(directory, f"{name}.py") for name in COMPILED_MODULES}
        self._hidden = {f"{package}.{name}" for name in C_HELPERS}

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname in self._hidden:  # a C helper: import it as missing, its user falls back to os
            raise ModuleNotFoundError(f"{fullname}: off ({SWITCH})", name=fullname)
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
    """The compiled modules whose source is newer than their build.

    A mypyc module's code is in the shared library ``gnetpy__mypyc`` beside the package
    (its own extension module is a stub that setuptools rebuilds only when the stub
    changes), so the build's time is the newer of the two.  A margin of a few seconds: an
    installed wheel writes the files at the same moment, in either order; an edit or a
    checkout after an in-place build comes later than that.
    """
    stale = []
    sources = [(name, f"{name}.py") for name in COMPILED_MODULES] + [(name, f"{name}.c") for name in C_HELPERS]
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        group = _mtime(os.path.join(os.path.dirname(directory), GROUP_LIBRARY + suffix))
        for name, filename in sources:
            built = _mtime(os.path.join(directory, name + suffix))
            if built is None:
                continue  # no such build: nothing to compare
            if filename.endswith(".py") and group is not None:
                built = max(built, group)
            source = _mtime(os.path.join(directory, filename))
            if source is not None and source > built + STALE_MARGIN_S:
                stale.append(name + suffix)
    return stale


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def backend(package: str) -> Literal["mypyc", False]:
    """``"mypyc"`` when every module of ``COMPILED_MODULES`` was loaded compiled, else False."""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    files = [getattr(sys.modules.get(f"{package}.{name}"), "__file__", None) or "" for name in COMPILED_MODULES]
    return "mypyc" if all(f.endswith(suffixes) for f in files) else False
