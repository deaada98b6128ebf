"""A client: dial a server, send lines, print what comes back.

    python -m gnetpy echo --addr tcp://127.0.0.1:9000 &      # any echo server
    python examples/client.py --addr tcp://127.0.0.1:9000 hello world

``gnetpy.Client`` runs event loops in threads of this program; ``dial``
blocks this thread until the connection is open (``on_open`` has run) and
raises ``ConnectionRefusedError``/``TimeoutError`` otherwise.  Replies arrive
in ``on_traffic`` on a loop thread; this script hands them back through a
queue.
"""

from __future__ import annotations

import argparse
import os
import queue
import sys
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

import gnetpy  # noqa: E402


class Lines(gnetpy.EventHandler):
    def __init__(self) -> None:
        self.replies: queue.Queue[bytes] = queue.Queue()

    def on_traffic(self, c: gnetpy.Conn) -> Any:
        while True:
            data = bytes(c.peek())
            end = data.find(b"\n")
            if end < 0:
                return None
            self.replies.put(c.next(end + 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="gnetpy line client")
    parser.add_argument("--addr", default="tcp://127.0.0.1:9000")
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("words", nargs="*", default=["hello", "gnetpy"])
    args = parser.parse_args(argv)
    handler = Lines()
    with gnetpy.Client(handler) as client:
        try:
            c = client.dial(args.addr, timeout=args.timeout)
        except OSError as exc:
            print(f"cannot connect to {args.addr}: {exc}", file=sys.stderr)
            return 1
        for word in args.words:
            c.async_write(word.encode() + b"\n")
            print(handler.replies.get(timeout=args.timeout).decode().rstrip())
        c.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
