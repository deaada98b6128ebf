"""buffer.py: ``OutboundBuffer`` -- what is copied, what is kept, and ``flush_to`` over a real socket.

Small and mutable pieces are copied into a coalescing ``bytearray`` tail (at
most ``chunk_cap`` bytes); large immutable ``bytes`` are queued as they are.
``flush_to`` is one ``writev`` that must preserve order and content across
partial writes, budgets, more than IOV_MAX pieces and a full peer.  The
receiving socket of each pair has small kernel buffers so that partial
writes really happen.
"""

from __future__ import annotations

import array
import random
import socket
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gnetpy.buffer import IOV_MAX, SMALL, OutboundBuffer


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(sender, receiver): a unix stream pair whose buffers hold only a few KiB."""
    sender, receiver = make_pair()
    yield sender, receiver
    sender.close()
    receiver.close()


def make_pair(small: bool = True) -> tuple[socket.socket, socket.socket]:
    sender, receiver = socket.socketpair()
    if small:
        sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sender.setblocking(False)
    receiver.setblocking(False)
    return sender, receiver


def read_available(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    """Whatever ``sock`` holds right now, up to ``limit`` bytes, without blocking."""
    got = bytearray()
    while len(got) < limit:
        try:
            chunk = sock.recv(min(65536, limit - len(got)))
        except BlockingIOError:
            break
        if not chunk:
            break
        got += chunk
    return bytes(got)


def drain_through(buf: OutboundBuffer, sender: socket.socket, receiver: socket.socket, step: int = 1000) -> bytes:
    """Flush ``buf`` completely, reading ``step`` bytes from the receiver whenever the sender is full."""
    got = bytearray()
    for _ in range(100_000):
        if not buf:
            break
        try:
            buf.flush_to(sender.fileno())
        except BlockingIOError:
            got += read_available(receiver, step)
    else:
        pytest.fail("buffer never drained")
    got += read_available(receiver)
    return bytes(got)


def queued(buf: OutboundBuffer) -> bytes:
    return b"".join(bytes(piece) for piece in buf)


def pattern(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


# -- append_data: coalescing, copies and identity ---------------------------------


def test_small_pieces_coalesce_into_one_bytearray_tail() -> None:
    buf = OutboundBuffer(chunk_cap=1024)
    for piece in (b"ab", bytearray(b"cd"), memoryview(b"ef"), b"g"):
        buf.append_data(piece)
    assert len(buf) == 1
    assert type(buf[0]) is bytearray
    assert buf[0] == b"abcdefg"
    assert buf.nbytes == 7


def test_coalescing_stops_at_chunk_cap() -> None:
    buf = OutboundBuffer(chunk_cap=10)
    buf.append_data(b"x" * 6)
    buf.append_data(b"y" * 4)  # exactly at the cap: still coalesced
    assert len(buf) == 1
    buf.append_data(b"z")
    assert len(buf) == 2
    assert [bytes(p) for p in buf] == [b"x" * 6 + b"y" * 4, b"z"]
    assert all(len(p) <= 10 for p in buf)


def test_a_small_piece_over_chunk_cap_gets_its_own_copy() -> None:
    buf = OutboundBuffer(chunk_cap=4)
    buf.append_data(b"abcdefgh")
    buf.append_data(b"i")
    assert [bytes(p) for p in buf] == [b"abcdefgh", b"i"]
    assert buf.nbytes == 9


def test_large_immutable_bytes_are_queued_without_a_copy() -> None:
    first, second = pattern(SMALL, 1), pattern(3 * SMALL, 2)
    buf = OutboundBuffer(chunk_cap=64 * 1024)
    buf.append_data(first)
    buf.append_data(second)
    assert buf[0] is first
    assert buf[1] is second
    assert buf.nbytes == len(first) + len(second)


def test_large_bytes_after_a_full_tail_are_queued_without_a_copy() -> None:
    buf = OutboundBuffer(chunk_cap=16)
    buf.append_data(b"t" * 10)
    big = pattern(SMALL, 3)
    buf.append_data(big)
    assert type(buf[0]) is bytearray
    assert buf[1] is big


def test_a_large_view_of_bytes_is_queued_without_a_copy() -> None:
    data = pattern(2 * SMALL, 4)
    view = memoryview(data)[10:]
    buf = OutboundBuffer(chunk_cap=1024)
    assert buf.append_data(view) == len(data) - 10
    assert type(buf[0]) is memoryview
    assert buf[0].obj is data
    assert queued(buf) == data[10:]


@pytest.mark.parametrize("make", [bytearray, lambda b: memoryview(bytearray(b))],
                         ids=["bytearray", "memoryview-of-bytearray"])
@pytest.mark.parametrize("size", [10, SMALL, 5 * SMALL])
def test_mutable_inputs_are_copied(make: Any, size: int) -> None:
    original = make(pattern(size, 5))
    expected = bytes(original)
    buf = OutboundBuffer(chunk_cap=1024)
    buf.append_data(original)
    # The caller reuses its buffer at once, as a reader loop would.
    target = original.obj if isinstance(original, memoryview) else original
    target[:] = b"\0" * size
    assert queued(buf) == expected


def test_a_mutated_original_does_not_change_a_coalesced_tail() -> None:
    scratch = bytearray(b"1234")
    buf = OutboundBuffer(chunk_cap=1024)
    buf.append_data(b"head-")
    buf.append_data(scratch)
    scratch[:] = b"XXXX"
    buf.append_data(scratch)
    assert queued(buf) == b"head-1234XXXX"


def test_non_byte_memoryviews_are_counted_in_bytes() -> None:
    ints = array.array("i", range(3000))
    buf = OutboundBuffer(chunk_cap=64 * 1024)
    assert buf.append_data(ints) == 3000 * ints.itemsize
    assert buf.append_data(memoryview(ints)[:10]) == 10 * ints.itemsize
    assert buf.nbytes == 3010 * ints.itemsize
    ints[0] = -1  # an array is mutable: what was queued must not change
    assert queued(buf) == array.array("i", range(3000)).tobytes() + array.array("i", range(10)).tobytes()


def test_multi_dimensional_views_are_flattened() -> None:
    grid = memoryview(bytes(range(12))).cast("B", (3, 4))
    buf = OutboundBuffer(chunk_cap=1024)
    assert buf.append_data(grid) == 12
    assert queued(buf) == bytes(range(12))


@pytest.mark.parametrize("empty", [b"", bytearray(), memoryview(b""), array.array("i")])
def test_empty_data_queues_nothing(empty: Any) -> None:
    buf = OutboundBuffer(chunk_cap=1024)
    assert buf.append_data(empty) == 0
    assert not buf
    assert buf.nbytes == 0


def test_append_returns_the_size_and_nbytes_is_the_sum() -> None:
    buf = OutboundBuffer(chunk_cap=100)
    sizes = [1, 99, 100, SMALL, 7, 3 * SMALL]
    assert [buf.append_data(b"q" * n) for n in sizes] == sizes
    assert buf.nbytes == sum(sizes) == len(queued(buf))


def test_clear_all_drops_everything_and_reports_how_much() -> None:
    buf = OutboundBuffer(chunk_cap=100)
    buf.append_data(b"a" * 50)
    buf.append_data(pattern(SMALL))
    assert buf.clear_all() == 50 + SMALL
    assert not buf and buf.nbytes == 0
    buf.append_data(b"again")  # still usable
    assert queued(buf) == b"again" and buf.nbytes == 5


# -- flush_to ----------------------------------------------------------------------


def test_flush_writes_everything_the_peer_can_take(pair: tuple[socket.socket, socket.socket]) -> None:
    sender, receiver = pair
    buf = OutboundBuffer(chunk_cap=1024)
    buf.append_data(b"hello ")
    buf.append_data(bytearray(b"world"))
    assert buf.flush_to(sender.fileno()) == 11
    assert not buf and buf.nbytes == 0
    assert read_available(receiver) == b"hello world"


def test_partial_writes_preserve_order_and_content(pair: tuple[socket.socket, socket.socket]) -> None:
    sender, receiver = pair
    buf = OutboundBuffer(chunk_cap=3000)
    pieces = [pattern(n, seed) for seed, n in enumerate([100, 5000, 2999, 1, 20000, 300, 4096, 70000])]
    pieces[1] = bytearray(pieces[1])
    pieces[4] = memoryview(pieces[4])
    for piece in pieces:
        buf.append_data(piece)
    total = buf.nbytes

    partial = 0
    got = bytearray()
    while buf:
        before = buf.nbytes
        try:
            written = buf.flush_to(sender.fileno())
        except BlockingIOError:
            got += read_available(receiver, 700)  # read in small steps
            continue
        assert 0 < written <= before
        assert buf.nbytes == before - written
        partial += written < before
    got += read_available(receiver)
    assert partial > 0, "the peer's buffer never forced a partial write"
    assert bytes(got) == b"".join(bytes(p) for p in pieces)
    assert len(got) == total


def test_budget_caps_the_bytes_offered() -> None:
    sender, receiver = make_pair(small=False)
    with sender, receiver:
        buf = OutboundBuffer(chunk_cap=1024)
        buf.append_data(b"a" * 60)
        buf.append_data(b"b" * 60)
        buf.append_data(pattern(SMALL, 7))
        expected = queued(buf)
        got = bytearray()
        for _ in range(len(expected)):
            if not buf:
                break
            assert buf.flush_to(sender.fileno(), budget=100) <= 100
            got += read_available(receiver)
        assert bytes(got) == expected


def test_budget_may_cut_a_coalesced_bytearray_and_resume_it() -> None:
    # Regression: the view that cut the bytearray used to outlive writev,
    # so trimming the bytearray in place raised BufferError.
    sender, receiver = make_pair(small=False)
    with sender, receiver:
        buf = OutboundBuffer(chunk_cap=1024)
        buf.append_data(b"0123456789")
        assert type(buf[0]) is bytearray
        assert buf.flush_to(sender.fileno(), budget=4) == 4
        assert buf.nbytes == 6
        buf.append_data(b"ab")  # the trimmed tail keeps coalescing
        assert buf.flush_to(sender.fileno(), budget=5) == 5
        assert buf.flush_to(sender.fileno(), budget=5) == 3
        assert not buf
        assert read_available(receiver) == b"0123456789ab"


def test_budget_larger_than_the_queue_writes_it_all() -> None:
    sender, receiver = make_pair(small=False)
    with sender, receiver:
        buf = OutboundBuffer(chunk_cap=1024)
        buf.append_data(b"xyz")
        assert buf.flush_to(sender.fileno(), budget=1 << 20) == 3
        assert read_available(receiver) == b"xyz"


def test_more_than_iov_max_pieces_are_flushed_in_order() -> None:
    sender, receiver = make_pair(small=False)
    with sender, receiver:
        buf = OutboundBuffer(chunk_cap=1)  # nothing coalesces: one piece per append
        count = IOV_MAX + 500
        for i in range(count):
            buf.append_data(bytes([i % 256]))
        assert len(buf) == count
        first = buf.flush_to(sender.fileno())
        assert first == IOV_MAX  # one writev never offers more than IOV_MAX iovecs
        assert len(buf) == 500
        assert buf.flush_to(sender.fileno()) == 500
        assert read_available(receiver) == bytes(i % 256 for i in range(count))


def test_blocking_io_error_propagates_and_keeps_the_queue(pair: tuple[socket.socket, socket.socket]) -> None:
    sender, receiver = pair
    while True:  # fill the peer
        try:
            sender.send(b"f" * 65536)
        except BlockingIOError:
            break
    buf = OutboundBuffer(chunk_cap=1024)
    buf.append_data(b"queued")
    big = pattern(2 * SMALL, 8)
    buf.append_data(big)
    with pytest.raises(BlockingIOError):
        buf.flush_to(sender.fileno())
    assert buf.nbytes == 6 + len(big)
    assert queued(buf) == b"queued" + big

    received = drain_through(buf, sender, receiver)
    assert received.lstrip(b"f") == b"queued" + big


def test_a_broken_connection_raises_its_os_error(pair: tuple[socket.socket, socket.socket]) -> None:
    sender, receiver = pair
    receiver.close()
    buf = OutboundBuffer(chunk_cap=1024)
    buf.append_data(b"lost")
    with pytest.raises(BrokenPipeError):
        buf.flush_to(sender.fileno())
    assert buf.nbytes == 4


# -- property: anything appended comes out once, in order ------------------------------

KINDS = ["bytes", "bytearray", "view-of-bytes", "view-of-bytearray", "array"]
append_op = st.tuples(st.just("append"), st.sampled_from(KINDS), st.integers(0, 3 * SMALL), st.integers(0, 2**32))
flush_op = st.tuples(st.just("flush"), st.sampled_from([0, 1, 7, 100, 5000]))
read_op = st.tuples(st.just("read"), st.integers(1, 10_000))


def make_piece(kind: str, size: int, seed: int) -> tuple[Any, bytes]:
    data = pattern(size, seed)
    if kind == "bytes":
        return data, data
    if kind == "bytearray":
        return bytearray(data), data
    if kind == "view-of-bytes":
        return memoryview(data), data
    if kind == "view-of-bytearray":
        return memoryview(bytearray(data)), data
    ints = array.array("h", data[: size - size % 2])
    return ints, ints.tobytes()


def scribble(piece: Any) -> None:
    """What a caller reusing its buffer does after the write returns."""
    target = piece.obj if isinstance(piece, memoryview) else piece
    if isinstance(target, bytearray):
        target[:] = b"\xee" * len(target)
    elif isinstance(target, array.array):
        for i in range(len(target)):
            target[i] = -7


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunk_cap=st.sampled_from([1, 100, SMALL, 65536]),
       ops=st.lists(st.one_of(append_op, flush_op, read_op), max_size=40))
def test_any_appends_and_partial_flushes_deliver_the_concatenation(chunk_cap: int, ops: list[tuple[Any, ...]]) -> None:
    sender, receiver = make_pair()
    with sender, receiver:
        buf = OutboundBuffer(chunk_cap)
        expected = bytearray()
        got = bytearray()
        for op in ops:
            if op[0] == "append":
                piece, content = make_piece(*op[1:])
                assert buf.append_data(piece) == len(content)
                expected += content
                scribble(piece)
            elif op[0] == "flush":
                if buf:
                    try:
                        written = buf.flush_to(sender.fileno(), budget=op[1])
                    except BlockingIOError:
                        written = 0
                    assert written <= op[1] or not op[1]
            else:
                got += read_available(receiver, op[1])
            # Invariants: what was read is a prefix of the stream, and the
            # queue holds exactly its last nbytes bytes.
            assert expected.startswith(got)
            assert buf.nbytes == sum(len(p) for p in buf)
            assert queued(buf) == expected[len(expected) - buf.nbytes:]
        got += drain_through(buf, sender, receiver)
        assert bytes(got) == bytes(expected)
