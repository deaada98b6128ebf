"""frames.py's FrameDispatcher on a fake loop: a real codec over real StreamConns' input, no EventLoop, no poller.

Input is fed the way the reactor feeds it (``c._receive``, the dispatcher,
then ``c._settle``); the fake loop records pause_reading/resume_reading/deliver
and its deliver runs the dispatcher again, as the real loop's does.
tests/integration/test_codec_option.py has the end-to-end scenarios.
"""

from __future__ import annotations

import socket
from typing import Any, Callable

import pytest

from gnetpy import Action
from gnetpy.codec import LineBasedFrameCodec
from gnetpy.conn import PAUSED_BY_FRAMES, PAUSED_BY_USER, Conn, StreamConn
from gnetpy.errors import TooLongFrameError
from gnetpy.frames import FrameDispatcher
from gnetpy.state import CLOSED, FLUSHING
from gnetpy.tally import Tally


class FakeLoop:
    index = 0

    def __init__(self) -> None:
        self.dirty: list[StreamConn] = []  # where a stream puts itself when written to (conn.py)
        self.tally = Tally()  # where it counts the bytes it reads and writes
        self.calls: list[tuple[Any, ...]] = []
        self.frames: FrameDispatcher | None = None

    def pause_reading(self, c: StreamConn, reason: int) -> None:
        self.calls.append(("pause_reading", c._fd, reason))
        c._paused |= reason

    def resume_reading(self, c: StreamConn, reason: int) -> None:
        self.calls.append(("resume_reading", c._fd, reason))
        c._paused &= ~reason

    def deliver(self, c: StreamConn, data: bytes) -> None:
        self.calls.append(("deliver", c._fd))
        assert self.frames is not None
        feed(self.frames, c, data)


def feed(frames: FrameDispatcher, c: Conn, data: bytes) -> Any:
    """What the reactor does with a read: receive, dispatch, keep the rest."""
    c._receive(data)
    action = frames.dispatch(c)
    c._settle()
    return action


class Frames:
    def __init__(self, actions: dict[bytes, Action] | None = None) -> None:
        self.got: list[tuple[int, bytes]] = []
        self.actions = actions or {}

    def on_frame(self, c: Conn, frame: bytes) -> Any:
        self.got.append((c._fd, bytes(frame)))
        return self.actions.get(bytes(frame))


class Setup:
    def __init__(self, budget: int = 3, budget_bytes: int = 1 << 20, actions: dict[bytes, Action] | None = None,
                 max_frame_length: int = 1 << 20) -> None:
        self.loop = FakeLoop()
        self.handler = Frames(actions)
        codec = LineBasedFrameCodec(max_frame_length=max_frame_length)
        self.frames = self.loop.frames = FrameDispatcher(self.loop, codec, self.handler,  # type: ignore[arg-type]
                                                         budget, budget_bytes)
        self.socks: list[socket.socket] = []

    def conn(self, kind: type[Conn] = StreamConn) -> Any:
        a, b = socket.socketpair()
        self.socks += [a, b]
        return kind(self.loop, a, "peer", 512)  # type: ignore[arg-type]

    def got(self, c: Conn) -> list[bytes]:
        return [frame for fd, frame in self.handler.got if fd == c._fd]

    def named(self, name: str) -> list[tuple[Any, ...]]:
        return [call for call in self.loop.calls if call[0] == name]


@pytest.fixture
def setup(request: pytest.FixtureRequest) -> Callable[..., Setup]:
    def make(**kwargs: Any) -> Setup:
        made = Setup(**kwargs)
        request.addfinalizer(lambda: [sock.close() for sock in made.socks])
        return made

    return make


def test_whole_frames_reach_on_frame_in_order_and_a_partial_one_stays_buffered(setup: Any) -> None:
    s = setup(budget=10)
    c = s.conn()
    assert feed(s.frames, c, b"one\r\ntwo\nthr") is None
    assert s.got(c) == [b"one", b"two"] and c.inbound_buffered == 3
    feed(s.frames, c, b"ee\n")
    assert s.got(c) == [b"one", b"two", b"three"] and not s.loop.calls and not s.frames.deferred


def test_the_frame_budget_pauses_reading_and_defers_the_conn(setup: Any) -> None:
    s = setup(budget=3)
    c = s.conn()
    assert feed(s.frames, c, b"a\nb\nc\nd\ne\n") is None
    assert s.got(c) == [b"a", b"b", b"c"] and c.inbound_buffered == 4
    assert s.loop.calls == [("pause_reading", c._fd, PAUSED_BY_FRAMES)]
    assert s.frames.deferred == {c._fd: c} and c.reading_paused


def test_the_byte_budget_pauses_reading_and_defers_the_conn(setup: Any) -> None:
    s = setup(budget=100, budget_bytes=5)
    c = s.conn()
    feed(s.frames, c, b"aaa\nbbb\nccc\n")
    assert s.got(c) == [b"aaa", b"bbb"]  # 3 + 3 bytes: the budget is spent after the second
    assert s.named("pause_reading") == [("pause_reading", c._fd, PAUSED_BY_FRAMES)] and c._fd in s.frames.deferred


def test_exactly_a_budget_of_frames_is_still_deferred_once(setup: Any) -> None:
    s = setup(budget=2)
    c = s.conn()
    feed(s.frames, c, b"a\nb\n")
    assert c._fd in s.frames.deferred
    s.frames.turn()
    s.frames.turn()  # nothing was left: delivered nothing, and reading resumes
    assert s.got(c) == [b"a", b"b"] and not c.reading_paused


def test_turn_delivers_only_to_conns_deferred_in_an_earlier_iteration(setup: Any) -> None:
    s = setup(budget=2)
    first, second = s.conn(), s.conn()
    feed(s.frames, first, b"1\n2\n3\n")
    s.frames.turn()  # the end of the iteration that deferred it: it waits
    assert not s.named("deliver") and s.frames.waiting == {first._fd: first}
    feed(s.frames, second, b"x\ny\nz\n")  # the next iteration
    s.frames.turn()
    assert s.named("deliver") == [("deliver", first._fd)] and s.got(first) == [b"1", b"2", b"3"]
    assert ("resume_reading", first._fd, PAUSED_BY_FRAMES) in s.loop.calls and not first.reading_paused
    assert s.got(second) == [b"x", b"y"] and second.reading_paused
    s.frames.turn()
    assert s.got(second) == [b"x", b"y", b"z"] and not second.reading_paused
    assert not s.frames.waiting and not s.frames.deferred


def test_a_conn_with_several_budgets_left_stays_paused_until_all_are_delivered(setup: Any) -> None:
    s = setup(budget=3)
    c = s.conn()
    feed(s.frames, c, b"a\nb\nc\nd\ne\nf\ng\n")
    s.frames.turn()
    s.frames.turn()
    assert s.got(c)[3:] == [b"d", b"e", b"f"] and c.reading_paused and not s.named("resume_reading")
    assert s.frames.waiting == {c._fd: c}
    s.frames.turn()
    assert s.got(c)[6:] == [b"g"] and s.named("resume_reading") == [("resume_reading", c._fd, PAUSED_BY_FRAMES)]


def test_turn_skips_conns_closed_meanwhile(setup: Any) -> None:
    s = setup(budget=1)
    c = s.conn()
    feed(s.frames, c, b"a\nb\n")
    s.frames.turn()
    c._state = CLOSED
    s.frames.turn()
    assert not s.named("deliver") and not s.named("resume_reading") and not s.frames.waiting


def test_a_conn_deferred_again_by_a_wake_up_waits_for_the_next_turn(setup: Any) -> None:
    s = setup(budget=1)
    c = s.conn()
    feed(s.frames, c, b"a\nb\nc\n")
    s.frames.turn()
    feed(s.frames, c, b"")  # a wake-up in this iteration spends its next budget already
    s.frames.turn()
    assert s.got(c) == [b"a", b"b"] and not s.named("deliver") and s.frames.waiting == {c._fd: c}
    s.frames.turn()
    assert s.got(c) == [b"a", b"b", b"c"] and s.named("deliver") == [("deliver", c._fd)]


def test_resuming_after_the_frames_leaves_a_users_pause_alone(setup: Any) -> None:
    s = setup(budget=2)
    c = s.conn()
    c._paused = PAUSED_BY_USER
    feed(s.frames, c, b"a\nb\nc\n")
    s.frames.turn()
    s.frames.turn()
    assert s.got(c) == [b"a", b"b", b"c"] and c._paused == PAUSED_BY_USER


def test_an_action_from_on_frame_ends_the_batch_and_is_returned(setup: Any) -> None:
    s = setup(budget=2, actions={b"b": Action.CLOSE})
    c = s.conn()
    assert feed(s.frames, c, b"a\nb\nc\n") == Action.CLOSE
    assert s.got(c) == [b"a", b"b"] and c.inbound_buffered == 2  # "c\n" stays buffered
    assert not s.loop.calls and not s.frames.deferred  # ended by the action, not by the budget


def test_a_codec_error_propagates_after_the_good_frames(setup: Any) -> None:
    s = setup(budget=10, max_frame_length=4)
    c = s.conn()
    with pytest.raises(TooLongFrameError):
        feed(s.frames, c, b"ok\ntoo long a line\n")
    assert s.got(c) == [b"ok"] and not s.frames.deferred and not s.loop.calls


@pytest.mark.parametrize("how", ["failed-write", "closing"])
def test_a_conn_that_failed_a_write_or_is_closing_is_not_deferred(setup: Any, how: str) -> None:
    s = setup(budget=1)
    c = s.conn()
    if how == "failed-write":
        c._err = BrokenPipeError()
    else:
        c._state = FLUSHING
    feed(s.frames, c, b"a\nb\n")
    assert s.got(c) == [b"a"] and not s.frames.deferred and not s.loop.calls


def test_a_datagram_like_conn_gets_all_its_frames_at_once(setup: Any) -> None:
    s = setup(budget=1)
    c = s.conn(Conn)  # not a StreamConn: a datagram is bounded, and what is left of it is dropped after
    assert feed(s.frames, c, b"a\nb\nc\n") is None
    assert s.got(c) == [b"a", b"b", b"c"] and not s.frames.deferred and not s.loop.calls
