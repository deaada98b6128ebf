"""Leftover handling: a handler consumes only complete frames; the rest waits for more bytes."""

from __future__ import annotations

import random
import struct
import threading
import time
from typing import Any

import pytest

import gnetpy
from conftest import connect, recv_exact


class FrameEcho(gnetpy.EventHandler):
    """Length-prefixed frames (4-byte big-endian length): echo each complete frame, leave the rest."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.lock = threading.Lock()

    def on_traffic(self, c: gnetpy.Conn) -> Any:
        while c.inbound_buffered >= 4:
            (size,) = struct.unpack(">I", c.peek(4))
            if c.inbound_buffered < 4 + size:
                break  # incomplete: leave it buffered for the next read
            c.discard(4)
            frame = c.next(size)
            with self.lock:
                self.frames.append(frame)
            c.write(struct.pack(">I", size) + frame)


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


@pytest.mark.parametrize("options", [{}, {"edge_triggered": True}, {"read_buffer_cap": 7}],
                         ids=["level", "edge", "7-byte-reads"])
def test_frames_split_at_every_byte_boundary(serve: Any, options: dict[str, Any]) -> None:
    handler = FrameEcho()
    engine = serve(handler, **options)
    payloads = [b"", b"a", b"hello world", bytes(range(256)) * 3]
    stream = b"".join(frame(p) for p in payloads)
    with connect(engine.addrs[0]) as s:
        s.setsockopt(6, 1, 1)  # TCP_NODELAY: each piece its own segment
        for cut in range(1, len(stream)):
            # The same stream, delivered in two writes split at byte `cut`;
            # the server reads each piece separately.
            s.sendall(stream[:cut])
            # Wait until the server has consumed everything complete so far.
            complete = 0
            offset = 0
            for p in payloads:
                if offset + 4 + len(p) <= cut:
                    complete += 1
                    offset += 4 + len(p)
            echoed = recv_exact(s, offset)
            assert echoed == stream[:offset]
            s.sendall(stream[cut:])
            assert recv_exact(s, len(stream) - offset) == stream[offset:]
    assert handler.frames == payloads * (len(stream) - 1)


def test_frames_trickled_one_byte_at_a_time(serve: Any) -> None:
    handler = FrameEcho()
    engine = serve(handler)
    rng = random.Random(3)
    payloads = [rng.randbytes(rng.randrange(0, 3000)) for _ in range(20)]
    stream = b"".join(frame(p) for p in payloads)
    with connect(engine.addrs[0]) as s:
        s.setsockopt(6, 1, 1)
        for i in range(0, len(stream), 97):  # uneven pieces that straddle every header
            s.sendall(stream[i:i + 97])
        assert recv_exact(s, len(stream)) == stream
    assert handler.frames == payloads


def test_large_frame_accumulates_across_reads(serve: Any) -> None:
    """A 3 MiB frame arrives over many 64 KiB reads; it is echoed once, whole."""
    handler = FrameEcho()
    engine = serve(handler)
    payload = random.Random(5).randbytes(3 << 20)
    with connect(engine.addrs[0]) as s:
        sender = threading.Thread(target=s.sendall, args=(frame(payload),))
        sender.start()
        assert recv_exact(s, 4 + len(payload)) == frame(payload)
        sender.join(10)
    assert handler.frames == [payload]


class PeekHolder(gnetpy.EventHandler):
    """Keeps a memoryview from peek() beyond the callback (which the docs say is invalid):
    the engine must not fail when it compacts the inbound buffer under it."""

    def __init__(self) -> None:
        self.kept: list[memoryview] = []

    def on_traffic(self, c: gnetpy.Conn) -> Any:
        self.kept.append(c.peek())
        while c.inbound_buffered >= 10:
            c.write(c.next(10))


def test_kept_peek_view_does_not_break_the_connection(serve: Any) -> None:
    handler = PeekHolder()
    engine = serve(handler)
    with connect(engine.addrs[0]) as s:
        s.setsockopt(6, 1, 1)
        for piece in (b"0123", b"456", b"789abcdefghij", b"klmnopqrst"):
            s.sendall(piece)
            time.sleep(0.02)  # let each piece be its own read
        assert recv_exact(s, 30) == b"0123456789abcdefghijklmnopqrst"
