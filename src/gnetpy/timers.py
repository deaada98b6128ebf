"""One timer heap per event loop: ``call_later``, the ticker, accept back-off, stop deadlines.

Cancelled timers stay in the heap, marked, and are dropped when they reach
the top: cancelling is O(1) and safe from any thread (it only sets a flag).
"""

from __future__ import annotations

import heapq
import itertools
import time
from typing import Any, Callable


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


class TimerHeap:
    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._seq = itertools.count()  # ties run in the order they were scheduled

    def __bool__(self) -> bool:
        return bool(self._heap)

    def schedule(self, handle: TimerHandle) -> TimerHandle:
        heapq.heappush(self._heap, (handle.when, next(self._seq), handle))
        return handle

    def timeout(self, now: float) -> float:
        """Seconds until the earliest live timer (0 if due), -1 if there is none."""
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        if not heap:
            return -1
        return max(0.0, heap[0][0] - now)

    def pop_due(self, now: float) -> list[TimerHandle]:
        due = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            handle = heapq.heappop(heap)[2]
            if not handle.cancelled:
                due.append(handle)
        return due

    def clear(self) -> None:
        self._heap.clear()
