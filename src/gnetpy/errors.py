"""Exceptions raised (or passed to ``on_close``) by gnetpy.

Everything gnetpy raises on its own derives from :class:`GnetError`.  Errors
about a bad address or scheme also derive from :class:`ValueError`, so code
that validates user input with ``except ValueError`` keeps working.

Errors that come from the operating system (a reset, a broken pipe) reach
``on_close`` as the builtin :class:`OSError` subclasses Python raises for them
(``ConnectionResetError``, ``BrokenPipeError``...), and an orderly shutdown by
the peer reaches it as the builtin :class:`EOFError`: those are the types
Python programmers already test for.
"""

from __future__ import annotations


class GnetError(Exception):
    """Base class of every error gnetpy raises."""


class InvalidAddressError(GnetError, ValueError):
    """An address string that cannot be parsed or resolved."""


class UnsupportedProtocolError(GnetError, ValueError):
    """An address whose scheme gnetpy does not serve (``http://...``)."""


class ShortBufferError(GnetError):
    """``Conn.next(n)``/``Conn.peek(n)`` asked for more bytes than are buffered."""


class ConnClosedError(GnetError):
    """The connection was closed before the requested operation could run."""


class EngineStoppedError(GnetError):
    """The engine (or the event loop) stopped before the request could run."""


class CodecError(GnetError):
    """A frame could not be decoded or encoded (corrupt length, bad configuration...)."""


class TooLongFrameError(CodecError):
    """A frame is longer than the decoder's max_frame_length."""


class LimitExceededError(GnetError):
    """A bound was reached: a connection's unconsumed input (``max_inbound_buffered``), the
    engine's (``max_inbound_total``), or the cross-thread writes waiting for a connection
    (``async_write_limit``)."""


class UnsupportedOperationError(GnetError):
    """An operation this kind of connection cannot do (``writev`` on a datagram connection)."""


class IdleTimeoutError(TimeoutError):
    """``on_close``'s error for a connection that received nothing for ``idle_timeout``.

    A ``TimeoutError`` like any other; a class of its own so that ``Engine.stats()``
    counts these closes apart from ``close_timeout`` ones (tally.py).
    """


class CloseTimeoutError(TimeoutError):
    """``on_close``'s error for a graceful close cut short: ``close_timeout`` expired, or the stop deadline.

    A ``TimeoutError`` like any other; a class of its own for ``Engine.stats()`` (tally.py).
    """
