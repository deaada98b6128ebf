"""waker.py: waking a poller blocked in another thread (eventfd, or a pipe where there is none)."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest

from conftest import events
from gnetpy.poller import IN
from gnetpy.waker import Waker

# -- Waker ------------------------------------------------------------------------------


def test_waker_wakes_a_poller_and_drain_resets_it(poller: Any, waker: Waker) -> None:
    poller.register_listener(waker.fd)
    assert events(poller) == {}
    waker.wake()
    assert events(poller, 1) == {waker.fd: IN}
    waker.drain()
    assert events(poller) == {}


def test_waker_works_many_times(poller: Any, waker: Waker) -> None:
    poller.register_listener(waker.fd)
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
    poller.register_listener(waker.fd)
    got: list[Any] = []
    t = threading.Thread(target=lambda: got.append(poller.poll(10, 64)))
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
        poller.register_listener(w.fd)
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
