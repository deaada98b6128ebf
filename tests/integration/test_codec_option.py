"""The ``codec`` option: frames decoded by the engine, one ``on_frame`` each; bad frames close only their connection."""

from __future__ import annotations

import random
import socket
import struct
import threading
from typing import Any

import gnetpy
from conftest import WAIT, connect, recv_exact, wait_for
from gnetpy.codec import LengthFieldBasedFrameCodec, LineBasedFrameCodec

LENGTH = LengthFieldBasedFrameCodec(length_field_length=4, initial_bytes_to_strip=4)


class FrameEcho(gnetpy.EventHandler):
    def __init__(self, codec: Any) -> None:
        self.codec = codec
        self.lock = threading.Lock()
        self.frames: list[bytes] = []
        self.closed: list[BaseException | None] = []

    def on_frame(self, c: gnetpy.Conn, frame: bytes) -> Any:
        with self.lock:
            self.frames.append(frame)
        c.write(self.codec.encode(frame))  # c.write stays raw: the reply is framed by hand

    def on_close(self, c: gnetpy.Conn, err: BaseException | None) -> Any:
        with self.lock:
            self.closed.append(err)


def test_frames_split_anywhere_reach_on_frame_one_by_one(serve: Any) -> None:
    handler = FrameEcho(LENGTH)
    engine = serve(handler, codec=LENGTH)
    rng = random.Random(5)
    frames = [rng.randbytes(rng.randint(0, 5000)) for _ in range(300)]
    stream = b"".join(LENGTH.encode(f) for f in frames)
    with connect(engine.addrs[0]) as s:
        sent = 0
        while sent < len(stream):  # split at arbitrary points
            step = rng.randint(1, 3000)
            s.sendall(stream[sent:sent + step])
            sent += step
        assert recv_exact(s, len(stream)) == stream
    assert handler.frames == frames


def test_a_too_long_frame_closes_only_that_connection(serve: Any) -> None:
    handler = FrameEcho(LENGTH)
    engine = serve(handler, codec=LengthFieldBasedFrameCodec(length_field_length=4, initial_bytes_to_strip=4,
                                                             max_frame_length=1024))
    with connect(engine.addrs[0]) as good, connect(engine.addrs[0]) as bad:
        bad.sendall(struct.pack("!I", 10_000) + b"x" * 100)
        assert bad.recv(10) == b""
        wait_for(lambda: handler.closed)
        assert isinstance(handler.closed[0], gnetpy.TooLongFrameError) and "1024" in str(handler.closed[0])
        good.sendall(LENGTH.encode(b"fine"))
        assert recv_exact(good, 8) == LENGTH.encode(b"fine")


def test_a_ten_mib_line_in_small_pieces_is_scanned_in_linear_time_then_refused_over_the_limit(serve: Any) -> None:
    big = LineBasedFrameCodec(max_frame_length=16 << 20)
    handler = FrameEcho(big)
    engine = serve(handler, codec=big, max_inbound_buffered=32 << 20)
    line = b"a" * (10 << 20)
    with connect(engine.addrs[0]) as s:
        for i in range(0, len(line), 4096):
            s.sendall(line[i:i + 4096])
        s.sendall(b"\n")
        assert len(recv_exact(s, len(line) + 1)) == len(line) + 1
    assert handler.frames == [line]
    assert big.bytes_scanned <= 2 * len(line)  # each byte searched about once, not once per piece

    small = LineBasedFrameCodec()  # 1 MiB
    handler = FrameEcho(small)
    engine = serve(handler, codec=small)
    with connect(engine.addrs[0]) as s:
        try:
            for i in range(0, len(line), 4096):
                s.sendall(line[i:i + 4096])
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed while we were still sending: the point
        wait_for(lambda: handler.closed)
    assert isinstance(handler.closed[0], gnetpy.TooLongFrameError)
    assert small.bytes_scanned < 3 << 20  # refused after about the limit, not after 10 MiB


def test_the_codec_option_is_checked() -> None:
    try:
        gnetpy.Options(codec="lines")
    except ValueError as exc:
        assert "codec" in str(exc) and "gnetpy.codec" in str(exc)
    else:
        raise AssertionError("a string was accepted as a codec")


def test_udp_with_a_codec_frames_each_datagram(serve: Any) -> None:
    handler = FrameEcho(LENGTH)
    engine = serve(handler, "udp://127.0.0.1:0", codec=LENGTH)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(WAIT)
        s.sendto(LENGTH.encode(b"one") + LENGTH.encode(b"two"), engine.addrs[0])
        assert s.recv(100) == LENGTH.encode(b"one") and s.recv(100) == LENGTH.encode(b"two")
