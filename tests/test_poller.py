"""poller/: both backends (epoll and the portable poll), driven through ``new_poller`` over real socket pairs."""

from __future__ import annotations

import select
import socket
import threading
import time
from typing import Any

import pytest

from conftest import events
from gnetpy.poller import (
    ERR,
    HUP,
    IN,
    OUT,
    READ_EVENTS,
    EpollPoller,
    PollPoller,
    new_poller,
)

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
    poller.register(a.fileno(), IN)
    assert events(poller) == {}


def test_readable_after_the_peer_writes(poller: Any, pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    poller.register(a.fileno(), IN)
    b.send(b"x")
    assert events(poller, 1) == {a.fileno(): IN}


def test_level_triggered_reports_again_until_read(poller: Any, pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    poller.register(a.fileno(), IN)
    b.send(b"x")
    assert events(poller, 1) == {a.fileno(): IN}
    assert events(poller) == {a.fileno(): IN}
    a.recv(1)
    assert events(poller) == {}


def test_read_write_registration_reports_writable(poller: Any, pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    poller.register(a.fileno(), IN | OUT)
    assert events(poller) == {a.fileno(): OUT}
    b.send(b"x")
    assert events(poller) == {a.fileno(): IN | OUT}


def test_modify_switches_the_interest(poller: Any, pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    fd = a.fileno()
    poller.register(fd, IN)
    b.send(b"x")
    poller.modify(fd, OUT)
    assert events(poller) == {fd: OUT}
    poller.modify(fd, IN | OUT)
    assert events(poller) == {fd: IN | OUT}
    poller.modify(fd, IN)
    assert events(poller) == {fd: IN}


def test_delete_stops_the_events(poller: Any, pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    poller.register(a.fileno(), IN | OUT)
    b.send(b"x")
    assert events(poller)
    poller.unregister(a.fileno())
    assert events(poller) == {}


def test_delete_of_an_unknown_or_closed_fd_is_harmless(poller: Any, pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    poller.unregister(a.fileno())  # never registered
    poller.register(a.fileno(), IN)
    poller.unregister(a.fileno())
    poller.unregister(a.fileno())  # twice
    poller.unregister(10_000)  # no such descriptor
    c, d = socket.socketpair()
    poller.register(c.fileno(), IN)
    fd = c.fileno()
    c.close()
    d.close()
    poller.unregister(fd)  # already closed
    b.send(b"x")
    assert events(poller) == {}


def test_peer_close_reaches_the_read_path(poller: Any, pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    poller.register(a.fileno(), IN)
    b.close()
    got = events(poller, 1)
    assert got[a.fileno()] & READ_EVENTS


def test_listener_readable_on_a_pending_connection(poller: Any) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        poller.register_listener(server.fileno())
        assert events(poller) == {}
        with socket.create_connection(server.getsockname(), timeout=5):
            assert events(poller, 5) == {server.fileno(): IN}


def test_shared_listener_registration_works_with_epoll() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        p = new_poller("epoll", False)
        p.register_listener(server.fileno(), exclusive=True)  # EPOLLEXCLUSIVE where available
        with socket.create_connection(server.getsockname(), timeout=5):
            assert events(p, 5) == {server.fileno(): IN}
        p.close()


def test_edge_triggered_reports_each_edge_once(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    p = new_poller("epoll", True)
    try:
        p.register(a.fileno(), IN)  # IN|OUT|ET, once and for all
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
    poller.register(a.fileno(), IN)
    start = time.monotonic()
    assert poller.poll(timeout, 64) == []
    elapsed = time.monotonic() - start
    assert timeout * 0.9 <= elapsed < timeout + 1.0


def test_wait_zero_does_not_block(poller: Any, pair: tuple[socket.socket, socket.socket]) -> None:
    a, _ = pair
    poller.register(a.fileno(), IN)
    start = time.monotonic()
    assert poller.poll(0, 64) == []
    assert time.monotonic() - start < 0.5


def test_wait_forever_returns_when_an_fd_becomes_ready(poller: Any, pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    poller.register(a.fileno(), IN)
    timer = threading.Timer(0.05, b.send, args=(b"x",))
    timer.start()
    try:
        assert poller.poll(-1, 64) == [(a.fileno(), IN)]
    finally:
        timer.join(5)
