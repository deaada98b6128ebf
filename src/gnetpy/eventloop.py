"""EventLoop: one reactor, and everything it owns.

Each loop owns its connections outright: every callback of a connection runs
on its loop, so handlers need no locks for per-connection state.  Other
threads reach a loop only through its task queue (``async_write``, ``wake``,
``close``, ``hand_over`` of accepted sockets, shutdown), which wakes the
poller.  A loop runs on a thread of its own (``start``) or, in a worker
process, on the thread that calls ``run``.

One class owns all of a loop's state.  Parts big enough for a module of their
own are components the loop builds and calls, each with its own state:
``LoopRunner`` (runloop.py: the thread, start-up, the failure policy),
``GracefulClose`` (closing.py: flushing and lingering connections),
``FrameDispatcher`` (frames.py: the codec option), ``InboundLimit`` and
``AsyncWriteLimit`` (limits.py), the poller, the task queue, the timer heap
and the deadline keepers.

The internal interface.  Connections (conn.py, tls.py, udp.py), dials
(dial.py) and the components reach the loop only through the methods below
under "The connections' side" -- never its attributes, which are this
module's alone.  In short: ``close_conn``, ``finish_close``, ``deliver``,
``act``/``callback_raised``/``user_raised`` (what a callback's outcome
means, one policy for every kind), ``open_conn``/``closed_conn``,
``new_outbound``/``queued``/``flush_conn``/``doom`` (the write path),
``pause_reading``/``resume_reading``, ``submit``, ``run_callback``,
``watch``/``unwatch``/``route``/``set_interest`` (descriptors that are not
open connections), ``read_again``/``write_again`` (edge-triggered budgets),
the TLS handshake's ``handshake_started``/``handshake_done``/
``handshake_failed``, ``reserve_async``/``release_async``, and the read-only
facts ``now``, ``edge_triggered``, ``stopping``, ``options``, ``handler``,
``logger``, ``counts``, ``tally``, ``traffic``.

The dispatch loop (``_poll_loop``) is the hot path of the whole library and
is written for speed rather than elegance: everything it touches is bound to
a local first, connections are found through one dict keyed by descriptor,
the common case -- a readable connection with nothing left over from before
-- is handled inline without a method call, and nothing is allocated per
event besides what ``poll`` returns.  Everything else leaves the inline path
through one method call: other kinds of descriptor (the wake-up descriptor,
listeners, closing connections, dials, datagram sockets) through
``_watchers``, a dict from descriptor to the method that serves it; other
events on open connections through ``_on_event``.
"""

from __future__ import annotations

import operator
import socket
import threading
import time
import types
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Final

from . import inherit, syscalls
from .acceptor import Acceptor
from .address import format_addr
from .buffer import NOTHING, SMALL_READ, OutboundBuffer
from .closing import GracefulClose, lingers
from .conn import PAUSED_BY_QUEUE, StreamConn
from .counters import Counters, LocalCounters, count
from .deadlines import FifoDeadlines, IdleWheel
from .dial import Connect, DialCallback, start_dial
from .errors import (
    CloseTimeoutError,
    CodecError,
    ConnClosedError,
    EngineStoppedError,
    IdleTimeoutError,
    LimitExceededError,
)
from .frames import FrameDispatcher
from .handler import Action
from .limits import AsyncWriteLimit, InboundLimit
from .listener import Role
from .poller import ERR, HUP, IN, OUT, READ_EVENTS, new_poller
from .proxystage import ProxyReader, Trust
from .runloop import LoopRunner
from .sockopts import configure_accepted, reset_on_close
from .state import CLOSED, FLUSHING, HANDSHAKING, OPEN, TransitionError, check_transition, close_target
from .stats import WorkerStats, worker_stats
from .tally import ERROR, PROXY_REFUSED, Tally, close_cause
from .taskqueue import TaskQueue
from .timers import TimerHandle, TimerHeap, is_delay, parse_tick
from .tls import TlsConn, TlsTransport
from .udp import DatagramListener, DatagramSocket
from .waker import Waker

if TYPE_CHECKING:
    import logging

    from .acceptor import HandOverTarget
    from .conn import Callback, Conn
    from .handler import EventHandler
    from .listener import Listener
    from .options import Options

_get_ident = threading.get_ident
# epoll's event list starts small (Python allocates it on every call) and
# doubles, up to this, whenever a poll comes back full.
_MAX_EVENTS_CAP: Final = 8192
_TCP_FAMILIES = (socket.AF_INET, socket.AF_INET6)


class EventLoop:
    """A reactor.  Public: ``index``, ``execute``, ``call_later``, ``dial``, ``enroll``, ``count_connections``.

    The engine's side (``add_listener``, ``hand_over``, ``start``, ``run``,
    ``shutdown``, ``join``, ``release``, ``runs_on``) is what a worker process
    implements too (see engine.LoopHandle); the connections' side is the
    internal interface the module docstring lists.
    """

    def __init__(self, index: int, opts: Options, handler: EventHandler, request_stop: Callable[..., None],
                 roles: list[Role] | None = None) -> None:
        self.index = index
        self._opts = opts
        self._logger = opts.log
        # Any: compiled, a call through the declared EventHandler would check each callback's
        # result against its annotation (a TypeError of mypyc's own for an on_tick that returns
        # None, or an on_open that returns True) before gnetpy's checks could name the mistake.
        self._handler: Any = handler
        # Ask whoever runs the engine to stop it: request_stop() for
        # Action.SHUTDOWN, request_stop(exc) for a SystemExit in a callback.
        self._request_stop = request_stop
        self._poller = new_poller(opts.poller, opts.edge_triggered)
        self._edge_triggered: bool = self._poller.edge_triggered
        try:
            self._waker = Waker()
        except BaseException:  # out of descriptors, say: leave nothing open behind
            self._poller.close()
            raise
        # What a forked worker must close of this loop (inherit.py holds it weakly).
        self._fork_guard = inherit.Guard(self, self._forget_in_child)
        self._tasks = TaskQueue(self._waker, self._logger)
        self._read_size: int = opts.read_buffer_cap
        self._small_read: int = min(SMALL_READ, opts.read_buffer_cap)
        self._write_chunk: int = opts.write_buffer_cap
        self._high_water, self._low_water = opts.water_marks
        self._counts: Counters = LocalCounters()  # a worker shares them with its parent (share_counts)
        self._tally = Tally()  # bytes, closes by cause...: plain integers only this loop writes (tally.py)
        self._inbound = InboundLimit(opts.max_inbound_buffered, opts.max_inbound_total, self._counts)
        self._async_writes = AsyncWriteLimit(opts.async_write_limit)
        self._dials: set[Connect] = set()  # connects in progress (dial.py)
        self._idle: IdleWheel | None = (IdleWheel(opts.idle_timeout, self.call_later, self._idle_expired)
                                        if opts.idle_timeout else None)
        # What the reactor calls with inbound data: the handler's on_traffic, or, with the
        # codec option, the frame dispatcher that calls on_frame (frames.py).
        self._frames: FrameDispatcher | None = None
        self._on_traffic: Callable[[Any], Any] = handler.on_traffic
        if opts.codec is not None:
            self._frames = FrameDispatcher(self, opts.codec, handler, opts.frame_budget, opts.frame_budget_bytes)
            self._on_traffic = self._frames.dispatch
        self._now = 0.0  # the loop's clock, read once per poll iteration when idle timeouts are on
        # The one event mask served inline by _poll_loop ("readable, nothing
        # else"); -1 serves none.  Edge-triggered events all go through
        # _on_event (read until drained).  Tests set -1 to compare the inline
        # block with the method path it mirrors.
        self._inline_events: int = -1 if self._edge_triggered else IN
        self._conns: dict[int, StreamConn] = {}  # open connections: the hot path's dict
        self._closer = GracefulClose(self, opts.close_timeout)
        # TLS: handshakes in progress (by descriptor), under tls_handshake_timeout; and
        # the contexts of the engine's TLS addresses (a worker gets an index with a socket).
        self._handshakes = FifoDeadlines(opts.tls_handshake_timeout, self.call_later, self._handshake_timed_out)
        # PROXY headers being read (proxystage.py), under proxy_header_timeout, from the peers it trusts.
        self._proxy_headers = FifoDeadlines(opts.proxy_header_timeout, self.call_later, self._proxy_timed_out)
        self._proxy_trust = Trust.parse(opts.proxy_trusted)
        # The engine's listener roles (TLS, PROXY): a worker gets a socket's by its index in them.
        self._roles: list[Role] = roles or []
        self._stop_timer: TimerHandle | None = None  # the stop deadline, once stopping
        self._watchers: dict[int, Callable[[int], Any]] = {self._waker.fd: self._on_wake_up}
        self._poller.register_listener(self._waker.fd)
        self._acceptors: list[Acceptor] = []
        self._datagrams: list[DatagramSocket] = []
        self._doomed: list[StreamConn] = []
        # Streams with writes gathered in a callback, sent before the loop goes on (conn.py, "Writing").
        self._dirty: list[StreamConn] = []
        # Edge-triggered only: connections whose read or write stopped at the
        # per-iteration byte budget, resumed on the next iteration.
        self._busy_read: dict[int, StreamConn] = {}
        self._busy_write: dict[int, StreamConn] = {}
        self._timers = TimerHeap()
        self._ticker: TimerHandle | None = None
        self._tick_delay = 1.0  # what on_tick returned last; its None means "the same again"
        self._running = False
        self._stopping = False
        self._runner = LoopRunner(self, self._poll_loop)

    # -- public API ----------------------------------------------------------

    def count_connections(self) -> int:
        """Connections on this loop, including accepted ones still being handed over."""
        return count(self._counts)

    def count_tls_failures(self) -> int:
        """TLS handshakes on this loop that failed (never reached the handler)."""
        return self._counts.tls_failed

    def count_proxy_refused(self) -> int:
        """Connections on this loop closed unread for their PROXY header (never reached the handler)."""
        return self._counts.proxy_refused

    def stats(self) -> WorkerStats:
        """This loop's figures now (``Engine.stats()``; safe from any thread: integers read, not locked)."""
        counts = self._counts
        return worker_stats(self.index, count(counts), self._tally.values(), counts.tls_failed, counts.proxy_refused)

    def execute(self, fn: Callable[[], Any]) -> None:
        """Run ``fn()`` on this loop (safe from any thread)."""
        if not self._tasks.push(self._call_user, fn):
            raise EngineStoppedError(f"event loop {self.index} has stopped")

    def call_later(self, delay: Any, fn: Callable[[], Any]) -> TimerHandle:
        """Run ``fn()`` on this loop after ``delay`` seconds; ``handle.cancel()`` from any thread."""
        # ``delay`` is a float, typed Any: compiled by mypyc a float parameter is checked and
        # converted on entry (True would become 1.0, "1" a TypeError) before is_delay could say ValueError.
        if not is_delay(delay):
            raise ValueError(f"call_later: delay {delay!r}; accepted: finite seconds >= 0")
        handle = TimerHandle(time.monotonic() + delay, fn)
        if self._runner.in_thread():
            self._timers.schedule(handle)
        elif not self._tasks.push_urgent(self._timers.schedule, handle):
            raise EngineStoppedError(f"event loop {self.index} has stopped")
        return handle

    def dial(self, addr: str, callback: DialCallback, timeout: float | None = None, *, context: Any = None,
             ssl_context: Any = None, server_hostname: str | None = None, proxy_header: Any = None) -> None:
        """Connect to ``addr`` from this loop; ``callback(conn, err)`` runs on this loop with the outcome.

        Safe from any thread, and never blocks: a host name is resolved on a
        helper thread, the connect completes on the loop.  On success
        ``on_open`` has run when the callback gets the ``Conn``; on failure
        the callback gets ``(None, err)`` -- ``ConnectionRefusedError``,
        ``TimeoutError`` after ``timeout`` seconds, an ``OSError`` -- and
        nothing is left open.  ``context`` is the new connection's
        ``c.context`` before its ``on_open`` runs (how a handler tells the
        connections it dialed from those it accepted).  A proxy dials its
        backend from ``on_open`` of the client connection and pairs the two
        in the callback: both are then on this loop, no lock needed.

        ``ssl_context`` (an ``ssl.SSLContext``) makes it a TLS connection:
        the handshake runs on the loop, within ``timeout`` and
        ``tls_handshake_timeout``, before ``on_open``; ``server_hostname``
        (default: the host in ``addr``) is what the certificate is checked
        against when the context says so (``check_hostname``), and the SNI
        name sent.

        ``proxy_header`` (a ``gnetpy.ProxyInfo``, or the encoded bytes) is sent before anything
        else -- before the TLS handshake -- so that gnetpy can sit in front of another server
        that expects the PROXY protocol, passing its own client's addresses on.
        """
        start_dial(self, addr, callback, timeout, context, ssl_context, server_hostname, proxy_header)

    def enroll(self, sock: socket.socket, timeout: float | None = None) -> Conn:
        """Adopt a connected socket as a connection of this loop; returns once ``on_open`` has run.

        Safe from any thread.  The loop takes ownership of ``sock``.
        """
        if self._runner.in_thread():
            return self.enroll_conn(sock)
        done = threading.Event()
        result: list[Any] = []

        def enroll_on_loop() -> None:
            try:
                result.append(self.enroll_conn(sock))
            except BaseException as exc:
                result.append(exc)
            done.set()

        if not self._tasks.push_urgent(enroll_on_loop):
            raise EngineStoppedError(f"event loop {self.index} has stopped")
        if not done.wait(timeout):
            raise TimeoutError(f"enroll: event loop {self.index} did not answer in {timeout}s")
        if isinstance(result[0], BaseException):
            raise result[0]
        return result[0]  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"<EventLoop {self.index} conns={len(self._conns)}>"

    # -- the engine's side ---------------------------------------------------

    def add_listener(self, listener: Listener, pick: Callable[[Any], HandOverTarget], exclusive: bool = False,
                     admit: Callable[[], bool] | None = None, holdable: bool = True) -> None:
        """Accept on ``listener`` once running, giving each socket to ``pick(remote)`` -- while ``admit()``;
        ``holdable=False``: not even while ``hold_accepting`` (the metrics page)."""
        acceptor = Acceptor(listener, self._poller, pick, self.call_later, self._opts, exclusive, admit, holdable)
        self._acceptors.append(acceptor)
        self._watchers[acceptor.fd] = acceptor.on_acceptable

    @property
    def accepts(self) -> bool:
        """Whether this loop accepts on any listener that ``hold_accepting`` holds (the metrics page's is not)."""
        return any(acceptor.holdable for acceptor in self._acceptors)

    def hold_accepting(self, held: bool) -> None:
        """On the loop: stop accepting on every listener (True; the backlog keeps what arrives), or go on."""
        for acceptor in self._acceptors:
            acceptor.hold(held)

    def add_datagram(self, listener: DatagramListener) -> None:
        """Serve a bound datagram socket on this loop (udp.py), once running."""
        self._datagrams.append(DatagramSocket(self, listener.sock, self._opts))

    def share_counts(self, counts: Counters, peers: list[Counters]) -> None:
        """Count in ``counts`` (a worker's, in shared memory); ``peers``: every loop's, for max_inbound_total."""
        self._counts = counts
        self._inbound.share(counts, peers)

    def hand_over(self, sock: socket.socket, remote: Any, role: Any = None) -> None:
        """Serve an accepted, configured socket (from the thread that accepted it; only ever one)."""
        self._counts.handed_over += 1
        if self._runner.thread_id == _get_ident():  # a loop that accepts for itself
            self.serve_handed_over(sock, remote, role)
        elif not self._tasks.push_urgent(self.serve_handed_over, sock, remote, role):
            self._counts.handed_over -= 1
            sock.close()

    def serve_handed_over(self, sock: socket.socket, remote: Any, role: Any = None) -> None:
        """On the loop: serve a socket counted in ``handed_over`` -- its listener's ``Role`` says what it begins
        with (a PROXY header, TLS), or its index in the engine's roles when it came over a worker's channel."""
        if self._stopping:
            sock.close()
            self._counts.closed += 1
            return
        self._tally.accepted += 1
        if isinstance(role, int):
            role = self._roles[role] if role >= 0 else None
        if role is None:
            self._open(sock, remote)
            return
        tls = None if role.tls is None else TlsTransport(self, role.tls, True)
        if role.proxy is None:
            self._open(sock, remote, None, tls)
        elif self._proxy_trust.admits(remote):
            self._open(sock, remote, None, ProxyReader(self, role.proxy, tls))
        else:  # a header from anyone could claim any address: refused unread
            self._logger.debug("gnetpy: PROXY header refused: %s is not in proxy_trusted", remote)
            sock.close()
            self._counts.closed += 1
            self._counts.proxy_refused += 1
            self._tally.closes[PROXY_REFUSED] += 1

    def start(self) -> None:
        """Run the loop on a thread of its own; ``wait_ready`` says when it serves."""
        self._running = True
        self._runner.start()

    def wait_ready(self, timeout: float) -> None:
        self._runner.wait_ready(timeout)

    def run(self, on_ready: Callable[[BaseException | None], Any] | None = None) -> None:
        """Serve until shut down, on the calling thread (runloop.py)."""
        self._running = True
        self._runner.run(on_ready)

    def shutdown(self, deadline: float) -> None:
        """Ask the loop to close its connections (flushing them until ``deadline``) and exit."""
        self._tasks.push_urgent(self._begin_shutdown, deadline)

    def join(self, timeout: float | None) -> bool:
        return self._runner.join(timeout)

    def abort(self, timeout: float) -> None:
        """Undo a start that failed elsewhere: stop at once if running, else release what was built."""
        if self._runner.alive():
            self.shutdown(time.monotonic())
            self.join(timeout)
        elif self._runner.thread is None:
            self.release()

    def kill(self) -> bool:
        """A thread cannot be killed: False (the engine waits for it)."""
        return False

    def runs_on(self, thread: threading.Thread) -> bool:
        return self._runner.thread is thread

    def running_callback(self) -> str:
        return self._runner.running_callback()

    def _forget_in_child(self) -> None:
        """In a forked worker: close this loop's descriptors -- the worker's copies; no callbacks (inherit.py)."""
        for c in [*self._conns.values(), *self._closer.conns.values()]:
            c._sock.close()
        for acceptor in self._acceptors:
            acceptor.forget()
        if self._waker.fd >= 0:
            self._poller.close()
            self._waker.close()

    # -- the connections' side: the loop's internal interface (module docstring) ----------

    @property
    def now(self) -> float:
        """The loop's clock as of this iteration (kept only with idle timeouts; 0.0 otherwise)."""
        return self._now

    @property
    def edge_triggered(self) -> bool:
        return self._edge_triggered

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def options(self) -> Options:
        return self._opts

    @property
    def handler(self) -> EventHandler:
        return self._handler  # type: ignore[no-any-return]

    @property
    def logger(self) -> logging.Logger | logging.LoggerAdapter[Any]:
        return self._logger

    @property
    def counts(self) -> Counters:
        return self._counts

    @property
    def tally(self) -> Tally:
        """What connections add their bytes to (tally.py): they keep it, as they keep ``dirty``."""
        return self._tally

    @property
    def dirty(self) -> list[StreamConn]:
        """Where a stream puts itself when a callback writes to it: sent once the callback returns."""
        return self._dirty

    @property
    def traffic(self) -> Callable[[Any], Any]:
        """What a connection's input goes to: ``on_traffic``, or the codec's frame dispatcher."""
        return self._on_traffic

    def in_loop_thread(self) -> bool:
        return self._runner.in_thread()

    def submit(self, urgent: bool, fn: Callable[..., Any], *args: Any) -> bool:
        """Queue ``fn(*args)`` for this loop from any thread; False once the loop has stopped."""
        return self._tasks.push_urgent(fn, *args) if urgent else self._tasks.push(fn, *args)

    def request_stop(self, error: BaseException | None = None) -> None:
        """Stop the engine (``Action.SHUTDOWN``; ``error``: a ``SystemExit`` & co. to re-raise)."""
        self._request_stop(error)

    def watch(self, fd: int, on_event: Callable[[int], Any]) -> None:
        """Serve ``fd``'s readability with ``on_event(events)`` (a worker's channel, a datagram socket)."""
        self._poller.register_listener(fd)
        self._watchers[fd] = on_event

    def watch_writable(self, fd: int, on_event: Callable[[int], Any]) -> None:
        """Serve ``fd``'s writability with ``on_event(events)`` (a connect in progress)."""
        self._poller.register(fd, OUT)
        self._watchers[fd] = on_event

    def unwatch(self, fd: int) -> None:
        self._watchers.pop(fd, None)
        self._poller.unregister(fd)

    def route(self, fd: int, on_event: Callable[[int], Any]) -> None:
        """Send the events of ``fd`` -- registered already, a closing connection's -- to ``on_event``."""
        self._watchers[fd] = on_event

    def set_interest(self, fd: int, events: int) -> None:
        """What a level-triggered descriptor waits for; edge-triggered ones wait for both, always."""
        if not self._edge_triggered:
            self._poller.modify(fd, events)

    def read_again(self, c: StreamConn) -> None:
        """Edge-triggered: ``c`` stopped reading at the iteration's budget; read on at the next one."""
        self._busy_read[c._fd] = c

    def write_again(self, c: StreamConn) -> None:
        """Edge-triggered: flush ``c`` at the next iteration (no new edge will say so)."""
        self._busy_write[c._fd] = c

    # What a callback's outcome means: one policy, for every kind of connection.

    def act(self, c: Conn, action: Any) -> None:
        """What a callback returned, when it is true: ``Action.CLOSE``, ``Action.SHUTDOWN`` -- or a mistake.

        Anything but ``None`` and an ``Action`` (``True``, a delay, a string) is
        the handler's error: ``True == Action.CLOSE`` would otherwise close
        the connection silently.  (False values -- ``0``, ``False``, ``""`` --
        never get here: the loop tests ``if action:`` to stay fast, and treats
        them as ``Action.NONE``.)
        """
        if action.__class__ is not Action:
            self.callback_raised(c, TypeError(f"a callback returned {action!r}; expected None or a gnetpy.Action"))
        elif action == Action.CLOSE:
            c._end(None)
        elif action == Action.SHUTDOWN:
            self._request_stop()

    def callback_raised(self, c: Conn, exc: BaseException) -> None:
        """A callback of ``c`` failed: log it and end ``c`` with ``exc``.  Never raises.

        A stream closes gracefully: what the handler wrote before it failed --
        replies to the requests it did handle -- is delivered first (within
        ``close_timeout``).  Bytes are dropped only where they cannot be
        delivered, and then the peer gets a reset (``finish_close``), never a
        FIN that would look like a clean end.  A ``CodecError`` is the peer's
        doing (a frame too long, a corrupt length): one line at INFO, no
        traceback -- a scanner must not flood the log.
        """
        if isinstance(exc, CodecError):
            self._logger.info("gnetpy: %r sent a bad frame: %s; closing it", c, exc)
        elif isinstance(exc, Exception):
            self._logger.error("gnetpy: a callback raised for %r; closing it", c, exc_info=exc)
        else:
            self.fatal(exc, f"a callback of {c!r}")
        c._end(exc)

    def user_raised(self, exc: BaseException, what: str, then: str = "") -> None:
        """User code outside a connection's callbacks failed (on_close, a timer, on_tick): log it."""
        if isinstance(exc, Exception):
            self._logger.error("gnetpy: %s raised%s", what, then, exc_info=exc)
        else:
            self.fatal(exc, what)

    def fatal(self, exc: BaseException, what: str) -> None:
        """``SystemExit``, ``KeyboardInterrupt`` & co. in user code: stop the engine, and let run() re-raise it."""
        self._logger.critical("gnetpy: %s raised %s; stopping the engine", what, type(exc).__name__, exc_info=exc)
        self._request_stop(exc)

    def run_callback(self, callback: Callback, c: Conn, err: BaseException | None) -> None:
        """A per-operation callback (``async_write``'s, ``close``'s...) with its outcome handled."""
        if callback is None:
            return
        try:
            callback(c, err)
        except BaseException as exc:
            if c._state == CLOSED:
                self.user_raised(exc, f"callback {callback!r} for closed {c!r}")
            else:
                self.callback_raised(c, exc)

    def open_conn(self, c: Conn) -> None:
        """``on_open(c)`` and what it returned."""
        try:
            action = self._handler.on_open(c)
        except BaseException as exc:
            self.callback_raised(c, exc)
            return
        if action:
            self.act(c, action)

    def closed_conn(self, c: Conn, err: BaseException | None) -> None:
        """``c`` is closed: ``on_close(c, err)`` -- exactly once -- then its close callbacks."""
        action = None
        try:
            action = self._handler.on_close(c, err)
        except BaseException as exc:
            self.user_raised(exc, f"on_close of {c!r}")
        callbacks, c._close_callbacks = c._close_callbacks, None
        for callback in callbacks or ():
            self.run_callback(callback, c, None)
        if action:
            if action.__class__ is not Action:
                self._logger.error("gnetpy: on_close of %r returned %r; expected None or a gnetpy.Action", c, action)
            elif action == Action.SHUTDOWN:
                self._request_stop()

    def deliver(self, c: StreamConn, data: bytes) -> None:
        """``on_traffic`` over what ``c`` has buffered plus ``data`` (empty for a wake-up), then its action."""
        c._receive(data)
        try:
            action = self._on_traffic(c)
        except BaseException as exc:
            self.callback_raised(c, exc)
            return
        if self._keep_inbound(c, c._settle() if c._src is not NOTHING else 0):
            return
        if action:
            self.act(c, action)

    # The write path's hooks.

    def new_outbound(self) -> OutboundBuffer:
        return OutboundBuffer(self._write_chunk)

    def queued(self, c: StreamConn, was_empty: bool) -> None:
        """``c`` has just queued bytes: flush them when the socket takes more; backpressure past the mark."""
        if was_empty:
            if self._edge_triggered:
                # Registered for writability once and for all; an edge only comes
                # after EAGAIN, so make sure the next iteration tries.
                self._busy_write[c._fd] = c
            elif c._state == OPEN:
                self._poller.modify(c._fd, OUT if c._paused else IN | OUT)
        if c._out.nbytes > self._high_water and not c._paused & PAUSED_BY_QUEUE:
            self._tally.backpressure_pauses += 1
            self.pause_reading(c, PAUSED_BY_QUEUE)  # see StreamConn.pause_reading

    def gathered_seen(self, c: StreamConn, unsent: int) -> None:
        """A callback read ``c.outbound_buffered`` with bytes gathered: past the high mark, it is
        backpressure like a queue past it -- reading paused, and ``on_drained`` once under the low
        mark -- even when the kernel takes it all at once (examples/proxy.py pauses the other side
        on that figure and resumes it from ``on_drained``: without one it would wait for ever)."""
        if unsent > self._high_water and not c._paused & PAUSED_BY_QUEUE and self._runner.in_thread():
            self.pause_reading(c, PAUSED_BY_QUEUE)
            self._tally.backpressure_pauses += 1
            self._timers.schedule(TimerHandle(0.0, partial(self._owed_drained, c)))  # after the send

    def _owed_drained(self, c: StreamConn) -> None:
        if c._state != OPEN or not c._paused & PAUSED_BY_QUEUE:
            return  # closed meanwhile, or drained through the queue already
        if c._gather is not None:  # written to again, not sent yet
            self._timers.schedule(TimerHandle(0.0, partial(self._owed_drained, c)))
        elif not c._out or c._out.nbytes <= self._low_water:
            self._drained(c)
        # Otherwise the rest is queued: flush_conn calls on_drained under the low mark.

    def flush_conn(self, c: StreamConn) -> None:
        """One ``writev`` of ``c``'s queue now; what follows from it (drained, flushed, failed)."""
        out = c._out
        fd = c._fd
        self._busy_write.pop(fd, None)
        try:
            self._tally.bytes_sent += out.flush_to(fd, self._opts.edge_triggered_chunk if self._edge_triggered else 0)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.close_conn(c, exc, False)
            return
        if c._paused & PAUSED_BY_QUEUE and out.nbytes <= self._low_water:
            self._drained(c)
        if out:
            if self._edge_triggered:
                self._busy_write[fd] = c
            return
        if c._state == FLUSHING:
            self._closer.flushed(c)
        elif not self._edge_triggered and c._state == OPEN:
            self._poller.modify(fd, 0 if c._paused else IN)

    def doom(self, c: StreamConn) -> None:
        """A write of ``c`` failed inside a callback (``c._err``): close it once the callback returns."""
        self._doomed.append(c)

    def reserve_async(self, c: Conn, size: int) -> None:
        self._async_writes.reserve(c, size)

    def release_async(self, c: Conn, size: int) -> None:
        self._async_writes.release(c, size)

    # Reading paused and resumed (PAUSED_BY_* reasons: conn.py).

    def pause_reading(self, c: StreamConn, reason: int) -> None:
        was = c._paused
        c._paused = was | reason
        if not was and c._state == OPEN:
            if self._edge_triggered:
                self._busy_read.pop(c._fd, None)  # registered once for IN|OUT: edges are ignored now
            else:
                self._poller.modify(c._fd, OUT if c._out else 0)

    def resume_reading(self, c: StreamConn, reason: int) -> None:
        if not c._paused & reason:
            return
        c._paused &= ~reason
        if not c._paused and c._state == OPEN:
            if self._edge_triggered:
                self._busy_read[c._fd] = c  # an edge may have come and gone meanwhile: read now
            else:
                self._poller.modify(c._fd, IN | OUT if c._out else IN)

    # TLS: the handshake, driven by the connection's TlsTransport (tls.py).

    def handshake_started(self, c: StreamConn) -> None:
        self._handshakes.add(c._fd)

    def handshake_done(self, c: StreamConn) -> None:
        """The handshake completed: now the connection is open, and the handler hears of it."""
        self._handshakes.discard(c._fd)
        check_transition(c._state, OPEN)
        c._state = OPEN
        self._tally.tls_handshakes += 1
        self.open_conn(c)

    def handshake_failed(self, c: StreamConn, exc: BaseException) -> None:
        """Never reached the handler: DEBUG (a scanner must not flood the log), counted, closed unseen."""
        self._logger.debug("gnetpy: TLS handshake with %s failed: %s", c._remote, exc)
        self._counts.tls_failed += 1
        self.close_conn(c, exc, False)

    # PROXY headers, read by the connection's ProxyReader (proxystage.py).

    def proxy_started(self, c: StreamConn) -> None:
        self._proxy_headers.add(c._fd)

    def proxy_done(self, c: StreamConn, info: Any, rest: bytes, tls: Any) -> None:
        """The header is read: the addresses it gives, then TLS or the handler -- and ``rest``, what followed it."""
        self._proxy_headers.discard(c._fd)
        c._proxy = info
        if info.command == "PROXY" and info.source is not None:
            c._remote = info.source
            c._local = info.destination
        c._transport = tls
        if tls is not None:
            tls.begin(rest)  # the TLS handshake, starting with what came after the header
        else:
            check_transition(c._state, OPEN)
            c._state = OPEN
            self.open_conn(c)
            if rest and c._state == OPEN:
                self.deliver(c, rest)
        if self._edge_triggered and (c._state == OPEN or c._state == HANDSHAKING):
            # The reader stopped at the header: what followed it in the socket (bytes, an end
            # of file) raises no new edge.  Read on at the next iteration, as after a budget.
            self._busy_read[c._fd] = c

    def proxy_failed(self, c: StreamConn, exc: BaseException) -> None:
        """Never reached the handler: DEBUG (scanners), counted, closed unseen."""
        self._logger.debug("gnetpy: PROXY header from %s refused: %s", c._remote, exc)
        self._counts.proxy_refused += 1
        self.close_conn(c, exc, False)

    def _proxy_timed_out(self, fd: int) -> None:
        c = self._conns.get(fd)
        if c is not None and c._state == HANDSHAKING and isinstance(c._transport, ProxyReader):
            self.proxy_failed(c, TimeoutError(f"no whole PROXY header in {self._opts.proxy_header_timeout:g}s "
                                              f"(proxy_header_timeout)"))

    def _handshake_timed_out(self, fd: int) -> None:
        c = self._conns.get(fd)
        if c is not None and c._state == HANDSHAKING:
            self.handshake_failed(c, TimeoutError(f"TLS handshake not done in {self._opts.tls_handshake_timeout:g}s "
                                                  f"(tls_handshake_timeout)"))

    # Dials in progress (dial.py): the loop abandons them when it stops.

    def add_dial(self, connect: Connect) -> None:
        self._dials.add(connect)

    def drop_dial(self, connect: Connect) -> None:
        self._dials.discard(connect)

    # -- the reactor ---------------------------------------------------------

    def begin_serving(self) -> None:
        """On the loop's thread, before the first poll: listeners, datagram sockets, the ticker."""
        for acceptor in self._acceptors:
            acceptor.start()
        for datagrams in self._datagrams:
            datagrams.start()
        if self._opts.ticker and self.index == 0:
            self._ticker = self.call_later(0, self._tick)

    def _poll_loop(self) -> None:
        # Hot path: see the module docstring.  Locals only; the common event
        # -- a connection that is readable and nothing else -- is matched with
        # one int comparison (specialised by CPython, unlike ``&``) and served
        # inline; this block is the inlined twin of ``_read_once``.
        poll = self._poller.poll
        conns = self._conns
        # on_traffic as a plain function and the object it is a method of: a bound method
        # called from compiled code costs one call more per message (_unbound says more).
        on_traffic, traffic_self = _unbound(self._on_traffic)
        read = syscalls.read  # non-blocking sockets: no GIL hand-off where _sysio is built
        write = syscalls.write
        read_size = self._read_size
        small_read = self._small_read
        nothing = NOTHING
        on_other_fd = self._on_other_fd
        on_event = self._on_event
        deliver = self.deliver
        on_raise = self.callback_raised
        on_action = self.act
        keep_inbound = self._keep_inbound
        close = self.close_conn
        timers = self._timers
        doomed = self._doomed
        dirty = self._dirty
        busy_read = self._busy_read
        busy_write = self._busy_write
        frames = self._frames
        frames_waiting: dict[int, StreamConn] = frames.waiting if frames is not None else {}
        frames_deferred: dict[int, StreamConn] = frames.deferred if frames is not None else {}
        monotonic = time.monotonic
        # Bytes in and out, counted here for the inline case: plain integer fields of a
        # native object, no lock (tally.py says why; the cost: docs/architecture.md §10).
        tally = self._tally
        readable_only = self._inline_events
        idle = self._idle is not None
        now = 0.0
        maxevents = 64

        while self._running:
            if busy_read or busy_write or frames_waiting:
                timeout = 0.0
            elif timers:
                timeout = timers.timeout(monotonic())
            else:
                timeout = -1.0
            # Any: compiled, the fd stays the int object epoll returned -- declared int it
            # would be unboxed here and boxed again for the conns lookup below.
            events: list[tuple[Any, int]] = poll(timeout, maxevents)
            if idle:
                now = self._now = monotonic()
            for fd, ev in events:
                if dirty:  # what the last callback wrote goes before the loop goes on
                    self._send_dirty()
                try:
                    c = conns[fd]
                except KeyError:
                    c = None
                if c is None:  # outside the except block: its errors carry no KeyError context
                    on_other_fd(fd, ev)
                    continue
                if ev != readable_only or c._transport is not None:  # TLS: ciphertext, never the plain path
                    on_event(c, fd, ev)
                    continue
                size = c._read_size
                try:
                    data: bytes = read(fd, c._read_arg)  # _read_size, boxed once (buffer.py)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as exc:
                    close(c, exc, False)
                    continue
                if data:
                    c._seen = now
                    # len, not a local alias: compiled, len() of bytes is a field read, and an alias
                    # would call the builtin as an object.
                    got = len(data)
                    tally.bytes_received += got
                    if got == size if size == small_read else got <= small_read:
                        c._adapt_read_size(got, small_read, read_size)
                    if c._src is nothing:
                        # Inlined deliver() for the common case: the buffer's own
                        # _receive with nothing left over, then its _settle.
                        c._src = data
                        c._serving = True  # its writes: sent right below, not via the dirty list
                        try:
                            action = on_traffic(traffic_self, c)
                        except BaseException as exc:
                            c._serving = False
                            on_raise(c, exc)
                            continue
                        c._serving = False
                        gather = c._gather
                        if gather is not None:
                            # Inlined StreamConn._send_gathered for one piece (what it wrote):
                            # its twin, as the read above is _receive's.
                            c._gather = None
                            if type(gather) is bytes:
                                try:
                                    sent = write(fd, gather)
                                    tally.bytes_sent += sent
                                    if sent != len(gather):
                                        c._queue_rest(gather, sent)
                                except (BlockingIOError, InterruptedError):
                                    c._queue_rest(gather, 0)
                                except OSError as exc:
                                    c._write_failed(exc)
                            else:
                                c._writev_now(gather)
                        if c._src is not nothing and keep_inbound(c, c._settle()):
                            continue
                        if action:
                            on_action(c, action)
                    else:
                        deliver(c, data)
                else:
                    close(c, EOFError("connection closed by the peer"), True)
            if dirty:
                self._send_dirty()
            if len(events) == maxevents and maxevents < _MAX_EVENTS_CAP:
                maxevents *= 2
            if doomed:
                self._close_doomed()
            if busy_read or busy_write:
                self._resume_busy()
            if frames_waiting or frames_deferred:
                self._frames_turn()
            if timers and timers[0][0] <= monotonic():
                self._run_timers()
            if dirty:
                self._send_dirty()

    def _send_dirty(self) -> None:
        """Send what callbacks wrote: one write or writev per connection (conn.py, "Writing")."""
        dirty = self._dirty
        for c in dirty:  # sending runs no user code: nothing is added meanwhile
            c._send_gathered()
        dirty.clear()

    def _on_other_fd(self, fd: int, ev: int) -> None:
        watcher = self._watchers.get(fd)
        if watcher is not None:
            watcher(ev)
        # Otherwise: an event for a descriptor closed earlier in this batch.

    def _on_wake_up(self, ev: int) -> None:
        self._tasks.run()

    def _on_event(self, c: StreamConn, fd: int, ev: int) -> None:
        """Any event of an open connection but "readable, nothing else" in level-triggered mode."""
        if c._transport is not None:
            if self._edge_triggered:
                self._busy_read.pop(fd, None)
            c._transport.on_event(ev)
            return
        # Paused: no reading -- but an error or hang-up is still read (and closes it).
        if ev & READ_EVENTS and (not c._paused or ev & (ERR | HUP)):
            if self._edge_triggered:
                self._read_edge(c)
            else:
                self._read_once(c, fd)
            if c._state != OPEN:
                return
        if ev & OUT and c._out:
            self.flush_conn(c)

    def _frames_turn(self) -> None:
        if self._frames is not None:
            self._frames.turn()

    # -- read path (beyond the inline case) ----------------------------------

    def _read_once(self, c: StreamConn, fd: int) -> int:
        """One read and its delivery (the loop inlines the same steps); returns the bytes read.

        0 means nothing was read: the socket had nothing, or the connection closed.
        """
        size = c._read_size
        try:
            data = syscalls.read(fd, size)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            self.close_conn(c, exc, False)
            return 0
        if not data:
            self.close_conn(c, EOFError("connection closed by the peer"), True)
            return 0
        self._tally.bytes_received += len(data)
        c._seen = self._now
        small = self._small_read
        if len(data) == size if size == small else len(data) <= small:
            c._adapt_read_size(len(data), small, self._read_size)
        self.deliver(c, data)
        return len(data)

    def _read_edge(self, c: StreamConn) -> None:
        """Edge-triggered: read until the socket is drained, within the per-iteration budget."""
        fd = c._fd
        self._busy_read.pop(fd, None)
        if c._transport is not None:
            c._transport.on_event(IN)
            return
        budget = self._opts.edge_triggered_chunk
        while True:
            size = c._read_size
            got = self._read_once(c, fd)
            if not got or c._state != OPEN or c._err is not None or c._paused:
                return
            if got < size:
                return  # drained for now: more data will raise a new edge
            budget -= got
            if budget <= 0:
                self._busy_read[fd] = c  # let the other connections have their turn
                return

    def _resume_busy(self) -> None:
        for c in list(self._busy_read.values()):
            # HANDSHAKING: a TLS handshake that stopped at its budget, or just after a PROXY header.
            if (c._state == OPEN or c._state == HANDSHAKING) and not c._paused:
                self._read_edge(c)
            else:
                self._busy_read.pop(c._fd, None)
        for c in list(self._busy_write.values()):
            if c._state != CLOSED and c._out:
                self.flush_conn(c)
            else:
                self._busy_write.pop(c._fd, None)

    def _keep_inbound(self, c: StreamConn, kept: int) -> bool:
        """After a callback ``c`` keeps ``kept`` unconsumed bytes: within the bounds (limits.py)?  True when
        ``c`` was closed for it.  Only connections that leave bytes get here."""
        why = self._inbound.keep(c, kept)
        if why is None:
            return False
        self._inbound.release(c)
        self.close_conn(c, LimitExceededError(why), True)
        return True

    # -- a connection's life: open ------------------------------------------------

    def enroll_conn(self, sock: socket.socket, context: Any = None, transport: TlsTransport | None = None,
                    preamble: bytes = b"") -> StreamConn:
        """On the loop: adopt a connected socket (``enroll``; a dial's, with its TLS transport and the
        PROXY header it sends first, ``preamble``)."""
        if self._stopping:
            raise EngineStoppedError(f"event loop {self.index} is stopping")
        configure_accepted(sock, self._opts, sock.family in _TCP_FAMILIES)
        try:
            remote = format_addr(sock.getpeername())
        except OSError:
            remote = None
        self._counts.opened += 1
        c = self._open(sock, remote, context, transport, preamble)
        if c is None:
            raise ConnClosedError(f"enroll: cannot register {sock!r}")
        return c

    def _open(self, sock: socket.socket, remote: Any, context: Any = None, transport: Any = None,
              preamble: bytes = b"") -> StreamConn | None:
        """A connection, registered; ``transport``: a TlsTransport, or a ProxyReader (with the TlsTransport
        it hands over to, if any): then on_open waits for it.  ``preamble``: bytes sent before anything."""
        c: StreamConn
        if transport is None:
            c = StreamConn(self, sock, remote, self._small_read)
        else:
            tls = transport if isinstance(transport, TlsTransport) else transport.then
            c = StreamConn(self, sock, remote, self._small_read) if tls is None else TlsConn(
                self, sock, remote, self._small_read)
            c._transport = transport
            c._state = HANDSHAKING
            transport.attach(c)
        c.context = context
        try:
            self._poller.register(c._fd, IN)
        except (OSError, ValueError):
            self._logger.exception("gnetpy: cannot register %r", c)
            sock.close()
            self._counts.closed += 1
            self._tally.closes[ERROR] += 1
            return None
        self._conns[c._fd] = c
        if self._idle is not None:
            c._seen = self._now = time.monotonic()
            self._idle.add(c, c._seen)
        if preamble:
            c._write_now(preamble)  # a dial's PROXY header: before the TLS handshake and the handler
        if transport is not None:
            transport.start()  # on_open once the PROXY header is read, and the TLS handshake done
        else:
            self.open_conn(c)
        return c

    # -- a connection's life: close (state.py has the diagram) ----------------------

    def close_conn(self, c: StreamConn, err: BaseException | None, graceful: bool) -> None:
        """Every close comes here; ``graceful`` first delivers what was written (and lingers, for TCP)."""
        state = c._state
        if graceful and state == OPEN:
            c._send_gathered()  # what the callback wrote before closing goes first
        if state == OPEN and c._err is not None:  # a write failed: nothing more can be delivered
            err, graceful = err or c._err, False
        if graceful and state == OPEN and c._transport is not None:
            c._transport.close_notify()  # the peer reads an orderly end of the TLS session first
        if graceful and state == OPEN and c._out:
            try:
                self._tally.bytes_sent += c._out.flush_to(c._fd)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as exc:
                err, graceful = exc, False
        target = close_target(state, graceful, bool(c._out), graceful and lingers(err))
        if target == CLOSED:
            self.finish_close(c, err)
        elif target is not None:
            del self._conns[c._fd]
            self._inbound.release(c)
            self._busy_read.pop(c._fd, None)
            self._closer.begin(c, target, err)

    def finish_close(self, c: StreamConn, err: BaseException | None) -> None:
        """The end of every close: the socket closed, ``on_close`` run -- exactly once."""
        # check_transition(c._state, CLOSED), specialised: every state but
        # CLOSED may close, and this runs once per connection.
        if c._state == CLOSED:
            raise TransitionError(f"connection state CLOSED -> CLOSED is not a transition ({c!r})")
        fd = c._fd
        opened = c._state != HANDSHAKING  # a handshake that failed never reached the handler
        c._state = CLOSED
        if c._transport is not None:
            self._handshakes.discard(fd)
            self._proxy_headers.discard(fd)
        if self._conns.pop(fd, None) is None:
            self._closer.forget(fd)
            del self._watchers[fd]
        else:
            self._inbound.release(c)
        if self._edge_triggered:
            self._busy_read.pop(fd, None)
            self._busy_write.pop(fd, None)
        self._poller.unregister(fd)
        c._fd = -1
        if (c._out or c._gather is not None) and opened:
            # Written bytes are dropped (a failed write, close_timeout, the stop deadline): end with
            # a reset, so the peer cannot take what it got for everything (a FIN would say so).
            reset_on_close(c._sock)
        c._sock.close()
        c._gather = None
        if c._out:
            c._out.clear_all()
        self._counts.closed += 1
        self._tally.closes[close_cause(err, opened, isinstance(c._transport, ProxyReader))] += 1
        if not opened:
            c._transport.never_opened(err)  # a dial waiting for the handshake hears why
            return
        self.closed_conn(c, err)
        if self._stopping and not self._conns and not self._closer.conns:
            self._running = False

    def _close_doomed(self) -> None:
        doomed = self._doomed[:]
        self._doomed.clear()
        for c in doomed:
            self.close_conn(c, c._err, False)

    # -- flow control and the deadlines of open connections -------------------------

    def _drained(self, c: StreamConn) -> None:
        """``c``'s queue fell under the low-water mark after passing the high one."""
        self.resume_reading(c, PAUSED_BY_QUEUE)
        try:
            action = self._handler.on_drained(c)
        except BaseException as exc:
            self.callback_raised(c, exc)
            return
        if action:
            self.act(c, action)

    def _idle_expired(self, c: Conn) -> None:
        """Nothing was received from ``c`` for idle_timeout (deadlines.py)."""
        assert isinstance(c, StreamConn)
        self.close_conn(c, IdleTimeoutError(f"idle for {self._opts.idle_timeout:g}s (idle_timeout)"), True)

    # -- stopping -----------------------------------------------------------------------

    def _begin_shutdown(self, deadline: float) -> None:
        """Close every connection gracefully, bounded by ``deadline``; again with an earlier one: bring it forward."""
        if self._stopping:
            if self._stop_timer is not None and deadline < self._stop_timer.when:
                self._stop_timer.cancel()
                self._stop_timer = self.call_later(max(0.0, deadline - time.monotonic()), self._force_close)
            return
        self._stopping = True
        for acceptor in self._acceptors:
            acceptor.stop()
        if self._ticker is not None:
            self._ticker.cancel()
        if self._idle is not None:
            self._idle.stop()
        for datagrams in self._datagrams:
            datagrams.close()  # its sessions end now: UDP has nothing to flush or linger on
        self._datagrams.clear()
        for c in list(self._conns.values()):
            self.close_conn(c, None, True)
        if self._closer.conns:
            self._stop_timer = self.call_later(max(0.0, deadline - time.monotonic()), self._force_close)
        elif not self._conns:
            self._running = False

    def _force_close(self) -> None:
        """The stop deadline: drop what is still closing (one log line for all of them)."""
        closing = list(self._closer.conns.values())
        unsent = sum(c.outbound_buffered for c in closing)
        if closing:
            self._logger.warning("gnetpy: event loop %d: stop deadline reached; %d connection(s) dropped with %d "
                                 "bytes unsent", self.index, len(closing), unsent)
        for c in closing:
            self.close_conn(c, CloseTimeoutError(f"engine stop deadline reached with {c.outbound_buffered} bytes "
                                                 f"unsent"), False)

    def release(self) -> None:
        """Close everything this loop holds; its last act (also what undoes a boot that failed)."""
        self._stopping = True
        for connect in list(self._dials):
            connect.abandon()
        for c in list(self._conns.values()) + list(self._closer.conns.values()):
            self.close_conn(c, EngineStoppedError(f"event loop {self.index} stopped"), False)
        for fn, args in self._tasks.close():
            self._tasks.call((fn, args))  # they see closed connections and report it
        for acceptor in self._acceptors:
            acceptor.stop()
        for datagrams in self._datagrams:
            datagrams.close()
        self._datagrams.clear()
        self._closer.stop()
        self._timers.clear()
        if self._waker.fd >= 0:
            self._poller.close()
            self._waker.close()
        self._running = False

    # -- timers and the ticker -------------------------------------------------

    def _call_user(self, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except BaseException as exc:
            self.user_raised(exc, f"{fn!r} on event loop {self.index}")

    def _run_timers(self) -> None:
        for handle in self._timers.pop_due(time.monotonic()):
            self._call_user(handle.fn)

    def _tick(self) -> None:
        if self._stopping:
            return
        delay, action = self._tick_delay, Action.NONE
        try:
            delay, action = parse_tick(self._handler.on_tick(), delay)
        except BaseException as exc:
            self.user_raised(exc, "on_tick", f"; next tick in {delay:.3f}s")
        if action == Action.SHUTDOWN:
            self._request_stop()
            return
        self._tick_delay = delay
        self._ticker = self.call_later(delay, self._tick)


def _unbound(bound: Callable[[Any], Any]) -> tuple[Callable[[Any, Any], Any], Any]:
    """``(function, self)`` such that ``function(self, c)`` is ``bound(c)``.

    A handler's ``on_traffic`` is a bound method: calling one from compiled code goes
    through the method object (``method_vectorcall``) before it reaches the function;
    calling the function with ``self`` goes straight there.  Anything else -- the codec's
    dispatcher (a compiled method), a ``functools.partial`` assigned on the instance --
    is called through ``operator.call``, one C call more.
    """
    function = getattr(bound, "__func__", None)
    owner = getattr(bound, "__self__", None)
    if isinstance(function, types.FunctionType) and owner is not None:
        return function, owner
    return operator.call, bound
