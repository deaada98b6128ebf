"""Running an event loop: on a thread of its own or the caller's, and surviving its own failures.

``LoopRunner`` is a component of one event loop: the loop's engine-side calls
(``start``, ``wait_ready``, ``run``, ``join``...) come here.  ``start`` runs
the loop on a new thread (thread mode); ``run`` serves on the calling thread
(a worker process's main thread).  A loop with an index (not the main
reactor) first pins itself to its CPU (``cpu_affinity``) and runs the
handler's ``on_worker_start``; ``on_worker_stop`` runs after it stopped.

Errors in user code never get here (the loop catches them at each callback).
What does -- a bug in gnetpy, a ``MemoryError`` -- is logged, and the loop
backs off and serves on; if it keeps failing it stops the engine rather than
spin.  A ``SystemExit`` or ``KeyboardInterrupt`` stops the engine gracefully
and is re-raised by ``run()`` in its caller's thread.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from .loopapi import LoopServices

# The reactor gives up (and stops the engine) after this many internal
# errors, each less than FAILURE_WINDOW seconds after the one before.
MAX_FAILURES = 8
FAILURE_WINDOW = 10.0

Ready = Callable[[BaseException | None], Any]


class LoopRunner:
    """Where and how one loop runs: its thread, its start-up, its failure policy."""

    def __init__(self, loop: LoopServices, poll: Callable[[], None]) -> None:
        self._loop = loop
        self._poll = poll  # the reactor: returns once the loop has stopped running
        self.thread: threading.Thread | None = None
        self.thread_id: int | None = None  # set by run(): who may call loop-only methods
        self._ready = threading.Event()
        self._start_error: BaseException | None = None

    def start(self) -> None:
        """Run the loop on a thread of its own; ``wait_ready`` says when it serves."""
        index = self._loop.index
        name = f"gnetpy-loop-{index}" if index >= 0 else "gnetpy-main-reactor"
        self.thread = threading.Thread(target=self.run, args=(self._on_ready,), name=name, daemon=True)
        self.thread.start()

    def _on_ready(self, error: BaseException | None) -> None:
        self._start_error = error
        self._ready.set()

    def wait_ready(self, timeout: float) -> None:
        """Block until the loop serves; raise what ``on_worker_start`` raised, or ``TimeoutError``."""
        if not self._ready.wait(timeout):
            raise TimeoutError(f"event loop {self._loop.index} did not start within {timeout:g}s "
                               f"(on_worker_start still running: {self.running_callback()})")
        if self._start_error is not None:
            raise self._start_error

    def run(self, on_ready: Ready | None = None) -> None:
        """Serve until shut down, on the calling thread (the module docstring says what comes first)."""
        self.thread_id = threading.get_ident()
        loop = self._loop
        worker = loop.index >= 0
        try:
            error = self._start_worker() if worker else None
            if on_ready is not None:
                on_ready(error)
            if error is not None:
                return
            loop.begin_serving()
            self._serve()
        finally:
            loop.release()
            if worker:
                self._stop_worker()

    def _start_worker(self) -> BaseException | None:
        loop = self._loop
        try:
            if loop.options.cpu_affinity:
                allowed = sorted(os.sched_getaffinity(0))
                os.sched_setaffinity(0, {allowed[loop.index % len(allowed)]})  # 0: this thread
            loop.handler.on_worker_start(loop.index)
        except BaseException as exc:
            return exc
        return None

    def _stop_worker(self) -> None:
        loop = self._loop
        try:
            loop.handler.on_worker_stop(loop.index)
        except BaseException as exc:
            loop.logger.error("gnetpy: on_worker_stop(%d) raised", loop.index, exc_info=exc)

    def _serve(self) -> None:
        failures = _Failures()
        while True:
            try:
                self._poll()
                return
            except BaseException as exc:
                if not self._recover(exc, failures):
                    return

    def _recover(self, exc: BaseException, failures: _Failures) -> bool:
        """Something escaped the reactor itself (callbacks' errors never do): log, back off, give up if it repeats.

        True: serve on.
        """
        loop = self._loop
        if not isinstance(exc, Exception):  # an asynchronous KeyboardInterrupt, say
            loop.fatal(exc, f"event loop {loop.index}")
            return True
        count = failures.add()
        loop.logger.error("gnetpy: event loop %d: internal error %d in a row (serving on)", loop.index, count,
                          exc_info=exc)
        if count >= MAX_FAILURES:
            loop.fatal(exc, f"event loop {loop.index} (it failed {count} times in a row)")
            return False  # nothing more can be expected of it: release everything now
        time.sleep(min(1.0, 0.01 * 2 ** (count - 1)))  # never a tight loop of the same failure
        return True

    def join(self, timeout: float | None) -> bool:
        if self.thread is not None:
            self.thread.join(timeout)
            return not self.thread.is_alive()
        return True

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def in_thread(self) -> bool:
        """On the loop's thread -- or before it runs (building a loop is single-threaded)."""
        return self.thread_id is None or self.thread_id == threading.get_ident()

    def running_callback(self) -> str:
        """Where this loop's thread is now, for a loop that does not stop: the user code it is running."""
        frame = sys._current_frames().get(self.thread_id or -1)
        stack = []  # innermost first
        while frame is not None:
            stack.append(frame)
            frame = frame.f_back
        if not stack:
            return "nothing (the loop has ended)"
        ours = os.path.dirname(os.path.abspath(__file__)) + os.sep
        for inner, outer in zip(stack, stack[1:]):  # the user frame that gnetpy called
            if outer.f_code.co_filename.startswith(ours) and not inner.f_code.co_filename.startswith(ours):
                where = f"{inner.f_code.co_qualname} ({inner.f_code.co_filename}:{inner.f_code.co_firstlineno})"
                now = stack[0]
                return f"{where}, now at {now.f_code.co_filename}:{now.f_lineno}"
        return "gnetpy's own code (no user callback)"


class _Failures:
    """Consecutive internal errors of a loop: the count restarts after a quiet spell."""

    __slots__ = ("count", "last")

    def __init__(self) -> None:
        self.count = 0
        self.last = 0.0

    def add(self) -> int:
        now = time.monotonic()
        self.count = self.count + 1 if now - self.last < FAILURE_WINDOW else 1
        self.last = now
        return self.count
