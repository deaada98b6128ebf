"""EventLoop: one reactor -- poll, dispatch, the read and write paths, tasks, timers.

Each loop owns its connections outright: every callback of a connection
runs on its loop, so handlers need no locks for per-connection state.  Other
threads reach a loop only through its task queue (``async_write``, ``wake``,
``close``, ``hand_over`` of accepted sockets, shutdown), which wakes the
poller.  A loop runs on a thread of its own (``start``) or, in a worker
process, on the thread that calls ``run``.

The dispatch loop (``_poll_loop``) is the hot path of the whole library and
is written for speed rather than elegance: everything it touches is bound to
a local first, connections are found through one dict keyed by descriptor,
the common case -- a readable connection with nothing left over from before
-- is handled inline without a method call, and nothing is allocated per
event besides what ``poll`` returns.  Everything else leaves the inline path
through one method call: other kinds of descriptor (the wake-up descriptor,
listeners, closing connections) through ``_watchers``, a dict from
descriptor to the method that serves it; other events on open connections
through ``_on_event``.

The other parts of ``EventLoop`` are base classes, one concern each (see
loopbase.py): a connection's life -- open, the handler's actions and
errors, close -- in lifecycle.py, the graceful close in closing.py, and
running and stopping the loop itself in runloop.py.
"""

from __future__ import annotations

import socket
import threading
import time
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Final

from . import inherit, syscalls, tls
from .acceptor import Acceptor
from .buffer import NOTHING, SMALL_READ
from .closing import GracefulClose
from .conn import PAUSED_BY_QUEUE
from .counters import Counters, LocalCounters, count
from .deadlines import FifoDeadlines, IdleWheel
from .dial import Connect, DialCallback, start_dial
from .errors import EngineStoppedError
from .lifecycle import ConnLifecycle
from .poller import ERR, HUP, IN, OUT, READ_EVENTS, new_poller
from .runloop import LoopRunner
from .state import CLOSED, FLUSHING, OPEN
from .taskqueue import TaskQueue
from .timers import TimerHandle, TimerHeap, is_delay
from .udp import DatagramListener, DatagramSocket
from .waker import Waker

if TYPE_CHECKING:
    from .acceptor import HandOverTarget
    from .conn import Conn
    from .handler import EventHandler
    from .listener import Listener
    from .options import Options

_get_ident = threading.get_ident
# epoll's event list starts small (Python allocates it on every call) and
# doubles, up to this, whenever a poll comes back full.
_MAX_EVENTS_CAP: Final = 8192


class EventLoop(LoopRunner, GracefulClose, ConnLifecycle):
    """A reactor.  Public: ``index``, ``execute``, ``call_later``, ``enroll``, ``count_connections``.

    The engine's side (``add_listener``, ``hand_over``, ``start``, ``run``,
    ``shutdown``, ``join``, ``release``, ``runs_on``) is what a worker process
    implements too (see engine.LoopHandle).
    """

    def __init__(self, index: int, opts: Options, handler: EventHandler,
                 request_stop: Callable[..., None]) -> None:
        self.index = index
        self._opts = opts
        self._logger = opts.log
        self._handler = handler
        # Ask whoever runs the engine to stop it: request_stop() for
        # Action.SHUTDOWN, request_stop(exc) for a SystemExit in a callback.
        self._request_stop = request_stop
        self._poller = new_poller(opts.poller, opts.edge_triggered)
        self._edge_triggered = self._poller.edge_triggered
        try:
            self._waker = Waker()
        except BaseException:  # out of descriptors, say: leave nothing open behind
            self._poller.close()
            raise
        inherit.register(self)
        self._tasks = TaskQueue(self._waker, self._logger)
        self._read_size = opts.read_buffer_cap
        self._small_read = min(SMALL_READ, opts.read_buffer_cap)
        self._write_chunk = opts.write_buffer_cap
        self._high_water, self._low_water = opts.water_marks
        self._max_inbound = opts.max_inbound_buffered
        self._max_inbound_total = opts.max_inbound_total
        # Connections that keep unconsumed bytes, and how many (lifecycle._keep_inbound); the
        # engine's total is the sum of these loops' counters (the engine sets the list).
        self._holding: dict[Conn, int] = {}
        self._inbound_peers: list[Counters] = []
        # With the codec option: connections whose frame budget ran out in this iteration, and
        # those that wait for their next budget (lifecycle._frames_turn).
        self._frame_budget = opts.frame_budget
        self._frame_budget_bytes = opts.frame_budget_bytes
        self._frames_deferred: dict[int, Conn] = {}
        self._frames_waiting: dict[int, Conn] = {}
        # Bytes async_write has accepted for a connection and the loop not yet
        # written (only connections with some are here), under its own lock:
        # the writers are other threads.
        self._async_pending: dict[Conn, int] = {}
        self._async_lock = threading.Lock()
        self._dials: set[Connect] = set()  # connects in progress (dial.py)
        self._idle = (IdleWheel(opts.idle_timeout, self.call_later, self._idle_expired)
                      if opts.idle_timeout else None)
        # What the reactor calls with inbound data: the handler's on_traffic,
        # or, with the codec option, the frame dispatcher that calls on_frame.
        self._on_traffic = handler.on_traffic if opts.codec is None else self._dispatch_frames
        self._now = 0.0  # the loop's clock, read once per poll iteration when idle timeouts are on
        # The one event mask served inline by _poll_loop ("readable, nothing
        # else"); -1 serves none.  Edge-triggered events all go through
        # _on_event (read until drained).  Tests set -1 to compare the inline
        # block with the method path it mirrors.
        self._inline_events = -1 if self._edge_triggered else IN
        self._conns: dict[int, Conn] = {}  # open connections: the hot path's dict
        self._closing: dict[int, Conn] = {}  # FLUSHING and LINGERING connections
        self._close_timeouts = FifoDeadlines(opts.close_timeout, self.call_later, self._close_timed_out)
        # TLS: handshakes in progress (by descriptor), under tls_handshake_timeout; and
        # the contexts of the engine's TLS addresses (a worker gets an index with a socket).
        self._handshakes = FifoDeadlines(opts.tls_handshake_timeout, self.call_later,
                                         partial(tls.handshake_timed_out, self))
        self._tls_contexts: list[Any] = []
        self._stop_timer: TimerHandle | None = None  # the stop deadline, once stopping
        self._watchers: dict[int, Callable[[int], Any]] = {self._waker.fd: self._on_wake_up}
        self._poller.register_listener(self._waker.fd)
        self._acceptors: list[Acceptor] = []
        self._datagrams: list[DatagramSocket] = []
        self._doomed: list[Conn] = []
        # Edge-triggered only: connections whose read or write stopped at the
        # per-iteration byte budget, resumed on the next iteration.
        self._busy_read: dict[int, Conn] = {}
        self._busy_write: dict[int, Conn] = {}
        self._timers = TimerHeap()
        self._ticker: TimerHandle | None = None
        self._tick_delay = 1.0  # what on_tick returned last; its None means "the same again"
        self._running = False
        self._stopping = False
        self._loop_thread: threading.Thread | None = None
        self._thread_id: int | None = None
        self._counts: Counters = LocalCounters()  # a worker replaces them with shared ones
        self._inbound_peers = [self._counts]

    # -- public API ----------------------------------------------------------

    def count_connections(self) -> int:
        """Connections on this loop, including accepted ones still being handed over."""
        return count(self._counts)

    def count_tls_failures(self) -> int:
        """TLS handshakes on this loop that failed (never reached the handler)."""
        return self._counts.tls_failed

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
        if self._in_loop_thread():
            self._timers.schedule(handle)
        elif not self._tasks.push_urgent(self._timers.schedule, handle):
            raise EngineStoppedError(f"event loop {self.index} has stopped")
        return handle

    def dial(self, addr: str, callback: DialCallback, timeout: float | None = None, *, context: Any = None,
             ssl_context: Any = None, server_hostname: str | None = None) -> None:
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
        """
        start_dial(self, addr, callback, timeout, context, ssl_context, server_hostname)

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
        return result[0]  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"<EventLoop {self.index} conns={len(self._conns)}>"

    # -- the engine's side ---------------------------------------------------

    def add_listener(self, listener: Listener, pick: Callable[[Any], HandOverTarget], exclusive: bool = False,
                     admit: Callable[[], bool] | None = None) -> None:
        """Accept on ``listener`` once running, giving each socket to ``pick(remote)`` -- while ``admit()``."""
        acceptor = Acceptor(listener, self._poller, pick, self.call_later, self._opts, exclusive, admit)
        self._acceptors.append(acceptor)
        self._watchers[acceptor.fd] = acceptor.on_acceptable

    def hold_accepting(self, held: bool) -> None:
        """On the loop: stop accepting on every listener (True; the backlog keeps what arrives), or go on."""
        for acceptor in self._acceptors:
            acceptor.hold(held)

    def add_datagram(self, listener: DatagramListener) -> None:
        """Serve a bound datagram socket on this loop (udp.py), once running."""
        self._datagrams.append(DatagramSocket(self, listener.sock, self._opts))

    def _watch(self, fd: int, on_event: Callable[[int], Any]) -> None:
        """Serve ``fd``'s readiness with ``on_event(events)`` (on the loop; a worker's channel, say)."""
        self._poller.register_listener(fd)
        self._watchers[fd] = on_event

    def _unwatch(self, fd: int) -> None:
        self._watchers.pop(fd, None)
        self._poller.unregister(fd)

    def hand_over(self, sock: socket.socket, remote: Any, ssl_context: Any = None) -> None:
        """Serve an accepted, configured socket (from the thread that accepted it; only ever one)."""
        self._counts.handed_over += 1
        if self._thread_id == _get_ident():  # a loop that accepts for itself
            self._open_handed_over(sock, remote, ssl_context)
        elif not self._tasks.push_urgent(self._open_handed_over, sock, remote, ssl_context):
            self._counts.handed_over -= 1
            sock.close()

    # -- the reactor ---------------------------------------------------------

    def _poll_loop(self) -> None:
        # Hot path: see the module docstring.  Locals only; the common event
        # -- a connection that is readable and nothing else -- is matched with
        # one int comparison (specialised by CPython, unlike ``&``) and served
        # inline; this block is the inlined twin of ``_read_once``.
        poll = self._poller.poll
        conns = self._conns
        read = syscalls.read  # non-blocking sockets: no GIL hand-off where _sysio is built
        read_size = self._read_size
        small_read = self._small_read
        nothing = NOTHING
        on_traffic = self._on_traffic
        on_other_fd = self._on_other_fd
        on_event = self._on_event
        deliver = self._deliver
        on_raise = self._callback_raised
        on_action = self._act
        keep_inbound = self._keep_inbound
        close = self._close
        timers = self._timers
        doomed = self._doomed
        busy_read = self._busy_read
        busy_write = self._busy_write
        frames_waiting = self._frames_waiting
        frames_deferred = self._frames_deferred
        monotonic = time.monotonic
        length = len
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
                try:
                    c = conns[fd]
                except KeyError:
                    c = None
                if c is None:  # outside the except block: its errors carry no KeyError context
                    on_other_fd(fd, ev)
                    continue
                if ev != readable_only or c._tls is not None:  # TLS: ciphertext, never the plain path
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
                    c._seen = now
                    if length(data) == size if size == small_read else length(data) <= small_read:
                        c._adapt_read_size(length(data), small_read, read_size)
                    if c._src is nothing:
                        # Inlined _deliver for the common case; these lines mirror
                        # InboundBuffer._receive (nothing left over) and _settle.
                        c._src = data
                        try:
                            action = on_traffic(c)
                        except BaseException as exc:
                            on_raise(c, exc)
                            continue
                        if c._src is not nothing and keep_inbound(c, c._settle()):
                            continue
                        if action:
                            on_action(c, action)
                    else:
                        deliver(c, data)
                else:
                    close(c, EOFError("connection closed by the peer"), True)
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

    def _on_other_fd(self, fd: int, ev: int) -> None:
        watcher = self._watchers.get(fd)
        if watcher is not None:
            watcher(ev)
        # Otherwise: an event for a descriptor closed earlier in this batch.

    def _on_wake_up(self, ev: int) -> None:
        self._tasks.run()

    def _on_event(self, c: Conn, fd: int, ev: int) -> None:
        """Any event of an open connection but "readable, nothing else" in level-triggered mode."""
        if c._tls is not None:
            tls.on_event(self, c, fd, ev)
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
            self._flush(c)

    # -- read path (beyond the inline case) ----------------------------------

    def _read_once(self, c: Conn, fd: int) -> int:
        """One read and its delivery (the loop inlines the same steps); returns the bytes read.

        0 means nothing was read: the socket had nothing, or the connection closed.
        """
        size = c._read_size
        try:
            data = syscalls.read(fd, size)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            self._close(c, exc, False)
            return 0
        if not data:
            self._close(c, EOFError("connection closed by the peer"), True)
            return 0
        c._seen = self._now
        small = self._small_read
        if len(data) == size if size == small else len(data) <= small:
            c._adapt_read_size(len(data), small, self._read_size)
        self._deliver(c, data)
        return len(data)

    def _deliver(self, c: Conn, data: bytes) -> None:
        """``on_traffic`` over what ``c`` has buffered plus ``data`` (empty for a wake-up), then its action."""
        c._receive(data)
        try:
            action = self._on_traffic(c)
        except BaseException as exc:
            self._callback_raised(c, exc)
            return
        kept = c._settle() if c._src is not NOTHING else 0
        if (kept or self._holding) and self._keep_inbound(c, kept):
            return
        if action:
            self._act(c, action)

    def _read_edge(self, c: Conn) -> None:
        """Edge-triggered: read until the socket is drained, within the per-iteration budget."""
        fd = c._fd
        if c._tls is not None:
            tls.on_event(self, c, fd, IN)
            return
        budget = self._opts.edge_triggered_chunk
        self._busy_read.pop(fd, None)
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

    # -- write path ----------------------------------------------------------

    def _want_write(self, c: Conn) -> None:
        """``c`` has just queued bytes: have the loop flush them when the socket can take more."""
        if self._edge_triggered:
            # Registered for writability once and for all; an edge only comes
            # after EAGAIN, so make sure the next iteration tries.
            self._busy_write[c._fd] = c
        elif c._state == OPEN:
            self._poller.modify(c._fd, OUT if c._paused else IN | OUT)

    def _flush(self, c: Conn) -> None:
        out = c._out
        fd = c._fd
        self._busy_write.pop(fd, None)
        try:
            out.flush_to(fd, self._opts.edge_triggered_chunk if self._edge_triggered else 0)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._close(c, exc, False)
            return
        if c._paused & PAUSED_BY_QUEUE and out.nbytes <= self._low_water:
            self._drained(c)
        if out:
            if self._edge_triggered:
                self._busy_write[fd] = c
            return
        if c._state == FLUSHING:
            self._flushed(c)
        elif not self._edge_triggered and c._state == OPEN:
            self._poller.modify(fd, 0 if c._paused else IN)

    def _resume_busy(self) -> None:
        for c in list(self._busy_read.values()):
            if c._state == OPEN and not c._paused:
                self._read_edge(c)
            else:
                self._busy_read.pop(c._fd, None)
        for c in list(self._busy_write.values()):
            if c._state != CLOSED and c._out:
                self._flush(c)
            else:
                self._busy_write.pop(c._fd, None)

    # -- tasks (timers and the ticker: runloop.py) -----------------------------

    def _submit(self, urgent: bool, fn: Callable[..., Any], *args: Any) -> bool:
        """Queue ``fn(*args)`` for this loop from any thread; False once the loop has stopped."""
        return self._tasks.push_urgent(fn, *args) if urgent else self._tasks.push(fn, *args)
