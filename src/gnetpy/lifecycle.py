"""A connection's life on its event loop: open, the handler's actions and errors, close.

``ConnLifecycle`` is the part of ``EventLoop`` (see loopbase.py) that moves
connections between the states of state.py, where the diagram is; the
reactor in eventloop.py calls into it when a socket is handed over, a
callback returns an ``Action`` or raises, or a read or write fails.

Closing.  ``_close`` is the one entry for every close -- a handler's
``Action.CLOSE``, ``c.close()``, the peer's EOF, an error, the engine
stopping -- and ``state.close_target`` decides where it leads: at once to
``_finish_close``, where ``on_close`` runs exactly once, or first through
the graceful close of closing.py.  Errors that happen inside a callback
(a failed write) only mark the connection (``Conn._err``) and put it on
``_doomed``; it is closed after the callback returns, so no callback ever
runs inside another.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from . import tls
from .address import format_addr
from .closing import lingers
from .conn import PAUSED_BY_FRAMES, PAUSED_BY_QUEUE, Callback, Conn
from .errors import CodecError, ConnClosedError, EngineStoppedError, LimitExceededError
from .handler import Action
from .loopbase import LoopBase
from .poller import IN, OUT
from .sockopts import configure_accepted, reset_on_close
from .state import CLOSED, HANDSHAKING, OPEN, TransitionError, check_transition, close_target
from .tls import TlsSession

_TCP_FAMILIES = (socket.AF_INET, socket.AF_INET6)


class ConnLifecycle(LoopBase):
    # -- open, act ---------------------------------------------------------

    def _open_handed_over(self, sock: socket.socket, remote: Any, ssl_context: Any = None) -> None:
        """On the loop: serve a socket counted in ``_counts.handed_over`` (TLS: ``ssl_context``'s server side)."""
        if self._stopping:
            sock.close()
            self._counts.closed += 1
            return
        if isinstance(ssl_context, int):  # from a worker's channel: an index into the engine's contexts
            ssl_context = self._tls_contexts[ssl_context] if ssl_context >= 0 else None
        self._open(sock, remote, None, None if ssl_context is None else tls.wrap(ssl_context, True))

    def _enroll(self, sock: socket.socket, context: Any = None, session: TlsSession | None = None) -> Conn:
        if self._stopping:
            raise EngineStoppedError(f"event loop {self.index} is stopping")
        configure_accepted(sock, self._opts, sock.family in _TCP_FAMILIES)
        try:
            remote = format_addr(sock.getpeername())
        except OSError:
            remote = None
        self._counts.opened += 1
        c = self._open(sock, remote, context, session)
        if c is None:
            raise ConnClosedError(f"enroll: cannot register {sock!r}")
        return c

    def _open(self, sock: socket.socket, remote: Any, context: Any = None,
              session: TlsSession | None = None) -> Conn | None:
        if session is None:
            c = Conn(self, sock, remote, self._small_read)  # type: ignore[arg-type]  # self is an EventLoop
        else:
            c = tls.new_conn(self, sock, remote, session)  # type: ignore[arg-type]
        c.context = context
        try:
            self._poller.register(c._fd, IN)
        except (OSError, ValueError):
            self._logger.exception("gnetpy: cannot register %r", c)
            sock.close()
            self._counts.closed += 1
            return None
        self._conns[c._fd] = c
        if self._idle is not None:
            c._seen = self._now = time.monotonic()
            self._idle.add(c, c._seen)
        if session is not None:
            tls.start(self, c)  # type: ignore[arg-type]  # on_open once the handshake is done
            return c
        return self._opened(c)

    def _tls_opened(self, c: Conn) -> None:
        """A TLS connection's handshake completed: now it is open, and the handler hears of it."""
        check_transition(c._state, OPEN)
        c._state = OPEN
        self._opened(c)

    def _opened(self, c: Conn) -> Conn:
        try:
            action = self._handler.on_open(c)
        except BaseException as exc:
            self._callback_raised(c, exc)
            return c
        if action:
            self._act(c, action)
        return c

    def _act(self, c: Conn, action: Any) -> None:
        """What a callback returned, when it is true: ``Action.CLOSE``, ``Action.SHUTDOWN`` -- or a mistake.

        Anything but ``None`` and an ``Action`` (``True``, a delay, a string) is
        the handler's error: ``True == Action.CLOSE`` would otherwise close
        the connection silently.  (False values -- ``0``, ``False``, ``""`` --
        never get here: the loop tests ``if action:`` to stay fast, and treats
        them as ``Action.NONE``.)
        """
        if action.__class__ is not Action:
            self._callback_raised(c, TypeError(f"a callback returned {action!r}; "
                                               f"expected None or a gnetpy.Action"))
        elif action == Action.CLOSE:
            self._close(c, None, True)
        elif action == Action.SHUTDOWN:
            self._request_stop()

    def _callback_raised(self, c: Conn, exc: BaseException) -> None:
        """A callback of ``c`` failed: log it and close ``c`` with ``exc``.  Never raises.

        The close is graceful: what the handler wrote before it failed --
        replies to the requests it did handle -- is delivered first (within
        ``close_timeout``), then the connection ends.  Bytes are dropped only
        where they cannot be delivered, and then the peer gets a reset
        (``_finish_close``), never a FIN that would look like a clean end.
        """
        self._report_callback_error(c, exc, "closing the connection")
        self._close(c, exc, True)

    def _report_callback_error(self, c: Conn, exc: BaseException, then: str) -> None:
        """Log what a callback of ``c`` raised; a ``SystemExit`` & co. stops the engine.

        A ``CodecError`` is the peer's doing (a frame too long, a corrupt
        length): one line at INFO, no traceback -- a scanner must not flood
        the log.
        """
        if isinstance(exc, CodecError):
            self._logger.info("gnetpy: %r sent a bad frame: %s; %s", c, exc, then)
        elif isinstance(exc, Exception):
            self._logger.error("gnetpy: a callback raised for %r; %s", c, then, exc_info=exc)
        else:
            self._fatal(exc, f"a callback of {c!r}")

    def _dispatch_frames(self, c: Conn) -> Any:
        """``on_traffic`` with the ``codec`` option: each complete frame to ``on_frame(c, frame)``, in order.

        The codec keeps its per-connection state on ``c`` (codec.py); an
        ``Action`` other than ``NONE`` ends the delivery of this batch (what is
        left stays buffered).  A ``CodecError`` -- a frame too long, a corrupt
        length -- is raised to the caller like any exception of a callback:
        that connection (or datagram session) ends with it, after delivering
        the replies already written (``_report_callback_error`` logs it in one
        line).

        Bounded: at most ``frame_budget`` frames and ``frame_budget_bytes``
        bytes of them per connection per loop iteration, like Netty's
        messages per read.  A connection with more waiting stops reading and
        goes on at the next iteration, after the loop has served the others
        (``_defer_frames``): a peer that sends 400,000 empty lines in one read
        cannot keep its neighbours waiting.
        """
        decode = self._opts.codec.decode
        on_frame = self._handler.on_frame
        frames_left = self._frame_budget
        bytes_left = self._frame_budget_bytes
        while True:
            frame = decode(c)
            if frame is None:
                return None
            action = on_frame(c, frame)
            if action:
                return action
            frames_left -= 1
            bytes_left -= len(frame)
            if frames_left <= 0 or bytes_left <= 0:
                # A stream of this loop (a datagram's frames are all delivered: one datagram is bounded).
                if c._state == OPEN and c._err is None and self._conns.get(c._fd) is c:
                    self._defer_frames(c)
                return None

    def _defer_frames(self, c: Conn) -> None:
        """``c`` spent its frame budget: read nothing more from it until its buffered frames are delivered."""
        self._pause_reading(c, PAUSED_BY_FRAMES)
        self._frames_deferred[c._fd] = c

    def _frames_turn(self) -> None:
        """At the end of an iteration: the next budget's worth for the connections deferred in an earlier one.

        Those deferred during this iteration wait for the next: every other
        ready connection gets its turn between two budgets of one connection.
        """
        waiting, deferred = self._frames_waiting, self._frames_deferred
        due = list(waiting.values())
        waiting.clear()
        waiting.update(deferred)
        deferred.clear()
        for c in due:
            if c._state != OPEN or c._fd in waiting:
                continue  # closed meanwhile, or already delivered to (a wake-up) and deferred again
            self._deliver(c, b"")
            if c._state == OPEN and c._fd not in deferred:
                self._resume_reading(c, PAUSED_BY_FRAMES)  # all delivered: read again
        waiting.update(deferred)
        deferred.clear()

    # -- flow control: reading paused and resumed, bounds ----------------------

    def _pause_reading(self, c: Conn, reason: int) -> None:
        was = c._paused
        c._paused = was | reason
        if not was and c._state == OPEN:
            if self._edge_triggered:
                self._busy_read.pop(c._fd, None)  # registered once for IN|OUT: edges are ignored now
            else:
                self._poller.modify(c._fd, OUT if c._out else 0)

    def _resume_reading(self, c: Conn, reason: int) -> None:
        if not c._paused & reason:
            return
        c._paused &= ~reason
        if not c._paused and c._state == OPEN:
            if self._edge_triggered:
                self._busy_read[c._fd] = c  # an edge may have come and gone meanwhile: read now
            else:
                self._poller.modify(c._fd, IN | OUT if c._out else IN)

    def _drained(self, c: Conn) -> None:
        """``c``'s queue fell under the low-water mark after passing the high one."""
        self._resume_reading(c, PAUSED_BY_QUEUE)
        try:
            action = self._handler.on_drained(c)
        except BaseException as exc:
            self._callback_raised(c, exc)
            return
        if action:
            self._act(c, action)

    def _reserve_async(self, c: Conn, size: int) -> None:
        """From another thread: account ``size`` bytes for ``c``, or refuse at ``async_write_limit``."""
        limit = self._opts.async_write_limit
        with self._async_lock:
            pending = self._async_pending.get(c, 0)
            waiting = pending + (c._out.nbytes if c._out else 0)  # read off the loop: a moment old at worst
            if waiting >= limit:
                raise LimitExceededError(f"async_write: {waiting} bytes already wait for {c!r} (async_write_limit "
                                         f"is {limit}); write again after an earlier write's callback or on_drained")
            self._async_pending[c] = pending + size

    def _release_async(self, c: Conn, size: int) -> None:
        with self._async_lock:
            pending = self._async_pending.pop(c, 0) - size
            if pending > 0:
                self._async_pending[c] = pending

    def _keep_inbound(self, c: Conn, kept: int) -> bool:
        """After a callback: ``c`` keeps ``kept`` unconsumed bytes (0: none).  Enforce the bounds on them --
        ``max_inbound_buffered`` per connection, ``max_inbound_total`` over the engine -- and account them;
        True when ``c`` was closed for it.

        Off the hot path: only a connection that leaves (or left, last time) bytes unconsumed gets here.
        The engine's total is every loop's ``inbound`` counter (shared memory between worker processes).
        """
        before = self._holding.pop(c, 0)
        if not kept and not before:
            return False
        if kept:
            self._holding[c] = kept
        counts = self._counts
        counts.inbound += kept - before
        if kept > self._max_inbound:
            self._inbound_over_limit(c, f"{kept} bytes received and not consumed: over max_inbound_buffered "
                                        f"({self._max_inbound})")
            return True
        if kept > before and self._max_inbound_total:
            total = sum(peer.inbound for peer in self._inbound_peers)
            if total > self._max_inbound_total:
                self._inbound_over_limit(c, f"{kept} bytes received and not consumed here would make "
                                            f"{total} held by the engine: over max_inbound_total "
                                            f"({self._max_inbound_total})")
                return True
        return False

    def _inbound_over_limit(self, c: Conn, why: str) -> None:
        self._release_inbound(c)
        self._close(c, LimitExceededError(why), True)

    def _release_inbound(self, c: Conn) -> None:
        """``c`` is closing: its unconsumed bytes no longer count (they are never delivered now)."""
        kept = self._holding.pop(c, 0)
        if kept:
            self._counts.inbound -= kept

    def _idle_expired(self, c: Conn) -> None:
        """Nothing was received from ``c`` for idle_timeout (deadlines.py)."""
        self._close(c, TimeoutError(f"idle for {self._opts.idle_timeout:g}s (idle_timeout)"), True)

    def _run_callback(self, callback: Callback, c: Conn, err: BaseException | None) -> None:
        if callback is None:
            return
        try:
            callback(c, err)
        except BaseException as exc:
            if c._state == CLOSED:
                self._user_raised(exc, f"callback {callback!r} for closed {c!r}")
            else:
                self._callback_raised(c, exc)

    def _user_raised(self, exc: BaseException, what: str, then: str = "") -> None:
        """User code outside a connection's callbacks failed (on_close, a timer, on_tick): log it."""
        if isinstance(exc, Exception):
            self._logger.error("gnetpy: %s raised%s", what, then, exc_info=exc)
        else:
            self._fatal(exc, what)

    def _fatal(self, exc: BaseException, what: str) -> None:
        """``SystemExit``, ``KeyboardInterrupt`` & co. in user code: stop the engine, and let run() re-raise it."""
        self._logger.critical("gnetpy: %s raised %s; stopping the engine", what, type(exc).__name__, exc_info=exc)
        self._request_stop(exc)

    # -- closing (state.py has the diagram) -----------------------------------

    def _doom(self, c: Conn) -> None:
        self._doomed.append(c)

    def _close_doomed(self) -> None:
        doomed = self._doomed[:]
        self._doomed.clear()
        for c in doomed:
            self._close(c, c._err, False)

    def _close(self, c: Conn, err: BaseException | None, graceful: bool) -> None:
        """Every close comes here; ``graceful`` first delivers what was written (and lingers, for TCP)."""
        state = c._state
        if state == OPEN and c._err is not None:  # a write failed: nothing more can be delivered
            err, graceful = err or c._err, False
        if graceful and state == OPEN and c._tls is not None:
            tls.close_notify(c)  # the peer reads an orderly end of the TLS session first
        if graceful and state == OPEN and c._out:
            try:
                c._out.flush_to(c._fd)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as exc:
                err, graceful = exc, False
        target = close_target(state, graceful, bool(c._out), graceful and lingers(c, err))
        if target == CLOSED:
            self._finish_close(c, err)
        elif target is not None:
            self._start_closing(c, target, err)

    def _finish_close(self, c: Conn, err: BaseException | None) -> None:
        # check_transition(c._state, CLOSED), specialised: every state but
        # CLOSED may close, and this runs once per connection.
        if c._state == CLOSED:
            raise TransitionError(f"connection state CLOSED -> CLOSED is not a transition ({c!r})")
        fd = c._fd
        opened = c._state != HANDSHAKING  # a handshake that failed never reached the handler
        c._state = CLOSED
        if c._tls is not None:
            self._handshakes.discard(fd)
        if self._conns.pop(fd, None) is None:
            del self._closing[fd], self._watchers[fd]
            self._close_timeouts.discard(fd)
        elif self._holding:
            self._release_inbound(c)
        if self._edge_triggered:
            self._busy_read.pop(fd, None)
            self._busy_write.pop(fd, None)
        self._poller.unregister(fd)
        c._fd = -1
        if c._out and opened:
            # Written bytes are dropped (a failed write, close_timeout, the stop deadline): end with
            # a reset, so the peer cannot take what it got for everything (a FIN would say so).
            reset_on_close(c._sock)
        c._sock.close()
        if c._out:
            c._out.clear_all()
        self._counts.closed += 1
        if not opened:
            tls.never_opened(c, err)  # a dial waiting for the handshake hears why
            return
        action = None
        try:
            action = self._handler.on_close(c, err)
        except BaseException as exc:
            self._user_raised(exc, f"on_close of {c!r}")
        callbacks, c._close_callbacks = c._close_callbacks, None
        for callback in callbacks or ():
            self._run_callback(callback, c, None)
        if action:
            if action.__class__ is not Action:
                self._logger.error("gnetpy: on_close of %r returned %r; expected None or a gnetpy.Action", c, action)
            elif action == Action.SHUTDOWN:
                self._request_stop()
        if self._stopping and not self._conns and not self._closing:
            self._running = False

