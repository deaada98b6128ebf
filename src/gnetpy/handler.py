"""The user-facing callback interface: :class:`EventHandler` and :class:`Action`."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Union

from .intenum import IntConstant

if TYPE_CHECKING:
    from .conn import Conn
    from .engine import Engine


class Action(IntConstant):
    """What the engine does after a callback returns: ``NONE``, ``CLOSE`` or ``SHUTDOWN``.

    An ``int`` whose ``NONE`` is 0, so the event loop tests the result of a
    callback with a bare ``if action:`` -- true for ``CLOSE`` and
    ``SHUTDOWN``, false for ``NONE`` and for ``None``.  Not an ``IntEnum``:
    see intenum.py for what that would cost on every message.
    """

    __slots__ = ()
    NONE: ClassVar[Action]
    CLOSE: ClassVar[Action]
    SHUTDOWN: ClassVar[Action]
    _values: ClassVar[dict[str, int]] = {"NONE": 0, "CLOSE": 1, "SHUTDOWN": 2}


TickResult = Union[float, "tuple[float, Action]"]


class EventHandler:
    """Subclass and override the callbacks you need; all are optional.

    Returning ``None`` from a callback means ``Action.NONE``.  Callbacks run on
    the event loop that owns the connection -- in worker processes, in the
    worker that owns it -- and must not block.  ``on_boot`` runs in the thread
    that starts the engine and ``on_shutdown`` in the thread that stops it,
    once, in the process that called ``start``/``run``.
    """

    def on_boot(self, engine: Engine) -> Action | None:
        """The engine is bound and about to serve; ``SHUTDOWN`` cancels it."""
        return Action.NONE

    def on_shutdown(self, engine: Engine) -> None:
        """The engine stopped: every connection has been closed."""

    def on_worker_start(self, loop_index: int) -> None:
        """In each worker process (or loop thread), before it serves: open per-process resources here.

        In process mode this runs in the worker, on its copy of the handler
        (made when the worker was forked: before ``on_boot`` for the first
        workers, whenever it was replaced for the others).  An exception
        here makes ``start()`` raise it (or, for a replacement worker, is
        logged and the worker started again later).
        """

    def on_worker_stop(self, loop_index: int) -> None:
        """In each worker process (or loop thread), after it stopped serving: close what on_worker_start opened."""

    def on_open(self, c: Conn) -> Action | None:
        """A new connection; it may write its greeting here."""
        return Action.NONE

    def on_close(self, c: Conn, err: BaseException | None) -> Action | None:
        """Runs exactly once per opened connection.

        ``err`` is ``None`` for a local close (``Action.CLOSE``, ``c.close()``,
        engine stop) and the cause otherwise: ``EOFError`` when the peer closed,
        an ``OSError`` for a reset or broken pipe, or the exception a callback
        raised.
        """
        return Action.NONE

    def on_traffic(self, c: Conn) -> Action | None:
        """Inbound data is buffered, or ``c.wake()`` was called."""
        return Action.NONE

    def on_frame(self, c: Conn, frame: bytes) -> Action | None:
        """With the ``codec`` option: one complete frame, decoded (gnet v1's ``React``).

        Called once per frame, in order, instead of ``on_traffic``.  Replies
        written with ``c.write`` are raw bytes: frame them with the same
        codec's ``encode``.
        """
        return Action.NONE

    def on_drained(self, c: Conn) -> Action | None:
        """``c``'s outbound queue, having passed ``write_high_water``, is back under ``write_low_water``.

        The loop stopped reading from ``c`` while its queue was high and reads
        again now.  A producer that paused -- a relay that stopped reading the
        other side, a thread waiting to ``async_write`` more -- resumes here.
        """
        return Action.NONE

    def on_tick(self) -> TickResult:
        """With ``ticker=True``: runs on event loop 0; returns the next delay in seconds."""
        return 1.0
