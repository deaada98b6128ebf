"""Client: outbound connections on event loops of their own, for a program that is not a server.

A ``Client`` is an engine without listeners: the same event loops (in
threads -- a client lives inside someone else's program, and never forks),
the same handler callbacks and ``Conn`` API, the same graceful ``stop()``.
``dial`` is the one thing it adds: the connect is non-blocking and finished
on a loop (dial.py); the calling thread only waits for the outcome.  Inside a
callback use ``c.event_loop.dial(addr, callback)`` instead, which does not
wait.

    with gnetpy.Client(Handler()) as client:
        c = client.dial("tcp://127.0.0.1:6379", timeout=5)   # on_open has run
        c.async_write(b"PING\\r\\n")

``on_boot``/``on_shutdown`` run when the client starts and stops, with its
engine; ``on_worker_start``/``on_worker_stop`` on each loop thread.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from typing import Any

from . import dial as _dial
from .conn import Conn
from .engine import Engine
from .errors import EngineStoppedError
from .eventloop import EventLoop
from .handler import EventHandler
from .options import Options


class Client:
    def __init__(self, handler: EventHandler, *, options: Options | None = None, **kwargs: Any) -> None:
        opts = Options.build(options, **kwargs)
        if opts.processes:
            raise ValueError("processes=True: a client's event loops run in threads of the program that uses it")
        opts.processes = False
        self._engine = Engine(handler, [], opts)
        self._turn = itertools.count()
        self._started = False

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> Client:
        """Start the event loops (threads); returns once they run."""
        if self._started:
            raise RuntimeError("this Client was started already")
        self._started = True
        self._engine._boot()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Flush and close every connection (at most ``timeout`` s, default 10), then stop the loops."""
        self._engine.stop(timeout)

    def __enter__(self) -> Client:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def event_loops(self) -> list[EventLoop]:
        return self._engine.event_loops

    def count_connections(self) -> int:
        return self._engine.count_connections()

    # -- connections ---------------------------------------------------------------------

    def dial(self, addr: str, timeout: float | None = None, *, context: Any = None, ssl_context: Any = None,
             server_hostname: str | None = None, proxy_header: Any = None) -> Conn:
        """Connect to ``addr`` (tcp, tcp4, tcp6, unix); returns once ``on_open`` has run.

        Blocks the calling thread -- never a loop: a host name is resolved
        here, the connect completes on one of the client's loops (round
        robin).  Raises ``ConnectionRefusedError``, ``TimeoutError`` (after
        ``timeout`` seconds) or another ``OSError``, leaving nothing open.
        ``context`` is ``c.context`` before ``on_open`` runs.  ``ssl_context``
        and ``server_hostname``: TLS, as for ``EventLoop.dial``; a failed
        handshake raises its ``ssl.SSLError`` (a certificate that does not
        verify: ``ssl.SSLCertVerificationError``).  ``proxy_header``: a PROXY header sent first, as for
        ``EventLoop.dial``.
        """
        loop = self._loop_for_caller("dial")
        address, tls_settings = _dial.check_dial(addr, timeout, ssl_context, server_hostname)
        preamble = _dial.proxy_preamble(proxy_header)
        started = time.monotonic()
        targets = _dial.resolve(address.network, address.family, address.host, address.port, address.path)
        left = None if timeout is None else max(0.0, timeout - (time.monotonic() - started))
        done = threading.Event()
        outcome: list[Any] = []

        def finished(conn: Conn | None, err: BaseException | None) -> None:
            outcome.append((conn, err))
            done.set()

        def connect() -> None:
            _dial.Connect(loop, targets, finished, left, context, tls_settings, preamble).start()

        if not loop.submit(True, connect):
            raise EngineStoppedError("the client has stopped")
        done.wait()  # the loop bounds the wait: the dial's timeout, or the loop's stop
        conn, err = outcome[0]
        if err is not None:
            raise err
        return conn  # type: ignore[no-any-return]

    def enroll(self, sock: socket.socket, timeout: float | None = None) -> Conn:
        """Adopt a connected socket; returns once ``on_open`` has run (see ``EventLoop.enroll``)."""
        return self._loop_for_caller("enroll").enroll(sock, timeout)

    def _loop_for_caller(self, what: str) -> EventLoop:
        loops = self._engine.event_loops
        if not self._started or not loops:
            raise EngineStoppedError(f"{what}: the client is not started (use start() or a with block)")
        current = threading.current_thread()
        if any(loop.runs_on(current) for loop in loops) and what == "dial":
            raise RuntimeError("Client.dial waits for the connect, and this is one of the client's own loops: "
                               "use c.event_loop.dial(addr, callback) in a callback")
        return loops[next(self._turn) % len(loops)]
