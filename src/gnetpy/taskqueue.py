"""Work handed to an event loop from any thread.

Two queues: *urgent* tasks (writes, registrations, shutdown) all run on the
next wake-up; *ordinary* ones (wake, close, execute) run at most
``ordinary_limit`` per wake-up so that a flood of them cannot starve the I/O
of the loop's connections -- whatever is left re-arms the wake-up.

One wake-up per batch: a producer writes the eventfd only when the queue is
not already "armed".  The loop drains the eventfd *first* and only then
disarms (under the lock) and takes its batch.  A producer that pushed
before the disarm saw "armed" and did not write -- but its task is already
queued, so it is in the batch.  One that pushes after the disarm arms again
and writes, and that write cannot be swallowed by a drain that has already
happened.  (Disarming before draining loses wake-ups: the drain can eat the
write of a producer that armed in between, leaving "armed" set with no
wake-up pending and later tasks stranded.)
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Any, Callable

from .waker import Waker

Task = tuple[Callable[..., Any], tuple[Any, ...]]


class TaskQueue:
    def __init__(self, waker: Waker, logger: logging.Logger | logging.LoggerAdapter[Any],
                 ordinary_limit: int = 256) -> None:
        self._waker = waker
        self._logger = logger
        self._limit = ordinary_limit
        self._urgent: collections.deque[Task] = collections.deque()
        self._ordinary: collections.deque[Task] = collections.deque()
        # Reentrant: in a worker process a signal handler (SIGTERM: stop) runs
        # on the loop's own thread and may push while that thread holds it.
        self._lock = threading.RLock()
        self._armed = False
        self._closed = False

    def push_urgent(self, fn: Callable[..., Any], *args: Any) -> bool:
        """Queue ``fn(*args)`` for the loop; False if the loop has shut its queue."""
        return self._push(self._urgent, (fn, args))

    def push(self, fn: Callable[..., Any], *args: Any) -> bool:
        return self._push(self._ordinary, (fn, args))

    def _push(self, queue: collections.deque[Task], task: Task) -> bool:
        with self._lock:
            if self._closed:
                return False
            queue.append(task)
            if not self._armed:
                self._armed = True
                # Under the lock: once close() has run, the loop may close the
                # waker's descriptor (and the number be reused) at any moment.
                self._waker.wake()
        return True

    def run(self) -> None:
        """On the loop: run every urgent task queued so far and a bounded batch of ordinary ones."""
        self._waker.drain()
        with self._lock:
            self._armed = False
        urgent, ordinary = self._urgent, self._ordinary
        # Only what is queued now: a task that queues another must not keep
        # this loop from polling its sockets.
        for _ in range(len(urgent)):
            self.call(urgent.popleft())
        for _ in range(min(len(ordinary), self._limit)):
            self.call(ordinary.popleft())
        if urgent or ordinary:
            with self._lock:
                self._armed = True
            self._waker.wake()

    def call(self, task: Task) -> None:
        fn, args = task
        try:
            fn(*args)
        except Exception:
            # Tasks catch their users' exceptions themselves; reaching here is a gnetpy bug.
            self._logger.exception("gnetpy: task %r failed", fn)

    def close(self) -> list[Task]:
        """Refuse further tasks; return those never run (their callers get an error)."""
        with self._lock:
            self._closed = True
            left = list(self._urgent) + list(self._ordinary)
            self._urgent.clear()
            self._ordinary.clear()
        return left

    def pending(self) -> bool:
        return bool(self._urgent or self._ordinary)
