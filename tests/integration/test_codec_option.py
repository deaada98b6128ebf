"""The ``codec`` option: frames decoded by the engine, one ``on_frame`` each; bad frames close only their connection."""

from __future__ import annotations

import logging
import random
import socket
import struct
import threading
import time
from typing import Any

import pytest

import gnetpy
from conftest import WAIT, connect, recv_exact, recv_until_eof, wait_for
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


def test_a_datagram_of_more_frames_than_the_budget_delivers_them_all(serve: Any) -> None:
    handler = FrameEcho(LineBasedFrameCodec())
    engine = serve(handler, "udp://127.0.0.1:0", codec=LineBasedFrameCodec(), frame_budget=4)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(WAIT)
        # One datagram of 200 lines: 200 replies, as many as the client's default receive buffer holds
        # (each small datagram takes about 1 KiB of it), since it reads only after sending.
        s.sendto(b"".join(b"%d\n" % i for i in range(200)), engine.addrs[0])
        replies = [s.recv(100) for _ in range(200)]
    assert replies == [b"%d\n" % i for i in range(200)]


def test_bad_frames_in_datagrams_end_that_session_not_the_engine(serve: Any, caplog: Any) -> None:
    handler = FrameEcho(LENGTH)
    codec = LengthFieldBasedFrameCodec(length_field_length=4, initial_bytes_to_strip=4, max_frame_length=100)
    engine = serve(handler, "udp://127.0.0.1:0", codec=codec)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, caplog.at_level(logging.INFO, logger="gnetpy"):
        s.settimeout(WAIT)
        for _ in range(10):  # more than the internal errors in a row that would stop a loop (8)
            s.sendto(struct.pack("!I", 65_000) + b"x", engine.addrs[0])
            s.sendto(LENGTH.encode(b"fine"), engine.addrs[0])  # a new session answers
            assert s.recv(100) == LENGTH.encode(b"fine")
    assert engine.is_running
    assert sum(isinstance(err, gnetpy.TooLongFrameError) for err in handler.closed) == 10
    assert not [r for r in caplog.records if "internal error" in r.getMessage()]


class FloodBesideNeighbour(gnetpy.EventHandler):
    """One connection floods frames; another sends "ping" once the flood's first frame is in the loop's hands.

    The first flood frame's callback blocks until the test has sent the ping, so the ping
    is readable before the loop could deliver more of the flood: how many flood frames came
    before the ping is exactly how many the loop delivered from one connection in a row.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.flood_frames = 0
        self.first = threading.Event()
        self.ping_sent = threading.Event()
        self.flood_frames_before_ping: list[int] = []

    def on_frame(self, c: gnetpy.Conn, frame: bytes) -> Any:
        if frame == b"ping":
            self.flood_frames_before_ping.append(self.flood_frames)
            c.write(b"pong\n")
            return
        if frame == b"I flood":
            return
        self.flood_frames += 1
        if self.flood_frames == 1:
            self.first.set()
            assert self.ping_sent.wait(WAIT)
        if self.flood_frames == self.total:
            c.write(b"done\n")


@pytest.mark.parametrize("budget, line, most", [
    ({}, b"", 256),  # the default frame_budget
    ({"frame_budget_bytes": 65536, "read_buffer_cap": 1 << 20}, b"x" * 16383, 5),
], ids=["frames", "bytes"])
def test_a_frame_flood_cannot_keep_a_neighbour_on_the_same_loop_waiting(serve: Any, budget: dict[str, Any],
                                                                        line: bytes, most: int) -> None:
    total = 400_000 if not line else 400
    handler = FloodBesideNeighbour(total)
    engine = serve(handler, codec=LineBasedFrameCodec(max_frame_length=1 << 20), num_event_loop=1, **budget)
    flood = b"I flood\n" + (line + b"\n") * total
    with connect(engine.addrs[0]) as neighbour, connect(engine.addrs[0]) as flooder:
        sender = threading.Thread(target=flooder.sendall, args=(flood,))
        sender.start()
        try:
            assert handler.first.wait(WAIT)
            neighbour.sendall(b"ping\n")
            handler.ping_sent.set()
            assert recv_exact(neighbour, 5) == b"pong\n"
            flooder.settimeout(60)
            assert recv_exact(flooder, 5) == b"done\n"  # and nothing of the flood was lost
        finally:
            handler.ping_sent.set()
            sender.join(WAIT)
    assert handler.flood_frames == total
    # The callback that blocked delivered at most one budget; the poll that finds the ping may list the
    # flood first (still readable, and so earlier in epoll's ready list): one budget more, then the ping.
    assert 1 <= handler.flood_frames_before_ping[0] <= 2 * most, handler.flood_frames_before_ping


class BigReplies(FrameEcho):
    """Replies 600 kB to each request: 20 requests read at once make 12 MB of replies, mostly queued."""

    def on_frame(self, c: gnetpy.Conn, frame: bytes) -> Any:
        with self.lock:
            self.frames.append(frame)
        c.write(frame * 60_000)


def test_the_replies_to_good_frames_before_a_bad_one_are_delivered_then_the_connection_ends(serve: Any) -> None:
    handler = BigReplies(LENGTH)
    engine = serve(handler, codec=LengthFieldBasedFrameCodec(length_field_length=4, initial_bytes_to_strip=4,
                                                             max_frame_length=1 << 20))
    requests = [b"%010d" % i for i in range(20)]
    stream = b"".join(LENGTH.encode(r) for r in requests) + struct.pack("!I", 50 << 20) + b"bad"  # one read
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # a small window: most replies wait in our queue
        s.settimeout(WAIT)
        s.connect(engine.addrs[0])
        s.sendall(stream)
        time.sleep(0.2)  # the bad frame is read with the others: the replies wait in the server's queue
        received = recv_until_eof(s)  # every reply, then an orderly end (a reset would raise here)
    wait_for(lambda: handler.closed)
    assert received == b"".join(r * 60_000 for r in requests)
    assert isinstance(handler.closed[0], gnetpy.TooLongFrameError)
