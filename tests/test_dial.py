"""dial.py's Connect and start_dial on a fake loop: real sockets to real listeners, no EventLoop, no poller.

The test plays the reactor (``FakeLoop.drive``: ``select`` says a watched socket is writable, its handler
runs).  tests/integration/test_client.py has the end-to-end dials.
"""

from __future__ import annotations

import errno
import os
import select
import socket
from typing import Any, Callable, Iterator

import pytest

from conftest import WAIT
from gnetpy.dial import UNIX_RETRY, Connect, check_dial, start_dial
from gnetpy.errors import EngineStoppedError, UnsupportedProtocolError
from gnetpy.poller import OUT
from gnetpy.state import CLOSED, OPEN


class Timer:
    def __init__(self, delay: float, fn: Callable[[], Any]) -> None:
        self.delay, self.fn, self.cancelled = delay, fn, False

    def cancel(self) -> None:
        self.cancelled = True


class StandInConn:
    def __init__(self, sock: socket.socket, context: Any, state: Any) -> None:
        self.sock, self.context, self._state, self._err = sock, context, state, None

    @property
    def closed(self) -> bool:
        return self._state == CLOSED


class FakeLoop:
    index = 0

    def __init__(self) -> None:
        self.stopping = False
        self.on_loop_thread = True
        self.takes_tasks = True
        self.timers: list[Timer] = []
        self.watched: dict[int, Callable[[int], Any]] = {}
        self.calls: list[tuple[Any, ...]] = []
        self.dials: set[Connect] = set()
        self.conns: list[StandInConn] = []
        self.submitted: list[tuple[bool, Callable[..., Any], tuple[Any, ...]]] = []
        self.enrolled_state = OPEN  # CLOSED: as if on_open closed the conn

    def call_later(self, delay: float, fn: Callable[[], Any]) -> Timer:
        self.timers.append(Timer(delay, fn))
        return self.timers[-1]

    def add_dial(self, connect: Connect) -> None:
        self.dials.add(connect)

    def drop_dial(self, connect: Connect) -> None:
        self.calls.append(("drop_dial", connect))
        self.dials.discard(connect)

    def watch_writable(self, fd: int, fn: Callable[[int], Any]) -> None:
        self.calls.append(("watch_writable", fd))
        self.watched[fd] = fn

    def unwatch(self, fd: int) -> None:
        self.calls.append(("unwatch", fd))
        del self.watched[fd]

    def enroll_conn(self, sock: socket.socket, context: Any = None, transport: Any = None,
                    preamble: bytes = b"") -> StandInConn:
        self.conns.append(StandInConn(sock, context, self.enrolled_state))
        return self.conns[-1]

    def in_loop_thread(self) -> bool:
        return self.on_loop_thread

    def submit(self, urgent: bool, fn: Callable[..., Any], *args: Any) -> bool:
        self.submitted.append((urgent, fn, args))
        return self.takes_tasks

    def user_raised(self, exc: BaseException, what: str, then: str = "") -> None:
        self.calls.append(("user_raised", exc, what))

    def callback_raised(self, c: Any, exc: BaseException) -> None:
        self.calls.append(("callback_raised", c, exc))

    def named(self, name: str) -> list[tuple[Any, ...]]:
        return [call for call in self.calls if call[0] == name]

    def drive(self) -> None:
        """Play the reactor: hand each watched socket's writability to its handler until none is watched."""
        for _ in range(10):
            if not self.watched:
                return
            _, ready, _ = select.select([], list(self.watched), [], WAIT)
            assert ready, "a connect in progress never became writable"
            for fd in ready:
                self.watched[fd](OUT)
        pytest.fail("still watching after 10 rounds")


class Results(list):  # type: ignore[type-arg]
    """A dial callback: records what it is told, then raises ``raises`` if given."""

    def __init__(self, raises: BaseException | None = None) -> None:
        super().__init__()
        self.raises = raises

    def __call__(self, conn: Any, err: BaseException | None) -> None:
        self.append((conn, err))
        if self.raises is not None:
            raise self.raises


@pytest.fixture
def loop() -> Iterator[FakeLoop]:
    fake = FakeLoop()
    yield fake
    for c in fake.conns:
        c.sock.close()
    for timer in fake.timers:
        assert timer.cancelled or timer.fn.__name__ == "_next", "a dial timer left running"


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield s


def test_a_dial_to_a_listener_connects_and_hands_the_conn_to_the_callback(loop: FakeLoop, listener: Any) -> None:
    done = Results()
    connect = Connect(loop, [(socket.AF_INET, listener.getsockname())], done, 5.0, context="ctx")
    assert loop.dials == {connect}
    connect.start()
    loop.drive()
    [(conn, err)] = done
    assert err is None and conn is loop.conns[0] and conn.context == "ctx"
    assert conn.sock.getpeername() == listener.getsockname()
    assert loop.timers[0].delay == 5.0 and loop.timers[0].cancelled
    assert loop.named("drop_dial") == [("drop_dial", connect)] and not loop.dials and not loop.watched
    loop.timers[0].fn()  # a cancelled timer that fires all the same changes nothing
    assert len(done) == 1 and len(loop.named("drop_dial")) == 1


def test_a_refused_dial_tries_every_target_and_leaves_nothing_watched(loop: FakeLoop) -> None:
    with socket.socket() as closed_a, socket.socket() as closed_b:  # bound, not listening: refused
        closed_a.bind(("127.0.0.1", 0))
        closed_b.bind(("127.0.0.1", 0))
        targets = [(socket.AF_INET, closed_a.getsockname()), (socket.AF_INET, closed_b.getsockname())]
        done = Results()
        connect = Connect(loop, targets, done, None)
        connect.start()
        loop.drive()
    [(conn, err)] = done
    assert conn is None and isinstance(err, OSError) and err.errno == errno.ECONNREFUSED
    assert repr(targets[1][1]) in str(err)  # the last one tried
    assert not loop.watched and len(loop.named("watch_writable")) == len(loop.named("unwatch"))
    assert not loop.dials and not loop.timers and not loop.conns


def test_a_dial_that_times_out_closes_and_unwatches_its_socket(loop: FakeLoop, listener: Any) -> None:
    done = Results()
    connect = Connect(loop, [(socket.AF_INET, listener.getsockname())], done, 0.5)
    connect.start()
    [(_, fd)] = loop.named("watch_writable")
    handler = loop.watched[fd]
    sock = connect._sock
    loop.timers[0].fn()  # the deadline, before the reactor saw the socket writable
    [(conn, err)] = done
    assert conn is None and isinstance(err, TimeoutError) and str(err) == "dial timed out (no answer)"
    assert sock is not None and sock.fileno() == -1 and loop.named("unwatch") == [("unwatch", fd)]
    assert not loop.dials
    handler(OUT)  # a late event for it changes nothing
    assert len(done) == 1 and not loop.conns


def test_abandon_or_a_stopping_loop_cancels_the_dial_once(loop: FakeLoop, listener: Any) -> None:
    done = Results()
    connect = Connect(loop, [(socket.AF_INET, listener.getsockname())], done, 5.0)
    connect.start()
    connect.abandon()
    connect.abandon()
    [(conn, err)] = done
    assert conn is None and isinstance(err, OSError) and err.errno == errno.ECANCELED
    assert not loop.watched and not loop.dials and loop.timers[0].cancelled
    loop.stopping = True  # a dial started on a stopping loop is cancelled before it connects
    Connect(loop, [(socket.AF_INET, listener.getsockname())], done, None).start()
    assert done[1][0] is None and done[1][1].errno == errno.ECANCELED and len(loop.named("watch_writable")) == 1


def test_a_full_unix_backlog_is_retried_not_failed(loop: FakeLoop) -> None:
    name = f"\0gnetpy-test-dial-{os.getpid()}"
    with socket.socket(socket.AF_UNIX) as server, socket.socket(socket.AF_UNIX) as first:
        server.bind(name)
        server.listen(0)
        first.connect(name)  # the backlog is full now: the next connect gets EAGAIN
        done = Results()
        Connect(loop, [(socket.AF_UNIX, name)], done, 5.0).start()
        [retry] = [t for t in loop.timers if t.delay == UNIX_RETRY]
        assert not done and not loop.watched
        server.accept()[0].close()
        retry.fn()
        loop.drive()
    [(conn, err)] = done
    assert err is None and conn is loop.conns[0]


def test_check_dial_and_start_dial_refuse_udp_and_bad_timeouts(loop: FakeLoop) -> None:
    with pytest.raises(UnsupportedProtocolError, match="connected UDP"):
        check_dial("udp://127.0.0.1:9", None, None, None)
    for bad in (-1, float("inf"), float("nan"), True, "5"):
        with pytest.raises(ValueError, match="timeout"):
            check_dial("tcp://127.0.0.1:9", bad, None, None)
    with pytest.raises(ValueError, match="server_hostname"):
        check_dial("tcp://127.0.0.1:9", None, None, "example.com")
    address, tls_settings = check_dial("tcp://127.0.0.1:9", 0, None, None)
    assert (address.host, address.port, tls_settings) == ("127.0.0.1", 9, None)
    with pytest.raises(UnsupportedProtocolError):  # start_dial checks before it touches the loop
        start_dial(loop, "udp://127.0.0.1:9", Results(), None, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        start_dial(loop, "tcp://127.0.0.1:9", Results(), -1, None)  # type: ignore[arg-type]
    assert not loop.dials and not loop.submitted and not loop.timers


def test_start_dial_on_the_loop_thread_connects_at_once(loop: FakeLoop, listener: Any) -> None:
    host, port = listener.getsockname()
    done = Results()
    start_dial(loop, f"tcp://{host}:{port}", done, 5.0, "ctx")  # type: ignore[arg-type]
    assert not loop.submitted and 0 < loop.timers[0].delay <= 5.0
    loop.drive()
    assert done[0][1] is None and done[0][0].context == "ctx"


def test_start_dial_from_another_thread_submits_the_connect(loop: FakeLoop, listener: Any) -> None:
    host, port = listener.getsockname()
    loop.on_loop_thread = False
    done = Results()
    start_dial(loop, f"tcp://{host}:{port}", done, None, None)  # type: ignore[arg-type]
    [(urgent, fn, args)] = loop.submitted
    assert urgent is True and not loop.dials
    fn(*args)
    loop.drive()
    assert done[0][1] is None
    loop.takes_tasks = False
    with pytest.raises(EngineStoppedError, match="event loop 0 has stopped"):
        start_dial(loop, f"tcp://{host}:{port}", done, None, None)  # type: ignore[arg-type]


def test_a_raising_callback_goes_to_callback_raised_with_a_conn_else_to_user_raised(loop: FakeLoop,
                                                                                    listener: Any) -> None:
    boom = RuntimeError("callback bug")
    Connect(loop, [(socket.AF_INET, listener.getsockname())], Results(raises=boom), None).start()
    loop.drive()
    assert loop.named("callback_raised") == [("callback_raised", loop.conns[0], boom)]
    assert not loop.named("user_raised")
    Connect(loop, [(socket.AF_INET, ("127.0.0.1", 9))], Results(raises=boom), 1.0).abandon()  # a failed dial
    [(_, exc, what)] = loop.named("user_raised")
    assert exc is boom and what.startswith("dial callback ") and len(loop.named("callback_raised")) == 1


def test_a_conn_closed_during_on_open_is_reported_as_aborted(loop: FakeLoop, listener: Any) -> None:
    loop.enrolled_state = CLOSED
    done = Results(raises=RuntimeError("callback bug"))
    Connect(loop, [(socket.AF_INET, listener.getsockname())], done, 1.0).start()
    loop.drive()
    [(conn, err)] = done
    assert conn is loop.conns[0] and isinstance(err, OSError) and err.errno == errno.ECONNABORTED
    assert len(loop.named("user_raised")) == 1 and not loop.named("callback_raised")  # a closed conn: no policy
