"""One timer heap per event loop: ``call_later``, the ticker, accept back-off, stop deadlines.

Cancelled timers stay in the heap, marked, and are dropped when they reach
the top: cancelling is O(1) and safe from any thread (it only sets a flag).
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from typing import Any, Callable

from .handler import Action


def is_delay(value: Any) -> bool:
    """A delay in seconds: a finite int or float >= 0 (not a bool, not NaN)."""
    return (not isinstance(value, bool) and isinstance(value, (int, float))
            and value >= 0 and not math.isinf(value))


class TimerHandle:
    """Returned by ``EventLoop.call_later``; ``cancel()`` from any thread."""

    __slots__ = ("when", "fn", "cancelled")

    def __init__(self, when: float, fn: Callable[[], Any]) -> None:
        self.when = when
        self.fn = fn
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def __repr__(self) -> str:
        state = "cancelled" if self.cancelled else f"due in {self.when - time.monotonic():.3f}s"
        return f"<TimerHandle {getattr(self.fn, '__qualname__', self.fn)!r} {state}>"


class TimerHeap(list):  # type: ignore[type-arg]
    """A heap of ``(when, seq, handle)``.

    A ``list`` subclass so that the event loop's "any timers?" and "is the
    earliest one due?" (``heap[0][0]``), asked on every iteration, are C-level
    operations rather than Python method calls.
    """

    __slots__ = ("_seq",)

    def __init__(self) -> None:
        super().__init__()
        self._seq = itertools.count()  # ties run in the order they were scheduled

    def schedule(self, handle: TimerHandle) -> TimerHandle:
        heapq.heappush(self, (handle.when, next(self._seq), handle))
        return handle

    def timeout(self, now: float) -> float:
        """Seconds until the earliest live timer (0 if due), -1 if there is none."""
        while self and self[0][2].cancelled:
            heapq.heappop(self)
        if not self:
            return -1
        return max(0.0, self[0][0] - now)

    def pop_due(self, now: float) -> list[TimerHandle]:
        due = []
        while self and self[0][0] <= now:
            handle = heapq.heappop(self)[2]
            if not handle.cancelled:
                due.append(handle)
        return due


def parse_tick(result: Any, previous: float) -> tuple[float, Action]:
    """What ``on_tick`` returned: seconds, ``(seconds, Action)``, or None for ``previous`` seconds again."""
    if result is None:
        return previous, Action.NONE
    if isinstance(result, tuple) and len(result) == 2:
        delay, action = result
        action = Action(action if action is not None else Action.NONE)
    else:
        delay, action = result, Action.NONE
    if not is_delay(delay):
        raise TypeError(f"on_tick returned {result!r}; expected seconds >= 0, (seconds, Action) or None")
    return float(delay), action
