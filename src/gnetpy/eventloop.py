"""EventLoop: one reactor -- poll, dispatch, the read and write paths, tasks, timers.

Each loop runs in its own thread and owns its connections outright: every
callback of a connection runs on its loop, so handlers need no locks for
per-connection state.  Other threads reach a loop only through its task
queue (``async_write``, ``wake``, ``close``, hand-over of accepted sockets,
shutdown), which wakes the poller.

The dispatch loop (``_poll_loop``) is the hot path of the whole library and
is written for speed rather than elegance: everything it touches is bound to
a local first, connections are found through one dict keyed by descriptor,
the common case -- a readable connection with nothing left over from before
-- is handled inline without a method call, and nothing is allocated per
event besides what ``epoll.poll`` returns.  Everything rarer (listeners, the
wake-up descriptor, connections that are closing, leftovers, errors) leaves
the inline path through one method call.

Closing.  A connection is *open* (in ``_conns``, readable), *closing* (in
``_closing``: a local close is waiting for its queued bytes to reach the
kernel; no longer read) or *closed*.  ``on_close`` runs exactly once, when it
becomes closed.  Errors that happen inside a callback (a failed write) only
mark the connection (``Conn._err``, ``_doomed``); it is closed after the
callback returns, so no callback ever runs inside another.
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from .acceptor import Acceptor
from .conn import _NOTHING, CLOSED, CLOSING, OPEN, Callback, Conn
from .errors import ConnClosedError, EngineStoppedError
from .handler import Action
from .listener import configure_accepted, format_addr
from .options import Options
from .poller import IN, OUT, READ_EVENTS, new_poller
from .poller.taskqueue import TaskQueue
from .poller.waker import Waker
from .readsize import SMALL_READ
from .readsize import adapt as adapt_read_size
from .timers import TimerHandle, TimerHeap

if TYPE_CHECKING:
    from .engine import Engine
    from .handler import EventHandler

# epoll's event list starts small (Python allocates it on every call) and
# doubles, up to this, whenever a poll comes back full.
_MAX_EVENTS_CAP = 8192
_TCP_FAMILIES = (socket.AF_INET, socket.AF_INET6)


class EventLoop:
    """A reactor thread.  Public: ``index``, ``execute``, ``call_later``, ``enroll``, ``count_connections``."""

    def __init__(self, engine: Engine, index: int, opts: Options, handler: EventHandler) -> None:
        self.index = index
        self._engine = engine
        self._opts = opts
        self._logger = opts.log
        self._handler = handler
        self._poller = new_poller(opts.poller, opts.edge_triggered)
        self._edge_triggered = self._poller.edge_triggered
        self._waker = Waker()
        self._tasks = TaskQueue(self._waker, self._logger)
        self._poller.add_listener(self._waker.fd)
        self._read_size = opts.read_buffer_cap
        self._small_read = min(SMALL_READ, opts.read_buffer_cap)
        self._write_chunk = opts.write_buffer_cap
        self._conns: dict[int, Conn] = {}
        self._closing: dict[int, Conn] = {}
        self._acceptors: dict[int, Acceptor] = {}
        self._doomed: list[Conn] = []
        # Edge-triggered only: connections whose read or write stopped at the
        # per-iteration byte budget, resumed on the next iteration.
        self._busy_read: dict[int, Conn] = {}
        self._busy_write: dict[int, Conn] = {}
        self._timers = TimerHeap()
        self._ticker: TimerHandle | None = None
        self._running = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._thread_id: int | None = None
        # Connection count = _accepted_for + _opened - _closed.  Each counter
        # has a single writer (the acceptor's thread, this loop), so the
        # count is exact without a lock.
        self._accepted_for = 0
        self._opened = 0
        self._closed = 0

    # -- public API ----------------------------------------------------------

    def count_connections(self) -> int:
        """Connections on this loop, including accepted ones still being handed over."""
        return self._accepted_for + self._opened - self._closed

    def execute(self, fn: Callable[[], Any]) -> None:
        """Run ``fn()`` on this loop (safe from any thread)."""
        if not self._tasks.push(self._call_user, fn):
            raise EngineStoppedError(f"event loop {self.index} has stopped")

    def call_later(self, delay: float, fn: Callable[[], Any]) -> TimerHandle:
        """Run ``fn()`` on this loop after ``delay`` seconds; ``handle.cancel()`` from any thread."""
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not delay >= 0 or math.isinf(delay):
            raise ValueError(f"call_later: delay {delay!r}; accepted: finite seconds >= 0")
        handle = TimerHandle(time.monotonic() + delay, fn)
        if self._in_loop_thread():
            self._timers.schedule(handle)
        elif not self._tasks.push_urgent(self._timers.schedule, handle):
            raise EngineStoppedError(f"event loop {self.index} has stopped")
        return handle

    def enroll(self, sock: socket.socket, timeout: float | None = None) -> Conn:
        """Adopt a connected socket as a connection of this loop; returns once ``on_open`` has run.

        Safe from any thread.  The loop takes ownership of ``sock``.
        """
        if self._in_loop_thread():
            return self._enroll(sock)
        done = threading.Event()
        result: list[Any] = []

        def enroll_on_loop() -> None:
            try:
                result.append(self._enroll(sock))
            except BaseException as exc:
                result.append(exc)
            done.set()

        if not self._tasks.push_urgent(enroll_on_loop):
            raise EngineStoppedError(f"event loop {self.index} has stopped")
        if not done.wait(timeout):
            raise TimeoutError(f"enroll: event loop {self.index} did not answer in {timeout}s")
        if isinstance(result[0], BaseException):
            raise result[0]
        return result[0]

    def __repr__(self) -> str:
        return f"<EventLoop {self.index} conns={len(self._conns)}>"

    # -- lifecycle (engine) --------------------------------------------------

    def add_acceptor(self, acceptor: Acceptor) -> None:
        self._acceptors[acceptor.fd] = acceptor

    def start(self) -> None:
        name = f"gnetpy-loop-{self.index}" if self.index >= 0 else "gnetpy-main-reactor"
        self._running = True
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def shutdown(self, deadline: float) -> None:
        """Ask the loop to close its connections (flushing them until ``deadline``) and exit."""
        self._tasks.push_urgent(self._begin_shutdown, deadline)

    def join(self, timeout: float | None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def _run(self) -> None:
        self._thread_id = threading.get_ident()
        try:
            for acceptor in self._acceptors.values():
                acceptor.start()
            if self._opts.ticker and self.index == 0:
                self._ticker = self.call_later(0, self._tick)
            while self._running:
                try:
                    self._poll_loop()
                except Exception:
                    self._logger.exception("gnetpy: event loop %d: internal error (serving on)", self.index)
                    time.sleep(0.01)  # never a tight loop of the same failure
        finally:
            self._finish()

    def _in_loop_thread(self) -> bool:
        return self._thread_id is None or self._thread_id == threading.get_ident()

    # -- the reactor ---------------------------------------------------------

    def _poll_loop(self) -> None:
        # Hot path: see the module docstring.  Locals only; the common event
        # -- a connection that is readable and nothing else -- is matched with
        # one int comparison (specialised by CPython, unlike ``&``) and served
        # inline; this block is the inlined twin of ``_read_once``.
        wait = self._poller.wait
        conns = self._conns
        read = os.read
        read_size = self._read_size
        small_read = self._small_read
        adapt = adapt_read_size
        nothing = _NOTHING
        on_traffic = self._handler.on_traffic
        on_other_fd = self._on_other_fd
        on_event = self._on_event
        deliver = self._deliver
        keep_leftover = self._settle_inbound
        on_raise = self._callback_raised
        on_action = self._act
        close = self._close_conn
        timers = self._timers
        doomed = self._doomed
        busy_read = self._busy_read
        busy_write = self._busy_write
        monotonic = time.monotonic
        length = len
        # Edge-triggered events go through _on_event (read until drained).
        readable_only = -1 if self._edge_triggered else IN
        maxevents = 64

        while self._running:
            if busy_read or busy_write:
                timeout = 0.0
            elif timers:
                timeout = timers.timeout(monotonic())
            else:
                timeout = -1
            events = wait(timeout, maxevents)
            for fd, ev in events:
                try:
                    c = conns[fd]
                except KeyError:
                    on_other_fd(fd, ev)
                    continue
                if ev != readable_only:
                    on_event(c, fd, ev)
                    continue
                size = c._read_size
                try:
                    data = read(fd, size)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as exc:
                    close(c, exc, False)
                    continue
                if data:
                    if length(data) == size if size == small_read else length(data) <= small_read:
                        adapt(c, length(data), small_read, read_size)
                    if c._src is nothing:
                        c._src = data
                        try:
                            action = on_traffic(c)
                        except Exception as exc:
                            on_raise(c, exc)
                            continue
                        if c._src is not nothing:
                            keep_leftover(c)
                    else:
                        action = deliver(c, data)
                    if action:
                        on_action(c, action)
                else:
                    close(c, EOFError("connection closed by the peer"), True)
            if len(events) == maxevents and maxevents < _MAX_EVENTS_CAP:
                maxevents *= 2
            if doomed:
                self._close_doomed()
            if busy_read or busy_write:
                self._resume_busy()
            if timers and timers[0][0] <= monotonic():
                self._run_timers()

    def _on_event(self, c: Conn, fd: int, ev: int) -> None:
        """Any connection event but "readable, nothing else" in level-triggered mode."""
        if ev & READ_EVENTS:
            if self._edge_triggered:
                self._read_edge(c)
            else:
                self._read_once(c, fd)
            if c._state != OPEN:
                return
        if ev & OUT and c._out:
            self._flush(c)

    def _read_once(self, c: Conn, fd: int) -> int:
        """One read and its delivery (the loop inlines the same steps); returns the bytes read.

        0 means nothing was read: the socket had nothing, or the connection closed.
        """
        size = c._read_size
        try:
            data = os.read(fd, size)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            self._close_conn(c, exc, False)
            return 0
        if not data:
            self._close_conn(c, EOFError("connection closed by the peer"), True)
            return 0
        small = self._small_read
        if len(data) == size if size == small else len(data) <= small:
            adapt_read_size(c, len(data), small, self._read_size)
        action = self._deliver(c, data)
        if action:
            self._act(c, action)
        return len(data)

    def _on_other_fd(self, fd: int, ev: int) -> None:
        if fd == self._waker.fd:
            self._tasks.run()
            return
        acceptor = self._acceptors.get(fd)
        if acceptor is not None:
            acceptor.on_acceptable()
            return
        c = self._closing.get(fd)
        if c is not None:
            self._flush(c)
        # Otherwise: an event for a descriptor closed earlier in this batch.

    # -- read path (beyond the inline case) ----------------------------------

    def _deliver(self, c: Conn, data: bytes) -> Any:
        """``on_traffic`` over what ``c`` has buffered plus ``data`` (empty for a wake-up)."""
        if c._src is _NOTHING:
            c._src = data
        elif data:
            self._append_inbound(c, data)
        try:
            action = self._handler.on_traffic(c)
        except Exception as exc:
            self._callback_raised(c, exc)
            return None
        if c._src is not _NOTHING:
            self._settle_inbound(c)
        return action

    def _append_inbound(self, c: Conn, data: bytes) -> None:
        inbound = c._src
        try:
            inbound += data
        except BufferError:
            # The handler kept a view from peek(): leave that buffer to it.
            c._in = c._src = bytearray(inbound) + data

    def _settle_inbound(self, c: Conn) -> None:
        """After ``on_traffic``: keep what the handler left, in the connection's own buffer."""
        src: Any = c._src
        pos = c._pos
        if pos >= len(src):
            c._src = _NOTHING
            c._in = None
        elif src.__class__ is bytes:
            # A fresh read, partly consumed: copy the rest, let the read go.
            c._in = c._src = bytearray(memoryview(src)[pos:])
        elif pos:
            try:
                del src[:pos]  # the leftover buffer, c._in
            except BufferError:
                c._in = c._src = bytearray(memoryview(src)[pos:])
        c._pos = 0

    def _read_edge(self, c: Conn) -> None:
        """Edge-triggered: read until the socket is drained, within the per-iteration budget."""
        fd = c._fd
        budget = self._opts.edge_triggered_chunk
        self._busy_read.pop(fd, None)
        while True:
            size = c._read_size
            got = self._read_once(c, fd)
            if not got or c._state != OPEN or c._err is not None:
                return
            if got < size:
                return  # drained for now: more data will raise a new edge
            budget -= got
            if budget <= 0:
                self._busy_read[fd] = c  # let the other connections have their turn
                return

    # -- write path ----------------------------------------------------------

    def _want_write(self, c: Conn) -> None:
        """``c`` has just queued bytes: have the loop flush them when the socket can take more."""
        if self._edge_triggered:
            # Registered for writability once and for all; an edge only comes
            # after EAGAIN, so make sure the next iteration tries.
            self._busy_write[c._fd] = c
        elif c._state == OPEN:
            self._poller.modify_read_write(c._fd)

    def _flush(self, c: Conn) -> None:
        out = c._out
        fd = c._fd
        self._busy_write.pop(fd, None)
        try:
            out.flush_to(fd, self._opts.edge_triggered_chunk if self._edge_triggered else 0)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._close_conn(c, exc, False)
            return
        if out:
            if self._edge_triggered:
                self._busy_write[fd] = c
            return
        if c._state == CLOSING:
            self._finish_close(c, c._err)
        elif not self._edge_triggered:
            self._poller.modify_read(fd)

    def _resume_busy(self) -> None:
        for c in list(self._busy_read.values()):
            if c._state == OPEN:
                self._read_edge(c)
        for c in list(self._busy_write.values()):
            if c._state != CLOSED and c._out:
                self._flush(c)
            else:
                self._busy_write.pop(c._fd, None)

    # -- open, act, close ----------------------------------------------------

    def _open_accepted(self, sock: socket.socket, remote: Any) -> None:
        """Hand-over target of the acceptor (counted in ``_accepted_for`` by it)."""
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
        c = Conn(self, sock, remote)
        try:
            self._poller.add_read(c._fd)
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
            self._close_conn(c, None, True)
        elif action == Action.SHUTDOWN:
            self._engine._request_stop()
        else:
            self._logger.error("gnetpy: a callback of %r returned %r, which is not an Action; ignored", c, action)

    def _callback_raised(self, c: Conn, exc: BaseException) -> None:
        self._logger.error("gnetpy: a callback raised for %r; closing the connection", c, exc_info=exc)
        if c._out and c._state != CLOSED:
            try:  # deliver what the handler wrote before it failed, if the kernel takes it now
                c._out.flush_to(c._fd)
            except OSError:
                pass
        self._close_conn(c, exc, False)

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

    def _doom(self, c: Conn) -> None:
        self._doomed.append(c)

    def _close_doomed(self) -> None:
        doomed = self._doomed[:]
        self._doomed.clear()
        for c in doomed:
            self._close_conn(c, c._err, False)

    def _close_conn(self, c: Conn, err: BaseException | None, graceful: bool) -> None:
        """Close ``c``; if ``graceful``, first let its queued bytes reach the kernel."""
        if c._state != OPEN:
            if c._state == CLOSING and not graceful:
                self._finish_close(c, err)
            return
        if graceful and c._out and c._err is None:
            try:
                c._out.flush_to(c._fd)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as exc:
                err = exc
            # Still queued and no write error: finish the flush before closing.
            # (EOF only means the peer stopped sending; it may still read.)
            if c._out and (err is None or isinstance(err, EOFError)):
                self._start_closing(c, err)
                return
        self._finish_close(c, err)

    def _start_closing(self, c: Conn, err: BaseException | None) -> None:
        fd = c._fd
        c._state = CLOSING
        c._err = err  # what on_close will be told once the flush is over
        del self._conns[fd]
        self._closing[fd] = c
        self._busy_read.pop(fd, None)
        if self._edge_triggered:
            self._busy_write[fd] = c
        else:
            self._poller.modify_write(fd)

    def _finish_close(self, c: Conn, err: BaseException | None) -> None:
        fd = c._fd
        c._state = CLOSED
        self._conns.pop(fd, None)
        self._closing.pop(fd, None)
        self._busy_read.pop(fd, None)
        self._busy_write.pop(fd, None)
        self._poller.delete(fd)
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
            self._engine._request_stop()
        if self._stopping and not self._conns and not self._closing:
            self._running = False

    # -- tasks from Conn's thread-safe methods --------------------------------

    def _submit(self, c: Conn, callback: Callback, fn: Callable[..., Any], *args: Any) -> None:
        if not self._tasks.push(fn, *args):
            self._refuse(c, callback)

    def _submit_urgent(self, c: Conn, callback: Callback, fn: Callable[..., Any], *args: Any) -> None:
        if not self._tasks.push_urgent(fn, *args):
            self._refuse(c, callback)

    def _refuse(self, c: Conn, callback: Callback) -> None:
        """The loop is gone: tell the callback here, on the caller's thread."""
        if callback is None:
            return
        try:
            callback(c, EngineStoppedError(f"event loop {self.index} has stopped"))
        except Exception:
            self._logger.exception("gnetpy: callback %r raised", callback)

    def _after_write(self, c: Conn, result: int, callback: Callback) -> None:
        if callback is not None:
            err = ConnClosedError(f"{c!r} was closed before the write") if result < 0 else c._err
            self._run_callback(callback, c, err)

    def _wake_conn(self, c: Conn, callback: Callback) -> None:
        if c._state != OPEN:
            self._run_callback(callback, c, ConnClosedError(f"wake: {c!r} is closed"))
            return
        action = self._deliver(c, b"")
        if action and c._state == OPEN:
            self._act(c, action)
        self._run_callback(callback, c, None)

    def _close_from_user(self, c: Conn, callback: Callback) -> None:
        if c._state == CLOSED:
            self._run_callback(callback, c, ConnClosedError(f"close: {c!r} is already closed"))
            return
        if callback is not None:
            if c._close_callbacks is None:
                c._close_callbacks = []
            c._close_callbacks.append(callback)
        self._close_conn(c, None, True)

    def _call_user(self, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except Exception:
            self._logger.exception("gnetpy: %r raised on event loop %d", fn, self.index)

    # -- timers and the ticker -----------------------------------------------

    def _run_timers(self) -> None:
        for handle in self._timers.pop_due(time.monotonic()):
            self._call_user(handle.fn)

    def _tick(self) -> None:
        if self._stopping:
            return
        delay, action = 1.0, Action.NONE
        try:
            delay, action = _parse_tick(self._handler.on_tick())
        except Exception:
            self._logger.exception("gnetpy: on_tick raised; next tick in %.3fs", delay)
        if action == Action.SHUTDOWN:
            self._engine._request_stop()
            return
        self._ticker = self.call_later(delay, self._tick)

    # -- shutdown ------------------------------------------------------------

    def _begin_shutdown(self, deadline: float) -> None:
        if self._stopping:
            return
        self._stopping = True
        for acceptor in self._acceptors.values():
            acceptor.stop()
        if self._ticker is not None:
            self._ticker.cancel()
        for c in list(self._conns.values()):
            self._close_conn(c, None, True)
        if self._closing:
            self.call_later(max(0.0, deadline - time.monotonic()), self._force_close)
        elif not self._conns:
            self._running = False

    def _force_close(self) -> None:
        for c in list(self._closing.values()):
            unsent = c._out.nbytes if c._out else 0
            self._logger.warning("gnetpy: stop timed out: %r closed with %d bytes unsent", c, unsent)
            self._finish_close(c, TimeoutError(f"engine stop timed out with {unsent} bytes unsent"))

    def _finish(self) -> None:
        """The thread's last act: nothing may be left open or queued."""
        self._stopping = True
        for c in list(self._conns.values()) + list(self._closing.values()):
            self._finish_close(c, EngineStoppedError(f"event loop {self.index} stopped"))
        for fn, args in self._tasks.close():
            self._tasks.call((fn, args))  # they see closed connections and report it
        for acceptor in self._acceptors.values():
            acceptor.stop()
        self._timers.clear()
        self._poller.close()
        self._waker.close()
        self._running = False


def _parse_tick(result: Any) -> tuple[float, Action]:
    if isinstance(result, tuple) and len(result) == 2:
        delay, action = result
        action = Action(action if action is not None else Action.NONE)
    else:
        delay, action = result, Action.NONE
    if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not delay >= 0 or math.isinf(delay):
        raise TypeError(f"on_tick returned {result!r}; expected seconds >= 0 or (seconds, Action)")
    return float(delay), action
