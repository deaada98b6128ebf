"""Unit tests of gnetpy.workers' supervision, with no process forked (end to end: tests/integration/).

A fake supervisor records timers and watched channels; ``_fork`` makes a channel pair whose
worker end the test plays the worker on (READY, FAILED, end of file), ``_reap`` reports a
chosen exit status, ``_signal`` records.  Sockets handed over are socket pairs.
"""

from __future__ import annotations

import logging
import select
import signal
import socket
import time
from typing import Any, Callable, Iterator

import pytest
from pytest import LogCaptureFixture, MonkeyPatch

from gnetpy import channel, workers
from gnetpy.counters import SharedCounterTable
from gnetpy.listener import Role
from gnetpy.worker_main import EXIT_START_FAILED
from gnetpy.workers import (BACKOFF_MAX, GIVE_UP_AFTER, START_TIMEOUT, WorkerProcess, WorkerSpec,
                            pick_available)

KILLED = signal.SIGKILL  # a wait status: killed by SIGKILL
START_FAILED = EXIT_START_FAILED << 8


class Supervisor:
    """The parent's main reactor as a WorkerProcess uses it (``_watch`` and ``watch``: a rename in progress)."""

    def __init__(self) -> None:
        self.timers: list[tuple[float, Callable[[], Any]]] = []
        self.watched: dict[int, Callable[[int], Any]] = {}

    def call_later(self, delay: float, fn: Callable[[], Any]) -> None:
        self.timers.append((delay, fn))

    def watch(self, fd: int, on_event: Callable[[int], Any]) -> None:
        self.watched[fd] = on_event

    def unwatch(self, fd: int) -> None:
        self.watched.pop(fd, None)

    _watch = watch
    _unwatch = unwatch

    def run_timers(self) -> list[float]:
        """Run what is scheduled below START_TIMEOUT (not the start checks); return those delays."""
        due = [t for t in self.timers if t[0] < START_TIMEOUT]
        self.timers = [t for t in self.timers if t[0] >= START_TIMEOUT]
        for _, fn in due:
            fn()
        return [delay for delay, _ in due]


class Harness:
    """``n`` serving workers, each played by the test on its end of the channel."""

    def __init__(self, monkeypatch: MonkeyPatch, n: int) -> None:
        self.supervisor = Supervisor()
        self.stopped: list[Any] = []
        self.serving: list[bool] = []  # any_serving() each time serving_changed was called
        self.roles = [Role(tls=object()), Role(proxy="v2")]  # the engine's listener roles
        unused: Any = None
        self.spec = WorkerSpec(handler=unused, opts=unused, own_addresses=(), shared_listeners=(),
                               forget_parent=lambda keep: None, build_loop=unused, build_listener=unused,
                               logger=logging.getLogger("gnetpy"), admit=None, roles=self.roles)
        self.spec.serving_changed = lambda: self.serving.append(self.spec.any_serving())
        self.ends: dict[int, socket.socket] = {}  # index -> the worker's end of its current channel
        self.parents: dict[int, socket.socket] = {}  # and the parent's
        self.forks: list[int] = []
        self.signals: list[tuple[int, int]] = []
        self.exit_status = KILLED
        self.sockets: list[socket.socket] = []
        harness = self

        def fork(w: WorkerProcess) -> None:
            parent, harness.ends[w.index] = channel.pair()
            harness.parents[w.index] = parent
            harness.forks.append(w.index)
            w.pid, w._channel, w._exit_status = 4_000_000 + len(harness.forks), parent, None
            w._started_at, w.state = time.monotonic(), workers.STARTING
            w._forks += 1

        def reap(w: WorkerProcess, timeout: float | None) -> int | None:
            w._exit_status = harness.exit_status
            return w._exit_status

        monkeypatch.setattr(WorkerProcess, "_fork", fork)
        monkeypatch.setattr(WorkerProcess, "_reap", reap)
        monkeypatch.setattr(WorkerProcess, "_signal", lambda w, signum: self.signals.append((w.index, signum)))
        self.table = SharedCounterTable(n)
        self.workers = [WorkerProcess(i, self.spec, self.table.slot(i), self.supervisor,  # type: ignore[arg-type]
                                      self.stopped.append) for i in range(n)]
        self.spec.workers = self.workers
        for w in self.workers:
            w.start()
            channel.send(self.ends[w.index], channel.READY, [("127.0.0.1", 1000 + w.index)])
            w.wait_ready(5)

    def deliver(self, i: int) -> None:
        """The main reactor's event on worker ``i``'s channel, as the poller reports it."""
        parent = self.parents[i]
        assert select.select([parent], [], [], 5)[0], "nothing to read on the channel"
        self.supervisor.watched[parent.fileno()](select.EPOLLIN)

    def ready(self, i: int) -> None:
        channel.send(self.ends[i], channel.READY, [])
        self.deliver(i)

    def die(self, i: int, error: BaseException | None = None) -> None:
        if error is not None:
            channel.send(self.ends[i], channel.FAILED, (error, f"Traceback: {error}"))
        self.ends[i].close()
        self.deliver(i)

    def received(self, i: int) -> list[tuple[bytes, Any, list[socket.socket]]]:
        """Every message waiting on worker ``i``'s end, with the sockets it carried."""
        out = []
        while select.select([self.ends[i]], [], [], 0)[0] and (message := channel.receive(self.ends[i])):
            kind, payload, fds = message
            out.append((kind, payload, [self.keep(socket.socket(fileno=fd)) for fd in fds]))
        return out

    def keep(self, sock: socket.socket) -> socket.socket:
        sock.settimeout(5)
        self.sockets.append(sock)
        return sock

    def socketpair(self) -> tuple[socket.socket, socket.socket]:
        a, b = socket.socketpair()
        return self.keep(a), self.keep(b)

    def close(self) -> None:
        for w in self.workers:
            w.release()
        for s in [*self.ends.values(), *self.parents.values(), *self.sockets]:
            s.close()


Make = Callable[[int], Harness]


@pytest.fixture
def harness(monkeypatch: MonkeyPatch) -> Iterator[Make]:
    made: list[Harness] = []

    def make(n: int) -> Harness:
        made.append(Harness(monkeypatch, n))
        return made[-1]

    yield make
    for h in made:
        h.close()


def test_replacements_that_fail_to_start_back_off_then_stop_the_engine(harness: Make, monkeypatch: MonkeyPatch) -> None:
    monkeypatch.setattr(workers, "RESTART_WINDOW", 0.0)  # the first deaths come after serving long
    h = harness(2)
    h.exit_status = START_FAILED
    delays: dict[int, list[float]] = {0: [], 1: []}
    for i in (0, 1):
        h.die(i)
        assert h.supervisor.run_timers() == [0.0]  # a worker that served is replaced at once
    for attempt in range(1, GIVE_UP_AFTER + 1):
        for i in (0, 1):
            assert h.workers[i].state == workers.STARTING and not h.stopped
            h.die(i, ConnectionError(f"no database for worker {i}"))
            if not h.stopped:
                delays[i] += h.supervisor.run_timers()
    assert delays[0] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6])  # worker 0 reached 5 first: one more try
    assert delays[1] == pytest.approx([0.1, 0.2, 0.4, 0.8])
    [error] = h.stopped
    assert isinstance(error, RuntimeError)
    assert f"every worker failed to start {GIVE_UP_AFTER} times in a row" in str(error)
    assert "no database for worker 1" in str(error)  # the last failure's own error
    assert not h.supervisor.run_timers()  # nothing is started again


def test_one_worker_failing_to_start_backs_off_up_to_the_cap_and_never_stops(harness: Make,
                                                                          caplog: LogCaptureFixture) -> None:
    h = harness(2)
    h.die(0)  # served, died soon after starting: back-off 0.1
    h.exit_status = START_FAILED
    delays = h.supervisor.run_timers()
    with caplog.at_level(logging.WARNING, logger="gnetpy"):
        for _ in range(9):
            h.die(0)
            delays += h.supervisor.run_timers()
    assert delays == pytest.approx([0.1 * 2 ** k for k in range(7)] + [BACKOFF_MAX] * 3)
    assert not h.stopped  # worker 1 serves: failures of one worker alone never stop the engine
    assert "worker 0 failed to start 9 times in a row; next try in 10.0s" in caplog.records[-1].getMessage()


@pytest.mark.parametrize("served_long", [True, False])
def test_a_serving_worker_that_dies_is_always_replaced(harness: Make, monkeypatch: MonkeyPatch,
                                                       served_long: bool) -> None:
    monkeypatch.setattr(workers, "RESTART_WINDOW", 0.0 if served_long else 3600.0)
    h = harness(1)
    delays = []
    for _ in range(3 * GIVE_UP_AFTER):
        h.die(0)
        assert h.workers[0].state == workers.EXITED
        delays += h.supervisor.run_timers()
        h.ready(0)
    assert h.forks == [0] * (3 * GIVE_UP_AFTER + 1) and not h.stopped
    if served_long:
        assert delays == [0.0] * len(delays)
    else:  # a crash loop backs off, doubling up to the cap
        assert delays == pytest.approx([min(BACKOFF_MAX, 0.1 * 2 ** k) for k in range(len(delays))])
    assert h.signals == []  # a replacement that served was never killed for being slow to start


def test_serving_changed_follows_the_workers_and_any_serving_with_it(harness: Make) -> None:
    h = harness(2)
    assert h.serving == [True, True] and h.spec.any_serving() and h.workers[1].addrs == [("127.0.0.1", 1001)]
    h.die(0)
    h.die(1)
    assert h.serving[2:] == [True, False] and not h.spec.any_serving()
    h.supervisor.run_timers()
    h.ready(1)
    assert h.serving[4:] == [True] and h.spec.any_serving()
    h.workers[1].shutdown(time.monotonic() + 5)
    assert not h.spec.any_serving()  # a worker told to stop no longer counts


def test_sockets_cross_to_a_serving_worker_in_one_batch(harness: Make) -> None:
    h = harness(1)
    w = h.workers[0]
    pairs = [h.socketpair() for _ in range(3)]
    for k, (a, _) in enumerate(pairs):
        w.hand_over(a, ("10.0.0.1", k), h.roles[1] if k == 1 else None)
    assert w.count_connections() == 3 and h.received(0) == []  # queued until the end of the iteration
    assert len(h.supervisor.timers) == 1  # one send for the batch
    h.supervisor.run_timers()
    [(kind, payload, socks)] = h.received(0)
    assert kind == channel.SOCKETS and payload == [(("10.0.0.1", 0), -1), (("10.0.0.1", 1), 1), (("10.0.0.1", 2), -1)]
    for (a, b), sock in zip(pairs, socks):
        assert a.fileno() == -1  # the parent's copy is closed once sent
        b.sendall(b"hi")
        assert sock.recv(2) == b"hi"  # the worker got that very connection


def test_a_worker_being_replaced_keeps_its_sockets_up_to_max_pending(harness: Make, monkeypatch: MonkeyPatch,
                                                                     caplog: LogCaptureFixture) -> None:
    monkeypatch.setattr(workers, "MAX_PENDING", 2)
    h = harness(1)
    w = h.workers[0]
    h.die(0)
    assert not w.available
    pairs = [h.socketpair() for _ in range(3)]
    with caplog.at_level(logging.WARNING, logger="gnetpy"):
        for a, _ in pairs:
            w.hand_over(a, ("10.0.0.2", 1))
    assert [a.fileno() == -1 for a, _ in pairs] == [False, False, True]  # the third is closed
    assert "worker 0 has 2 connections waiting" in caplog.records[-1].getMessage()
    h.supervisor.run_timers()  # the replacement forks
    assert h.received(0) == []  # nothing sent before it serves
    h.ready(0)
    [(kind, payload, socks)] = h.received(0)
    assert kind == channel.SOCKETS and len(socks) == 2 and w.count_connections() == 2


def test_a_dead_workers_queue_goes_to_a_serving_worker_or_waits_for_its_replacement(harness: Make) -> None:
    h = harness(2)
    a, b = h.socketpair()
    h.workers[0].hand_over(a, ("10.0.0.3", 7), h.roles[0])
    h.die(0)  # before the send ran: worker 1 serves, and takes it
    assert h.workers[0].count_connections() == 0 and h.workers[1].count_connections() == 1
    h.supervisor.run_timers()  # (worker 0 forks again)
    [(_, payload, [sock])] = h.received(1)
    assert payload == [(("10.0.0.3", 7), 0)]  # with its role
    b.sendall(b"x")
    assert sock.recv(1) == b"x"
    c, _ = h.socketpair()
    h.workers[1].hand_over(c, ("10.0.0.4", 1))
    h.die(1)  # and none serves now: worker 1's replacement keeps it
    assert h.workers[1].count_connections() == 1 and h.workers[0].count_connections() == 0
    h.supervisor.run_timers()
    h.ready(0)
    assert h.received(0) == []  # not worker 0's
    h.ready(1)
    [(kind, payload, _)] = h.received(1)
    assert kind == channel.SOCKETS and payload == [(("10.0.0.4", 1), -1)]


def test_a_replacement_that_does_not_serve_in_time_is_killed(harness: Make) -> None:
    h = harness(2)
    for i in (0, 1):
        h.die(i)
    h.supervisor.run_timers()  # both fork again
    h.ready(1)
    assert [delay for delay, _ in h.supervisor.timers] == [START_TIMEOUT, START_TIMEOUT]
    for _, check in h.supervisor.timers:
        check()
    assert h.signals == [(0, signal.SIGKILL)]  # worker 1 served in time


def test_pick_available_skips_workers_that_cannot_take_a_socket(harness: Make, monkeypatch: MonkeyPatch) -> None:
    monkeypatch.setattr(workers, "MAX_PENDING", 1)
    h = harness(4)
    w = h.workers
    choose = pick_available(lambda remote: w[remote], w)
    h.die(1)  # being replaced
    w[2].shutdown(time.monotonic() + 5)  # stopping
    w[3].hand_over(h.socketpair()[0], ("10.0.0.5", 1))  # its queue is full
    assert [choose(i).index for i in range(4)] == [0, 0, 0, 0]
    h.die(0)
    assert choose(1) is w[1] and choose(3) is w[3]  # none can: the balancer's choice keeps it


def test_shutdown_sends_stop_once_and_again_only_for_an_earlier_deadline(harness: Make,
                                                                         caplog: LogCaptureFixture) -> None:
    h = harness(2)
    w = h.workers[0]
    a, _ = h.socketpair()
    w.hand_over(a, ("10.0.0.6", 1))
    now = time.monotonic()
    w.shutdown(now + 30)
    assert a.fileno() == -1 and w.count_connections() == 0  # what was queued for it is dropped
    w.shutdown(now + 30)
    w.shutdown(now + 60)
    w.shutdown(now + 1)
    stops = h.received(0)
    assert [kind for kind, _, _ in stops] == [channel.STOP, channel.STOP]
    assert 29 < stops[0][1] <= 30 and 0 < stops[1][1] <= 1
    b, _ = h.socketpair()
    w.hand_over(b, ("10.0.0.6", 2))
    assert b.fileno() == -1  # a stopping worker takes no more
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="gnetpy"):
        h.die(0)
    assert not caplog.records  # its exit was expected: nothing to report, no failure counted
    h.die(1)
    h.supervisor.run_timers()
    assert h.forks == [0, 1, 1]  # the stopped worker is not replaced; the other is
    assert w.join(0) and w.count_connections() == 0
