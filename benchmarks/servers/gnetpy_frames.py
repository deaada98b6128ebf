"""Length-prefixed frame echo on gnetpy, two ways: W8's servers (the price of the codec layer).

    python benchmarks/servers/gnetpy_frames.py --addr tcp://127.0.0.1:PORT --mode codec
    python benchmarks/servers/gnetpy_frames.py --addr unix:///path/to/sock --mode hand

A frame is a 4-byte big-endian length and that many bytes of body; each
frame is echoed as it is, one ``c.write`` per frame.

* ``--mode codec``: the engine frames (``codec=LengthFieldBasedFrameCodec(...)``)
  and calls ``on_frame(c, frame)`` with the body; the reply is framed again with
  the codec's ``encode`` -- the way examples/rpc_server.py is written.
* ``--mode hand``: the same protocol in ``on_traffic``: peek at the header,
  check that the whole frame is buffered, consume it with ``c.next`` and write
  it back (the echoed bytes are the frame itself), until no complete frame is
  left.  No length limit: a corrupt length just waits for bytes (up to
  ``max_inbound_buffered``, which closes the connection).

Both run one event loop with the same options, so the difference between
them is the codec layer: decode (header, strip, body), on_frame dispatch,
encode (a new header and a copy).  This checkout's ``src/`` comes first on
``sys.path`` (the harness also sets ``PYTHONPATH``), so it is what is measured.
"""

from __future__ import annotations

import argparse
import logging
import os
import struct
import sys
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src"))

import gnetpy  # noqa: E402
from gnetpy.codec import LengthFieldBasedFrameCodec  # noqa: E402

HEADER = 4
CODEC = LengthFieldBasedFrameCodec(length_field_length=HEADER, initial_bytes_to_strip=HEADER)
_length = struct.Struct(">I").unpack_from


class _Boot(gnetpy.EventHandler):
    mode = ""

    def on_boot(self, engine: gnetpy.Engine) -> None:
        logging.getLogger("gnetpy_frames").info("frame echo (%s) on %s", self.mode, engine.addrs)


class CodecFrames(_Boot):
    """The codec frames: one ``on_frame`` per complete frame, the reply encoded again."""

    mode = "codec"

    def on_frame(self, c: gnetpy.Conn, frame: bytes) -> Any:
        c.write(CODEC.encode(frame))


class HandFrames(_Boot):
    """Framing by hand in ``on_traffic``: the same frames, no codec."""

    mode = "hand"

    def on_traffic(self, c: gnetpy.Conn) -> Any:
        while (buffered := c.inbound_buffered) >= HEADER:
            n = HEADER + _length(c.peek(HEADER))[0]
            if buffered < n:
                return  # the rest of this frame has not arrived: it stays buffered
            c.write(c.next(n))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="gnetpy length-prefixed frame echo (W8)")
    parser.add_argument("--addr", default="tcp://127.0.0.1:9000", help="tcp://host:port or unix:///path")
    parser.add_argument("--mode", choices=("codec", "hand"), required=True,
                        help="codec: the codec option and on_frame; hand: framing in on_traffic")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    options: dict[str, Any] = {"num_event_loop": 1, "reuse_addr": True}
    if args.mode == "codec":
        gnetpy.run(CodecFrames(), args.addr, codec=CODEC, **options)
    else:
        gnetpy.run(HandFrames(), args.addr, **options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
