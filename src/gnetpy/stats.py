"""``Engine.stats()``: a snapshot of the engine's counters, per worker (or loop) and summed.

    s = engine.stats()
    s.bytes_received, s.closed.idle_timeout, s.connections_open     # the engine's
    [w.bytes_sent for w in s.workers]                                 # each worker's

Every figure counts from the engine's start and never goes back (a worker that is
replaced goes on from its predecessor's figures), except ``connections_open``, a gauge.
Where they come from (docs/architecture.md §10):

* each loop's ``Tally`` (tally.py): bytes, connections accepted, closes by cause,
  backpressure pauses, TLS handshakes done, datagrams -- plain integers the loop adds to;
* its connection counts (counters.py): connections open, failed TLS handshakes, refused
  PROXY headers;
* the parent, for worker restarts.

Freshness.  Threads: read live.  Worker processes: connection counts, TLS failures and
PROXY refusals are live (shared memory); the tally is as the worker last published it,
at most ``worker_main.PUBLISH_EVERY`` (0.5 s) ago, and exact once the engine has stopped.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from .tally import CAUSES, FIELDS


@dataclasses.dataclass(frozen=True)
class Closes:
    """Stream connections closed, by cause: what the error ``on_close`` got says (``tally.close_cause``).

    Connections that never reached the handler are here too (``tls_failure``,
    ``proxy_refused``); UDP sessions are not.
    """

    local: int = 0  # no error: Action.CLOSE, c.close(), the engine's stop
    eof: int = 0  # the peer closed its side (EOFError)
    reset: int = 0  # the peer reset it (ConnectionResetError, BrokenPipeError)
    idle_timeout: int = 0  # nothing received for idle_timeout
    close_timeout: int = 0  # a graceful close cut short by close_timeout or the stop deadline
    limit: int = 0  # max_inbound_buffered, max_inbound_total (LimitExceededError)
    codec_error: int = 0  # the peer's bad frame (CodecError)
    handler_error: int = 0  # a callback raised, or returned something that is not an Action
    tls_failure: int = 0  # a failed TLS handshake, or a bad TLS record later
    proxy_refused: int = 0  # no valid PROXY header in time, or one from an untrusted peer
    error: int = 0  # any other: a socket error, a loop that died

    @property
    def total(self) -> int:
        return sum(dataclasses.astuple(self))

    def items(self) -> list[tuple[str, int]]:
        """``(cause, count)`` for every cause, in a fixed order."""
        return [(cause, getattr(self, cause)) for cause in CAUSES]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Figures:
    """What a worker (or loop) counts, and the engine sums: the fields ``WorkerStats`` and ``Stats`` share."""

    connections_open: int = 0  # now, accepted ones still being handed over included (count_connections)
    accepted: int = 0  # connections from the listeners (dials and enrolled sockets are not)
    closed: Closes = Closes()
    bytes_received: int = 0  # read from the sockets: TLS records and PROXY headers included
    bytes_sent: int = 0  # taken by the kernel
    backpressure_pauses: int = 0  # times reading paused for an outbound queue above write_high_water
    tls_handshakes: int = 0  # completed
    tls_failures: int = 0  # failed (count_tls_failures)
    datagrams_received: int = 0
    datagrams_sent: int = 0
    datagrams_dropped: int = 0  # the send queue was full (max_udp_queued), or a datagram could not go
    proxy_refused: int = 0  # connections closed for their PROXY header (count_proxy_refused)
    worker_restarts: int = 0  # process mode: the worker was replaced after it died


@dataclasses.dataclass(frozen=True, kw_only=True)
class WorkerStats(Figures):
    """One worker process's figures (in process mode), or one event loop's (threads)."""

    index: int  # the loop's, or the worker's, index (Prometheus: worker="0")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Stats(Figures):
    """The engine's figures, summed over ``workers``."""

    workers: tuple[WorkerStats, ...] = ()


def worker_stats(index: int, connections_open: int, tally: Sequence[int], tls_failures: int, proxy_refused: int,
                 worker_restarts: int = 0) -> WorkerStats:
    """One worker's figures from its parts: ``tally`` is ``Tally.values()``, live or as published."""
    closed = Closes(**dict(zip(CAUSES, tally[len(FIELDS):])))
    return WorkerStats(index=index, connections_open=connections_open, closed=closed, tls_failures=tls_failures,
                       proxy_refused=proxy_refused, worker_restarts=worker_restarts,
                       **dict(zip(FIELDS, tally[:len(FIELDS)])))


def summed(workers: Sequence[WorkerStats]) -> Stats:
    """The engine's snapshot: every figure summed over ``workers``, which it keeps."""
    names = [f.name for f in dataclasses.fields(Figures) if f.name != "closed"]
    totals = {name: sum(getattr(w, name) for w in workers) for name in names}
    closed = Closes(**{cause: sum(getattr(w.closed, cause) for w in workers) for cause in CAUSES})
    return Stats(closed=closed, workers=tuple(workers), **totals)


__all__ = ["Closes", "Stats", "WorkerStats"]
