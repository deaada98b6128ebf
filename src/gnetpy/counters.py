"""Connection counts: what ``count_connections`` and the least-connections balancer read.

A loop's count is ``handed_over + opened - closed``.  Each counter has a
single writer -- ``handed_over`` the thread that accepts for the loop (which
counts a socket when it picks the loop, so a burst of accepts spreads
correctly before the loop has registered any of them), ``opened`` and
``closed`` the loop itself (``enroll``, every close) -- so the count is exact
without a lock, and a reader sees at worst a moment-old value.

In thread mode the counters are plain attributes (``LocalCounters``).  In
process mode each worker's are 64-bit integers in one anonymous shared
mapping created before the fork (``SharedCounterTable``), so the parent's
balancer and ``Engine.count_connections`` read every worker's count without
a message per accept.  An aligned 64-bit store is atomic on the machines
gnetpy runs on, and there is still one writer per integer.

A worker's slot also holds its ``Tally`` (tally.py: bytes, closes by cause...) as the
worker last published it: those are counted in plain integers of the worker's own
and copied here every ``worker_main.PUBLISH_EVERY`` seconds and when the worker ends,
not at every read and write.  The parent's ``stats()`` reads them from here: at most
that old, and a snapshot may mix two publications (each integer is one of them).
"""

from __future__ import annotations

import mmap
from array import array
from typing import Protocol, Sequence

from . import tally

_SLOTS = 6  # handed_over, opened, closed, tls_failed, inbound, proxy_refused
_ROW = _SLOTS + tally.SIZE  # a worker's slot: those, then its published tally


class Counters(Protocol):
    handed_over: int
    opened: int
    closed: int
    tls_failed: int  # TLS handshakes that failed (not connections: they never opened)
    inbound: int  # unconsumed inbound bytes the loop holds (max_inbound_total)
    proxy_refused: int  # connections closed unread for their PROXY header (or its absence, or an untrusted peer)


class LocalCounters:
    __slots__ = ("handed_over", "opened", "closed", "tls_failed", "inbound", "proxy_refused")

    def __init__(self) -> None:
        self.handed_over = 0
        self.opened = 0
        self.closed = 0
        self.tls_failed = 0
        self.inbound = 0
        self.proxy_refused = 0


def _slot(index: int) -> property:
    def get(self: SharedCounters) -> int:
        return self._view[index]

    def put(self: SharedCounters, value: int) -> None:
        self._view[index] = value

    return property(get, put)


class SharedCounters:
    """One worker's counters, in the shared mapping."""

    __slots__ = ("_view", "_tally")
    handed_over = _slot(0)
    opened = _slot(1)
    closed = _slot(2)
    tls_failed = _slot(3)
    inbound = _slot(4)
    proxy_refused = _slot(5)

    def __init__(self, view: memoryview) -> None:
        self._view = view[:_SLOTS]
        self._tally = view[_SLOTS:]

    def publish(self, values: Sequence[int]) -> None:
        """In the worker: its ``Tally.values()``, for the parent to read."""
        self._tally[:] = array("q", values)

    def published(self) -> list[int]:
        """The worker's tally as it last published it (zeros before the first time)."""
        return self._tally.tolist()


class SharedCounterTable:
    """Counters for ``count`` workers, shared by the parent and every process it forks afterwards."""

    def __init__(self, count: int) -> None:
        self._map = mmap.mmap(-1, 8 * _ROW * count)  # anonymous and MAP_SHARED: survives fork, shared
        self._view = memoryview(self._map).cast("q")

    def slot(self, index: int) -> SharedCounters:
        row = self._view[_ROW * index:_ROW * (index + 1)]
        row[:] = array("q", [0] * _ROW)
        return SharedCounters(row)

    def close(self) -> None:
        self._view.release()
        self._map.close()


def count(counters: Counters) -> int:
    return counters.handed_over + counters.opened - counters.closed
