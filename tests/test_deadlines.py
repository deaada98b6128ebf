"""deadlines.py: the idle-timeout wheel, on a fake clock and fake connections -- no sockets, no sleeping."""

from __future__ import annotations

from typing import Any, Callable

from gnetpy.deadlines import FifoDeadlines, IdleWheel
from gnetpy.state import CLOSED, OPEN


class FakeConn:
    def __init__(self, seen: float) -> None:
        self._seen = seen
        self._state = OPEN


class Clock:
    """A clock and a timer list: ``advance`` runs what comes due."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.timers: list[tuple[float, Callable[[], Any]]] = []

    def call_later(self, delay: float, fn: Callable[[], Any]) -> Any:
        self.timers.append((self.now + delay, fn))
        return _Handle(self.timers, self.timers[-1])

    def advance(self, seconds: float, step: float = 0.01) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + step)
            for due in sorted(t for t in self.timers if t[0] <= self.now):
                if due in self.timers:
                    self.timers.remove(due)
                    due[1]()


class _Handle:
    def __init__(self, timers: list[Any], entry: Any) -> None:
        self.timers, self.entry = timers, entry

    def cancel(self) -> None:
        if self.entry in self.timers:
            self.timers.remove(self.entry)


def wheel(clock: Clock, timeout: float = 8.0) -> tuple[IdleWheel, list[FakeConn]]:
    expired: list[FakeConn] = []

    def expire(c: Any) -> None:
        expired.append(c)
        c._state = CLOSED

    return IdleWheel(timeout, clock.call_later, expire, clock=lambda: clock.now), expired


def test_an_idle_connection_closes_between_the_timeout_and_one_slot_later() -> None:
    clock = Clock()
    w, expired = wheel(clock)
    c = FakeConn(clock.now)
    w.add(c, clock.now)
    clock.advance(7.9)
    assert expired == []
    clock.advance(1.2)  # 8 s, plus at most one slot (1 s)
    assert expired == [c]


def test_a_connection_that_reads_is_moved_not_closed() -> None:
    clock = Clock()
    w, expired = wheel(clock)
    c = FakeConn(clock.now)
    w.add(c, clock.now)
    for _ in range(20):  # reads every 2 s for 40 s
        clock.advance(2)
        c._seen = clock.now
    assert expired == []
    clock.advance(9.5)
    assert expired == [c]


def test_each_connection_costs_one_visit_per_timeout_however_often_it_reads() -> None:
    clock = Clock()
    w, expired = wheel(clock)
    conns = [FakeConn(clock.now) for _ in range(1000)]
    for c in conns:
        w.add(c, clock.now)
    for _ in range(400):  # 40 s of reads, 10 per second per connection
        clock.advance(0.1, step=0.1)
        for c in conns:
            c._seen = clock.now
    assert expired == []
    assert w.examined <= 1000 * (40 / 8 + 1)  # once per timeout each: not once per read or per tick


def test_closed_connections_are_dropped_when_their_bucket_comes() -> None:
    clock = Clock()
    w, expired = wheel(clock)
    gone = FakeConn(clock.now)
    w.add(gone, clock.now)
    gone._state = CLOSED
    clock.advance(10)
    assert expired == [] and w.examined == 1 and not clock.timers  # nothing left to watch: no timer


def test_one_timer_at_a_time_whatever_the_number_of_connections() -> None:
    clock = Clock()
    w, _ = wheel(clock)
    for i in range(5000):
        w.add(FakeConn(clock.now), clock.now)
        clock.now += 0.001
    assert len(clock.timers) == 1


def test_stop_cancels_the_timer_and_forgets_everything() -> None:
    clock = Clock()
    w, expired = wheel(clock)
    w.add(FakeConn(clock.now), clock.now)
    w.stop()
    clock.advance(20)
    assert expired == [] and not clock.timers


# -- FifoDeadlines: same-length deadlines (close_timeout, tls_handshake_timeout) --------------


def fifo(clock: Clock, seconds: float = 1.0) -> tuple[FifoDeadlines, list[Any]]:
    expired: list[Any] = []
    return FifoDeadlines(seconds, clock.call_later, expired.append, clock=lambda: clock.now), expired


def test_fifo_deadlines_expire_in_order_each_on_time() -> None:
    clock = Clock()
    deadlines, expired = fifo(clock)
    deadlines.add("a")
    clock.advance(0.5)
    deadlines.add("b")
    clock.advance(0.49)
    assert expired == []
    clock.advance(0.02)
    assert expired == ["a"]
    clock.advance(0.5)
    assert expired == ["a", "b"] and len(deadlines) == 0 and clock.timers == []


def test_fifo_deadlines_discarded_keys_never_expire_and_one_timer_serves_all() -> None:
    clock = Clock()
    deadlines, expired = fifo(clock)
    for key in range(1000):
        deadlines.add(key)
    assert len(clock.timers) == 1
    for key in range(0, 1000, 2):
        deadlines.discard(key)
    assert 1 in deadlines and 0 not in deadlines
    clock.advance(1.01)
    assert expired == list(range(1, 1000, 2))


def test_fifo_deadlines_stop_cancels_the_timer() -> None:
    clock = Clock()
    deadlines, expired = fifo(clock)
    deadlines.add("a")
    deadlines.stop()
    clock.advance(2)
    assert expired == [] and clock.timers == [] and len(deadlines) == 0
