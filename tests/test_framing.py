"""Unit tests of gnetpy.framing's cores, read in place from a real InboundBuffer.

tests/test_codec.py checks codec.py's public constructors and round trips; these call the
cores framing.py builds for them directly -- decoders reading ``_src[_pos:]`` at offsets
past 0, in a fresh read (``bytes``) and in a leftover (``bytearray``) -- and the encoder,
``field_struct`` and ``as_bytes``.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest

from gnetpy.buffer import InboundBuffer
from gnetpy.errors import CodecError, TooLongFrameError
from gnetpy.framing import (
    COPY_TO_STRIP,
    DelimiterDecoder,
    FixedLengthDecoder,
    LengthFieldDecoder,
    LengthFieldEncoder,
    PassThroughDecoder,
    as_bytes,
    field_struct,
)


class Buffer(InboundBuffer):
    """A connection's inbound side as the codecs see it: the real buffer and the codec's state slot."""

    __slots__ = ("_codec_state",)

    def __init__(self, *pieces: bytes, skip: int = 0) -> None:
        super().__init__(64)
        self._codec_state: Any = None
        for piece in pieces:
            self.feed(piece)
        if skip:
            assert self.discard(skip) == skip

    def feed(self, data: bytes) -> None:
        """A read after the leftover, as the event loop delivers it (after the previous callback settled)."""
        self._settle()
        self._receive(data)

    def rest(self) -> bytes:
        return bytes(self.peek())


def frames(decoder: Any, buf: Buffer) -> list[bytes]:
    out = []
    while (frame := decoder.decode(buf)) is not None:
        assert type(frame) is bytes
        out.append(frame)
    return out


# A leftover (bytearray, after a settle) and a fresh read (bytes), each with a consumed prefix.
OFFSET_BUFFERS = {
    "fresh read at an offset": lambda data: Buffer(b"junk" + data, skip=4),
    "leftover at an offset": lambda data: Buffer(b"junk" + data[:3], data[3:], skip=4),
}


# -- pass-through and fixed length -----------------------------------------------------------------


def test_pass_through_hands_over_a_whole_read_without_a_copy() -> None:
    decoder = PassThroughDecoder(100)
    buf = Buffer()
    assert decoder.decode(buf) is None
    data = b"a fresh read"
    buf._receive(data)
    assert decoder.decode(buf) is data and buf.inbound_buffered == 0


@pytest.mark.parametrize("make", OFFSET_BUFFERS.values(), ids=OFFSET_BUFFERS.keys())
def test_pass_through_cuts_at_max_frame_length(make: Any) -> None:
    buf = make(b"0123456789")
    assert frames(PassThroughDecoder(4), buf) == [b"0123", b"4567", b"89"]
    buf = make(b"0123456789")
    assert frames(PassThroughDecoder(10), buf) == [b"0123456789"]  # exactly the limit: one frame


@pytest.mark.parametrize("make", OFFSET_BUFFERS.values(), ids=OFFSET_BUFFERS.keys())
def test_fixed_length_frames_leave_the_remainder(make: Any) -> None:
    buf = make(b"abcdefgh")
    assert frames(FixedLengthDecoder(3), buf) == [b"abc", b"def"]
    assert buf.rest() == b"gh"
    buf.feed(b"i")
    assert frames(FixedLengthDecoder(3), buf) == [b"ghi"] and buf.inbound_buffered == 0


# -- delimiters ------------------------------------------------------------------------------------


def line_decoder(max_frame_length: int = 100, strip_cr: bool = True) -> DelimiterDecoder:
    return DelimiterDecoder(b"\n", 2 if strip_cr else 1, strip_cr, max_frame_length)


@pytest.mark.parametrize("make", OFFSET_BUFFERS.values(), ids=OFFSET_BUFFERS.keys())
def test_delimiter_frames_at_an_offset(make: Any) -> None:
    buf = make(b"one\r\ntwo\n\nthree")
    assert frames(line_decoder(), buf) == [b"one", b"two", b""]
    assert buf.rest() == b"three"
    buf = make(b"one\r\ntwo\n")
    assert frames(line_decoder(strip_cr=False), buf) == [b"one\r", b"two"]


def test_a_delimiter_split_across_receives_is_found_without_rescanning() -> None:
    decoder = DelimiterDecoder(b"<END>", 5, False, 1000)
    buf = Buffer(b"xx" + b"a" * 100 + b"<", skip=2)
    assert decoder.decode(buf) is None
    for piece in (b"E", b"ND"):
        buf.feed(piece)
        assert decoder.decode(buf) is None
    buf.feed(b">tail")
    assert decoder.decode(buf) == b"a" * 100 and buf.rest() == b"tail"
    # Resumed where the last search ended (less its delimiter's length - 1): searching from
    # the frame's start on every receive would have scanned 101 + 102 + 104 + 105 bytes.
    assert decoder.bytes_scanned <= 105 + 3 * 5
    assert buf._codec_state is None  # the next frame is searched from its own start


def test_a_resume_point_beyond_what_is_buffered_searches_afresh() -> None:
    decoder = line_decoder()
    buf = Buffer(b"abcdef")
    assert decoder.decode(buf) is None
    buf.discard()  # consumed behind the decoder's back
    buf.feed(b"x\n")
    assert decoder.decode(buf) == b"x"


@pytest.mark.parametrize("delimiter, longest", [(b"\n", 2), (b"\0\0\0", 3)])
def test_delimiter_max_frame_length_edges(delimiter: bytes, longest: int) -> None:
    decoder = DelimiterDecoder(delimiter, longest, delimiter == b"\n", 8)
    buf = Buffer(b"??", b"x" * 8 + delimiter + b"y" * 9 + delimiter, skip=2)
    assert decoder.decode(buf) == b"x" * 8  # exactly the limit passes
    with pytest.raises(TooLongFrameError, match="frame length (of at least )?9 .*max_frame_length 8"):
        decoder.decode(buf)
    # No delimiter within the limit and its delimiter's room: too long before the rest arrives.
    buf = Buffer(b"z" * (8 + longest - 1))
    assert decoder.decode(buf) is None
    buf.feed(b"z")
    with pytest.raises(TooLongFrameError, match="at least 9 .*max_frame_length 8"):
        decoder.decode(buf)


def test_line_decoder_counts_a_stripped_cr_outside_the_frame() -> None:
    decoder = line_decoder(max_frame_length=4)
    buf = Buffer(b"abcd\r")
    assert decoder.decode(buf) is None  # 5 bytes: still a 4-byte frame if a LF follows
    buf.feed(b"\n")
    assert decoder.decode(buf) == b"abcd"


# -- length fields ---------------------------------------------------------------------------------


def length_decoder(offset: int = 0, n: int = 4, adjustment: int = 0, strip: int = 0, byteorder: str = "big",
                   max_frame_length: int = 1 << 20) -> LengthFieldDecoder:
    return LengthFieldDecoder(offset, n, adjustment, strip, byteorder, max_frame_length)  # type: ignore[arg-type]


@pytest.mark.parametrize("n, byteorder", [(1, "big"), (2, "little"), (3, "big"), (3, "little"), (4, "little"),
                                          (8, "big"), (8, "little")])
@pytest.mark.parametrize("make", OFFSET_BUFFERS.values(), ids=OFFSET_BUFFERS.keys())
def test_length_field_sizes_and_byte_orders(make: Any, n: int, byteorder: str) -> None:
    wire = b"".join(len(p).to_bytes(n, byteorder) + p for p in (b"hello", b"", b"x" * 300 if n > 1 else b"y"))
    buf = make(wire + (2).to_bytes(n, byteorder) + b"a")  # and a frame not complete yet
    got = frames(length_decoder(n=n, byteorder=byteorder, strip=n), buf)
    assert got == [b"hello", b"", b"x" * 300 if n > 1 else b"y"]
    assert buf.inbound_buffered == n + 1
    buf.feed(b"b")
    assert frames(length_decoder(n=n, byteorder=byteorder, strip=n), buf) == [b"ab"]


def test_length_field_after_a_header_with_adjustment() -> None:
    # 2 header bytes, a 3-byte field counting the whole message (-5), the field and the header kept.
    decoder = length_decoder(offset=2, n=3, adjustment=-5)
    frame = b"HH" + (5 + 4).to_bytes(3, "big") + b"body"
    buf = Buffer(b"..", frame + frame[:6], skip=2)
    assert frames(decoder, buf) == [frame] and buf.rest() == frame[:6]


def test_length_field_max_frame_length_edges() -> None:
    decoder = length_decoder(n=2, max_frame_length=10)
    buf = Buffer(b"\x00\x08" + b"x" * 8)
    assert frames(decoder, buf) == [b"\x00\x08" + b"x" * 8]  # 2 + 8: exactly the limit
    buf = Buffer(b"\x00\x09")  # 11: refused from the header, before the body arrives
    with pytest.raises(TooLongFrameError, match="frame length 11 exceeds max_frame_length 10"):
        decoder.decode(buf)
    assert buf.inbound_buffered == 2  # nothing consumed


def test_negative_and_corrupt_lengths_are_codec_errors() -> None:
    with pytest.raises(CodecError, match="negative pre-adjustment length field: -2") as err:
        length_decoder(n=8).decode(Buffer(struct.pack(">q", -2)))
    assert not isinstance(err.value, TooLongFrameError)
    with pytest.raises(CodecError, match="negative pre-adjustment length field: -1"):
        length_decoder(n=8, byteorder="little").decode(Buffer(b"\xff" * 8))
    with pytest.raises(CodecError, match="negative pre-adjustment length field: -2"):
        length_decoder(n=8, adjustment=10).decode(Buffer(struct.pack(">q", -2) + b"x" * 16))  # adjusted: 16
    with pytest.raises(CodecError, match="adjusted frame length 1 .* end offset 2"):
        length_decoder(n=2, adjustment=-3).decode(Buffer(b"\x00\x02ab"))
    with pytest.raises(CodecError, match="adjusted frame length 3 is less than initial_bytes_to_strip 4"):
        length_decoder(n=1, strip=4).decode(Buffer(b"\x02ab"))


@pytest.mark.parametrize("frame_length", [COPY_TO_STRIP - 1, COPY_TO_STRIP, COPY_TO_STRIP + 1, 3 * COPY_TO_STRIP])
@pytest.mark.parametrize("make", OFFSET_BUFFERS.values(), ids=OFFSET_BUFFERS.keys())
def test_strip_on_both_sides_of_the_copy_threshold(make: Any, frame_length: int) -> None:
    body = bytes(range(256)) * (frame_length // 256 + 1)
    frame = struct.pack(">I", frame_length - 4) + body[:frame_length - 4]
    buf = make(frame + frame + b"\0\0")  # and the start of a third header
    assert frames(length_decoder(strip=4), buf) == [frame[4:], frame[4:]]
    assert buf.rest() == b"\0\0"


@pytest.mark.parametrize("strip, frame_length", [(COPY_TO_STRIP - 10, COPY_TO_STRIP), (COPY_TO_STRIP - 10, 3000),
                                                  (COPY_TO_STRIP + 10, COPY_TO_STRIP + 10), (COPY_TO_STRIP + 10, 3000)])
def test_strip_into_the_body_below_and_above_copy_to_strip(strip: int, frame_length: int) -> None:
    body = bytes(range(256)) * 12
    frame = struct.pack(">H", frame_length - 2) + body[:frame_length - 2]
    buf = Buffer(b"xyz", frame + b"!", skip=3)
    assert frames(length_decoder(n=2, strip=strip), buf) == [frame[strip:]]
    assert buf.rest() == b"!"


# -- the encoder and helpers -------------------------------------------------------------------------


@pytest.mark.parametrize("n, byteorder", [(1, "big"), (2, "little"), (3, "big"), (3, "little"), (8, "big")])
def test_encoder_field_and_payload_types(n: int, byteorder: str) -> None:
    encoder = LengthFieldEncoder(n, 0, (1 << (8 * n - (n == 8))) - 1, byteorder)  # type: ignore[arg-type]
    for payload in (b"abc", bytearray(b"abc"), memoryview(b"xabc")[1:]):
        wire = encoder.encode(payload)
        assert type(wire) is bytes and wire == (3).to_bytes(n, byteorder) + b"abc"
    assert encoder.encode(b"") == bytes(n)


def test_encoder_range_is_inclusive_and_adjustment_applies() -> None:
    encoder = LengthFieldEncoder(1, 2, 0xFF, "big")  # includes a 2-byte something: 2 added
    assert encoder.encode(b"x" * 253) == b"\xff" + b"x" * 253
    with pytest.raises(CodecError, match=r"value 256 \(payload of 254 bytes\) .* 1-byte length field \(0\.\.255\)"):
        encoder.encode(b"x" * 254)
    with pytest.raises(CodecError, match="value -1 .*0..255"):
        LengthFieldEncoder(1, -3, 0xFF, "big").encode(b"ab")
    with pytest.raises(TypeError, match="got str"):
        encoder.encode("text")  # type: ignore[arg-type]


def test_field_struct() -> None:
    assert field_struct(3, "big") is None and field_struct(3, "little") is None
    for n, byteorder in [(1, "big"), (2, "big"), (4, "little"), (8, "little")]:
        s = field_struct(n, byteorder)  # type: ignore[arg-type]
        assert s is not None and s.size == n
        assert s.pack(5) == (5).to_bytes(n, byteorder)  # type: ignore[arg-type]
    s8 = field_struct(8, "big")
    assert s8 is not None and s8.unpack(b"\xff" * 8) == (-1,)  # read signed, as Netty


def test_as_bytes() -> None:
    data = b"same object"
    assert as_bytes(data) is data
    for payload in (bytearray(b"abc"), memoryview(b"abc")):
        out = as_bytes(payload)
        assert type(out) is bytes and out == b"abc"
    for bad in ("abc", 3, None):
        with pytest.raises(TypeError, match=f"must be bytes, bytearray or memoryview, got {type(bad).__name__}"):
            as_bytes(bad)
