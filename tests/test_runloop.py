"""runloop.py's LoopRunner on a fake loop: start-up order, the failure policy, its thread -- no EventLoop, no poller.

The fake loop and its handler append to one list, so a test sees the order of
everything the runner did.  time.sleep and time.monotonic are replaced in
runloop's namespace only, so back-off and the quiet spell cost no waiting.
"""

from __future__ import annotations

import threading
import types
from typing import Any, Callable

import pytest

from conftest import WAIT
from gnetpy import runloop
from gnetpy.deadlines import FifoDeadlines
from gnetpy.runloop import FAILURE_WINDOW, MAX_FAILURES, LoopRunner


class Handler:
    def __init__(self, calls: list[Any]) -> None:
        self.calls = calls
        self.start_error: BaseException | None = None
        self.stop_error: BaseException | None = None
        self.block: threading.Event | None = None

    def on_worker_start(self, index: int) -> None:
        self.calls.append(("on_worker_start", index))
        if self.block is not None:
            self.block.wait(WAIT)
        if self.start_error is not None:
            raise self.start_error

    def on_worker_stop(self, index: int) -> None:
        self.calls.append(("on_worker_stop", index))
        if self.stop_error is not None:
            raise self.stop_error


class Log:
    def __init__(self) -> None:
        self.errors: list[tuple[Any, ...]] = []

    def error(self, msg: str, *args: Any, exc_info: Any = None) -> None:
        self.errors.append((msg % args, exc_info))


class FakeLoop:
    def __init__(self, index: int = 0) -> None:
        self.index = index
        self.calls: list[Any] = []
        self.options = types.SimpleNamespace(cpu_affinity=False)
        self.handler = Handler(self.calls)
        self.logger = Log()

    def begin_serving(self) -> None:
        self.calls.append("begin_serving")

    def release(self) -> None:
        self.calls.append("release")

    def fatal(self, exc: BaseException, what: str) -> None:
        self.calls.append(("fatal", exc, what))


class Poll:
    """The reactor: raises each of ``errors`` in turn (None: returns, the loop stopped)."""

    def __init__(self, loop: FakeLoop, errors: Callable[[int], BaseException | None]) -> None:
        self.loop, self.errors, self.count = loop, errors, 0

    def __call__(self) -> None:
        self.count += 1
        self.loop.calls.append("poll")
        error = self.errors(self.count)
        if error is not None:
            raise error


@pytest.fixture
def fake_time(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    clock = types.SimpleNamespace(now=1000.0, slept=[])
    clock.sleep = clock.slept.append
    clock.monotonic = lambda: clock.now
    monkeypatch.setattr(runloop, "time", clock)
    return clock


def test_run_starts_the_worker_serves_then_releases_and_stops_the_worker() -> None:
    loop = FakeLoop(3)
    runner = LoopRunner(loop, Poll(loop, lambda n: None))  # type: ignore[arg-type]
    runner.run(lambda err: loop.calls.append(("ready", err)))
    assert loop.calls == [("on_worker_start", 3), ("ready", None), "begin_serving", "poll", "release",
                          ("on_worker_stop", 3)]
    assert runner.thread_id == threading.get_ident() and runner.in_thread()


def test_a_failing_on_worker_start_is_reported_to_on_ready_and_nothing_is_served() -> None:
    loop = FakeLoop(1)
    boom = RuntimeError("no database")
    loop.handler.start_error = boom
    runner = LoopRunner(loop, Poll(loop, lambda n: None))  # type: ignore[arg-type]
    runner.run(lambda err: loop.calls.append(("ready", err)))
    assert loop.calls == [("on_worker_start", 1), ("ready", boom), "release", ("on_worker_stop", 1)]


def test_the_main_reactor_runs_no_worker_callbacks_and_still_releases() -> None:
    loop = FakeLoop(-1)
    LoopRunner(loop, Poll(loop, lambda n: None)).run()  # type: ignore[arg-type]
    assert loop.calls == ["begin_serving", "poll", "release"]


def test_release_and_on_worker_stop_run_when_begin_serving_raises() -> None:
    loop = FakeLoop(0)
    loop.begin_serving = lambda: (_ for _ in ()).throw(OSError("listen failed"))  # type: ignore[method-assign]
    with pytest.raises(OSError, match="listen failed"):
        LoopRunner(loop, Poll(loop, lambda n: None)).run()  # type: ignore[arg-type]
    assert loop.calls == [("on_worker_start", 0), "release", ("on_worker_stop", 0)]


def test_an_error_in_on_worker_stop_is_logged_not_raised() -> None:
    loop = FakeLoop(2)
    loop.handler.stop_error = ValueError("flush failed")
    LoopRunner(loop, Poll(loop, lambda n: None)).run()  # type: ignore[arg-type]
    [(line, exc)] = loop.logger.errors
    assert "on_worker_stop(2)" in line and exc is loop.handler.stop_error


def test_an_internal_error_is_logged_and_served_on_after_a_growing_back_off(fake_time: Any) -> None:
    loop = FakeLoop(0)
    poll = Poll(loop, lambda n: RuntimeError(f"bug {n}") if n <= 3 else None)
    LoopRunner(loop, poll).run()  # type: ignore[arg-type]
    assert poll.count == 4 and not [c for c in loop.calls if c[0] == "fatal"]
    assert fake_time.slept == [0.01, 0.02, 0.04]
    assert [line for line, _ in loop.logger.errors] == [
        f"gnetpy: event loop 0: internal error {n} in a row (serving on)" for n in (1, 2, 3)]
    assert str(loop.logger.errors[2][1]) == "bug 3"


def test_max_failures_in_a_row_is_fatal_and_stops_serving(fake_time: Any) -> None:
    loop = FakeLoop(5)
    poll = Poll(loop, lambda n: RuntimeError("always"))
    LoopRunner(loop, poll).run()  # type: ignore[arg-type]
    assert poll.count == MAX_FAILURES and len(fake_time.slept) == MAX_FAILURES - 1
    fatal = [c for c in loop.calls if c[0] == "fatal"]
    assert len(fatal) == 1 and str(fatal[0][1]) == "always"
    assert fatal[0][2] == f"event loop 5 (it failed {MAX_FAILURES} times in a row)"
    assert loop.calls[-2:] == ["release", ("on_worker_stop", 5)]


def test_the_back_off_is_capped_at_one_second(fake_time: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runloop, "MAX_FAILURES", 12)
    loop = FakeLoop(0)
    LoopRunner(loop, Poll(loop, lambda n: RuntimeError("always"))).run()  # type: ignore[arg-type]
    assert fake_time.slept[6] == pytest.approx(0.64) and fake_time.slept[7:] == [1.0] * 4


def test_a_keyboard_interrupt_is_fatal_but_the_loop_serves_on(fake_time: Any) -> None:
    loop = FakeLoop(0)
    interrupt = KeyboardInterrupt()
    poll = Poll(loop, lambda n: interrupt if n == 1 else None)
    LoopRunner(loop, poll).run()  # type: ignore[arg-type]
    assert poll.count == 2 and fake_time.slept == [] and not loop.logger.errors
    assert ("fatal", interrupt, "event loop 0") in loop.calls


def test_a_quiet_spell_resets_the_failure_count(fake_time: Any) -> None:
    loop = FakeLoop(0)
    gaps = {2: 1.0, 3: 1.0, 4: FAILURE_WINDOW, 5: 1.0}

    def errors(n: int) -> BaseException | None:
        fake_time.now += gaps.get(n, 0.0)
        return RuntimeError("flaky") if n <= 5 else None

    LoopRunner(loop, Poll(loop, errors)).run()  # type: ignore[arg-type]
    counts = [line.split("internal error ")[1].split()[0] for line, _ in loop.logger.errors]
    assert counts == ["1", "2", "3", "1", "2"]
    assert fake_time.slept == [0.01, 0.02, 0.04, 0.01, 0.02]


def test_start_runs_on_a_named_thread_and_join_joins_it() -> None:
    for index, name in ((4, "gnetpy-loop-4"), (-1, "gnetpy-main-reactor")):
        loop = FakeLoop(index)
        seen: list[str] = []
        runner = LoopRunner(loop, lambda: seen.append(threading.current_thread().name))  # type: ignore[arg-type]
        assert runner.join(0) is True  # never started: nothing to join
        runner.start()
        runner.wait_ready(WAIT)
        assert runner.join(WAIT) is True and not runner.alive()
        assert seen == [name] and runner.thread is not None and runner.thread.name == name
        assert not runner.in_thread() and "release" in loop.calls


def test_wait_ready_raises_what_on_worker_start_raised() -> None:
    loop = FakeLoop(0)
    loop.handler.start_error = LookupError("no config")
    runner = LoopRunner(loop, Poll(loop, lambda n: None))  # type: ignore[arg-type]
    runner.start()
    try:
        with pytest.raises(LookupError, match="no config"):
            runner.wait_ready(WAIT)
    finally:
        assert runner.join(WAIT)
    assert "poll" not in loop.calls


def test_wait_ready_times_out_naming_the_loop_and_the_callback_still_running() -> None:
    loop = FakeLoop(7)
    loop.handler.block = threading.Event()
    runner = LoopRunner(loop, Poll(loop, lambda n: None))  # type: ignore[arg-type]
    runner.start()
    try:
        with pytest.raises(TimeoutError) as caught:
            runner.wait_ready(0.05)
    finally:
        loop.handler.block.set()
        assert runner.join(WAIT)
    message = str(caught.value)
    assert message.startswith("event loop 7 did not start within 0.05s")
    assert "Handler.on_worker_start (" in message and "test_runloop.py" in message


def test_running_callback_names_the_user_function_that_blocks_the_loop() -> None:
    entered, release = threading.Event(), threading.Event()

    def slow_handler(key: Any) -> None:
        entered.set()
        release.wait(WAIT)

    # The reactor stand-in is gnetpy code calling user code, as the real one calls on_traffic.
    deadlines = FifoDeadlines(0.0, lambda delay, fn: None, slow_handler)
    deadlines.add("conn")
    runner = LoopRunner(FakeLoop(0), deadlines._sweep)  # type: ignore[arg-type]
    assert runner.running_callback() == "nothing (the loop has ended)"
    runner.start()
    try:
        assert entered.wait(WAIT)
        where = runner.running_callback()
    finally:
        release.set()
        assert runner.join(WAIT)
    assert where.startswith("test_running_callback_names_the_user_function_that_blocks_the_loop.<locals>"
                            ".slow_handler (") and "test_runloop.py" in where
    assert ", now at " in where and "threading.py" in where.split(", now at ")[1]
    assert runner.running_callback() == "nothing (the loop has ended)"
