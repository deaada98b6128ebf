"""poller/: both backends, the eventfd Waker and the TaskQueue -- including its wake-up race.

The backends (epoll and the portable poll) are driven through ``new_poller``
over real socket pairs.  ``TaskQueue`` promises one eventfd write per batch
and no lost wake-ups; the stress test at the end has producer threads flood a
consumer that blocks in ``wait(-1)`` with no timeout, so a lost wake-up shows
up as tasks stranded while the consumer sleeps (caught by a deadline rather
than a hang).  It guards a real, fixed bug: disarming before draining the
eventfd let a drain swallow the write of a producer that armed in between.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import sys
import threading
import time
from typing import Any, Callable, Iterator

import pytest

from gnetpy.poller import ERR, HUP, IN, OUT, READ_EVENTS, EpollPoller, PollPoller, new_poller
from gnetpy.poller.taskqueue import TaskQueue
from gnetpy.poller.waker import Waker

KINDS = ["epoll", "poll"]
LOG = logging.getLogger("gnetpy.test-taskqueue")


@pytest.fixture(params=KINDS)
def poller(request: pytest.FixtureRequest) -> Iterator[Any]:
    p = new_poller(request.param, False)
    yield p
    p.close()


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def waker() -> Iterator[Waker]:
    w = Waker()
    yield w
    if w.fd >= 0:
        w.close()


def events(p: Any, timeout: float = 0) -> dict[int, int]:
    return dict(p.wait(timeout, 64))


# -- new_poller ------------------------------------------------------------------------


def test_new_poller_picks_the_named_backend() -> None:
    for kind, cls in (("epoll", EpollPoller), ("poll", PollPoller)):
        p = new_poller(kind, False)
        assert type(p) is cls and p.name == kind
        p.close()


def test_new_poller_defaults_to_epoll_on_linux() -> None:
    p = new_poller(None, False)
    assert isinstance(p, EpollPoller)
    p.close()


def test_new_poller_refuses_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match=r"poller: 'kqueue'; accepted: 'epoll', 'poll'"):
        new_poller("kqueue", False)


def test_edge_triggered_only_where_supported() -> None:
    ep, pp = new_poller("epoll", True), new_poller("poll", True)
    assert ep.edge_triggered is True
    assert pp.edge_triggered is False  # the loop must keep to its level-triggered paths
    ep.close()
    pp.close()


def test_poll_masks_are_epolls() -> None:
    # The loop tests bits without translating: the backends must agree.
    assert (IN, OUT, ERR, HUP) == (select.EPOLLIN, select.EPOLLOUT, select.EPOLLERR, select.EPOLLHUP)
    assert READ_EVENTS & IN and READ_EVENTS & HUP and READ_EVENTS & ERR and not READ_EVENTS & OUT


# -- register / modify / delete ---------------------------------------------------------


def test_nothing_ready_means_no_events(poller: Any, pair: tuple[socket.socket, socket.socket]) -> None:
    a, _ = pair
    poller.add_read(a.fileno())
    assert events(poller) == {}


def test_readable_after_the_peer_writes(poller: Any, pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    poller.add_read(a.fileno())
    b.send(b"x")
    assert events(poller, 1) == {a.fileno(): IN}


def test_level_triggered_reports_again_until_read(poller: Any, pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    poller.add_read(a.fileno())
    b.send(b"x")
    assert events(poller, 1) == {a.fileno(): IN}
    assert events(poller) == {a.fileno(): IN}
    a.recv(1)
    assert events(poller) == {}


def test_read_write_registration_reports_writable(poller: Any, pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    poller.add_read_write(a.fileno())
    assert events(poller) == {a.fileno(): OUT}
    b.send(b"x")
    assert events(poller) == {a.fileno(): IN | OUT}


def test_modify_switches_the_interest(poller: Any, pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    fd = a.fileno()
    poller.add_read(fd)
    b.send(b"x")
    poller.modify_write(fd)
    assert events(poller) == {fd: OUT}
    poller.modify_read_write(fd)
    assert events(poller) == {fd: IN | OUT}
    poller.modify_read(fd)
    assert events(poller) == {fd: IN}


def test_delete_stops_the_events(poller: Any, pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    poller.add_read_write(a.fileno())
    b.send(b"x")
    assert events(poller)
    poller.delete(a.fileno())
    assert events(poller) == {}


def test_delete_of_an_unknown_or_closed_fd_is_harmless(poller: Any, pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    poller.delete(a.fileno())  # never registered
    poller.add_read(a.fileno())
    poller.delete(a.fileno())
    poller.delete(a.fileno())  # twice
    poller.delete(10_000)  # no such descriptor
    c, d = socket.socketpair()
    poller.add_read(c.fileno())
    fd = c.fileno()
    c.close()
    d.close()
    poller.delete(fd)  # already closed
    b.send(b"x")
    assert events(poller) == {}


def test_peer_close_reaches_the_read_path(poller: Any, pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    poller.add_read(a.fileno())
    b.close()
    got = events(poller, 1)
    assert got[a.fileno()] & READ_EVENTS


def test_listener_readable_on_a_pending_connection(poller: Any) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        poller.add_listener(server.fileno())
        assert events(poller) == {}
        with socket.create_connection(server.getsockname(), timeout=5):
            assert events(poller, 5) == {server.fileno(): IN}


def test_shared_listener_registration_works_with_epoll() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        p = new_poller("epoll", False)
        p.add_listener(server.fileno(), shared=True)  # EPOLLEXCLUSIVE where available
        with socket.create_connection(server.getsockname(), timeout=5):
            assert events(p, 5) == {server.fileno(): IN}
        p.close()


def test_edge_triggered_reports_each_edge_once(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    p = new_poller("epoll", True)
    try:
        p.add_read(a.fileno())  # IN|OUT|ET, once and for all
        assert events(p) == {a.fileno(): OUT}
        assert events(p) == {}  # no new edge
        b.send(b"x")
        assert events(p, 1)[a.fileno()] & IN
        assert events(p) == {}  # still unread, but no new edge
        b.send(b"y")
        assert events(p, 1)[a.fileno()] & IN
    finally:
        p.close()


@pytest.mark.parametrize("timeout", [0.05, 0.2])
def test_wait_honours_its_timeout(poller: Any, pair: tuple[socket.socket, socket.socket], timeout: float) -> None:
    a, _ = pair
    poller.add_read(a.fileno())
    start = time.monotonic()
    assert poller.wait(timeout, 64) == []
    elapsed = time.monotonic() - start
    assert timeout * 0.9 <= elapsed < timeout + 1.0


def test_wait_zero_does_not_block(poller: Any, pair: tuple[socket.socket, socket.socket]) -> None:
    a, _ = pair
    poller.add_read(a.fileno())
    start = time.monotonic()
    assert poller.wait(0, 64) == []
    assert time.monotonic() - start < 0.5


def test_wait_forever_returns_when_an_fd_becomes_ready(poller: Any, pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    poller.add_read(a.fileno())
    timer = threading.Timer(0.05, b.send, args=(b"x",))
    timer.start()
    try:
        assert poller.wait(-1, 64) == [(a.fileno(), IN)]
    finally:
        timer.join(5)


# -- Waker ------------------------------------------------------------------------------


def test_waker_wakes_a_poller_and_drain_resets_it(poller: Any, waker: Waker) -> None:
    poller.add_listener(waker.fd)
    assert events(poller) == {}
    waker.wake()
    assert events(poller, 1) == {waker.fd: IN}
    waker.drain()
    assert events(poller) == {}


def test_waker_works_many_times(poller: Any, waker: Waker) -> None:
    poller.add_listener(waker.fd)
    for i in range(500):
        for _ in range(i % 3 + 1):  # several wakes collapse into one readiness
            waker.wake()
        assert events(poller, 1) == {waker.fd: IN}, f"round {i}"
        waker.drain()
        assert events(poller) == {}, f"round {i}"


def test_waker_drain_without_wake_does_not_block(waker: Waker) -> None:
    start = time.monotonic()
    waker.drain()
    assert time.monotonic() - start < 0.5


def test_waker_wakes_a_poller_blocked_in_another_thread(poller: Any, waker: Waker) -> None:
    poller.add_listener(waker.fd)
    got: list[Any] = []
    t = threading.Thread(target=lambda: got.append(poller.wait(10, 64)))
    t.start()
    time.sleep(0.02)  # let it block (not needed for correctness)
    waker.wake()
    t.join(5)
    assert not t.is_alive()
    assert got == [[(waker.fd, IN)]]


def test_waker_close_releases_its_descriptors() -> None:
    w = Waker()
    fd = w.fd
    w.close()
    assert w.fd == -1
    with pytest.raises(OSError):
        os.fstat(fd)


def test_pipe_fallback_where_there_is_no_eventfd(monkeypatch: pytest.MonkeyPatch, poller: Any) -> None:
    monkeypatch.delattr(os, "eventfd")
    w = Waker()
    try:
        assert w.fd != w._write_fd  # a pipe
        poller.add_listener(w.fd)
        for _ in range(3):
            w.wake()
            w.wake()
            assert events(poller, 1) == {w.fd: IN}
            w.drain()
            assert events(poller) == {}
    finally:
        fds = (w.fd, w._write_fd)
        w.close()
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)


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


@pytest.mark.parametrize("kind", KINDS)
def test_no_wake_up_is_lost_under_concurrent_producers(kind: str) -> None:
    for round_no in range(ROUNDS):
        stress_round(kind, round_no)


def stress_round(kind: str, round_no: int) -> None:
    """A consumer blocked in wait(-1) + run() against PRODUCERS threads pushing as fast as they can."""
    poller = new_poller(kind, False)
    waker = Waker()
    poller.add_listener(waker.fd)
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
                poller.wait(-1, 64)  # blocks with no timeout: a lost wake-up hangs here
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
