"""What a loop counts as it serves, for ``Engine.stats()``: plain integers with one writer, the loop.

Each ``EventLoop`` owns one ``Tally``.  Its stream connections (``StreamConn._tally``) and
datagram sockets keep a reference to it and add to it where the bytes pass -- every read
and every write the kernel takes -- and the loop counts the rest: connections accepted,
closes by cause, backpressure pauses, TLS handshakes done.  Connection counts, failed TLS
handshakes and refused PROXY headers are counters.py's (shared memory in process mode,
written once per connection, since the balancer and ``max_connections`` need them now).

Why plain integers.  Bytes are counted on the hot path, twice per echoed message: compiled,
``tally.bytes_received += n`` on this native class is a field read, an add and a store --
no lock, no atomic (only the loop writes; a reader on another thread sees at worst a
moment-old value), and no shared memory, whose stores go through a ``memoryview`` item
assignment.  A worker process copies its tally into its slot of the shared mapping
periodically instead (worker_main.py, ``PUBLISH_EVERY``), where the parent reads it.

Closes are counted by cause in ``finish_close``, the end of every close, from the error
``on_close`` gets (``close_cause``): the classification is by type, so an ``OSError`` a
handler raises itself counts as a socket error, not a handler error.
"""

from __future__ import annotations

import ssl
from typing import Final, Sequence

from .errors import CloseTimeoutError, CodecError, EngineStoppedError, IdleTimeoutError, LimitExceededError

# The figures, in the order ``values()`` gives them (then the closes by cause): stats.py
# names the fields of a snapshot after them, counters.py lays out a worker's shared slot by them.
FIELDS: Final = ("bytes_received", "bytes_sent", "accepted", "backpressure_pauses", "tls_handshakes",
                 "datagrams_received", "datagrams_sent", "datagrams_dropped")

# Why a connection closed (stats.Closes has a field for each, in this order).
CAUSES: Final = ("local", "eof", "reset", "idle_timeout", "close_timeout", "limit", "codec_error",
                 "handler_error", "tls_failure", "proxy_refused", "error")
LOCAL: Final = 0  # no error: Action.CLOSE, c.close(), the engine's stop
EOF: Final = 1  # the peer closed (EOFError; a TLS peer with or without its close_notify)
RESET: Final = 2  # the peer reset the connection (ECONNRESET, EPIPE, ECONNABORTED)
IDLE_TIMEOUT: Final = 3
CLOSE_TIMEOUT: Final = 4  # close_timeout, or the stop deadline, cut a graceful close short
LIMIT: Final = 5  # max_inbound_buffered, max_inbound_total
CODEC_ERROR: Final = 6  # the peer's bad frame
HANDLER_ERROR: Final = 7  # a callback raised (not an OSError) or returned something that is not an Action
TLS_FAILURE: Final = 8  # the TLS handshake failed (timed out, refused, the peer left), or a bad record later
PROXY_REFUSED: Final = 9  # no valid PROXY header in time, or one from a peer not in proxy_trusted
ERROR: Final = 10  # any other: a socket error, the loop dying (EngineStoppedError)

SIZE: Final[int] = len(FIELDS) + len(CAUSES)  # how many integers values() gives

_RESETS: Final = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


class Tally:
    """One loop's figures.  Written by the loop's thread only; read by anyone (``values``)."""

    __slots__ = ("bytes_received", "bytes_sent", "accepted", "backpressure_pauses", "tls_handshakes",
                 "datagrams_received", "datagrams_sent", "datagrams_dropped", "closes")

    def __init__(self) -> None:
        self.bytes_received = 0  # every byte read from the loop's sockets: TLS records, PROXY headers included
        self.bytes_sent = 0  # every byte the kernel took from them
        self.accepted = 0  # connections from a listener this loop took on (not dials or enrolled sockets)
        self.backpressure_pauses = 0  # reading paused because a queue passed write_high_water
        self.tls_handshakes = 0  # completed, either side
        self.datagrams_received = 0
        self.datagrams_sent = 0
        self.datagrams_dropped = 0  # the send queue was full (max_udp_queued), or the datagram could not go
        self.closes: list[int] = [0] * len(CAUSES)  # stream connections closed, by cause (indexed as CAUSES)

    def values(self) -> list[int]:
        """Every figure, in ``FIELDS`` order, then the closes by cause: a snapshot, or what a worker publishes."""
        return [self.bytes_received, self.bytes_sent, self.accepted, self.backpressure_pauses, self.tls_handshakes,
                self.datagrams_received, self.datagrams_sent, self.datagrams_dropped, *self.closes]

    def load(self, values: Sequence[int]) -> None:
        """Go on from ``values`` (``values()`` of a worker that died): per-worker counters never go back."""
        (self.bytes_received, self.bytes_sent, self.accepted, self.backpressure_pauses, self.tls_handshakes,
         self.datagrams_received, self.datagrams_sent, self.datagrams_dropped) = values[:len(FIELDS)]
        self.closes = list(values[len(FIELDS):SIZE])


def close_cause(err: BaseException | None, opened: bool, proxy: bool) -> int:
    """Which of ``CAUSES`` a close counts under: ``err`` is what ``on_close`` gets (or would have).

    ``opened`` is false for a connection that never reached the handler -- its PROXY
    header (``proxy``) or TLS handshake failed.
    """
    if err is None:
        return LOCAL
    if not opened:
        return PROXY_REFUSED if proxy else TLS_FAILURE
    if isinstance(err, (EOFError, ssl.SSLEOFError)):
        return EOF
    if isinstance(err, IdleTimeoutError):
        return IDLE_TIMEOUT
    if isinstance(err, CloseTimeoutError):
        return CLOSE_TIMEOUT
    if isinstance(err, LimitExceededError):
        return LIMIT
    if isinstance(err, CodecError):
        return CODEC_ERROR
    if isinstance(err, ssl.SSLError):
        return TLS_FAILURE
    if isinstance(err, _RESETS):
        return RESET
    if isinstance(err, (OSError, EngineStoppedError)):
        return ERROR
    return HANDLER_ERROR
