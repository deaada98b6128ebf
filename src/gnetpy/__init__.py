"""gnetpy: gnet's event-driven reactor networking for Python.

    import gnetpy

    class Echo(gnetpy.EventHandler):
        def on_traffic(self, c):
            c.write(c.next())

    gnetpy.run(Echo(), "tcp://127.0.0.1:9000")
"""

from __future__ import annotations

import logging
import os

from . import _compiled

# Before any module that may be compiled is imported: GNETPY_NO_EXTENSIONS=1 loads them from source.
_compiled.install_switch(__name__, os.path.dirname(os.path.abspath(__file__)))

from . import codec  # noqa: E402,F401  (gnetpy.codec after `import gnetpy`; its compiled core counts in `compiled`)
from .client import Client  # noqa: E402
from .conn import Conn  # noqa: E402
from .engine import Engine  # noqa: E402
from .errors import (  # noqa: E402
    CodecError,
    ConnClosedError,
    EngineStoppedError,
    GnetError,
    InvalidAddressError,
    LimitExceededError,
    ShortBufferError,
    TooLongFrameError,
    UnsupportedOperationError,
    UnsupportedProtocolError,
)
from .eventloop import EventLoop  # noqa: E402
from .handler import Action, EventHandler  # noqa: E402
from .lb import LoadBalancing  # noqa: E402
from .options import Options  # noqa: E402
from .proxyproto import ProxyHeaderError, ProxyInfo  # noqa: E402
from .serve import rotate, run, start  # noqa: E402
from .stats import Closes, Stats, WorkerStats  # noqa: E402
from .timers import TimerHandle  # noqa: E402

__version__ = "0.1.0"

# "mypyc" when the compiled accelerator is active, False when pure Python (README "Compiled accelerator").
compiled = _compiled.backend(__name__)

__all__ = [
    "Action",
    "Client",
    "Closes",
    "CodecError",
    "Conn",
    "ConnClosedError",
    "Engine",
    "EngineStoppedError",
    "EventHandler",
    "EventLoop",
    "GnetError",
    "InvalidAddressError",
    "LimitExceededError",
    "LoadBalancing",
    "Options",
    "ProxyHeaderError",
    "ProxyInfo",
    "ShortBufferError",
    "Stats",
    "TimerHandle",
    "TooLongFrameError",
    "UnsupportedOperationError",
    "UnsupportedProtocolError",
    "WorkerStats",
    "rotate",
    "run",
    "start",
]

# A library adds a NullHandler and nothing else: where records go is the application's choice.
logging.getLogger("gnetpy").addHandler(logging.NullHandler())
