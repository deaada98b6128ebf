"""limits.py's InboundLimit and AsyncWriteLimit on their own: real counters and StreamConns, no EventLoop.

The limits type their connections as ``Conn`` (checked when compiled), so the
connections are real ones over unix socket pairs, built on a stand-in loop.

tests/integration/test_backpressure.py has the end-to-end scenarios (a
connection closed past max_inbound_buffered, max_inbound_total over worker
processes, an async_write flood refused); these check the accounting itself.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Callable

import pytest

from conftest import WAIT
from gnetpy.buffer import OutboundBuffer
from gnetpy.conn import Conn, StreamConn
from gnetpy.counters import LocalCounters
from gnetpy.errors import LimitExceededError
from gnetpy.limits import AsyncWriteLimit, InboundLimit
from gnetpy.tally import Tally


class Loop:
    index = 0  # what a connection asks of its loop here: its repr, and where writes are gathered
    dirty: list[Any] = []
    tally = Tally()  # where it counts the bytes it writes


def queue(c: StreamConn, n: int) -> None:
    """Make ``n`` more bytes wait in ``c``'s outbound queue."""
    if not c._out:
        c._out = OutboundBuffer(65536)
    c._out.append_data(b"q" * n)


class Yielding(Conn):
    """A connection whose queue size lets other threads run while it is read: a missing lock would show."""

    @property
    def outbound_buffered(self) -> int:
        time.sleep(0)
        return 0


@pytest.fixture
def conn(request: pytest.FixtureRequest) -> Callable[..., Any]:
    def make(name: str, outbound: int = 0, kind: type[Conn] = StreamConn) -> Any:
        a, b = socket.socketpair()
        request.addfinalizer(a.close)
        request.addfinalizer(b.close)
        c = kind(Loop(), a, name, 512)  # type: ignore[arg-type]
        if outbound:
            queue(c, outbound)
        return c

    return make


def test_holding_grows_shrinks_and_ends_in_the_loops_counter(conn: Any) -> None:
    counts = LocalCounters()
    limit = InboundLimit(1000, 0, counts)
    a, b = conn("a"), conn("b")
    assert limit.keep(a, 100) is None and counts.inbound == 100
    assert limit.keep(b, 30) is None and counts.inbound == 130
    assert limit.keep(a, 250) is None and counts.inbound == 280
    assert limit.keep(a, 40) is None and counts.inbound == 70
    assert limit.keep(a, 0) is None and counts.inbound == 30
    assert limit.keep(a, 0) is None and counts.inbound == 30  # held nothing, keeps nothing


def test_release_forgets_what_a_closing_conn_held(conn: Any) -> None:
    counts = LocalCounters()
    limit = InboundLimit(1000, 0, counts)
    a, b = conn("a"), conn("b")
    limit.keep(a, 300)
    limit.keep(b, 5)
    limit.release(a)
    assert counts.inbound == 5
    limit.release(a)  # twice, or a conn that held nothing: no change
    limit.release(conn("c"))
    assert counts.inbound == 5
    assert limit.keep(a, 10) is None and counts.inbound == 15  # starts from nothing again


def test_over_max_inbound_buffered_is_named_with_the_bytes_kept(conn: Any) -> None:
    counts = LocalCounters()
    limit = InboundLimit(1000, 0, counts)
    a = conn("a")
    assert limit.keep(a, 1000) is None  # at the limit is allowed
    why = limit.keep(a, 1001)
    assert why == "1001 bytes received and not consumed: over max_inbound_buffered (1000)"
    assert counts.inbound == 1001  # accounted all the same: the loop closes it and releases


def test_the_engine_wide_total_sums_every_loops_counter(conn: Any) -> None:
    mine, other, third = LocalCounters(), LocalCounters(), LocalCounters()
    other.inbound, third.inbound = 400, 300
    limit = InboundLimit(10_000, 1000, LocalCounters())
    limit.share(mine, [other, mine, third])
    a = conn("a")
    assert limit.keep(a, 300) is None and mine.inbound == 300  # 1000 held in all: at the limit
    why = limit.keep(a, 301)
    assert why is not None and "over max_inbound_total (1000)" in why
    assert why.startswith("301 bytes received and not consumed here would make 1001 held by the engine")


def test_the_total_is_checked_only_when_a_conns_holding_grows(conn: Any) -> None:
    counts, busy = LocalCounters(), LocalCounters()
    limit = InboundLimit(10_000, 1000, counts)
    limit.share(counts, [counts, busy])
    a = conn("a")
    assert limit.keep(a, 200) is None
    busy.inbound = 5000  # another loop went far over meanwhile
    assert limit.keep(a, 150) is None  # consuming must never be refused
    assert limit.keep(a, 150) is None  # neither is keeping the same
    assert limit.keep(a, 151) is not None


def test_a_total_of_zero_means_no_engine_wide_limit(conn: Any) -> None:
    counts, busy = LocalCounters(), LocalCounters()
    busy.inbound = 1 << 40
    limit = InboundLimit(10_000, 0, counts)
    limit.share(counts, [counts, busy])
    assert limit.keep(conn("a"), 9000) is None


def test_without_share_the_total_counts_this_loop_alone(conn: Any) -> None:
    counts = LocalCounters()
    limit = InboundLimit(10_000, 500, counts)
    assert limit.keep(conn("a"), 300) is None
    why = limit.keep(conn("b"), 201)
    assert why is not None and "would make 501 held by the engine" in why


def test_async_writes_are_reserved_and_released_per_conn(conn: Any) -> None:
    limit = AsyncWriteLimit(100)
    a, b = conn("a"), conn("b")
    limit.reserve(a, 60)
    limit.reserve(a, 39)  # 99 waiting: under the limit, so one more is taken
    limit.reserve(a, 50)
    with pytest.raises(LimitExceededError):
        limit.reserve(a, 1)
    limit.reserve(b, 100)  # another connection has a limit of its own
    limit.release(a, 60)
    limit.reserve(a, 1)  # 90 waiting
    limit.release(a, 90)
    limit.release(a, 0)
    limit.reserve(a, 100)  # nothing left over from before


def test_a_refused_async_write_names_the_option_and_counts_the_queue(conn: Any) -> None:
    limit = AsyncWriteLimit(1000)
    c = conn("slow", outbound=900)
    limit.reserve(c, 99)
    limit.reserve(c, 10)  # 999 waiting (99 handed over, 900 queued): under the limit
    with pytest.raises(LimitExceededError) as caught:
        limit.reserve(c, 1)
    assert str(caught.value).startswith(f"async_write: 1009 bytes already wait for {c!r} (async_write_limit is 1000)")
    full = conn("full", outbound=1000)  # the queue alone is at the limit
    with pytest.raises(LimitExceededError) as caught:
        limit.reserve(full, 1)
    assert f"1000 bytes already wait for {full!r}" in str(caught.value)


def test_concurrent_reservations_never_pass_the_limit(conn: Any) -> None:
    limit = AsyncWriteLimit(1000)
    c = conn("shared", kind=Yielding)
    taken: list[int] = []
    start = threading.Barrier(8)

    def producer() -> None:
        start.wait(WAIT)
        for _ in range(100):
            try:
                limit.reserve(c, 10)
                taken.append(10)
            except LimitExceededError:
                pass

    def consumer() -> None:
        for _ in range(25):
            limit.release(c, 10)

    run_threads(producer, 8)
    assert sum(taken) == 1000  # exactly the limit's worth, whoever took it
    run_threads(consumer, 4)
    limit.reserve(c, 1000)  # all released: a full limit's worth is taken again
    with pytest.raises(LimitExceededError):
        limit.reserve(c, 1)


def run_threads(target: Callable[[], None], count: int) -> None:
    threads = [threading.Thread(target=target, name=f"test-limits-{i}") for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert not any(t.is_alive() for t in threads)
