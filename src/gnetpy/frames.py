"""The ``codec`` option: decoded frames delivered to ``on_frame``, a bounded number per loop iteration.

With ``codec=``, what the reactor calls with a connection's input is
``FrameDispatcher.dispatch`` instead of the handler's ``on_traffic``: each
complete frame goes to ``on_frame(c, frame)``, in order.  The codec keeps its
per-connection state on the connection (codec.py); an ``Action`` other than
``NONE`` ends the delivery of this batch (what is left stays buffered).  A
``CodecError`` -- a frame too long, a corrupt length -- is raised to the loop
like any exception of a callback: that connection (or datagram session)
ends with it, after the replies already written are delivered.

Bounded: a read can hold tens of thousands of frames (64 KiB of empty lines
is 65,536), each an ``on_frame`` call, and a loop delivering them all would
keep every other connection waiting (docs/architecture.md, "Frame budget").  So at
most ``frame_budget`` frames and ``frame_budget_bytes`` bytes of them are
delivered per connection per call, as Netty bounds messages per read.  A
stream with more stops reading (``PAUSED_BY_FRAMES``: its input cannot pile
up meanwhile) and goes on at the end of the *next* loop iteration, after the
loop has served whatever else was ready (``turn``).  A datagram's frames are
all delivered: a datagram is at most 64 KiB, and what the handler leaves of
it is dropped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .conn import PAUSED_BY_FRAMES, StreamConn
from .state import OPEN

if TYPE_CHECKING:
    from .conn import Conn
    from .loopapi import LoopServices
    from .handler import EventHandler


class FrameDispatcher:
    """One loop's frame delivery: the decode-and-call loop, and the streams waiting for their next budget."""

    def __init__(self, loop: LoopServices, codec: Any, handler: EventHandler, budget: int, budget_bytes: int) -> None:
        self._loop = loop
        self._decode = codec.decode
        self._on_frame = handler.on_frame
        self._budget = budget
        self._budget_bytes = budget_bytes
        # Streams whose budget ran out in this iteration, and those that wait for their next one.
        self.deferred: dict[int, StreamConn] = {}
        self.waiting: dict[int, StreamConn] = {}

    def dispatch(self, c: Conn) -> Any:
        """``on_traffic`` with the ``codec`` option: frames to ``on_frame`` until none is whole, or the budget."""
        decode = self._decode
        on_frame = self._on_frame
        frames_left = self._budget
        bytes_left = self._budget_bytes
        stream = isinstance(c, StreamConn)  # a datagram's frames all go now: it is dropped after
        while True:
            frame = decode(c)
            if frame is None:
                return None
            action = on_frame(c, frame)
            if action:
                return action
            frames_left -= 1
            bytes_left -= len(frame)
            if (frames_left <= 0 or bytes_left <= 0) and stream:
                if c._state == OPEN and c._err is None:
                    self._loop.pause_reading(c, PAUSED_BY_FRAMES)  # type: ignore[arg-type]
                    self.deferred[c._fd] = c  # type: ignore[assignment]
                return None

    def turn(self) -> None:
        """At the end of an iteration: the next budget's worth for the streams deferred in an earlier one.

        Those deferred during this iteration wait for the next: every other
        ready connection gets its turn between two budgets of one connection.
        """
        waiting, deferred = self.waiting, self.deferred
        due = list(waiting.values())
        waiting.clear()
        waiting.update(deferred)
        deferred.clear()
        loop = self._loop
        for c in due:
            if c._state != OPEN or c._fd in waiting:
                continue  # closed meanwhile, or already delivered to (a wake-up) and deferred again
            loop.deliver(c, b"")
            if c._state == OPEN and c._fd not in deferred:
                loop.resume_reading(c, PAUSED_BY_FRAMES)  # all delivered: read again
        waiting.update(deferred)
        deferred.clear()
