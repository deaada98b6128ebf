"""Frame codecs: split a connection's byte stream into frames, and frame replies.

These are gnet v1's codecs, themselves ports of Netty's decoders:

* :class:`BuiltInFrameCodec` -- pass-through: a "frame" is whatever is buffered.
* :class:`LineBasedFrameCodec` -- frames end with ``\\n`` (or ``\\r\\n``), as
  Netty's ``LineBasedFrameDecoder``.
* :class:`DelimiterBasedFrameCodec` -- frames end with an arbitrary delimiter.
* :class:`FixedLengthFrameCodec` -- every frame has the same length.
* :class:`LengthFieldBasedFrameCodec` -- a length field in a header, with
  Netty's ``LengthFieldBasedFrameDecoder`` parameters and semantics exactly;
  it encodes with a :class:`LengthFieldPrepender` (Netty's encoder).

Every codec has ``decode(c) -> bytes | None`` (one frame, consumed from the
connection; ``None`` while the frame is incomplete), ``frames(c)`` (an iterator
over the complete frames buffered now, each consumed as it is yielded) and
``encode(payload) -> bytes``.

**State lives on the connection.**  One codec instance serves every
connection of an engine, on every event loop thread, so a codec is immutable
once built: whatever a decoder must remember between two reads of the same
connection is kept on that connection (its codec state: none on a fresh
connection; ``c.reset_codec()`` forgets it).  Only the delimiter codecs use it.

**Delimiter search is linear.**  A delimiter decoder remembers on
the connection the offset up to which the buffered bytes have already
been searched (less ``len(delimiter) - 1`` bytes, since a delimiter can
straddle the end of what had arrived).  The next ``decode`` searches only
from there, so a 10 MiB line arriving one byte at a time is searched once in
all, not once per byte.  The search runs a compiled regular expression
directly over the connection's buffered bytes (``re`` takes a start and an
end in any buffer), so nothing is copied before the delimiter is found, and
it stops at the first delimiter, so a
buffer holding many short lines costs one pass overall too.  The search never
looks past ``max_frame_length`` plus the delimiter: a longer frame is
rejected without reading the rest.  The offset is reset when a frame is
consumed.  Each delimiter codec counts the bytes it examined in
``bytes_scanned`` (a statistic for tests and tuning, updated without a lock:
exact on one thread, approximate when several loops share the codec).
Consuming bytes from a connection behind its delimiter codec's back leaves a
stale offset: call ``c.reset_codec()`` after doing so.

**Limits.**  Every decoder has ``max_frame_length`` (default 1 MiB).  A frame
over it raises :class:`~gnetpy.errors.TooLongFrameError`, and a corrupt length
(negative, smaller than its own header) raises
:class:`~gnetpy.errors.CodecError`; both messages name the limit and the
offending length.  The engine then closes the connection with that error, so
decoders do not resynchronise the way Netty's discard mode does: nothing is
consumed on an error, and decoding the same bytes again raises it again.
Encoders do not enforce ``max_frame_length`` -- it guards against what peers
send -- but refuse payloads that would not decode back as one frame.

**Compiled where it counts.**  The per-frame work -- each codec's ``decode``
and the prepender's ``encode`` -- lives in framing.py, which the accelerator
compiles; this module checks the arguments and binds those methods as the
codec's own (framing.py says why the split: mypyc's argument checks).

**Reading in place.**  Decoders look at a connection's buffered bytes where
they are -- ``c._src`` from offset ``c._pos``, the state ``InboundBuffer``
keeps (buffer.py) -- and consume only through ``next``/``discard``.  A
``peek()`` would make two ``memoryview`` objects per frame (the view, then
its slice) and must be released before consuming, which W8 measured as a large
share of the codec's work per frame (benchmarks/results/2026-11-27-udp-frames.md).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from .errors import CodecError, TooLongFrameError
from .framing import (
    ByteOrder,
    CodecConn,
    DelimiterDecoder,
    FixedLengthDecoder,
    LengthFieldDecoder,
    LengthFieldEncoder,
    PassThroughDecoder,
    Payload,
    as_bytes,
)

__all__ = [
    "DEFAULT_MAX_FRAME_LENGTH",
    "BuiltInFrameCodec",
    "CodecConn",
    "CodecError",
    "DelimiterBasedFrameCodec",
    "FixedLengthFrameCodec",
    "FrameCodec",
    "LengthFieldBasedFrameCodec",
    "LengthFieldPrepender",
    "LineBasedFrameCodec",
    "TooLongFrameError",
]

DEFAULT_MAX_FRAME_LENGTH = 1 << 20  # 1 MiB



# -- argument checks ----------------------------------------------------------


def _check_int(name: str, value: object, minimum: int | None = None) -> int:
    # bool is an int subclass, but True as a length is always a mistake.
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_byteorder(byteorder: object) -> ByteOrder:
    if byteorder not in ("big", "little"):
        raise ValueError(f"byteorder must be 'big' or 'little', got {byteorder!r}")
    return "big" if byteorder == "big" else "little"


def _bind(codec: object, owner: type, name: str, method: Callable[..., Any]) -> None:
    """Store a compiled core's ``method`` in ``codec``'s slot ``name`` (declared by ``owner``).

    Through the slot's own descriptor rather than setattr: a subclass that defines a
    method of that name keeps it (setattr would find the subclass's function first
    and, with no instance ``__dict__``, fail).
    """
    owner.__dict__[name].__set__(codec, method)


# -- base classes -------------------------------------------------------------


class FrameCodec:
    """Base class of the codecs: ``decode``, ``frames`` and ``encode``."""

    __slots__ = ("max_frame_length",)

    def __init__(self, max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH) -> None:
        self.max_frame_length = _check_int("max_frame_length", max_frame_length, 1)

    def decode(self, c: CodecConn) -> bytes | None:
        """Consume and return one frame from ``c``; ``None`` if no complete frame is buffered."""
        raise NotImplementedError

    def encode(self, payload: Payload) -> bytes:
        """Return ``payload`` framed for the wire."""
        raise NotImplementedError

    def frames(self, c: CodecConn) -> Iterator[bytes]:
        """Yield every complete frame buffered in ``c``, each consumed as it is yielded."""
        decode = self.decode
        while (frame := decode(c)) is not None:
            yield frame

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_frame_length={self.max_frame_length})"


class _CompiledDecode(FrameCodec):
    """A built-in codec: ``decode`` is its core's (framing.py), one call per frame."""

    __slots__ = ("decode", "_decoder")

    decode: Callable[[CodecConn], bytes | None]  # type: ignore[assignment]  # the slot shadows FrameCodec.decode

    def _use(self, decoder: Any) -> None:
        self._decoder = decoder
        _bind(self, _CompiledDecode, "decode", decoder.decode)


class BuiltInFrameCodec(_CompiledDecode):
    """Pass-through codec (gnet's ``BuiltInFrameCodec``): no framing at all.

    ``decode`` returns everything buffered (``None`` if nothing), in pieces of
    at most ``max_frame_length`` bytes; ``encode`` returns the payload as it is.
    """

    __slots__ = ()

    def __init__(self, max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH) -> None:
        super().__init__(max_frame_length)
        self._use(PassThroughDecoder(self.max_frame_length))

    def encode(self, payload: Payload) -> bytes:
        return as_bytes(payload)


# -- delimiter codecs -----------------------------------------------------------


class _DelimiterCodec(_CompiledDecode):
    """The line and delimiter codecs: a resumable, bounded search (framing.DelimiterDecoder)."""

    __slots__ = ("_strip_cr",)

    def __init__(self, pattern: bytes, longest_delimiter: int, strip_cr: bool, max_frame_length: int) -> None:
        super().__init__(max_frame_length)
        self._strip_cr = strip_cr
        self._use(DelimiterDecoder(pattern, longest_delimiter, strip_cr, self.max_frame_length))

    @property
    def bytes_scanned(self) -> int:
        """Bytes the delimiter search has examined (the module docstring)."""
        return int(self._decoder.bytes_scanned)

    @bytes_scanned.setter
    def bytes_scanned(self, value: int) -> None:
        self._decoder.bytes_scanned = _check_int("bytes_scanned", value, 0)


class LineBasedFrameCodec(_DelimiterCodec):
    """Frames end with ``\\n`` (Netty's ``LineBasedFrameDecoder``, gnet's ``LineBasedFrameCodec``).

    The ``\\n`` is stripped from decoded frames.  With ``strip_cr`` (the
    default, as Netty, which treats both ``\\n`` and ``\\r\\n`` as line endings
    and strips either) a ``\\r`` right before the ``\\n`` is stripped too;
    without it the ``\\r`` stays in the frame.  ``max_frame_length`` counts the
    frame without its line ending, as Netty does.

    ``encode`` appends ``\\n`` (as gnet; every line-based peer accepts it).  It
    raises :class:`CodecError` for a payload containing ``\\n`` (it would
    arrive as two frames) and, with ``strip_cr``, for one ending with ``\\r``
    (the peer would strip it).
    """

    __slots__ = ()

    def __init__(self, strip_cr: bool = True, max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH) -> None:
        if not isinstance(strip_cr, bool):
            raise TypeError(f"strip_cr must be True or False, got {strip_cr!r}")
        super().__init__(b"\n", 2 if strip_cr else 1, strip_cr, max_frame_length)

    @property
    def strip_cr(self) -> bool:
        return self._strip_cr

    def encode(self, payload: Payload) -> bytes:
        data = as_bytes(payload)
        at = data.find(b"\n")
        if at >= 0:
            raise CodecError(f"payload contains a line feed at offset {at}: it would split the line")
        if self._strip_cr and data.endswith(b"\r"):
            raise CodecError("payload ends with a carriage return, which the decoder (strip_cr=True) would strip")
        return data + b"\n"

    def __repr__(self) -> str:
        return f"LineBasedFrameCodec(strip_cr={self._strip_cr}, max_frame_length={self.max_frame_length})"


class DelimiterBasedFrameCodec(_DelimiterCodec):
    """Frames end with ``delimiter`` (Netty's ``DelimiterBasedFrameDecoder`` with one delimiter).

    The delimiter is stripped from decoded frames; ``max_frame_length``
    counts the frame without it.  ``encode`` appends the delimiter and raises
    :class:`CodecError` for a payload that contains it (or would, once the
    delimiter is appended: it would decode as a different frame).
    """

    __slots__ = ("delimiter",)

    def __init__(self, delimiter: bytes, max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH) -> None:
        if not isinstance(delimiter, (bytes, bytearray, memoryview)):
            raise TypeError(f"delimiter must be bytes, got {type(delimiter).__name__}")
        delimiter = bytes(delimiter)
        if not delimiter:
            raise ValueError("delimiter must be non-empty bytes, got b''")
        super().__init__(delimiter, len(delimiter), False, max_frame_length)
        self.delimiter = delimiter

    def encode(self, payload: Payload) -> bytes:
        data = as_bytes(payload)
        framed = data + self.delimiter
        # The first delimiter in the framed bytes must be the one just appended
        # (a payload ending in a prefix of an overlapping delimiter also fails).
        at = framed.find(self.delimiter)
        if at != len(data):
            raise CodecError(f"payload of {len(data)} bytes holds the delimiter {self.delimiter!r} at offset {at}: "
                             "it would split the frame")
        return framed

    def __repr__(self) -> str:
        return f"DelimiterBasedFrameCodec({self.delimiter!r}, max_frame_length={self.max_frame_length})"


# -- fixed length -------------------------------------------------------------


class FixedLengthFrameCodec(_CompiledDecode):
    """Every frame is ``length`` bytes (Netty's ``FixedLengthFrameDecoder``).

    ``encode`` requires a payload of exactly ``length`` bytes (gnet also
    accepts multiples; here one encode is one frame) and raises
    :class:`CodecError` naming both lengths otherwise.  ``length`` may not
    exceed ``max_frame_length``.
    """

    __slots__ = ("length",)

    def __init__(self, length: int, max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH) -> None:
        super().__init__(max_frame_length)
        self.length = _check_int("length", length, 1)
        if length > self.max_frame_length:
            raise ValueError(f"length {length} exceeds max_frame_length {self.max_frame_length}")
        self._use(FixedLengthDecoder(self.length))

    def encode(self, payload: Payload) -> bytes:
        data = as_bytes(payload)
        if len(data) != self.length:
            raise CodecError(f"payload is {len(data)} bytes, the fixed frame length is {self.length}")
        return data

    def __repr__(self) -> str:
        return f"FixedLengthFrameCodec({self.length}, max_frame_length={self.max_frame_length})"


# -- length field -------------------------------------------------------------

_FIELD_LENGTHS = (1, 2, 3, 4, 8)
# Netty reads 1-4 byte fields unsigned and an 8-byte field as a signed long.
_FIELD_MAX = {1: 0xFF, 2: 0xFFFF, 3: 0xFFFFFF, 4: 0xFFFFFFFF, 8: (1 << 63) - 1}


def _cannot_encode(length_field_offset: int) -> Callable[[Payload], bytes]:
    """``encode`` of a length-field codec that has no prepender (see LengthFieldBasedFrameCodec)."""
    def encode(payload: Payload) -> bytes:
        raise CodecError(f"encode() cannot build the {length_field_offset} header bytes before the length "
                         "field: pass prepender= (or frame replies by hand)")
    return encode


def _check_field_length(length_field_length: object) -> int:
    if length_field_length not in _FIELD_LENGTHS or isinstance(length_field_length, bool):
        raise ValueError(f"length_field_length must be 1, 2, 3, 4 or 8, got {length_field_length!r}")
    return int(length_field_length)  # type: ignore[call-overload]


class LengthFieldPrepender:
    """Prepends a length field to a payload (Netty's ``LengthFieldPrepender``).

    The field holds ``len(payload) + length_adjustment``, plus
    ``length_field_length`` when ``length_includes_length_field``.  A value
    that is negative or does not fit in the field raises :class:`CodecError`
    naming it (an 8-byte field holds at most 2**63 - 1: Netty's decoder reads
    it signed).  Netty's example, ``LengthFieldPrepender(2)``::

        encode(b"HELLO, WORLD") == b"\\x00\\x0cHELLO, WORLD"
    """

    __slots__ = ("length_field_length", "length_adjustment", "length_includes_length_field", "byteorder",
                 "encode")

    # Return the length field followed by the payload: framing.LengthFieldEncoder.encode.
    encode: Callable[[Payload], bytes]

    def __init__(self, length_field_length: int, length_adjustment: int = 0,
                 length_includes_length_field: bool = False, byteorder: str = "big") -> None:
        self.length_field_length = n = _check_field_length(length_field_length)
        self.length_adjustment = _check_int("length_adjustment", length_adjustment)
        if not isinstance(length_includes_length_field, bool):
            raise TypeError(f"length_includes_length_field must be True or False, got {length_includes_length_field!r}")
        self.length_includes_length_field = length_includes_length_field
        self.byteorder = _check_byteorder(byteorder)
        add = length_adjustment + (n if length_includes_length_field else 0)
        _bind(self, LengthFieldPrepender, "encode", LengthFieldEncoder(n, add, _FIELD_MAX[n], self.byteorder).encode)

    def __repr__(self) -> str:
        return (f"LengthFieldPrepender({self.length_field_length}, length_adjustment={self.length_adjustment}, "
                f"length_includes_length_field={self.length_includes_length_field}, byteorder={self.byteorder!r})")


class LengthFieldBasedFrameCodec(_CompiledDecode):
    """Frames carry their length in a header field (Netty's ``LengthFieldBasedFrameDecoder``).

    The length field is ``length_field_length`` bytes (1, 2, 3, 4 or 8; an
    8-byte field is signed, the others unsigned, as Netty) at
    ``length_field_offset``, in ``byteorder``.  A frame is::

        length_field_offset + length_field_length + field value + length_adjustment

    bytes long; the decoder returns it less its first ``initial_bytes_to_strip``
    bytes.  ``max_frame_length`` bounds that whole frame, header included, and
    is checked as soon as the header has arrived.  A negative field value, a
    frame shorter than the header up to the end of the length field, or one
    shorter than ``initial_bytes_to_strip`` raise :class:`CodecError`.

    ``encode`` uses ``prepender``; without one it builds
    ``LengthFieldPrepender(length_field_length, -length_adjustment, byteorder=byteorder)``,
    whose frames this decoder reads back (as the payload when
    ``initial_bytes_to_strip == length_field_length``).  With a
    ``length_field_offset`` it cannot build the header before the field, so
    ``encode`` then needs an explicit ``prepender`` (or frame by hand) and
    raises :class:`CodecError` otherwise.
    """

    __slots__ = ("length_field_offset", "length_field_length", "length_adjustment", "initial_bytes_to_strip",
                 "byteorder", "_prepender", "encode")

    # ``encode`` is a slot (it shadows FrameCodec.encode) holding the prepender's own
    # bound method, so a reply is framed in one call, into compiled code.
    encode: Callable[[Payload], bytes]  # type: ignore[assignment]

    def __init__(self, length_field_offset: int = 0, length_field_length: int = 4, length_adjustment: int = 0,
                 initial_bytes_to_strip: int = 0, byteorder: str = "big",
                 max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH, *,
                 prepender: LengthFieldPrepender | None = None) -> None:
        super().__init__(max_frame_length)
        self.length_field_offset = offset = _check_int("length_field_offset", length_field_offset, 0)
        self.length_field_length = n = _check_field_length(length_field_length)
        self.length_adjustment = _check_int("length_adjustment", length_adjustment)
        self.initial_bytes_to_strip = _check_int("initial_bytes_to_strip", initial_bytes_to_strip, 0)
        self.byteorder = _check_byteorder(byteorder)
        if offset + n > self.max_frame_length:
            raise ValueError(f"max_frame_length {self.max_frame_length} must be >= length_field_offset "
                             f"{offset} + length_field_length {n}")
        if prepender is not None and not isinstance(prepender, LengthFieldPrepender):
            raise TypeError(f"prepender must be a LengthFieldPrepender or None, got {type(prepender).__name__}")
        if prepender is None and offset == 0:
            prepender = LengthFieldPrepender(n, -length_adjustment, byteorder=byteorder)
        self._prepender = prepender
        self._use(LengthFieldDecoder(offset, n, self.length_adjustment, self.initial_bytes_to_strip,
                                     self.byteorder, self.max_frame_length))
        _bind(self, LengthFieldBasedFrameCodec, "encode",
              _cannot_encode(offset) if prepender is None else prepender.encode)

    @property
    def prepender(self) -> LengthFieldPrepender | None:
        """The encoder ``encode`` uses (``None``: encoding needs an explicit one)."""
        return self._prepender

    def __repr__(self) -> str:
        return (f"LengthFieldBasedFrameCodec(length_field_offset={self.length_field_offset}, "
                f"length_field_length={self.length_field_length}, length_adjustment={self.length_adjustment}, "
                f"initial_bytes_to_strip={self.initial_bytes_to_strip}, byteorder={self.byteorder!r}, "
                f"max_frame_length={self.max_frame_length}, prepender={self._prepender!r})")
