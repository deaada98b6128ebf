"""Unit tests of gnetpy.acceptor's Acceptor: a real listening socket, a fake poller and timers.

The poller records what the acceptor registers, ``call_later`` records what it schedules
(the test runs it), and the target ``pick`` returns records each hand-over and closes the
socket -- no event loop, no thread.  Clients connect to the real listener, so the accepts
are real; EMFILE and a peer gone before its accept are simulated on the listener's socket.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
from typing import Any, Callable, Iterator

import pytest

from conftest import wait_for
from gnetpy.acceptor import ACCEPT_BATCH, BACKOFF_MAX, BACKOFF_MIN, ROOM_CHECK, Acceptor
from gnetpy.address import parse_address
from gnetpy.listener import Listener, Role
from gnetpy.options import Options


class Poller:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.registered: set[int] = set()

    def register_listener(self, fd: int, exclusive: bool) -> None:
        assert fd not in self.registered, "registered twice"
        self.calls.append(("register", fd))
        self.registered.add(fd)

    def unregister(self, fd: int) -> None:
        assert fd in self.registered, "unregistered without being registered"
        self.calls.append(("unregister", fd))
        self.registered.discard(fd)


class Target:
    """Where accepted sockets go: records (remote, role, TCP_NODELAY) and closes the socket."""

    def __init__(self) -> None:
        self.got: list[tuple[Any, Any, int]] = []

    def hand_over(self, sock: socket.socket, remote: Any, role: Any = None) -> None:
        self.got.append((remote, role, sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)))
        sock.close()


class Harness:
    def __init__(self, **options: Any) -> None:
        self.opts = Options(**options)
        self.listener = Listener(parse_address("tcp://127.0.0.1:0"), self.opts)
        self.port = self.listener.addr[1]
        self.poller = Poller()
        self.timers: list[tuple[float, Callable[[], Any]]] = []
        self.target = Target()
        self.clients: list[socket.socket] = []
        self.room = True

    def acceptor(self, admit: bool = False) -> Acceptor:
        return Acceptor(self.listener, self.poller, lambda remote: self.target,  # type: ignore[arg-type]
                        lambda delay, fn: self.timers.append((delay, fn)), self.opts,
                        admit=(lambda: self.room) if admit else None)

    @property
    def registered(self) -> bool:
        return self.listener.fd in self.poller.registered

    def connect(self, n: int = 1) -> None:
        for _ in range(n):
            self.clients.append(socket.create_connection(("127.0.0.1", self.port), timeout=5))

    def run_timers(self) -> list[float]:
        """Run what was scheduled so far (not what that schedules); return the delays."""
        due, self.timers = self.timers, []
        for _, fn in due:
            fn()
        return [delay for delay, _ in due]

    def close(self) -> None:
        for s in self.clients:
            s.close()
        self.listener.close()


@pytest.fixture
def harness() -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(**options: Any) -> Harness:
        made.append(Harness(**options))
        return made[-1]

    yield make
    for h in made:
        h.close()


def accept_until(h: Harness, a: Acceptor, n: int) -> None:
    """Readiness events until ``n`` sockets were handed over (a connect may land in the backlog a moment late)."""
    def done() -> bool:
        a.on_acceptable()
        return len(h.target.got) >= n
    wait_for(done, timeout=5)
    assert len(h.target.got) == n


def fail_accepts(monkeypatch: pytest.MonkeyPatch, h: Harness, errors: list[int]) -> None:
    """The listener's next accepts fail with ``errors``, in order (socket.socket has slots: patch the class)."""
    real_accept = socket.socket.accept

    def accept(sock: socket.socket) -> Any:
        if sock is h.listener.sock and errors:
            code = errors.pop(0)
            raise OSError(code, os.strerror(code))
        return real_accept(sock)

    monkeypatch.setattr(socket.socket, "accept", accept)


def test_a_burst_is_accepted_at_most_a_batch_per_event(harness: Callable[..., Harness]) -> None:
    h = harness()
    h.listener.role = role = Role(tls=object(), proxy="v1")  # the listener's role goes along with each socket
    a = h.acceptor()
    a.start()
    h.connect(ACCEPT_BATCH + 6)
    a.on_acceptable()
    assert len(h.target.got) == ACCEPT_BATCH
    accept_until(h, a, ACCEPT_BATCH + 6)
    a.on_acceptable()  # nothing pending: returns at once
    assert len(h.target.got) == ACCEPT_BATCH + 6
    assert {remote for remote, _, _ in h.target.got} == {c.getsockname() for c in h.clients}
    assert all(r is role and nodelay for _, r, nodelay in h.target.got)  # configured for the target
    assert h.registered and not h.timers


def test_max_connections_pauses_accepting_until_there_is_room(harness: Callable[..., Harness],
                                                            caplog: pytest.LogCaptureFixture) -> None:
    h = harness(max_connections=3)
    a = h.acceptor(admit=True)
    a.start()
    h.connect(2)
    accept_until(h, a, 2)
    h.room = False  # the engine is full now
    with caplog.at_level(logging.INFO, logger="gnetpy"):
        h.connect(1)
        a.on_acceptable()
        assert len(h.target.got) == 2 and not h.registered
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "max_connections (3)" in warnings[0] and f":{h.port}" in warnings[0]
        for _ in range(3):  # looked at again every ROOM_CHECK while full, still unregistered
            assert h.run_timers() == [ROOM_CHECK] and not h.registered
        h.room = True
        assert h.run_timers() == [ROOM_CHECK] and h.registered and not h.timers
        assert any("below max_connections again" in r.getMessage() for r in caplog.records)
    accept_until(h, a, 3)  # the connection that waited in the backlog
    h.room = False
    a.on_acceptable()  # full a second time: warned again
    assert sum(r.levelno == logging.WARNING for r in caplog.records) == 2


def test_hold_keeps_the_listener_out_of_the_poller(harness: Callable[..., Harness]) -> None:
    h = harness()
    a = h.acceptor()
    a.hold(True)
    a.start()
    assert not h.registered  # held before it started: start() waits for the release
    a.hold(False)
    assert h.registered
    a.hold(True)
    assert not h.registered
    a.start()
    assert not h.registered
    h.connect(1)
    a.hold(False)
    accept_until(h, a, 1)  # what arrived while held waited in the backlog


def test_an_acceptor_that_is_not_holdable_keeps_accepting(harness: Callable[..., Harness]) -> None:
    """The metrics page's: served while no worker serves (when it matters most)."""
    h = harness()
    a = Acceptor(h.listener, h.poller, lambda remote: h.target, lambda delay, fn: None,  # type: ignore[arg-type]
                 h.opts, holdable=False)
    a.start()
    a.hold(True)
    assert h.registered
    h.connect(1)
    accept_until(h, a, 1)


def test_running_out_of_descriptors_backs_off_doubling(harness: Callable[..., Harness],
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    h = harness()
    a = h.acceptor()
    a.start()
    errors = [errno.EMFILE] * 9
    fail_accepts(monkeypatch, h, errors)
    expected = [BACKOFF_MIN * 2 ** k for k in range(7)] + [BACKOFF_MAX, BACKOFF_MAX]  # 0.01 .. 0.64, then 1.0
    delays = []
    with caplog.at_level(logging.WARNING, logger="gnetpy"):
        for _ in expected:
            a.on_acceptable()
            assert not h.registered  # no spinning on a listener that stays readable
            delays.extend(h.run_timers())  # the retry registers the listener again
            assert h.registered
    assert delays == pytest.approx(expected)
    assert f"127.0.0.1:{h.port}" in caplog.records[0].getMessage()
    assert "pausing accept for 0.01s" in caplog.records[0].getMessage()
    h.connect(1)
    accept_until(h, a, 1)  # a successful accept resets the back-off
    errors.append(errno.ENFILE)
    a.on_acceptable()
    assert h.run_timers() == pytest.approx([BACKOFF_MIN])


@pytest.mark.parametrize("code", [errno.ECONNABORTED, errno.EPROTO, errno.ETIMEDOUT])
def test_a_connection_gone_before_its_accept_is_skipped(harness: Callable[..., Harness],
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture, code: int) -> None:
    h = harness()
    a = h.acceptor()
    a.start()
    h.connect(1)
    assert select.select([h.listener.sock], [], [], 5)[0]  # pending in the backlog
    fail_accepts(monkeypatch, h, [code])
    with caplog.at_level(logging.WARNING, logger="gnetpy"):
        a.on_acceptable()
    assert len(h.target.got) == 1  # the next pending connection is accepted in the same event
    assert h.registered and not h.timers and not caplog.records


def test_another_accept_error_is_logged_and_the_listener_stays(harness: Callable[..., Harness],
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    h = harness()
    a = h.acceptor()
    a.start()
    fail_accepts(monkeypatch, h, [errno.EINVAL])
    with caplog.at_level(logging.ERROR, logger="gnetpy"):
        a.on_acceptable()
    assert h.registered and not h.timers
    assert len(caplog.records) == 1 and f":{h.port} failed" in caplog.records[0].getMessage()


def test_stop_unregisters_for_good(harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch) -> None:
    h = harness()
    a = h.acceptor(admit=True)
    a.start()
    fail_accepts(monkeypatch, h, [errno.EMFILE])
    a.on_acceptable()  # a back-off retry pending
    h.room = False
    a.start()
    a.on_acceptable()  # and a room check pending
    a.start()
    a.stop()
    assert not h.registered
    h.room = True
    h.run_timers()
    a.start()
    a.hold(True)
    a.hold(False)
    assert not h.registered and not h.timers
    # By the two start()s before it was full: not by start() while full, nor after stop().
    assert [call for call, _ in h.poller.calls].count("register") == 2
    a.stop()  # again: nothing to unregister
