"""A length-prefixed RPC server: frames decoded for you (the ``codec`` option), replies framed by hand.

    python examples/rpc_server.py --addr tcp://127.0.0.1:9100
    python examples/rpc_client.py --addr tcp://127.0.0.1:9100 upper "hello world"

Every message is a 4-byte big-endian length and that many bytes of body
(Netty's ``LengthFieldBasedFrameDecoder(0, 4, 0, 4)`` with a
``LengthFieldPrepender(4)``).  A request body is ``method`` + ``\\n`` +
argument; the reply is the result, or ``ERR`` + the error.  With
``codec=...`` the engine calls ``on_frame(c, frame)`` once per complete
request.  ``c.write`` stays raw: replies are framed explicitly with the
same codec's ``encode``.  A frame over ``max_frame_length`` (1 MiB by
default) or a corrupt length closes that connection with a
``TooLongFrameError``/``CodecError`` in ``on_close``; the server serves on.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Callable

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

import gnetpy  # noqa: E402
from gnetpy.codec import LengthFieldBasedFrameCodec  # noqa: E402

CODEC = LengthFieldBasedFrameCodec(length_field_length=4, initial_bytes_to_strip=4)

METHODS: dict[bytes, Callable[[bytes], bytes]] = {
    b"echo": lambda arg: arg,
    b"upper": lambda arg: arg.upper(),
    b"len": lambda arg: str(len(arg)).encode(),
}


class Rpc(gnetpy.EventHandler):
    def on_frame(self, c: gnetpy.Conn, frame: bytes) -> Any:
        method, _, arg = frame.partition(b"\n")
        handler = METHODS.get(method)
        reply = handler(arg) if handler is not None else b"ERR unknown method " + method
        c.write(CODEC.encode(reply))
        return None

    def on_close(self, c: gnetpy.Conn, err: BaseException | None) -> Any:
        if isinstance(err, gnetpy.CodecError):
            logging.getLogger("rpc").info("%s sent a bad frame: %s", c.remote_addr, err)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="gnetpy length-prefixed RPC server")
    parser.add_argument("--addr", default="tcp://127.0.0.1:9100")
    parser.add_argument("--loops", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    gnetpy.run(Rpc(), args.addr, num_event_loop=args.loops, codec=CODEC)
    return 0


if __name__ == "__main__":
    sys.exit(main())
