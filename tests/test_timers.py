"""timers.py (``TimerHeap``, ``TimerHandle``) and, through a running engine, ``call_later`` and ``execute``.

The heap is tested with explicit clock values; the engine tests check that
callbacks run on the loop's own thread, not before they are due, not at all
once cancelled, and that a stopped loop refuses work with
``EngineStoppedError``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any, Callable

import pytest

import gnetpy
from conftest import wait_for
from gnetpy.timers import TimerHandle, TimerHeap


def handle(when: float, name: str = "") -> TimerHandle:
    def fn() -> None:
        pass

    fn.__qualname__ = name or f"t{when}"
    return TimerHandle(when, fn)


def names(handles: list[TimerHandle]) -> list[str]:
    return [h.fn.__qualname__ for h in handles]


# -- TimerHeap ------------------------------------------------------------------------


def test_due_timers_come_out_in_time_order() -> None:
    heap = TimerHeap()
    for when in (3.0, 1.0, 2.0, 0.5):
        heap.schedule(handle(when))
    assert names(heap.pop_due(10.0)) == ["t0.5", "t1.0", "t2.0", "t3.0"]
    assert not heap


def test_ties_run_in_schedule_order() -> None:
    heap = TimerHeap()
    for name in ("first", "second", "third"):
        heap.schedule(handle(5.0, name))
    heap.schedule(handle(4.0, "earlier"))
    assert names(heap.pop_due(5.0)) == ["earlier", "first", "second", "third"]


def test_pop_due_leaves_later_timers() -> None:
    heap = TimerHeap()
    for when in (1.0, 2.0, 3.0):
        heap.schedule(handle(when))
    assert names(heap.pop_due(2.0)) == ["t1.0", "t2.0"]  # due at exactly now counts
    assert names(heap.pop_due(2.5)) == []
    assert heap
    assert names(heap.pop_due(3.0)) == ["t3.0"]


def test_schedule_returns_the_handle() -> None:
    heap = TimerHeap()
    h = handle(1.0)
    assert heap.schedule(h) is h


def test_cancelled_timers_do_not_come_out() -> None:
    heap = TimerHeap()
    a, b, c = handle(1.0, "a"), handle(2.0, "b"), handle(3.0, "c")
    for h in (a, b, c):
        heap.schedule(h)
    b.cancel()
    assert names(heap.pop_due(10.0)) == ["a", "c"]


def test_cancel_from_another_thread() -> None:
    heap = TimerHeap()
    h = heap.schedule(handle(1.0, "x"))
    t = threading.Thread(target=h.cancel)
    t.start()
    t.join(5)
    assert h.cancelled
    assert heap.pop_due(10.0) == []


def test_cancel_is_idempotent() -> None:
    h = handle(1.0)
    h.cancel()
    h.cancel()
    assert h.cancelled


def test_timeout_is_minus_one_when_empty() -> None:
    assert TimerHeap().timeout(100.0) == -1


def test_timeout_is_zero_when_due_or_overdue() -> None:
    heap = TimerHeap()
    heap.schedule(handle(5.0))
    assert heap.timeout(5.0) == 0
    assert heap.timeout(9.0) == 0  # never negative


def test_timeout_is_the_time_to_the_earliest_timer() -> None:
    heap = TimerHeap()
    heap.schedule(handle(7.5))
    heap.schedule(handle(5.25))
    assert heap.timeout(5.0) == pytest.approx(0.25)


def test_timeout_skips_cancelled_timers() -> None:
    heap = TimerHeap()
    early, late = handle(1.0), handle(4.0)
    heap.schedule(early)
    heap.schedule(late)
    early.cancel()
    assert heap.timeout(0.0) == pytest.approx(4.0)
    late.cancel()
    assert heap.timeout(0.0) == -1
    assert not heap  # cancelled timers at the top are dropped


def test_clear_empties_the_heap() -> None:
    heap = TimerHeap()
    heap.schedule(handle(1.0))
    heap.clear()
    assert not heap
    assert heap.pop_due(10.0) == []


def test_handle_repr_says_its_state() -> None:
    h = TimerHandle(time.monotonic() + 60, print)
    assert "print" in repr(h) and "due in" in repr(h)
    h.cancel()
    assert "cancelled" in repr(h)


# -- call_later and execute on a running engine ----------------------------------------


class Calls:
    """Records (thread name, monotonic time) of each call, in order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[str, str, float]] = []

    def fn(self, label: str) -> Callable[[], None]:
        def record() -> None:
            with self.lock:
                self.calls.append((label, threading.current_thread().name, time.monotonic()))
        return record

    def labels(self) -> list[str]:
        with self.lock:
            return [c[0] for c in self.calls]


@pytest.fixture
def loop(serve: Any) -> Any:
    return serve(gnetpy.EventHandler()).event_loops[0]


def test_call_later_runs_on_the_loop_thread_once_due(loop: Any) -> None:
    calls = Calls()
    scheduled_at = time.monotonic()
    h = loop.call_later(0.05, calls.fn("later"))
    assert isinstance(h, gnetpy.TimerHandle)
    wait_for(calls.labels)
    label, thread, ran_at = calls.calls[0]
    assert label == "later"
    assert thread == "gnetpy-loop-0"
    assert ran_at - scheduled_at >= 0.05


def test_call_later_zero_runs_soon(loop: Any) -> None:
    calls = Calls()
    loop.call_later(0, calls.fn("now"))
    wait_for(calls.labels)


def test_call_later_runs_timers_in_due_order(loop: Any) -> None:
    calls = Calls()
    loop.call_later(0.06, calls.fn("c"))
    loop.call_later(0.02, calls.fn("a"))
    loop.call_later(0.04, calls.fn("b"))
    wait_for(lambda: len(calls.labels()) == 3)
    assert calls.labels() == ["a", "b", "c"]


def test_cancel_before_due_prevents_the_call(loop: Any) -> None:
    calls = Calls()
    h = loop.call_later(0.05, calls.fn("cancelled"))
    h.cancel()
    loop.call_later(0.15, calls.fn("marker"))  # due after the cancelled one
    wait_for(lambda: "marker" in calls.labels())
    assert calls.labels() == ["marker"]


def test_cancel_from_the_loop_itself(loop: Any) -> None:
    calls = Calls()
    h = loop.call_later(0.1, calls.fn("cancelled"))
    loop.execute(h.cancel)
    loop.call_later(0.2, calls.fn("marker"))
    wait_for(lambda: "marker" in calls.labels())
    assert calls.labels() == ["marker"]


def test_call_later_from_a_callback_on_the_loop(loop: Any) -> None:
    calls = Calls()
    loop.execute(lambda: loop.call_later(0.01, calls.fn("nested")))
    wait_for(calls.labels)
    assert calls.calls[0][1] == "gnetpy-loop-0"


def test_a_raising_timer_is_logged_and_the_loop_serves_on(loop: Any, caplog: pytest.LogCaptureFixture) -> None:
    calls = Calls()

    def boom() -> None:
        raise RuntimeError("timer exploded")

    with caplog.at_level(logging.ERROR, logger="gnetpy"):
        loop.call_later(0, boom)
        loop.call_later(0.02, calls.fn("after"))
        wait_for(calls.labels)
    assert any(r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in caplog.records)


@pytest.mark.parametrize("delay", [-0.001, -1, math.inf, -math.inf, math.nan, True, False, "1", None])
def test_bad_delay_is_a_value_error(loop: Any, delay: Any) -> None:
    with pytest.raises(ValueError, match="call_later: delay"):
        loop.call_later(delay, lambda: None)


def test_execute_and_call_later_after_stop_raise_engine_stopped(serve: Any) -> None:
    engine = serve(gnetpy.EventHandler())
    loop = engine.event_loops[0]
    engine.stop(timeout=5)
    with pytest.raises(gnetpy.EngineStoppedError):
        loop.execute(lambda: None)
    with pytest.raises(gnetpy.EngineStoppedError):
        loop.call_later(0.01, lambda: None)


def test_timers_pending_at_stop_do_not_run(serve: Any) -> None:
    engine = serve(gnetpy.EventHandler())
    calls = Calls()
    engine.event_loops[0].call_later(0.5, calls.fn("too late"))
    engine.stop(timeout=5)
    assert calls.labels() == []
