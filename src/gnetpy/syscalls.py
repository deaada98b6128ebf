"""The read and write calls of the reactor's non-blocking sockets.

``_sysio`` (C, built with the compiled accelerator) makes them without releasing the GIL:
they never wait, and the hand-off (drop the GIL, take it back: a mutex and a condition
variable) costs about a sixth of a small message.  Without the build, or with
GNETPY_NO_EXTENSIONS=1, they are ``os.read`` and ``os.write``: the same results and errors.
Only for descriptors that are non-blocking: a blocking call holding the GIL would stop
every other thread.
"""

from __future__ import annotations

import os

try:
    from ._sysio import read, write
except ImportError:  # pure Python
    read, write = os.read, os.write

__all__ = ["read", "write"]
