"""The client of examples/rpc_server.py: one request, one framed reply.

    python examples/rpc_client.py --addr tcp://127.0.0.1:9100 upper "hello world"

The same ``LengthFieldBasedFrameCodec`` frames the request (``encode``) and
splits the reply stream (the client's ``codec`` option and ``on_frame``).
"""

from __future__ import annotations

import argparse
import os
import queue
import sys
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

import gnetpy  # noqa: E402
from gnetpy.codec import LengthFieldBasedFrameCodec  # noqa: E402

CODEC = LengthFieldBasedFrameCodec(length_field_length=4, initial_bytes_to_strip=4)


class Replies(gnetpy.EventHandler):
    def __init__(self) -> None:
        self.replies: queue.Queue[bytes] = queue.Queue()

    def on_frame(self, c: gnetpy.Conn, frame: bytes) -> Any:
        self.replies.put(frame)
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="gnetpy RPC client")
    parser.add_argument("--addr", default="tcp://127.0.0.1:9100")
    parser.add_argument("method")
    parser.add_argument("argument", nargs="?", default="")
    args = parser.parse_args(argv)
    handler = Replies()
    with gnetpy.Client(handler, codec=CODEC) as client:
        try:
            c = client.dial(args.addr, timeout=5)
        except OSError as exc:
            print(f"cannot connect to {args.addr}: {exc}", file=sys.stderr)
            return 1
        c.async_write(CODEC.encode(args.method.encode() + b"\n" + args.argument.encode()))
        print(handler.replies.get(timeout=5).decode(errors="replace"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
