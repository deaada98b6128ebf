"""Running an event loop: on a thread of its own or the caller's, stopping it, and surviving its own failures.

``start`` runs the loop on a new thread (thread mode); ``run`` serves on the
calling thread (a worker process's main thread).  ``shutdown(deadline)``,
safe from any thread, asks the loop to close its connections gracefully and
exit, dropping what is unsent at ``deadline``; asked again with an earlier
deadline, it brings the drop forward.  ``release`` is the loop's last act
(and what undoes a boot that failed): nothing is left open or queued.

Errors in user code never get here (lifecycle.py catches them at each
callback).  What does -- a bug in gnetpy, a ``MemoryError`` -- is logged, and
the loop backs off and serves on; if it keeps failing it stops the engine
rather than spin.  A ``SystemExit`` or ``KeyboardInterrupt`` stops the engine
gracefully and is re-raised by ``run()`` in its caller's thread.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any, Callable

from .errors import EngineStoppedError
from .handler import Action
from .loopbase import LoopBase
from .timers import parse_tick

# The reactor gives up (and stops the engine) after this many internal
# errors, each less than _FAILURE_WINDOW seconds after the one before.
_MAX_FAILURES = 8
_FAILURE_WINDOW = 10.0


class LoopRunner(LoopBase):
    def start(self) -> None:
        """Run the loop on a thread of its own; ``wait_ready`` says when it serves."""
        name = f"gnetpy-loop-{self.index}" if self.index >= 0 else "gnetpy-main-reactor"
        self._running = True
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._loop_thread = threading.Thread(target=self.run, args=(self._on_ready,), name=name, daemon=True)
        self._loop_thread.start()

    def _on_ready(self, error: BaseException | None) -> None:
        self._start_error = error
        self._ready.set()

    def wait_ready(self, timeout: float) -> None:
        """Block until the loop serves; raise what ``on_worker_start`` raised, or ``TimeoutError``."""
        if not self._ready.wait(timeout):
            raise TimeoutError(f"event loop {self.index} did not start within {timeout:g}s "
                               f"(on_worker_start still running: {self.running_callback()})")
        if self._start_error is not None:
            raise self._start_error

    def run(self, on_ready: Callable[[BaseException | None], Any] | None = None) -> None:
        """Serve until shut down, on the calling thread.

        A loop with an index (not the main reactor) first pins itself to its
        CPU (``cpu_affinity``) and runs the handler's ``on_worker_start``;
        ``on_ready(None)`` then says it serves, or ``on_ready(exc)`` that
        ``on_worker_start`` raised ``exc`` (and the loop ends at once).
        ``on_worker_stop`` runs after the loop has stopped serving.
        """
        self._thread_id = threading.get_ident()
        self._running = True
        worker = self.index >= 0
        try:
            if worker:
                error = self._start_worker()
                if on_ready is not None:
                    on_ready(error)
                if error is not None:
                    return
            elif on_ready is not None:
                on_ready(None)
            self._serve()
        finally:
            self.release()
            if worker:
                self._stop_worker()

    def _start_worker(self) -> BaseException | None:
        try:
            if self._opts.cpu_affinity:
                allowed = sorted(os.sched_getaffinity(0))
                os.sched_setaffinity(0, {allowed[self.index % len(allowed)]})  # 0: this thread
            self._handler.on_worker_start(self.index)
        except BaseException as exc:
            return exc
        return None

    def _stop_worker(self) -> None:
        try:
            self._handler.on_worker_stop(self.index)
        except BaseException as exc:
            self._logger.error("gnetpy: on_worker_stop(%d) raised", self.index, exc_info=exc)

    def _serve(self) -> None:
        for acceptor in self._acceptors:
            acceptor.start()
        for datagrams in self._datagrams:
            datagrams.start()
        if self._opts.ticker and self.index == 0:
            self._ticker = self.call_later(0, self._tick)
        failures = _Failures()
        while self._running:
            try:
                self._poll_loop()
            except BaseException as exc:
                self._internal_error(exc, failures)

    def _internal_error(self, exc: BaseException, failures: _Failures) -> None:
        """Something escaped the reactor itself (callbacks' errors never do): log, back off, give up if it repeats."""
        if not isinstance(exc, Exception):  # an asynchronous KeyboardInterrupt, say
            self._fatal(exc, f"event loop {self.index}")
            return
        count = failures.add()
        self._logger.error("gnetpy: event loop %d: internal error %d in a row (serving on)", self.index, count,
                           exc_info=exc)
        if count >= _MAX_FAILURES:
            self._fatal(exc, f"event loop {self.index} (it failed {count} times in a row)")
            self._running = False  # nothing more can be expected of it: release everything now
            return
        time.sleep(min(1.0, 0.01 * 2 ** (count - 1)))  # never a tight loop of the same failure

    def shutdown(self, deadline: float) -> None:
        """Ask the loop to close its connections (flushing them until ``deadline``) and exit."""
        self._tasks.push_urgent(self._begin_shutdown, deadline)

    def join(self, timeout: float | None) -> bool:
        if self._loop_thread is not None:
            self._loop_thread.join(timeout)
            return not self._loop_thread.is_alive()
        return True

    def abort(self, timeout: float) -> None:
        """Undo a start that failed elsewhere: stop at once if running, else release what was built."""
        if self._loop_thread is not None and self._loop_thread.is_alive():
            self.shutdown(time.monotonic())
            self.join(timeout)
        elif self._loop_thread is None:
            self.release()

    def kill(self) -> bool:
        """A thread cannot be killed: False (the engine waits for it)."""
        return False

    def _forget_in_child(self) -> None:
        """In a forked worker: close this loop's descriptors -- the worker's copies; no callbacks (inherit.py)."""
        for c in [*self._conns.values(), *self._closing.values()]:
            c._sock.close()
        for acceptor in self._acceptors:
            acceptor._registered = False
        if self._waker.fd >= 0:
            self._poller.close()
            self._waker.close()

    def runs_on(self, thread: threading.Thread) -> bool:
        return self._loop_thread is thread

    def running_callback(self) -> str:
        """Where this loop's thread is now, for a loop that does not stop: the user code it is running."""
        frame = sys._current_frames().get(self._thread_id or -1)
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

    def _in_loop_thread(self) -> bool:
        return self._thread_id is None or self._thread_id == threading.get_ident()

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
            self._close(c, None, True)
        if self._closing:
            self._stop_timer = self.call_later(max(0.0, deadline - time.monotonic()), self._force_close)
        elif not self._conns:
            self._running = False

    def _force_close(self) -> None:
        """The stop deadline: drop what is still closing (one log line for all of them)."""
        closing = list(self._closing.values())
        unsent = sum(c._out.nbytes for c in closing if c._out)
        if closing:
            self._logger.warning("gnetpy: event loop %d: stop deadline reached; %d connection(s) dropped with %d "
                                 "bytes unsent", self.index, len(closing), unsent)
        for c in closing:
            left = c._out.nbytes if c._out else 0
            self._close(c, TimeoutError(f"engine stop deadline reached with {left} bytes unsent"), False)

    def release(self) -> None:
        """Close everything this loop holds; its last act (also what undoes a boot that failed)."""
        self._stopping = True
        for connect in list(self._dials):
            connect.abandon()
        for c in list(self._conns.values()) + list(self._closing.values()):
            self._close(c, EngineStoppedError(f"event loop {self.index} stopped"), False)
        for fn, args in self._tasks.close():
            self._tasks.call((fn, args))  # they see closed connections and report it
        for acceptor in self._acceptors:
            acceptor.stop()
        for datagrams in self._datagrams:
            datagrams.close()
        self._datagrams.clear()
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
            self._user_raised(exc, f"{fn!r} on event loop {self.index}")

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
            self._user_raised(exc, "on_tick", f"; next tick in {delay:.3f}s")
        if action == Action.SHUTDOWN:
            self._request_stop()
            return
        self._tick_delay = delay
        self._ticker = self.call_later(delay, self._tick)


class _Failures:
    """Consecutive internal errors of a loop: the count restarts after a quiet spell."""

    __slots__ = ("count", "last")

    def __init__(self) -> None:
        self.count = 0
        self.last = 0.0

    def add(self) -> int:
        now = time.monotonic()
        self.count = self.count + 1 if now - self.last < _FAILURE_WINDOW else 1
        self.last = now
        return self.count
