"""gnetpy: gnet's event-driven reactor networking for Python.

    import gnetpy

    class Echo(gnetpy.EventHandler):
        def on_traffic(self, c):
            c.write(c.next())

    gnetpy.run(Echo(), "tcp://127.0.0.1:9000")
"""

from __future__ import annotations

import logging

from .client import Client
from .conn import Conn
from .engine import Engine
from .errors import (
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
from .eventloop import EventLoop
from .handler import Action, EventHandler
from .lb import LoadBalancing
from .options import Options
from .serve import rotate, run, start
from .timers import TimerHandle

__version__ = "0.1.0"

__all__ = [
    "Action",
    "Client",
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
    "ShortBufferError",
    "TimerHandle",
    "TooLongFrameError",
    "UnsupportedOperationError",
    "UnsupportedProtocolError",
    "rotate",
    "run",
    "start",
]

# A library adds a NullHandler and nothing else: where records go is the application's choice.
logging.getLogger("gnetpy").addHandler(logging.NullHandler())
