"""Unit tests of gnetpy.codec over a stand-in connection (no sockets, no engine).

``FakeConn`` implements the inbound half of :class:`gnetpy.Conn` that codecs
use over a bytearray.  Like the real connection's read buffer, the bytearray
cannot be resized while a ``peek`` view of it is alive (``BufferError``), so
every test also checks that the codecs release their views.
"""

from __future__ import annotations

import struct
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gnetpy.buffer import InboundBuffer
from gnetpy.codec import (
    DEFAULT_MAX_FRAME_LENGTH,
    BuiltInFrameCodec,
    DelimiterBasedFrameCodec,
    FixedLengthFrameCodec,
    FrameCodec,
    LengthFieldBasedFrameCodec,
    LengthFieldPrepender,
    LineBasedFrameCodec,
)
from gnetpy.errors import CodecError, GnetError, ShortBufferError, TooLongFrameError

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HELLO = b"HELLO, WORLD"


class FakeConn:
    """The codec-facing part of a Conn over a bytearray, with ``feed`` to receive bytes."""

    def __init__(self, data: bytes = b"") -> None:
        self._buf = bytearray(data)
        self._codec_state: Any = None
        self._pos = 0  # decoders read _src[_pos:] in place; here everything buffered is _buf

    @property
    def _src(self) -> bytearray:
        return self._buf

    def feed(self, data: bytes) -> None:
        self._buf += data  # BufferError if a codec leaked a peek() view

    @property
    def inbound_buffered(self) -> int:
        return len(self._buf)

    def peek(self, n: int = -1) -> memoryview:
        if n < 0:
            n = len(self._buf)
        elif n > len(self._buf):
            raise ShortBufferError(f"peek({n}): only {len(self._buf)} bytes buffered")
        return memoryview(self._buf)[:n]

    def next(self, n: int = -1) -> bytes:
        if n < 0:
            n = len(self._buf)
        elif n > len(self._buf):
            raise ShortBufferError(f"next({n}): only {len(self._buf)} bytes buffered")
        chunk = bytes(self._buf[:n])
        del self._buf[:n]
        return chunk

    def discard(self, n: int = -1) -> int:
        if n < 0 or n > len(self._buf):
            n = len(self._buf)
        del self._buf[:n]
        return n


def decode_all(codec: FrameCodec, data: bytes) -> tuple[list[bytes], FakeConn]:
    c = FakeConn(data)
    return list(codec.frames(c)), c


def test_fake_conn_is_faithful() -> None:
    c = FakeConn(b"abc")
    with pytest.raises(ShortBufferError):
        c.peek(4)
    with pytest.raises(ShortBufferError):
        c.next(4)
    view = c.peek()
    assert isinstance(view, memoryview) and view == b"abc"
    with pytest.raises(BufferError):
        c.feed(b"d")
    view.release()
    c.feed(b"d")
    assert c.next(1) == b"a" and c.discard(1) == 1 and c.next() == b"cd" and c.inbound_buffered == 0


# -- Netty's LengthFieldBasedFrameDecoder javadoc examples -----------------------------------------


NETTY_EXAMPLES = {
    # name: (offset, field length, adjustment, strip, BEFORE, AFTER)
    "2-byte length at offset 0, do not strip header": (0, 2, 0, 0, b"\x00\x0c" + HELLO, b"\x00\x0c" + HELLO),
    "2-byte length at offset 0, strip header": (0, 2, 0, 2, b"\x00\x0c" + HELLO, HELLO),
    "2-byte length at offset 0, length of the whole message": (
        0, 2, -2, 0, b"\x00\x0e" + HELLO, b"\x00\x0e" + HELLO),
    "3-byte length at the end of a 5-byte header": (
        2, 3, 0, 0, b"\xca\xfe\x00\x00\x0c" + HELLO, b"\xca\xfe\x00\x00\x0c" + HELLO),
    "3-byte length at the beginning of a 5-byte header": (
        0, 3, 2, 0, b"\x00\x00\x0c\xca\xfe" + HELLO, b"\x00\x00\x0c\xca\xfe" + HELLO),
    "2-byte length at offset 1 of a 4-byte header, strip HDR1 and LEN": (
        1, 2, 1, 3, b"\xca\x00\x0c\xfe" + HELLO, b"\xfe" + HELLO),
    "2-byte length at offset 1 of a 4-byte header, strip HDR1 and LEN, length of the whole message": (
        1, 2, -3, 3, b"\xca\x00\x10\xfe" + HELLO, b"\xfe" + HELLO),
}


@pytest.mark.parametrize("name", list(NETTY_EXAMPLES))
def test_netty_length_field_examples(name: str) -> None:
    offset, n, adjustment, strip, before, after = NETTY_EXAMPLES[name]
    codec = LengthFieldBasedFrameCodec(offset, n, adjustment, strip)
    # The whole frame followed by the start of the next one: exactly one frame comes out.
    c = FakeConn(before + before[:5])
    assert codec.decode(c) == after
    assert c.inbound_buffered == 5 and codec.decode(c) is None
    # Byte by byte: nothing until the last byte.
    c = FakeConn()
    for i, byte in enumerate(before):
        c.feed(bytes([byte]))
        frame = codec.decode(c)
        assert frame == (after if i == len(before) - 1 else None)
    assert c.inbound_buffered == 0


def test_netty_length_field_prepender_example() -> None:
    assert LengthFieldPrepender(2).encode(HELLO) == b"\x00\x0c" + HELLO
    assert LengthFieldPrepender(2, length_includes_length_field=True).encode(HELLO) == b"\x00\x0e" + HELLO


@pytest.mark.parametrize("n", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("byteorder", ["big", "little"])
def test_prepender_field_lengths_and_byte_orders(n: int, byteorder: str) -> None:
    framed = LengthFieldPrepender(n, byteorder=byteorder).encode(HELLO)
    assert framed == (12).to_bytes(n, byteorder) + HELLO  # type: ignore[arg-type]
    codec = LengthFieldBasedFrameCodec(0, n, 0, n, byteorder)
    assert decode_all(codec, framed * 3)[0] == [HELLO] * 3
    assert codec.encode(HELLO) == framed


def test_prepender_adjustment_and_payload_types() -> None:
    p = LengthFieldPrepender(4, length_adjustment=3, length_includes_length_field=True)
    assert p.encode(b"ab") == struct.pack(">I", 9) + b"ab"
    assert p.encode(bytearray(b"ab")) == p.encode(memoryview(b"ab")) == p.encode(b"ab")
    assert type(p.encode(bytearray(b"ab"))) is bytes
    with pytest.raises(TypeError, match="payload must be bytes"):
        p.encode("ab")  # type: ignore[arg-type]


@pytest.mark.parametrize("n, limit", [(1, 0xFF), (2, 0xFFFF), (3, 0xFFFFFF)])
def test_prepender_value_must_fit_the_field(n: int, limit: int) -> None:
    p = LengthFieldPrepender(n, length_adjustment=limit - 1)
    assert p.encode(b"x")[:n] == b"\xff" * n
    with pytest.raises(CodecError, match=f"{limit + 1} .*{n}-byte length field"):
        p.encode(b"xy")


def test_prepender_large_fields_and_negative_value() -> None:
    assert LengthFieldPrepender(8, length_adjustment=(1 << 63) - 2).encode(b"x")[:8] == b"\x7f" + b"\xff" * 7
    with pytest.raises(CodecError, match=str(1 << 63)):
        LengthFieldPrepender(8, length_adjustment=(1 << 63) - 1).encode(b"x")
    with pytest.raises(CodecError, match=str(1 << 32)):
        LengthFieldPrepender(4, length_adjustment=(1 << 32) - 1).encode(b"x")
    with pytest.raises(CodecError, match="value -2 "):
        LengthFieldPrepender(2, length_adjustment=-5).encode(b"abc")


# -- length field decoder: limits and corrupt lengths ----------------------------------------------


def test_length_field_too_long_is_detected_from_the_header() -> None:
    codec = LengthFieldBasedFrameCodec(length_field_length=2, max_frame_length=100)
    ok, c = decode_all(codec, b"\x00\x62" + b"x" * 98)  # 2 + 98 = 100: the limit itself
    assert ok == [b"\x00\x62" + b"x" * 98]
    c = FakeConn(b"\x00\x63")  # 101: rejected before the body arrives
    with pytest.raises(TooLongFrameError, match="frame length 101 exceeds max_frame_length 100"):
        codec.decode(c)
    assert c.inbound_buffered == 2  # nothing consumed: the same bytes raise again
    with pytest.raises(TooLongFrameError):
        codec.decode(c)
    c.feed(b"more")  # no view was leaked by the failed decode


def test_length_field_default_max_frame_length() -> None:
    codec = LengthFieldBasedFrameCodec()
    assert codec.max_frame_length == DEFAULT_MAX_FRAME_LENGTH == 1 << 20
    with pytest.raises(TooLongFrameError, match=f"{(1 << 20) + 1} exceeds max_frame_length {1 << 20}"):
        codec.decode(FakeConn(struct.pack(">I", (1 << 20) - 3)))


def test_length_field_8_byte_huge_values() -> None:
    codec = LengthFieldBasedFrameCodec(length_field_length=8)
    # 2**64 - 1 read as Netty's signed long is -1.
    with pytest.raises(CodecError, match="negative pre-adjustment length field: -1"):
        codec.decode(FakeConn(b"\xff" * 8))
    with pytest.raises(TooLongFrameError, match=f"{(1 << 63) - 1 + 8} exceeds max_frame_length"):
        codec.decode(FakeConn(b"\x7f" + b"\xff" * 7))


def test_length_field_adjusted_length_below_header() -> None:
    codec = LengthFieldBasedFrameCodec(1, 2, -10)  # whole-message length, but too small a value
    with pytest.raises(CodecError, match=r"adjusted frame length -2 .* end offset 3") as err:
        codec.decode(FakeConn(b"\x00\x00\x05"))
    assert not isinstance(err.value, TooLongFrameError)


def test_length_field_strip_beyond_frame() -> None:
    codec = LengthFieldBasedFrameCodec(0, 1, 0, 5)
    with pytest.raises(CodecError, match="adjusted frame length 3 is less than initial_bytes_to_strip 5"):
        codec.decode(FakeConn(b"\x02ab"))
    assert decode_all(codec, b"\x04abcd")[0] == [b""]  # a frame exactly as long as the strip


def test_length_field_empty_and_partial_buffers() -> None:
    codec = LengthFieldBasedFrameCodec(2, 4)
    assert codec.decode(FakeConn()) is None
    assert codec.decode(FakeConn(b"\x00\x00\x00\x00\x00")) is None  # header incomplete
    assert codec.decode(FakeConn(b"\x00\x00\x00\x00\x00\x02a")) is None  # body incomplete
    assert decode_all(codec, b"hh\x00\x00\x00\x00")[0] == [b"hh\x00\x00\x00\x00"]  # empty body


def test_length_field_encode_needs_a_prepender_with_an_offset() -> None:
    codec = LengthFieldBasedFrameCodec(length_field_offset=2)
    assert codec.prepender is None
    with pytest.raises(CodecError, match="2 header bytes before the length field"):
        codec.encode(b"x")
    own = LengthFieldPrepender(2)
    assert LengthFieldBasedFrameCodec(2, prepender=own).encode(b"x") == b"\x00\x01x"


def test_length_field_default_prepender_mirrors_the_adjustment() -> None:
    codec = LengthFieldBasedFrameCodec(0, 2, -2, 2)  # the length counts the whole message
    assert codec.encode(HELLO) == b"\x00\x0e" + HELLO
    assert decode_all(codec, codec.encode(HELLO))[0] == [HELLO]


# -- line and delimiter codecs ---------------------------------------------------------------------


def test_line_codec_strips_lf_and_crlf() -> None:
    frames, c = decode_all(LineBasedFrameCodec(), b"a\r\nb\n\n\r\nc\rd\n\r\r\ntail")
    assert frames == [b"a", b"b", b"", b"", b"c\rd", b"\r"]
    assert c.inbound_buffered == 4 and bytes(c.peek()) == b"tail"


def test_line_codec_keeps_cr_without_strip_cr() -> None:
    frames, _ = decode_all(LineBasedFrameCodec(strip_cr=False), b"a\r\nb\n")
    assert frames == [b"a\r", b"b"]


def test_line_codec_encode() -> None:
    codec = LineBasedFrameCodec()
    assert codec.encode(b"hi") == b"hi\n" and codec.encode(b"") == b"\n"
    with pytest.raises(CodecError, match="line feed at offset 1"):
        codec.encode(b"a\nb")
    with pytest.raises(CodecError, match="carriage return"):
        codec.encode(b"a\r")
    assert LineBasedFrameCodec(strip_cr=False).encode(b"a\r") == b"a\r\n"


def test_delimiter_codec() -> None:
    codec = DelimiterBasedFrameCodec(b"\r\n\r\n")
    frames, c = decode_all(codec, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\r\n\r\npartial\r\n\r")
    assert frames == [b"GET / HTTP/1.1\r\nHost: x", b""]
    assert bytes(c.peek()) == b"partial\r\n\r"
    c.feed(b"\n")
    assert codec.decode(c) == b"partial" and c.inbound_buffered == 0
    assert codec.encode(b"x") == b"x\r\n\r\n"


def test_delimiter_split_across_reads_is_found() -> None:
    codec = DelimiterBasedFrameCodec(b"<END>")
    c = FakeConn()
    for piece in (b"abc<", b"E", b"ND", b">def<EN", b"D><E", b"ND>"):
        c.feed(piece)
        out = list(codec.frames(c))
        if piece == b"ND":
            assert out == []
        if piece == b">def<EN":
            assert out == [b"abc"]
        if piece == b"ND>":
            assert out == [b""]
    assert c.inbound_buffered == 0


def test_delimiter_encode_refuses_payloads_that_would_split() -> None:
    codec = DelimiterBasedFrameCodec(b"aa")
    with pytest.raises(CodecError, match="delimiter b'aa' at offset 1"):
        codec.encode(b"xaay")
    with pytest.raises(CodecError, match="at offset 1"):
        codec.encode(b"xa")  # b"xa" + b"aa" would decode as b"x"
    assert codec.encode(b"ab") == b"abaa"


@pytest.mark.parametrize("make, delimiter", [
    (lambda m: LineBasedFrameCodec(max_frame_length=m), b"\n"),
    (lambda m: LineBasedFrameCodec(max_frame_length=m), b"\r\n"),
    (lambda m: LineBasedFrameCodec(strip_cr=False, max_frame_length=m), b"\n"),
    (lambda m: DelimiterBasedFrameCodec(b"\0\0\0", max_frame_length=m), b"\0\0\0"),
])
def test_delimiter_max_frame_length(make: Callable[[int], FrameCodec], delimiter: bytes) -> None:
    codec = make(10)
    # A frame of exactly the limit passes, even when its delimiter arrives byte by byte.
    c = FakeConn(b"x" * 10)
    for byte in delimiter:
        assert codec.decode(c) is None
        c.feed(bytes([byte]))
    assert codec.decode(c) == b"x" * 10
    # One more byte fails, whether the delimiter came along or is still missing.
    with pytest.raises(TooLongFrameError, match="frame length (of at least )?11 .*max_frame_length 10"):
        codec.decode(FakeConn(b"y" * 11 + delimiter))
    c = FakeConn(b"y" * 11)
    for byte in delimiter[:-1]:
        c.feed(bytes([byte]))  # a partial delimiter at the end: the frame could still be 11 bytes
    with pytest.raises(TooLongFrameError, match="at least 11 .*max_frame_length 10"):
        for _ in range(len(delimiter) + 1):
            assert codec.decode(c) is None
            c.feed(b"y")
    c.feed(b"more")  # the failed decode released its view


def test_delimiter_search_stops_at_the_limit() -> None:
    codec = DelimiterBasedFrameCodec(b";", max_frame_length=100)
    with pytest.raises(TooLongFrameError):
        codec.decode(FakeConn(b"x" * 1_000_000))
    assert codec.bytes_scanned <= 101


def test_line_codec_default_limit() -> None:
    codec = LineBasedFrameCodec()
    assert codec.max_frame_length == 1 << 20
    assert decode_all(codec, b"x" * (1 << 20) + b"\r\n")[0] == [b"x" * (1 << 20)]
    with pytest.raises(TooLongFrameError, match=f"max_frame_length {1 << 20}"):
        codec.decode(FakeConn(b"x" * ((1 << 20) + 2)))


# -- the linear-scan guarantee ---------------------------------------------------------------------


@pytest.mark.parametrize("codec", [LineBasedFrameCodec(), LineBasedFrameCodec(strip_cr=False),
                                   DelimiterBasedFrameCodec(b"\r\n\r\n")], ids=repr)
def test_long_line_byte_by_byte_is_scanned_linearly(codec: FrameCodec) -> None:
    n = 200 * 1024
    delimiter = b"\n" if isinstance(codec, LineBasedFrameCodec) else b"\r\n\r\n"
    assert isinstance(codec, (LineBasedFrameCodec, DelimiterBasedFrameCodec))
    codec.bytes_scanned = 0
    c = FakeConn()
    decode = codec.decode
    for _ in range(n):
        c.feed(b"x")
        assert decode(c) is None
    for byte in delimiter:
        c.feed(bytes([byte]))
        frame = decode(c)
    assert frame == b"x" * n
    # Each byte is searched once (a multi-byte delimiter re-reads its length - 1 last bytes);
    # a search from the start on every call would scan about n * n / 2 = 20 G bytes.
    assert codec.bytes_scanned <= len(delimiter) * (n + len(delimiter))


def test_scan_offset_lives_on_the_conn_and_resets() -> None:
    codec = LineBasedFrameCodec()
    a, b = FakeConn(b"aaaa"), FakeConn(b"bb")
    assert codec.decode(a) is None and codec.decode(b) is None
    assert a._codec_state == 4 and b._codec_state == 2  # one codec, two conns, two offsets
    b.feed(b"\nrest")
    assert codec.decode(b) == b"bb" and b._codec_state is None
    a.feed(b"a\n")
    assert codec.decode(a) == b"aaaaa"
    # Bytes consumed behind the codec's back (offset beyond the buffer): searched afresh.
    a.feed(b"xyz")
    assert codec.decode(a) is None
    a.discard()
    a.feed(b"\n")
    assert codec.decode(a) == b""


def test_many_short_lines_in_one_buffer_are_scanned_once() -> None:
    codec = LineBasedFrameCodec()
    data = b"0123456789abcdef\n" * 4096
    frames, _ = decode_all(codec, data)
    assert len(frames) == 4096 and codec.bytes_scanned == len(data)


# -- fixed length and pass-through -----------------------------------------------------------------


def test_fixed_length_codec() -> None:
    codec = FixedLengthFrameCodec(3)
    frames, c = decode_all(codec, b"abcdefgh")
    assert frames == [b"abc", b"def"] and bytes(c.peek()) == b"gh"
    assert codec.encode(b"xyz") == b"xyz"
    with pytest.raises(CodecError, match="payload is 2 bytes, the fixed frame length is 3"):
        codec.encode(b"xy")
    with pytest.raises(CodecError, match="6 bytes"):
        codec.encode(b"abcdef")  # one encode is one frame
    with pytest.raises(ValueError, match="length 11 exceeds max_frame_length 10"):
        FixedLengthFrameCodec(11, max_frame_length=10)


def test_builtin_codec_passes_everything_through() -> None:
    codec = BuiltInFrameCodec()
    assert codec.decode(FakeConn()) is None
    assert decode_all(codec, b"any\nthing")[0] == [b"any\nthing"]
    assert codec.encode(b"x") == b"x" and codec.encode(bytearray(b"y")) == b"y"
    assert decode_all(BuiltInFrameCodec(max_frame_length=4), b"0123456789")[0] == [b"0123", b"4567", b"89"]


def test_frames_consumes_each_frame_as_it_is_yielded() -> None:
    c = FakeConn(b"a\nb\nc")
    it = LineBasedFrameCodec().frames(c)
    assert next(it) == b"a" and c.inbound_buffered == 3
    assert next(it) == b"b" and c.inbound_buffered == 1
    assert list(it) == []


# -- constructor arguments -------------------------------------------------------------------------


@pytest.mark.parametrize("build, error, message", [
    (lambda: LineBasedFrameCodec(max_frame_length=0), ValueError, "max_frame_length must be >= 1, got 0"),
    (lambda: LineBasedFrameCodec(max_frame_length=1.5), TypeError,  # type: ignore[arg-type]
     "max_frame_length must be an int, got float"),
    (lambda: LineBasedFrameCodec(strip_cr=1), TypeError, "strip_cr must be True or False"),  # type: ignore[arg-type]
    (lambda: DelimiterBasedFrameCodec(b""), ValueError, "delimiter must be non-empty"),
    (lambda: DelimiterBasedFrameCodec("\n"), TypeError, "delimiter must be bytes, got str"),  # type: ignore[arg-type]
    (lambda: FixedLengthFrameCodec(0), ValueError, "length must be >= 1, got 0"),
    (lambda: FixedLengthFrameCodec(True), TypeError, "length must be an int, got bool"),
    (lambda: BuiltInFrameCodec(max_frame_length=-1), ValueError, "max_frame_length must be >= 1"),
    (lambda: LengthFieldBasedFrameCodec(length_field_length=5), ValueError,
     "length_field_length must be 1, 2, 3, 4 or 8, got 5"),
    (lambda: LengthFieldBasedFrameCodec(length_field_length=True), ValueError, "length_field_length must be"),
    (lambda: LengthFieldBasedFrameCodec(length_field_offset=-1), ValueError, "length_field_offset must be >= 0"),
    (lambda: LengthFieldBasedFrameCodec(initial_bytes_to_strip=-1), ValueError, "initial_bytes_to_strip must be >= 0"),
    (lambda: LengthFieldBasedFrameCodec(length_adjustment="1"), TypeError,  # type: ignore[arg-type]
     "length_adjustment must be an int"),
    (lambda: LengthFieldBasedFrameCodec(byteorder="network"), ValueError, "byteorder must be 'big' or 'little'"),
    (lambda: LengthFieldBasedFrameCodec(8, 4, max_frame_length=10), ValueError,
     "max_frame_length 10 must be >= length_field_offset 8 \\+ length_field_length 4"),
    (lambda: LengthFieldBasedFrameCodec(prepender=4), TypeError,  # type: ignore[arg-type]
     "prepender must be a LengthFieldPrepender"),
    (lambda: LengthFieldPrepender(0), ValueError, "length_field_length must be 1, 2, 3, 4 or 8, got 0"),
    (lambda: LengthFieldPrepender(2, byteorder="BIG"), ValueError, "byteorder must be"),
    (lambda: LengthFieldPrepender(2, length_includes_length_field=1), TypeError,  # type: ignore[arg-type]
     "length_includes_length_field must be True or False"),
])
def test_constructor_errors(build: Callable[[], object], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        build()


def test_codec_errors_are_gnet_errors() -> None:
    assert issubclass(TooLongFrameError, CodecError) and issubclass(CodecError, GnetError)


# -- properties ------------------------------------------------------------------------------------


@st.composite
def split(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut at arbitrary points (empty pieces included)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


def feed_and_decode(codec: FrameCodec, pieces: list[bytes]) -> tuple[list[bytes], FakeConn]:
    c = FakeConn()
    out: list[bytes] = []
    for piece in pieces:
        c.feed(piece)
        out.extend(codec.frames(c))
    return out, c


class BufferedConn(InboundBuffer):
    """A Conn's inbound side: the real buffer, and the slot codecs keep their state in."""

    __slots__ = ("_codec_state",)

    def __init__(self) -> None:
        super().__init__(64)
        self._codec_state: Any = None


def feed_and_decode_in_place(codec: FrameCodec, pieces: list[bytes]) -> tuple[list[bytes], BufferedConn]:
    """As the event loop delivers: each piece received after the leftover, decoded, what is left
    kept -- so decoders read at offsets past 0, in a fresh read (bytes) and in a leftover (bytearray)."""
    buf = BufferedConn()
    out: list[bytes] = []
    for piece in pieces:
        buf._receive(piece)
        out.extend(codec.frames(buf))
        buf._settle()
    return out, buf


def roundtrip(codec: FrameCodec, payloads: list[bytes], data: st.DataObject) -> None:
    wire = b"".join(codec.encode(p) for p in payloads)
    pieces = data.draw(split(wire))
    frames, c = feed_and_decode(codec, pieces)
    assert frames == payloads
    assert c.inbound_buffered == 0 and not c._codec_state
    frames, buf = feed_and_decode_in_place(codec, pieces)
    assert frames == payloads and buf.inbound_buffered == 0


@PROPERTY
@given(st.lists(st.binary(max_size=40).filter(lambda p: b"\n" not in p and not p.endswith(b"\r")), max_size=8),
       st.data())
def test_line_codec_roundtrip(payloads: list[bytes], data: st.DataObject) -> None:
    roundtrip(LineBasedFrameCodec(), payloads, data)


@PROPERTY
@given(st.lists(st.binary(max_size=40).filter(lambda p: b"\n" not in p), max_size=8), st.data())
def test_line_codec_without_strip_cr_roundtrip(payloads: list[bytes], data: st.DataObject) -> None:
    roundtrip(LineBasedFrameCodec(strip_cr=False), payloads, data)


@PROPERTY
@given(st.binary(min_size=1, max_size=4), st.lists(st.binary(max_size=40), max_size=8), st.data())
def test_delimiter_codec_roundtrip(delimiter: bytes, payloads: list[bytes], data: st.DataObject) -> None:
    codec = DelimiterBasedFrameCodec(delimiter)
    valid = []
    for p in payloads:
        try:
            codec.encode(p)
        except CodecError:
            continue
        valid.append(p)
    roundtrip(codec, valid, data)


@PROPERTY
@given(st.integers(1, 16).flatmap(lambda n: st.tuples(st.just(n), st.lists(st.binary(min_size=n, max_size=n),
                                                                            max_size=8))),
       st.data())
def test_fixed_length_codec_roundtrip(case: tuple[int, list[bytes]], data: st.DataObject) -> None:
    n, payloads = case
    roundtrip(FixedLengthFrameCodec(n), payloads, data)


@PROPERTY
@given(st.sampled_from([1, 2, 3, 4, 8]), st.sampled_from(["big", "little"]), st.integers(-8, 0), st.booleans(),
       st.lists(st.binary(max_size=60), max_size=8), st.data())
def test_length_field_codec_roundtrip(n: int, byteorder: str, adjustment: int, includes: bool,
                                      payloads: list[bytes], data: st.DataObject) -> None:
    if includes:  # the field counts itself: the decoder takes it back off
        prepender = LengthFieldPrepender(n, -adjustment, True, byteorder)
        codec = LengthFieldBasedFrameCodec(0, n, adjustment - n, n, byteorder, prepender=prepender)
    else:
        codec = LengthFieldBasedFrameCodec(0, n, adjustment, n, byteorder)
    roundtrip(codec, payloads, data)


@PROPERTY
@given(st.integers(1, 4), st.sampled_from([1, 2, 3, 4, 8]), st.integers(0, 3),
       st.lists(st.tuples(st.binary(min_size=4, max_size=4), st.binary(max_size=30)), max_size=6), st.data())
def test_length_field_with_header_fields_roundtrip(offset: int, n: int, trailer: int,
                                                   frames: list[tuple[bytes, bytes]], data: st.DataObject) -> None:
    # HDR1 (offset bytes) | LEN | HDR2 (trailer bytes) | body, with LEN counting only the body:
    # Netty's "offset 1, adjustment = len(HDR2), strip HDR1 + LEN" example generalised.
    codec = LengthFieldBasedFrameCodec(offset, n, trailer, offset + n, "little")
    wire = b"".join(h[:offset] + len(body).to_bytes(n, "little") + h[:trailer] + body for h, body in frames)
    out, c = feed_and_decode(codec, data.draw(split(wire)))
    assert out == [h[:trailer] + body for h, body in frames] and c.inbound_buffered == 0


@PROPERTY
@given(st.lists(st.binary(max_size=50), max_size=8), st.integers(1, 64), st.data())
def test_builtin_codec_roundtrip(payloads: list[bytes], limit: int, data: st.DataObject) -> None:
    codec = BuiltInFrameCodec(max_frame_length=limit)
    wire = b"".join(codec.encode(p) for p in payloads)
    frames, c = feed_and_decode(codec, data.draw(split(wire)))
    assert b"".join(frames) == wire and all(0 < len(f) <= limit for f in frames)


GARBAGE_CODECS: list[FrameCodec] = [
    BuiltInFrameCodec(max_frame_length=16),
    LineBasedFrameCodec(max_frame_length=16),
    LineBasedFrameCodec(strip_cr=False, max_frame_length=16),
    DelimiterBasedFrameCodec(b"\x00\x01", max_frame_length=16),
    FixedLengthFrameCodec(5, max_frame_length=16),
    *(LengthFieldBasedFrameCodec(offset, n, adjustment, strip, order, max_frame_length=64)
      for offset, n, adjustment, strip, order in [
          (0, 1, 0, 0, "big"), (0, 2, -2, 2, "big"), (1, 3, 2, 0, "little"), (2, 4, -6, 6, "big"),
          (0, 8, 0, 8, "little"), (0, 8, -3, 1, "big"), (3, 1, -1, 9, "big")]),
]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(GARBAGE_CODECS), st.binary(max_size=300), st.data())
def test_garbage_raises_only_codec_errors(codec: FrameCodec, garbage: bytes, data: st.DataObject) -> None:
    c = FakeConn()
    decoded = 0
    try:
        for piece in data.draw(split(garbage)):
            c.feed(piece)  # also proves no view outlives a decode
            for frame in codec.frames(c):
                decoded += 1
                assert decoded <= len(garbage)  # every frame consumes at least one byte: no endless loop
                assert len(frame) <= codec.max_frame_length
    except CodecError as e:
        assert str(e)
        c.feed(b"x")


@pytest.mark.parametrize("body", [0, 1, 1020, 1021, 5000])
def test_length_field_strip_on_both_sides_of_the_copy_threshold(body: int) -> None:
    # decode strips a short frame's header by slicing, a long one's with discard():
    # the same frames either way, from a real InboundBuffer and from the fake conn.
    from gnetpy.framing import COPY_TO_STRIP as _COPY_TO_STRIP

    codec = LengthFieldBasedFrameCodec(length_field_length=4, initial_bytes_to_strip=4)
    payloads = [bytes([i]) * body for i in range(3)]
    wire = b"".join(codec.encode(p) for p in payloads)
    assert (4 + body <= _COPY_TO_STRIP) == (body <= 1020)
    buf = InboundBuffer(479)
    buf._receive(wire)
    assert list(codec.frames(buf)) == payloads and buf.inbound_buffered == 0
    assert decode_all(codec, wire)[0] == payloads


def test_length_field_encode_is_the_prependers() -> None:
    codec = LengthFieldBasedFrameCodec(length_field_length=2, length_adjustment=-2)
    assert codec.encode(b"abc") == codec.prepender.encode(b"abc") == b"\x00\x05abc"  # type: ignore[union-attr]
    assert codec.encode(bytearray(b"x")) == b"\x00\x03x"


def test_a_subclass_keeps_its_own_decode_and_encode() -> None:
    # The built-in codecs bind compiled methods into slots named decode/encode (codec.py's
    # _bind); a user's subclass that defines its own must still get them called.
    class Upper(LineBasedFrameCodec):
        def decode(self, c: Any) -> bytes | None:
            frame = super().decode(c)
            return None if frame is None else frame.upper()

    class Tagged(LengthFieldPrepender):
        def encode(self, payload: Any) -> bytes:
            return b"T" + super().encode(payload)

    frames, _ = decode_all(Upper(), b"ab\ncd\n")
    assert frames == [b"AB", b"CD"]
    assert Tagged(1).encode(b"xy") == b"T\x02xy"
    assert LengthFieldBasedFrameCodec(length_field_length=1, prepender=Tagged(1)).encode(b"z") == b"T\x01z"
