"""What every part of an event loop shares: its state, declared once.

``EventLoop`` is assembled from a few classes, one concern each -- the
reactor (eventloop.py), a connection's life (lifecycle.py), the graceful
close (closing.py), running and stopping the loop itself (runloop.py) -- and
they share one object's state, the way the methods of one class would.
They are base classes of ``EventLoop`` rather than objects beside it so that
the reactor's calls into them (``_close`` on every EOF, ``_act`` on every
``Action``) cost one method call.  ``LoopBase`` declares that state for type
checkers and readers; ``EventLoop.__init__`` sets it.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import logging

    from .acceptor import Acceptor
    from .conn import Callback, Conn
    from .counters import Counters
    from .deadlines import FifoDeadlines, IdleWheel
    from .dial import Connect
    from .handler import EventHandler
    from .options import Options
    from .poller import Poller
    from .state import ConnState
    from .taskqueue import TaskQueue
    from .timers import TimerHandle, TimerHeap
    from .udp import DatagramSocket
    from .waker import Waker


class LoopBase:
    index: int
    _opts: Options
    _logger: logging.Logger | logging.LoggerAdapter[Any]
    _handler: EventHandler
    _request_stop: Callable[..., None]  # (error: BaseException | None = None)
    _poller: Poller
    _edge_triggered: bool
    _tasks: TaskQueue
    _timers: TimerHeap
    _ticker: TimerHandle | None
    _small_read: int
    _conns: dict[int, Conn]
    _closing: dict[int, Conn]
    _close_timeouts: FifoDeadlines
    _handshakes: FifoDeadlines
    _tls_contexts: list[Any]
    _stop_timer: TimerHandle | None
    _watchers: dict[int, Callable[[int], Any]]
    _acceptors: list[Acceptor]
    _datagrams: list[DatagramSocket]
    _doomed: list[Conn]
    _busy_read: dict[int, Conn]
    _busy_write: dict[int, Conn]
    _waker: Waker
    _running: bool
    _stopping: bool
    _counts: Counters

    _high_water: int
    _low_water: int
    _max_inbound: int
    _max_inbound_total: int
    _holding: dict[Conn, int]
    _inbound_peers: list[Counters]
    _frame_budget: int
    _frame_budget_bytes: int
    _frames_deferred: dict[int, Conn]
    _frames_waiting: dict[int, Conn]
    _async_pending: dict[Conn, int]
    _async_lock: threading.Lock
    _dials: set[Connect]
    _idle: IdleWheel | None
    _now: float
    _on_traffic: Callable[[Conn], Any]
    _tick_delay: float
    _loop_thread: threading.Thread | None
    _thread_id: int | None

    if TYPE_CHECKING:  # each defined by one of the parts, used by the others
        def call_later(self, delay: float, fn: Callable[[], Any]) -> TimerHandle: ...
        def _flush(self, c: Conn) -> None: ...
        def _close(self, c: Conn, err: BaseException | None, graceful: bool) -> None: ...
        def _finish_close(self, c: Conn, err: BaseException | None) -> None: ...
        def _start_closing(self, c: Conn, target: ConnState, err: BaseException | None) -> None: ...
        def _flushed(self, c: Conn) -> None: ...
        def _deliver(self, c: Conn, data: bytes) -> None: ...
        def _release_inbound(self, c: Conn) -> None: ...
        def _tls_opened(self, c: Conn) -> None: ...
        def _fatal(self, exc: BaseException, what: str) -> None: ...
        def _run_callback(self, callback: Callback, c: Conn, err: BaseException | None) -> None: ...
        def _poll_loop(self) -> None: ...
        def _tick(self) -> None: ...
        def _act(self, c: Conn, action: Any) -> None: ...
        def _callback_raised(self, c: Conn, exc: BaseException) -> None: ...
        def _user_raised(self, exc: BaseException, what: str, then: str = "") -> None: ...
        def _submit(self, urgent: bool, fn: Callable[..., Any], *args: Any) -> bool: ...
        def _in_loop_thread(self) -> bool: ...
