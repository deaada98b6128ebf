"""A TCP proxy: each client connection gets its own connection to the backend, on the same event loop.

    python examples/proxy.py --listen tcp://127.0.0.1:8000 --backend tcp://127.0.0.1:9000 --loops 4

What it shows:

* ``EventLoop.dial`` with a callback: the backend connection is made from
  ``on_open`` of the client connection, on the client's own loop, so the
  two ends of a pair are always served by one thread -- no lock.  The
  callback style: ``dial`` returns at once; ``callback(conn, err)`` runs on
  the loop later, with the connection (its ``on_open`` already run) or the
  error.  ``context=`` marks the dialed connection before its ``on_open``.
* Backpressure between the two sides: when one side's outbound queue
  passes the high-water mark, the proxy stops reading the *other* side
  (``pause_reading``), and resumes it from ``on_drained`` once the queue is
  back under the low-water mark.  A slow reader on either end therefore
  holds at most about ``write_high_water`` plus one read in the proxy, not
  the whole stream.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from functools import partial
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

import gnetpy  # noqa: E402

HIGH_WATER = 64 * 1024
DIAL_TIMEOUT = 5.0


class Side:
    """A connection's end of a pair: the other end once it is known."""

    __slots__ = ("peer", "is_backend")

    def __init__(self, peer: gnetpy.Conn | None, is_backend: bool) -> None:
        self.peer = peer
        self.is_backend = is_backend


class Proxy(gnetpy.EventHandler):
    def __init__(self, backend: str) -> None:
        self.backend = backend

    def on_open(self, c: gnetpy.Conn) -> Any:
        if c.context is not None:
            return None  # a backend connection we dialed: paired in _dialed
        c.context = Side(None, is_backend=False)
        c.pause_reading()  # nothing to forward to until the backend answers
        c.event_loop.dial(self.backend, partial(self._dialed, c), DIAL_TIMEOUT, context=Side(c, is_backend=True))
        return None

    def _dialed(self, client: gnetpy.Conn, backend: gnetpy.Conn | None, err: BaseException | None) -> None:
        if err is not None or backend is None:
            logging.getLogger("proxy").warning("backend %s: %s; closing %s", self.backend, err, client.remote_addr)
            client.close()
            return
        if client.closed:
            backend.close()
            return
        client.context.peer = backend
        client.resume_reading()

    def on_traffic(self, c: gnetpy.Conn) -> Any:
        peer = c.context.peer
        if peer is None or peer.closed:
            return None
        peer.write(c.next())
        # The engine's own rule for "past the high-water mark" (>, not >=): only a queue past
        # it gets on_drained later, which resumes c -- with >= a queue of exactly HIGH_WATER
        # bytes paused c for good.
        if peer.outbound_buffered > HIGH_WATER:
            c.pause_reading()  # the peer's side is full: stop taking more from this one
        return None

    def on_drained(self, c: gnetpy.Conn) -> Any:
        peer = c.context.peer
        if peer is not None and not peer.closed:
            peer.resume_reading()  # c's queue went down: the other side may send again
        return None

    def on_close(self, c: gnetpy.Conn, err: BaseException | None) -> Any:
        peer = c.context.peer if c.context is not None else None
        if peer is not None and not peer.closed:
            peer.close()  # flushes what it has queued first
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="gnetpy TCP proxy")
    parser.add_argument("--listen", default="tcp://127.0.0.1:8000")
    parser.add_argument("--backend", required=True, help="tcp://host:port or unix:///path")
    parser.add_argument("--loops", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    gnetpy.run(Proxy(args.backend), args.listen, num_event_loop=args.loops, reuse_addr=True,
               write_high_water=HIGH_WATER)
    return 0


if __name__ == "__main__":
    sys.exit(main())
