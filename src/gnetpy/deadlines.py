"""Deadlines without a timer each: idle timeouts (a timing wheel) and fixed-length deadlines (a queue).

``FifoDeadlines`` serves deadlines that all have the same length --
``close_timeout``, ``tls_handshake_timeout``: they fall due in the order they
were set, so an insertion-ordered dict and one timer serve them all, and a
sweep looks only at those due (plus one).

``IdleWheel`` closes a connection that received nothing for ``idle_timeout``
seconds -- cheaply.

The obvious ways cost too much.  A timer per connection re-armed on every
read puts a heap push and a cancelled entry on the hot path of every
message; a scan of every connection on every tick costs in proportion to the
connections, busy or not.  Instead:

* the reactor notes the time of each read on the connection (``Conn._seen``:
  one attribute store per read, from a clock it reads once per poll
  iteration, not per event);
* each connection sits in one bucket of a coarse timing wheel -- the bucket
  of the moment it *might* become idle (its last read then plus the
  timeout), buckets ``slot`` seconds wide;
* one timer per loop visits the buckets as their time comes.  A connection
  that has read since is moved to the bucket of its new deadline; one that
  has not is closed with ``TimeoutError``.

So a connection costs one bucket visit per ``idle_timeout`` however often it
reads, and a loop iteration costs nothing whatever the number of
connections.  A connection is closed between ``idle_timeout`` and
``idle_timeout + slot`` seconds after its last read (``slot`` is an eighth of
the timeout).  Closed connections are dropped from their bucket when it
comes up.  ``examined`` counts bucket visits, for tests and tuning.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Callable

from .state import OPEN

if TYPE_CHECKING:
    from .conn import Conn
    from .timers import TimerHandle

class FifoDeadlines:
    """Keys whose deadline is ``seconds`` after they were added; ``expire(key)`` for each one reached."""

    def __init__(self, seconds: float, call_later: Callable[[float, Callable[[], Any]], TimerHandle],
                 expire: Callable[[Any], Any], clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._call_later = call_later
        self._expire = expire
        self._clock = clock
        self._due: dict[Any, float] = {}  # insertion order is deadline order
        self._timer: TimerHandle | None = None

    def add(self, key: Any) -> None:
        self._due[key] = self._clock() + self.seconds
        if self._timer is None:
            self._timer = self._call_later(self.seconds, self._sweep)

    def discard(self, key: Any) -> None:
        self._due.pop(key, None)

    def __contains__(self, key: Any) -> bool:
        return key in self._due

    def __len__(self) -> int:
        return len(self._due)

    def _sweep(self) -> None:
        self._timer = None
        now = self._clock()
        expired = []
        for key, deadline in self._due.items():
            if deadline > now:
                break
            expired.append(key)
        for key in expired:
            if self._due.pop(key, None) is not None:
                self._expire(key)
        if self._due and self._timer is None:
            first = next(iter(self._due.values()))
            self._timer = self._call_later(max(0.0, first - now), self._sweep)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due.clear()


# Buckets per timeout: the precision of an idle close.
SLOTS_PER_TIMEOUT = 8
MIN_SLOT = 0.01


class IdleWheel:
    def __init__(self, timeout: float, call_later: Callable[[float, Callable[[], Any]], TimerHandle],
                 expire: Callable[[Conn], Any], clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout = timeout
        self._clock = clock
        self._slot = max(timeout / SLOTS_PER_TIMEOUT, MIN_SLOT)
        self._call_later = call_later
        self._expire = expire
        self._buckets: dict[int, list[Conn]] = {}
        self._next_key = 0  # the first bucket not visited yet
        self._timer: TimerHandle | None = None
        self.examined = 0

    def add(self, c: Conn, now: float) -> None:
        """Watch ``c`` (just opened, ``c._seen == now``)."""
        self._insert(c, now + self.timeout)

    def _insert(self, c: Conn, deadline: float) -> None:
        key = math.ceil(deadline / self._slot)
        bucket = self._buckets.get(key)
        if bucket is None:
            self._buckets[key] = [c]
            if not self._next_key or key < self._next_key:
                self._next_key = key
        else:
            bucket.append(c)
        if self._timer is None:
            self._timer = self._call_later(max(0.0, key * self._slot - self._clock()), self._visit)

    def _visit(self) -> None:
        """The timer: every bucket whose time has come."""
        self._timer = None
        now = self._clock()
        last = math.floor(now / self._slot)
        key = self._next_key
        while key <= last and self._buckets:
            for c in self._buckets.pop(key, ()):
                self.examined += 1
                if c._state != OPEN:
                    continue  # closed (or closing) since: forget it
                deadline = c._seen + self.timeout
                if deadline <= now:
                    self._expire(c)
                else:
                    self._insert(c, deadline)
            key += 1
        self._next_key = min(self._buckets, default=0)
        if self._buckets and self._timer is None:
            self._timer = self._call_later(max(0.0, self._next_key * self._slot - now), self._visit)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._buckets.clear()
