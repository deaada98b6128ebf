"""The codecs' per-frame work: find one frame in a connection's bytes, frame one payload.

codec.py is the public face of the frame codecs -- their arguments checked, their
documentation, their ``repr`` -- and each codec there builds one of the cores below from
values it has already checked, then binds the core's ``decode`` (and the prepender's
``encode``) as its own, so a frame costs one call, into this module.

Why two modules: this one is compiled (``_compiled.COMPILED_MODULES``) and codec.py is
not.  mypyc checks every argument's declared type on entry, with its own message that
does not name the argument ("int object expected; got float"), and passes ``True`` as
``1`` to an ``int`` parameter, so compiled constructors would lose the messages codec.py
promises ("max_frame_length must be an int, got float", bools refused as lengths).  The
cores' constructors are private and called only with checked values, so their entry
checks never fire.  What that gained on W8 (benchmarks/callgrind.py) is in
benchmarks/results/2026-11-27-udp-frames.md.

The semantics, and the reasons behind them, are in codec.py's module docstring.
"""

from __future__ import annotations

import re
import struct
from typing import Any, Callable, Final, Literal, Protocol

from .errors import CodecError, TooLongFrameError

Payload = bytes | bytearray | memoryview

# Up to this frame length, LengthFieldDecoder strips the header by slicing what next()
# returned (copying the frame twice) rather than calling discard() first: a second copy
# of a short frame costs less than a second call.
COPY_TO_STRIP: Final = 1024
STRUCT_CODES: Final = {1: "B", 2: "H", 4: "I", 8: "q"}  # Netty reads an 8-byte field signed

ByteOrder = Literal["big", "little"]


def field_struct(length_field_length: int, byteorder: ByteOrder) -> struct.Struct | None:
    """The struct of a length field; None for a 3-byte field (struct has no such integer:
    int.from_bytes/to_bytes then)."""
    if length_field_length == 3:
        return None
    return struct.Struct((">" if byteorder == "big" else "<") + STRUCT_CODES[length_field_length])


class CodecConn(Protocol):
    """What a codec needs from a connection (a :class:`gnetpy.Conn` has it inside a callback).

    The buffered bytes are ``_src[_pos:]`` (any object with the buffer protocol), read in
    place and never written: consuming is ``next``/``discard`` (codec.py, "Reading in place").
    """

    _codec_state: Any
    _src: Any
    _pos: int

    @property
    def inbound_buffered(self) -> int: ...

    def next(self, n: int = -1) -> bytes: ...

    def discard(self, n: int = -1) -> int: ...


def as_bytes(payload: object) -> bytes:
    """A payload as ``bytes`` (copied from a bytearray or memoryview); TypeError naming its type otherwise."""
    if type(payload) is bytes:
        return payload
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload)
    raise TypeError(f"payload must be bytes, bytearray or memoryview, got {type(payload).__name__}")


class PassThroughDecoder:
    """``BuiltInFrameCodec``: whatever is buffered, in pieces of at most ``max_frame_length``."""

    def __init__(self, max_frame_length: int) -> None:
        self.max_frame_length = max_frame_length

    def decode(self, c: CodecConn) -> bytes | None:
        n = c.inbound_buffered
        if not n:
            return None
        # next(-1) can hand over the read buffer without a copy.
        return c.next(-1 if n <= self.max_frame_length else self.max_frame_length)


class FixedLengthDecoder:
    def __init__(self, length: int) -> None:
        self.length = length

    def decode(self, c: CodecConn) -> bytes | None:
        if c.inbound_buffered < self.length:
            return None
        return c.next(self.length)


class DelimiterDecoder:
    """The line and delimiter codecs' decoder: a resumable, bounded search (``c._codec_state``)."""

    def __init__(self, pattern: bytes, longest_delimiter: int, strip_cr: bool, max_frame_length: int) -> None:
        self.max_frame_length = max_frame_length
        self.bytes_scanned = 0  # a statistic: exact on one thread, approximate when loops share the codec
        self._search: Callable[..., re.Match[bytes] | None] = re.compile(re.escape(pattern)).search
        self._plen = len(pattern)
        # The longest delimiter a frame can end with (2 for CRLF): a frame of at
        # most max_frame_length bytes is complete within max_frame_length + _dmax bytes.
        self._dmax = longest_delimiter
        self._strip_cr = strip_cr

    def decode(self, c: CodecConn) -> bytes | None:
        buffered = c.inbound_buffered
        start = c._codec_state or 0
        if start > buffered:  # bytes were consumed behind our back: search afresh
            start = 0
        window = self.max_frame_length + self._dmax
        end = buffered if buffered < window else window
        if end - start >= self._plen:
            found = self._scan(c, start, end)
            if found is not None:
                frame, consumed = found
                c.discard(consumed)
                c._codec_state = None
                return frame
            # A delimiter may begin in the last _plen - 1 bytes searched: resume there.
            c._codec_state = end - self._plen + 1
        if buffered >= window:
            raise TooLongFrameError(
                f"frame length of at least {window - self._dmax + 1} (no delimiter yet) exceeds "
                f"max_frame_length {self.max_frame_length}")
        return None

    def _scan(self, c: CodecConn, start: int, end: int) -> tuple[bytes, int] | None:
        """Search ``c``'s bytes ``[start, end)``: the frame before the delimiter and the bytes to consume."""
        src = c._src
        pos = c._pos
        m = self._search(src, pos + start, pos + end)
        if m is None:
            self.bytes_scanned += end - start
            return None
        consumed = m.end() - pos
        self.bytes_scanned += consumed - start
        frame_end = m.start() - pos
        if self._strip_cr and frame_end and src[pos + frame_end - 1] == 13:  # the CR of a CRLF
            frame_end -= 1
        if frame_end > self.max_frame_length:
            raise TooLongFrameError(
                f"frame length {frame_end} exceeds max_frame_length {self.max_frame_length}")
        frame = src[pos:pos + frame_end]
        return (frame if type(frame) is bytes else bytes(frame)), consumed


class LengthFieldDecoder:
    """``LengthFieldBasedFrameCodec``'s decoder (Netty's ``LengthFieldBasedFrameDecoder``).

    decode runs once per frame (and once more per batch, to find that no whole
    frame is left): the header is read with struct's unpack_from in place
    (int.from_bytes for 3-byte fields), and the four validity checks collapse
    into one range test whose failure hands over to _frame_length for the
    precise error.
    """

    def __init__(self, length_field_offset: int, length_field_length: int, length_adjustment: int,
                 initial_bytes_to_strip: int, byteorder: ByteOrder, max_frame_length: int) -> None:
        self.length_field_offset = length_field_offset
        self.length_adjustment = length_adjustment
        self.initial_bytes_to_strip = initial_bytes_to_strip
        self.byteorder: ByteOrder = byteorder
        self.max_frame_length = max_frame_length
        self._end = length_field_offset + length_field_length  # Netty's lengthFieldEndOffset
        field = field_struct(length_field_length, byteorder)
        self._unpack_from: Callable[[Any, int], tuple[int]] | None = None if field is None else field.unpack_from
        # A field value v is valid when _shortest <= v + _adjusted_end <= max_frame_length
        # and v >= 0 (_frame_length's checks, in one range test).
        self._adjusted_end = length_adjustment + self._end
        self._shortest = max(self._end, initial_bytes_to_strip)

    def decode(self, c: CodecConn) -> bytes | None:
        src = c._src  # read in place (codec.py's module docstring)
        pos = c._pos
        buffered = len(src) - pos
        end = self._end
        if buffered < end:
            return None
        unpack_from = self._unpack_from
        if unpack_from is not None:
            value = unpack_from(src, pos + self.length_field_offset)[0]
        else:
            value = int.from_bytes(src[pos + self.length_field_offset:pos + end], self.byteorder)
        frame_length = value + self._adjusted_end
        if value < 0 or not self._shortest <= frame_length <= self.max_frame_length:
            frame_length = self._frame_length(value)  # raises, naming what is wrong
        if buffered < frame_length:
            return None
        strip = self.initial_bytes_to_strip
        if not strip:
            return c.next(frame_length)
        if frame_length <= COPY_TO_STRIP:
            return c.next(frame_length)[strip:]
        c.discard(strip)
        return c.next(frame_length - strip)

    def _frame_length(self, value: int) -> int:
        # Netty's checks, in Netty's order (but the strip check runs before the
        # frame has arrived: the outcome is the same, only sooner).
        end = self._end
        if value < 0:
            raise CodecError(f"negative pre-adjustment length field: {value}")
        frame_length = value + self.length_adjustment + end
        if frame_length < end:
            raise CodecError(f"adjusted frame length {frame_length} (length field {value}, length_adjustment "
                             f"{self.length_adjustment}) is less than the length field's end offset {end}")
        if frame_length > self.max_frame_length:
            raise TooLongFrameError(f"frame length {frame_length} exceeds max_frame_length {self.max_frame_length}")
        if frame_length < self.initial_bytes_to_strip:
            raise CodecError(f"adjusted frame length {frame_length} is less than initial_bytes_to_strip "
                             f"{self.initial_bytes_to_strip}")
        return frame_length


class LengthFieldEncoder:
    """``LengthFieldPrepender``'s encode: per message on a codec server's reply path, so one
    call (no helper for the common ``bytes`` payload) and the range check in one test."""

    def __init__(self, length_field_length: int, add: int, largest: int, byteorder: ByteOrder) -> None:
        self.length_field_length = length_field_length
        self._add = add  # length_adjustment, plus the field's own length when it is included
        self._max = largest
        self._byteorder: ByteOrder = byteorder
        field = field_struct(length_field_length, byteorder)
        self._pack: Callable[[int], bytes] | None = None if field is None else field.pack

    def encode(self, payload: Payload) -> bytes:
        """Return the length field followed by ``payload``."""
        data = payload if type(payload) is bytes else as_bytes(payload)
        value = len(data) + self._add
        if not 0 <= value <= self._max:
            raise CodecError(f"length field value {value} (payload of {len(data)} bytes) does not fit in a "
                             f"{self.length_field_length}-byte length field (0..{self._max})")
        pack = self._pack
        if pack is None:
            return value.to_bytes(3, self._byteorder) + data
        return pack(value) + data
