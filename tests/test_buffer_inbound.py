"""buffer.py: ``InboundBuffer`` -- consuming, leftovers, the read size -- without sockets, and end to end.

The adaptive read size: small reads while messages are small,
``read_buffer_cap`` for bursts.
"""

from __future__ import annotations

import random
import socket
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gnetpy
from conftest import connect, recv_exact
from gnetpy.buffer import NOTHING, SHRINK_AFTER, SMALL_READ, InboundBuffer


def conn(read_size: int) -> Any:
    return InboundBuffer(read_size)


def adapt(c: InboundBuffer, got: int, small: int, large: int) -> None:
    c._adapt_read_size(got, small, large)


def test_small_read_is_the_largest_small_object_payload() -> None:
    assert SMALL_READ == 479  # CPython 3.11: 512-byte blocks minus the bytes header


def test_grows_on_a_full_small_read_and_shrinks_after_small_reads() -> None:
    c = conn(SMALL_READ)
    adapt(c, SMALL_READ, SMALL_READ, 65536)
    assert c._read_size == 65536
    for _ in range(SHRINK_AFTER - 1):
        adapt(c, 100, SMALL_READ, 65536)
        assert c._read_size == 65536
    adapt(c, 100, SMALL_READ, 65536)
    assert c._read_size == SMALL_READ


def test_cap_below_small_read_never_changes() -> None:
    c = conn(7)
    adapt(c, 7, 7, 7)
    assert c._read_size == 7


class Sizes(gnetpy.EventHandler):
    """Echo that records how many bytes each on_traffic saw (it always consumes all)."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.lock = threading.Lock()

    def on_traffic(self, c: gnetpy.Conn) -> Any:
        data = c.next()
        with self.lock:
            self.sizes.append(len(data))
        c.write(data)


def test_reads_never_exceed_a_small_read_buffer_cap(serve: Any) -> None:
    handler = Sizes()
    engine = serve(handler, read_buffer_cap=7)
    with connect(engine.addrs[0]) as s:
        s.sendall(b"x" * 1000)
        assert recv_exact(s, 1000) == b"x" * 1000
    assert max(handler.sizes) <= 7 and sum(handler.sizes) == 1000


def test_a_burst_switches_to_large_reads_and_small_messages_switch_back(serve: Any) -> None:
    handler = Sizes()
    engine = serve(handler)
    with connect(engine.addrs[0]) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(b"a" * 200_000)  # a burst: the first read fills 479 bytes, the next ones are large
        assert recv_exact(s, 200_000) == b"a" * 200_000
        assert handler.sizes[0] == SMALL_READ
        assert max(handler.sizes) > SMALL_READ
        burst_reads = len(handler.sizes)
        for _ in range(SHRINK_AFTER + 3):  # small messages, one read each
            s.sendall(b"b" * 600)  # larger than SMALL_READ: one read while in large mode
            assert recv_exact(s, 600) == b"b" * 600
            s.sendall(b"c" * 50)
            assert recv_exact(s, 50) == b"c" * 50
        after_burst = handler.sizes[burst_reads:]
        # In large mode the 600-byte messages arrive whole; after SHRINK_AFTER small
        # reads the connection is back to small reads and the next one is split.
        assert after_burst[0] == 600
        assert SMALL_READ in after_burst[2 * SHRINK_AFTER:]


# -- InboundBuffer without sockets ---------------------------------------------------------------


def received(*chunks: bytes) -> InboundBuffer:
    """A buffer that was given ``chunks`` in turn, each settled as if the handler consumed nothing."""
    buf = InboundBuffer(SMALL_READ)
    for chunk in chunks:
        buf._receive(chunk)
        buf._settle()
    return buf


def test_nothing_buffered_is_one_object_for_every_module_that_tests_for_it() -> None:
    # The loop's inline path tests ``c._src is nothing`` with its own import of NOTHING; in the
    # compiled build each module holds a Final constant of its own: they must be one object.
    from gnetpy import eventloop
    assert eventloop.NOTHING is NOTHING and NOTHING is bytes()
    buf = InboundBuffer(64)
    buf._receive(b"xy")
    buf.next()
    assert buf._src is eventloop.NOTHING


def test_a_fresh_read_taken_whole_is_handed_over_without_a_copy() -> None:
    buf = InboundBuffer(SMALL_READ)
    data = b"hello world"
    buf._receive(data)
    assert buf.inbound_buffered == len(data)
    assert buf.next() is data
    assert buf._src is NOTHING and buf.inbound_buffered == 0
    buf._settle()
    assert buf._src is NOTHING


def test_a_partly_consumed_read_is_kept_in_a_buffer_of_our_own() -> None:
    buf = InboundBuffer(SMALL_READ)
    data = b"abcdef"
    buf._receive(data)
    assert buf.next(2) == b"ab"
    buf._settle()
    assert type(buf._src) is bytearray and bytes(buf._src) == b"cdef" and buf._pos == 0
    buf._receive(b"gh")
    assert buf.next() == b"cdefgh"
    assert buf._src is NOTHING


def test_a_wake_up_delivers_the_leftover_unchanged() -> None:
    buf = received(b"left")
    buf._receive(b"")
    assert bytes(buf.peek()) == b"left"


def test_consuming_everything_resets_to_nothing_buffered() -> None:
    for consume in (lambda b: b.next(), lambda b: b.discard(), lambda b: b.read(), lambda b: b.read(99),
                    lambda b: b.next(4)):
        buf = received(b"wxyz")
        consume(buf)
        assert buf._src is NOTHING and buf._pos == 0


def test_short_buffer_errors_consume_nothing() -> None:
    buf = received(b"abc")
    with pytest.raises(gnetpy.ShortBufferError, match="only 3 bytes"):
        buf.next(4)
    with pytest.raises(gnetpy.ShortBufferError, match="only 3 bytes"):
        buf.peek(4)
    assert buf.next() == b"abc"


def test_a_peek_view_kept_past_the_callback_does_not_break_the_buffer() -> None:
    buf = InboundBuffer(SMALL_READ)
    buf._receive(b"0123456789")
    buf.discard(2)
    buf._settle()  # leftover "23456789" in our bytearray
    kept = buf.peek(3)  # the handler keeps this view (against the advice)
    buf.discard(1)
    buf._settle()  # cannot trim the bytearray in place while the view exists
    buf._receive(b"AB")  # nor grow it
    assert bytes(kept) == b"234"
    assert buf.next() == b"3456789AB"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.binary(min_size=1, max_size=40),
                          st.lists(st.tuples(st.sampled_from(["next", "discard", "read", "peek"]),
                                             st.integers(-1, 50)), max_size=4)), max_size=12))
def test_any_sequence_of_reads_and_consumes_matches_a_plain_bytes_model(script: list[Any]) -> None:
    buf = InboundBuffer(SMALL_READ)
    model = b""
    for chunk, ops in script:
        buf._receive(chunk)
        model += chunk
        for op, n in ops:
            assert buf.inbound_buffered == len(model)
            if op == "peek":
                if 0 <= n <= len(model) or n < 0:
                    assert bytes(buf.peek(n)) == (model if n < 0 else model[:n])
                continue
            if op == "next":
                if n > len(model):
                    with pytest.raises(gnetpy.ShortBufferError):
                        buf.next(n)
                    continue
                got = buf.next(n)
            elif op == "read":
                got = buf.read(n)
            else:
                dropped = buf.discard(n)
                got = model[:dropped]
            want = model if n < 0 else model[:n]
            assert got == want
            model = model[len(want):]
        buf._settle()
        assert (buf._src is NOTHING) == (not model) and buf._pos == 0
        assert bytes(buf._src) == model


# -- the loop's inlined block behaves as the methods it mirrors ----------------------------------


class Scripted(gnetpy.EventHandler):
    """Consumes in a fixed pseudo-random pattern; records what each on_traffic saw and took."""

    def __init__(self, method_path: bool) -> None:
        self.method_path = method_path
        self.rng = random.Random(7)
        self.seen: list[tuple[int, bytes]] = []

    def on_boot(self, engine: gnetpy.Engine) -> None:
        if self.method_path:
            for loop in engine.event_loops:  # before the loops run: no event is served inline
                loop._inline_events = -1

    def on_traffic(self, c: gnetpy.Conn) -> Any:
        available = c.inbound_buffered
        how = self.rng.choice(["all", "some", "none", "peek-some", "read-some"])
        taken = b""
        if how == "all":
            taken = c.next()
        elif how == "some":
            taken = c.next(self.rng.randint(0, available))
        elif how == "peek-some":
            head = bytes(c.peek(min(available, 3)))
            taken = c.next(len(head))
        elif how == "read-some":
            taken = c.read(self.rng.randint(0, available + 5))
        self.seen.append((available, taken))
        c.write(b"%d;" % len(taken))


def run_script(serve: Any, method_path: bool) -> list[tuple[int, bytes]]:
    handler = Scripted(method_path)
    engine = serve(handler)
    rng = random.Random(11)
    with connect(engine.addrs[0]) as s:
        for i in range(60):
            chunk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 200)))
            s.sendall(chunk)
            reply = b""
            while not reply.endswith(b";"):  # one read per chunk: wait for its on_traffic
                reply += s.recv(64)
    return handler.seen


def test_the_inline_read_path_and_the_method_path_deliver_the_same(serve: Any) -> None:
    inline = run_script(serve, method_path=False)
    methods = run_script(serve, method_path=True)
    assert len(inline) == 60
    assert inline == methods
