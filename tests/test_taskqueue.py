"""taskqueue.py: urgent before ordinary, one eventfd write per batch -- and no lost wake-ups.

The stress test at the end has producer threads flood a consumer that blocks
in ``poll(-1)`` with no timeout, so a lost wake-up shows up as tasks stranded
while the consumer sleeps (caught by a deadline rather than a hang).  It
guards a real, fixed bug: disarming before draining the eventfd let a drain
swallow the write of a producer that armed in between.
"""

from __future__ import annotations

import logging
import select
import sys
import threading
from typing import Any, Callable, Iterator

import pytest

from conftest import POLLER_KINDS

LOG = logging.getLogger("gnetpy.test-taskqueue")
from gnetpy.poller import new_poller
from gnetpy.taskqueue import TaskQueue
from gnetpy.waker import Waker

# -- TaskQueue --------------------------------------------------------------------------


class CountingWaker(Waker):
    """A real eventfd Waker that counts its writes."""

    def __init__(self) -> None:
        super().__init__()
        self.wakes = 0

    def wake(self) -> None:
        self.wakes += 1
        super().wake()


@pytest.fixture
def cwaker() -> Iterator[CountingWaker]:
    w = CountingWaker()
    yield w
    w.close()


def is_woken(w: Waker) -> bool:
    return bool(select.select([w.fd], [], [], 0)[0])


def test_urgent_tasks_run_before_ordinary_ones(cwaker: CountingWaker) -> None:
    q = TaskQueue(cwaker, LOG)
    ran: list[str] = []
    q.push(ran.append, "ordinary-1")
    q.push_urgent(ran.append, "urgent-1")
    q.push(ran.append, "ordinary-2")
    q.push_urgent(ran.append, "urgent-2")
    q.run()
    assert ran == ["urgent-1", "urgent-2", "ordinary-1", "ordinary-2"]


def test_tasks_get_their_arguments(cwaker: CountingWaker) -> None:
    q = TaskQueue(cwaker, LOG)
    got: list[Any] = []
    q.push(lambda *args: got.append(args), 1, "two", None)
    q.run()
    assert got == [(1, "two", None)]


def test_at_most_ordinary_limit_per_run_and_the_rest_rearms(cwaker: CountingWaker) -> None:
    q = TaskQueue(cwaker, LOG, ordinary_limit=3)
    ran: list[int] = []
    for i in range(8):
        q.push(ran.append, i)
    for i in range(5):
        q.push_urgent(ran.append, 100 + i)
    q.run()
    assert ran == [100, 101, 102, 103, 104, 0, 1, 2]  # every urgent one, 3 ordinary
    assert q.pending()
    assert is_woken(cwaker), "leftover tasks must re-arm the wake-up"
    q.run()
    assert ran[8:] == [3, 4, 5]
    q.run()
    assert ran[11:] == [6, 7]
    assert not q.pending()
    assert not is_woken(cwaker)


def test_one_eventfd_write_per_batch(cwaker: CountingWaker) -> None:
    q = TaskQueue(cwaker, LOG)
    for _ in range(100):
        q.push(lambda: None)
        q.push_urgent(lambda: None)
    assert cwaker.wakes == 1
    q.run()
    assert cwaker.wakes == 1  # everything ran: no re-arm
    q.push(lambda: None)
    q.push(lambda: None)
    assert cwaker.wakes == 2
    q.run()


def test_a_task_queued_by_a_task_runs_on_the_next_run(cwaker: CountingWaker) -> None:
    q = TaskQueue(cwaker, LOG)
    ran: list[str] = []
    q.push_urgent(lambda: (ran.append("first"), q.push_urgent(ran.append, "second")))
    q.run()
    assert ran == ["first"]
    assert is_woken(cwaker)
    q.run()
    assert ran == ["first", "second"]


def test_a_raising_task_is_logged_and_the_others_still_run(cwaker: CountingWaker,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    q = TaskQueue(cwaker, LOG)
    ran: list[str] = []

    def boom() -> None:
        raise RuntimeError("task exploded")

    q.push_urgent(boom)
    q.push_urgent(ran.append, "urgent")
    q.push(boom)
    q.push(ran.append, "ordinary")
    with caplog.at_level(logging.ERROR, logger=LOG.name):
        q.run()
    assert ran == ["urgent", "ordinary"]
    failures = [r for r in caplog.records if r.name == LOG.name and r.exc_info]
    assert len(failures) == 2
    assert all(isinstance(r.exc_info[1], RuntimeError) for r in failures)  # type: ignore[index]


def test_close_refuses_new_tasks_and_returns_the_unrun_ones(cwaker: CountingWaker) -> None:
    q = TaskQueue(cwaker, LOG)
    ran: list[str] = []
    q.push(ran.append, "o1")
    q.push_urgent(ran.append, "u1")
    q.push(ran.append, "o2")
    left = q.close()
    assert [args for _, args in left] == [("u1",), ("o1",), ("o2",)]  # urgent first
    assert all(fn == ran.append for fn, _ in left)
    assert q.push(ran.append, "late") is False
    assert q.push_urgent(ran.append, "late") is False
    assert not q.pending()
    q.run()
    assert ran == []


def test_push_returns_true_while_open(cwaker: CountingWaker) -> None:
    q = TaskQueue(cwaker, LOG)
    assert q.push(lambda: None) is True
    assert q.push_urgent(lambda: None) is True


# -- the wake-up race under load ------------------------------------------------------------

PRODUCERS = 4
TASKS_PER_PRODUCER = 20_000
ROUNDS = 8  # the race is hit in about half of the rounds when the order is wrong
DEADLINE = 10.0  # a round takes ~0.2 s when no wake-up is lost


@pytest.mark.parametrize("kind", POLLER_KINDS)
def test_no_wake_up_is_lost_under_concurrent_producers(kind: str) -> None:
    for round_no in range(ROUNDS):
        stress_round(kind, round_no)


def stress_round(kind: str, round_no: int) -> None:
    """A consumer blocked in wait(-1) + run() against PRODUCERS threads pushing as fast as they can."""
    poller = new_poller(kind, False)
    waker = Waker()
    poller.register_listener(waker.fd)
    queue = TaskQueue(waker, LOG, ordinary_limit=256)
    total = PRODUCERS * TASKS_PER_PRODUCER
    done_count = [0]
    all_done = threading.Event()
    stop = threading.Event()
    consumer_error: list[BaseException] = []

    def task() -> None:
        done_count[0] += 1  # runs on the consumer thread only
        if done_count[0] == total:
            all_done.set()

    def consume() -> None:
        try:
            while not stop.is_set() and not all_done.is_set():
                poller.poll(-1, 64)  # blocks with no timeout: a lost wake-up hangs here
                queue.run()
        except BaseException as exc:  # pragma: no cover - reported below
            consumer_error.append(exc)

    def produce(n: int) -> None:
        push: Callable[..., bool] = queue.push_urgent if n % 2 else queue.push
        for _ in range(TASKS_PER_PRODUCER):
            push(task)

    # Switch threads far more often than the default 5 ms, so that producers
    # really do push inside the consumer's run(), where the order of drain
    # and disarm decides whether a wake-up can be lost.
    previous_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    consumer = threading.Thread(target=consume, name="test-consumer")
    producers = [threading.Thread(target=produce, args=(n,), name=f"test-producer-{n}") for n in range(PRODUCERS)]
    try:
        consumer.start()
        for t in producers:
            t.start()
        for t in producers:
            t.join(DEADLINE)
        finished = all_done.wait(DEADLINE)
        stranded = total - done_count[0]
    finally:
        sys.setswitchinterval(previous_interval)
        stop.set()
        waker.wake()  # a direct write: releases a consumer stuck by a lost wake-up
        consumer.join(5)
        alive = consumer.is_alive()
        queue.close()
        poller.close()
        waker.close()
    assert not consumer_error, consumer_error
    assert not alive, "consumer thread did not exit"
    assert finished, (f"round {round_no}: {stranded} of {total} tasks never ran: the consumer was left "
                      f"blocked in wait() with tasks queued (a lost wake-up)")
