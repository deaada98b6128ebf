"""A connection's life on its event loop: open, the handler's actions and errors, closing, shutdown.

``ConnLifecycle`` is the part of ``EventLoop`` that moves connections
between the states of state.py (where the diagram is); the reactor in
eventloop.py calls into it when a socket is handed over, a callback returns
an ``Action`` or raises, a read or write fails, or the engine stops.  It is a
base class of ``EventLoop`` rather than an object beside it so that the
reactor's calls into it (``_close`` on every EOF, ``_act`` on every
``Action``) cost one method call, as they would inside one class.

Closing.  ``_close`` is the one entry for every close -- a handler's
``Action.CLOSE``, ``c.close()``, the peer's EOF, an error, the engine
stopping -- and ``state.close_target`` decides where it leads; the graceful
path continues in the reactor's ``_flush`` and ends in ``_finish_close``,
where ``on_close`` runs exactly once.  Errors that happen inside a callback
(a failed write) only mark the connection (``Conn._err``) and put it on
``_doomed``; it is closed after the callback returns, so no callback ever
runs inside another.
"""

from __future__ import annotations

import socket
import time
from functools import partial
from typing import TYPE_CHECKING, Any, Callable

from .address import format_addr
from .conn import Callback, Conn
from .errors import ConnClosedError, EngineStoppedError
from .handler import Action
from .poller import IN, OUT
from .sockopts import configure_accepted
from .state import CLOSED, FLUSHING, OPEN, TransitionError, check_transition, close_target

if TYPE_CHECKING:
    import logging

    from .acceptor import Acceptor
    from .handler import EventHandler
    from .options import Options
    from .poller import Poller
    from .taskqueue import TaskQueue
    from .timers import TimerHandle, TimerHeap
    from .waker import Waker

_TCP_FAMILIES = (socket.AF_INET, socket.AF_INET6)


class ConnLifecycle:
    # Declared for type checkers; EventLoop.__init__ sets them.
    index: int
    _opts: Options
    _logger: logging.Logger | logging.LoggerAdapter[Any]
    _handler: EventHandler
    _request_stop: Callable[[], None]
    _poller: Poller
    _edge_triggered: bool
    _tasks: TaskQueue
    _timers: TimerHeap
    _ticker: TimerHandle | None
    _small_read: int
    _conns: dict[int, Conn]
    _closing: dict[int, Conn]
    _watchers: dict[int, Callable[[int], Any]]
    _acceptors: list[Acceptor]
    _doomed: list[Conn]
    _busy_read: dict[int, Conn]
    _busy_write: dict[int, Conn]
    _waker: Waker
    _running: bool
    _stopping: bool
    _opened: int
    _closed: int

    if TYPE_CHECKING:
        def call_later(self, delay: float, fn: Callable[[], Any]) -> TimerHandle: ...
        def _flush(self, c: Conn) -> None: ...

    # -- open, act ---------------------------------------------------------

    def _open_handed_over(self, sock: socket.socket, remote: Any) -> None:
        """On the loop: serve a socket counted in ``_handed_over``."""
        if self._stopping:
            sock.close()
            self._closed += 1
            return
        self._open(sock, remote)

    def _enroll(self, sock: socket.socket) -> Conn:
        if self._stopping:
            raise EngineStoppedError(f"event loop {self.index} is stopping")
        configure_accepted(sock, self._opts, sock.family in _TCP_FAMILIES)
        try:
            remote = format_addr(sock.getpeername())
        except OSError:
            remote = None
        self._opened += 1
        c = self._open(sock, remote)
        if c is None:
            raise ConnClosedError(f"enroll: cannot register {sock!r}")
        return c

    def _open(self, sock: socket.socket, remote: Any) -> Conn | None:
        c = Conn(self, sock, remote, self._small_read)  # type: ignore[arg-type]  # self is an EventLoop
        try:
            self._poller.register(c._fd, IN)
        except (OSError, ValueError):
            self._logger.exception("gnetpy: cannot register %r", c)
            sock.close()
            self._closed += 1
            return None
        self._conns[c._fd] = c
        try:
            action = self._handler.on_open(c)
        except Exception as exc:
            self._callback_raised(c, exc)
            return c
        if action:
            self._act(c, action)
        return c

    def _act(self, c: Conn, action: Any) -> None:
        if action == Action.CLOSE:
            self._close(c, None, True)
        elif action == Action.SHUTDOWN:
            self._request_stop()
        else:
            self._logger.error("gnetpy: a callback of %r returned %r, which is not an Action; ignored", c, action)

    def _callback_raised(self, c: Conn, exc: BaseException) -> None:
        self._logger.error("gnetpy: a callback raised for %r; closing the connection", c, exc_info=exc)
        if c._out and c._state != CLOSED:
            try:  # deliver what the handler wrote before it failed, if the kernel takes it now
                c._out.flush_to(c._fd)
            except OSError:
                pass
        self._close(c, exc, False)

    def _run_callback(self, callback: Callback, c: Conn, err: BaseException | None) -> None:
        if callback is None:
            return
        try:
            callback(c, err)
        except Exception as exc:
            if c._state == CLOSED:
                self._logger.error("gnetpy: callback %r raised for closed %r", callback, c, exc_info=exc)
            else:
                self._callback_raised(c, exc)

    # -- closing (state.py has the diagram) -----------------------------------

    def _doom(self, c: Conn) -> None:
        self._doomed.append(c)

    def _close_doomed(self) -> None:
        doomed = self._doomed[:]
        self._doomed.clear()
        for c in doomed:
            self._close(c, c._err, False)

    def _close(self, c: Conn, err: BaseException | None, graceful: bool) -> None:
        """Every close comes here; ``graceful`` first lets the queued bytes reach the kernel."""
        if c._state == OPEN and c._err is not None:  # a write failed: nothing more can be delivered
            err, graceful = err or c._err, False
        if graceful and c._state == OPEN and c._out:
            try:
                c._out.flush_to(c._fd)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as exc:
                err, graceful = exc, False
        target = close_target(c._state, graceful, bool(c._out))
        if target == FLUSHING:
            self._start_flushing(c, err)
        elif target == CLOSED:
            self._finish_close(c, err)

    def _start_flushing(self, c: Conn, err: BaseException | None) -> None:
        check_transition(c._state, FLUSHING)
        fd = c._fd
        c._state = FLUSHING
        c._err = err  # what on_close will be told once the flush is over
        del self._conns[fd]
        self._closing[fd] = c
        self._watchers[fd] = partial(self._on_flushing_event, c)
        self._busy_read.pop(fd, None)
        if self._edge_triggered:
            self._busy_write[fd] = c
        else:
            self._poller.modify(fd, OUT)

    def _on_flushing_event(self, c: Conn, ev: int) -> None:
        self._flush(c)

    def _finish_close(self, c: Conn, err: BaseException | None) -> None:
        # check_transition(c._state, CLOSED), specialised: every state but
        # CLOSED may close, and this runs once per connection.
        if c._state == CLOSED:
            raise TransitionError(f"connection state CLOSED -> CLOSED is not a transition ({c!r})")
        fd = c._fd
        c._state = CLOSED
        if self._conns.pop(fd, None) is None:
            del self._closing[fd], self._watchers[fd]
        if self._edge_triggered:
            self._busy_read.pop(fd, None)
            self._busy_write.pop(fd, None)
        self._poller.unregister(fd)
        c._fd = -1
        c._sock.close()
        if c._out:
            c._out.clear_all()
        self._closed += 1
        action = None
        try:
            action = self._handler.on_close(c, err)
        except Exception:
            self._logger.exception("gnetpy: on_close raised for %r", c)
        callbacks, c._close_callbacks = c._close_callbacks, None
        for callback in callbacks or ():
            self._run_callback(callback, c, None)
        if action == Action.SHUTDOWN:
            self._request_stop()
        if self._stopping and not self._conns and not self._closing:
            self._running = False

    # -- shutdown ------------------------------------------------------------

    def _begin_shutdown(self, deadline: float) -> None:
        if self._stopping:
            return
        self._stopping = True
        for acceptor in self._acceptors:
            acceptor.stop()
        if self._ticker is not None:
            self._ticker.cancel()
        for c in list(self._conns.values()):
            self._close(c, None, True)
        if self._closing:
            self.call_later(max(0.0, deadline - time.monotonic()), self._force_close)
        elif not self._conns:
            self._running = False

    def _force_close(self) -> None:
        for c in list(self._closing.values()):
            unsent = c._out.nbytes if c._out else 0
            self._logger.warning("gnetpy: stop timed out: %r closed with %d bytes unsent", c, unsent)
            self._close(c, TimeoutError(f"engine stop timed out with {unsent} bytes unsent"), False)

    def release(self) -> None:
        """Close everything this loop holds; its last act (also what undoes a boot that failed)."""
        self._stopping = True
        for c in list(self._conns.values()) + list(self._closing.values()):
            self._close(c, EngineStoppedError(f"event loop {self.index} stopped"), False)
        for fn, args in self._tasks.close():
            self._tasks.call((fn, args))  # they see closed connections and report it
        for acceptor in self._acceptors:
            acceptor.stop()
        self._timers.clear()
        if self._waker.fd >= 0:
            self._poller.close()
            self._waker.close()
        self._running = False
