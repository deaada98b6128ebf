"""The bounds an event loop keeps on what it holds for its connections.

``InboundLimit``: bytes received and not consumed by the handler (a partial
frame, say), per connection (``max_inbound_buffered``) and over the whole
engine (``max_inbound_total``: every loop's count, in shared memory between
worker processes).  Per-connection limits multiply by the number of
connections -- 100 connections each holding a partial 1000 KiB frame hold
98 MiB -- and ``max_connections`` times the per-connection limit is no useful
bound, hence the engine-wide one.  Only connections that leave bytes
unconsumed are accounted (a dict of them, and their sizes): the common path,
a handler that consumes what arrives, never gets here.

``AsyncWriteLimit``: bytes that other threads handed to ``async_write`` and
the loop has not written yet, refused at ``async_write_limit`` counting what
is queued too -- a producing thread cannot fill memory behind a peer that
does not read.  Its writers are other threads: a lock.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from .errors import LimitExceededError

if TYPE_CHECKING:
    from .conn import Conn
    from .counters import Counters


class InboundLimit:
    """One loop's unconsumed inbound bytes, and the limits on them (see the module docstring)."""

    def __init__(self, per_conn: int, total: int, counts: Counters) -> None:
        self.per_conn = per_conn
        self.total = total
        self._holding: dict[Conn, int] = {}  # connections that keep unconsumed bytes, and how many
        self._counts = counts  # this loop's: ``inbound`` is the sum of _holding
        self._peers: list[Counters] = [counts]  # every loop of the engine, this one included

    def share(self, counts: Counters, peers: list[Counters]) -> None:
        """Count in ``counts`` (a worker's shared ones) and sum ``peers`` for the engine's total."""
        self._counts = counts
        self._peers = peers

    def keep(self, c: Conn, kept: int) -> str | None:
        """After a callback, ``c`` keeps ``kept`` bytes (0: none): account them; why it is over a limit, if it is."""
        before = self._holding.pop(c, 0)
        if not kept and not before:
            return None
        if kept:
            self._holding[c] = kept
        self._counts.inbound += kept - before
        if kept > self.per_conn:
            return f"{kept} bytes received and not consumed: over max_inbound_buffered ({self.per_conn})"
        if kept > before and self.total:
            held = sum(peer.inbound for peer in self._peers)
            if held > self.total:
                return (f"{kept} bytes received and not consumed here would make {held} held by the engine: "
                        f"over max_inbound_total ({self.total})")
        return None

    def release(self, c: Conn) -> None:
        """``c`` is closing: its unconsumed bytes no longer count (they are never delivered now)."""
        if self._holding:
            kept = self._holding.pop(c, 0)
            if kept:
                self._counts.inbound -= kept


class AsyncWriteLimit:
    """Bytes accepted by ``async_write`` for each connection and not yet written by its loop."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._pending: dict[Conn, int] = {}  # only connections with some
        self._lock = threading.Lock()

    def reserve(self, c: Conn, size: int) -> None:
        """From another thread: account ``size`` bytes for ``c``, or refuse at the limit."""
        with self._lock:
            pending = self._pending.get(c, 0)
            waiting = pending + c.outbound_buffered  # read off the loop: a moment old at worst
            if waiting >= self.limit:
                raise LimitExceededError(f"async_write: {waiting} bytes already wait for {c!r} (async_write_limit "
                                         f"is {self.limit}); write again after an earlier write's callback or "
                                         f"on_drained")
            self._pending[c] = pending + size

    def release(self, c: Conn, size: int) -> None:
        with self._lock:
            pending = self._pending.pop(c, 0) - size
            if pending > 0:
                self._pending[c] = pending

