"""EventLoop API beyond the timers: enroll() of adopted sockets, connection counts."""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest

import gnetpy
from conftest import WAIT, Recorder, recv_exact, wait_for


def test_enroll_from_another_thread_serves_the_socket(serve: Any) -> None:
    handler = Recorder()
    engine = serve(handler, num_event_loop=2, processes=False)
    ours, theirs = socket.socketpair()
    theirs.settimeout(WAIT)
    loop = engine.event_loops[1]
    c = loop.enroll(ours, timeout=WAIT)
    assert handler.opened == [c]  # on_open ran before enroll returned
    assert c.event_loop is loop and loop.count_connections() == 1
    theirs.sendall(b"adopted")
    assert recv_exact(theirs, 7) == b"adopted"
    theirs.close()
    wait_for(lambda: handler.closed)
    assert isinstance(handler.closed[0][1], EOFError)
    assert loop.count_connections() == 0


def test_enroll_from_a_callback_on_the_same_loop(serve: Any) -> None:
    """A proxy-style handler adopts a second socket from inside on_traffic."""
    pair: list[socket.socket] = []

    class Adopter(Recorder):
        def on_traffic(self, c: gnetpy.Conn) -> Any:
            c.next()
            ours, theirs = socket.socketpair()
            pair.append(theirs)
            adopted = c.event_loop.enroll(ours)
            adopted.write(b"from the loop")
            c.write(b"ok")

    handler = Adopter()
    engine = serve(handler)
    with socket.create_connection(engine.addrs[0], timeout=WAIT) as s:
        s.sendall(b"go")
        assert recv_exact(s, 2) == b"ok"
        pair[0].settimeout(WAIT)
        assert recv_exact(pair[0], 13) == b"from the loop"
    pair[0].close()
    wait_for(lambda: len(handler.closed) == 2)


def test_enroll_after_stop_raises(serve: Any) -> None:
    engine = serve(Recorder())
    loop = engine.event_loops[0]
    engine.stop()
    ours, theirs = socket.socketpair()
    try:
        with pytest.raises(gnetpy.EngineStoppedError):
            loop.enroll(ours, timeout=WAIT)
    finally:
        ours.close()
        theirs.close()


def test_execute_runs_in_order_on_the_loop_thread(serve: Any) -> None:
    engine = serve(Recorder())
    seen: list[tuple[int, str]] = []
    done = threading.Event()
    for i in range(100):
        engine.event_loops[0].execute(lambda i=i: seen.append((i, threading.current_thread().name)))
    engine.event_loops[0].execute(done.set)
    assert done.wait(WAIT)
    assert seen == [(i, "gnetpy-loop-0") for i in range(100)]
